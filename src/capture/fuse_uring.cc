#define FUSE_USE_VERSION 312

#include "capture/fuse_uring.h"

#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "capture/fuse_ops.h"
#include "continuum/common/log.h"
#include "continuum/io/aligned_buffer.h"

namespace continuum::capture {
namespace {

// The kernel's FUSE-over-io_uring interface (include/uapi/linux/fuse.h since
// 6.14; Debian 12's headers are 6.1, so it is spelled out here).
constexpr uint64_t kFuseOverIoUring = 1ull << 41;  // FUSE_INIT flag, in flags2
constexpr uint32_t kCmdRegister = 1;                // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;          // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
constexpr size_t kInOutSize = 128;                  // FUSE_URING_IN_OUT_HEADER_SZ
constexpr size_t kOpInSize = 128;                   // FUSE_URING_OP_IN_OUT_SZ

struct RingEntInOut {  // struct fuse_uring_ent_in_out
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};

struct RingHeader {  // struct fuse_uring_req_header
  uint8_t in_out[kInOutSize];  // fuse_in_header, then fuse_out_header
  uint8_t op_in[kOpInSize];    // the request's first argument
  RingEntInOut ent;
};

struct RingCmdReq {  // struct fuse_uring_cmd_req, in the SQE's command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingCmdReq) <= 80, "SQE128 command area");

// libfuse parses a request from one buffer: header, first argument, payload.
// The payload lands this far into the entry's buffer, so the two headers can
// be copied in front of it and the payload itself stays page-aligned.
constexpr size_t kPrefix = 4096;
constexpr uint64_t kEntryTag = 1;
constexpr uint64_t kStopTag = 2;
constexpr auto kStopTimeout = std::chrono::seconds(5);

uint32_t Flags2Bit() { return static_cast<uint32_t>(kFuseOverIoUring >> 32); }

int QueueCount() { return std::max(1, get_nprocs_conf()); }

// Where a request taken from a ring is answered: libfuse's writev of the reply
// on the same thread lands here instead of on /dev/fuse.
struct ReplySlot {
  RingHeader* header;
  uint8_t* payload;
  size_t capacity;
  uint64_t unique;
  bool replied = false;

  ssize_t Take(const iovec* iov, int count) {
    size_t len = 0;
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    for (int i = 1; i < count; ++i) {
      if (len + iov[i].iov_len > capacity) {
        Logger("fuse")->error("io_uring reply of {} bytes exceeds the {} byte buffer", len + iov[i].iov_len,
                              capacity);
        out.error = -EIO;
        len = 0;
        break;
      }
      std::memmove(payload + len, iov[i].iov_base, iov[i].iov_len);
      len += iov[i].iov_len;
    }
    out.len = static_cast<uint32_t>(sizeof out + len);
    std::memcpy(header->in_out, &out, sizeof out);
    header->ent.payload_sz = static_cast<uint32_t>(len);
    replied = true;
    return static_cast<ssize_t>(sizeof out + len);
  }
};

thread_local ReplySlot* tls_reply = nullptr;

}  // namespace

struct FuseUring::State {
  enum class Phase { kWaitInit, kRun, kOff };

  fuse_session* se = nullptr;
  int fd = -1;
  Options options;
  int stop_fd = -1;  // eventfd: a poll on it ends every ring thread

  std::atomic<uint64_t> init_unique{0};
  std::atomic<bool> offered{false};
  std::atomic<uint64_t> requests{0};

  std::mutex mu;
  std::condition_variable cv;
  Phase phase = Phase::kWaitInit;  // guarded by mu
  bool stopping = false;           // guarded by mu
  int running = 0;                 // ring threads not yet ended; guarded by mu
  std::vector<std::thread> threads;

