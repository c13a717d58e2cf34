#include "path_restore.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <unordered_map>

#include "continuum/common/time_util.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"
#include "continuum/io/unique_fd.h"
#include "continuum/repo/blob_prefetcher.h"
#include "continuum/repo/chunker.h"
#include "dir_listing.h"
#include "point_util.h"
#include "restore_progress.h"
#include "sparse_write.h"

namespace continuum::backup {
namespace {

// Deeper trees only come from a crafted repository (PATH_MAX is 4096).
constexpr int kMaxDepth = 2048;

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
// Files from this size on are written with direct I/O (see UseDirect).
constexpr uint64_t kDirectMinSize = 64u << 10;

struct timespec Ts(int64_t ns) {
  return {.tv_sec = static_cast<time_t>(ns / 1000000000), .tv_nsec = static_cast<long>(ns % 1000000000)};
}

// Invariant: every descriptor this class holds is a directory it created or
// found as a real directory (opened O_NOFOLLOW) inside the target, and names
// passed to *at() calls passed IsSafeEntryName, so no call resolves outside.
//
// Resuming: every non-directory entry the restore visits gets a sequence
// number in visiting order (the order is fixed by the point and the --include
// patterns). Entries complete out of order only behind pending files, which
// complete in creation order, so "every entry before the oldest pending file
// is complete" is the watermark a checkpoint records after syncfs. A resumed
// run skips entries below the recorded watermark (verifying them with
// --verify) and redoes the rest, replacing whatever a half-done entry left.
class PathRestorer {
 public:
  PathRestorer(repo::Repository& repo, repo::BlobPrefetcher& prefetch, const RestoreOptions& options,
               const ProgressFn& progress, const std::function<void(const Status&)>& warn, int root_fd,
               BackgroundCheckpointer* checkpointer, RestoreProgress record)
      : repo_(repo), prefetch_(prefetch), options_(options), progress_(progress), warn_(warn), root_fd_(root_fd),
        zeros_(1u << 20, 0), checkpointer_(checkpointer), record_(record), resume_(record.done),
        last_checkpoint_ns_(MonoNowNs()) {
    report_.resumed = resume_ > 0;
    report_.bytes_resumed = record.bytes_done;
    completed_bytes_ = record.bytes_done;
  }

  ~PathRestorer() {
    // No worker may write to a descriptor after it is closed (or reused).
    prefetch_.Abandon();
    for (auto& f : pending_) {
      ::close(f->fd);
      if (f->direct_fd >= 0) ::close(f->direct_fd);
    }
  }

  // Writes the content of every file still pending.
  Status Finish() {
    while (!pending_.empty()) CONTINUUM_RETURN_IF_ERROR(CompleteOldest());
    return Status::Ok();
  }

  // `fresh`: this run created the directory, so it held nothing before, and
  // what is created in it belongs to our euid:egid (its group is egid).
  Status RestoreDir(const repo::BlobId& tree_id, int dir_fd, const std::string& rel, bool selected, int depth,
                    bool* restored_any, bool fresh = false) {
    if (depth > kMaxDepth) return DataLoss("point tree deeper than " + std::to_string(kMaxDepth) + " at " + rel);
    const std::string what = "directory '" + (rel.empty() ? std::string("/") : rel) + "' of the point";
    CONTINUUM_ASSIGN_OR_RETURN(repo::Tree tree, repo_.GetTree(tree_id));
    CONTINUUM_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, DecodeDirListing(tree.payload, tree.refs.size(), what));
    for (const auto& e : entries) {
      if (rel.empty() && IsProgressFileName(e.name)) {
        // Restoring it would replace this restore's own progress file.
        Warn(Status(StatusCode::kFailedPrecondition,
                    "'" + e.name + "' not restored: the name of the restore progress file"));
        continue;
      }
      const std::string child = rel.empty() ? e.name : rel + "/" + e.name;
      const bool sel = selected || Included(child);
      if (e.type == EntryType::kDir) {
        bool any = false;
        CONTINUUM_RETURN_IF_ERROR(RestoreSubdir(tree.refs[e.subtree], dir_fd, e, child, sel, depth, &any, fresh));
        *restored_any |= any || sel;
        continue;
      }
      if (!sel) continue;
      CONTINUUM_RETURN_IF_ERROR(RestoreLeaf(tree, dir_fd, e, child, fresh));
      *restored_any = true;
    }
    return Status::Ok();
  }

