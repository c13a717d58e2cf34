#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "continuum/common/result.h"

namespace continuum::repo {

// The kinds of repository files (docs/format/repository.md, "Layout").
enum class FileKind { kConfig, kKey, kPack, kIndex, kManifest, kLock, kPin };
std::string_view FileKindName(FileKind kind);
// Files of every kind but locks are complete when written and never rewritten
// (pins are removed only outside append-only mode): the kinds an append-only
// repository makes immutable.
inline bool IsWriteOnceKind(FileKind kind) { return kind != FileKind::kLock; }

// Whether the storage keeps a file from being changed or deleted.
enum class Immutability {
  kImmutable,    // FS_IMMUTABLE_FL set: not even its owner can delete or change it
  kMutable,
  kUnsupported,  // the storage has no such flag (tmpfs, object stores without object lock)
};

// Where a repository's files live: a local directory now, an object store later.
// The contract every implementation keeps:
// - Write is atomic: a reader sees either no file or all of it, and after Write
//   returns the file survives a crash (fsync file and directory on POSIX).
// - Names are as given by the repository (64 hex digits, or "config").
// - Errors name the file; a full disk is kResourceExhausted.
// Thread-safety: implementations are safe for concurrent calls on distinct files.
class Backend {
 public:
  virtual ~Backend() = default;

  // "/srv/repo" or "s3://bucket/prefix": used in messages.
  virtual std::string Location() const = 0;
  // The full name of one file, for messages.
  virtual std::string Describe(FileKind kind, const std::string& name) const = 0;
  // Prepares an empty repository location. kAlreadyExists if a config is there.
  virtual Status Create() = 0;
  // Stores `data` under `name`. Without `replace`, an existing file is kept and
  // kAlreadyExists returned (content-addressed names make that harmless).
  virtual Status Write(FileKind kind, const std::string& name, std::span<const uint8_t> data,
                       bool replace = false) = 0;
  // Whole file; kDataLoss if it is larger than `max_bytes` (input from disk is bounded).
  virtual Result<std::vector<uint8_t>> Read(FileKind kind, const std::string& name, uint64_t max_bytes) = 0;
  // Exactly `length` bytes at `offset`; kDataLoss if the file is shorter.
  virtual Result<std::vector<uint8_t>> ReadAt(FileKind kind, const std::string& name, uint64_t offset,
                                              uint64_t length) = 0;
  // ReadAt into the caller's buffer (out.size() bytes): readers that reuse one
  // buffer per thread.
  virtual Status ReadInto(FileKind kind, const std::string& name, uint64_t offset, std::span<uint8_t> out) {
    CONTINUUM_ASSIGN_OR_RETURN(auto data, ReadAt(kind, name, offset, out.size()));
    std::copy(data.begin(), data.end(), out.begin());
    return Status::Ok();
  }
  virtual Result<uint64_t> Size(FileKind kind, const std::string& name) = 0;
  // Names of well-formed files of a kind, sorted; temporary and foreign files are skipped.
  virtual Result<std::vector<std::string>> List(FileKind kind) = 0;
  virtual Status Remove(FileKind kind, const std::string& name) = 0;
  // Deletes temporary files whose writer is gone (same host, process not running)
  // or that are older than `older_than_ns`. Returns how many were removed.
  virtual Result<size_t> CleanTemporary(int64_t older_than_ns) = 0;

  // Append-only protection: when on, Write makes every file of a write-once kind
  // (IsWriteOnceKind) immutable once it is durable, where the storage supports
  // that; where it does not, it says so once in the log and stores the file
  // anyway. Set before the first Write; not thread-safe against Write.
  virtual void SetWriteOnce(bool on) { (void)on; }
  virtual Result<Immutability> GetImmutability(FileKind kind, const std::string& name) {
    (void)kind;
    (void)name;
    return Immutability::kUnsupported;
  }
  // Makes one stored file immutable now (repair of files a client without the
  // privilege wrote). kFailedPrecondition where the storage or process cannot.
  virtual Status MakeImmutable(FileKind kind, const std::string& name) {
    return FailedPrecondition("cannot make " + Describe(kind, name) + " immutable: not supported by this storage");
  }
};

}  // namespace continuum::repo