  void SetPhase(Phase p) {
    {
      std::lock_guard lock(mu);
      if (phase == Phase::kWaitInit) phase = p;
    }
    cv.notify_all();
  }
};

namespace {

std::mutex registry_mu;
std::map<int, std::shared_ptr<FuseUring::State>>& Registry() {
  static auto* registry = new std::map<int, std::shared_ptr<FuseUring::State>>;
  return *registry;
}

std::shared_ptr<FuseUring::State> Find(int fd) {
  std::lock_guard lock(registry_mu);
  auto it = Registry().find(fd);
  return it == Registry().end() ? nullptr : it->second;
}

ssize_t HookRead(int fd, void* buf, size_t len, void*) {
  ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
    fuse_in_header in;
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode == FUSE_INIT) {
      if (auto st = Find(fd)) {
        fuse_init_in init{};
        std::memcpy(&init, static_cast<uint8_t*>(buf) + sizeof in,
                    std::min(sizeof init, static_cast<size_t>(n) - sizeof in));
        st->offered = (init.flags & FUSE_INIT_EXT) && (init.flags2 & Flags2Bit());
        st->init_unique = in.unique;
      }
    }
  }
  return n;
}

// Writes libfuse's INIT reply with FUSE_OVER_IO_URING added, then lets the
// ring threads register.
ssize_t WriteInitReply(FuseUring::State& st, int fd, iovec* iov, int count) {
  if (!st.offered || count != 2 || iov[1].iov_len < offsetof(fuse_init_out, flags2) + sizeof(uint32_t)) {
    ssize_t n = ::writev(fd, iov, count);
    st.SetPhase(FuseUring::State::Phase::kOff);
    if (st.offered) Logger("fuse")->warn("fuse io_uring: INIT reply too short to carry the flag; staying on /dev/fuse");
    return n;
  }
  fuse_init_out out{};
  std::memcpy(&out, iov[1].iov_base, std::min(sizeof out, iov[1].iov_len));
  out.flags |= FUSE_INIT_EXT;
  out.flags2 |= Flags2Bit();
  std::vector<uint8_t> patched(iov[1].iov_len);
  std::memcpy(patched.data(), iov[1].iov_base, patched.size());
  std::memcpy(patched.data(), &out, std::min(sizeof out, patched.size()));
  iovec sent[2] = {iov[0], {patched.data(), patched.size()}};
  ssize_t n = ::writev(fd, sent, 2);
  int err = errno;
  st.SetPhase(n > 0 ? FuseUring::State::Phase::kRun : FuseUring::State::Phase::kOff);
  errno = err;
  return n;
}

ssize_t HookWritev(int fd, iovec* iov, int count, void*) {
  if (count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (ReplySlot* slot = tls_reply; slot != nullptr && out.unique == slot->unique) return slot->Take(iov, count);
    if (out.unique != 0) {
      auto st = Find(fd);
      if (st && out.unique == st->init_unique.load()) return WriteInitReply(*st, fd, iov, count);
    }
  }
  return ::writev(fd, iov, count);
}

// One ring thread: an io_uring with one FUSE entry, pinned to its queue's CPU
// (the kernel hands a request to the queue of the CPU that issued it).
class RingThread {
 public:
  RingThread(std::shared_ptr<FuseUring::State> st, int qid) : st_(std::move(st)), qid_(qid) {}

  void Run() {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    ::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);  // as the libfuse workers (FuseExporter::Serve)
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(qid_, &cpus);
    sched_setaffinity(0, sizeof cpus, &cpus);
    if (Setup() && WaitForInit()) Loop();
    if (ring_ready_) io_uring_queue_exit(&ring_);
    {
      std::lock_guard lock(st_->mu);
      --st_->running;
    }
    st_->cv.notify_all();
  }

 private:
  bool Setup() {
    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128;
    int rc = io_uring_queue_init_params(4, &ring_, &params);
    if (rc != 0) {
      Logger("fuse")->warn("fuse io_uring: queue {}: io_uring setup: {}", qid_, std::strerror(-rc));
      return false;
    }
    ring_ready_ = true;
    header_.Resize(sizeof(RingHeader));
    buffer_.Resize(kPrefix + kFuseMaxWrite);
    std::memset(header_.data(), 0, sizeof(RingHeader));
    iov_[0] = {header_.data(), sizeof(RingHeader)};
    iov_[1] = {buffer_.data() + kPrefix, kFuseMaxWrite};
    return true;
  }

