#include "continuum/repo/blob_pipeline.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

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

}  // namespace

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
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stop || !todo.empty(); });
        if (stop) return;
        job = std::move(todo.front());
        todo.pop_front();
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
  std::deque<std::shared_ptr<Job>> todo;  // GUARDED_BY(mu)
  bool stop = false;                      // GUARDED_BY(mu)

  // Owner thread only.
  std::deque<std::shared_ptr<Job>> order;  // every job not yet committed, in Put order
  std::unordered_set<BlobId, BlobIdHash> pending;
  size_t pending_bytes = 0;
  Status error;
};

BlobPipeline::BlobPipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BlobPipeline::~BlobPipeline() = default;

Result<std::unique_ptr<BlobPipeline>> BlobPipeline::Create(Repository& repo, const BlobPipelineOptions& options) {
  auto impl = std::make_unique<Impl>(repo, options);
  size_t n = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 0; i < n; ++i) {
    CONTINUUM_ASSIGN_OR_RETURN(auto crypto, Crypto::Create(repo.s_->crypto->key()));
    impl->cryptos.push_back(std::move(crypto));
  }
  Impl* raw = impl.get();
  for (size_t i = 0; i < n; ++i) {
    Crypto* c = raw->cryptos[i].get();
    raw->workers.emplace_back([raw, c] { raw->Work(c); });
  }
  return std::unique_ptr<BlobPipeline>(new BlobPipeline(std::move(impl)));
}

Result<BlobId> BlobPipeline::Put(BlobType type, std::span<const uint8_t> data) {
  Impl& p = *impl_;
  if (!p.error.ok()) return p.error;
  if (data.size() > kMaxBlobRawBytes) {
    return InvalidArgument("blob of " + std::to_string(data.size()) + " bytes exceeds the 64 MiB limit");
  }
  Repository& repo = p.repo;
  BlobId id = repo.s_->crypto->Id(type, data);
  if (repo.Has(id) || p.pending.count(id)) {
    ++repo.stats_.blobs_deduplicated;
    return id;
  }
  // Commit what is ready, then make room: the oldest job goes first, always.
  while (!p.order.empty() && (p.OldestDone() || p.pending_bytes + data.size() > p.options.max_pending_bytes)) {
    if (Status st = p.CommitOldest(); !st.ok()) return p.Fail(st);
  }
  auto job = std::make_shared<Job>();
  job->type = type;
  job->id = id;
  job->plain.assign(data.begin(), data.end());
  job->plain_len = data.size();
  p.order.push_back(job);
  p.pending.insert(id);
  p.pending_bytes += data.size();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.todo.push_back(std::move(job));
  }
  p.work_cv.notify_one();
  return id;
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
