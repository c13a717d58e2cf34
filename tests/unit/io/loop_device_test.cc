// Tests continuum::io::LoopDevice against the real kernel loop driver.
#include "continuum/io/loop_device.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "continuum/io/file.h"

namespace continuum::io {
namespace {

constexpr uint64_t kBackingSize = 64ull << 20;

bool Attached(const std::string& dev) { return LoopBackingFile(dev).ok(); }

class LoopDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || !PathExists("/dev/loop-control")) GTEST_SKIP() << "needs root and loop devices";
    char tmpl[] = "/tmp/continuum-loop-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    backing_ = dir_ + "/backing.img";
    auto f = File::Open(backing_, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->Truncate(kBackingSize).ok());
  }
  // Cleans up even after a failed assertion: every device over our file goes.
  void TearDown() override {
    if (dir_.empty()) return;
    auto devs = FindLoopDevicesForBacking(backing_);
    if (devs.ok()) {
      for (const auto& dev : *devs) DetachLoopDevice(dev).IgnoreError();
    }
    std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  std::string backing_;
};

TEST_F(LoopDeviceTest, AttachWriteThroughDetach) {
  auto dev = LoopDevice::Attach({.backing_path = backing_});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  const std::string path = (*dev)->path();
  EXPECT_EQ(path.rfind("/dev/loop", 0), 0u) << path;
  EXPECT_TRUE((*dev)->direct_io()) << "ext4-backed /tmp supports direct I/O";

  auto backing = LoopBackingFile(path);
  ASSERT_TRUE(backing.ok()) << backing.status().ToString();
  EXPECT_EQ(*backing, std::filesystem::canonical(backing_).string());
  auto found = FindLoopDevicesForBacking(backing_);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, std::vector<std::string>{path});

  int fd = ::open(path.c_str(), O_RDWR | O_DIRECT);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  int logical = 0;
  EXPECT_EQ(ioctl(fd, BLKSSZGET, &logical), 0);
  EXPECT_EQ(logical, 4096);
  void* buf = nullptr;
  ASSERT_EQ(posix_memalign(&buf, 4096, 4096), 0);
  std::memset(buf, 0xAB, 4096);
  EXPECT_EQ(pwrite(fd, buf, 4096, 1 << 20), 4096);
  EXPECT_EQ(fsync(fd), 0);
  ::close(fd);

  auto file = File::Open(backing_, O_RDONLY);
  ASSERT_TRUE(file.ok());
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE((*file)->PRead(1 << 20, got).ok());
  EXPECT_EQ(std::memcmp(got.data(), buf, 4096), 0);
  free(buf);

  ASSERT_TRUE((*dev)->Detach().ok());
  EXPECT_FALSE(Attached(path));
  EXPECT_EQ(LoopBackingFile(path).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(FindLoopDevicesForBacking(backing_)->empty());
  EXPECT_EQ(DetachLoopDevice(path).code(), StatusCode::kNotFound);
}

TEST_F(LoopDeviceTest, ReadOnlyRefusesWrites) {
  auto dev = LoopDevice::Attach({.backing_path = backing_, .read_only = true});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  EXPECT_TRUE((*dev)->read_only());
  int fd = ::open((*dev)->path().c_str(), O_RDWR);
  if (fd >= 0) {
    char block[4096] = {1};
    EXPECT_LT(pwrite(fd, block, sizeof block, 0), 0);
    ::close(fd);
  }
  EXPECT_TRUE((*dev)->Detach().ok());
}

TEST_F(LoopDeviceTest, DetachReportsBusyWhileClaimed) {
  auto dev = LoopDevice::Attach({.backing_path = backing_});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  const std::string path = (*dev)->path();
  // An exclusive open is what a mounted filesystem holds.
  int fd = ::open(path.c_str(), O_RDONLY | O_EXCL);
  ASSERT_GE(fd, 0);
  Status st = (*dev)->Detach(std::chrono::milliseconds(200));
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(st.message(), "device " + path + " is busy (mounted or open)");
  ::close(fd);
  EXPECT_TRUE(Attached(path));
  EXPECT_TRUE(DetachLoopDevice(path).ok());
}

TEST_F(LoopDeviceTest, DetachWhileOpenLeavesDeviceAttached) {
  auto dev = LoopDevice::Attach({.backing_path = backing_});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  const std::string path = (*dev)->path();
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(DetachLoopDevice(path, std::chrono::milliseconds(200)).code(), StatusCode::kFailedPrecondition);
  ::close(fd);
  // The kernel's deferred detach was undone: closing did not detach.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(Attached(path));
  EXPECT_TRUE(DetachLoopDevice(path).ok());
}

TEST_F(LoopDeviceTest, AutoclearDetachesWhenHandleGoes) {
  std::string path;
  {
    auto dev = LoopDevice::Attach({.backing_path = backing_, .autoclear = true});
    ASSERT_TRUE(dev.ok()) << dev.status().ToString();
    path = (*dev)->path();
    EXPECT_TRUE(Attached(path));
  }
  for (int i = 0; i < 50 && Attached(path); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(Attached(path));
}

TEST_F(LoopDeviceTest, ConcurrentAttachesGetDistinctDevices) {
  constexpr int kThreads = 4;
  std::vector<std::string> paths(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto dev = LoopDevice::Attach({.backing_path = backing_, .read_only = true});
      if (dev.ok()) paths[i] = (*dev)->path();
    });
  }
  for (auto& t : threads) t.join();
  std::sort(paths.begin(), paths.end());
  EXPECT_EQ(std::unique(paths.begin(), paths.end()), paths.end());
  for (const auto& p : paths) EXPECT_FALSE(p.empty());
  EXPECT_EQ(FindLoopDevicesForBacking(backing_)->size(), static_cast<size_t>(kThreads));
}

TEST_F(LoopDeviceTest, RejectsWhatIsNotALoopDevice) {
  EXPECT_EQ(DetachLoopDevice("/dev/null").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoopBackingFile(dir_ + "/missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(LoopDevice::Attach({.backing_path = dir_ + "/missing"}).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace continuum::io
