// ListImageFiles: `ls` inside an image point's filesystem.

#include <sched.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "backup/mount_blob_cache.h"
#include "backup/mount_image_target.h"
#include "continuum/backup/mount.h"
#include "continuum/capture/fuse_exporter.h"
#include "continuum/common/log.h"
#include "continuum/io/loop_device.h"

namespace continuum::backup {
namespace {

constexpr uint64_t kLsCacheBytes = 64ull << 20;
constexpr int kMaxDepth = 4096;

// Block-device filesystems the kernel knows, the common ones first (mount(8)
// without -t probes the same way when blkid cannot tell).
std::vector<std::string> CandidateTypes() {
  std::vector<std::string> types;
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("nodev", 0) == 0) continue;
    auto start = line.find_first_not_of(" \t");
    if (start != std::string::npos) types.push_back(line.substr(start));
  }
  const std::vector<std::string> first = {"ext4", "xfs", "btrfs", "vfat"};
  std::stable_sort(types.begin(), types.end(), [&](const std::string& a, const std::string& b) {
    auto rank = [&](const std::string& t) {
      auto it = std::find(first.begin(), first.end(), t);
      return it == first.end() ? first.size() : static_cast<size_t>(it - first.begin());
    };
    return rank(a) < rank(b);
  });
  return types;
}

// Mounts `dev` read-only at `dir`, trying each filesystem type. A filesystem
// whose journal needs replaying cannot mount from a read-only device, so ext*
// and xfs are retried without log recovery.
Result<std::string> MountReadOnly(const std::string& dev, const std::string& dir) {
  const unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  for (const auto& type : CandidateTypes()) {
    std::vector<const char*> options = {nullptr};
    if (type == "ext4" || type == "ext3") options.push_back("noload");
    if (type == "xfs") options.push_back("norecovery");
    for (const char* opt : options) {
      if (::mount(dev.c_str(), dir.c_str(), type.c_str(), flags, opt) == 0) return type;
    }
  }
  return FailedPrecondition("no filesystem found in the image (tried every type in /proc/filesystems)");
}

const char* TypeName(mode_t mode) {
  if (S_ISDIR(mode)) return "dir";
  if (S_ISLNK(mode)) return "symlink";
  if (S_ISCHR(mode)) return "chardev";
  if (S_ISBLK(mode)) return "blockdev";
  if (S_ISFIFO(mode)) return "fifo";
  if (S_ISSOCK(mode)) return "socket";
  return "file";
}

Result<FileEntry> Describe(const std::string& abs, const std::string& rel) {
  struct stat st;
  if (::lstat(abs.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("no '" + rel + "' in the image's filesystem");
    return PosixError("stat " + rel, errno);
  }
  FileEntry e{.path = rel,
              .type = TypeName(st.st_mode),
              .mode = static_cast<uint32_t>(st.st_mode & 07777),
              .uid = st.st_uid,
              .gid = st.st_gid,
              .size = static_cast<uint64_t>(st.st_size),
              .mtime_ns = st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec,
              .link_target = {}};
  if (S_ISLNK(st.st_mode)) {
    std::vector<char> buf(static_cast<size_t>(st.st_size) + 1);
    ssize_t n = ::readlink(abs.c_str(), buf.data(), buf.size());
    if (n >= 0) e.link_target.assign(buf.data(), static_cast<size_t>(n));
  }
  return e;
}

Status Walk(const std::string& root, const std::string& rel, int depth, std::vector<FileEntry>* out) {
  if (depth > kMaxDepth) return DataLoss("directory " + rel + " is nested too deeply");
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root + "/" + rel, ec)) {
    names.push_back(entry.path().filename().string());
  }
  if (ec) return PosixError("list " + rel, ec.value());
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    std::string child = rel.empty() ? name : rel + "/" + name;
    CONTINUUM_ASSIGN_OR_RETURN(FileEntry e, Describe(root + "/" + child, child));
    bool dir = e.type == "dir";
    out->push_back(std::move(e));
    if (dir) CONTINUUM_RETURN_IF_ERROR(Walk(root, child, depth + 1, out));
  }
  return Status::Ok();
}

std::string Normalize(const std::string& path) {
  std::string out;
  for (const auto& part : std::filesystem::path(path).lexically_normal()) {
    std::string s = part.string();
    if (s.empty() || s == "/" || s == ".") continue;
    if (s == "..") return "..";
    out += (out.empty() ? "" : "/") + s;
  }
  return out;
}

