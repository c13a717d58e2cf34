#include "continuum/io/flush_domain.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "continuum/io/mount_info.h"

namespace continuum::io {

bool SharesCacheFlush(const std::string& a, const std::string& b, std::string* why_not) {
  auto no = [&](const std::string& why) {
    if (why_not) *why_not = why;
    return false;
  };
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return no("cannot stat both");
  if (S_ISBLK(sa.st_mode) || S_ISBLK(sb.st_mode)) return no("a block device");
  if (sa.st_dev != sb.st_dev) return no("different file systems");
  struct statfs fs;
  if (::statfs(a.c_str(), &fs) != 0) return no("statfs failed");
  if (fs.f_type != EXT4_SUPER_MAGIC) return no("not ext4");
  std::string opts;
  for (const MountEntry& m : ReadMountInfo()) {
    if (m.dev == sa.st_dev) {
      opts = "," + m.super_options + ",";
      break;
    }
  }
  if (opts.empty()) return no("mount not found");
  for (const char* bad : {",data=journal,", ",nobarrier,", ",barrier=0,"}) {
    if (opts.find(bad) != std::string::npos) return no(std::string("mounted with ") + (bad + 1));
  }
  return true;
}

}  // namespace continuum::io
