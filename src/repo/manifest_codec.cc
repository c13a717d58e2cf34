#include "repo/manifest_codec.h"

#include "repo/bytes.h"
#include "repo/sealed_file.h"

namespace continuum::repo {

namespace {
constexpr uint16_t kVersion = 1;
}  // namespace

Result<std::vector<uint8_t>> ManifestCodec::Encode(Crypto& crypto, const Manifest& m) {
  if (m.payload.size() > kMaxManifestPayload) return InvalidArgument("manifest payload larger than 64 MiB");
  std::vector<uint8_t> body;
  ByteWriter w(&body);
  w.I64(m.time_ns);
  w.U32(static_cast<uint32_t>(m.roots.size()));
  for (const auto& id : m.roots) w.Id(id);
  w.U64(m.payload.size());
  w.Bytes(m.payload);
  return SealedFile::Encode(crypto, Magic("CMAN"), kVersion, body);
}

Result<Manifest> ManifestCodec::Decode(Crypto& crypto, std::span<const uint8_t> file, const std::string& what) {
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> body, SealedFile::Decode(crypto, Magic("CMAN"), kVersion, file, what));
  ByteReader r(body);
  Manifest m;
  uint32_t n = 0;
  uint64_t payload_len = 0;
  if (!r.I64(&m.time_ns) || !r.U32(&n)) return DataLoss(what + ": truncated manifest header");
  if (n > r.remaining() / 32) return DataLoss(what + ": root count " + std::to_string(n) + " exceeds the file");
  m.roots.resize(n);
  for (auto& id : m.roots) r.Id(&id);
  if (!r.U64(&payload_len)) return DataLoss(what + ": truncated payload length");
  if (payload_len > kMaxManifestPayload || payload_len != r.remaining()) {
    return DataLoss(what + ": payload length " + std::to_string(payload_len) + " does not match the file");
  }
  std::span<const uint8_t> payload;
  r.Take(payload_len, &payload);
  m.payload.assign(payload.begin(), payload.end());
  return m;
}

std::vector<uint8_t> ManifestCodec::EncodeTree(const Tree& t) {
  std::vector<uint8_t> out;
  out.reserve(12 + 32 * t.refs.size() + t.payload.size());
  ByteWriter w(&out);
  w.U32(Magic("CTRE"));
  w.U16(kVersion);
  w.U16(0);
  w.U32(static_cast<uint32_t>(t.refs.size()));
  for (const auto& id : t.refs) w.Id(id);
  w.Bytes(t.payload);
  return out;
}

Result<Tree> ManifestCodec::DecodeTree(std::span<const uint8_t> plain, const std::string& what) {
  ByteReader r(plain);
  uint32_t magic = 0, n = 0;
  uint16_t version = 0, reserved = 0;
  r.U32(&magic);
  r.U16(&version);
  r.U16(&reserved);
  r.U32(&n);
  if (r.failed() || magic != Magic("CTRE")) return DataLoss(what + ": not a tree blob");
  if (version != kVersion) return FailedPrecondition(what + ": tree version " + std::to_string(version) + "; this build reads 1");
  if (n > r.remaining() / 32) return DataLoss(what + ": ref count " + std::to_string(n) + " exceeds the blob");
  Tree t;
  t.refs.resize(n);
  for (auto& id : t.refs) r.Id(&id);
  std::span<const uint8_t> rest;
  r.Take(r.remaining(), &rest);
  t.payload.assign(rest.begin(), rest.end());
  return t;
}

}  // namespace continuum::repo
