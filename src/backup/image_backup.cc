#include "continuum/backup/image_backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <unordered_map>

#include "continuum/common/time_util.h"
#include "continuum/io/file.h"
#include "image_map.h"
#include "point_util.h"

namespace continuum::backup {
namespace {

// Collects the chunks of one map tree and stores it when full.
class MapBuilder {
 public:
  explicit MapBuilder(repo::Repository& repo) : repo_(repo) {}

  Status Add(uint64_t chunk_index, const repo::BlobId* id) {
    if (map_.slots.empty()) map_.first_chunk = chunk_index;
    if (!id) {
      map_.slots.push_back(kHoleSlot);
    } else {
      auto [it, inserted] = slot_of_.try_emplace(*id, static_cast<uint32_t>(tree_.refs.size()));
      if (inserted) tree_.refs.push_back(*id);
      map_.slots.push_back(it->second);
    }
    if (map_.slots.size() == kChunksPerMap) return Seal();
    return Status::Ok();
  }

  Status Seal() {
    if (map_.slots.empty()) return Status::Ok();
    tree_.payload = EncodeImageMap(map_);
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, repo_.PutTree(tree_));
    maps_.push_back(id);
    tree_ = {};
    map_ = {};
    slot_of_.clear();
    return Status::Ok();
  }

  const std::vector<repo::BlobId>& maps() const { return maps_; }

 private:
  repo::Repository& repo_;
  repo::Tree tree_;
  ImageMap map_;
  std::unordered_map<repo::BlobId, uint32_t, repo::BlobIdHash> slot_of_;
  std::vector<repo::BlobId> maps_;
};

}  // namespace

Result<PointInfo> BackupImage(repo::Repository& repo, const ImageBackupOptions& options, const ProgressFn& progress) {
  int64_t start_wall = WallNowNs();
  int64_t start = MonoNowNs();
  const repo::RepositoryStats before = repo.stats();
  CONTINUUM_ASSIGN_OR_RETURN(auto file, io::File::Open(options.source, O_RDONLY | O_CLOEXEC));
  // lseek works for block devices too (fstat reports size 0 for them).
  off_t end = ::lseek(file->fd(), 0, SEEK_END);
  if (end < 0) return PosixError("size of " + options.source, errno);
  const uint64_t size = static_cast<uint64_t>(end);
  ::posix_fadvise(file->fd(), 0, 0, POSIX_FADV_SEQUENTIAL);

  const uint32_t chunk_size = repo.FixedOptions().chunk_size;
  repo::FixedChunker chunker(repo.FixedOptions());
  MapBuilder maps(repo);
  const repo::ChunkSink sink = [&](const repo::Chunk& c) -> Status {
    uint64_t index = c.offset / chunk_size;
    if (c.zero) return maps.Add(index, nullptr);
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, repo.Put(repo::BlobType::kData, c.data));
    return maps.Add(index, &id);
  };

  // A multiple of the chunk size, so each read completes whole chunks.
  const uint64_t buf_size = std::max<uint64_t>(chunk_size, (8u << 20) / chunk_size * chunk_size);
  std::vector<uint8_t> buf(buf_size);
  Progress p{.bytes_total = size};
  for (uint64_t off = 0; off < size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    CONTINUUM_RETURN_IF_ERROR(file->PRead(off, std::span<uint8_t>(buf.data(), n)));
    CONTINUUM_RETURN_IF_ERROR(chunker.Write(std::span<const uint8_t>(buf.data(), n), sink));
    off += n;
    p.bytes_done = off;
    p.new_bytes = repo.stats().raw_bytes_new - before.raw_bytes_new;
    if (progress) progress(p);
  }
  CONTINUUM_RETURN_IF_ERROR(chunker.Finish(sink));
  CONTINUUM_RETURN_IF_ERROR(maps.Seal());

  repo::Tree root{.refs = maps.maps(),
                  .payload = EncodeImageRoot({.size = size, .chunk_size = chunk_size, .chunks_per_map = kChunksPerMap})};
  CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId root_id, repo.PutTree(root));

  PointInfo info;
  info.time_ns = start_wall;
  info.type = PointType::kImage;
  info.sources = {AbsolutePath(options.source)};
  info.host = HostName();
  info.tags = options.tags;
  info.size = size;
  info.files = 1;
  info.bytes_read = size;
  info.chunk_size = chunk_size;
  return SavePoint(repo, std::move(info), root_id, before, start);
}

}  // namespace continuum::backup
