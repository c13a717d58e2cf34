#include "repo/sealed_file.h"

#include "repo/bytes.h"

namespace continuum::repo {

Result<std::vector<uint8_t>> SealedFile::Encode(Crypto& crypto, uint32_t magic, uint16_t version,
                                                std::span<const uint8_t> body) {
  std::vector<uint8_t> out;
  out.reserve(8 + kSealOverhead + body.size());
  ByteWriter w(&out);
  w.U32(magic);
  w.U16(version);
  w.U16(0);
  CONTINUUM_RETURN_IF_ERROR(crypto.SealAppend({out.data(), 8}, body, &out));
  return out;
}

Result<std::vector<uint8_t>> SealedFile::Decode(Crypto& crypto, uint32_t magic, uint16_t version,
                                                std::span<const uint8_t> file, const std::string& what) {
  ByteReader r(file);
  uint32_t m = 0;
  uint16_t v = 0, reserved = 0;
  r.U32(&m);
  r.U16(&v);
  r.U16(&reserved);
  if (r.failed() || m != magic) return DataLoss(what + ": wrong magic (not this kind of file)");
  if (v != version) {
    return FailedPrecondition(what + ": version " + std::to_string(v) + "; this build reads " + std::to_string(version));
  }
  if (reserved != 0) return DataLoss(what + ": reserved header bits set");
  return crypto.Open(file.first(8), file.subspan(8), what);
}

}  // namespace continuum::repo
