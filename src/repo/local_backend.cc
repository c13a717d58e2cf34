#include "continuum/repo/local_backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "continuum/common/log.h"
#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "repo/crypto.h"
#include "repo/process_info.h"

namespace continuum::repo {

namespace {

const char* KindDir(FileKind kind) {
  switch (kind) {
    case FileKind::kConfig: return "";
    case FileKind::kKey: return "keys";
    case FileKind::kPack: return "data";
    case FileKind::kIndex: return "index";
    case FileKind::kManifest: return "manifests";
    case FileKind::kLock: return "locks";
    case FileKind::kPin: return "pins";
  }
  return "";
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    if (errno == ENOENT) return out;  // a tool that drops empty directories
    return PosixError("list " + dir, errno);
  }
  while (struct dirent* e = ::readdir(d)) out.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Renames without replacing an existing target. renameat2 is not supported on
// every filesystem; link+unlink gives the same guarantee there.
int RenameNoReplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  if (::link(from.c_str(), to.c_str()) != 0) return errno;
  ::unlink(from.c_str());
  return 0;
}

std::string RandomHex8() {
  uint8_t r[8] = {};
  RandomBytes(r).IgnoreError();  // a weak name only risks an O_EXCL retry
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : r) {
    s += kDigits[b >> 4];
    s += kDigits[b & 15];
  }
  return s;
}

// errno values that mean "this filesystem or process cannot set inode flags",
// as opposed to an I/O error: tmpfs and FUSE (ENOTTY, EOPNOTSUPP), some
// filesystems (EINVAL), no CAP_LINUX_IMMUTABLE (EPERM).
bool FlagsUnsupported(int err) { return err == ENOTTY || err == EOPNOTSUPP || err == EINVAL || err == ENOSYS; }

}  // namespace

std::string_view FileKindName(FileKind kind) {
  switch (kind) {
    case FileKind::kConfig: return "config";
    case FileKind::kKey: return "key";
    case FileKind::kPack: return "pack";
    case FileKind::kIndex: return "index";
    case FileKind::kManifest: return "manifest";
    case FileKind::kLock: return "lock";
    case FileKind::kPin: return "pin";
  }
  return "file";
}

LocalBackend::LocalBackend(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

std::string LocalBackend::Dir(FileKind kind, const std::string& name) const {
  if (kind == FileKind::kConfig) return root_;
  std::string dir = root_;
  dir += '/';
  dir += KindDir(kind);
  if (kind == FileKind::kPack) {
    dir += '/';
    dir.append(name, 0, 2);
  }
  return dir;
}

std::string LocalBackend::Describe(FileKind kind, const std::string& name) const {
  if (kind == FileKind::kConfig) return root_ + "/config";
  return Dir(kind, name) + "/" + name;
}

Status LocalBackend::Create() {
  if (io::PathExists(root_ + "/config")) return AlreadyExists("a repository already exists at " + root_);
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(root_, 0700));
  for (const char* d : {"keys", "data", "index", "manifests", "locks", "pins", "tmp"}) {
    CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(root_ + "/" + d, 0700));
  }
  // data/<xx>/ directories are made on first use (see Write).
  return io::SyncDir(root_);
}

Status LocalBackend::Write(FileKind kind, const std::string& name, std::span<const uint8_t> data, bool replace) {
  if (kind == FileKind::kPack) ForgetPack(name);
  std::string final_path = Describe(kind, name);
  std::string context = "store " + final_path;
  std::string tmp_dir = root_ + "/tmp";
  std::string tmp = tmp_dir + "/" + std::to_string(::getpid()) + "-" + RandomHex8() + "-" + HostName();
  if (!io::PathExists(tmp_dir)) CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(tmp_dir, 0700).WithContext(context));
  Status st;
  {
    auto f = io::File::Open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (!f.ok()) return f.status().WithContext(context);
    // Packs past the page cache where the filesystem allows it: written once
    // and read rarely, they would only be copied in and written back later.
    st = kind == FileKind::kPack ? (*f)->PWriteDirect(0, data) : (*f)->PWrite(0, data);
    // fsync before rename: the final name must never point at unwritten data.
    if (st.ok()) st = (*f)->Sync();
    // Written once and read back rarely: drop it from the page cache, which
    // on its own costs more CPU than the write (many pack files per backup).
    if (st.ok() && kind == FileKind::kPack) ::posix_fadvise((*f)->fd(), 0, 0, POSIX_FADV_DONTNEED);
  }
  std::string dir = Dir(kind, name);
  if (st.ok() && !io::PathExists(dir)) {
    // A new directory entry is durable only once its parent is synced; without
    // this a crash could lose data/<xx>/ with the packs in it.
    st = io::MakeDirs(dir, 0700);
    if (st.ok()) st = io::SyncDir(dir.substr(0, dir.rfind('/')));
  }
  if (st.ok()) {
    int err = 0;
    if (replace) {
      err = ::rename(tmp.c_str(), final_path.c_str()) == 0 ? 0 : errno;
    } else {
      err = RenameNoReplace(tmp, final_path);
    }
    if (err == EEXIST) {
      ::unlink(tmp.c_str());
      // A writer that crashed between its rename and SealWritten left the
      // file complete but mutable: finish its job.
      if (write_once_ && IsWriteOnceKind(kind)) SealWritten(final_path);
      return AlreadyExists(final_path + " already exists");
    }
    if (err != 0) st = PosixError("rename " + tmp, err);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());  // best effort; CleanTemporary catches what is left
    return st.WithContext(context);
  }
  // The rename is durable only once the directory is.
  CONTINUUM_RETURN_IF_ERROR(io::SyncDir(dir).WithContext(context));
  // Only now: a file made immutable under its temporary name could not be
  // removed by the cleanup above if the rename failed.
  if (write_once_ && IsWriteOnceKind(kind)) SealWritten(final_path);
  return Status::Ok();
}

