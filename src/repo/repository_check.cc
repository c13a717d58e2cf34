#include <map>
#include <set>

#include "continuum/repo/repository.h"
#include "repo/blob_walker.h"
#include "repo/manifest_codec.h"
#include "repo/repository_state.h"

namespace continuum::repo {

namespace {

void Lose(PackProblem* p, BlobSet* damaged, const PackEntry& e) {
  if (damaged->insert(e.id).second) p->lost_blobs.push_back(e.id);
}

}  // namespace

Result<CheckReport> Repository::Check(bool read_data) {
  CheckReport rep;
  // A fresh index from the files, not the in-memory one: check judges the disk.
  MasterIndex idx;
  std::vector<FileId> files;
  CONTINUUM_RETURN_IF_ERROR(LoadIndex(&idx, &files, &rep.index_problems));

  std::map<FileId, std::vector<PackEntry>> by_pack;
  idx.ForEach([&](const BlobId&, const MasterIndex::PackInfo& p, const PackEntry& e) { by_pack[p.id].push_back(e); });
  CONTINUUM_ASSIGN_OR_RETURN(auto on_disk_names, backend_->List(FileKind::kPack));
  std::set<std::string> on_disk(on_disk_names.begin(), on_disk_names.end());

  BlobSet damaged;
  for (const auto& pack : idx.packs()) {
    CONTINUUM_RETURN_IF_ERROR(Refresh());
    ++rep.packs_checked;
    std::string name = pack.id.Hex();
    const std::vector<PackEntry>& entries = by_pack[pack.id];
    PackProblem prob{.pack = backend_->Describe(FileKind::kPack, name)};
    std::vector<std::string> why;
    if (!on_disk.count(name)) {
      why.push_back("missing");
      for (const auto& e : entries) Lose(&prob, &damaged, e);
    } else {
      auto size = backend_->Size(FileKind::kPack, name);
      uint64_t have = size.ok() ? *size : 0;
      if (!size.ok()) {
        why.push_back(size.status().message());
      } else if (have != pack.size) {
        why.push_back("size " + std::to_string(have) + ", index says " + std::to_string(pack.size));
      }
      // Blobs past the end of a truncated pack are lost; the rest may still read.
      for (const auto& e : entries) {
        if (e.offset + e.stored_len > have) Lose(&prob, &damaged, e);
      }
      if (read_data && size.ok()) {
        auto bytes = backend_->Read(FileKind::kPack, name, kMaxPackFile);
        if (!bytes.ok()) {
          why.push_back(bytes.status().message());
          for (const auto& e : entries) Lose(&prob, &damaged, e);
        } else {
          if (Sha256(*bytes) != pack.id) why.push_back("content hash mismatch");
          for (const auto& e : entries) {
            if (e.offset + e.stored_len > bytes->size()) continue;  // already lost
            ++rep.blobs_checked;
            auto blob = s_->codec->Decode(e, std::span<const uint8_t>(*bytes).subspan(e.offset, e.stored_len), prob.pack);
            if (!blob.ok()) Lose(&prob, &damaged, e);
          }
          if (!prob.lost_blobs.empty() && why.empty()) why.push_back("damaged blobs");
        }
      }
    }
    if (!why.empty() || !prob.lost_blobs.empty()) {
      for (size_t i = 0; i < why.size(); ++i) prob.problem += (i ? "; " : "") + why[i];
      if (!prob.lost_blobs.empty()) prob.problem += ", " + std::to_string(prob.lost_blobs.size()) + " blobs lost";
      rep.pack_problems.push_back(std::move(prob));
    }
  }
  std::set<FileId> indexed;
  for (const auto& p : idx.packs()) indexed.insert(p.id);
  for (const auto& name : on_disk_names) {
    auto id = FileId::FromHex(name);
    if (id.ok() && !indexed.count(*id)) rep.unindexed_packs.push_back(backend_->Describe(FileKind::kPack, name));
  }

  CONTINUUM_ASSIGN_OR_RETURN(auto manifests, ListManifests());
  auto read_tree = [&](const BlobId& id) -> Result<Tree> {
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> plain, ReadBlob(id, idx));
    return ManifestCodec::DecodeTree(plain, "tree " + id.Hex());
  };
  BlobWalker walker(&idx, read_tree, &damaged);
  for (const auto& mid : manifests) {
    ++rep.manifests_checked;
    auto m = LoadManifest(mid);
    if (!m.ok()) {
      if (m.status().code() == StatusCode::kNotFound) continue;  // deleted meanwhile
      rep.manifest_problems.push_back({mid, "unreadable: " + m.status().message(), 0, 0});
      continue;
    }
    WalkResult w = walker.Walk(m->roots);
    if (w.missing.empty() && w.damaged.empty()) continue;
    rep.manifest_problems.push_back({mid,
                                     "needs " + std::to_string(w.missing.size()) + " missing and " +
                                         std::to_string(w.damaged.size()) + " damaged blobs (" + w.first_problem + ")",
                                     w.missing.size(), w.damaged.size()});
  }

