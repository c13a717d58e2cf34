#include "capture/nbd_protocol.h"

#include <cerrno>

#include <fmt/format.h>

namespace continuum::capture::nbd {

uint16_t Load16(std::span<const uint8_t> in) {
  return static_cast<uint16_t>((in[0] << 8) | in[1]);
}

uint32_t Load32(std::span<const uint8_t> in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) | in[3];
}

uint64_t Load64(std::span<const uint8_t> in) {
  return (uint64_t{Load32(in)} << 32) | Load32(in.subspan(4));
}

void Append16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void Append32(std::vector<uint8_t>& out, uint32_t v) {
  Append16(out, static_cast<uint16_t>(v >> 16));
  Append16(out, static_cast<uint16_t>(v));
}

void Append64(std::vector<uint8_t>& out, uint64_t v) {
  Append32(out, static_cast<uint32_t>(v >> 32));
  Append32(out, static_cast<uint32_t>(v));
}

std::vector<uint8_t> EncodeGreeting() {
  std::vector<uint8_t> out;
  Append64(out, kInitPasswd);
  Append64(out, kOptMagic);
  Append16(out, kFlagFixedNewstyle | kFlagNoZeroes);
  return out;
}

Result<uint32_t> ParseClientFlags(std::span<const uint8_t> in) {
  if (in.size() < 4) return InvalidArgument("short client flags");
  uint32_t flags = Load32(in);
  if (flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
    return InvalidArgument(fmt::format("unknown client flags 0x{:x}", flags));
  }
  return flags;
}

Result<OptionHeader> ParseOptionHeader(std::span<const uint8_t> in) {
  if (in.size() < kOptionHeaderSize) return InvalidArgument("short option header");
  uint64_t magic = Load64(in);
  if (magic != kOptMagic) return InvalidArgument(fmt::format("bad option magic 0x{:016x}", magic));
  return OptionHeader{.option = Load32(in.subspan(8)), .length = Load32(in.subspan(12))};
}

Result<InfoRequest> ParseInfoRequest(std::span<const uint8_t> payload) {
  // Grammar: u32 name_length, name, u16 count, count * u16 info type.
  if (payload.size() < 6) return InvalidArgument("info request shorter than 6 bytes");
  uint32_t name_length = Load32(payload);
  if (name_length > kMaxStringLength) {
    return InvalidArgument(fmt::format("export name of {} bytes exceeds {}", name_length, kMaxStringLength));
  }
  if (payload.size() < 4ull + name_length + 2) {
    return InvalidArgument("export name length exceeds option length");
  }
  InfoRequest req;
  req.name.assign(reinterpret_cast<const char*>(payload.data() + 4), name_length);
  auto rest = payload.subspan(4 + name_length);
  uint16_t count = Load16(rest);
  rest = rest.subspan(2);
  if (rest.size() != 2ull * count) {
    return InvalidArgument(fmt::format("{} info requests do not fill {} bytes", count, rest.size()));
  }
  for (uint16_t i = 0; i < count; ++i) req.info_types.push_back(Load16(rest.subspan(2 * i)));
  if (req.name.find('\0') != std::string::npos) return InvalidArgument("export name contains nul");
  return req;
}

