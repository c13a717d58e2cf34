#include "image_restore.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <deque>

#include "continuum/io/file.h"
#include "continuum/repo/blob_prefetcher.h"
#include "continuum/repo/chunker.h"
#include "image_map.h"
#include "point_util.h"
#include "sparse_write.h"

namespace continuum::backup {
namespace {

using Digest = std::array<uint8_t, SHA256_DIGEST_LENGTH>;

Digest Sha(std::span<const uint8_t> data) {
  Digest d;
  SHA256(data.data(), data.size(), d.data());
  return d;
}

// What restore wrote at one chunk, for --verify: zeros or these bytes.
struct Written {
  uint64_t offset;
  uint32_t length;
  bool zero;
  Digest digest;
};

Status Verify(io::File& file, const std::vector<Written>& written, uint32_t chunk_size, RestoreReport* report) {
  CONTINUUM_RETURN_IF_ERROR(file.Sync());
  // Drop the page cache so the comparison reads the medium, not our own writes.
  ::posix_fadvise(file.fd(), 0, 0, POSIX_FADV_DONTNEED);
  std::vector<uint8_t> buf(chunk_size);
  for (const auto& w : written) {
    std::span<uint8_t> s(buf.data(), w.length);
    CONTINUUM_RETURN_IF_ERROR(file.PRead(w.offset, s));
    bool good = w.zero ? repo::IsAllZero(s) : Sha(s) == w.digest;
    if (!good) {
      return DataLoss("verify " + file.path() + ": bytes at offset " + std::to_string(w.offset) +
                      " differ from the point");
    }
    report->bytes_verified += w.length;
  }
  return Status::Ok();
}

}  // namespace

Result<RestoreReport> RestoreImage(repo::Repository& repo, const repo::BlobId& root_id, const RestoreOptions& options,
                                   const ProgressFn& progress) {
  const std::string what = "image point root " + root_id.Hex().substr(0, 12);
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree root_tree, repo.GetTree(root_id));
  CONTINUUM_ASSIGN_OR_RETURN(ImageRoot root, DecodeImageRoot(root_tree.payload, root_tree.refs.size(), what));

  int flags = options.verify ? O_RDWR : O_WRONLY;
  CONTINUUM_ASSIGN_OR_RETURN(auto file, io::File::Open(options.target, flags | O_CREAT | O_CLOEXEC, 0600));
  struct stat st;
  if (::fstat(file->fd(), &st) != 0) return PosixError("stat " + options.target, errno);
  const bool device = S_ISBLK(st.st_mode);
  if (device) {
    off_t end = ::lseek(file->fd(), 0, SEEK_END);
    if (end < 0) return PosixError("size of " + options.target, errno);
    if (static_cast<uint64_t>(end) < root.size) {
      return InvalidArgument("device " + options.target + " holds " + std::to_string(end) + " bytes, the image " +
                             std::to_string(root.size));
    }
  } else if (S_ISREG(st.st_mode)) {
    // Empty it first: every region the point has as zeros becomes a hole.
    CONTINUUM_RETURN_IF_ERROR(file->Truncate(0));
    CONTINUUM_RETURN_IF_ERROR(file->Truncate(root.size));
  } else {
    return InvalidArgument(options.target + " is neither a regular file nor a block device");
  }

  RestoreReport report;
  report.files = 1;
  std::vector<Written> written;
  const std::vector<uint8_t> zeros(device ? root.chunk_size : 0, 0);
  const uint64_t chunks = root.size / root.chunk_size + (root.size % root.chunk_size ? 1 : 0);
  Progress p{.bytes_total = root.size, .files_done = 0};
  // Chunks are read, decrypted and decompressed on workers ahead of the writes
  // (in order); the next map's chunks are queued before this map's are written.
  CONTINUUM_ASSIGN_OR_RETURN(auto prefetch, repo::BlobPrefetcher::Create(repo));
  struct QueuedMap {
    repo::Tree tree;
    ImageMap map;
  };
  std::deque<QueuedMap> queued;
  auto write_map = [&](const QueuedMap& q) -> Status {
    const ImageMap& map = q.map;
    for (size_t i = 0; i < map.slots.size(); ++i) {
      const uint64_t offset = (map.first_chunk + i) * root.chunk_size;
      const uint32_t length = static_cast<uint32_t>(std::min<uint64_t>(root.chunk_size, root.size - offset));
      Written w{.offset = offset, .length = length, .zero = map.slots[i] == kHoleSlot, .digest = {}};
      if (w.zero) {
        if (device) {
          CONTINUUM_RETURN_IF_ERROR(file->PWrite(offset, std::span<const uint8_t>(zeros.data(), length)));
          report.bytes_written += length;
        }
      } else {
        const repo::BlobId& id = q.tree.refs[map.slots[i]];
        CONTINUUM_ASSIGN_OR_RETURN(std::vector<uint8_t> data, prefetch->Next());
        if (data.size() != length) {
          return DataLoss(what + ": chunk " + id.Hex() + " at offset " + std::to_string(offset) + " holds " +
                          std::to_string(data.size()) + " bytes, expected " + std::to_string(length));
        }
        if (device) {
          CONTINUUM_RETURN_IF_ERROR(file->PWrite(offset, data));
        } else {
          // The file was truncated to empty: zero blocks inside chunks stay holes.
          CONTINUUM_RETURN_IF_ERROR(WriteSparse(file->fd(), offset, data, options.target));
        }
        report.bytes_written += length;
        if (options.verify) w.digest = Sha(data);
      }
      if (options.verify) written.push_back(w);
      p.bytes_done = offset + length;
      if (progress) progress(p);
    }
    return Status::Ok();
  };
  for (size_t m = 0; m < root_tree.refs.size(); ++m) {
    CONTINUUM_ASSIGN_OR_RETURN(repo::Tree map_tree, repo.GetTree(root_tree.refs[m]));
    CONTINUUM_ASSIGN_OR_RETURN(ImageMap map, DecodeImageMap(map_tree.payload, map_tree.refs.size(), what));
    const uint64_t first = uint64_t{m} * root.chunks_per_map;
    if (map.first_chunk != first || map.slots.size() != std::min<uint64_t>(root.chunks_per_map, chunks - first)) {
      return DataLoss(what + ": map " + std::to_string(m) + " does not cover its chunks");
    }
    for (uint32_t slot : map.slots) {
      if (slot != kHoleSlot) CONTINUUM_RETURN_IF_ERROR(prefetch->Enqueue(map_tree.refs[slot]));
    }
    queued.push_back({.tree = std::move(map_tree), .map = std::move(map)});
    if (queued.size() > 1) {
      CONTINUUM_RETURN_IF_ERROR(write_map(queued.front()));
      queued.pop_front();
    }
  }
  for (; !queued.empty(); queued.pop_front()) CONTINUUM_RETURN_IF_ERROR(write_map(queued.front()));
  CONTINUUM_RETURN_IF_ERROR(file->Sync());
  if (options.verify) CONTINUUM_RETURN_IF_ERROR(Verify(*file, written, root.chunk_size, &report));
  return report;
}

}  // namespace continuum::backup
