#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/backend.h"
#include "continuum/repo/blob_id.h"
#include "continuum/repo/check_report.h"
#include "continuum/repo/fast_cdc_chunker.h"
#include "continuum/repo/fixed_chunker.h"
#include "continuum/repo/manifest.h"
#include "continuum/repo/prune_report.h"
#include "continuum/repo/repository_options.h"

namespace continuum::repo {

class Crypto;
class BlobCodec;
class LockManager;
class MasterIndex;
class PackWriter;
struct IndexPack;
struct PackEntry;

// Counters of this Repository object since Open (metrics for the backup layer).
struct RepositoryStats {
  uint64_t blobs_new = 0;
  uint64_t blobs_deduplicated = 0;
  uint64_t raw_bytes_new = 0;     // plaintext bytes of new blobs
  uint64_t stored_bytes_new = 0;  // after compression and encryption
  uint64_t packs_written = 0;
  uint64_t index_files_written = 0;
};

// A deduplicating, compressing, encrypting blob and manifest store (format in
// docs/format/repository.md).
//
// Durability: Put returns once a blob is buffered; it is durable after Flush
// (or SaveManifest, which flushes first). Destroying a Repository without
// Flush drops unflushed blobs, exactly as a crash would: a crash at any moment
// leaves only complete files, and nothing references an unwritten pack.
//
// Thread-safety: none. One thread owns a Repository; several processes (each
// with its own Repository) may share a repository under shared locks.
class Repository {
 public:
  // Creates a repository: layout, a random master key wrapped for `creds`, and
  // the config. kAlreadyExists if one is there.
  static Status Init(const std::string& path, const Credentials& creds, const InitOptions& options = {});
  static Status Init(std::unique_ptr<Backend> backend, const Credentials& creds, const InitOptions& options);

  // Opens with a password or key file; takes options.lock. Errors: kNotFound (no
  // repository), kInvalidArgument "wrong password for repository <path>",
  // kUnavailable (locked by a live holder), kDataLoss (damaged key or config).
  static Result<std::unique_ptr<Repository>> Open(const std::string& path, const Credentials& creds,
                                                  OpenOptions options = {});
  static Result<std::unique_ptr<Repository>> Open(std::unique_ptr<Backend> backend, const Credentials& creds,
                                                  OpenOptions options);
  ~Repository();
  Repository(const Repository&) = delete;
  Repository& operator=(const Repository&) = delete;

  // Stores a blob unless one with the same id exists (dedup) and returns its id.
  // Writes a pack when the current one passes pack_target_bytes. A data blob is
  // at most 64 MiB.
  Result<BlobId> Put(BlobType type, std::span<const uint8_t> data);
  // Reads, decrypts, decompresses and verifies a blob. kNotFound if unknown,
  // kDataLoss naming the pack if damaged.
  Result<std::vector<uint8_t>> Get(const BlobId& id);
  bool Has(const BlobId& id) const;
  // The id a blob with this content has in this repository (keyed, so only a
  // holder of the key can compute it): lets a restore verify what it wrote
  // without reading the repository again.
  BlobId IdOf(BlobType type, std::span<const uint8_t> data);
  // Writes the current pack and an index file for every pack not yet indexed.
  // Files are written to a temp name, fsynced, renamed, and the directory fsynced.
  Status Flush();

  // A tree blob (type kTree). Every ref must already be stored (kInvalidArgument otherwise).
  Result<BlobId> PutTree(const Tree& tree);
  Result<Tree> GetTree(const BlobId& id);

  // Flushes, then writes the manifest. Every root must be stored. The id is the
  // SHA-256 of the manifest file.
  Result<ManifestId> SaveManifest(const Manifest& manifest);
  Result<std::vector<ManifestId>> ListManifests();
  Result<Manifest> LoadManifest(const ManifestId& id);
  // kFailedPrecondition in append-only repositories.
  Status DeleteManifest(const ManifestId& id);
  // Every blob the point needs: its roots and all refs reachable through trees.
  // kDataLoss / kNotFound naming the first blob that is missing or unreadable.
  Result<std::vector<BlobId>> ManifestBlobs(const ManifestId& id);

