#include "continuum/backup/path_backup.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "continuum/common/time_util.h"
#include "dir_listing.h"
#include "point_util.h"

namespace continuum::backup {
namespace {

// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

int64_t Ns(const struct timespec& t) { return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec; }

// A file's content independent of any tree: data blobs and holes in order.
struct Piece {
  bool hole = false;
  uint64_t length = 0;
  repo::BlobId id;
};

// The refs of one directory tree, each stored once.
class RefTable {
 public:
  int64_t Add(const repo::BlobId& id) {
    auto [it, inserted] = index_.try_emplace(id, static_cast<int64_t>(refs_.size()));
    if (inserted) refs_.push_back(id);
    return it->second;
  }
  std::vector<repo::BlobId> Take() { return std::move(refs_); }

 private:
  std::vector<repo::BlobId> refs_;
  std::unordered_map<repo::BlobId, int64_t, repo::BlobIdHash> index_;
};

struct HardLink {
  uint64_t group = 0;
  std::vector<Piece> content;
  uint64_t size = 0;
};

class PathWalker {
 public:
  PathWalker(repo::Repository& repo, const PathBackupOptions& options, const ProgressFn& progress,
             const std::function<void(const Status&)>& warn, std::unique_ptr<repo::FastCdcChunker> chunker)
      : repo_(repo), options_(options), progress_(progress), warn_(warn), chunker_(std::move(chunker)),
        buf_(4u << 20), stats_before_(repo.stats()) {}

  Result<repo::BlobId> BackupSources() {
    std::vector<DirEntry> entries;
    RefTable refs;
    std::set<std::string> names;
    for (const auto& source : options_.sources) {
      std::string abs = AbsolutePath(source);
      std::string name = abs == "/" ? "rootfs" : abs.substr(abs.rfind('/') + 1);
      if (!names.insert(name).second) {
        return InvalidArgument("two sources have the base name '" + name + "': back them up in separate points");
      }
      // A source named on the command line is followed if it is a symlink.
      struct stat st;
      if (::stat(abs.c_str(), &st) != 0) return PosixError("stat " + abs, errno);
      DirEntry e = FromStat(name, st);
      // Opened by its resolved path: the walk below never follows symlinks.
      char resolved[PATH_MAX];
      if (!::realpath(abs.c_str(), resolved)) return PosixError("resolve " + abs, errno);
      Status s = FillEntry(AT_FDCWD, resolved, abs, st, &e, &refs);
      if (!s.ok()) return s;
      entries.push_back(std::move(e));
    }
    std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    return repo_.PutTree({.refs = refs.Take(), .payload = EncodeDirListing(entries)});
  }

  uint64_t files() const { return files_; }
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t size() const { return size_; }
  uint64_t warnings() const { return warnings_; }

 private:
  static DirEntry FromStat(const std::string& name, const struct stat& st) {
    DirEntry e;
    e.name = name;
    switch (st.st_mode & S_IFMT) {
      case S_IFDIR: e.type = EntryType::kDir; break;
      case S_IFLNK: e.type = EntryType::kSymlink; break;
      case S_IFCHR: e.type = EntryType::kCharDev; break;
      case S_IFBLK: e.type = EntryType::kBlockDev; break;
      case S_IFIFO: e.type = EntryType::kFifo; break;
      case S_IFSOCK: e.type = EntryType::kSocket; break;
      default: e.type = EntryType::kFile; break;
    }
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.mtime_ns = Ns(st.st_mtim);
    e.ctime_ns = Ns(st.st_ctim);
    e.size = e.type == EntryType::kFile || e.type == EntryType::kSymlink ? st.st_size : 0;
    e.inode = st.st_ino;
    e.nlink = st.st_nlink;
    if (e.type == EntryType::kCharDev || e.type == EntryType::kBlockDev) e.rdev = st.st_rdev;
    return e;
  }

  bool Excluded(const std::string& name, const std::string& abs) const {
    for (const auto& pat : options_.excludes) {
      bool has_slash = pat.find('/') != std::string::npos;
      if (fnmatch(pat.c_str(), has_slash ? abs.c_str() : name.c_str(), has_slash ? FNM_PATHNAME : 0) == 0) {
        return true;
      }
    }
    return false;
  }

