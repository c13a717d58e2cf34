#pragma once

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

namespace continuum::repo::testing {

// Clears FS_IMMUTABLE_FL on one file; false if it was not set or cannot be read.
inline bool ClearImmutable(const std::filesystem::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  int flags = 0;
  bool cleared = false;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_IMMUTABLE_FL)) {
    flags &= ~FS_IMMUTABLE_FL;
    cleared = ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
  }
  ::close(fd);
  return cleared;
}

// Removes a test directory that may hold an append-only repository whose files
// were made immutable (tests run as root on ext4 do that).
inline void RemoveAllClearingImmutable(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_regular_file(ec)) ClearImmutable(it->path());
    }
  }
  std::filesystem::remove_all(dir, ec);
}

}  // namespace continuum::repo::testing
