#include "capture/fuse_file_table.h"

namespace continuum::capture {

Status FuseFileTable::Add(const std::string& name, std::shared_ptr<io::BlockTarget> target) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.size() > 255) {
    return InvalidArgument("invalid fuse file name '" + name + "'");
  }
  if (!target) return InvalidArgument("fuse file " + name + ": no block target");
  auto file = std::make_shared<FuseFile>();
  file->name = name;
  file->size = target->Size();
  file->block_size = target->BlockSize() ? target->BlockSize() : 4096;
  file->read_only = target->ReadOnly();
  file->created = std::time(nullptr);
  file->target = std::move(target);

  std::lock_guard lock(mu_);
  if (by_name_.count(name)) return AlreadyExists("fuse file " + name + " already exists");
  const uint64_t ino = next_ino_++;
  file->ino = ino;
  by_name_[name] = ino;
  by_ino_[ino] = Entry{std::move(file), 0};
  return Status::Ok();
}

Status FuseFileTable::Remove(const std::string& name, std::chrono::milliseconds grace) {
  std::unique_lock lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return NotFound("fuse file " + name + " does not exist");
  const uint64_t ino = it->second;
  // Re-find after every wait: a concurrent Remove may have won meanwhile.
  auto still_open = [&] {
    auto e = by_ino_.find(ino);
    return e != by_ino_.end() && e->second.open_count > 0;
  };
  released_.wait_for(lock, grace, [&] { return !still_open(); });
  auto entry = by_ino_.find(ino);
  if (entry == by_ino_.end()) return NotFound("fuse file " + name + " does not exist");
  if (entry->second.open_count > 0) {
    return FailedPrecondition("fuse file " + name + " is still open (" +
                              std::to_string(entry->second.open_count) +
                              " handles); detach its loop device or close it first");
  }
  by_ino_.erase(entry);
  by_name_.erase(name);
  return Status::Ok();
}

std::shared_ptr<const FuseFile> FuseFileTable::Lookup(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return nullptr;
  return by_ino_.at(it->second).file;
}

std::shared_ptr<const FuseFile> FuseFileTable::Get(uint64_t ino) const {
  std::lock_guard lock(mu_);
  auto it = by_ino_.find(ino);
  return it == by_ino_.end() ? nullptr : it->second.file;
}

std::shared_ptr<const FuseFile> FuseFileTable::Open(uint64_t ino) {
  std::lock_guard lock(mu_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end()) return nullptr;
  ++it->second.open_count;
  return it->second.file;
}

void FuseFileTable::Release(uint64_t ino) {
  {
    std::lock_guard lock(mu_);
    auto it = by_ino_.find(ino);
    if (it == by_ino_.end() || it->second.open_count == 0) return;
    --it->second.open_count;
  }
  released_.notify_all();
}

std::vector<std::shared_ptr<const FuseFile>> FuseFileTable::List() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<const FuseFile>> files;
  files.reserve(by_ino_.size());
  for (const auto& [ino, entry] : by_ino_) files.push_back(entry.file);
  return files;
}

uint64_t FuseFileTable::OpenHandles() const {
  std::lock_guard lock(mu_);
  uint64_t total = 0;
  for (const auto& [ino, entry] : by_ino_) total += entry.open_count;
  return total;
}

}  // namespace continuum::capture
