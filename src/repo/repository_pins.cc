#include "continuum/common/time_util.h"
#include "continuum/repo/repository.h"
#include "repo/bytes.h"
#include "repo/repository_state.h"
#include "repo/sealed_file.h"

namespace continuum::repo {

namespace {

constexpr uint16_t kPinVersion = 1;

// pin body := manifest_id[32] ‖ time_ns i64. The id inside the sealed body binds
// the pin to its name: a pin file copied to another name does not pin that point.
Result<ManifestId> DecodePin(Crypto& crypto, std::span<const uint8_t> file, const std::string& what) {
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> body, SealedFile::Decode(crypto, Magic("CPIN"), kPinVersion, file, what));
  ByteReader r(body);
  ManifestId id;
  int64_t time_ns = 0;
  if (!r.Id(&id) || !r.I64(&time_ns) || r.remaining() != 0) return DataLoss(what + ": malformed pin");
  return id;
}

}  // namespace

Status Repository::SetPinned(const ManifestId& id, bool pinned) {
  CONTINUUM_RETURN_IF_ERROR(Refresh());
  std::string name = id.Hex();
  if (!pinned) {
    if (s_->config.append_only) {
      return FailedPrecondition("repository " + location_ + " is append-only: pins cannot be removed");
    }
    Status st = backend_->Remove(FileKind::kPin, name);
    return st.code() == StatusCode::kNotFound ? Status::Ok() : st;
  }
  CONTINUUM_RETURN_IF_ERROR(backend_->Size(FileKind::kManifest, name).status());
  std::vector<uint8_t> body;
  ByteWriter w(&body);
  w.Id(id);
  w.I64(WallNowNs());
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, SealedFile::Encode(*s_->crypto, Magic("CPIN"), kPinVersion, body));
  Status st = backend_->Write(FileKind::kPin, name, bytes);
  return st.code() == StatusCode::kAlreadyExists ? Status::Ok() : st;
}

Result<std::vector<ManifestId>> Repository::ListPins(std::vector<std::string>* problems) {
  CONTINUUM_ASSIGN_OR_RETURN(auto names, backend_->List(FileKind::kPin));
  std::vector<ManifestId> out;
  for (const auto& name : names) {
    std::string what = "pin " + backend_->Describe(FileKind::kPin, name);
    auto bytes = backend_->Read(FileKind::kPin, name, kMaxSmallFile);
    if (!bytes.ok()) {
      if (bytes.status().code() != StatusCode::kNotFound && problems) problems->push_back(bytes.status().message());
      continue;
    }
    auto id = DecodePin(*s_->crypto, *bytes, what);
    if (!id.ok() || id->Hex() != name) {
      if (problems) problems->push_back(id.ok() ? what + ": names another point" : id.status().message());
      continue;
    }
    out.push_back(*id);
  }
  return out;
}

}  // namespace continuum::repo