std::vector<uint8_t> EncodeOptionReply(uint32_t option, uint32_t reply_type, std::span<const uint8_t> data) {
  std::vector<uint8_t> out;
  out.reserve(20 + data.size());
  Append64(out, kOptReplyMagic);
  Append32(out, option);
  Append32(out, reply_type);
  Append32(out, static_cast<uint32_t>(data.size()));
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> EncodeOptionError(uint32_t option, uint32_t reply_type, std::string_view message) {
  auto text = message.substr(0, kMaxStringLength);
  return EncodeOptionReply(option, reply_type,
                           {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

std::vector<uint8_t> EncodeServerEntry(uint32_t option, std::string_view name) {
  std::vector<uint8_t> data;
  Append32(data, static_cast<uint32_t>(name.size()));
  data.insert(data.end(), name.begin(), name.end());
  return EncodeOptionReply(option, kRepServer, data);
}

std::vector<uint8_t> EncodeInfoExport(uint32_t option, uint64_t size, uint16_t transmission_flags) {
  std::vector<uint8_t> data;
  Append16(data, kInfoExport);
  Append64(data, size);
  Append16(data, transmission_flags);
  return EncodeOptionReply(option, kRepInfo, data);
}

std::vector<uint8_t> EncodeInfoName(uint32_t option, std::string_view name) {
  std::vector<uint8_t> data;
  Append16(data, kInfoName);
  data.insert(data.end(), name.begin(), name.end());
  return EncodeOptionReply(option, kRepInfo, data);
}

std::vector<uint8_t> EncodeInfoBlockSize(uint32_t option, uint32_t minimum, uint32_t preferred,
                                         uint32_t maximum) {
  std::vector<uint8_t> data;
  Append16(data, kInfoBlockSize);
  Append32(data, minimum);
  Append32(data, preferred);
  Append32(data, maximum);
  return EncodeOptionReply(option, kRepInfo, data);
}

std::vector<uint8_t> EncodeExportNameReply(uint64_t size, uint16_t transmission_flags, bool no_zeroes) {
  std::vector<uint8_t> out;
  Append64(out, size);
  Append16(out, transmission_flags);
  if (!no_zeroes) out.resize(out.size() + kZeroPadSize, 0);
  return out;
}

uint16_t TransmissionFlags(bool read_only) {
  // CAN_MULTI_CONN is honest because BlockTarget::Flush covers every write
  // acknowledged before it, whichever connection sent it.
  uint16_t flags = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagSendTrim |
                   kFlagSendWriteZeroes | kFlagCanMultiConn;
  if (read_only) flags |= kFlagReadOnly;
  return flags;
}

Result<Request> ParseRequest(std::span<const uint8_t> in) {
  if (in.size() < kRequestSize) return InvalidArgument("short request header");
  uint32_t magic = Load32(in);
  if (magic != kRequestMagic) return InvalidArgument(fmt::format("bad request magic 0x{:08x}", magic));
  return Request{.flags = Load16(in.subspan(4)),
                 .type = Load16(in.subspan(6)),
                 .cookie = Load64(in.subspan(8)),
                 .offset = Load64(in.subspan(16)),
                 .length = Load32(in.subspan(24))};
}

uint32_t ValidateRequest(const Request& req, const ExportGeometry& geometry) {
  bool writes = false;
  uint16_t allowed_flags = kCmdFlagFua;  // FUA is harmless on any command
  switch (req.type) {
    case kCmdRead:
    case kCmdFlush:
    case kCmdDisc:
      break;
    case kCmdWrite:
    case kCmdTrim:
      writes = true;
      break;
    case kCmdWriteZeroes:
      writes = true;
      allowed_flags |= kCmdFlagNoHole;
      break;
    default:
      return kEinval;  // CACHE, BLOCK_STATUS, RESIZE and unknown commands
  }
  // DF, REQ_ONE, FAST_ZERO and PAYLOAD_LEN need extensions we never negotiate.
  if (req.flags & ~allowed_flags) return kEinval;
  if (req.type == kCmdFlush || req.type == kCmdDisc) return 0;  // offset/length ignored
  if (writes && geometry.read_only) return kEperm;
  if ((req.type == kCmdRead || req.type == kCmdWrite) && req.length > kMaxPayload) return kEinval;
  // Written so that offset + length cannot overflow.
  if (req.offset > geometry.size || req.length > geometry.size - req.offset) {
    // The spec asks for ENOSPC on writes past the end and EINVAL otherwise.
    return (req.type == kCmdWrite || req.type == kCmdWriteZeroes) ? kEnospc : kEinval;
  }
  return 0;
}

std::vector<uint8_t> EncodeSimpleReply(uint32_t error, uint64_t cookie) {
  std::vector<uint8_t> out;
  out.reserve(kSimpleReplySize);
  Append32(out, kSimpleReplyMagic);
  Append32(out, error);
  Append64(out, cookie);
  return out;
}

uint32_t ErrorFromStatus(const Status& status) {
  switch (status.sys_errno()) {
    case EPERM:
    case EACCES:
    case EROFS: return kEperm;
    case ENOMEM: return kEnomem;
    case EINVAL: return kEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return kEnospc;
    case EOVERFLOW: return kEoverflow;
    case ENOTSUP: return kEnotsup;
    case ESHUTDOWN: return kEshutdown;
    default: break;
  }
  switch (status.code()) {
    case StatusCode::kResourceExhausted: return kEnospc;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange: return kEinval;
    case StatusCode::kFailedPrecondition: return kEperm;
    default: return kEio;
  }
}

std::string_view CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead: return "read";
    case kCmdWrite: return "write";
    case kCmdDisc: return "disc";
    case kCmdFlush: return "flush";
    case kCmdTrim: return "trim";
    case kCmdWriteZeroes: return "write_zeroes";
    default: return "unknown";
  }
}

std::string_view OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName: return "export_name";
    case kOptAbort: return "abort";
    case kOptList: return "list";
    case kOptStartTls: return "starttls";
    case kOptInfo: return "info";
    case kOptGo: return "go";
    case kOptStructuredReply: return "structured_reply";
    default: return "unknown";
  }
}

}  // namespace continuum::capture::nbd