// Everything ListImageFiles sets up, undone in reverse order.
struct Attached {
  std::string tmp;
  std::unique_ptr<capture::FuseExporter> exporter;
  std::unique_ptr<io::LoopDevice> loop;
  std::string fs_dir;
  bool mounted = false;

  ~Attached() {
    auto log = Logger("mount");
    if (mounted && ::umount2(fs_dir.c_str(), 0) != 0) {
      log->warn("unmount {}: {}", fs_dir, std::strerror(errno));
      ::umount2(fs_dir.c_str(), MNT_DETACH);
    }
    if (loop) {
      Status st = loop->Detach();
      if (!st.ok() && st.code() != StatusCode::kNotFound) log->warn("{}", st.ToString());
    }
    if (exporter) {
      Status st = exporter->Stop();
      if (!st.ok()) log->warn("{}", st.ToString());
    }
    if (!tmp.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(tmp, ec);  // only empty directories are left by now
    }
  }
};

}  // namespace

Result<std::vector<FileEntry>> ListImageFiles(repo::Repository& repo, const PointInfo& point, const std::string& path) {
  if (point.type != PointType::kImage) {
    return InvalidArgument("point " + point.id.Hex().substr(0, 12) + " is not an image point");
  }
  const std::string rel = Normalize(path);
  if (rel == "..") return NotFound("no '" + path + "' in the image's filesystem");
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    return FailedPrecondition("FUSE is not available (/dev/fuse: " + std::string(std::strerror(errno)) +
                              "): cannot look inside image point " + point.id.Hex().substr(0, 12));
  }
  // A private mount namespace: our FUSE and filesystem mounts are invisible to
  // others and vanish with this process, whatever happens. (Needs a
  // single-threaded process; without it the mounts are still cleaned up below.)
  if (::unshare(CLONE_NEWNS) == 0) {
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      Logger("mount")->warn("make mounts private: {}", std::strerror(errno));
    }
  } else {
    Logger("mount")->debug("no private mount namespace: {}", std::strerror(errno));
  }
  CONTINUUM_ASSIGN_OR_RETURN(repo::Manifest m, repo.LoadManifest(point.id));
  if (m.roots.size() != 1) return DataLoss("point " + point.id.Hex() + ": expected one root tree");
  auto blobs = std::make_shared<MountBlobCache>(&repo, kLsCacheBytes);
  CONTINUUM_ASSIGN_OR_RETURN(auto target, MountImageTarget::Open(blobs, m.roots[0], {.writable = false}));

  Attached a;
  char tmpl[] = "/tmp/continuum-ls-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return PosixError("create a temporary directory", errno);
  a.tmp = tmpl;
  a.fs_dir = a.tmp + "/fs";
  if (::mkdir(a.fs_dir.c_str(), 0700) != 0) return PosixError("mkdir " + a.fs_dir, errno);
  CONTINUUM_ASSIGN_OR_RETURN(a.exporter, capture::FuseExporter::Start(a.tmp + "/fuse"));
  CONTINUUM_RETURN_IF_ERROR(a.exporter->AddFile("image", std::move(target)));
  CONTINUUM_ASSIGN_OR_RETURN(a.loop,
                             io::LoopDevice::Attach({.backing_path = a.exporter->PathOf("image"),
                                                     .read_only = true,
                                                     .block_size = kLoopBlockSize}));
  auto type = MountReadOnly(a.loop->path(), a.fs_dir);
  if (!type.ok()) {
    return FailedPrecondition("image point " + point.id.Hex().substr(0, 12) + ": " + type.status().message());
  }
  a.mounted = true;

  std::vector<FileEntry> out;
  if (!rel.empty()) {
    // Never follow a symlink of the image on the way: it would lead out of it.
    size_t slash = 0;
    while ((slash = rel.find('/', slash + 1)) != std::string::npos) {
      struct stat st;
      std::string prefix = a.fs_dir + "/" + rel.substr(0, slash);
      if (::lstat(prefix.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return NotFound("no '" + rel + "' in the image's filesystem");
      }
    }
    CONTINUUM_ASSIGN_OR_RETURN(FileEntry e, Describe(a.fs_dir + "/" + rel, rel));
    bool dir = e.type == "dir";
    out.push_back(std::move(e));
    if (!dir) return out;
  }
  CONTINUUM_RETURN_IF_ERROR(Walk(a.fs_dir, rel, 0, &out));
  return out;
}

}  // namespace continuum::backup
