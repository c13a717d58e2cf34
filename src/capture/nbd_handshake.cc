#include "capture/nbd_handshake.h"

#include <fmt/format.h>

#include "capture/nbd_protocol.h"

namespace continuum::capture {
namespace {

// The preferred size must be a power of two of at least 512 bytes (libnbd
// rejects anything else), so odd target geometries fall back to 4 KiB.
uint32_t PreferredBlockSize(const io::BlockTarget& target) {
  uint32_t size = target.BlockSize();
  bool power_of_two = size != 0 && (size & (size - 1)) == 0;
  if (!power_of_two || size < 512 || size > nbd::kMaxPayload) return 4096;
  return size;
}

}  // namespace

Result<NbdExportRef> NbdHandshake::Run() {
  CONTINUUM_RETURN_IF_ERROR(socket_.Write(nbd::EncodeGreeting()));
  uint8_t flag_bytes[4];
  CONTINUUM_RETURN_IF_ERROR(socket_.ReadExact(flag_bytes));
  auto flags = nbd::ParseClientFlags(flag_bytes);
  if (!flags.ok()) return flags.status().WithContext("nbd client " + socket_.peer());
  // A client without NBD_FLAG_C_FIXED_NEWSTYLE still gets fixed newstyle
  // replies; the spec allows it and no living client depends on the old way.
  no_zeroes_ = (*flags & nbd::kClientFlagNoZeroes) != 0;

  std::vector<uint8_t> data;
  while (true) {
    uint8_t header_bytes[nbd::kOptionHeaderSize];
    CONTINUUM_RETURN_IF_ERROR(socket_.ReadExact(header_bytes));
    auto header = nbd::ParseOptionHeader(header_bytes);
    if (!header.ok()) return header.status().WithContext("nbd client " + socket_.peer());
    if (header->length > nbd::kMaxOptionLength) {
      if (header->option == nbd::kOptExportName) {
        return InvalidArgument(fmt::format("nbd client {} sent an export name of {} bytes",
                                           socket_.peer(), header->length));
      }
      CONTINUUM_RETURN_IF_ERROR(socket_.Discard(header->length));
      CONTINUUM_RETURN_IF_ERROR(ReplyError(header->option, nbd::kRepErrTooBig,
                                           fmt::format("option of {} bytes exceeds {}", header->length,
                                                       nbd::kMaxOptionLength)));
      continue;
    }
    data.resize(header->length);
    CONTINUUM_RETURN_IF_ERROR(socket_.ReadExact(data));
    auto outcome = HandleOption(header->option, data);
    if (!outcome.ok()) return outcome.status();
    if (outcome->has_value()) return std::move(**outcome);
  }
}

Result<std::optional<NbdExportRef>> NbdHandshake::HandleOption(uint32_t option,
                                                               std::span<const uint8_t> data) {
  switch (option) {
    case nbd::kOptExportName: {
      std::string name(reinterpret_cast<const char*>(data.data()), data.size());
      auto ref = hooks_.bind(name);
      // NBD_OPT_EXPORT_NAME has no error reply: the spec says to hang up.
      if (!ref) return NotFound(fmt::format("nbd client {} asked for unknown export '{}'", socket_.peer(), name));
      CONTINUUM_RETURN_IF_ERROR(socket_.Write(nbd::EncodeExportNameReply(
          ref->target->Size(), nbd::TransmissionFlags(ref->target->ReadOnly()), no_zeroes_)));
      return std::optional<NbdExportRef>(std::move(*ref));
    }
    case nbd::kOptAbort:
      // Deliberately ignored: the client may close without reading the ack.
      socket_.Write(nbd::EncodeOptionReply(option, nbd::kRepAck)).IgnoreError();
      return Unavailable("nbd client " + socket_.peer() + " aborted the handshake");
    case nbd::kOptList:
      CONTINUUM_RETURN_IF_ERROR(HandleList(data));
      return std::optional<NbdExportRef>();
    case nbd::kOptInfo:
    case nbd::kOptGo:
      return HandleInfoOrGo(option, data);
    default:
      // STARTTLS, STRUCTURED_REPLY, META_CONTEXT, EXTENDED_HEADERS, unknown.
      CONTINUUM_RETURN_IF_ERROR(ReplyError(option, nbd::kRepErrUnsup,
                                           fmt::format("option {} ({}) is not supported by continuum",
                                                       option, nbd::OptionName(option))));
      return std::optional<NbdExportRef>();
  }
}

Result<std::optional<NbdExportRef>> NbdHandshake::HandleInfoOrGo(uint32_t option,
                                                                 std::span<const uint8_t> data) {
  auto request = nbd::ParseInfoRequest(data);
  if (!request.ok()) {
    CONTINUUM_RETURN_IF_ERROR(ReplyError(option, nbd::kRepErrInvalid, request.status().message()));
    return std::optional<NbdExportRef>();
  }
  auto ref = option == nbd::kOptGo ? hooks_.bind(request->name) : hooks_.find(request->name);
  if (!ref) {
    std::string message = request->name.empty()
                              ? fmt::format("no default export: {} exports, name one", hooks_.list().size())
                              : fmt::format("unknown export '{}'", request->name);
    CONTINUUM_RETURN_IF_ERROR(ReplyError(option, nbd::kRepErrUnknown, message));
    return std::optional<NbdExportRef>();
  }
  const io::BlockTarget& target = *ref->target;
  for (uint16_t type : request->info_types) {
    // Unknown info types are ignored, as the spec requires; the export and
    // block size replies below are sent whether asked for or not.
    if (type == nbd::kInfoName) CONTINUUM_RETURN_IF_ERROR(socket_.Write(nbd::EncodeInfoName(option, ref->name)));
  }
  CONTINUUM_RETURN_IF_ERROR(socket_.Write(
      nbd::EncodeInfoExport(option, target.Size(), nbd::TransmissionFlags(target.ReadOnly()))));
  CONTINUUM_RETURN_IF_ERROR(
      socket_.Write(nbd::EncodeInfoBlockSize(option, 1, PreferredBlockSize(target), nbd::kMaxPayload)));
  CONTINUUM_RETURN_IF_ERROR(socket_.Write(nbd::EncodeOptionReply(option, nbd::kRepAck)));
  if (option == nbd::kOptGo) return std::optional<NbdExportRef>(std::move(*ref));
  return std::optional<NbdExportRef>();
}

Status NbdHandshake::HandleList(std::span<const uint8_t> data) {
  if (!data.empty()) return ReplyError(nbd::kOptList, nbd::kRepErrInvalid, "list takes no data");
  for (const std::string& name : hooks_.list()) {
    CONTINUUM_RETURN_IF_ERROR(socket_.Write(nbd::EncodeServerEntry(nbd::kOptList, name)));
  }
  return socket_.Write(nbd::EncodeOptionReply(nbd::kOptList, nbd::kRepAck));
}

Status NbdHandshake::ReplyError(uint32_t option, uint32_t reply_type, const std::string& message) {
  return socket_.Write(nbd::EncodeOptionError(option, reply_type, message));
}

}  // namespace continuum::capture
