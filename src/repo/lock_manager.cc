#include "repo/lock_manager.h"

#include <unistd.h>

#include "continuum/common/checksum.h"
#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "repo/bytes.h"
#include "repo/crypto.h"
#include "repo/process_info.h"

namespace continuum::repo {

namespace {
constexpr uint16_t kVersion = 1;
constexpr uint64_t kMaxLockBytes = 4096;
}  // namespace

LockManager::LockManager(Backend* backend, Options options) : backend_(backend), options_(std::move(options)) {
  if (options_.host.empty()) options_.host = HostName();
  if (options_.pid == 0) {
    options_.pid = static_cast<uint32_t>(::getpid());
    options_.start_ticks = ProcessStartTicks(::getpid());
  }
}

LockManager::~LockManager() { Release().IgnoreError(); }

int64_t LockManager::Now() const { return options_.clock ? options_.clock() : WallNowNs(); }

LockRecord LockManager::Mine(int64_t now) const {
  return {mode_, options_.host, options_.pid, options_.start_ticks, now};
}

std::vector<uint8_t> LockManager::Encode(const LockRecord& rec) {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.U32(Magic("CLCK"));
  w.U16(kVersion);
  w.U8(rec.mode == LockMode::kExclusive ? 2 : 1);
  w.U8(0);
  w.U32(rec.pid);
  w.U64(rec.start_ticks);
  w.I64(rec.time_ns);
  std::string host = rec.host.substr(0, 255);
  w.U16(static_cast<uint16_t>(host.size()));
  w.Str(host);
  w.U64(Checksum64(out.data(), out.size()));
  return out;
}

Result<LockRecord> LockManager::Decode(std::span<const uint8_t> file, const std::string& what) {
  ByteReader r(file);
  uint32_t magic = 0;
  uint16_t version = 0, host_len = 0;
  uint8_t mode = 0, reserved = 0;
  LockRecord rec;
  r.U32(&magic);
  r.U16(&version);
  r.U8(&mode);
  r.U8(&reserved);
  r.U32(&rec.pid);
  r.U64(&rec.start_ticks);
  r.I64(&rec.time_ns);
  r.U16(&host_len);
  if (r.failed() || magic != Magic("CLCK")) return DataLoss(what + ": not a lock file");
  if (version != kVersion) return FailedPrecondition(what + ": lock version " + std::to_string(version));
  if (mode < 1 || mode > 2 || host_len == 0 || host_len > 255) return DataLoss(what + ": malformed lock");
  std::span<const uint8_t> host;
  if (!r.Take(host_len, &host)) return DataLoss(what + ": truncated lock");
  size_t covered = r.position();
  uint64_t checksum = 0;
  if (!r.U64(&checksum) || r.remaining() != 0) return DataLoss(what + ": truncated lock");
  if (checksum != Checksum64(file.data(), covered)) return DataLoss(what + ": lock checksum mismatch");
  rec.mode = mode == 2 ? LockMode::kExclusive : LockMode::kShared;
  rec.host.assign(host.begin(), host.end());
  return rec;
}

bool LockManager::IsStale(const LockRecord& rec) const {
  if (rec.host == options_.host) {
    bool me = rec.pid == options_.pid && rec.start_ticks == options_.start_ticks;
    if (!me) {
      uint64_t ticks = ProcessStartTicks(static_cast<pid_t>(rec.pid));
      if (ticks == 0) return true;                                        // process gone
      if (rec.start_ticks != 0 && ticks != rec.start_ticks) return true;  // pid reused
    }
  }
  // A live holder refreshes every refresh_ns; silence for stale_ns means it is
  // gone (another host), or hung long enough that its lock must not block others.
  return Now() - rec.time_ns > options_.stale_ns;
}

Result<std::string> LockManager::FindConflict(LockMode mode, const std::string& skip) {
  CONTINUUM_ASSIGN_OR_RETURN(auto names, backend_->List(FileKind::kLock));
  for (const auto& name : names) {
    if (name == skip) continue;
    std::string what = backend_->Describe(FileKind::kLock, name);
    auto bytes = backend_->Read(FileKind::kLock, name, kMaxLockBytes);
    if (!bytes.ok()) continue;  // released meanwhile
    auto rec = Decode(*bytes, what);
    if (!rec.ok()) {
      Logger("repo")->warn("ignoring undecodable lock: {}", rec.status().message());
      continue;
    }
    if (IsStale(*rec)) {
      Logger("repo")->info("removing stale lock {} of {} pid {}", what, rec->host, rec->pid);
      backend_->Remove(FileKind::kLock, name).IgnoreError();  // a racing remover is fine
      continue;
    }
    if (mode == LockMode::kExclusive || rec->mode == LockMode::kExclusive) {
      return std::string("repository " + backend_->Location() + " is locked " +
                         (rec->mode == LockMode::kExclusive ? "exclusively" : "(shared)") + " by " + rec->host +
                         " pid " + std::to_string(rec->pid) + " since " + FormatRfc3339(rec->time_ns) + " (lock " +
                         name + ")");
    }
  }
  return std::string();
}

Status LockManager::Acquire(LockMode mode) {
  if (mode == LockMode::kNone) return Status::Ok();
  if (held()) return FailedPrecondition("lock on " + backend_->Location() + " already held");
  CONTINUUM_ASSIGN_OR_RETURN(std::string conflict, FindConflict(mode, ""));
  if (!conflict.empty()) return Unavailable(conflict);
  uint8_t rnd[32];
  CONTINUUM_RETURN_IF_ERROR(RandomBytes(rnd));
  BlobId name_id;
  std::memcpy(name_id.bytes.data(), rnd, 32);
  std::string name = name_id.Hex();
  mode_ = mode;
  int64_t now = Now();
  CONTINUUM_RETURN_IF_ERROR(backend_->Write(FileKind::kLock, name, Encode(Mine(now)), true));
  name_ = name;
  refreshed_ns_ = now;
  // Two processes may have passed the first check at once; both now see each
  // other's lock and both back off, so at most one exclusive holder remains.
  auto again = FindConflict(mode, name_);
  if (!again.ok() || !again->empty()) {
    Release().IgnoreError();
    return again.ok() ? Unavailable(*again) : again.status();
  }
  return Status::Ok();
}

Status LockManager::RefreshIfDue() {
  if (!held()) return Status::Ok();
  int64_t now = Now();
  if (now - refreshed_ns_ < options_.refresh_ns) return Status::Ok();
  if (!backend_->Size(FileKind::kLock, name_).ok()) {
    std::string what = backend_->Describe(FileKind::kLock, name_);
    name_.clear();
    return FailedPrecondition("lock " + what + " was removed by another process (judged stale); stopping");
  }
  CONTINUUM_RETURN_IF_ERROR(backend_->Write(FileKind::kLock, name_, Encode(Mine(now)), true));
  refreshed_ns_ = now;
  return Status::Ok();
}

Status LockManager::Release() {
  if (!held()) return Status::Ok();
  std::string name = std::move(name_);
  name_.clear();
  Status st = backend_->Remove(FileKind::kLock, name);
  if (st.code() == StatusCode::kNotFound) return Status::Ok();
  return st;
}

}  // namespace continuum::repo
