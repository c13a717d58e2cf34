#include <map>
#include <set>

#include "continuum/repo/repository.h"
#include "repo/blob_walker.h"
#include "repo/repository_state.h"

namespace continuum::repo {

namespace {

// What prune does with one indexed pack.
enum class PackFate { kKeep, kRepack, kDelete };

struct PackPlan {
  uint64_t size = 0;
  std::vector<PackEntry> entries;  // as indexed (a blob stored twice is indexed in one pack only)
  uint64_t used_bytes = 0;
  uint64_t unused_bytes = 0;
  uint64_t used_blobs = 0;
  PackFate fate = PackFate::kKeep;
};

}  // namespace

Result<PruneReport> Repository::Prune(const PruneOptions& options) {
  auto& s = *s_;
  if (s.config.append_only) {
    return FailedPrecondition("repository " + location_ + " is append-only: prune would delete packs");
  }
  if (s.options.lock != LockMode::kExclusive) {
    return FailedPrecondition("pruning " + location_ + " needs an exclusive lock");
  }
  CONTINUUM_RETURN_IF_ERROR(Flush());
  // Judge the files, not memory. A damaged index file hides its packs, and
  // prune would delete them as unindexed: stop instead.
  std::vector<std::string> problems;
  CONTINUUM_RETURN_IF_ERROR(LoadIndex(&s.index, &s.index_files, &problems));
  if (!problems.empty()) {
    return FailedPrecondition(problems[0] + ": run 'repo check' and 'repo repair' before pruning");
  }

  // Mark: every blob some point needs. A point that cannot be walked stops the
  // prune, since what it needs is unknown and deleting could lose it.
  PruneReport rep;
  BlobSet used;
  BlobWalker walker(&s.index, [this](const BlobId& t) { return GetTree(t); }, nullptr);
  CONTINUUM_ASSIGN_OR_RETURN(auto manifests, ListManifests());
  std::set<ManifestId> live(manifests.begin(), manifests.end());
  for (const auto& mid : manifests) {
    CONTINUUM_RETURN_IF_ERROR(Refresh());
    auto m = LoadManifest(mid);
    if (!m.ok()) {
      return FailedPrecondition("point " + mid.Hex() + " is unreadable (" + m.status().message() +
                                "): prune cannot know what it needs; run 'repo check'");
    }
    WalkResult w = walker.Walk(m->roots);
    if (!w.missing.empty() || !w.damaged.empty()) {
      return FailedPrecondition("point " + mid.Hex() + " cannot be walked (" + w.first_problem +
                                "): run 'repo check' and 'repo repair' before pruning");
    }
    used.insert(w.blobs.begin(), w.blobs.end());
    ++rep.points;
  }
  rep.blobs_used = used.size();

  // Plan per pack.
  std::map<FileId, PackPlan> plans;
  for (const auto& p : s.index.packs()) plans[p.id].size = p.size;
  s.index.ForEach([&](const BlobId&, const MasterIndex::PackInfo& p, const PackEntry& e) {
    plans[p.id].entries.push_back(e);
  });
  for (auto& [id, plan] : plans) {
    std::sort(plan.entries.begin(), plan.entries.end(),
              [](const PackEntry& a, const PackEntry& b) { return a.offset < b.offset; });
    for (const auto& e : plan.entries) {
      if (used.count(e.id)) {
        plan.used_bytes += e.stored_len;
        ++plan.used_blobs;
      } else {
        plan.unused_bytes += e.stored_len;
      }
    }
    if (plan.used_blobs == 0) {
      plan.fate = PackFate::kDelete;
    } else if (plan.unused_bytes > 0 &&
               plan.unused_bytes >= options.repack_unused_fraction * (plan.used_bytes + plan.unused_bytes)) {
      plan.fate = PackFate::kRepack;
    } else {
      rep.unused_bytes_kept += plan.unused_bytes;
    }
    if (plan.fate != PackFate::kKeep) {
      ++rep.packs_deleted;
      rep.bytes_deleted += plan.size;
      rep.blobs_removed += plan.entries.size() - plan.used_blobs;
    }
    if (plan.fate == PackFate::kRepack) ++rep.packs_repacked;
  }
  // Packs no index names: left by a crashed writer (or an interrupted prune).
  // Under the exclusive lock no writer is running, and the walk above proved
  // that every needed blob is indexed, so they hold nothing anyone needs.
  CONTINUUM_ASSIGN_OR_RETURN(auto on_disk, backend_->List(FileKind::kPack));
  std::vector<std::string> orphans;
  for (const auto& name : on_disk) {
    auto id = FileId::FromHex(name);
    if (!id.ok() || plans.count(*id)) continue;
    orphans.push_back(name);
    ++rep.unindexed_packs_deleted;
    if (auto size = backend_->Size(FileKind::kPack, name); size.ok()) rep.bytes_deleted += *size;
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto pins, ListPins());
  std::vector<ManifestId> stale_pins;
  for (const auto& p : pins) {
    if (!live.count(p)) stale_pins.push_back(p);
  }
  rep.pins_removed = stale_pins.size();

  bool rewrite_index = rep.packs_deleted > 0;
  if (options.dry_run) {
    for (const auto& [id, plan] : plans) {
      if (plan.fate == PackFate::kRepack) rep.bytes_written += plan.used_bytes;  // estimate: before the new headers
    }
    return rep;
  }

  // Sweep, in an order that leaves a consistent repository at every instant:
  // 1. copy the used blobs of repacked packs into new packs (durable on return);
  PackWriter writer(s.codec.get(), s.crypto.get());
  std::vector<IndexPack> new_index;
  auto seal = [&]() -> Status {
    if (writer.empty()) return Status::Ok();
    CONTINUUM_ASSIGN_OR_RETURN(PackWriter::Finished f, writer.Finish());
    Status st = backend_->Write(FileKind::kPack, f.record.pack.Hex(), f.bytes);
    if (!st.ok() && st.code() != StatusCode::kAlreadyExists) return st;
    rep.bytes_written += f.record.pack_size;
    ++rep.packs_written;
    new_index.push_back(std::move(f.record));
    writer.Reset();
    return Status::Ok();
  };
  for (const auto& [id, plan] : plans) {
    if (plan.fate != PackFate::kRepack) continue;
    for (const auto& e : plan.entries) {
      if (!used.count(e.id)) continue;
      CONTINUUM_RETURN_IF_ERROR(Refresh());
      // ReadBlob verifies the id: a damaged copy is never carried forward.
      CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> plain, ReadBlob(e.id, s.index));
      CONTINUUM_RETURN_IF_ERROR(writer.Add(e.type, e.id, plain).status());
      if (writer.bytes() >= s.options.pack_target_bytes) CONTINUUM_RETURN_IF_ERROR(seal());
    }
  }
  CONTINUUM_RETURN_IF_ERROR(seal());

