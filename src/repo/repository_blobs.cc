#include "continuum/common/time_util.h"
#include "continuum/repo/repository.h"
#include "repo/manifest_codec.h"
#include "repo/repository_state.h"

namespace continuum::repo {

Result<BlobId> Repository::Put(BlobType type, std::span<const uint8_t> data) {
  CONTINUUM_RETURN_IF_ERROR(Refresh());
  auto& s = *s_;
  BlobId id = s.crypto->Id(type, data);
  if (s.index.Has(id) || s.pack->Find(id)) {
    ++stats_.blobs_deduplicated;
    return id;
  }
  if (s.pack->empty()) s.pack->Reserve(s.options.pack_target_bytes + data.size() + (1u << 20));
  size_t before = s.pack->bytes();
  CONTINUUM_RETURN_IF_ERROR(s.pack->Add(type, id, data).status());
  ++stats_.blobs_new;
  stats_.raw_bytes_new += data.size();
  stats_.stored_bytes_new += s.pack->bytes() - before;
  if (s.pack->bytes() >= s.options.pack_target_bytes) CONTINUUM_RETURN_IF_ERROR(SealPack());
  return id;
}

Status Repository::AddEncoded(const PackEntry& entry, std::span<const uint8_t> stored) {
  CONTINUUM_RETURN_IF_ERROR(Refresh());
  auto& s = *s_;
  if (Has(entry.id)) {
    ++stats_.blobs_deduplicated;
    return Status::Ok();
  }
  if (s.pack->empty()) s.pack->Reserve(s.options.pack_target_bytes + stored.size() + (1u << 20));
  CONTINUUM_RETURN_IF_ERROR(s.pack->AddStored(entry, stored).status());
  ++stats_.blobs_new;
  stats_.raw_bytes_new += entry.raw_len;
  stats_.stored_bytes_new += stored.size();
  if (s.pack->bytes() >= s.options.pack_target_bytes) return SealPack();
  return Status::Ok();
}

bool Repository::Has(const BlobId& id) const {
  const PackWriter* in = nullptr;
  return s_->index.Has(id) || s_->FindUnsealed(id, &in) != nullptr;
}

BlobId Repository::IdOf(BlobType type, std::span<const uint8_t> data) { return s_->crypto->Id(type, data); }

Result<std::vector<uint8_t>> Repository::Get(const BlobId& id) {
  // A long restore keeps its lock fresh too, or a prune could judge it stale.
  CONTINUUM_RETURN_IF_ERROR(Refresh());
  const PackWriter* in = nullptr;
  if (const PackEntry* e = s_->FindUnsealed(id, &in)) return s_->codec->Decode(*e, in->Stored(*e), "unsealed pack");
  return ReadBlob(id, s_->index);
}

Result<std::vector<uint8_t>> Repository::ReadBlob(const BlobId& id, MasterIndex& index) {
  auto loc = index.Find(id);
  if (!loc) return NotFound("blob " + id.Hex() + " is not in repository " + location_);
  std::string pack_name = loc->pack.Hex();
  std::string where = "pack " + backend_->Describe(FileKind::kPack, pack_name);
  auto stored = backend_->ReadAt(FileKind::kPack, pack_name, loc->entry.offset, loc->entry.stored_len);
  if (!stored.ok()) {
    Status st = stored.status();
    // A missing or truncated pack loses data; say so in the code an operator acts on.
    if (st.code() == StatusCode::kNotFound || st.code() == StatusCode::kDataLoss) {
      return DataLoss("blob " + id.Hex() + ": " + st.message());
    }
    return st;
  }
  return s_->codec->Decode(loc->entry, *stored, where);
}

Status Repository::SealPack() {
  auto& s = *s_;
  // Packs are stored in order: the one in flight first.
  CONTINUUM_RETURN_IF_ERROR(CompleteStore());
  if (s.pack->empty()) return Status::Ok();
  CONTINUUM_ASSIGN_OR_RETURN(PackWriter::Finished f, s.pack->Finish());
  if (s.background_store) {
    // Written and synced on a thread while the caller fills the next pack
    // (the write and its fsync had stopped a backup's walk ~50 ms per pack).
    if (!s.storing) s.storing = std::make_unique<PackWriter>(s.codec.get(), s.crypto.get());
    std::swap(s.pack, s.storing);
    s.store_pending = true;
    s.store_record = std::move(f.record);
    s.store_bytes = f.bytes;
    s.store_status = Status::Ok();
    // The state (which joins the thread when destroyed) outlives it, and the
    // backend outlives the state.
    s.store_thread = std::thread([&s, backend = backend_.get()] {
      s.store_status = backend->Write(FileKind::kPack, s.store_record.pack.Hex(), s.store_bytes);
    });
    return Status::Ok();
  }
  Status st = backend_->Write(FileKind::kPack, f.record.pack.Hex(), f.bytes);
  if (!st.ok() && st.code() != StatusCode::kAlreadyExists) {
    // Keep the blobs buffered: a later Flush retries once space is freed.
    s.pack->Unfinish();
    return st;
  }
  s.pack->Reset();
  return IndexStored(std::move(f.record));
}

Status Repository::CompleteStore() {
  auto& s = *s_;
  if (!s.store_pending) return Status::Ok();
  if (s.store_thread.joinable()) s.store_thread.join();
  Status st = s.store_status;
  if (!st.ok() && st.code() != StatusCode::kAlreadyExists) {
    // Once more, now: space may have been freed since. The blobs stay
    // buffered (and findable) until a write succeeds.
    st = backend_->Write(FileKind::kPack, s.store_record.pack.Hex(), s.store_bytes);
    s.store_status = st;
    if (!st.ok() && st.code() != StatusCode::kAlreadyExists) return st;
  }
  s.store_pending = false;
  s.storing->Reset();
  return IndexStored(std::move(s.store_record));
}

Status Repository::IndexStored(IndexPack record) {
  auto& s = *s_;
  // Invariant: blobs enter the index only after their pack is durable.
  for (const auto& e : record.entries) s.index.Add(record.pack, record.pack_size, e);
  s.unindexed_blobs += record.entries.size();
  s.unindexed.push_back(std::move(record));
  ++stats_.packs_written;
  if (s.unindexed_blobs >= kIndexEveryBlobs) return FlushIndex();
  return Status::Ok();
}

Status Repository::WriteIndex(std::vector<IndexPack> packs, std::vector<FileId> supersedes) {
  auto& s = *s_;
  IndexContents c;
  c.created_ns = WallNowNs();
  c.supersedes = std::move(supersedes);
  c.packs = std::move(packs);
  if (c.packs.empty() && c.supersedes.empty()) return Status::Ok();
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, IndexFile::Encode(*s.crypto, c));
  FileId id = Sha256(bytes);
  Status st = backend_->Write(FileKind::kIndex, id.Hex(), bytes);
  if (!st.ok() && st.code() != StatusCode::kAlreadyExists) return st;
  s.index_files.push_back(id);
  ++stats_.index_files_written;
  return Status::Ok();
}

