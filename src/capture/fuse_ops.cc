#define FUSE_USE_VERSION 312

#include "capture/fuse_ops.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <vector>

#include "capture/fuse_file_table.h"
#include "continuum/io/aligned_buffer.h"
#include "continuum/common/log.h"

namespace continuum::capture {
namespace {

// Entries are not cached, so AddFile/RemoveFile show at once without
// invalidation notices; attributes are, since a file's size never changes.
constexpr double kEntryTimeout = 0.0;
constexpr double kAttrTimeout = 60.0;

struct OpenHandle {
  std::shared_ptr<const FuseFile> file;
};

FuseFileTable& Table(fuse_req_t req) { return *static_cast<FuseFileTable*>(fuse_req_userdata(req)); }
OpenHandle& Handle(fuse_file_info* fi) { return *reinterpret_cast<OpenHandle*>(fi->fh); }

struct stat RootStat() {
  struct stat st {};
  st.st_ino = FuseFileTable::kRootIno;
  st.st_mode = S_IFDIR | 0755;
  st.st_nlink = 2;
  return st;
}

struct stat FileStat(const FuseFile& f) {
  struct stat st {};
  st.st_ino = f.ino;
  st.st_mode = S_IFREG | (f.read_only ? 0400 : 0600);
  st.st_nlink = 1;
  st.st_size = static_cast<off_t>(f.size);
  st.st_blksize = f.block_size;
  st.st_blocks = static_cast<blkcnt_t>((f.size + 511) / 512);
  st.st_atime = st.st_mtime = st.st_ctime = f.created;
  return st;
}

void ReplyStatus(fuse_req_t req, const Status& st) { fuse_reply_err(req, ErrnoFromStatus(st)); }

void Init(void* userdata, fuse_conn_info* conn) {
  // Loop issues asynchronous direct I/O; let several requests be in flight.
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  conn->max_write = kFuseMaxWrite;
  conn->max_background = 128;
  conn->congestion_threshold = 96;
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != FuseFileTable::kRootIno) return (void)fuse_reply_err(req, ENOENT);
  auto file = Table(req).Lookup(name);
  if (!file) return (void)fuse_reply_err(req, ENOENT);
  fuse_entry_param e{};
  e.ino = file->ino;
  e.generation = 1;  // inode numbers are never reused
  e.attr = FileStat(*file);
  e.attr_timeout = kAttrTimeout;
  e.entry_timeout = kEntryTimeout;
  fuse_reply_entry(req, &e);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino == FuseFileTable::kRootIno) {
    struct stat st = RootStat();
    return (void)fuse_reply_attr(req, &st, kAttrTimeout);
  }
  auto file = Table(req).Get(ino);
  if (!file) return (void)fuse_reply_err(req, ENOENT);
  struct stat st = FileStat(*file);
  fuse_reply_attr(req, &st, kAttrTimeout);
}

// Exported files are fixed-size devices: sizes, modes and owners do not change.
// Time updates (touch) are accepted and ignored.
void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  auto file = Table(req).Get(ino);
  if (!file) return (void)fuse_reply_err(req, ino == FuseFileTable::kRootIno ? EPERM : ENOENT);
  if ((to_set & FUSE_SET_ATTR_SIZE) && static_cast<uint64_t>(attr->st_size) != file->size) {
    return (void)fuse_reply_err(req, EPERM);
  }
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    return (void)fuse_reply_err(req, EPERM);
  }
  struct stat st = FileStat(*file);
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino == FuseFileTable::kRootIno) return (void)fuse_reply_err(req, EISDIR);
  FuseFileTable& table = Table(req);
  auto file = table.Open(ino);
  if (!file) return (void)fuse_reply_err(req, ENOENT);
  // Root bypasses the 0400 mode, so read-only is enforced here.
  if (file->read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
    table.Release(ino);
    return (void)fuse_reply_err(req, EROFS);
  }
  auto* handle = new OpenHandle{file};
  fi->fh = reinterpret_cast<uint64_t>(handle);
  fi->direct_io = 1;  // no page cache: every write reaches the target
  fi->keep_cache = 0;
  fi->noflush = 1;    // close() has nothing to make durable; fsync does that
  // -ENOENT: the open was interrupted and no RELEASE will come for it.
  if (fuse_reply_open(req, fi) == -ENOENT) {
    table.Release(ino);
    delete handle;
  }
}

void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* handle = &Handle(fi);
  Table(req).Release(ino);
  delete handle;
  fuse_reply_err(req, 0);
}

void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  const FuseFile& file = *Handle(fi).file;
  const uint64_t offset = static_cast<uint64_t>(off);
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  if (offset >= file.size) return (void)fuse_reply_buf(req, nullptr, 0);
  const size_t n = static_cast<size_t>(std::min<uint64_t>(size, file.size - offset));
  // One buffer per worker thread: no allocation per request, and the reply
  // copies it into the kernel before the thread takes another request.
  // Aligned, so a target reading with direct I/O needs no bounce buffer.
  thread_local io::AlignedBuffer buffer;
  buffer.Resize(n);
  Status st = file.target->Read(offset, std::span<uint8_t>(buffer.data(), n));
  if (!st.ok()) {
    Logger("fuse")->warn("read {} at {}+{}: {}", file.name, offset, n, st.ToString());
    return ReplyStatus(req, st);
  }
  fuse_reply_buf(req, reinterpret_cast<const char*>(buffer.data()), n);
}

void Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  const FuseFile& file = *Handle(fi).file;
  const uint64_t offset = static_cast<uint64_t>(off);
  if (file.read_only) return (void)fuse_reply_err(req, EROFS);
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  // Like a block device: nothing past the end, a straddling write is short.
  if (offset >= file.size) return (void)fuse_reply_err(req, ENOSPC);
  const size_t n = static_cast<size_t>(std::min<uint64_t>(size, file.size - offset));
  // The kernel passes the file's O_SYNC/O_DSYNC and per-write RWF_DSYNC here.
  const bool fua = (fi->flags & O_DSYNC) != 0;
  Status st = file.target->Write(offset, {reinterpret_cast<const uint8_t*>(buf), n}, fua);
  if (!st.ok()) {
    Logger("fuse")->warn("write {} at {}+{}: {}", file.name, offset, n, st.ToString());
    return ReplyStatus(req, st);
  }
  fuse_reply_write(req, n);
}

// fsync and fdatasync both end in Flush: a loop device's flush (REQ_PREFLUSH,
// FUA emulation) arrives as vfs_fsync on its backing file, so this is where an
// application's fsync becomes durable.
void Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  const FuseFile& file = *Handle(fi).file;
  Status st = file.target->Flush();
  if (!st.ok()) Logger("fuse")->warn("flush {}: {}", file.name, st.ToString());
  ReplyStatus(req, st);
}

void Fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  const FuseFile& file = *Handle(fi).file;
  if (off < 0 || len <= 0) return (void)fuse_reply_err(req, EINVAL);
  const uint64_t offset = static_cast<uint64_t>(off);
  const uint64_t end = offset + static_cast<uint64_t>(len);
  const bool keep_size = mode & FALLOC_FL_KEEP_SIZE;
  const int op = mode & ~FALLOC_FL_KEEP_SIZE;
  if (op != 0 && op != FALLOC_FL_PUNCH_HOLE && op != FALLOC_FL_ZERO_RANGE) {
    return (void)fuse_reply_err(req, EOPNOTSUPP);
  }
  if (file.read_only) return (void)fuse_reply_err(req, EROFS);
  if (end < offset || (!keep_size && end > file.size)) return (void)fuse_reply_err(req, EFBIG);
  const uint64_t clamped_end = std::min(end, file.size);
  if (op == 0 || offset >= clamped_end) return (void)fuse_reply_err(req, 0);  // space is always there
  const uint64_t length = clamped_end - offset;
  Status st = op == FALLOC_FL_PUNCH_HOLE ? file.target->Trim(offset, length)
                                         : file.target->WriteZeroes(offset, length, false);
  if (!st.ok()) Logger("fuse")->warn("fallocate {} mode {:#x} at {}+{}: {}", file.name, mode, offset, length, st.ToString());
  ReplyStatus(req, st);
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  if (ino != FuseFileTable::kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
  struct Item {
    std::string name;
    struct stat st;
  };
  std::vector<Item> items;
  items.push_back({".", RootStat()});
  items.push_back({"..", RootStat()});
  for (const auto& f : Table(req).List()) items.push_back({f->name, FileStat(*f)});
  std::vector<char> buf(size);
  size_t used = 0;
  // Offsets are indexes into the listing; the kernel resumes at `off`.
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < items.size(); ++i) {
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, items[i].name.c_str(),
                                    &items[i].st, static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  uint64_t bytes = 0;
  auto files = Table(req).List();
  for (const auto& f : files) bytes += f->size;
  struct statvfs s {};
  s.f_bsize = 4096;
  s.f_frsize = 4096;
  s.f_blocks = bytes / 4096;
  s.f_files = files.size() + 1;
  s.f_namemax = 255;
  fuse_reply_statfs(req, &s);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = Init;
  ops.lookup = Lookup;
  ops.getattr = GetAttr;
  ops.setattr = SetAttr;
  ops.open = Open;
  ops.release = Release;
  ops.read = Read;
  ops.write = Write;
  ops.fsync = Fsync;
  ops.fallocate = Fallocate;
  ops.readdir = ReadDir;
  ops.statfs = StatFs;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& FuseLowLevelOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

int ErrnoFromStatus(const Status& status) {
  if (status.ok()) return 0;
  if (status.sys_errno() > 0) return status.sys_errno();
  switch (status.code()) {
    case StatusCode::kResourceExhausted: return ENOSPC;
    case StatusCode::kInvalidArgument: return EINVAL;
    default: return EIO;
  }
}

}  // namespace continuum::capture