  CONTINUUM_ASSIGN_OR_RETURN(auto locks, backend_->List(FileKind::kLock));
  for (const auto& name : locks) {
    std::string what = backend_->Describe(FileKind::kLock, name);
    auto bytes = backend_->Read(FileKind::kLock, name, kMaxSmallFile);
    if (!bytes.ok()) continue;
    if (auto rec = LockManager::Decode(*bytes, what); !rec.ok()) rep.lock_problems.push_back(rec.status().message());
  }
  if (s_->config.append_only) CONTINUUM_RETURN_IF_ERROR(CheckImmutability(&rep));
  return rep;
}

Status Repository::CheckImmutability(CheckReport* rep, std::vector<std::pair<FileKind, std::string>>* unflagged) {
  rep->append_only = true;
  rep->immutability_supported = true;
  for (FileKind kind : {FileKind::kConfig, FileKind::kKey, FileKind::kPack, FileKind::kIndex, FileKind::kManifest,
                        FileKind::kPin}) {
    CONTINUUM_ASSIGN_OR_RETURN(auto names, backend_->List(kind));
    for (const auto& name : names) {
      auto state = backend_->GetImmutability(kind, name);
      if (!state.ok()) {
        if (state.status().code() == StatusCode::kNotFound) continue;  // removed meanwhile
        return state.status();
      }
      if (*state == Immutability::kUnsupported) {
        rep->immutability_supported = false;
        rep->immutable_files = 0;
        rep->mutable_files.clear();
        if (unflagged) unflagged->clear();
        return Status::Ok();
      }
      if (*state == Immutability::kImmutable) {
        ++rep->immutable_files;
      } else {
        rep->mutable_files.push_back(backend_->Describe(kind, name));
        if (unflagged) unflagged->emplace_back(kind, name);
      }
    }
  }
  return Status::Ok();
}