  const RestoreReport& report() const { return report_; }

  // Records progress when enough was written or enough time passed since the
  // last record: syncfs first (in the background), so what the record calls
  // complete is durable.
  Status MaybeCheckpoint() {
    if (!checkpointer_) return Status::Ok();
    const bool due = unsynced_bytes_ >= options_.checkpoint_bytes ||
                     MonoNowNs() - last_checkpoint_ns_ >= options_.checkpoint_interval_ns;
    if (!due) return Status::Ok();
    last_checkpoint_ns_ = MonoNowNs();
    const uint64_t done = std::max(resume_, pending_.empty() ? next_seq_ : pending_.front()->seq);
    if (done <= record_.done) return Status::Ok();
    record_.done = done;
    record_.bytes_done = completed_bytes_;
    unsynced_bytes_ = 0;
    return checkpointer_->Offer(record_);
  }

 private:
  static bool IsProgressFileName(const std::string& name) {
    return name == RestoreProgressFile::kTreeName || name == std::string(RestoreProgressFile::kTreeName) + ".tmp";
  }

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
                       int depth, bool* restored_any, bool parent_fresh) {
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
    io::UniqueFd guard(fd);
    bool fresh = false;
    if (created) {
      // Its group decides the group of what is created in it (setgid parent, grpid mounts).
      struct stat st;
      if (::fstat(fd, &st) != 0) return PosixError("stat " + Path(rel), errno);
      fresh = st.st_gid == egid_;
    }
    CONTINUUM_RETURN_IF_ERROR(RestoreDir(tree_id, fd, rel, sel, depth + 1, restored_any, fresh));
    if (!sel && !*restored_any) {
      // Only walked to look for included entries: leave no trace.
      if (created && ::unlinkat(dir_fd, e.name.c_str(), AT_REMOVEDIR) != 0) return PosixError("rmdir " + Path(rel), errno);
      return Status::Ok();
    }
    ++report_.files;
    // After the children: creating them changed the directory's mtime.
    return ApplyMeta(fd, e, rel, created && parent_fresh);
  }

  // `ours`: the node was created by this run in a fresh directory, so it is
  // owned by euid:egid already and a chown to those is skipped.
  bool NeedsChown(const DirEntry& e, bool ours) const { return !ours || e.uid != euid_ || e.gid != egid_; }

