#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/repo/blob_id.h"

namespace continuum::repo {

class Repository;

// Takes a blob's plaintext on a worker thread (say, writes it to its place in
// a file); an error is what Next returns for the blob.
using BlobSink = std::function<Status(std::span<const uint8_t>)>;

struct BlobPrefetcherOptions {
  // Workers that read, decrypt and decompress; 0: one per CPU, at least 4.
  size_t threads = 0;
  // Plaintext read ahead of the caller and not yet taken by Next. Queued blobs
  // beyond it wait (only their ids are held), bounding memory.
  size_t max_ahead_bytes = 64u << 20;
  // Workers run this much nicer than the thread that creates them (Linux
  // thread priorities; 0 keeps it). The caller is the pipeline's producer:
  // when it waits for a CPU behind the workers it stops queueing, and the
  // workers run dry. On 2 cores a restore ran ~5% faster at +5.
  int worker_nice = 5;
};

// Reads blobs ahead of a restore on worker threads (read, decrypt, decompress,
// verify against the id) and hands them out in the order they were queued.
// Same checks and errors as Repository::Get.
//
// Thread-safety: every method on the thread that owns the Repository; the
// workers use only the backend (safe for concurrent reads) and their own codecs.
class BlobPrefetcher {
 public:
  static Result<std::unique_ptr<BlobPrefetcher>> Create(Repository& repo, const BlobPrefetcherOptions& options = {});
  ~BlobPrefetcher();
  BlobPrefetcher(const BlobPrefetcher&) = delete;
  BlobPrefetcher& operator=(const BlobPrefetcher&) = delete;

  // Queues a blob. kNotFound (now) when the repository does not have it.
  Status Enqueue(const BlobId& id);
  // Queues a blob that a worker hands to `sink` once read and verified, so
  // that consuming it (a copy into the page cache) runs in parallel too; Next
  // then returns an empty vector, or the read's or the sink's error. Returns
  // the blob's plaintext length (from the index), known before it is read.
  Result<uint32_t> Enqueue(const BlobId& id, BlobSink sink);
  // The oldest queued blob not yet returned; waits for its read. Errors as
  // Repository::Get; kFailedPrecondition when nothing is queued.
  Result<std::vector<uint8_t>> Next();
  // Blobs queued and not yet returned by Next.
  size_t queued() const;
  // Drops every queued blob not yet started and waits for those being read:
  // after it no sink runs (call it before closing what sinks write to). Next
  // fails from then on.
  void Abandon();

 private:
  struct Impl;
  explicit BlobPrefetcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace continuum::repo
