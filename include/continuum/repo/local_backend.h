#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "continuum/repo/backend.h"

namespace continuum::repo {

// A repository in a local directory (layout in docs/format/repository.md).
// Writes go to tmp/<pid>-<random>-<host>, are fsynced, renamed without replacing
// and the directory fsynced. In write-once mode the file then gets
// FS_IMMUTABLE_FL (needs CAP_LINUX_IMMUTABLE) and is fsynced again.
// Thread-safety: safe for concurrent use once SetWriteOnce has been called.
class LocalBackend : public Backend {
 public:
  explicit LocalBackend(std::string root);

  std::string Location() const override { return root_; }
  std::string Describe(FileKind kind, const std::string& name) const override;
  Status Create() override;
  Status Write(FileKind kind, const std::string& name, std::span<const uint8_t> data, bool replace) override;
  Result<std::vector<uint8_t>> Read(FileKind kind, const std::string& name, uint64_t max_bytes) override;
  Result<std::vector<uint8_t>> ReadAt(FileKind kind, const std::string& name, uint64_t offset,
                                      uint64_t length) override;
  Result<uint64_t> Size(FileKind kind, const std::string& name) override;
  Result<std::vector<std::string>> List(FileKind kind) override;
  Status Remove(FileKind kind, const std::string& name) override;
  Result<size_t> CleanTemporary(int64_t older_than_ns) override;
  void SetWriteOnce(bool on) override { write_once_ = on; }
  Result<Immutability> GetImmutability(FileKind kind, const std::string& name) override;
  Status MakeImmutable(FileKind kind, const std::string& name) override;

 private:
  std::string Dir(FileKind kind, const std::string& name) const;
  // Sets FS_IMMUTABLE_FL on a stored file. A filesystem or process that cannot
  // is logged once, not an error: the file is stored either way.
  void SealWritten(const std::string& path);
  std::string root_;
  bool write_once_ = false;
  std::atomic<bool> told_unsupported_{false};
};

}  // namespace continuum::repo
