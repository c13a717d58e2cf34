#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace continuum::journal {

// Every journal record starts with this 64-byte little-endian header
// (docs/format/journal.md). The header checksum covers bytes [0, 56); the
// payload checksum covers the payload. Both are XXH3-64.
struct RecordHeader {
  uint32_t magic = 0;
  uint16_t version = 1;
  uint16_t kind = 0;
  uint64_t seq = 0;
  int64_t ts_ns = 0;
  uint64_t offset = 0;   // byte offset on the volume
  uint64_t length = 0;   // bytes of the volume affected
  uint32_t payload_len = 0;
  uint32_t flags = 0;
  uint64_t payload_checksum = 0;
  uint64_t header_checksum = 0;
};
static_assert(sizeof(RecordHeader) == 64, "on-disk header is 64 bytes");

inline constexpr uint32_t kWriteLogMagic = 0x314C5743;  // "CWL1"
inline constexpr uint32_t kUndoMagic = 0x314A5543;      // "CUJ1"
// Version 1: the header checksum is plain XXH3-64 (replication frames, and
// segments written before version 2).
inline constexpr uint16_t kRecordVersion = 1;
// Version 2 (segment files): the header checksum is XXH3-64 seeded with the
// segment's seed (SegmentSeed of its first seq), so a record left over in a
// recycled or preallocated segment from its previous use never validates.
inline constexpr uint16_t kRecordVersionBound = 2;
inline constexpr uint64_t SegmentSeed(uint64_t first_seq) { return first_seq ^ 0x436F6E74696E7575ull; }
// Largest payload a record may carry; larger inputs are split by the writer.
inline constexpr uint32_t kMaxPayload = 16u << 20;

// Write-log kinds (the ordered write stream).
enum class WriteKind : uint16_t {
  kWrite = 1,     // payload = new data for [offset, offset+length), or with
                  // kFlagNoData only the data's checksum
  kZero = 2,      // trim / write-zeroes: range reads as zeros; no payload
  kBookmark = 3,  // payload = label (UTF-8); offset/length unused
  kResync = 4,    // no payload: replication targets get the range's current
                  // contents (initial sync, resync); the local apply skips it
};

// Any log: filler that aligns the next record to 4 KiB for a direct write;
// payload = zeros. Readers skip it (it names no seq).
inline constexpr uint16_t kPadKind = 0xFFFF;

// Undo-journal kinds (before-images).
enum class UndoKind : uint16_t {
  kOldData = 1,   // payload = contents of the range before write `seq`
  kOldZero = 2,   // range was all zeros before write `seq`; no payload
  kBookmark = 3,  // payload = label
};

inline constexpr uint32_t kFlagEndOfSeq = 1u << 0;      // last undo record of its seq
inline constexpr uint32_t kFlagConsistent = 1u << 1;    // application-consistent bookmark
inline constexpr uint32_t kFlagRollbackMark = 1u << 2;  // bookmark written by a rollback
inline constexpr uint32_t kFlagResyncData = 1u << 3;    // replicated write carrying resync data
// Write-log kWrite record without the data: payload = the 8-byte XXH3-64 of
// the data (little-endian); the data is in the mirror (and the replication ring).
inline constexpr uint32_t kFlagNoData = 1u << 4;

// Fills the checksums of `h` for `payload`; a version-2 header's checksum is
// seeded with `seed`.
void SealHeader(RecordHeader* h, std::span<const uint8_t> payload, uint64_t seed = 0);
// Fills only the header checksum (payload_len and payload_checksum already set).
void SealHeaderOnly(RecordHeader* h, uint64_t seed = 0);
// True when the magic, version and header checksum are right. Version-2
// headers validate only with the seed they were sealed with.
bool HeaderValid(const RecordHeader& h, uint32_t magic, uint64_t seed = 0);
bool PayloadValid(const RecordHeader& h, std::span<const uint8_t> payload);

// A record with its payload, as a write stream carries it (replication frames).
struct RecordWithData {
  RecordHeader header;
  std::vector<uint8_t> data;
};

}  // namespace continuum::journal
