#include "continuum/repo/blob_pipeline.h"

#include <sys/resource.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "continuum/common/thread_priority.h"
#include "continuum/repo/repository.h"
#include "repo/manifest_codec.h"
#include "repo/repository_state.h"

namespace continuum::repo {
namespace {

// One new blob on its way into a pack.
struct Job {
  BlobType type = BlobType::kData;
  BlobId id;
  std::vector<uint8_t> plain;   // freed by the worker once encoded
  size_t plain_len = 0;
  std::vector<uint8_t> stored;  // nonce ‖ ciphertext ‖ tag
  PackEntry entry;
  Status status;
  bool done = false;  // GUARDED_BY(Impl::mu)
};

Status CheckBlobSize(size_t size) {
  if (size <= kMaxBlobRawBytes) return Status::Ok();
  return InvalidArgument("blob of " + std::to_string(size) + " bytes exceeds the 64 MiB limit");
}

}  // namespace

struct BlobPipeline::Hashing {
  BlobType type = BlobType::kData;
  std::vector<uint8_t> data;
  BlobId id;
  bool done = false;  // GUARDED_BY(Impl::mu)
};

struct BlobPipeline::Impl {
  Impl(Repository& r, const BlobPipelineOptions& o) : repo(r), options(o) {}

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : workers) t.join();
  }

  void Work(Crypto* crypto) {
    BlobCodec codec(crypto, repo.s_->options.compression_level);
    for (;;) {
      std::shared_ptr<Job> job;
      std::shared_ptr<Hashing> hash;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stop || !encode_queue.empty() || !hash_queue.empty(); });
        if (stop) return;
        // Hashing first: the owner thread waits for ids, the packs can wait.
        if (!hash_queue.empty()) {
          hash = std::move(hash_queue.front());
          hash_queue.pop_front();
        } else {
          job = std::move(encode_queue.front());
          encode_queue.pop_front();
        }
      }
      if (hash) {
        hash->id = crypto->Id(hash->type, hash->data);
        {
          std::lock_guard<std::mutex> lock(mu);
          hash->done = true;
        }
        done_cv.notify_all();
        continue;
      }
      auto e = codec.EncodeAppend(job->type, job->id, job->plain, &job->stored);
      if (e.ok()) {
        job->entry = *e;
      } else {
        job->status = e.status();
      }
      std::vector<uint8_t>().swap(job->plain);
      {
        std::lock_guard<std::mutex> lock(mu);
        job->done = true;
      }
      done_cv.notify_all();
    }
  }

  // Appends the oldest job to the pack once a worker has finished it.
  Status CommitOldest() {
    std::shared_ptr<Job> job = order.front();
    {
      std::unique_lock<std::mutex> lock(mu);
      done_cv.wait(lock, [&] { return job->done; });
    }
    order.pop_front();
    pending.erase(job->id);
    pending_bytes -= job->plain_len;
    if (!job->status.ok()) return job->status;
    return repo.AddEncoded(job->entry, job->stored);
  }

  // The blob is stored or on its way (counted as deduplicated).
  bool Known(const BlobId& id) {
    if (repo.Has(id) || pending.count(id)) {
      ++repo.stats_.blobs_deduplicated;
      return true;
    }
    return false;
  }

  // Queues a new blob for compression and encryption.
  Result<BlobId> Admit(BlobType type, const BlobId& id, std::vector<uint8_t> plain) {
    const size_t size = plain.size();
    // Commit what is ready, then make room: the oldest job goes first, always.
    while (!order.empty() && (OldestDone() || pending_bytes + size > options.max_pending_bytes)) {
      if (Status st = CommitOldest(); !st.ok()) return Fail(st);
    }
    auto job = std::make_shared<Job>();
    job->type = type;
    job->id = id;
    job->plain = std::move(plain);
    job->plain_len = size;
    order.push_back(job);
    pending.insert(id);
    pending_bytes += size;
    {
      std::lock_guard<std::mutex> lock(mu);
      encode_queue.push_back(std::move(job));
    }
    work_cv.notify_one();
    return id;
  }

  bool OldestDone() {
    std::lock_guard<std::mutex> lock(mu);
    return order.front()->done;
  }

  Status Fail(Status st) {
    if (error.ok()) error = st;
    return st;
  }

  Repository& repo;
  BlobPipelineOptions options;
  std::vector<std::unique_ptr<Crypto>> cryptos;  // one per worker
  std::vector<std::thread> workers;

  std::mutex mu;
  std::condition_variable work_cv;
  std::condition_variable done_cv;
  std::deque<std::shared_ptr<Job>> encode_queue;    // GUARDED_BY(mu): new blobs to compress and encrypt
  std::deque<std::shared_ptr<Hashing>> hash_queue;  // GUARDED_BY(mu): PutLater's blobs to hash
  bool stop = false;                      // GUARDED_BY(mu)

  // Owner thread only.
  std::deque<std::shared_ptr<Job>> order;  // every job not yet committed, in Put order
  std::unordered_set<BlobId, BlobIdHash> pending;
  size_t pending_bytes = 0;
  Status error;
};