  void Warn(const Status& st) {
    ++warnings_;
    if (warn_) warn_(st);
  }

  void Report() {
    if (!progress_) return;
    progress_({.bytes_done = bytes_read_, .files_done = files_,
               .new_bytes = repo_.stats().raw_bytes_new - stats_before_.raw_bytes_new});
  }

  // Content, xattrs and subtrees of one entry whose stat is `st`; `name` is
  // relative to `dir_fd` (or absolute with AT_FDCWD).
  Status FillEntry(int dir_fd, const std::string& name, const std::string& abs, const struct stat& st, DirEntry* e,
                   RefTable* refs) {
    ++files_;
    if (e->type == EntryType::kSymlink) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(dir_fd, name.c_str(), target.data(), target.size());
      if (n < 0) return PosixError("readlink " + abs, errno);
      target.resize(static_cast<size_t>(n));
      e->link_target = target;
      return Status::Ok();
    }
    if (e->type != EntryType::kFile && e->type != EntryType::kDir) return Status::Ok();

    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME | (e->type == EntryType::kDir ? O_DIRECTORY : 0);
    int fd = ::openat(dir_fd, name.c_str(), flags);
    if (fd < 0 && errno == EPERM) fd = ::openat(dir_fd, name.c_str(), flags & ~O_NOATIME);  // not the owner
    if (fd < 0) return PosixError("open " + abs, errno);
    Fd guard(fd);
    ReadXattrs(fd, abs, e);
    if (e->type == EntryType::kDir) {
      CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId sub, BackupDir(fd, abs));
      e->subtree = refs->Add(sub);
      return Status::Ok();
    }