Result<RebuildReport> Repository::RebuildIndex(bool read_data) {
  auto& s = *s_;
  if (s.options.lock != LockMode::kExclusive) {
    return FailedPrecondition("rebuilding the index of " + location_ + " needs an exclusive lock");
  }
  CONTINUUM_RETURN_IF_ERROR(Flush());
  RebuildReport rep;
  CONTINUUM_ASSIGN_OR_RETURN(auto old_names, backend_->List(FileKind::kIndex));
  CONTINUUM_ASSIGN_OR_RETURN(auto pack_names, backend_->List(FileKind::kPack));
  std::vector<IndexPack> packs;
  for (const auto& name : pack_names) {
    CONTINUUM_RETURN_IF_ERROR(Refresh());
    std::string what = "pack " + backend_->Describe(FileKind::kPack, name);
    auto bad = [&](const Status& st) { rep.bad_packs.push_back({backend_->Describe(FileKind::kPack, name), st.message(), {}}); };
    auto size = backend_->Size(FileKind::kPack, name);
    if (!size.ok()) {
      bad(size.status());
      continue;
    }
    if (*size < kPackTrailerBytes + kSealOverhead + 12) {
      bad(DataLoss(what + ": " + std::to_string(*size) + " bytes is too short for a pack"));
      continue;
    }
    auto trailer = backend_->ReadAt(FileKind::kPack, name, *size - kPackTrailerBytes, kPackTrailerBytes);
    auto header_len = trailer.ok() ? PackFormat::DecodeTrailer(*trailer, what) : Result<uint32_t>(trailer.status());
    if (!header_len.ok()) {
      bad(header_len.status());
      continue;
    }
    if (*header_len > *size - kPackTrailerBytes) {
      bad(DataLoss(what + ": header length " + std::to_string(*header_len) + " exceeds the pack"));
      continue;
    }
    uint64_t data_end = *size - kPackTrailerBytes - *header_len;
    auto header = backend_->ReadAt(FileKind::kPack, name, data_end, *header_len);
    auto entries = header.ok() ? PackFormat::DecodeHeader(*s.crypto, *header, data_end, what)
                               : Result<std::vector<PackEntry>>(header.status());
    if (!entries.ok()) {
      bad(entries.status());
      continue;
    }
    auto id = FileId::FromHex(name);
    if (!id.ok()) continue;
    if (read_data) {
      // Leave damaged blobs out, so the next backup stores them again instead of
      // deduplicating against a copy that cannot be read.
      auto bytes = backend_->Read(FileKind::kPack, name, kMaxPackFile);
      if (!bytes.ok()) {
        bad(bytes.status());
        continue;
      }
      PackProblem lost{.pack = backend_->Describe(FileKind::kPack, name), .problem = "damaged blobs left out"};
      std::vector<PackEntry> good;
      for (const auto& e : *entries) {
        auto blob = s.codec->Decode(e, std::span<const uint8_t>(*bytes).subspan(e.offset, e.stored_len), what);
        if (blob.ok()) {
          good.push_back(e);
        } else {
          lost.lost_blobs.push_back(e.id);
        }
      }
      if (!lost.lost_blobs.empty()) rep.bad_packs.push_back(std::move(lost));
      *entries = std::move(good);
    }
    rep.blobs_indexed += entries->size();
    ++rep.packs_indexed;
    packs.push_back({*id, *size, std::move(*entries)});
  }

  CONTINUUM_ASSIGN_OR_RETURN(size_t written, ReplaceIndex(std::move(packs), old_names));
  rep.index_files_written += written;
  if (!s.config.append_only) {
    for (const auto& n : old_names) {
      Status st = backend_->Remove(FileKind::kIndex, n);
      if (st.ok()) ++rep.index_files_removed;
      else if (st.code() != StatusCode::kNotFound) return st;
    }
  }
  std::vector<std::string> problems;
  CONTINUUM_RETURN_IF_ERROR(LoadIndex(&s.index, &s.index_files, &problems));
  if (s.config.append_only) {
    CheckReport flags;
    std::vector<std::pair<FileKind, std::string>> unflagged;
    CONTINUUM_RETURN_IF_ERROR(CheckImmutability(&flags, &unflagged));
    for (const auto& [kind, name] : unflagged) {
      Status st = backend_->MakeImmutable(kind, name);
      if (st.code() == StatusCode::kFailedPrecondition) {
        // Not root, or no flag here: the index is rebuilt all the same.
        rep.immutability_problem = st.message();
        break;
      }
      CONTINUUM_RETURN_IF_ERROR(st);
      ++rep.files_made_immutable;
    }
  }
  return rep;
}

Result<size_t> Repository::ReplaceIndex(std::vector<IndexPack> packs, const std::vector<std::string>& old_names) {
  std::vector<FileId> old;
  for (const auto& n : old_names) {
    if (auto id = FileId::FromHex(n); id.ok()) old.push_back(*id);
  }
  std::vector<std::vector<IndexPack>> groups(1);
  size_t in_group = 0;
  for (auto& p : packs) {
    if (in_group > 0 && in_group + p.entries.size() > (1u << 20)) {
      groups.emplace_back();
      in_group = 0;
    }
    in_group += p.entries.size();
    groups.back().push_back(std::move(p));
  }
  size_t written = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    bool last = i + 1 == groups.size();
    if (groups[i].empty() && (!last || old.empty())) continue;
    CONTINUUM_RETURN_IF_ERROR(WriteIndex(std::move(groups[i]), last ? old : std::vector<FileId>{}));
    ++written;
  }
  return written;
}

}  // namespace continuum::repo
