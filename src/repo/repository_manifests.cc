#include "continuum/repo/repository.h"
#include "repo/blob_walker.h"
#include "repo/manifest_codec.h"
#include "repo/repository_state.h"

namespace continuum::repo {

Result<ManifestId> Repository::SaveManifest(const Manifest& manifest) {
  for (const auto& root : manifest.roots) {
    if (!Has(root)) return InvalidArgument("manifest refers to blob " + root.Hex() + " which is not stored");
  }
  // Ordering: the blobs the manifest needs are durable (pack, then index) before
  // the manifest exists, so a listed point always restores.
  CONTINUUM_RETURN_IF_ERROR(Flush());
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ManifestCodec::Encode(*s_->crypto, manifest));
  ManifestId id = Sha256(bytes);
  Status st = backend_->Write(FileKind::kManifest, id.Hex(), bytes);
  if (!st.ok() && st.code() != StatusCode::kAlreadyExists) return st;
  return id;
}

Result<std::vector<ManifestId>> Repository::ListManifests() {
  CONTINUUM_ASSIGN_OR_RETURN(auto names, backend_->List(FileKind::kManifest));
  std::vector<ManifestId> out;
  out.reserve(names.size());
  for (const auto& n : names) {
    auto id = ManifestId::FromHex(n);
    if (id.ok()) out.push_back(*id);
  }
  return out;
}

Result<Manifest> Repository::LoadManifest(const ManifestId& id) {
  std::string name = id.Hex();
  std::string what = "manifest " + backend_->Describe(FileKind::kManifest, name);
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, backend_->Read(FileKind::kManifest, name, kMaxMetadataFile));
  if (Sha256(bytes) != id) return DataLoss(what + ": content does not match its name");
  return ManifestCodec::Decode(*s_->crypto, bytes, what);
}

Status Repository::DeleteManifest(const ManifestId& id) {
  if (s_->config.append_only) {
    return FailedPrecondition("repository " + location_ + " is append-only: manifests cannot be deleted");
  }
  CONTINUUM_RETURN_IF_ERROR(Refresh());
  return backend_->Remove(FileKind::kManifest, id.Hex());
}

Result<std::vector<BlobId>> Repository::ManifestBlobs(const ManifestId& id) {
  CONTINUUM_ASSIGN_OR_RETURN(Manifest m, LoadManifest(id));
  BlobWalker walker(&s_->index, [this](const BlobId& t) { return GetTree(t); }, nullptr);
  WalkResult w = walker.Walk(m.roots);
  if (!w.missing.empty()) return NotFound("manifest " + id.Hex() + ": " + w.first_problem);
  if (!w.damaged.empty()) return DataLoss("manifest " + id.Hex() + ": " + w.first_problem);
  return std::move(w.blobs);
}

}  // namespace continuum::repo