  Status ApplyMeta(int fd, const DirEntry& e, const std::string& rel, bool ours) {
    if (NeedsChown(e, ours) && ::fchown(fd, e.uid, e.gid) != 0 && !(errno == EPERM && euid_ != 0)) {
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

  Status ApplyMetaAt(int dir_fd, const DirEntry& e, const std::string& rel, bool chmod, bool ours) {
    if (NeedsChown(e, ours) && ::fchownat(dir_fd, e.name.c_str(), e.uid, e.gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        !(errno == EPERM && euid_ != 0)) {
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

  Status RestoreLeaf(const repo::Tree& tree, int dir_fd, const DirEntry& e, const std::string& rel, bool fresh) {
    const uint64_t seq = next_seq_++;
    if (seq < resume_) return SkipLeaf(tree, dir_fd, e, rel, seq);
    if (!fresh) CONTINUUM_RETURN_IF_ERROR(ClearName(dir_fd, e, rel));
    ++report_.files;
    if (e.type == EntryType::kFile) return RestoreFile(tree, dir_fd, e, rel, seq, fresh);
    CONTINUUM_RETURN_IF_ERROR(RestoreSpecial(dir_fd, e, rel, fresh));
    return MaybeCheckpoint();
  }

  // An entry the interrupted run completed (and made durable). With --verify a
  // file's content is fetched and compared with what is there.
  Status SkipLeaf(const repo::Tree& tree, int dir_fd, const DirEntry& e, const std::string& rel, uint64_t seq) {
    ++report_.files;
    if (e.type != EntryType::kFile) return Status::Ok();
    if (e.hardlink_group) {
      // The first of its group: later links (maybe not yet restored) go to it.
      if (links_.count(e.hardlink_group)) return Status::Ok();
      links_[e.hardlink_group] = rel;
    }
    if (!options_.verify) return Status::Ok();
    int fd = ::openat(dir_fd, e.name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return PosixError("verify " + Path(rel) + " (restored before the interruption)", errno);
    return AddPending(tree, fd, e, rel, seq, /*verify_only=*/true, /*ours=*/false);
  }

  Status RestoreSpecial(int dir_fd, const DirEntry& e, const std::string& rel, bool fresh) {
    switch (e.type) {
      case EntryType::kFile:
        break;
      case EntryType::kSymlink:
        // The target is stored as is; it is never followed by this restore.
        if (::symlinkat(e.link_target.c_str(), dir_fd, e.name.c_str()) != 0) {
          return PosixError("symlink " + Path(rel), errno);
        }
        return ApplyMetaAt(dir_fd, e, rel, false, fresh);
      case EntryType::kCharDev:
      case EntryType::kBlockDev:
      case EntryType::kFifo: {
        mode_t type = e.type == EntryType::kFifo ? S_IFIFO : e.type == EntryType::kCharDev ? S_IFCHR : S_IFBLK;
        if (::mknodat(dir_fd, e.name.c_str(), type | 0600, static_cast<dev_t>(e.rdev)) != 0) {
          Warn(PosixError("mknod " + Path(rel), errno));
          return Status::Ok();
        }
        return ApplyMetaAt(dir_fd, e, rel, true, fresh);
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
  // Shared with the prefetcher's workers when they write it (`sunk`).
  struct PendingFile {
    int fd = -1;  // owned
    int direct_fd = -1;  // owned: the same file opened O_DIRECT, or -1
    DirEntry entry;
    std::string rel;
    uint64_t seq = 0;
    bool verify_only = false;  // restored by an interrupted run: compare, do not write
    bool ours = false;         // created by this run in a fresh directory (see ApplyMeta)
    bool sunk = false;         // the prefetcher's workers write the content
    bool meta_by_worker = false;  // ... and the last of them sets size and metadata
    size_t sunk_blobs = 0;        // blobs queued with a sink
    std::atomic<size_t> writes_left{0};  // sinks of this file not yet done
  };

  Status AddPending(const repo::Tree& tree, int fd, const DirEntry& entry, const std::string& rel, uint64_t seq,
                    bool verify_only, bool ours) {
    pending_bytes_ += entry.size;
    auto shared = std::make_shared<PendingFile>();
    PendingFile& p = *shared;
    p.fd = fd;
    p.entry = entry;
    p.rel = rel;
    p.seq = seq;
    p.verify_only = verify_only;
    p.ours = ours;
    const DirEntry& e = p.entry;
    // Without --verify the workers write the content themselves (WriteSparse at
    // the blob's offset, known from the index before the read), so the copies
    // into the page cache run in parallel with creating the next files; the
    // worker that finishes a file's last write also sets its size, mode and
    // times (a file with xattrs gets them here: warnings stay on this thread).
    // The descriptor stays open until CompleteOldest took every blob.
    p.sunk = !options_.verify && !p.verify_only;
    for (int64_t c : e.chunks) p.sunk_blobs += p.sunk && c >= 0;
    p.meta_by_worker = p.sunk && p.sunk_blobs > 0 && e.xattrs.empty();
    p.writes_left.store(p.sunk_blobs);
    if (p.sunk && p.sunk_blobs > 0 && e.size >= kDirectMinSize && direct_ok_) UseDirect(p);
    pending_.push_back(shared);
    uint64_t offset = 0;
    for (int64_t c : e.chunks) {
      if (c < 0) {
        offset += static_cast<uint64_t>(-c);
        continue;
      }
      const repo::BlobId& id = tree.refs[static_cast<size_t>(c)];
      if (!p.sunk) {
        CONTINUUM_RETURN_IF_ERROR(prefetch_.Enqueue(id));
        continue;
      }
      // Checked before the blob is queued: a sink never writes past the size.
      CONTINUUM_ASSIGN_OR_RETURN(
          uint32_t len, prefetch_.Enqueue(id, [this, shared, offset](std::span<const uint8_t> data) -> Status {
            PendingFile& f = *shared;
            CONTINUUM_RETURN_IF_ERROR(WriteSparseDirect(f.fd, f.direct_fd, offset, data, Path(f.rel)));
            // The last write of the file is done when the count reaches zero.
            if (f.writes_left.fetch_sub(1, std::memory_order_acq_rel) != 1 || !f.meta_by_worker) {
              return Status::Ok();
            }
            return SetSizeAndMeta(f);
          }));
      offset += len;
      if (offset > e.size) break;
    }
    if (p.sunk && offset != e.size) {
      return DataLoss("file '" + p.rel + "' of the point: content does not add up to its size " +
                      std::to_string(e.size));
    }
    // Directory metadata may be applied before this file's content is written:
    // writing content does not change the directory.
    while (pending_.size() > kMaxPendingFiles || pending_bytes_ > kMaxPendingBytes) {
      CONTINUUM_RETURN_IF_ERROR(CompleteOldest());
    }
    return Status::Ok();
  }

  Status RestoreFile(const repo::Tree& tree, int dir_fd, const DirEntry& e, const std::string& rel, uint64_t seq,
                     bool fresh) {
    if (e.hardlink_group) {
      auto it = links_.find(e.hardlink_group);
      if (it != links_.end()) {
        // Only to a file this restore created (links_ holds nothing else).
        if (::linkat(root_fd_, it->second.c_str(), dir_fd, e.name.c_str(), 0) != 0) {
          return PosixError("link " + Path(rel) + " to " + Path(it->second), errno);
        }
        return MaybeCheckpoint();
      }
    }
    int flags = (options_.verify ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = ::openat(dir_fd, e.name.c_str(), flags, 0600);
    if (fd < 0) return PosixError("create " + Path(rel), errno);
    // The name exists from here on: later hard links to it can be made before
    // its content is written.
    if (e.hardlink_group) links_[e.hardlink_group] = rel;
    return AddPending(tree, fd, e, rel, seq, /*verify_only=*/false, /*ours=*/fresh);
  }

  Status CompleteOldest() {
    std::shared_ptr<PendingFile> owned = std::move(pending_.front());
    pending_.pop_front();
    PendingFile& f = *owned;
    io::UniqueFd guard(f.fd);
    io::UniqueFd direct_guard(f.direct_fd);
    pending_bytes_ -= f.entry.size;
    const DirEntry& e = f.entry;
    const std::string& rel = f.rel;
    if (f.sunk) {
      // AddPending checked that the blobs add up to the size.
      for (size_t i = 0; i < f.sunk_blobs; ++i) CONTINUUM_RETURN_IF_ERROR(prefetch_.Next().status());
      report_.bytes_written += e.size;
      unsynced_bytes_ += e.size;
      Report();
      if (!f.meta_by_worker) CONTINUUM_RETURN_IF_ERROR(SetSizeAndMeta(f));
      completed_bytes_ += e.size;
      return MaybeCheckpoint();
    }
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
      if (options_.verify) sha.Update(data.data(), data.size());
      offset += data.size();
      if (f.verify_only) continue;
      // The file was created empty (O_EXCL): zero blocks inside data chunks stay holes.
      CONTINUUM_RETURN_IF_ERROR(WriteSparse(f.fd, offset - data.size(), data, Path(rel)));
      report_.bytes_written += data.size();
      unsynced_bytes_ += data.size();
      Report();
    }
    if (bad || offset != e.size) {
      return DataLoss("file '" + rel + "' of the point: content does not add up to its size " + std::to_string(e.size));
    }
    if (!f.verify_only) {
      CONTINUUM_RETURN_IF_ERROR(SetSizeAndMeta(f));
      completed_bytes_ += e.size;
    }
    if (options_.verify) {
      uint8_t want[kDigestLen];
      sha.Final(want);
      CONTINUUM_RETURN_IF_ERROR(VerifyFile(f.fd, e, rel, want));
    }
    return MaybeCheckpoint();
  }

  // Larger files are written past the page cache (WriteSparseDirect): copying
  // gigabytes into it was a fifth of a restore's CPU time, and writing them
  // back later the larger part of its sync. The file gets its size first, so
  // that no direct write extends it (ext4 serialises and journals those).
  // Best effort: without a direct descriptor the page cache takes everything.
  void UseDirect(PendingFile& p) {
    if (::ftruncate(p.fd, static_cast<off_t>(p.entry.size)) != 0) return;
    p.direct_fd = io::ReopenDirect(p.fd);
    if (p.direct_fd < 0 && errno == EINVAL) direct_ok_ = false;  // the filesystem has no O_DIRECT
  }

  // Size (a trailing hole) and metadata, after the last write: writes change
  // mtime. Runs on a prefetcher worker for files without xattrs (ApplyMeta
  // then touches no member but constants).
  Status SetSizeAndMeta(const PendingFile& f) {
    if (::ftruncate(f.fd, static_cast<off_t>(f.entry.size)) != 0) return PosixError("truncate " + Path(f.rel), errno);
    return ApplyMeta(f.fd, f.entry, f.rel, f.ours);
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
  const uid_t euid_ = ::geteuid();
  const gid_t egid_ = ::getegid();
  std::vector<uint8_t> zeros_;
  RestoreReport report_;
  std::unordered_map<uint64_t, std::string> links_;  // hard-link group -> path (relative to root) restored first
  std::deque<std::shared_ptr<PendingFile>> pending_;
  uint64_t pending_bytes_ = 0;
  bool direct_ok_ = true;  // false once the target refused O_DIRECT
  // Resuming and checkpoints (see the class comment).
  BackgroundCheckpointer* checkpointer_;  // null: no checkpoints
  RestoreProgress record_;                 // last offered to checkpointer_
  const uint64_t resume_;                      // entries below it were complete at the start
  uint64_t next_seq_ = 0;
  uint64_t completed_bytes_ = 0;  // file bytes of entries below the watermark (approximately: informational)
  uint64_t unsynced_bytes_ = 0;
  int64_t last_checkpoint_ns_;
};

}  // namespace

Result<RestoreReport> RestorePaths(repo::Repository& repo, const repo::ManifestId& point, const repo::BlobId& root,
                                   const RestoreOptions& options, const ProgressFn& progress,
                                   const std::function<void(const Status&)>& warn) {
  RestoreProgressFile pf(RestoreProgressFile::ForTree(options.target));
  RestoreProgress record{.point = point,
                         .type = PointType::kPath,
                         .options = RestoreOptionsDigest(PointType::kPath, options.includes, 0, 0)};
  CONTINUUM_ASSIGN_OR_RETURN(std::optional<RestoreProgress> prior, pf.Claim(record, options.restart));
  if (prior) record = *prior;
  DropUnusedProgress drop_unused(pf);

  CONTINUUM_RETURN_IF_ERROR(io::MakeDirs(options.target, 0700));
  int fd = ::open(options.target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open " + options.target, errno);
  io::UniqueFd guard(fd);
  // Claims the target before anything is written into it.
  CONTINUUM_RETURN_IF_ERROR(pf.Save(record));
  if (record.done > 0 && options.notice) {
    options.notice("resuming restore of " + point.Hex().substr(0, 12) + " at entry " + std::to_string(record.done) +
                   " (" + FormatSize(record.bytes_done) + " of files restored before the interruption, recorded in " +
                   pf.path() + ")");
  }
  CONTINUUM_ASSIGN_OR_RETURN(auto prefetch, repo::BlobPrefetcher::Create(repo));
  BackgroundCheckpointer checkpointer(pf, [&]() -> Status {
    if (::syncfs(fd) != 0) return PosixError("sync the filesystem of " + options.target, errno);
    return Status::Ok();
  });
  PathRestorer restorer(repo, *prefetch, options, progress, warn, fd, &checkpointer, record);
  bool any = false;
  CONTINUUM_RETURN_IF_ERROR(restorer.RestoreDir(root, fd, "", false, 0, &any));
  CONTINUUM_RETURN_IF_ERROR(restorer.Finish());
  CONTINUUM_RETURN_IF_ERROR(checkpointer.Drain());
  if (!options.includes.empty() && !any) {
    pf.Remove().IgnoreError();  // nothing was restored: nothing to resume
    return NotFound("no entry of the point matches the --include patterns");
  }
  // Everything restored is durable before the progress file goes: after it is
  // gone, a re-run starts over instead of resuming.
  if (::syncfs(fd) != 0) return PosixError("sync the filesystem of " + options.target, errno);
  if (::fsync(fd) != 0) return PosixError("fsync " + options.target, errno);
  CONTINUUM_RETURN_IF_ERROR(pf.Remove());
  RestoreReport report = restorer.report();
  report.progress_file = pf.path();
  return report;
}

}  // namespace continuum::backup
