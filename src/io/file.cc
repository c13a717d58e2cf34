#include "continuum/io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "continuum/io/aligned_buffer.h"
#include "continuum/io/unique_fd.h"

namespace continuum::io {

Result<std::unique_ptr<File>> File::Open(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return PosixError("open " + path, errno);
  return std::unique_ptr<File>(new File(fd, path));
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

Status File::PRead(uint64_t offset, std::span<uint8_t> out, bool zero_fill_past_eof) const {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read " + path_ + " at offset " + std::to_string(offset + done), errno);
    }
    if (n == 0) {
      if (zero_fill_past_eof) {
        std::memset(out.data() + done, 0, out.size() - done);
        return Status::Ok();
      }
      return DataLoss("read " + path_ + ": unexpected end of file at offset " +
                      std::to_string(offset + done));
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status File::PWrite(uint64_t offset, std::span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("write " + path_ + " at offset " + std::to_string(offset + done), errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status File::PWriteDirect(uint64_t offset, std::span<const uint8_t> data) {
  constexpr size_t kAlign = AlignedBuffer::kAlign;
  size_t done = 0;
  const size_t blocks = data.size() / kAlign * kAlign;
  if (blocks > 0 && offset % kAlign == 0 && AlignedBuffer::IsAligned(data.data(), 0)) {
    UniqueFd direct(ReopenDirect(fd_));
    while (direct && done < blocks) {
      ssize_t n = ::pwrite(direct.get(), data.data() + done, blocks - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EINVAL) break;  // refused after all: the page cache takes the rest
      if (n < 0) return PosixError("write " + path_ + " at offset " + std::to_string(offset + done), errno);
      done += static_cast<size_t>(n);
    }
  }
  return PWrite(offset + done, data.subspan(done));
}

int ReopenDirect(int fd) {
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  return ::open(self.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
}

Status File::Sync() {
  if (::fsync(fd_) != 0) return PosixError("fsync " + path_, errno);
  return Status::Ok();
}

Status File::DataSync() {
  if (::fdatasync(fd_) != 0) return PosixError("fdatasync " + path_, errno);
  return Status::Ok();
}

Result<uint64_t> File::Size() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return PosixError("stat " + path_, errno);
  if (S_ISBLK(st.st_mode)) {
    off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end < 0) return PosixError("seek " + path_, errno);
    return static_cast<uint64_t>(end);
  }
  return static_cast<uint64_t>(st.st_size);
}

Status File::Truncate(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return PosixError("truncate " + path_, errno);
  return Status::Ok();
}

Status File::Fallocate(int mode, uint64_t offset, uint64_t length) {
  if (::fallocate(fd_, mode, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    return PosixError("fallocate " + path_, errno);
  }
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open directory " + dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return PosixError("fsync directory " + dir, err);
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, std::string_view contents) {
  std::string tmp = path + ".tmp";
  {
    CONTINUUM_ASSIGN_OR_RETURN(auto f, File::Open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600));
    CONTINUUM_RETURN_IF_ERROR(f->PWrite(0, {reinterpret_cast<const uint8_t*>(contents.data()), contents.size()}));
    // fsync before rename: the new name must never point at unwritten data.
    CONTINUUM_RETURN_IF_ERROR(f->Sync());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return PosixError("rename " + tmp, errno);
  std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

Result<std::string> ReadFileToString(const std::string& path) {
  CONTINUUM_ASSIGN_OR_RETURN(auto f, File::Open(path, O_RDONLY));
  // Read to EOF rather than trusting st_size: sysfs and procfs report 4096.
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(f->fd(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PosixError("read " + path, errno);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status MakeDirs(const std::string& dir, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return PosixError("create directory " + dir, ec.value());
  ::chmod(dir.c_str(), mode);
  return Status::Ok();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace continuum::io
