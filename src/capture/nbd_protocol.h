#pragma once

// Wire format of the NBD protocol (fixed newstyle handshake, simple replies),
// as pure functions over byte spans so it can be fuzzed without sockets.
// Everything on the wire is big-endian. See docs/format/nbd.md for the subset
// Continuum implements. Thread-safety: all functions are pure and reentrant.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "continuum/common/result.h"

namespace continuum::capture::nbd {

inline constexpr uint64_t kInitPasswd = 0x4e42444d41474943ULL;  // "NBDMAGIC"
inline constexpr uint64_t kOptMagic = 0x49484156454f5054ULL;    // "IHAVEOPT"
inline constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ULL;
inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;

// Handshake flags (server) and client flags.
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Transmission flags.
inline constexpr uint16_t kFlagHasFlags = 1 << 0;
inline constexpr uint16_t kFlagReadOnly = 1 << 1;
inline constexpr uint16_t kFlagSendFlush = 1 << 2;
inline constexpr uint16_t kFlagSendFua = 1 << 3;
inline constexpr uint16_t kFlagSendTrim = 1 << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kFlagCanMultiConn = 1 << 8;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;

// Option replies.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepErrBit = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepErrBit + 1;
inline constexpr uint32_t kRepErrPolicy = kRepErrBit + 2;
inline constexpr uint32_t kRepErrInvalid = kRepErrBit + 3;
inline constexpr uint32_t kRepErrUnknown = kRepErrBit + 6;
inline constexpr uint32_t kRepErrShutdown = kRepErrBit + 7;
inline constexpr uint32_t kRepErrTooBig = kRepErrBit + 9;

// NBD_OPT_INFO / NBD_OPT_GO information types.
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// Commands and command flags.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;

// Error values carried in simple replies. They are protocol constants that
// happen to equal Linux errno values; never send a raw errno.
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// Limits.
inline constexpr uint32_t kMaxPayload = 32u << 20;      // max READ/WRITE length
inline constexpr uint32_t kMaxStringLength = 4096;      // export names, per spec
inline constexpr uint32_t kMaxOptionLength = 16u << 10; // longer options: TOO_BIG
inline constexpr size_t kRequestSize = 28;
inline constexpr size_t kOptionHeaderSize = 16;
inline constexpr size_t kSimpleReplySize = 16;
inline constexpr size_t kZeroPadSize = 124;

struct OptionHeader {
  uint32_t option = 0;
  uint32_t length = 0;
};

// NBD_OPT_INFO and NBD_OPT_GO payload.
struct InfoRequest {
  std::string name;
  std::vector<uint16_t> info_types;
};

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// What request validation needs to know about an export.
struct ExportGeometry {
  uint64_t size = 0;
  bool read_only = false;
};

// Big-endian helpers. REQUIRES: the span holds at least the value's size.
uint16_t Load16(std::span<const uint8_t> in);
uint32_t Load32(std::span<const uint8_t> in);
uint64_t Load64(std::span<const uint8_t> in);
void Append16(std::vector<uint8_t>& out, uint16_t v);
void Append32(std::vector<uint8_t>& out, uint32_t v);
void Append64(std::vector<uint8_t>& out, uint64_t v);

// Handshake, server side.
std::vector<uint8_t> EncodeGreeting();
// Client flags with unknown bits are a protocol violation: the caller drops the
// connection, as the spec requires.
Result<uint32_t> ParseClientFlags(std::span<const uint8_t> in);
// kInvalidArgument on a wrong magic (the stream is not framed NBD any more).
Result<OptionHeader> ParseOptionHeader(std::span<const uint8_t> in);
// kInvalidArgument when lengths disagree with the payload or a name is too long.
Result<InfoRequest> ParseInfoRequest(std::span<const uint8_t> payload);
std::vector<uint8_t> EncodeOptionReply(uint32_t option, uint32_t reply_type,
                                       std::span<const uint8_t> data = {});
std::vector<uint8_t> EncodeOptionError(uint32_t option, uint32_t reply_type, std::string_view message);
std::vector<uint8_t> EncodeServerEntry(uint32_t option, std::string_view name);
std::vector<uint8_t> EncodeInfoExport(uint32_t option, uint64_t size, uint16_t transmission_flags);
std::vector<uint8_t> EncodeInfoName(uint32_t option, std::string_view name);
std::vector<uint8_t> EncodeInfoBlockSize(uint32_t option, uint32_t minimum, uint32_t preferred,
                                         uint32_t maximum);
// Reply to NBD_OPT_EXPORT_NAME: size, flags and (unless no_zeroes) padding.
std::vector<uint8_t> EncodeExportNameReply(uint64_t size, uint16_t transmission_flags, bool no_zeroes);
uint16_t TransmissionFlags(bool read_only);

// Transmission, server side.
// kInvalidArgument on a wrong magic: the connection must be dropped.
Result<Request> ParseRequest(std::span<const uint8_t> in);
// Returns 0 when the request may run, else the NBD error to reply with.
// Never reads the payload: a WRITE that fails validation still carries one.
uint32_t ValidateRequest(const Request& req, const ExportGeometry& geometry);
// True when the request carries `length` bytes of payload after its header.
inline bool HasPayload(const Request& req) { return req.type == kCmdWrite; }
std::vector<uint8_t> EncodeSimpleReply(uint32_t error, uint64_t cookie);

// Maps a target's Status to an NBD error value (EIO when nothing closer fits).
uint32_t ErrorFromStatus(const Status& status);
std::string_view CommandName(uint16_t type);
std::string_view OptionName(uint32_t option);

}  // namespace continuum::capture::nbd
