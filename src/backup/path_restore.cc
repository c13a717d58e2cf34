#include "path_restore.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <unordered_map>

#include "continuum/io/file.h"
#include "continuum/repo/blob_prefetcher.h"
#include "continuum/repo/chunker.h"
#include "dir_listing.h"
#include "point_util.h"
#include "sparse_write.h"

namespace continuum::backup {
namespace {

// Deeper trees only come from a crafted repository (PATH_MAX is 4096).
constexpr int kMaxDepth = 2048;

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

constexpr size_t kDigestLen = 32;

// Streaming SHA-256 (EVP: the SHA256_* calls are deprecated in OpenSSL 3).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  void Final(uint8_t* out) { EVP_DigestFinal_ex(ctx_, out, nullptr); }

 private:
  EVP_MD_CTX* ctx_;
};

// Files created but whose content is still being fetched: bounded so that
// descriptors and queued blob ids stay few (the prefetcher bounds the bytes).
constexpr size_t kMaxPendingFiles = 128;
constexpr uint64_t kMaxPendingBytes = 256ull << 20;

struct timespec Ts(int64_t ns) {
  return {.tv_sec = static_cast<time_t>(ns / 1000000000), .tv_nsec = static_cast<long>(ns % 1000000000)};
}

// Invariant: every descriptor this class holds is a directory it created or
// found as a real directory (opened O_NOFOLLOW) inside the target, and names
// passed to *at() calls passed IsSafeEntryName, so no call resolves outside.
class PathRestorer {
 public:
  PathRestorer(repo::Repository& repo, repo::BlobPrefetcher& prefetch, const RestoreOptions& options,
               const ProgressFn& progress, const std::function<void(const Status&)>& warn, int root_fd)
      : repo_(repo), prefetch_(prefetch), options_(options), progress_(progress), warn_(warn), root_fd_(root_fd),
        zeros_(1u << 20, 0) {}

  ~PathRestorer() {
    for (auto& f : pending_) ::close(f.fd);
  }

  // Writes the content of every file still pending.
  Status Finish() {
    while (!pending_.empty()) CONTINUUM_RETURN_IF_ERROR(CompleteOldest());
    return Status::Ok();
  }

  Status RestoreDir(const repo::BlobId& tree_id, int dir_fd, const std::string& rel, bool selected, int depth,
                    bool* restored_any) {
    if (depth > kMaxDepth) return DataLoss("point tree deeper than " + std::to_string(kMaxDepth) + " at " + rel);
    const std::string what = "directory '" + (rel.empty() ? std::string("/") : rel) + "' of the point";
    CONTINUUM_ASSIGN_OR_RETURN(repo::Tree tree, repo_.GetTree(tree_id));
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, DecodeDirListing(tree.payload, tree.refs.size(), what));
    for (const auto& e : entries) {
      const std::string child = rel.empty() ? e.name : rel + "/" + e.name;
      const bool sel = selected || Included(child);
      if (e.type == EntryType::kDir) {
        bool any = false;
        CONTINUUM_RETURN_IF_ERROR(RestoreSubdir(tree.refs[e.subtree], dir_fd, e, child, sel, depth, &any));
        *restored_any |= any || sel;
        continue;
      }
      if (!sel) continue;
      CONTINUUM_RETURN_IF_ERROR(RestoreLeaf(tree, dir_fd, e, child));
      *restored_any = true;
    }
    return Status::Ok();
  }

  const RestoreReport& report() const { return report_; }

 private:
  bool Included(const std::string& rel) const {
    if (options_.includes.empty()) return true;
    for (const auto& pat : options_.includes) {
      if (fnmatch(pat.c_str(), rel.c_str(), FNM_PATHNAME) == 0) return true;
    }
    return false;
  }

  std::string Path(const std::string& rel) const { return options_.target + "/" + rel; }

  void Warn(const Status& st) {
    if (warn_) warn_(st);
  }