BlobPipeline::BlobPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BlobPipeline::~BlobPipeline() {
  // Other writers of this Repository store synchronously again; a pack still
  // in flight is completed by the next SealPack or Flush.
  if (impl_) impl_->repo.s_->background_store = false;
}

Result<std::unique_ptr<BlobPipeline>> BlobPipeline::Create(Repository& repo, const BlobPipelineOptions& options) {
  auto impl = std::make_unique<Impl>(repo, options);
  size_t n = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 0; i < n; ++i) {
    CONTINUUM_ASSIGN_OR_RETURN(auto crypto, Crypto::Create(repo.s_->crypto->key()));
    impl->cryptos.push_back(std::move(crypto));
  }
  Impl* raw = impl.get();
  const int nice = WorkerNice(options.worker_nice);
  for (size_t i = 0; i < n; ++i) {
    Crypto* c = raw->cryptos[i].get();
    raw->workers.emplace_back([raw, c, nice] {
      // Best effort: a worker that keeps the caller's priority only runs slower.
      if (nice > 0) (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
      raw->Work(c);
    });
  }
  // Packs are stored on a thread while the next fills (Repository::SealPack);
  // Flush waits for them.
  repo.s_->background_store = true;
  return std::unique_ptr<BlobPipeline>(new BlobPipeline(std::move(impl)));
}

Result<BlobId> BlobPipeline::Put(BlobType type, std::span<const uint8_t> data) {
  Impl& p = *impl_;
  if (!p.error.ok()) return p.error;
  CONTINUUM_RETURN_IF_ERROR(CheckBlobSize(data.size()));
  BlobId id = p.repo.s_->crypto->Id(type, data);
  if (p.Known(id)) return id;
  return p.Admit(type, id, std::vector<uint8_t>(data.begin(), data.end()));
}

BlobPipeline::Ticket BlobPipeline::PutLater(BlobType type, std::vector<uint8_t> data) {
  Impl& p = *impl_;
  auto t = std::make_shared<Hashing>();
  t->type = type;
  t->data = std::move(data);
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.hash_queue.push_back(t);
  }
  p.work_cv.notify_one();
  return t;
}

Result<BlobId> BlobPipeline::Resolve(const Ticket& t) {
  Impl& p = *impl_;
  if (!p.error.ok()) return p.error;
  CONTINUUM_RETURN_IF_ERROR(CheckBlobSize(t->data.size()));
  {
    std::unique_lock<std::mutex> lock(p.mu);
    p.done_cv.wait(lock, [&] { return t->done; });
  }
  if (p.Known(t->id)) return t->id;
  return p.Admit(t->type, t->id, std::move(t->data));
}

Result<BlobId> BlobPipeline::PutTree(const Tree& tree) {
  for (const auto& ref : tree.refs) {
    if (!impl_->repo.Has(ref) && !impl_->pending.count(ref)) {
      return InvalidArgument("tree refers to blob " + ref.Hex() + " which is not stored");
    }
  }
  std::vector<uint8_t> plain = ManifestCodec::EncodeTree(tree);
  return Put(BlobType::kTree, plain);
}

Status BlobPipeline::Drain() {
  Impl& p = *impl_;
  while (!p.order.empty()) {
    if (Status st = p.CommitOldest(); !st.ok()) return p.Fail(st);
  }
  return p.error;
}

}  // namespace continuum::repo
