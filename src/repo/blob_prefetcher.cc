#include "continuum/repo/blob_prefetcher.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "continuum/common/thread_priority.h"
#include "continuum/repo/repository.h"
#include "repo/repository_state.h"

namespace continuum::repo {
namespace {

// Undispatched jobs at which Enqueue wakes another worker (see there).
constexpr size_t kWakeBacklog = 4;

// One queued blob. Everything but `done`, `data` and `dispatched` is set on
// the owner thread before the job is visible to workers.
struct Job {
  BlobId id;
  PackEntry entry;
  std::string pack;                   // hex name; empty when `stored` holds the blob
  std::vector<uint8_t> stored;        // a blob of the unsealed pack
  BlobSink sink;                      // empty: `data` goes to Next
  Status status;
  std::vector<uint8_t> data;
  bool done = false;  // GUARDED_BY(Impl::mu)
};

}  // namespace

struct BlobPrefetcher::Impl {
  Impl(Repository& r, const BlobPrefetcherOptions& o) : repo(r), options(o) {}

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : workers) t.join();
  }

  // A worker may start the next job while the bytes read ahead are under the
  // limit; the job the caller waits for next always may.
  bool CanDispatch() const {
    return !abandoned && next < jobs.size() && (next == 0 || ahead_bytes < options.max_ahead_bytes);
  }

  void Work(Crypto* crypto) {
    BlobCodec codec(crypto, 0);
    Backend& backend = *repo.backend_;
    std::vector<uint8_t> stored_buf;  // this worker's read buffer, reused
    for (;;) {
      std::shared_ptr<Job> job;
      bool more = false;
      {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] { return stop || CanDispatch(); });
        if (stop) return;
        job = jobs[next++];
        ahead_bytes += job->entry.raw_len;
        ++running;
        // Wakes are one at a time: pass one on while there is more to do.
        more = CanDispatch();
      }
      if (more) work_cv.notify_one();
      // Read into and decode from this worker's own buffers: a restore reads
      // each byte once, and fresh buffers per blob cost a page fault and a
      // zero fill for every page (a tenth of a large restore's CPU).
      Result<std::span<const uint8_t>> data = std::span<const uint8_t>();
      if (job->pack.empty()) {
        data = codec.DecodeView(job->entry, job->stored, "unsealed pack");
      } else {
        if (stored_buf.size() < job->entry.stored_len) stored_buf.resize(job->entry.stored_len);
        std::span<uint8_t> stored(stored_buf.data(), job->entry.stored_len);
        Status read = backend.ReadInto(FileKind::kPack, job->pack, job->entry.offset, stored);
        if (!read.ok()) {
          // A missing or truncated pack loses data: as Repository::Get says it.
          if (read.code() == StatusCode::kNotFound || read.code() == StatusCode::kDataLoss) {
            read = DataLoss("blob " + job->id.Hex() + ": " + read.message());
          }
          data = read;
        } else {
          data = codec.DecodeView(job->entry, stored, "pack " + backend.Describe(FileKind::kPack, job->pack));
        }
      }
      if (!data.ok()) {
        job->status = data.status();
      } else if (job->sink) {
        job->status = job->sink(*data);
      } else {
        job->data.assign(data->begin(), data->end());
      }
      std::vector<uint8_t>().swap(job->stored);
      // Wake only who waits for this: a restore of many small files completes
      // tens of thousands of blobs, and waking every thread for each one costs
      // more system time than the reads.
      bool wake_owner = false;
      bool wake_worker = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        job->done = true;
        --running;
        wake_owner = owner_waiting;
        if (job->sink) {
          // A sunk blob holds no memory any more: it no longer counts as ahead.
          const bool was_full = ahead_bytes >= options.max_ahead_bytes;
          ahead_bytes -= job->entry.raw_len;
          wake_worker = was_full && CanDispatch();
        }
      }
      if (wake_owner) done_cv.notify_all();
      if (wake_worker) work_cv.notify_one();
    }
  }

  Repository& repo;
  BlobPrefetcherOptions options;
  std::vector<std::unique_ptr<Crypto>> cryptos;  // one per worker
  std::vector<std::thread> workers;

  mutable std::mutex mu;
  std::condition_variable work_cv;
  std::condition_variable done_cv;
  std::deque<std::shared_ptr<Job>> jobs;  // GUARDED_BY(mu): queued, not yet taken by Next, in order
  size_t next = 0;                        // GUARDED_BY(mu): jobs[0, next) are dispatched
  size_t ahead_bytes = 0;                 // GUARDED_BY(mu): raw bytes of dispatched jobs holding data
  size_t running = 0;                     // GUARDED_BY(mu): jobs a worker is on
  bool owner_waiting = false;             // GUARDED_BY(mu): Next or Abandon waits on done_cv
  bool stop = false;                      // GUARDED_BY(mu)
  bool abandoned = false;                 // GUARDED_BY(mu)
};