  void Report() {
    if (progress_) progress_({.bytes_done = report_.bytes_written, .files_done = report_.files});
  }

  // Removes a non-directory in the way; a directory in the way is an error.
  Status ClearName(int dir_fd, const DirEntry& e, const std::string& rel) {
    struct stat st;
    if (::fstatat(dir_fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return Status::Ok();
      return PosixError("stat " + Path(rel), errno);
    }
    if (S_ISDIR(st.st_mode)) return Status(StatusCode::kIoError, Path(rel) + " exists and is a directory");
    if (::unlinkat(dir_fd, e.name.c_str(), 0) != 0) return PosixError("remove " + Path(rel), errno);
    return Status::Ok();
  }

  Status RestoreSubdir(const repo::BlobId& tree_id, int dir_fd, const DirEntry& e, const std::string& rel, bool sel,
                       int depth, bool* restored_any) {
    bool created = false;
    if (::mkdirat(dir_fd, e.name.c_str(), 0700) == 0) {
      created = true;
    } else if (errno == EEXIST) {
      struct stat st;
      if (::fstatat(dir_fd, e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return PosixError("stat " + Path(rel), errno);
      if (!S_ISDIR(st.st_mode)) {  // a file or symlink in the way is replaced, never followed
        CONTINUUM_RETURN_IF_ERROR(ClearName(dir_fd, e, rel));
        if (::mkdirat(dir_fd, e.name.c_str(), 0700) != 0) return PosixError("mkdir " + Path(rel), errno);
        created = true;
      }
    } else {
      return PosixError("mkdir " + Path(rel), errno);
    }
    int fd = ::openat(dir_fd, e.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return PosixError("open " + Path(rel), errno);
    Fd guard(fd);
    CONTINUUM_RETURN_IF_ERROR(RestoreDir(tree_id, fd, rel, sel, depth + 1, restored_any));
    if (!sel && !*restored_any) {
      // Only walked to look for included entries: leave no trace.
      if (created && ::unlinkat(dir_fd, e.name.c_str(), AT_REMOVEDIR) != 0) return PosixError("rmdir " + Path(rel), errno);
      return Status::Ok();
    }
    ++report_.files;
    // After the children: creating them changed the directory's mtime.
    return ApplyMeta(fd, e, rel);
  }

  Status ApplyMeta(int fd, const DirEntry& e, const std::string& rel) {
    if (::fchown(fd, e.uid, e.gid) != 0 && !(errno == EPERM && ::geteuid() != 0)) {
      return PosixError("chown " + Path(rel), errno);
    }
    // After chown, which clears set-id bits.
    if (::fchmod(fd, e.mode) != 0) return PosixError("chmod " + Path(rel), errno);
    for (const auto& [name, value] : e.xattrs) {
      if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), 0) != 0) {
        Warn(PosixError("set xattr " + name + " on " + Path(rel), errno));
      }
    }
    struct timespec ts[2] = {Ts(e.mtime_ns), Ts(e.mtime_ns)};
    if (::futimens(fd, ts) != 0) return PosixError("set times of " + Path(rel), errno);
    return Status::Ok();
  }

  Status ApplyMetaAt(int dir_fd, const DirEntry& e, const std::string& rel, bool chmod) {
    if (::fchownat(dir_fd, e.name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        !(errno == EPERM && ::geteuid() != 0)) {
      return PosixError("chown " + Path(rel), errno);
    }
    // The node was just created by us and is not a symlink, so following is moot.
    if (chmod && ::fchmodat(dir_fd, e.name.c_str(), e.mode, 0) != 0) return PosixError("chmod " + Path(rel), errno);
    struct timespec ts[2] = {Ts(e.mtime_ns), Ts(e.mtime_ns)};
    if (::utimensat(dir_fd, e.name.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return PosixError("set times of " + Path(rel), errno);
    }
    return Status::Ok();
  }

  Status RestoreLeaf(const repo::Tree& tree, int dir_fd, const DirEntry& e, const std::string& rel) {
    CONTINUUM_RETURN_IF_ERROR(ClearName(dir_fd, e, rel));
    ++report_.files;
    switch (e.type) {
      case EntryType::kFile:
        return RestoreFile(tree, dir_fd, e, rel);
      case EntryType::kSymlink:
        // The target is stored as is; it is never followed by this restore.
        if (::symlinkat(e.link_target.c_str(), dir_fd, e.name.c_str()) != 0) {
          return PosixError("symlink " + Path(rel), errno);
        }
        return ApplyMetaAt(dir_fd, e, rel, false);
      case EntryType::kCharDev:
      case EntryType::kBlockDev:
      case EntryType::kFifo: {
        mode_t type = e.type == EntryType::kFifo ? S_IFIFO : e.type == EntryType::kCharDev ? S_IFCHR : S_IFBLK;
        if (::mknodat(dir_fd, e.name.c_str(), type | 0600, static_cast<dev_t>(e.rdev)) != 0) {
          Warn(PosixError("mknod " + Path(rel), errno));
          return Status::Ok();
        }
        return ApplyMetaAt(dir_fd, e, rel, true);
      }
      case EntryType::kSocket:
        Warn(Status(StatusCode::kFailedPrecondition, "socket " + Path(rel) + " not restored (sockets are metadata only)"));
        return Status::Ok();
      case EntryType::kDir:
        break;
    }
    return Internal("unexpected entry type");
  }

  // A file whose name exists and whose blobs are queued in the prefetcher;
  // content, size and metadata follow in CompleteOldest, in creation order.
  struct PendingFile {
    int fd = -1;  // owned
    DirEntry entry;
    std::string rel;
  };

  Status RestoreFile(const repo::Tree& tree, int dir_fd, const DirEntry& e, const std::string& rel) {
    if (e.hardlink_group) {
      auto it = links_.find(e.hardlink_group);
      if (it != links_.end()) {
        // Only to a file this restore created (links_ holds nothing else).
        if (::linkat(root_fd_, it->second.c_str(), dir_fd, e.name.c_str(), 0) != 0) {
          return PosixError("link " + Path(rel) + " to " + Path(it->second), errno);
        }
        return Status::Ok();
      }
    }
    int flags = (options_.verify ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(dir_fd, e.name.c_str(), flags, 0600);
    if (fd < 0) return PosixError("create " + Path(rel), errno);
    // The name exists from here on: later hard links to it can be made before
    // its content is written.
    if (e.hardlink_group) links_[e.hardlink_group] = rel;
    pending_.push_back({.fd = fd, .entry = e, .rel = rel});
    pending_bytes_ += e.size;
    for (int64_t c : e.chunks) {
      if (c >= 0) CONTINUUM_RETURN_IF_ERROR(prefetch_.Enqueue(tree.refs[static_cast<size_t>(c)]));
    }
    // Directory metadata may be applied before this file's content is written:
    // writing content does not change the directory.
    while (pending_.size() > kMaxPendingFiles || pending_bytes_ > kMaxPendingBytes) {
      CONTINUUM_RETURN_IF_ERROR(CompleteOldest());
    }
    return Status::Ok();
  }

  Status CompleteOldest() {
    PendingFile f = std::move(pending_.front());
    pending_.pop_front();
    Fd guard(f.fd);
    pending_bytes_ -= f.entry.size;
    const DirEntry& e = f.entry;
    const std::string& rel = f.rel;
    Sha256 sha;
    uint64_t offset = 0;
    bool bad = false;  // the content does not fit the size: a damaged or crafted point
    for (int64_t c : e.chunks) {
      if (c < 0) {
        uint64_t hole = static_cast<uint64_t>(-c);
        if (hole > e.size || offset > e.size - hole) {
          bad = true;
          continue;  // keep taking this file's blobs: the queue must stay in step
        }
        if (options_.verify) HashZeros(&sha, hole);
        offset += hole;
        continue;
      }
      CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> data, prefetch_.Next());
      if (bad || data.size() > e.size || offset > e.size - data.size()) {
        bad = true;
        continue;
      }
      // The file was created empty (O_EXCL): zero blocks inside data chunks stay holes.
      CONTINUUM_RETURN_IF_ERROR(WriteSparse(f.fd, offset, data, Path(rel)));
      if (options_.verify) sha.Update(data.data(), data.size());
      offset += data.size();
      report_.bytes_written += data.size();
      Report();
    }
    if (bad || offset != e.size) {
      return DataLoss("file '" + rel + "' of the point: content does not add up to its size " + std::to_string(e.size));
    }
    if (::ftruncate(f.fd, static_cast<off_t>(e.size)) != 0) return PosixError("truncate " + Path(rel), errno);
    CONTINUUM_RETURN_IF_ERROR(ApplyMeta(f.fd, e, rel));
    if (!options_.verify) return Status::Ok();
    uint8_t want[kDigestLen];
    sha.Final(want);
    return VerifyFile(f.fd, e, rel, want);
  }

  void HashZeros(Sha256* sha, uint64_t n) {
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, zeros_.size()));
      sha->Update(zeros_.data(), k);
      n -= k;
    }
  }