  bool WaitForInit() {
    std::unique_lock lock(st_->mu);
    st_->cv.wait(lock, [&] { return st_->stopping || st_->phase != FuseUring::State::Phase::kWaitInit; });
    return !st_->stopping && st_->phase == FuseUring::State::Phase::kRun;
  }

  RingHeader& Header() { return *reinterpret_cast<RingHeader*>(header_.data()); }

  void PrepCommand(uint32_t op, uint64_t commit_id) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {  // impossible: one entry and one poll in a ring of four
      Logger("fuse")->error("fuse io_uring: queue {}: no free SQE", qid_);
      return;
    }
    std::memset(sqe, 0, 128);
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = st_->fd;
    sqe->cmd_op = op;
    if (op == kCmdRegister) {
      sqe->addr = reinterpret_cast<uint64_t>(iov_);
      sqe->len = 2;
    }
    RingCmdReq req{};
    req.commit_id = commit_id;
    req.qid = static_cast<uint16_t>(qid_);
    std::memcpy(sqe->cmd, &req, sizeof req);
    sqe->user_data = kEntryTag;
    last_op_ = op;
    last_commit_ = commit_id;
  }

  void Loop() {
    auto log = Logger("fuse");
    PrepCommand(kCmdRegister, 0);
    io_uring_sqe* poll = io_uring_get_sqe(&ring_);
    io_uring_prep_poll_add(poll, st_->stop_fd, POLLIN);
    poll->user_data = kStopTag;
    for (;;) {
      int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc < 0 && rc != -EINTR) {
        log->error("fuse io_uring: queue {}: io_uring_enter: {}", qid_, std::strerror(-rc));
        return;
      }
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
        const uint64_t tag = cqe->user_data;
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        if (tag == kStopTag) return;
        if (res == -EAGAIN || res == -EINTR) {  // not ready yet / interrupted: ask again
          if (last_op_ == kCmdRegister) std::this_thread::sleep_for(std::chrono::milliseconds(1));
          PrepCommand(last_op_, last_commit_);
          continue;
        }
        if (res < 0) {
          if (res != -ENOTCONN && res != -ECONNABORTED && res != -ENODEV) {
            log->warn("fuse io_uring: queue {}: {} refused: {}", qid_,
                      last_op_ == kCmdRegister ? "register" : "commit", std::strerror(-res));
          }
          return;  // the connection is gone (or refused us): this entry is done
        }
        Serve();
      }
    }
  }

  // Hands the request in the entry to libfuse and queues its commit.
  void Serve() {
    RingHeader& h = Header();
    fuse_in_header in;
    std::memcpy(&in, h.in_out, sizeof in);
    const uint64_t commit_id = h.ent.commit_id;
    const size_t payload_sz = h.ent.payload_sz;
    uint8_t* payload = buffer_.data() + kPrefix;
    ReplySlot slot{&h, payload, kFuseMaxWrite, in.unique};
    const size_t fixed = sizeof in + payload_sz;
    if (in.len < fixed || in.len - fixed > kOpInSize || payload_sz > kFuseMaxWrite) {
      Logger("fuse")->error("fuse io_uring: malformed request (opcode {}, len {}, payload {})", in.opcode, in.len,
                            payload_sz);
    } else {
      const size_t op_sz = in.len - fixed;
      uint8_t* start = payload - op_sz - sizeof in;
      std::memcpy(start, &in, sizeof in);
      std::memcpy(start + sizeof in, h.op_in, op_sz);
      fuse_buf buf{};
      buf.mem = start;
      buf.size = in.len;
      tls_reply = &slot;
      fuse_session_process_buf(st_->se, &buf);
      tls_reply = nullptr;
      ++st_->requests;
    }
    if (!slot.replied) {  // every ring request needs an answer, or its entry is lost
      fuse_out_header out{sizeof(fuse_out_header), -EIO, in.unique};
      std::memcpy(h.in_out, &out, sizeof out);
      h.ent.payload_sz = 0;
    }
    PrepCommand(kCmdCommitAndFetch, commit_id);
  }

  std::shared_ptr<FuseUring::State> st_;
  const int qid_;
  io_uring ring_{};
  bool ring_ready_ = false;
  io::AlignedBuffer header_;
  io::AlignedBuffer buffer_;
  iovec iov_[2]{};
  uint32_t last_op_ = 0;
  uint64_t last_commit_ = 0;
};

}  // namespace

