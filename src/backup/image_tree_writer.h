#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "continuum/backup/image_backup.h"
#include "continuum/backup/progress.h"
#include "continuum/common/result.h"
#include "continuum/io/file.h"
#include "continuum/repo/repository.h"

namespace continuum::backup {

// What to read from an image source to store one image point.
struct ImageReadPlan {
  const io::File* file = nullptr;  // the source, read with pread
  uint64_t size = 0;               // bytes of the source
  // With a parent root: only the chunks that overlap `changed` are read; every
  // other chunk is taken from the parent's map (and a map tree whose chunks
  // are all unchanged is reused without being loaded). REQUIRES: the parent's
  // image has the same size and chunk size (see ParentFits).
  std::optional<repo::BlobId> parent_root;
  std::vector<ChangedRange> changed;
};

struct ImageTrees {
  repo::BlobId root;
  uint64_t bytes_read = 0;
};

// Stores the chunks and map trees of an image point (docs/format/backup.md,
// "Image points") and returns its root tree. Progress counts the bytes to read.
Result<ImageTrees> WriteImageTrees(repo::Repository& repo, const ImageReadPlan& plan, const ProgressFn& progress);

// True when every map tree and chunk of the point with root `root` is in the
// repository's index (a repair may have left damaged blobs out).
Result<bool> AllBlobsPresent(repo::Repository& repo, const repo::BlobId& root);

// True when the parent point's root describes an image of `size` bytes in
// the repository's chunk size, so its chunks line up with the source's.
Result<bool> ParentFits(repo::Repository& repo, const repo::BlobId& parent_root, uint64_t size);

}  // namespace continuum::backup
