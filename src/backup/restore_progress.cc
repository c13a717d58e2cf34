#include "restore_progress.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <utility>

#include "continuum/io/file.h"

namespace continuum::backup {
namespace {

constexpr std::string_view kHeader = "continuum restore progress 1";
constexpr size_t kMaxFileBytes = 4096;

repo::BlobId Sha(std::string_view text) {
  repo::BlobId id;
  SHA256(reinterpret_cast<const uint8_t*>(text.data()), text.size(), id.bytes.data());
  return id;
}

// Splits off one line (without its '\n'); false when no complete line is left.
bool NextLine(std::string_view* rest, std::string_view* line) {
  size_t nl = rest->find('\n');
  if (nl == std::string_view::npos) return false;
  *line = rest->substr(0, nl);
  rest->remove_prefix(nl + 1);
  return true;
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

repo::BlobId RestoreOptionsDigest(PointType type, const std::vector<std::string>& includes, uint64_t a, uint64_t b) {
  // Length-prefixed fields: no two option sets share an encoding.
  std::string s(PointTypeName(type));
  s += '\0' + std::to_string(a) + '\0' + std::to_string(b);
  for (const auto& inc : includes) s += '\0' + std::to_string(inc.size()) + ':' + inc;
  return Sha(s);
}

std::string EncodeRestoreProgress(const RestoreProgress& p) {
  std::string s(kHeader);
  s += "\npoint " + p.point.Hex();
  s += "\ntype " + std::string(PointTypeName(p.type));
  s += "\noptions " + p.options.Hex();
  s += "\ndone " + std::to_string(p.done);
  s += "\ntotal " + std::to_string(p.total);
  s += "\nbytes_done " + std::to_string(p.bytes_done);
  s += "\nbytes_total " + std::to_string(p.bytes_total);
  s += '\n';
  s += "checksum " + Sha(s).Hex() + "\n";
  return s;
}

Result<RestoreProgress> DecodeRestoreProgress(std::string_view text, const std::string& path) {
  auto bad = [&](size_t line_no, const std::string& why) {
    return DataLoss("restore progress file " + path + ": " + (line_no ? "line " + std::to_string(line_no) + ": " : "") +
                    why);
  };
  if (text.size() > kMaxFileBytes) return bad(0, std::to_string(text.size()) + " bytes is too large");
  static constexpr std::string_view kKeys[] = {"point", "type",       "options",     "done",
                                               "total", "bytes_done", "bytes_total", "checksum"};
  std::string_view rest = text, line;
  if (!NextLine(&rest, &line)) return bad(0, "truncated (no complete line)");
  if (line != kHeader) return bad(1, "not a restore progress file of this version");
  RestoreProgress p;
  size_t line_no = 1;
  for (std::string_view key : kKeys) {
    ++line_no;
    const size_t consumed = text.size() - rest.size();
    if (!NextLine(&rest, &line)) return bad(line_no, "truncated before '" + std::string(key) + "'");
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos || line.substr(0, sp) != key) {
      return bad(line_no, "expected '" + std::string(key) + " VALUE'");
    }
    std::string_view value = line.substr(sp + 1);
    auto bad_value = [&] {
      return bad(line_no, "bad " + std::string(key) + " '" + std::string(value.substr(0, 80)) + "'");
    };
    if (key == "point" || key == "options" || key == "checksum") {
      auto id = repo::BlobId::FromHex(value);
      if (!id.ok()) return bad_value();
      if (key == "point") p.point = *id;
      if (key == "options") p.options = *id;
      if (key == "checksum" && Sha(text.substr(0, consumed)) != *id) return bad(line_no, "checksum mismatch");
    } else if (key == "type") {
      if (value == PointTypeName(PointType::kImage)) {
        p.type = PointType::kImage;
      } else if (value == PointTypeName(PointType::kPath)) {
        p.type = PointType::kPath;
      } else {
        return bad_value();
      }
    } else {
      uint64_t v = 0;
      if (!ParseU64(value, &v)) return bad_value();
      if (key == "done") p.done = v;
      if (key == "total") p.total = v;
      if (key == "bytes_done") p.bytes_done = v;
      if (key == "bytes_total") p.bytes_total = v;
    }
  }
  if (!rest.empty()) return bad(line_no + 1, "unexpected data after the checksum");
  if (p.total != 0 && p.done > p.total) {
    return bad(0, "done " + std::to_string(p.done) + " exceeds total " + std::to_string(p.total));
  }
  if (p.bytes_total != 0 && p.bytes_done > p.bytes_total) {
    return bad(0,
               "bytes_done " + std::to_string(p.bytes_done) + " exceeds bytes_total " + std::to_string(p.bytes_total));
  }
  return p;
}

std::string RestoreProgressFile::ForImage(const std::string& target, bool device, const std::string& state_dir) {
  if (!device) return target + ".continuum-restore";
  // /dev is not durable: a device's progress lives in the state directory.
  std::string name;
  for (char c : target) {
    if (name.empty() && c == '/') continue;
    name += (c == '/') ? '_' : c;
  }
  return state_dir + "/restore/" + name + ".continuum-restore";
}

std::string RestoreProgressFile::ForTree(const std::string& target) {
  std::string dir = target;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir + "/" + std::string(kTreeName);
}

Result<RestoreProgress> RestoreProgressFile::Load() const {
  int fd = ::open(path_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return PosixError("open restore progress file " + path_, errno);
  std::string text(kMaxFileBytes + 1, '\0');
  size_t have = 0;
  int err = 0;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    err = errno;
  } else if (!S_ISREG(st.st_mode)) {
    err = EINVAL;
  }
  while (err == 0 && have < text.size()) {
    ssize_t n = ::read(fd, text.data() + have, text.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    have += static_cast<size_t>(n);
  }
  ::close(fd);
  if (err != 0) return PosixError("read restore progress file " + path_, err);
  text.resize(have);
  return DecodeRestoreProgress(text, path_);
}

Result<std::optional<RestoreProgress>> RestoreProgressFile::Claim(const RestoreProgress& fresh, bool restart) const {
  auto prior = Load();
  if (!prior.ok() && prior.status().code() == StatusCode::kNotFound) return std::optional<RestoreProgress>();
  if (restart) {
    CONTINUUM_RETURN_IF_ERROR(Remove());
    return std::optional<RestoreProgress>();
  }
  const std::string way_out = ": re-run with --restart to start this restore over, or delete " + path_;
  if (!prior.ok()) return FailedPrecondition(prior.status().message() + way_out);
  if (prior->point != fresh.point) {
    return FailedPrecondition(path_ + " records an unfinished restore of point " + prior->point.Hex().substr(0, 12) +
                              " to this target, not of point " + fresh.point.Hex().substr(0, 12) + way_out);
  }
  if (prior->type != fresh.type || prior->options != fresh.options) {
    return FailedPrecondition(path_ + " records an unfinished restore of point " + prior->point.Hex().substr(0, 12) +
                              " with other options (--include patterns, or the image changed)" + way_out);
  }
  saved_done_ = prior->done;
  return std::optional<RestoreProgress>(*prior);
}

Status RestoreProgressFile::Save(const RestoreProgress& p) const {
  const std::string text = EncodeRestoreProgress(p);
  const std::string tmp = path_ + ".tmp";
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(dir.empty() ? "." : dir, 0700));
  {
    // O_NOFOLLOW: a symlink at the temp name (say, restored from a crafted
    // point) must not redirect the write outside the target.
    ::unlink(tmp.c_str());  // whatever is there is ours to replace (never followed)
    CONTINUUM_ASSIGN_OR_RETURN(auto f, io::File::Open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    CONTINUUM_RETURN_IF_ERROR(f->PWrite(0, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
    // fsync before rename: the name must never point at unwritten progress.
    CONTINUUM_RETURN_IF_ERROR(f->Sync());
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return PosixError("rename " + tmp, errno);
  CONTINUUM_RETURN_IF_ERROR(io::SyncDir(dir.empty() ? "." : dir));
  saved_done_ = p.done;
  return Status::Ok();
}

Status RestoreProgressFile::Remove() const {
  if (::unlink(path_.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return PosixError("remove restore progress file " + path_, errno);
  }
  const std::string dir = std::filesystem::path(path_).parent_path().string();
  return io::SyncDir(dir.empty() ? "." : dir);
}

BackgroundCheckpointer::BackgroundCheckpointer(const RestoreProgressFile& file, std::function<Status()> sync)
    : file_(file), sync_(std::move(sync)), thread_([this] { Run(); }) {}

BackgroundCheckpointer::~BackgroundCheckpointer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Status BackgroundCheckpointer::Offer(const RestoreProgress& record) {
  std::lock_guard lock(mu_);
  Status err = std::exchange(error_, Status::Ok());
  if (!err.ok()) return err;
  queued_ = record;
  cv_.notify_all();
  return Status::Ok();
}

Status BackgroundCheckpointer::Drain() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !busy_ && !queued_; });
  return std::exchange(error_, Status::Ok());
}

void BackgroundCheckpointer::Run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || queued_.has_value(); });
    // Stopping drops a queued checkpoint: the owner drained what it needed.
    if (stop_) return;
    RestoreProgress record = *queued_;
    queued_.reset();
    busy_ = true;
    lock.unlock();
    Status st = sync_();
    if (st.ok() && record.done > file_.saved_done()) st = file_.Save(record);
    lock.lock();
    busy_ = false;
    if (!st.ok() && error_.ok()) error_ = st;
    if (!st.ok()) queued_.reset();  // no record after a failed sync
    cv_.notify_all();
  }
}

}  // namespace continuum::backup
