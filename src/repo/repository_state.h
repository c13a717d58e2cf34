#pragma once

#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "continuum/repo/repository.h"
#include "repo/blob_codec.h"
#include "repo/crypto.h"
#include "repo/index_file.h"
#include "repo/lock_manager.h"
#include "repo/master_index.h"
#include "repo/pack_writer.h"
#include "repo/repo_config.h"

namespace continuum::repo {

inline constexpr uint64_t kMaxSmallFile = 4096;           // config, keys, locks
inline constexpr uint64_t kMaxMetadataFile = 1ull << 30;  // index files, manifests
// pack_target_bytes is clamped to 512 MiB, plus one 64 MiB blob and the header.
inline constexpr uint64_t kMaxPackFile = 1ull << 30;
// An index file is written once this many sealed blobs await one, bounding what
// a crash leaves unindexed (still adoptable by RebuildIndex).
inline constexpr size_t kIndexEveryBlobs = 65536;

// The private state of a Repository, shared by its .cc files.
struct Repository::State {
  ~State() {
    // A pack still being stored is finished (it stays unindexed, as after a
    // crash) before the lock below is released.
    if (store_thread.joinable()) store_thread.join();
  }

  OpenOptions options;
  RepoConfig config;
  std::unique_ptr<Crypto> crypto;
  std::unique_ptr<BlobCodec> codec;
  std::unique_ptr<LockManager> lock;
  MasterIndex index;
  std::vector<FileId> index_files;  // loaded (not superseded) index files
  std::unique_ptr<PackWriter> pack;
  // Background stores (BlobPipeline's backups, see SealPack): `storing` holds
  // the sealed pack a thread is writing, or whose write failed, until
  // CompleteStore indexes it; its blobs stay findable meanwhile.
  bool background_store = false;
  std::unique_ptr<PackWriter> storing;
  bool store_pending = false;
  IndexPack store_record;
  std::span<const uint8_t> store_bytes;  // in `storing`
  Status store_status;                   // written by store_thread before it ends
  std::thread store_thread;
  // The blob's entry in the current pack or in the one being stored (null
  // when in neither); *in: the writer that holds it.
  const PackEntry* FindUnsealed(const BlobId& id, const PackWriter** in) const {
    *in = pack.get();
    if (const PackEntry* e = pack->Find(id)) return e;
    *in = storing.get();
    return store_pending ? storing->Find(id) : nullptr;
  }
  // Packs stored but not yet named by an index file.
  std::vector<IndexPack> unindexed;
  size_t unindexed_blobs = 0;
};

}  // namespace continuum::repo
