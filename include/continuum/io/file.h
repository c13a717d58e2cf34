#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "continuum/common/result.h"

namespace continuum::io {

// A POSIX file descriptor with Status-returning, EINTR-safe, full-length I/O.
// Thread-safety: positional calls (PRead/PWrite) may run concurrently.
class File {
 public:
  static Result<std::unique_ptr<File>> Open(const std::string& path, int flags, mode_t mode = 0644);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  // Reads exactly out.size() bytes; a short read past EOF is kDataLoss unless
  // `zero_fill_past_eof` is set, in which case the tail is zeroed.
  Status PRead(uint64_t offset, std::span<uint8_t> out, bool zero_fill_past_eof = false) const;
  Status PWrite(uint64_t offset, std::span<const uint8_t> data);
  // As PWrite, but when `offset` and `data` are 4 KiB-aligned the whole 4 KiB
  // blocks go past the page cache (O_DIRECT through ReopenDirect), where the
  // filesystem allows it: for data written once and not read back soon.
  Status PWriteDirect(uint64_t offset, std::span<const uint8_t> data);
  Status Sync();
  Status DataSync();
  Result<uint64_t> Size() const;
  Status Truncate(uint64_t size);
  // fallocate(2); mode as in the syscall (0, FALLOC_FL_PUNCH_HOLE|KEEP_SIZE, ...).
  Status Fallocate(int mode, uint64_t offset, uint64_t length);

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  File(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

// Writes `contents` to `path` atomically: temp file, fsync, rename, fsync dir.
// `fd`'s file opened again, write-only, with O_DIRECT (through /proc: the very
// file `fd` is, whatever its name now points to); -1 with errno when the
// filesystem or the system does not allow it.
int ReopenDirect(int fd);

Status WriteFileAtomic(const std::string& path, std::string_view contents);
Result<std::string> ReadFileToString(const std::string& path);
Status SyncDir(const std::string& dir);
Status MakeDirs(const std::string& dir, mode_t mode = 0755);
bool PathExists(const std::string& path);

}  // namespace continuum::io
