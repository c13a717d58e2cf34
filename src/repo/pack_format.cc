#include "repo/pack_format.h"

#include "continuum/common/checksum.h"

namespace continuum::repo {

namespace {
constexpr uint16_t kVersion = 1;
const uint8_t kHeaderAad[6] = {'C', 'P', 'K', 'H', 1, 0};
}  // namespace

void PackFormat::EncodeEntry(ByteWriter& w, const PackEntry& e) {
  w.Id(e.id);
  w.U8(static_cast<uint8_t>(e.type));
  w.U8(e.compression);
  w.U16(0);
  w.U32(e.stored_len);
  w.U32(e.raw_len);
  w.U64(e.offset);
}

bool PackFormat::DecodeEntry(ByteReader& r, PackEntry* e) {
  uint8_t type = 0;
  uint16_t reserved = 0;
  if (!r.Id(&e->id) || !r.U8(&type) || !r.U8(&e->compression) || !r.U16(&reserved) || !r.U32(&e->stored_len) ||
      !r.U32(&e->raw_len) || !r.U64(&e->offset)) {
    return false;
  }
  if (type > 1 || e->compression > 1 || reserved != 0) return false;
  e->type = static_cast<BlobType>(type);
  if (e->raw_len > kMaxBlobRawBytes || e->stored_len < kSealOverhead) return false;
  // A blob is stored compressed only when that makes it smaller.
  if (static_cast<uint64_t>(e->stored_len) > static_cast<uint64_t>(e->raw_len) + kSealOverhead) return false;
  if (e->compression == 0 && e->stored_len != e->raw_len + kSealOverhead) return false;
  return e->offset <= (1ull << 48);
}

std::span<const uint8_t> PackFormat::HeaderAad() { return kHeaderAad; }

std::array<uint8_t, 33> PackFormat::BlobAad(BlobType type, const BlobId& id) {
  std::array<uint8_t, 33> aad;
  aad[0] = static_cast<uint8_t>(type);
  std::memcpy(aad.data() + 1, id.bytes.data(), 32);
  return aad;
}

Result<std::vector<uint8_t>> PackFormat::EncodeTail(Crypto& crypto, const std::vector<PackEntry>& entries) {
  std::vector<uint8_t> plain;
  plain.reserve(12 + entries.size() * kPackEntryBytes);
  ByteWriter w(&plain);
  w.U32(Magic("CPKH"));
  w.U16(kVersion);
  w.U16(0);
  w.U32(static_cast<uint32_t>(entries.size()));
  for (const auto& e : entries) EncodeEntry(w, e);
  std::vector<uint8_t> out;
  CONTINUUM_RETURN_IF_ERROR(crypto.SealAppend(kHeaderAad, plain, &out));
  uint32_t header_len = static_cast<uint32_t>(out.size());
  size_t trailer_at = out.size();
  ByteWriter t(&out);
  t.U32(header_len);
  t.U16(kVersion);
  t.U16(0);
  t.U32(Magic("CPK1"));
  t.U64(Checksum64(out.data() + trailer_at, 12));
  return out;
}

Result<uint32_t> PackFormat::DecodeTrailer(std::span<const uint8_t> trailer, const std::string& what) {
  if (trailer.size() != kPackTrailerBytes) return DataLoss(what + ": pack shorter than its trailer");
  ByteReader r(trailer);
  uint32_t header_len = 0, magic = 0;
  uint16_t version = 0, reserved = 0;
  uint64_t checksum = 0;
  r.U32(&header_len);
  r.U16(&version);
  r.U16(&reserved);
  r.U32(&magic);
  r.U64(&checksum);
  if (r.failed() || magic != Magic("CPK1")) return DataLoss(what + ": no pack trailer (truncated or not a pack)");
  if (checksum != Checksum64(trailer.data(), 12)) return DataLoss(what + ": pack trailer checksum mismatch");
  if (version != kVersion) {
    return FailedPrecondition(what + ": pack version " + std::to_string(version) + "; this build reads 1");
  }
  if (header_len < kSealOverhead + 12) return DataLoss(what + ": pack header length " + std::to_string(header_len) + " is too small");
  return header_len;
}

Result<std::vector<PackEntry>> PackFormat::DecodeHeader(Crypto& crypto, std::span<const uint8_t> sealed_header,
                                                        uint64_t data_end, const std::string& what) {
  auto plain = crypto.Open(kHeaderAad, sealed_header, what + ": pack header");
  if (!plain.ok()) return plain.status();
  ByteReader r(*plain);
  uint32_t magic = 0, count = 0;
  uint16_t version = 0, reserved = 0;
  r.U32(&magic);
  r.U16(&version);
  r.U16(&reserved);
  r.U32(&count);
  if (r.failed() || magic != Magic("CPKH") || version != kVersion) return DataLoss(what + ": malformed pack header");
  if (count > kMaxBlobsPerPack || r.remaining() != static_cast<size_t>(count) * kPackEntryBytes) {
    return DataLoss(what + ": pack header entry count " + std::to_string(count) + " does not match its size");
  }
  std::vector<PackEntry> entries(count);
  uint64_t expect = 0;
  for (uint32_t i = 0; i < count; ++i) {
    PackEntry& e = entries[i];
    if (!DecodeEntry(r, &e)) return DataLoss(what + ": malformed pack header entry " + std::to_string(i));
    // Invariant of the writer: blobs tile the data region in order.
    if (e.offset != expect) return DataLoss(what + ": pack header entry " + std::to_string(i) + " is not contiguous");
    expect += e.stored_len;
  }
  if (expect != data_end) return DataLoss(what + ": pack header does not cover the pack's data");
  return entries;
}

}  // namespace continuum::repo
