#include "repo/process_info.h"

#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "continuum/io/file.h"

namespace continuum::repo {

std::string HostName() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == 0) return "localhost";
  return std::string(buf);
}

uint64_t ProcessStartTicks(pid_t pid) {
  if (pid <= 0) return 0;
  auto stat = io::ReadFileToString("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return 0;
  // The command name (field 2) is in parentheses and may hold spaces: count
  // fields after the last ')'.
  std::string_view s = *stat;
  size_t close = s.rfind(')');
  if (close == std::string_view::npos) return 0;
  s.remove_prefix(close + 1);
  int field = 2;
  size_t pos = 0;
  // A zombie (killed, not yet reaped) holds no lock and writes no file.
  if (s.size() > 1 && s[1] == 'Z') return 0;
  while (pos < s.size()) {
    while (pos < s.size() && s[pos] == ' ') ++pos;
    size_t end = s.find(' ', pos);
    if (end == std::string_view::npos) end = s.size();
    ++field;
    if (field == 22) return std::strtoull(std::string(s.substr(pos, end - pos)).c_str(), nullptr, 10);
    pos = end;
  }
  return 0;
}

}  // namespace continuum::repo