namespace {

// Sets FS_IMMUTABLE_FL (and makes it durable); 0 or the errno of the failure.
int SetImmutableFlag(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno;
  int err = 0;
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) != 0) {
    err = errno;
  } else if (!(flags & FS_IMMUTABLE_FL)) {
    flags |= FS_IMMUTABLE_FL;
    if (::ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0) {
      err = errno;
    } else if (::fsync(fd) != 0) {  // the flag is inode metadata: make it durable too
      err = errno;
    }
  }
  ::close(fd);
  return err;
}

}  // namespace

void LocalBackend::SealWritten(const std::string& path) {
  int err = SetImmutableFlag(path);
  if (err == 0) return;
  if (FlagsUnsupported(err) || err == EPERM) {
    if (!told_unsupported_.exchange(true)) {
      Logger("repo")->warn(
          "{}: append-only repository, but its files cannot be made immutable ({}: {}); "
          "clients still refuse to delete, the filesystem does not enforce it",
          root_, path, err == EPERM ? "no CAP_LINUX_IMMUTABLE" : PosixError("set flags", err).message());
    }
    return;
  }
  // The file itself is stored and durable; `repo check` reports it as mutable.
  Logger("repo")->warn("{}: cannot make immutable: {}", path, PosixError("set flags", err).message());
}

Status LocalBackend::MakeImmutable(FileKind kind, const std::string& name) {
  std::string path = Describe(kind, name);
  int err = SetImmutableFlag(path);
  if (err == 0) return Status::Ok();
  if (err == EPERM) return FailedPrecondition("cannot make " + path + " immutable: no CAP_LINUX_IMMUTABLE (run as root)");
  if (FlagsUnsupported(err)) {
    return FailedPrecondition("cannot make " + path + " immutable: the filesystem has no immutable flag");
  }
  return PosixError("make " + path + " immutable", err);
}

Result<Immutability> LocalBackend::GetImmutability(FileKind kind, const std::string& name) {
  std::string path = Describe(kind, name);
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return PosixError("open " + path, errno);
  int flags = 0;
  int rc = ::ioctl(fd, FS_IOC_GETFLAGS, &flags);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    if (FlagsUnsupported(err)) return Immutability::kUnsupported;
    return PosixError("get flags of " + path, err);
  }
  return (flags & FS_IMMUTABLE_FL) ? Immutability::kImmutable : Immutability::kMutable;
}

Result<std::vector<uint8_t>> LocalBackend::Read(FileKind kind, const std::string& name, uint64_t max_bytes) {
  std::string path = Describe(kind, name);
  CONTINUUM_ASSIGN_OR_RETURN(auto f, io::File::Open(path, O_RDONLY));
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t size, f->Size());
  if (size > max_bytes) {
    return DataLoss(path + " has " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                    " a " + std::string(FileKindName(kind)) + " may have");
  }
  std::vector<uint8_t> out(size);
  CONTINUUM_RETURN_IF_ERROR(f->PRead(0, out));
  return out;
}

Result<std::vector<uint8_t>> LocalBackend::ReadAt(FileKind kind, const std::string& name, uint64_t offset,
                                                  uint64_t length) {
  if (length > (1ull << 32)) {
    return InvalidArgument("read " + Describe(kind, name) + ": length " + std::to_string(length) + " too large");
  }
  std::vector<uint8_t> out(length);
  CONTINUUM_RETURN_IF_ERROR(ReadInto(kind, name, offset, out));
  return out;
}

