#include "net/pem_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "continuum/io/file.h"

namespace continuum::net {

Status WritePemFile(const std::string& path, std::string_view contents, mode_t mode, Overwrite overwrite) {
  std::string tmp = path + ".tmp";
  // A temp file left by a crash may have any mode: start from a fresh inode.
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT) return PosixError("remove stale " + tmp, errno);
  {
    CONTINUUM_ASSIGN_OR_RETURN(auto f, io::File::Open(tmp, O_WRONLY | O_CREAT | O_EXCL, mode & 0600));
    if (::fchmod(f->fd(), mode) != 0) return PosixError("chmod " + tmp, errno);
    CONTINUUM_RETURN_IF_ERROR(f->PWrite(0, {reinterpret_cast<const uint8_t*>(contents.data()), contents.size()}));
    // fsync before the name appears: the name must never point at unwritten data.
    CONTINUUM_RETURN_IF_ERROR(f->Sync());
  }
  if (overwrite == Overwrite::kYes) {
    if (::rename(tmp.c_str(), path.c_str()) != 0) return PosixError("rename " + tmp + " to " + path, errno);
  } else {
    int rc = ::link(tmp.c_str(), path.c_str());
    int err = errno;
    ::unlink(tmp.c_str());
    if (rc != 0) {
      if (err == EEXIST) return AlreadyExists(path + " already exists");
      return PosixError("link " + tmp + " to " + path, err);
    }
  }
  std::string::size_type slash = path.rfind('/');
  return io::SyncDir(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

}  // namespace continuum::net
