#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capture/nbd_socket.h"
#include "continuum/common/result.h"
#include "continuum/io/block_target.h"

namespace continuum::capture {

// An export as a connection sees it: the canonical name and a reference that
// keeps the target alive while requests are in flight.
struct NbdExportRef {
  std::string name;
  std::shared_ptr<io::BlockTarget> target;
};

// How a connection reaches the server's export table. The callbacks run on the
// connection's thread and must be thread-safe.
struct NbdExportHooks {
  // Looks an export up (NBD_OPT_INFO); nullopt when unknown. The empty name
  // resolves to the default export.
  std::function<std::optional<NbdExportRef>(const std::string& name)> find;
  // Like `find`, and records atomically that the connection now serves the
  // export, so that removing the export reaches this connection.
  std::function<std::optional<NbdExportRef>(const std::string& name)> bind;
  std::function<std::vector<std::string>()> list;
};

// Server side of the fixed newstyle handshake: greeting, client flags, then
// option haggling until NBD_OPT_GO or NBD_OPT_EXPORT_NAME selects an export.
// Invalid options get an error reply; framing errors end the session.
// Thread-safety: one instance runs on one thread.
class NbdHandshake {
 public:
  NbdHandshake(NbdSocket& socket, const NbdExportHooks& hooks) : socket_(socket), hooks_(hooks) {}

  // Returns the export to serve. kUnavailable when the client aborted or went
  // away, kInvalidArgument when it broke the protocol, kNotFound when it
  // named an unknown export with NBD_OPT_EXPORT_NAME (no reply is possible).
  Result<NbdExportRef> Run();

 private:
  // Each returns a bound export to end haggling, nullopt to keep haggling, or
  // an error to end the session.
  Result<std::optional<NbdExportRef>> HandleOption(uint32_t option, std::span<const uint8_t> data);
  Result<std::optional<NbdExportRef>> HandleInfoOrGo(uint32_t option, std::span<const uint8_t> data);
  Status HandleList(std::span<const uint8_t> data);
  Status ReplyError(uint32_t option, uint32_t reply_type, const std::string& message);

  NbdSocket& socket_;
  const NbdExportHooks& hooks_;
  bool no_zeroes_ = false;
};

}  // namespace continuum::capture
