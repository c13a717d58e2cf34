#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"
#include "continuum/journal/record.h"
#include "continuum/net/connection.h"

namespace continuum::replication {

// Replication wire format (docs/format/replication.md). Every frame:
//   magic u32 "CRP1" | type u16 | flags u16 | payload_len u32 | reserved u32
//   | payload_checksum u64 (XXH3) | header_checksum u64 (XXH3 of bytes [0,24))
// followed by the payload. Little-endian.
enum class FrameType : uint16_t {
  kHello = 1,        // source -> target, JSON
  kHelloAck = 2,     // target -> source, JSON
  kRecords = 3,      // source -> target, a batch of write-log records
  kAck = 4,          // target -> source, JSON {"durable_seq": N}
  kResyncBegin = 5,  // source -> target, JSON {"first_seq", "last_seq"}
  kResyncDone = 6,   // source -> target, JSON {"consistent_at"}
  kError = 7,        // either way, JSON {"code", "message"}; the sender closes after it
  kVerify = 8,       // source -> target on its own connection, JSON {.., "seq", "range_bytes"}
  kVerifySums = 9,   // target -> source, u64 XXH3 per range of the replica as of "seq"
  kHeartbeat = 10,   // either way on a stream connection, empty payload: "still here"
  kDiff = 11,        // source -> target on its own connection, JSON like kHello: differential sync
  kDiffRequest = 12, // source -> target, JSON {"range_bytes", "ranges": [[offset, length], ...]}
  kDiffSums = 13,    // target -> source, u64 XXH3 per range piece of the live replica
  // Seeding (cascade: a server forwards a replica; only to a target whose
  // HELLO_ACK says "seed": true). The target's replica is written as the
  // sender's replica was at "seq", then holds that seq and nothing before it.
  kSeedBegin = 14,   // source -> target, JSON {"seq", "ts_ns"}
  kSeedData = 15,    // source -> target, records like kRecords (kWrite or kZero, seq = the seed's), codec flags
  kSeedDone = 16,    // source -> target, JSON {"seq", "ts_ns"}; the target answers with kAck {"durable_seq": seq}
};

inline constexpr uint32_t kFrameMagic = 0x31505243;  // "CRP1"
inline constexpr uint32_t kMaxFramePayload = 64u << 20;
inline constexpr uint16_t kProtocolVersion = 1;

struct Frame {
  FrameType type = FrameType::kError;
  uint16_t flags = 0;
  std::vector<uint8_t> payload;
};

// The bytes of one frame (header and payload), as WriteFrame sends them.
std::vector<uint8_t> EncodeFrame(FrameType type, std::span<const uint8_t> payload, uint16_t flags = 0);
Status WriteFrame(net::Connection& conn, FrameType type, std::span<const uint8_t> payload, uint16_t flags = 0);
Status WriteJsonFrame(net::Connection& conn, FrameType type, const nlohmann::json& j);
// Reads one frame; a bad checksum or size is kDataLoss naming the peer.
Result<Frame> ReadFrame(net::Connection& conn);
Result<nlohmann::json> FrameJson(const Frame& f);
// The "message" of an ERROR frame, or a note saying it has none.
std::string ErrorMessage(const Frame& f);

// A batch of records in a kRecords payload: each is a journal RecordHeader
// (with its own checksums, magic "CWL1") followed by its payload.
using WireRecord = journal::RecordWithData;
void AppendRecord(std::vector<uint8_t>* batch, journal::RecordHeader h, std::span<const uint8_t> data);
Result<std::vector<WireRecord>> ParseRecords(std::span<const uint8_t> payload);

}  // namespace continuum::replication