  // Pins: a pinned point is never removed by retention. Stored as pins/<manifest id>
  // (docs/format/repository.md, "Pins"), so the point keeps its id. Pinning an
  // unknown manifest is kNotFound; pinning twice is a no-op. Unpinning deletes
  // the pin file: kFailedPrecondition in append-only repositories.
  Status SetPinned(const ManifestId& id, bool pinned);
  // The manifests that carry a valid pin. A pin file that does not decode (or
  // names another manifest) is skipped and reported through `problems`.
  Result<std::vector<ManifestId>> ListPins(std::vector<std::string>* problems = nullptr);

  // Removes every blob no manifest needs: deletes wholly unused packs, copies the
  // used blobs of mostly unused packs into new packs, and writes an index that
  // supersedes all previous ones (docs/format/repository.md, "Prune"). Needs an
  // exclusive lock; kFailedPrecondition in append-only repositories and when a
  // point cannot be walked (a missing or damaged blob: run check and repair first,
  // since prune cannot know what such a point needs). Crash-safe at every step.
  Result<PruneReport> Prune(const PruneOptions& options = {});

  // Verifies the repository: see docs/format/repository.md, "Check and repair".
  Result<CheckReport> Check(bool read_data);
  // Rebuilds the index from pack headers. Needs an exclusive lock. In an
  // append-only repository it also flags immutable every write-once file that
  // lacks the flag (RebuildReport says why where it cannot). With
  // `read_data`, every blob is verified and damaged ones are left out of the new
  // index, so the next backup stores them again (otherwise dedup would keep
  // pointing at the damaged copy).
  Result<RebuildReport> RebuildIndex(bool read_data = false);

  // Chunker settings every writer of this repository must use (dedup).
  FastCdcOptions CdcOptions() const;
  FixedChunkerOptions FixedOptions() const;
  bool append_only() const;
  std::string repo_id() const;  // 32 hex digits, public
  const std::string& location() const { return location_; }
  const RepositoryStats& stats() const { return stats_; }
  Backend& backend() { return *backend_; }

 private:
  // Parallel writers and readers of this Repository (blob_pipeline.h,
  // blob_prefetcher.h): they touch the state only on the owner thread.
  friend class BlobPipeline;
  friend class BlobPrefetcher;
  struct State;
  Repository();
  // Appends a blob encoded elsewhere (a pipeline worker) to the current pack;
  // seals the pack when it is full. Dedup was checked by the caller.
  Status AddEncoded(const PackEntry& entry, std::span<const uint8_t> stored);
  // Fills the append-only fields of a check report; with `unflagged`, also
  // lists the write-once files lacking the immutable flag.
  Status CheckImmutability(CheckReport* rep, std::vector<std::pair<FileKind, std::string>>* unflagged = nullptr);
  Status LoadIndex(MasterIndex* index, std::vector<FileId>* files, std::vector<std::string>* problems);
  // Stores the current pack (on a thread when State::background_store is set,
  // after the one in flight is complete); its blobs enter the index once it is durable.
  Status SealPack();
  // Waits for the pack a background store is writing and indexes it.
  Status CompleteStore();
  Status IndexStored(IndexPack record);
  Status WriteIndex(std::vector<IndexPack> packs, std::vector<FileId> supersedes);
  // Writes `packs` as new index files (about a million entries each) of which
  // the last supersedes every index file named in `old_names`; returns how
  // many were written. Only the last new file supersedes the old ones: a
  // crash before it leaves the old files in force next to the new ones (a
  // harmless union). Nothing is written when both are empty.
  Result<size_t> ReplaceIndex(std::vector<IndexPack> packs, const std::vector<std::string>& old_names);
  Status FlushIndex();
  Status Refresh();
  Result<std::vector<uint8_t>> ReadBlob(const BlobId& id, MasterIndex& index);

  std::string location_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<State> s_;
  RepositoryStats stats_;
};

}  // namespace continuum::repo
