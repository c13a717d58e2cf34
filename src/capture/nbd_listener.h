#pragma once

#include <memory>
#include <string>

#include "continuum/common/result.h"

namespace continuum::capture {

// A listening stream socket for the NBD server: "unix:/path/sock" or
// "HOST:PORT" ("[::1]:PORT" for IPv6; port 0 picks an ephemeral port).
// Thread-safety: Accept() runs on one thread; Wake() and Address() may be
// called from any thread.
class NbdListener {
 public:
  struct Accepted {
    int fd = -1;       // owned by the caller; TCP_NODELAY already set
    std::string peer;  // "127.0.0.1:5555" or "unix:/path/sock"
  };

  static Result<std::unique_ptr<NbdListener>> Listen(const std::string& address);
  // Closes the socket and removes a unix socket path it created.
  ~NbdListener();
  NbdListener(const NbdListener&) = delete;
  NbdListener& operator=(const NbdListener&) = delete;

  // Blocks until a client connects. kUnavailable once Wake() was called.
  Result<Accepted> Accept();
  // Makes the current and every later Accept() return kUnavailable.
  void Wake();
  // The bound address in the syntax Listen() takes, with the real port.
  const std::string& Address() const { return address_; }

 private:
  NbdListener(int fd, int wake_fd, std::string address, std::string unix_path, bool tcp);

  const int fd_;
  const int wake_fd_;  // eventfd: readable once Wake() was called
  const std::string address_;
  const std::string unix_path_;
  const bool tcp_;
};

}  // namespace continuum::capture
