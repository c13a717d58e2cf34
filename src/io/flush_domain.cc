#include "continuum/io/flush_domain.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <fstream>
#include <sstream>

namespace continuum::io {
namespace {

// The super options of the mount of device `dev` (from /proc/self/mountinfo:
// "... major:minor ... - fstype source superopts").
std::string SuperOptions(dev_t dev) {
  std::ifstream in("/proc/self/mountinfo");
  const std::string want = std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string mount_id, parent_id, devno;
    fields >> mount_id >> parent_id >> devno;
    if (devno != want) continue;
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream rest(line.substr(sep + 3));
    std::string fstype, source, opts;
    rest >> fstype >> source >> opts;
    return "," + opts + ",";
  }
  return "";
}

}  // namespace

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
  std::string opts = SuperOptions(sa.st_dev);
  if (opts.empty()) return no("mount not found");
  for (const char* bad : {",data=journal,", ",nobarrier,", ",barrier=0,"}) {
    if (opts.find(bad) != std::string::npos) return no(std::string("mounted with ") + (bad + 1));
  }
  return true;
}

}  // namespace continuum::io
