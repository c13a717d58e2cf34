#include "repo/repo_config.h"

#include "repo/bytes.h"

namespace continuum::repo {

namespace {
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderBytes = 24;
constexpr size_t kBodyBytes = 56;
constexpr uint16_t kFlagAppendOnly = 1;
}  // namespace

Status RepoConfig::Validate(const std::string& what) const {
  auto bad = [&](const std::string& m) { return DataLoss(what + ": " + m); };
  if (cdc_min < (64u << 10) || cdc_min > cdc_avg || cdc_avg > cdc_max || cdc_max > (64u << 20)) {
    return bad("chunk sizes min " + std::to_string(cdc_min) + " avg " + std::to_string(cdc_avg) + " max " +
               std::to_string(cdc_max) + " are out of range");
  }
  if ((cdc_avg & (cdc_avg - 1)) != 0) return bad("average chunk size " + std::to_string(cdc_avg) + " is not a power of two");
  if (fixed_chunk < (4u << 10) || fixed_chunk > (64u << 20)) {
    return bad("fixed chunk size " + std::to_string(fixed_chunk) + " is out of range");
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> RepoConfig::Encode(Crypto& crypto) const {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.U32(Magic("CCFG"));
  w.U16(kVersion);
  w.U16(0);
  w.Bytes(repo_id);
  std::vector<uint8_t> body;
  ByteWriter b(&body);
  b.U16(kVersion);
  b.U16(append_only ? kFlagAppendOnly : 0);
  b.I64(created_ns);
  b.U32(cdc_min);
  b.U32(cdc_avg);
  b.U32(cdc_max);
  b.U64(gear_seed);
  b.U32(fixed_chunk);
  b.Zeros(20);
  CONTINUUM_RETURN_IF_ERROR(crypto.SealAppend({out.data(), kHeaderBytes}, body, &out));
  return out;
}

Result<std::array<uint8_t, 16>> RepoConfig::PeekRepoId(std::span<const uint8_t> file, const std::string& what) {
  ByteReader r(file);
  uint32_t magic = 0;
  uint16_t version = 0, reserved = 0;
  std::array<uint8_t, 16> id{};
  r.U32(&magic);
  r.U16(&version);
  r.U16(&reserved);
  r.Copy(id.data(), id.size());
  if (r.failed() || magic != Magic("CCFG")) return DataLoss(what + " is not a continuum repository config");
  if (version != kVersion) {
    return FailedPrecondition(what + " has version " + std::to_string(version) + "; this build reads 1");
  }
  return id;
}

Result<RepoConfig> RepoConfig::Decode(std::span<const uint8_t> file, Crypto& crypto, const std::string& what) {
  CONTINUUM_ASSIGN_OR_RETURN(auto repo_id, PeekRepoId(file, what));
  if (file.size() != kHeaderBytes + kSealOverhead + kBodyBytes) {
    return DataLoss(what + " has size " + std::to_string(file.size()) + ", expected " +
                    std::to_string(kHeaderBytes + kSealOverhead + kBodyBytes));
  }
  auto body = crypto.Open(file.first(kHeaderBytes), file.subspan(kHeaderBytes), what);
  if (!body.ok()) return DataLoss(what + " does not decrypt with this repository's key (damaged or foreign)");
  ByteReader r(*body);
  RepoConfig c;
  c.repo_id = repo_id;
  uint16_t version = 0, flags = 0;
  r.U16(&version);
  r.U16(&flags);
  r.I64(&c.created_ns);
  r.U32(&c.cdc_min);
  r.U32(&c.cdc_avg);
  r.U32(&c.cdc_max);
  r.U64(&c.gear_seed);
  r.U32(&c.fixed_chunk);
  if (r.failed() || version != kVersion) return DataLoss(what + " has a malformed body");
  if ((flags & ~kFlagAppendOnly) != 0) {
    return FailedPrecondition(what + " sets unknown flags " + std::to_string(flags) + "; upgrade continuum");
  }
  c.append_only = (flags & kFlagAppendOnly) != 0;
  CONTINUUM_RETURN_IF_ERROR(c.Validate(what));
  return c;
}

}  // namespace continuum::repo
