#pragma once

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "continuum/io/file.h"
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
  Status ReadInto(FileKind kind, const std::string& name, uint64_t offset, std::span<uint8_t> out) override;
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
  // An open descriptor of a pack, from a small cache: a restore reads tens of
  // thousands of blobs from a few hundred packs, and opening the pack for each
  // read costs as much as the read. Packs are write-once, so a cached
  // descriptor never sees other content (a removed pack stays readable through
  // it, which is what a reader that found it in the index wants).
  Result<std::shared_ptr<io::File>> OpenPack(const std::string& name);
  // Drops a pack's cached descriptor (it is rewritten or removed).
  void ForgetPack(const std::string& name);
  std::string root_;
  bool write_once_ = false;
  std::atomic<bool> told_unsupported_{false};
  std::mutex packs_mu_;
  std::list<std::pair<std::string, std::shared_ptr<io::File>>> packs_;  // GUARDED_BY(packs_mu_): most recent first
  std::unordered_map<std::string, decltype(packs_)::iterator> pack_index_;  // GUARDED_BY(packs_mu_)
};

}  // namespace continuum::repo
