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
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "continuum/backup/point_catalog.h"
#include "continuum/common/time_util.h"
#include "continuum/io/unique_fd.h"
#include "continuum/repo/blob_pipeline.h"
#include "dir_listing.h"
#include "read_ahead.h"
#include "point_util.h"

namespace continuum::backup {
namespace {

// Chunk bytes of one file being hashed on workers before this thread waits
// for the oldest id (see ReadContent).
constexpr uint64_t kMaxHashingBytes = 8u << 20;

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

// One directory of the parent point, to reuse the content of unchanged files.
struct ParentDir {
  std::vector<repo::BlobId> refs;
  std::unordered_map<std::string, DirEntry> entries;
};

class PathWalker {
 public:
  PathWalker(repo::Repository& repo, repo::BlobPipeline& pipeline, const PathBackupOptions& options,
             const ProgressFn& progress, const std::function<void(const Status&)>& warn,
             std::unique_ptr<repo::FastCdcChunker> chunker, uint64_t bytes_estimate)
      : repo_(repo), pipeline_(pipeline), options_(options), progress_(progress), warn_(warn),
        chunker_(std::move(chunker)), buf_(4u << 20), stats_before_(repo.stats()), bytes_estimate_(bytes_estimate) {}

  // `parent_root`: the root tree of the parent point, if any.
  Result<repo::BlobId> BackupSources(const std::optional<repo::BlobId>& parent_root) {
    std::unique_ptr<ParentDir> parent;
    if (parent_root) parent = LoadParent(*parent_root);
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
      Status s = FillEntry(AT_FDCWD, resolved, abs, st, parent.get(), &e, &refs);
      if (!s.ok()) return s;
      entries.push_back(std::move(e));
    }
    std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
    return pipeline_.PutTree({.refs = refs.Take(), .payload = EncodeDirListing(entries)});
  }

  uint64_t files() const { return files_; }
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t size() const { return size_; }
  uint64_t warnings() const { return warnings_; }
  uint64_t files_reused() const { return files_reused_; }

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
    uint64_t done = bytes_read_ + bytes_reused_;
    progress_({.bytes_done = done, .bytes_total = bytes_estimate_ ? std::max(bytes_estimate_, done) : 0,
               .files_done = files_, .new_bytes = repo_.stats().raw_bytes_new - stats_before_.raw_bytes_new});
  }

  // The parent point's listing of one directory; null (read everything) when
  // it cannot be read: reuse is an optimization, never a reason to fail.
  std::unique_ptr<ParentDir> LoadParent(const repo::BlobId& tree_id) {
    auto tree = repo_.GetTree(tree_id);
    if (!tree.ok()) return nullptr;
    auto entries = DecodeDirListing(tree->payload, tree->refs.size(), "parent tree " + tree_id.Hex());
    if (!entries.ok()) return nullptr;
    auto dir = std::make_unique<ParentDir>();
    dir->refs = std::move(tree->refs);
    for (auto& e : *entries) {
      std::string name = e.name;
      dir->entries.emplace(std::move(name), std::move(e));
    }
    return dir;
  }

  // The parent's entry for `e` when the file is unchanged since: same type,
  // size, mtime, ctime and inode. A write moves mtime and ctime; setting mtime
  // back (touch -d, tar, rsync -t) still moves ctime, which no one can set;
  // xattr, mode and owner changes move ctime too.
  const DirEntry* Unchanged(const ParentDir* parent, const DirEntry& e) const {
    if (!parent || e.type != EntryType::kFile) return nullptr;
    auto it = parent->entries.find(e.name);
    if (it == parent->entries.end()) return nullptr;
    const DirEntry& p = it->second;
    if (p.type != EntryType::kFile || p.size != e.size || p.mtime_ns != e.mtime_ns || p.ctime_ns != e.ctime_ns ||
        p.inode != e.inode) {
      return nullptr;
    }
    for (int64_t c : p.chunks) {
      // A blob lost since (a damaged pack left out by repair) is read again.
      if (c >= 0 && !repo_.Has(parent->refs[static_cast<size_t>(c)])) return nullptr;
    }
    return &p;
  }

