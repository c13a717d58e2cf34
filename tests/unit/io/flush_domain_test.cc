// Tests io::SharesCacheFlush against this machine's real mounts.
#include "continuum/io/flush_domain.h"

#include <gtest/gtest.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace continuum::io {
namespace {

namespace fs = std::filesystem;

bool IsExt4(const std::string& path) {
  struct statfs s;
  return ::statfs(path.c_str(), &s) == 0 && s.f_type == EXT4_SUPER_MAGIC;
}

TEST(FlushDomainTest, FilesOnOneExt4ShareTheFlushOthersDoNot) {
  const fs::path dir = fs::temp_directory_path() / ("continuum-flushdom-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "a") << "a";
  std::ofstream(dir / "b") << "b";
  std::string why;
  if (IsExt4(dir.string())) {
    EXPECT_TRUE(SharesCacheFlush((dir / "a").string(), (dir / "b").string(), &why)) << why;
  } else {
    EXPECT_FALSE(SharesCacheFlush((dir / "a").string(), (dir / "b").string(), &why));
    EXPECT_EQ(why, "not ext4");
  }
  // A tmpfs (another file system, and not ext4) never shares.
  if (fs::exists("/dev/shm")) {
    const fs::path shm = fs::path("/dev/shm") / ("continuum-flushdom-" + std::to_string(::getpid()));
    std::ofstream(shm) << "c";
    EXPECT_FALSE(SharesCacheFlush((dir / "a").string(), shm.string(), &why));
    EXPECT_FALSE(why.empty());
    fs::remove(shm);
  }
  EXPECT_FALSE(SharesCacheFlush((dir / "a").string(), (dir / "missing").string(), &why));
  EXPECT_EQ(why, "cannot stat both");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace continuum::io
