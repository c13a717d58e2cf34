#define FUSE_USE_VERSION 312

#include "backup/mount_path_fuse.h"

#include <fuse_lowlevel.h>
#include <signal.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "continuum/common/log.h"

namespace continuum::backup {
namespace {

// The point never changes: let the kernel cache names and attributes long.
constexpr double kCacheSeconds = 3600.0;
constexpr size_t kMaxRead = 1u << 20;

MountPathTree& Tree(fuse_req_t req) { return *static_cast<MountPathTree*>(fuse_req_userdata(req)); }

int Errno(const Status& st) {
  if (st.sys_errno() > 0) return st.sys_errno();
  return st.code() == StatusCode::kNotFound ? ENOENT : EIO;
}

void ReplyError(fuse_req_t req, const Status& st) {
  if (st.code() != StatusCode::kNotFound) Logger("mount")->warn("{}", st.ToString());
  fuse_reply_err(req, Errno(st));
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto ino = Tree(req).Lookup(parent, name);
  if (!ino.ok()) return ReplyError(req, ino.status());
  auto st = Tree(req).Attr(*ino);
  if (!st.ok()) return ReplyError(req, st.status());
  fuse_entry_param e{};
  e.ino = *ino;
  e.attr = *st;
  e.attr_timeout = kCacheSeconds;
  e.entry_timeout = kCacheSeconds;
  fuse_reply_entry(req, &e);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto st = Tree(req).Attr(ino);
  if (!st.ok()) return ReplyError(req, st.status());
  fuse_reply_attr(req, &*st, kCacheSeconds);
}

void ReadLink(fuse_req_t req, fuse_ino_t ino) {
  auto target = Tree(req).ReadLink(ino);
  if (!target.ok()) return ReplyError(req, target.status());
  fuse_reply_readlink(req, target->c_str());
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return (void)fuse_reply_err(req, EROFS);
  fi->keep_cache = 1;  // contents never change
  fuse_reply_open(req, fi);
}

void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  std::vector<uint8_t> buf(std::min(size, kMaxRead));
  auto n = Tree(req).Read(ino, static_cast<uint64_t>(off), buf);
  if (!n.ok()) return ReplyError(req, n.status());
  fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), *n);
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  auto entries = Tree(req).List(ino);
  if (!entries.ok()) return ReplyError(req, entries.status());
  // Offsets: 1 = ".", 2 = "..", 3 + i = entries[i].
  std::vector<char> buf(size);
  size_t used = 0;
  const size_t total = entries->size() + 2;
  for (size_t i = static_cast<size_t>(off); i < total; ++i) {
    struct stat st {};
    std::string name;
    if (i == 0) {
      name = ".";
      st.st_ino = ino;
      st.st_mode = S_IFDIR;
    } else if (i == 1) {
      name = "..";
      st.st_mode = S_IFDIR;
    } else {
      const auto& [child_name, child_ino] = (*entries)[i - 2];
      auto attr = Tree(req).Attr(child_ino);
      if (!attr.ok()) return ReplyError(req, attr.status());
      name = child_name;
      st.st_ino = child_ino;
      st.st_mode = attr->st_mode;
    }
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st, static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto xattrs = Tree(req).Xattrs(ino);
  if (!xattrs.ok()) return ReplyError(req, xattrs.status());
  std::string names;
  for (const auto& [name, value] : *xattrs) names.append(name).push_back('\0');
  if (size == 0) return (void)fuse_reply_xattr(req, names.size());
  if (names.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, names.data(), names.size());
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto xattrs = Tree(req).Xattrs(ino);
  if (!xattrs.ok()) return ReplyError(req, xattrs.status());
  auto it = xattrs->find(name);
  if (it == xattrs->end()) return (void)fuse_reply_err(req, ENODATA);
  if (size == 0) return (void)fuse_reply_xattr(req, it->second.size());
  if (it->second.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, reinterpret_cast<const char*>(it->second.data()), it->second.size());
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  struct statvfs st {};
  st.f_bsize = st.f_frsize = 4096;
  st.f_namemax = 255;
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

const fuse_lowlevel_ops& Ops() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.lookup = Lookup;
    o.getattr = GetAttr;
    o.readlink = ReadLink;
    o.open = Open;
    o.read = Read;
    o.readdir = ReadDir;
    o.listxattr = ListXattr;
    o.getxattr = GetXattr;
    o.statfs = StatFs;
    return o;
  }();
  return ops;
}

}  // namespace

Result<std::unique_ptr<MountPathFuse>> MountPathFuse::Start(const std::string& mountpoint,
                                                            std::shared_ptr<MountPathTree> tree) {
  auto fs = std::unique_ptr<MountPathFuse>(new MountPathFuse(mountpoint, std::move(tree)));
  const char* argv[] = {"continuum", "-o", "ro,default_permissions,allow_other,fsname=continuum,subtype=continuum"};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  fs->session_ = fuse_session_new(&args, &Ops(), sizeof(fuse_lowlevel_ops), fs->tree_.get());
  fuse_opt_free_args(&args);
  if (fs->session_ == nullptr) return Internal("create fuse session for " + mountpoint);
  if (fuse_session_mount(fs->session_, mountpoint.c_str()) != 0) {
    fuse_session_destroy(fs->session_);
    fs->session_ = nullptr;
    return Status(StatusCode::kIoError, "mount fuse at " + mountpoint + " failed (is /dev/fuse available?)");
  }
  fuse_session* se = fs->session_;
  fs->loop_ = std::thread([se] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals belong to the main thread
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, 16);
    fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
  });
  return fs;
}

MountPathFuse::~MountPathFuse() {
  Status st = Stop();
  if (!st.ok()) Logger("mount")->warn("{}", st.ToString());
}

Status MountPathFuse::Stop() {
  if (session_ == nullptr) return Status::Ok();
  Status result = Status::Ok();
  // Unmounting ends the connection, so the workers' reads of /dev/fuse fail
  // and the loop returns. EINVAL: already unmounted (by view close).
  if (::umount2(mountpoint_.c_str(), 0) != 0 && errno != EINVAL) {
    if (errno == EBUSY) {
      Logger("mount")->warn("{} is busy; unmounting it lazily", mountpoint_);
      ::umount2(mountpoint_.c_str(), MNT_FORCE);  // aborts the FUSE connection
      if (::umount2(mountpoint_.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
        result = PosixError("unmount " + mountpoint_, errno);
      }
    } else {
      result = PosixError("unmount " + mountpoint_, errno);
    }
  }
  fuse_session_exit(session_);
  if (loop_.joinable()) loop_.join();
  fuse_session_unmount(session_);
  fuse_session_destroy(session_);
  session_ = nullptr;
  return result;
}

}  // namespace continuum::backup