  // The parent's content of an unchanged file as pieces (lengths of data
  // blobs are not in the listing; only holes need theirs).
  static std::vector<Piece> ParentContent(const ParentDir& parent, const DirEntry& p) {
    std::vector<Piece> out;
    out.reserve(p.chunks.size());
    for (int64_t c : p.chunks) {
      if (c < 0) {
        out.push_back({.hole = true, .length = static_cast<uint64_t>(-c)});
      } else {
        out.push_back({.id = parent.refs[static_cast<size_t>(c)]});
      }
    }
    return out;
  }

  // Content, xattrs and subtrees of one entry whose stat is `st`; `name` is
  // relative to `dir_fd` (or absolute with AT_FDCWD).
  Status FillEntry(int dir_fd, const std::string& name, const std::string& abs, const struct stat& st,
                   const ParentDir* parent, DirEntry* e, RefTable* refs) {
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

    const DirEntry* same = Unchanged(parent, *e);
    if (same && st.st_nlink <= 1) {
      // Unchanged since the parent point: its chunks, without opening the file.
      e->xattrs = same->xattrs;
      AddContent(ParentContent(*parent, *same), e, refs);
      size_ += e->size;
      bytes_reused_ += e->size;
      ++files_reused_;
      return Status::Ok();
    }

    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME | (e->type == EntryType::kDir ? O_DIRECTORY : 0);
    int fd = ::openat(dir_fd, name.c_str(), flags);
    if (fd < 0 && errno == EPERM) fd = ::openat(dir_fd, name.c_str(), flags & ~O_NOATIME);  // not the owner
    if (fd < 0) return PosixError("open " + abs, errno);
    io::UniqueFd guard(fd);
    ReadXattrs(fd, abs, e);
    if (e->type == EntryType::kDir) {
      std::unique_ptr<ParentDir> sub_parent;
      if (parent) {
        auto it = parent->entries.find(e->name);
        if (it != parent->entries.end() && it->second.type == EntryType::kDir) {
          sub_parent = LoadParent(parent->refs[static_cast<size_t>(it->second.subtree)]);
        }
      }
      CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId sub, BackupDir(fd, abs, sub_parent.get()));
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
    if (same) {
      // A hard link unchanged since the parent point (its other names reuse this).
      e->xattrs = same->xattrs;
      content = ParentContent(*parent, *same);
      bytes_reused_ += e->size;
      ++files_reused_;
    } else {
      CONTINUUM_ASSIGN_OR_RETURN(e->size, ReadContent(fd, abs, &content));
    }
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
  //
  // The chunks of a file with more to come are hashed on the pipeline's
  // workers (PutLater) while this thread reads and chunks on; the ids are
  // collected in order before the file is done, or earlier when more than
  // kMaxHashingBytes wait. The last chunk, and with it every single-chunk
  // file, is hashed here: waiting for a worker to do it would cost more.
  Result<uint64_t> ReadContent(int fd, const std::string& abs, std::vector<Piece>* content) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    std::deque<std::pair<size_t, repo::BlobPipeline::Ticket>> hashing;  // (piece, ticket)
    uint64_t hashing_bytes = 0;
    auto resolve_front = [&]() -> Status {
      auto& [piece, ticket] = hashing.front();
      CONTINUUM_ASSIGN_OR_RETURN((*content)[piece].id, pipeline_.Resolve(ticket));
      hashing_bytes -= (*content)[piece].length;
      hashing.pop_front();
      return Status::Ok();
    };
    bool last = false;  // set for the chunks Finish emits
    const repo::ChunkSink sink = [&](const repo::Chunk& c) -> Status {
      if (c.zero) {
        content->push_back({.hole = true, .length = c.data.size()});
        return Status::Ok();
      }
      if (last) {
        CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, pipeline_.Put(repo::BlobType::kData, c.data));
        content->push_back({.length = c.data.size(), .id = id});
        return Status::Ok();
      }
      content->push_back({.length = c.data.size()});
      hashing.emplace_back(content->size() - 1,
                           pipeline_.PutLater(repo::BlobType::kData, std::vector<uint8_t>(c.data.begin(), c.data.end())));
      hashing_bytes += c.data.size();
      while (hashing_bytes > kMaxHashingBytes) CONTINUUM_RETURN_IF_ERROR(resolve_front());
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
    last = true;
    CONTINUUM_RETURN_IF_ERROR(chunker_->Finish(sink));
    while (!hashing.empty()) CONTINUUM_RETURN_IF_ERROR(resolve_front());
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

  Result<repo::BlobId> BackupDir(int dir_fd, const std::string& abs, const ParentDir* parent) {
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

    read_ahead_.Stat(dir_fd, names);

    // Stat everything first, so the files to read can be hinted all at once.
    struct Listed {
      std::string child;
      struct stat st;
      DirEntry e;
    };
    std::vector<Listed> listed;
    std::vector<std::pair<std::string, uint64_t>> to_read;
    for (const auto& name : names) {
      std::string child = abs == "/" ? "/" + name : abs + "/" + name;
      if (Excluded(name, child)) continue;
      struct stat st;
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        Warn(PosixError("stat " + child, errno));
        continue;
      }
      DirEntry e = FromStat(name, st);
      if (e.type == EntryType::kFile && e.size > 0 && !Unchanged(parent, e)) to_read.emplace_back(name, e.size);
      listed.push_back({.child = std::move(child), .st = st, .e = std::move(e)});
    }
    read_ahead_.Read(dir_fd, to_read);

    std::vector<DirEntry> entries;
    RefTable refs;
    for (auto& [child, st, e] : listed) {
      const std::string name = e.name;
      Status s = FillEntry(dir_fd, name, child, st, parent, &e, &refs);
      if (!s.ok()) {
        // Repository errors stop the backup; a file that cannot be read is skipped.
        if (s.code() != StatusCode::kIoError) return s;
        Warn(s);
        continue;
      }
      entries.push_back(std::move(e));
    }
    Report();
    return pipeline_.PutTree({.refs = refs.Take(), .payload = EncodeDirListing(entries)});
  }

