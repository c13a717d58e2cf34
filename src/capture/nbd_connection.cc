#include "capture/nbd_connection.h"

#include <fmt/format.h>

#include "continuum/common/log.h"

namespace continuum::capture {
namespace {

const std::shared_ptr<spdlog::logger>& Log() {
  static const auto logger = Logger("nbd");
  return logger;
}

// Charged per request on top of its payload, so that a flood of tiny
// requests is bounded too.
constexpr uint64_t kRequestOverhead = 64 << 10;

}  // namespace

NbdConnection::NbdConnection(int fd, std::string peer, NbdConnectionOptions options, NbdExportHooks hooks)
    : socket_(fd, std::move(peer)), options_(options), hooks_(std::move(hooks)) {}

NbdConnection::~NbdConnection() = default;

Status NbdConnection::Serve() {
  Status status = ServeUntilDone();
  // Tell the client at once; the descriptor itself is closed by the
  // destructor, after anyone who might still call Shutdown() is done.
  socket_.Shutdown();
  return status;
}

Status NbdConnection::ServeUntilDone() {
  if (options_.handshake_timeout_ms > 0) {
    CONTINUUM_RETURN_IF_ERROR(socket_.SetReceiveTimeout(options_.handshake_timeout_ms));
  }
  NbdHandshake handshake(socket_, hooks_);
  auto ref = handshake.Run();
  if (!ref.ok()) return ref.status();
  // An idle client in transmission is legitimate (a VM with a quiet disk).
  CONTINUUM_RETURN_IF_ERROR(socket_.SetReceiveTimeout(0));
  Log()->info("nbd client {} attached to export '{}'", peer(), ref->name);
  return Transmit(*ref);
}

void NbdConnection::Shutdown() {
  stopping_ = true;
  socket_.Shutdown();
  std::lock_guard lock(mu_);
  work_cv_.notify_all();
  space_cv_.notify_all();
}

Status NbdConnection::Transmit(const NbdExportRef& ref) {
  target_ = ref.target;
  export_name_ = ref.name;
  const nbd::ExportGeometry geometry{.size = target_->Size(), .read_only = target_->ReadOnly()};
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });

  Status result;
  while (!stopping_ && !failed_) {
    uint8_t header[nbd::kRequestSize];
    result = socket_.ReadExact(header);
    if (!result.ok()) break;
    auto request = nbd::ParseRequest(header);
    if (!request.ok()) {
      // Without a valid magic the stream has lost its framing: hang up.
      result = request.status().WithContext("nbd client " + peer());
      break;
    }
    if (request->type == nbd::kCmdDisc) break;

    Job job{.request = *request};
    uint32_t error = nbd::ValidateRequest(*request, geometry);
    if (nbd::HasPayload(*request)) {
      // The payload follows even a rejected WRITE; it must be consumed to
      // find the next header.
      if (request->length > nbd::kMaxPayload) {
        result = socket_.Discard(request->length);
      } else {
        job.payload.resize(request->length);
        result = socket_.ReadExact(job.payload);
      }
      if (!result.ok()) break;
    }
    if (error != 0) {
      Log()->debug("nbd client {}: rejected {} offset {} length {} flags 0x{:x} with error {}", peer(),
                   nbd::CommandName(request->type), request->offset, request->length, request->flags,
                   error);
      SendReply(error, request->cookie);
      continue;
    }
    if (options_.workers <= 0) {
      Execute(job);
    } else if (!Enqueue(std::move(job))) {
      break;
    }
  }

  {
    std::lock_guard lock(mu_);
    draining_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  target_.reset();

  if (stopping_) return Status::Ok();
  if (failed_ && result.ok()) return Unavailable("nbd client " + peer() + " stopped accepting replies");
  return result;
}

bool NbdConnection::Enqueue(Job job) {
  uint64_t cost = Cost(job);
  std::unique_lock lock(mu_);
  space_cv_.wait(lock, [&] {
    return stopping_ || failed_ || inflight_bytes_ == 0 || inflight_bytes_ + cost <= options_.max_inflight_bytes;
  });
  if (stopping_ || failed_) return false;
  inflight_bytes_ += cost;
  queue_.push_back(std::move(job));
  work_cv_.notify_one();
  return true;
}

void NbdConnection::WorkerLoop() {
  while (true) {
    Job job;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return !queue_.empty() || draining_; });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    // After Shutdown() nobody is listening: drop the request unanswered.
    if (!stopping_) Execute(job);
    {
      std::lock_guard lock(mu_);
      inflight_bytes_ -= Cost(job);
    }
    space_cv_.notify_one();
  }
}

void NbdConnection::Execute(const Job& job) {
  std::vector<uint8_t> read_data;
  Status status = RunOnTarget(job, read_data);
  const nbd::Request& r = job.request;
  if (!status.ok()) {
    uint32_t error = nbd::ErrorFromStatus(status);
    Log()->warn("nbd client {}: {} on export '{}' at offset {} length {} failed with error {}: {}", peer(),
                nbd::CommandName(r.type), export_name_, r.offset, r.length, error, status.ToString());
    SendReply(error, r.cookie);
    return;
  }
  SendReply(0, r.cookie, read_data);
}

Status NbdConnection::RunOnTarget(const Job& job, std::vector<uint8_t>& read_data) {
  const nbd::Request& r = job.request;
  const bool fua = (r.flags & nbd::kCmdFlagFua) != 0;
  if (r.length == 0 && r.type != nbd::kCmdFlush) {
    // Nothing to transfer, but a FUA still promises durability.
    return fua && r.type != nbd::kCmdRead ? target_->Flush() : Status::Ok();
  }
  switch (r.type) {
    case nbd::kCmdRead:
      read_data.resize(r.length);
      return target_->Read(r.offset, read_data);
    case nbd::kCmdWrite:
      return target_->Write(r.offset, job.payload, fua);
    case nbd::kCmdFlush:
      return target_->Flush();
    case nbd::kCmdTrim: {
      // BlockTarget::Trim has no FUA of its own; a flush gives the promise.
      Status status = target_->Trim(r.offset, r.length);
      if (status.ok() && fua) status = target_->Flush();
      return status;
    }
    case nbd::kCmdWriteZeroes:
      return target_->WriteZeroes(r.offset, r.length, fua);
    default:
      // ValidateRequest admits nothing else; answer rather than assert.
      return InvalidArgument(fmt::format("unexpected command {}", r.type));
  }
}

void NbdConnection::SendReply(uint32_t error, uint64_t cookie, std::span<const uint8_t> data) {
  Status status = socket_.Write(nbd::EncodeSimpleReply(error, cookie), data);
  if (status.ok()) return;
  if (!failed_.exchange(true) && !stopping_) {
    Log()->info("nbd client {}: {}", peer(), status.ToString());
  }
  // Wake the reader and any Enqueue() waiting for budget.
  socket_.Shutdown();
  std::lock_guard lock(mu_);
  space_cv_.notify_all();
}

uint64_t NbdConnection::Cost(const Job& job) {
  const nbd::Request& r = job.request;
  bool buffered = r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite;
  return kRequestOverhead + (buffered ? r.length : 0);
}

}  // namespace continuum::capture