namespace {
constexpr const char* kEnableUringParam = "/sys/module/fuse/parameters/enable_uring";
}  // namespace

bool FuseUring::KernelSupports() { return ::access(kEnableUringParam, F_OK) == 0; }

bool FuseUring::KernelEnabled() {
  std::ifstream in(kEnableUringParam);
  std::string value;
  return static_cast<bool>(in >> value) && (value == "Y" || value == "1");
}

Status FuseUring::EnableInKernel() {
  if (KernelEnabled()) return Status::Ok();
  std::ofstream out(kEnableUringParam);
  out << "1";
  out.flush();
  if (!out || !KernelEnabled()) return PosixError(std::string("enable FUSE over io_uring: write ") + kEnableUringParam, EACCES);
  return Status::Ok();
}

Result<std::unique_ptr<FuseUring>> FuseUring::Attach(fuse_session* se, const Options& options) {
  auto st = std::make_shared<State>();
  st->se = se;
  st->fd = fuse_session_fd(se);
  st->options = options;
  st->stop_fd = ::eventfd(0, EFD_CLOEXEC);
  if (st->stop_fd < 0) return PosixError("fuse io_uring: eventfd", errno);
  static const fuse_custom_io io = {HookWritev, HookRead, nullptr, nullptr};
  {
    std::lock_guard lock(registry_mu);
    Registry()[st->fd] = st;
  }
  if (fuse_session_custom_io(se, &io, st->fd) != 0) {
    std::lock_guard lock(registry_mu);
    Registry().erase(st->fd);
    ::close(st->stop_fd);
    return Internal("fuse io_uring: libfuse refused custom I/O hooks");
  }
  const int queues = QueueCount();
  const int per_queue = std::max(1, options.threads_per_queue);
  {
    std::lock_guard lock(st->mu);
    st->running = queues * per_queue;
  }
  for (int q = 0; q < queues; ++q) {
    for (int i = 0; i < per_queue; ++i) {
      st->threads.emplace_back([st, q] { RingThread(st, q).Run(); });
    }
  }
  return std::unique_ptr<FuseUring>(new FuseUring(std::move(st)));
}

FuseUring::~FuseUring() { Stop(); }

void FuseUring::Stop() {
  if (!state_) return;
  auto st = std::move(state_);
  {
    std::lock_guard lock(st->mu);
    st->stopping = true;
  }
  st->cv.notify_all();
  uint64_t one = 1;
  if (::write(st->stop_fd, &one, sizeof one) != sizeof one) {
    Logger("fuse")->warn("fuse io_uring: wake ring threads: {}", std::strerror(errno));
  }
  bool ended;
  {
    std::unique_lock lock(st->mu);
    ended = st->cv.wait_for(lock, kStopTimeout, [&] { return st->running == 0; });
  }
  for (auto& t : st->threads) {
    if (ended) {
      t.join();
    } else {
      t.detach();  // a thread stuck in a target call keeps the state alive
    }
  }
  Logger("fuse")->info("fuse io_uring: {} requests served through {} rings (kernel offered it: {})",
                       st->requests.load(), st->threads.size(), st->offered.load());
  if (!ended) Logger("fuse")->warn("fuse io_uring: ring threads still busy after stop; abandoned");
  {
    std::lock_guard lock(registry_mu);
    Registry().erase(st->fd);
  }
  if (ended) ::close(st->stop_fd);
}

FuseUring::Stats FuseUring::GetStats() const {
  Stats s;
  if (!state_) return s;
  s.offered = state_->offered;
  {
    std::lock_guard lock(state_->mu);
    s.negotiated = state_->phase == State::Phase::kRun;
  }
  s.threads = static_cast<int>(state_->threads.size());
  s.requests = state_->requests;
  return s;
}

}  // namespace continuum::capture
