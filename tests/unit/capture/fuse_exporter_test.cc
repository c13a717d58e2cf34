// Tests continuum::capture::FuseExporter with the real kernel: FUSE, loop
// devices with direct I/O, ext4 and blkdiscard. Needs root and /dev/fuse.
#include "continuum/capture/fuse_exporter.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "capture/fuse_ops.h"
#include "capture/fuse_uring.h"
#include "capture/memory_block_target.h"
#include "continuum/io/file.h"
#include "continuum/io/loop_device.h"

namespace continuum::capture {
namespace {

using testing::MemoryBlockTarget;
constexpr uint64_t kMiB = 1ull << 20;

int Shell(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

// Unmounts a filesystem on scope exit, even when an assertion failed.
struct ScopedMount {
  std::string dir;
  ~ScopedMount() {
    if (!dir.empty() && ::umount2(dir.c_str(), 0) != 0) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

// Detaches a loop device on scope exit.
struct ScopedLoop {
  std::string dev;
  ~ScopedLoop() {
    if (!dev.empty()) io::DetachLoopDevice(dev).IgnoreError();
  }
};

struct ScopedFd {
  int fd;
  ~ScopedFd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

// Test names and failures show the transport by name.
void PrintTo(FuseTransport t, std::ostream* os) {
  *os << (t == FuseTransport::kDevFuse ? "dev_fuse" : t == FuseTransport::kIoUring ? "io_uring" : "auto");
}

namespace {

// Every test runs on both transports: libfuse's /dev/fuse loop and FUSE over
// io_uring (where the kernel has it; ADR 0010).
class FuseExporterTest : public ::testing::TestWithParam<FuseTransport> {
 protected:
  void SetUp() override {
    if (geteuid() != 0 || !io::PathExists("/dev/fuse")) GTEST_SKIP() << "needs root and /dev/fuse";
    char tmpl[] = "/tmp/continuum-fuse-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    if (GetParam() == FuseTransport::kIoUring && !FuseUring::KernelSupports()) {
      GTEST_SKIP() << "this kernel has no FUSE over io_uring";
    }
    auto exporter = FuseExporter::Start(dir_ + "/export", Options());
    ASSERT_TRUE(exporter.ok()) << exporter.status().ToString();
    exporter_ = std::move(*exporter);
  }
  void TearDown() override {
    if (exporter_) {
      for (const auto& name : names_) {
        auto devs = io::FindLoopDevicesForBacking(exporter_->PathOf(name));
        if (devs.ok()) {
          for (const auto& dev : *devs) io::DetachLoopDevice(dev).IgnoreError();
        }
      }
      EXPECT_TRUE(exporter_->Stop().ok());
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  FuseExporterOptions Options() const {
    FuseExporterOptions options;
    options.transport = GetParam();
    options.ring_threads_per_queue = 2;
    return options;
  }

  std::shared_ptr<MemoryBlockTarget> Add(const std::string& name, uint64_t size, bool read_only = false) {
    auto target = std::make_shared<MemoryBlockTarget>(size, read_only);
    Status st = exporter_->AddFile(name, target);
    EXPECT_TRUE(st.ok()) << st.ToString();
    names_.push_back(name);
    return target;
  }

  std::string dir_;
  std::unique_ptr<FuseExporter> exporter_;
  std::vector<std::string> names_;
};

TEST_P(FuseExporterTest, PublishesFilesWithTargetSizeAndMode) {
  Add("vol", 64 * kMiB);
  Add("ro", 8 * kMiB, /*read_only=*/true);
  struct stat st;
  ASSERT_EQ(::stat(exporter_->PathOf("vol").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 64 * kMiB);
  ASSERT_EQ(::stat(exporter_->PathOf("ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);

  std::vector<std::string> listed;
  for (const auto& e : std::filesystem::directory_iterator(exporter_->mountpoint())) {
    listed.push_back(e.path().filename().string());
  }
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(listed, (std::vector<std::string>{"ro", "vol"}));

  auto other = std::make_shared<MemoryBlockTarget>(kMiB);
  EXPECT_EQ(exporter_->AddFile("vol", other).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(exporter_->AddFile("a/b", other).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(exporter_->RemoveFile("ro").ok());
  EXPECT_FALSE(io::PathExists(exporter_->PathOf("ro")));
  EXPECT_EQ(exporter_->RemoveFile("ro").code(), StatusCode::kNotFound);
}

TEST_P(FuseExporterTest, ReadWriteAndFsyncReachTheTarget) {
  auto target = Add("vol", 16 * kMiB);
  ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDWR)};
  ASSERT_GE(f.fd, 0) << std::strerror(errno);
  std::vector<uint8_t> data(8192, 0x5A);
  ASSERT_EQ(pwrite(f.fd, data.data(), data.size(), 4096), 8192);
  EXPECT_EQ(target->Snapshot(4096, 8192), data);
  target->Fill(kMiB, 4096, 0x33);
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(pread(f.fd, got.data(), got.size(), kMiB), 4096);
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0x33));

  // One 1 MiB write arrives whole: max_write was raised from the 128 KiB default.
  // (The buffer is page-aligned: the kernel counts the pages it spans.)
  void* big = std::aligned_alloc(4096, kMiB);
  std::memset(big, 0x11, kMiB);
  EXPECT_EQ(pwrite(f.fd, big, kMiB, 2 * kMiB), static_cast<ssize_t>(kMiB));
  std::free(big);
  EXPECT_EQ(target->max_write, kMiB);

  uint64_t flushes = target->flushes;
  EXPECT_EQ(fsync(f.fd), 0);
  EXPECT_EQ(fdatasync(f.fd), 0);
  EXPECT_EQ(target->flushes, flushes + 2);
  EXPECT_EQ(target->fua_writes, 0u);

  ScopedFd sync_fd{::open(exporter_->PathOf("vol").c_str(), O_RDWR | O_DSYNC)};
  ASSERT_GE(sync_fd.fd, 0);
  ASSERT_EQ(pwrite(sync_fd.fd, data.data(), 4096, 0), 4096);
  EXPECT_EQ(target->fua_writes, 1u);
}

TEST_P(FuseExporterTest, FilesAreFixedSizeAndFallocateMapsToTrimAndZeroes) {
  const uint64_t size = 16 * kMiB;
  auto target = Add("vol", size);
  target->Fill(0, size, 0xEE);
  ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDWR)};
  ASSERT_GE(f.fd, 0);
  EXPECT_EQ(ftruncate(f.fd, 0), -1);
  EXPECT_EQ(errno, EPERM);
  char byte = 1;
  EXPECT_EQ(pwrite(f.fd, &byte, 1, static_cast<off_t>(size)), -1);
  EXPECT_EQ(errno, ENOSPC);

  EXPECT_EQ(fallocate(f.fd, 0, 0, kMiB), 0);
  EXPECT_EQ(fallocate(f.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kMiB, kMiB), 0);
  EXPECT_EQ(target->trims, 1u);
  EXPECT_EQ(target->Snapshot(kMiB, kMiB), std::vector<uint8_t>(kMiB, 0));
  EXPECT_EQ(fallocate(f.fd, FALLOC_FL_ZERO_RANGE, 4 * kMiB, kMiB), 0);
  EXPECT_EQ(target->write_zeroes, 1u);
  EXPECT_EQ(target->Snapshot(4 * kMiB, kMiB), std::vector<uint8_t>(kMiB, 0));
  EXPECT_EQ(target->Snapshot(3 * kMiB, 16), std::vector<uint8_t>(16, 0xEE));
  EXPECT_EQ(fallocate(f.fd, FALLOC_FL_COLLAPSE_RANGE, 0, kMiB), -1);
  EXPECT_EQ(errno, EOPNOTSUPP);
  EXPECT_EQ(fallocate(f.fd, 0, 0, static_cast<off_t>(size + kMiB)), -1);
  EXPECT_EQ(errno, EFBIG);
}

TEST_P(FuseExporterTest, TargetErrorsBecomeErrno) {
  auto target = Add("vol", 4 * kMiB);
  ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDWR)};
  ASSERT_GE(f.fd, 0);
  std::vector<uint8_t> data(4096, 1);
  target->FailWrites(ResourceExhausted("journal full"));
  EXPECT_EQ(pwrite(f.fd, data.data(), data.size(), 0), -1);
  EXPECT_EQ(errno, ENOSPC);
  target->FailWrites(Internal("bug"));
  EXPECT_EQ(pwrite(f.fd, data.data(), data.size(), 0), -1);
  EXPECT_EQ(errno, EIO);
  target->FailWrites(std::nullopt);
  EXPECT_EQ(pwrite(f.fd, data.data(), data.size(), 0), 4096);

  EXPECT_EQ(ErrnoFromStatus(Status::Ok()), 0);
  EXPECT_EQ(ErrnoFromStatus(PosixError("x", EROFS)), EROFS);
  EXPECT_EQ(ErrnoFromStatus(InvalidArgument("x")), EINVAL);
}

TEST_P(FuseExporterTest, Ext4OverDirectIoLoopFlushesEndToEnd) {
  auto target = Add("vol", 256 * kMiB);
  auto dev = io::LoopDevice::Attach({.backing_path = exporter_->PathOf("vol")});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  ScopedLoop loop{(*dev)->path()};
  EXPECT_TRUE((*dev)->direct_io()) << "the kernel refused direct I/O over the fuse file";

  ASSERT_EQ(Shell("mkfs.ext4 -q -F " + loop.dev), 0);
  EXPECT_GT(target->trims, 0u) << "mkfs discards the device";

  const std::string fs_dir = dir_ + "/fs";
  ASSERT_TRUE(io::MakeDirs(fs_dir).ok());
  ASSERT_EQ(Shell("mount -t ext4 " + loop.dev + " " + fs_dir), 0);
  ScopedMount mount{fs_dir};

  std::vector<uint8_t> pattern(kMiB);
  std::mt19937_64 rng(42);
  for (auto& b : pattern) b = static_cast<uint8_t>(rng());
  const uint64_t flushes_before = target->flushes;
  {
    ScopedFd f{::open((fs_dir + "/data").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644)};
    ASSERT_GE(f.fd, 0);
    ASSERT_EQ(write(f.fd, pattern.data(), pattern.size()), static_cast<ssize_t>(pattern.size()));
    ASSERT_EQ(fsync(f.fd), 0);
  }
  EXPECT_GT(target->flushes, flushes_before) << "an fsync on ext4 must reach BlockTarget::Flush";
  EXPECT_GE(target->Find(std::span<const uint8_t>(pattern.data(), 4096)), 0) << "fsynced data is in the target";

  ASSERT_EQ(::umount2(fs_dir.c_str(), 0), 0);
  mount.dir.clear();
  EXPECT_EQ(exporter_->RemoveFile("vol").code(), StatusCode::kFailedPrecondition) << "the loop device holds it";
  ASSERT_TRUE((*dev)->Detach().ok());
  loop.dev.clear();
  EXPECT_TRUE(exporter_->RemoveFile("vol").ok()) << "released once the loop device is detached";
}

TEST_P(FuseExporterTest, ReadOnlyExportRefusesWrites) {
  auto target = Add("ro", 16 * kMiB, /*read_only=*/true);
  target->Fill(0, 4096, 0x77);  // writes via the target's own API are test setup only
  const std::string path = exporter_->PathOf("ro");
  EXPECT_EQ(::open(path.c_str(), O_RDWR), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_FALSE(io::LoopDevice::Attach({.backing_path = path}).ok());

  auto dev = io::LoopDevice::Attach({.backing_path = path, .read_only = true});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  ScopedLoop loop{(*dev)->path()};
  ScopedFd rd{::open(loop.dev.c_str(), O_RDONLY)};
  ASSERT_GE(rd.fd, 0);
  std::vector<uint8_t> got(4096);
  ASSERT_EQ(pread(rd.fd, got.data(), got.size(), 0), 4096);
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0x77));
  ScopedFd wr{::open(loop.dev.c_str(), O_WRONLY)};
  if (wr.fd >= 0) {
    EXPECT_EQ(pwrite(wr.fd, got.data(), got.size(), 0), -1);
  }
  EXPECT_EQ(target->writes, 0u);
}

TEST_P(FuseExporterTest, BlkdiscardReachesTrim) {
  auto target = Add("vol", 64 * kMiB);
  target->Fill(0, 64 * kMiB, 0xFF);
  auto dev = io::LoopDevice::Attach({.backing_path = exporter_->PathOf("vol")});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  ScopedLoop loop{(*dev)->path()};
  ASSERT_EQ(Shell("blkdiscard -o 1048576 -l 1048576 " + loop.dev), 0);
  EXPECT_GE(target->trims, 1u);
  EXPECT_EQ(target->trimmed_bytes, kMiB);
  EXPECT_EQ(target->Snapshot(kMiB, kMiB), std::vector<uint8_t>(kMiB, 0));
  EXPECT_EQ(target->Snapshot(2 * kMiB, 16), std::vector<uint8_t>(16, 0xFF));

  const uint64_t zeroing_before = target->trims + target->write_zeroes;
  ASSERT_EQ(Shell("blkdiscard -z -o 4194304 -l 1048576 " + loop.dev), 0);
  EXPECT_GT(target->trims + target->write_zeroes, zeroing_before);
  EXPECT_EQ(target->Snapshot(4 * kMiB, kMiB), std::vector<uint8_t>(kMiB, 0));
}

TEST_P(FuseExporterTest, RemoveFileFailsWhileOpen) {
  Add("vol", 4 * kMiB);
  {
    ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDONLY)};
    ASSERT_GE(f.fd, 0);
    Status st = exporter_->RemoveFile("vol");
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(st.message().find(exporter_->PathOf("vol")), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("still open"), std::string::npos) << st.message();
  }
  EXPECT_TRUE(exporter_->RemoveFile("vol").ok());
}

TEST_P(FuseExporterTest, AddAndRemoveWhileIoIsInFlight) {
  auto target = Add("busy", 8 * kMiB);
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::thread io([&] {
    ScopedFd f{::open(exporter_->PathOf("busy").c_str(), O_RDWR)};
    std::vector<uint8_t> block(4096, 9);
    for (uint64_t i = 0; !done; ++i) {
      if (pwrite(f.fd, block.data(), block.size(), static_cast<off_t>((i % 2048) * 4096)) != 4096) failures++;
    }
  });
  // Under load the writer may not have started yet: wait for its first write.
  for (int i = 0; i < 500 && target->writes == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  for (int i = 0; i < 50; ++i) {
    const std::string name = "v" + std::to_string(i);
    ASSERT_TRUE(exporter_->AddFile(name, std::make_shared<MemoryBlockTarget>(kMiB)).ok());
    ASSERT_TRUE(io::PathExists(exporter_->PathOf(name)));
    ASSERT_TRUE(exporter_->RemoveFile(name).ok());
  }
  done = true;
  io.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GT(target->writes, 0u);
}

TEST_P(FuseExporterTest, StopSucceedsWithFilesPresentAndOpen) {
  Add("vol", 4 * kMiB);
  ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDWR)};
  ASSERT_GE(f.fd, 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(exporter_->Stop().ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  char byte;
  EXPECT_EQ(pread(f.fd, &byte, 1, 0), -1) << "the aborted connection fails I/O";
  EXPECT_TRUE(exporter_->Stop().ok()) << "idempotent";
}

TEST_P(FuseExporterTest, ReplacesStaleMountAndRefusesLiveOne) {
  EXPECT_EQ(FuseExporter::Start(exporter_->mountpoint(), Options()).status().code(), StatusCode::kFailedPrecondition);

  // A crashed daemon leaves a mount whose connection is gone: mount by hand,
  // then close /dev/fuse without serving.
  const std::string stale = dir_ + "/stale";
  ASSERT_TRUE(io::MakeDirs(stale).ok());
  int fd = ::open("/dev/fuse", O_RDWR);
  ASSERT_GE(fd, 0);
  std::string opts = "fd=" + std::to_string(fd) + ",rootmode=40000,user_id=0,group_id=0";
  ASSERT_EQ(::mount("continuum", stale.c_str(), "fuse.continuum", 0, opts.c_str()), 0) << std::strerror(errno);
  ::close(fd);
  struct stat st;
  ASSERT_EQ(::stat(stale.c_str(), &st), -1);
  ASSERT_EQ(errno, ENOTCONN);

  auto second = FuseExporter::Start(stale, Options());
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_TRUE((*second)->AddFile("x", std::make_shared<MemoryBlockTarget>(kMiB)).ok());
  EXPECT_TRUE(io::PathExists((*second)->PathOf("x")));
  EXPECT_TRUE((*second)->Stop().ok());
}

// On io_uring the kernel really sends requests through the rings (and the
// /dev/fuse loop sees none of them); on /dev/fuse there are no rings.
TEST_P(FuseExporterTest, RequestsTakeTheConfiguredTransport) {
  auto target = Add("vol", 16 * kMiB);
  ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDWR)};
  ASSERT_GE(f.fd, 0) << std::strerror(errno);
  std::vector<uint8_t> block(4096);
  // The rings register just after INIT: until every queue has an entry the
  // kernel still uses /dev/fuse, so write until a request took a ring.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  uint64_t i = 0;
  do {
    std::memset(block.data(), static_cast<int>(i & 0xff), block.size());
    ASSERT_EQ(pwrite(f.fd, block.data(), block.size(), static_cast<off_t>((i % 4096) * 4096)), 4096);
    ++i;
  } while (GetParam() == FuseTransport::kIoUring && exporter_->TransportInfo().ring_requests == 0 &&
           std::chrono::steady_clock::now() < deadline);
  FuseTransportInfo info = exporter_->TransportInfo();
  if (GetParam() == FuseTransport::kDevFuse) {
    EXPECT_EQ(info.transport, "/dev/fuse");
    EXPECT_EQ(info.rings, 0);
    return;
  }
  EXPECT_EQ(info.transport, "io_uring");
  EXPECT_EQ(info.rings, 2 * get_nprocs_conf());
  ASSERT_GT(info.ring_requests, 0u);
  // From here on every write is served by a ring, and each lands.
  const uint64_t before = info.ring_requests;
  for (int k = 0; k < 200; ++k) {
    std::memset(block.data(), k, block.size());
    ASSERT_EQ(pwrite(f.fd, block.data(), block.size(), static_cast<off_t>(k) * 4096), 4096);
    EXPECT_EQ(target->Snapshot(static_cast<uint64_t>(k) * 4096, 4096), block);
  }
  EXPECT_GE(exporter_->TransportInfo().ring_requests, before + 200);
}

// Many writers on every CPU at once, with payloads of every size up to the
// 1 MiB maximum: what each wrote reads back, through the same transport.
TEST_P(FuseExporterTest, ConcurrentMixedSizesReadBackExactly) {
  auto target = Add("vol", 64 * kMiB);
  constexpr int kWriters = 6;
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      ScopedFd f{::open(exporter_->PathOf("vol").c_str(), O_RDWR | O_DIRECT)};
      if (f.fd < 0) return (void)failures++;
      std::mt19937_64 rng(w);
      void* mem = std::aligned_alloc(4096, kMiB);
      void* back = std::aligned_alloc(4096, kMiB);
      // Each writer owns a 10 MiB slice, so its reads see its own writes.
      const uint64_t base = static_cast<uint64_t>(w) * 10 * kMiB;
      for (int k = 0; k < 60; ++k) {
        const size_t len = 4096 * (1 + rng() % 256);
        const uint64_t off = base + 4096 * (rng() % ((9 * kMiB) / 4096));
        std::memset(mem, static_cast<int>(rng() & 0xff), len);
        if (pwrite(f.fd, mem, len, static_cast<off_t>(off)) != static_cast<ssize_t>(len)) failures++;
        if (k % 7 == 0 && fdatasync(f.fd) != 0) failures++;
        if (pread(f.fd, back, len, static_cast<off_t>(off)) != static_cast<ssize_t>(len) ||
            std::memcmp(mem, back, len) != 0) {
          failures++;
        }
      }
      std::free(mem);
      std::free(back);
    });
  }
  for (auto& t : writers) t.join();
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, FuseExporterTest,
                         ::testing::Values(FuseTransport::kDevFuse, FuseTransport::kIoUring),
                         [](const ::testing::TestParamInfo<FuseTransport>& info) {
                           return std::string(info.param == FuseTransport::kDevFuse ? "DevFuse" : "IoUring");
                         });

}  // namespace
}  // namespace continuum::capture
