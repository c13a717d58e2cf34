// Tests io::ReadMountInfo against this machine's real mounts.
#include "continuum/io/mount_info.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

namespace continuum::io {
namespace {

TEST(MountInfoTest, RootMountHasTheDeviceOfItsFiles) {
  struct stat st;
  const std::vector<MountEntry> mounts = ReadMountInfo();
  ASSERT_EQ(::stat("/", &st), 0);
  const MountEntry* root = nullptr;
  for (const MountEntry& m : mounts) {
    if (m.mount_point == "/") root = &m;  // the last one is on top
  }
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->dev, st.st_dev);
  EXPECT_FALSE(root->fstype.empty());
  EXPECT_FALSE(root->super_options.empty());
}

}  // namespace
}  // namespace continuum::io