    HardLink* link = nullptr;
    if (st.st_nlink > 1) {
      auto key = std::make_pair(static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino));
      auto [it, inserted] = links_.try_emplace(key);
      link = &it->second;
      if (!inserted) {
        // Another name of an inode already read: same content, same group.
        e->hardlink_group = link->group;
        e->size = link->size;
        AddContent(link->content, e, refs);
        return Status::Ok();
      }
      link->group = ++next_group_;
      e->hardlink_group = link->group;
    }
    std::vector<Piece> content;
    CONTINUUM_ASSIGN_OR_RETURN(e->size, ReadContent(fd, abs, &content));
    size_ += e->size;
    AddContent(content, e, refs);
    if (link) {
      link->content = std::move(content);
      link->size = e->size;
    }
    return Status::Ok();
  }

  static void AddContent(const std::vector<Piece>& content, DirEntry* e, RefTable* refs) {
    for (const auto& p : content) e->chunks.push_back(p.hole ? -static_cast<int64_t>(p.length) : refs->Add(p.id));
  }

  // Reads to the end (a file that grows or shrinks meanwhile is stored as read).
  Result<uint64_t> ReadContent(int fd, const std::string& abs, std::vector<Piece>* content) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    const repo::ChunkSink sink = [&](const repo::Chunk& c) -> Status {
      if (c.zero) {
        content->push_back({.hole = true, .length = c.data.size()});
        return Status::Ok();
      }
      CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, repo_.Put(repo::BlobType::kData, c.data));
      content->push_back({.length = c.data.size(), .id = id});
      return Status::Ok();
    };
    uint64_t total = 0;
    for (;;) {
      ssize_t n = ::read(fd, buf_.data(), buf_.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Status err = PosixError("read " + abs, errno);
        chunker_->Finish([](const repo::Chunk&) { return Status::Ok(); }).IgnoreError();  // reset for the next file
        return err;
      }
      if (n == 0) break;
      total += static_cast<uint64_t>(n);
      bytes_read_ += static_cast<uint64_t>(n);
      CONTINUUM_RETURN_IF_ERROR(chunker_->Write(std::span<const uint8_t>(buf_.data(), static_cast<size_t>(n)), sink));
      Report();
    }
    CONTINUUM_RETURN_IF_ERROR(chunker_->Finish(sink));
    return total;
  }

  void ReadXattrs(int fd, const std::string& abs, DirEntry* e) {
    ssize_t len = ::flistxattr(fd, nullptr, 0);
    if (len <= 0) return;  // none, or not supported by this filesystem
    std::string names(static_cast<size_t>(len), '\0');
    len = ::flistxattr(fd, names.data(), names.size());
    if (len < 0) return Warn(PosixError("list xattrs of " + abs, errno));
    for (size_t pos = 0; pos < static_cast<size_t>(len);) {
      std::string name(names.c_str() + pos);
      pos += name.size() + 1;
      ssize_t vlen = ::fgetxattr(fd, name.c_str(), nullptr, 0);
      if (vlen < 0) continue;  // removed meanwhile
      std::vector<uint8_t> value(static_cast<size_t>(vlen));
      vlen = ::fgetxattr(fd, name.c_str(), value.data(), value.size());
      if (vlen < 0) continue;
      value.resize(static_cast<size_t>(vlen));
      e->xattrs[name] = std::move(value);
    }
  }

  Result<repo::BlobId> BackupDir(int dir_fd, const std::string& abs) {
    int dup = ::dup(dir_fd);
    if (dup < 0) return PosixError("dup " + abs, errno);
    DIR* d = ::fdopendir(dup);
    if (!d) {
      ::close(dup);
      return PosixError("opendir " + abs, errno);
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* de = ::readdir(d)) {
      std::string n = de->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    int read_errno = errno;
    ::closedir(d);
    if (read_errno) return PosixError("readdir " + abs, read_errno);
    std::sort(names.begin(), names.end());  // same content, same tree: dedups

    std::vector<DirEntry> entries;
    RefTable refs;
    for (const auto& name : names) {
      std::string child = abs == "/" ? "/" + name : abs + "/" + name;
      if (Excluded(name, child)) continue;
      struct stat st;
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        Warn(PosixError("stat " + child, errno));
        continue;
      }
      DirEntry e = FromStat(name, st);
      Status s = FillEntry(dir_fd, name, child, st, &e, &refs);
      if (!s.ok()) {
        // Repository errors stop the backup; a file that cannot be read is skipped.
        if (s.code() != StatusCode::kIoError) return s;
        Warn(s);
        continue;
      }
      entries.push_back(std::move(e));
    }
    Report();
    return repo_.PutTree({.refs = refs.Take(), .payload = EncodeDirListing(entries)});
  }

 private:
  repo::Repository& repo_;
  const PathBackupOptions& options_;
  const ProgressFn& progress_;
  const std::function<void(const Status&)>& warn_;
  std::unique_ptr<repo::FastCdcChunker> chunker_;
  std::vector<uint8_t> buf_;
  const repo::RepositoryStats stats_before_;
  std::map<std::pair<uint64_t, uint64_t>, HardLink> links_;
  uint64_t next_group_ = 0;
  uint64_t files_ = 0;
  uint64_t bytes_read_ = 0;
  uint64_t size_ = 0;
  uint64_t warnings_ = 0;
};

}  // namespace

Result<PointInfo> BackupPaths(repo::Repository& repo, const PathBackupOptions& options, const ProgressFn& progress,
                              const std::function<void(const Status&)>& warn) {
  if (options.sources.empty()) return InvalidArgument("no source paths given");
  int64_t start_wall = WallNowNs();
  int64_t start = MonoNowNs();
  const repo::RepositoryStats before = repo.stats();
  CONTINUUM_ASSIGN_OR_RETURN(auto chunker, repo::FastCdcChunker::Create(repo.CdcOptions()));
  PathWalker walker(repo, options, progress, warn, std::move(chunker));
  CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId root, walker.BackupSources());

  PointInfo info;
  info.time_ns = start_wall;
  info.type = PointType::kPath;
  for (const auto& s : options.sources) info.sources.push_back(AbsolutePath(s));
  info.host = HostName();
  info.tags = options.tags;
  info.size = walker.size();
  info.files = walker.files();
  info.bytes_read = walker.bytes_read();
  info.warnings = walker.warnings();
  return SavePoint(repo, std::move(info), root, before, start);
}

}  // namespace continuum::backup
