#include "continuum/journal/record.h"

#include <cstddef>

#include "continuum/common/checksum.h"

namespace continuum::journal {

static_assert(offsetof(RecordHeader, header_checksum) == 56);

namespace {

uint64_t HeaderSum(const RecordHeader& h, uint64_t seed) {
  return Checksum64(&h, offsetof(RecordHeader, header_checksum), h.version == kRecordVersionBound ? seed : 0);
}

}  // namespace

void SealHeader(RecordHeader* h, std::span<const uint8_t> payload, uint64_t seed) {
  h->payload_len = static_cast<uint32_t>(payload.size());
  h->payload_checksum = Checksum64(payload);
  SealHeaderOnly(h, seed);
}

void SealHeaderOnly(RecordHeader* h, uint64_t seed) { h->header_checksum = HeaderSum(*h, seed); }

bool HeaderValid(const RecordHeader& h, uint32_t magic, uint64_t seed) {
  if (h.magic != magic || (h.version != kRecordVersion && h.version != kRecordVersionBound)) return false;
  if (h.payload_len > kMaxPayload) return false;
  return h.header_checksum == HeaderSum(h, seed);
}

bool PayloadValid(const RecordHeader& h, std::span<const uint8_t> payload) {
  return payload.size() == h.payload_len && Checksum64(payload) == h.payload_checksum;
}

}  // namespace continuum::journal
