#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/blob_id.h"
#include "continuum/repo/manifest.h"

namespace continuum::repo {

class Repository;

struct BlobPipelineOptions {
  // Workers that compress and encrypt; 0: std::thread::hardware_concurrency().
  size_t threads = 0;
  // Plaintext handed to workers but not yet appended to a pack. Beyond it, Put
  // waits for the oldest blob (this bounds the pipeline's memory).
  size_t max_pending_bytes = 16u << 20;
  // Workers run this much nicer than the thread that creates them (Linux
  // thread priorities; 0 keeps it). The caller reads, chunks and hashes for
  // them: when it waits for a CPU behind them, they soon wait for it. A 2 GiB
  // tree backup on 2 cores took ~7% less time at +5.
  int worker_nice = 5;
};

// Stores blobs with compression and encryption on a pool of worker threads.
// The caller's thread computes each id (keyed SHA-256) and checks dedup, so
// Put returns the id at once; workers compress and encrypt new blobs; the
// caller's thread appends the results to packs in exactly the order of the Put
// calls. Packs, index and ids are therefore what Repository::Put would have
// written (but for the random nonces), and a tree put after its refs is
// stored after them, as the format requires.
//
// Thread-safety: every method on the thread that owns the Repository. While a
// pipeline exists, store blobs only through it (Repository::PutTree does not
// see blobs still in the pipeline), and Drain before Flush or SaveManifest.
class BlobPipeline {
 public:
  static Result<std::unique_ptr<BlobPipeline>> Create(Repository& repo, const BlobPipelineOptions& options = {});
  // Stops the workers. Blobs not drained are dropped, exactly as a crash would.
  ~BlobPipeline();
  BlobPipeline(const BlobPipeline&) = delete;
  BlobPipeline& operator=(const BlobPipeline&) = delete;

  // As Repository::Put. Errors of earlier blobs surface here or in Drain.
  Result<BlobId> Put(BlobType type, std::span<const uint8_t> data);

  // Put in two steps, so that a blob's id (keyed SHA-256, a large share of a
  // backup's CPU) is computed on a worker while the caller reads and chunks
  // on: PutLater queues the hashing and returns at once; Resolve waits for
  // the id, then stores the blob as Put would (dedup first). Blobs enter packs
  // in Resolve order. A ticket never resolved costs only its hashing.
  struct Hashing;
  using Ticket = std::shared_ptr<Hashing>;
  Ticket PutLater(BlobType type, std::vector<uint8_t> data);
  Result<BlobId> Resolve(const Ticket& ticket);
  // As Repository::PutTree; each ref must be stored or put through this pipeline.
  Result<BlobId> PutTree(const Tree& tree);
  // Waits until every blob put so far is in the repository (in the current pack
  // or a written one). Returns the first error of any blob; after an error the
  // pipeline refuses further blobs.
  Status Drain();

 private:
  struct Impl;
  explicit BlobPipeline(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace continuum::repo
