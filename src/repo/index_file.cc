#include "repo/index_file.h"

#include "repo/bytes.h"
#include "repo/sealed_file.h"

namespace continuum::repo {

namespace {
constexpr uint16_t kVersion = 1;
constexpr size_t kPackRecordBytes = 32 + 8 + 4;
}  // namespace

Result<std::vector<uint8_t>> IndexFile::Encode(Crypto& crypto, const IndexContents& c) {
  std::vector<uint8_t> body;
  ByteWriter w(&body);
  w.I64(c.created_ns);
  w.U32(static_cast<uint32_t>(c.supersedes.size()));
  for (const auto& id : c.supersedes) w.Id(id);
  w.U32(static_cast<uint32_t>(c.packs.size()));
  for (const auto& p : c.packs) {
    w.Id(p.pack);
    w.U64(p.pack_size);
    w.U32(static_cast<uint32_t>(p.entries.size()));
    for (const auto& e : p.entries) PackFormat::EncodeEntry(w, e);
  }
  return SealedFile::Encode(crypto, Magic("CIDX"), kVersion, body);
}

Result<IndexContents> IndexFile::Decode(Crypto& crypto, std::span<const uint8_t> file, const std::string& what) {
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> body, SealedFile::Decode(crypto, Magic("CIDX"), kVersion, file, what));
  ByteReader r(body);
  IndexContents c;
  uint32_t n = 0;
  auto bad = [&](const std::string& m) { return DataLoss(what + ": " + m); };
  if (!r.I64(&c.created_ns) || !r.U32(&n)) return bad("truncated index header");
  if (n > r.remaining() / 32) return bad("supersedes count " + std::to_string(n) + " exceeds the file");
  c.supersedes.resize(n);
  for (auto& id : c.supersedes) r.Id(&id);
  if (!r.U32(&n)) return bad("truncated pack count");
  if (n > r.remaining() / kPackRecordBytes) return bad("pack count " + std::to_string(n) + " exceeds the file");
  c.packs.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    IndexPack& p = c.packs[i];
    uint32_t count = 0;
    if (!r.Id(&p.pack) || !r.U64(&p.pack_size) || !r.U32(&count)) return bad("truncated pack record " + std::to_string(i));
    if (count > kMaxBlobsPerPack || count > r.remaining() / kPackEntryBytes) {
      return bad("blob count " + std::to_string(count) + " of pack " + p.pack.Hex() + " exceeds the file");
    }
    p.entries.resize(count);
    for (uint32_t j = 0; j < count; ++j) {
      PackEntry& e = p.entries[j];
      if (!PackFormat::DecodeEntry(r, &e)) return bad("malformed entry " + std::to_string(j) + " of pack " + p.pack.Hex());
      if (e.offset + e.stored_len + kPackTrailerBytes > p.pack_size) {
        return bad("entry " + std::to_string(j) + " lies outside pack " + p.pack.Hex());
      }
    }
  }
  if (r.remaining() != 0) return bad(std::to_string(r.remaining()) + " trailing bytes");
  return c;
}

}  // namespace continuum::repo