Status Repository::FlushIndex() {
  auto& s = *s_;
  if (s.unindexed.empty()) return Status::Ok();
  CONTINUUM_RETURN_IF_ERROR(WriteIndex(s.unindexed, {}));
  s.unindexed.clear();
  s.unindexed_blobs = 0;
  return Status::Ok();
}

Status Repository::Flush() {
  CONTINUUM_RETURN_IF_ERROR(Refresh());
  CONTINUUM_RETURN_IF_ERROR(SealPack());
  CONTINUUM_RETURN_IF_ERROR(CompleteStore());
  // Ordering: the packs above are durable before the index that names them.
  return FlushIndex();
}

Result<BlobId> Repository::PutTree(const Tree& tree) {
  for (const auto& ref : tree.refs) {
    if (!Has(ref)) return InvalidArgument("tree refers to blob " + ref.Hex() + " which is not stored");
  }
  std::vector<uint8_t> plain = ManifestCodec::EncodeTree(tree);
  return Put(BlobType::kTree, plain);
}

Result<Tree> Repository::GetTree(const BlobId& id) {
  if (auto loc = s_->index.Find(id); loc && loc->entry.type != BlobType::kTree) {
    return InvalidArgument("blob " + id.Hex() + " is a data blob, not a tree");
  }
  CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> plain, Get(id));
  return ManifestCodec::DecodeTree(plain, "tree " + id.Hex());
}

}  // namespace continuum::repo
