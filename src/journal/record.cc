#include "continuum/journal/record.h"

#include <cstddef>

#include "continuum/common/checksum.h"

namespace continuum::journal {

static_assert(offsetof(RecordHeader, header_checksum) == 56);

void SealHeader(RecordHeader* h, std::span<const uint8_t> payload) {
  h->payload_len = static_cast<uint32_t>(payload.size());
  h->payload_checksum = Checksum64(payload);
  h->header_checksum = Checksum64(h, offsetof(RecordHeader, header_checksum));
}

bool HeaderValid(const RecordHeader& h, uint32_t magic) {
  if (h.magic != magic || h.version != kRecordVersion) return false;
  if (h.payload_len > kMaxPayload) return false;
  return h.header_checksum == Checksum64(&h, offsetof(RecordHeader, header_checksum));
}

bool PayloadValid(const RecordHeader& h, std::span<const uint8_t> payload) {
  return payload.size() == h.payload_len && Checksum64(payload) == h.payload_checksum;
}

}  // namespace continuum::journal