  // 2. write index files naming the kept and the new packs; only the last one
  //    supersedes the old files, so until it exists the old index (whose packs
  //    are all still there) stays in force;
  if (rewrite_index) {
    for (auto& [id, plan] : plans) {
      if (plan.fate == PackFate::kKeep) new_index.push_back({id, plan.size, std::move(plan.entries)});
    }
    CONTINUUM_ASSIGN_OR_RETURN(auto old_names, backend_->List(FileKind::kIndex));
    CONTINUUM_RETURN_IF_ERROR(ReplaceIndex(std::move(new_index), old_names).status());
    // 3. remove the superseded index files (ignored from now on anyway);
    for (const auto& n : old_names) {
      Status st = backend_->Remove(FileKind::kIndex, n);
      if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
    }
    // 4. only now delete packs: no index in force names them.
    for (const auto& [id, plan] : plans) {
      if (plan.fate == PackFate::kKeep) continue;
      CONTINUUM_RETURN_IF_ERROR(Refresh());
      Status st = backend_->Remove(FileKind::kPack, id.Hex());
      if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
    }
  }
  for (const auto& name : orphans) {
    Status st = backend_->Remove(FileKind::kPack, name);
    if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
  }
  for (const auto& p : stale_pins) {
    Status st = backend_->Remove(FileKind::kPin, p.Hex());
    if (!st.ok() && st.code() != StatusCode::kNotFound) return st;
  }
  problems.clear();
  CONTINUUM_RETURN_IF_ERROR(LoadIndex(&s.index, &s.index_files, &problems));
  return rep;
}

}  // namespace continuum::repo