Status LocalBackend::ReadInto(FileKind kind, const std::string& name, uint64_t offset, std::span<uint8_t> out) {
  std::shared_ptr<io::File> f;
  if (kind == FileKind::kPack) {
    CONTINUUM_ASSIGN_OR_RETURN(f, OpenPack(name));
  } else {
    CONTINUUM_ASSIGN_OR_RETURN(f, io::File::Open(Describe(kind, name), O_RDONLY));
  }
  return f->PRead(offset, out);
}

void LocalBackend::ForgetPack(const std::string& name) {
  std::lock_guard lock(packs_mu_);
  auto it = pack_index_.find(name);
  if (it == pack_index_.end()) return;
  packs_.erase(it->second);
  pack_index_.erase(it);
}

Result<std::shared_ptr<io::File>> LocalBackend::OpenPack(const std::string& name) {
  constexpr size_t kMaxOpenPacks = 64;
  {
    std::lock_guard lock(packs_mu_);
    auto it = pack_index_.find(name);
    if (it != pack_index_.end()) {
      packs_.splice(packs_.begin(), packs_, it->second);
      return packs_.front().second;
    }
  }
  // Opened outside the lock: other readers go on meanwhile.
  CONTINUUM_ASSIGN_OR_RETURN(auto opened, io::File::Open(Describe(FileKind::kPack, name), O_RDONLY));
  std::shared_ptr<io::File> f = std::move(opened);
  std::lock_guard lock(packs_mu_);
  if (pack_index_.count(name)) return f;  // another reader cached it first: use ours once
  packs_.emplace_front(name, f);
  pack_index_[name] = packs_.begin();
  if (packs_.size() > kMaxOpenPacks) {
    pack_index_.erase(packs_.back().first);
    packs_.pop_back();  // closes when its last reader is done
  }
  return f;
}

Result<uint64_t> LocalBackend::Size(FileKind kind, const std::string& name) {
  std::string path = Describe(kind, name);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return PosixError("stat " + path, errno);
  return static_cast<uint64_t>(st.st_size);
}

Result<std::vector<std::string>> LocalBackend::List(FileKind kind) {
  std::vector<std::string> out;
  if (kind == FileKind::kConfig) {
    if (io::PathExists(root_ + "/config")) out.push_back("config");
    return out;
  }
  std::string base = root_ + "/" + KindDir(kind);
  if (kind != FileKind::kPack) {
    CONTINUUM_ASSIGN_OR_RETURN(auto names, ListDir(base));
    for (auto& n : names) {
      if (IsHexName(n)) out.push_back(std::move(n));
    }
    return out;
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto subs, ListDir(base));
  for (const auto& sub : subs) {
    if (sub.size() != 2) continue;
    CONTINUUM_ASSIGN_OR_RETURN(auto names, ListDir(base + "/" + sub));
    for (auto& n : names) {
      if (IsHexName(n) && n.compare(0, 2, sub) == 0) out.push_back(std::move(n));
    }
  }
  return out;
}

Status LocalBackend::Remove(FileKind kind, const std::string& name) {
  if (kind == FileKind::kPack) ForgetPack(name);
  std::string path = Describe(kind, name);
  if (::unlink(path.c_str()) != 0) return PosixError("remove " + path, errno);
  return io::SyncDir(Dir(kind, name)).WithContext("remove " + path);
}

Result<size_t> LocalBackend::CleanTemporary(int64_t older_than_ns) {
  std::string dir = root_ + "/tmp";
  CONTINUUM_ASSIGN_OR_RETURN(auto names, ListDir(dir));
  std::string host = HostName();
  int64_t now = WallNowNs();
  size_t removed = 0;
  for (const auto& n : names) {
    if (n == "." || n == "..") continue;
    std::string path = dir + "/" + n;
    bool gone = false;
    // Name: <pid>-<16 hex>-<host>; see Write.
    size_t dash1 = n.find('-');
    if (dash1 != std::string::npos && n.size() > dash1 + 18 && n[dash1 + 17] == '-') {
      pid_t pid = static_cast<pid_t>(std::strtol(n.substr(0, dash1).c_str(), nullptr, 10));
      gone = n.substr(dash1 + 18) == host && pid != ::getpid() && ProcessStartTicks(pid) == 0;
    }
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;  // removed by its writer meanwhile
    int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    if (!gone && now - mtime < older_than_ns) continue;
    if (::unlink(path.c_str()) == 0) ++removed;
  }
  return removed;
}

}  // namespace continuum::repo
