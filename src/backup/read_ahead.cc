#include "read_ahead.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

namespace continuum::backup {
namespace {

constexpr size_t kBatch = 32;            // names per queue item: spreads a directory over the helpers
constexpr size_t kMaxQueued = 4096;      // items; beyond, hints are dropped
constexpr uint64_t kMaxPerFile = 8 << 20;  // the kernel's own readahead continues from there

}  // namespace

struct ReadAhead::Dir {
  int fd = -1;
  ~Dir() {
    if (fd >= 0) ::close(fd);
  }
};

ReadAhead::ReadAhead(size_t threads) {
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
}

ReadAhead::~ReadAhead() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

std::shared_ptr<ReadAhead::Dir> ReadAhead::Open(int dir_fd) {
  auto d = std::make_shared<Dir>();
  d->fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  return d->fd >= 0 ? d : nullptr;
}

void ReadAhead::Stat(int dir_fd, const std::vector<std::string>& names) {
  if (threads_.empty() || names.empty()) return;
  auto dir = Open(dir_fd);
  if (!dir) return;
  for (size_t i = 0; i < names.size(); i += kBatch) {
    Item item{.dir = dir};
    for (size_t j = i; j < std::min(names.size(), i + kBatch); ++j) item.names.emplace_back(names[j], 0);
    Push(std::move(item));
  }
}

void ReadAhead::Read(int dir_fd, const std::vector<std::pair<std::string, uint64_t>>& files) {
  if (threads_.empty() || files.empty()) return;
  auto dir = Open(dir_fd);
  if (!dir) return;
  // One file per item: a large file does not hold up the small ones behind it.
  for (const auto& f : files) Push({.dir = dir, .names = {f}, .read = true});
}

void ReadAhead::Push(Item item) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= kMaxQueued) return;
    queue_.push_back(std::move(item));
  }
  cv_.notify_one();
}

void ReadAhead::Work() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    for (const auto& [name, length] : item.names) {
      if (item.read) {
        int fd = ::openat(item.dir->fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME | O_NONBLOCK);
        if (fd < 0) continue;
        // Deliberately ignored: a hint.
        (void)::posix_fadvise(fd, 0, static_cast<off_t>(std::min(length, kMaxPerFile)), POSIX_FADV_WILLNEED);
        ::close(fd);
        continue;
      }
      struct stat st;
      if (::fstatat(item.dir->fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
      // A subdirectory: its listing is what the walk reads next there.
      int fd = ::openat(item.dir->fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) continue;
      if (DIR* d = ::fdopendir(fd)) {
        while (::readdir(d)) {
        }
        ::closedir(d);
      } else {
        ::close(fd);
      }
    }
  }
}

}  // namespace continuum::backup
