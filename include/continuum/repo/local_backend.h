#pragma once

#include <memory>
#include <string>

#include "continuum/repo/backend.h"

namespace continuum::repo {

// A repository in a local directory (layout in docs/format/repository.md).
// Writes go to tmp/<pid>-<random>-<host>, are fsynced, renamed without replacing
// and the directory fsynced. Thread-safety: stateless beyond the root path; safe
// for concurrent use.
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

 private:
  std::string Dir(FileKind kind, const std::string& name) const;
  std::string root_;
};

}  // namespace continuum::repo