BlobPrefetcher::BlobPrefetcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

BlobPrefetcher::~BlobPrefetcher() = default;

Result<std::unique_ptr<BlobPrefetcher>> BlobPrefetcher::Create(Repository& repo, const BlobPrefetcherOptions& options) {
  auto impl = std::make_unique<Impl>(repo, options);
  // Reads wait on the disk more than on the CPU: at least 4 workers by default.
  size_t n = options.threads ? options.threads : std::max(4u, std::thread::hardware_concurrency());
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
  return std::unique_ptr<BlobPrefetcher>(new BlobPrefetcher(std::move(impl)));
}

Status BlobPrefetcher::Enqueue(const BlobId& id) { return Enqueue(id, nullptr).status(); }

Result<uint32_t> BlobPrefetcher::Enqueue(const BlobId& id, BlobSink sink) {
  Impl& p = *impl_;
  Repository& repo = p.repo;
  // A long restore keeps its lock fresh, or a prune could judge it stale.
  CONTINUUM_RETURN_IF_ERROR(repo.Refresh());
  auto job = std::make_shared<Job>();
  job->id = id;
  job->sink = std::move(sink);
  const PackWriter* unsealed = nullptr;
  if (const PackEntry* e = repo.s_->FindUnsealed(id, &unsealed)) {
    job->entry = *e;
    auto s = unsealed->Stored(*e);
    job->stored.assign(s.begin(), s.end());
  } else {
    auto loc = repo.s_->index.Find(id);
    if (!loc) return NotFound("blob " + id.Hex() + " is not in repository " + repo.location_);
    job->entry = loc->entry;
    job->pack = loc->pack.Hex();
  }
  const uint32_t raw_len = job->entry.raw_len;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.abandoned) return FailedPrecondition("blob prefetcher abandoned");
    p.jobs.push_back(std::move(job));
    // A busy worker takes the job when it is done with its own; another is
    // woken only when no one works or a backlog builds. Waking one per blob
    // cost a context switch per small file (a tenth of a restore's time).
    const size_t undispatched = p.jobs.size() - p.next;
    wake = p.running == 0 || (undispatched >= kWakeBacklog && p.running < p.workers.size());
  }
  if (wake) p.work_cv.notify_one();
  return raw_len;
}

Result<std::vector<uint8_t>> BlobPrefetcher::Next() {
  Impl& p = *impl_;
  std::shared_ptr<Job> job;
  bool wake = false;
  {
    std::unique_lock<std::mutex> lock(p.mu);
    if (p.abandoned) return FailedPrecondition("blob prefetcher abandoned");
    if (p.jobs.empty()) return FailedPrecondition("no blob is queued");
    job = p.jobs.front();
    if (!job->done) {
      if (p.running == 0) p.work_cv.notify_one();  // no one would get to it
      p.owner_waiting = true;
      p.done_cv.wait(lock, [&] { return job->done; });
      p.owner_waiting = false;
    }
    p.jobs.pop_front();
    --p.next;
    if (!job->sink) p.ahead_bytes -= job->entry.raw_len;
    wake = p.CanDispatch();
  }
  if (wake) p.work_cv.notify_one();
  if (!job->status.ok()) return job->status;
  return std::move(job->data);
}

void BlobPrefetcher::Abandon() {
  Impl& p = *impl_;
  std::unique_lock<std::mutex> lock(p.mu);
  p.abandoned = true;
  p.owner_waiting = true;
  p.done_cv.wait(lock, [&] { return p.running == 0; });
  p.owner_waiting = false;
}

size_t BlobPrefetcher::queued() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->jobs.size();
}

}  // namespace continuum::repo