 private:
  repo::Repository& repo_;
  repo::BlobPipeline& pipeline_;
  const PathBackupOptions& options_;
  const ProgressFn& progress_;
  const std::function<void(const Status&)>& warn_;
  std::unique_ptr<repo::FastCdcChunker> chunker_;
  std::vector<uint8_t> buf_;
  const repo::RepositoryStats stats_before_;
  const uint64_t bytes_estimate_;  // the parent's size: a guess of the total for progress
  uint64_t bytes_reused_ = 0;
  ReadAhead read_ahead_{4};  // IO-bound helpers: more than the CPUs is fine
  uint64_t files_reused_ = 0;
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
  PointInfo info;
  info.time_ns = start_wall;
  info.type = PointType::kPath;
  for (const auto& s : options.sources) info.sources.push_back(AbsolutePath(s));
  info.host = HostName();
  info.tags = options.tags;

  // The parent: the previous (or last full) point of the same sources and host.
  std::optional<repo::BlobId> parent_root;
  uint64_t estimate = 0;
  ChainPlan plan;
  if (options.kind != BackupKind::kFull) {
    std::vector<std::string> problems;  // undecodable manifests are not parents
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<PointInfo> points, ListPoints(repo, &problems));
    plan = PlanChain(points, info, options.kind);
    if (plan.parent) {
      auto m = repo.LoadManifest(plan.parent->id);
      if (m.ok() && m->roots.size() == 1) {
        parent_root = m->roots[0];
        estimate = plan.parent->size;
      } else {
        plan = PlanChain({}, info, BackupKind::kFull);  // an unreadable parent: take a full point
      }
    }
  }
  ApplyPlan(plan, &info);

  CONTINUUM_ASSIGN_OR_RETURN(auto chunker, repo::FastCdcChunker::Create(repo.CdcOptions()));
  CONTINUUM_ASSIGN_OR_RETURN(auto pipeline, repo::BlobPipeline::Create(repo, {.threads = options.threads}));
  PathWalker walker(repo, *pipeline, options, progress, warn, std::move(chunker), estimate);
  auto root = walker.BackupSources(parent_root);
  // Every blob in a pack before the manifest is written (SavePoint flushes).
  Status drained = pipeline->Drain();
  if (!root.ok()) return root.status();
  CONTINUUM_RETURN_IF_ERROR(drained);
  pipeline.reset();

  info.size = walker.size();
  info.files = walker.files();
  info.bytes_read = walker.bytes_read();
  info.warnings = walker.warnings();
  return SavePoint(repo, std::move(info), *root, before, start);
}

}  // namespace continuum::backup