  Status VerifyFile(int fd, const DirEntry& e, const std::string& rel, const uint8_t* want) {
    if (::fsync(fd) != 0) return PosixError("fsync " + Path(rel), errno);
    // Drop the page cache so the comparison reads the medium.
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    struct stat st;
    if (::fstat(fd, &st) != 0) return PosixError("stat " + Path(rel), errno);
    if (static_cast<uint64_t>(st.st_size) != e.size || (st.st_mode & 07777) != e.mode ||
        st.st_mtim.tv_sec != Ts(e.mtime_ns).tv_sec) {
      return DataLoss("verify " + Path(rel) + ": size, mode or mtime differ from the point");
    }
    Sha256 sha;
    std::vector<uint8_t> buf(1u << 20);
    for (uint64_t off = 0; off < e.size;) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return PosixError("verify read " + Path(rel), n < 0 ? errno : EIO);
      sha.Update(buf.data(), static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
    }
    uint8_t got[kDigestLen];
    sha.Final(got);
    if (std::memcmp(got, want, sizeof(got)) != 0) return DataLoss("verify " + Path(rel) + ": content differs from the point");
    report_.bytes_verified += e.size;
    return Status::Ok();
  }

  repo::Repository& repo_;
  repo::BlobPrefetcher& prefetch_;
  const RestoreOptions& options_;
  const ProgressFn& progress_;
  const std::function<void(const Status&)>& warn_;
  int root_fd_;
  std::vector<uint8_t> zeros_;
  RestoreReport report_;
  std::unordered_map<uint64_t, std::string> links_;  // hard-link group -> path (relative to root) restored first
  std::deque<PendingFile> pending_;
  uint64_t pending_bytes_ = 0;
};

}  // namespace

Result<RestoreReport> RestorePaths(repo::Repository& repo, const repo::BlobId& root, const RestoreOptions& options,
                                   const ProgressFn& progress, const std::function<void(const Status&)>& warn) {
  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(options.target, 0700));
  int fd = ::open(options.target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open " + options.target, errno);
  Fd guard(fd);
  CONTINUUM_ASSIGN_OR_RETURN(auto prefetch, repo::BlobPrefetcher::Create(repo));
  PathRestorer restorer(repo, *prefetch, options, progress, warn, fd);
  bool any = false;
  CONTINUUM_RETURN_IF_ERROR(restorer.RestoreDir(root, fd, "", false, 0, &any));
  CONTINUUM_RETURN_IF_ERROR(restorer.Finish());
  if (!options.includes.empty() && !any) return NotFound("no entry of the point matches the --include patterns");
  if (::fsync(fd) != 0) return PosixError("fsync " + options.target, errno);
  return restorer.report();
}

}  // namespace continuum::backup
