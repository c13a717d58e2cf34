#include "continuum/io/mount_info.h"

#include <sys/sysmacros.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace continuum::io {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo (octal).
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

std::vector<MountEntry> ReadMountInfo() {
  std::vector<MountEntry> mounts;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string mount_id, parent_id, devno, root, point;
    fields >> mount_id >> parent_id >> devno >> root >> point;
    auto colon = devno.find(':');
    auto sep = line.find(" - ");
    if (colon == std::string::npos || sep == std::string::npos) continue;
    MountEntry e;
    e.dev = makedev(std::strtoul(devno.c_str(), nullptr, 10), std::strtoul(devno.c_str() + colon + 1, nullptr, 10));
    e.mount_point = Unescape(point);
    std::istringstream rest(line.substr(sep + 3));
    std::string source;
    rest >> e.fstype >> source >> e.super_options;
    mounts.push_back(std::move(e));
  }
  return mounts;
}

}  // namespace continuum::io
