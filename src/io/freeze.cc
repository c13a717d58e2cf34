#include "continuum/io/freeze.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>


#include "continuum/io/mount_info.h"

namespace continuum::io {

Result<std::string> MountPointOf(const std::string& dev_path) {
  struct stat st;
  if (::stat(dev_path.c_str(), &st) != 0) return PosixError("stat " + dev_path, errno);
  for (const MountEntry& m : ReadMountInfo()) {
    if (m.dev == st.st_rdev) return m.mount_point;
  }
  return std::string();
}

static Status FreezeIoctl(const std::string& mount_point, unsigned long req, const char* what) {
  int fd = ::open(mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError(std::string(what) + " " + mount_point, errno);
  int rc = ::ioctl(fd, req, 0);
  int err = errno;
  ::close(fd);
  if (rc != 0) return PosixError(std::string(what) + " " + mount_point, err);
  return Status::Ok();
}

Status FreezeFilesystem(const std::string& mount_point) {
  return FreezeIoctl(mount_point, FIFREEZE, "freeze filesystem at");
}

Status ThawFilesystem(const std::string& mount_point) {
  return FreezeIoctl(mount_point, FITHAW, "thaw filesystem at");
}

Status RunHook(const std::string& command, const std::string& what) {
  pid_t pid = ::fork();
  if (pid < 0) return PosixError("fork for " + what, errno);
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return PosixError("wait for " + what, errno);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return FailedPrecondition(what + " '" + command + "' failed (exit status " +
                              std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
  }
  return Status::Ok();
}

}  // namespace continuum::io
