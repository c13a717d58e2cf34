#include "image_tree_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <future>
#include <unordered_map>

#include "continuum/repo/blob_pipeline.h"
#include "continuum/repo/chunker.h"
#include "image_map.h"

namespace continuum::backup {
namespace {

// Collects the chunks of one map tree and stores it when full. Refs are kept
// in first-use order, so the same chunks always give the same map tree (an
// incremental point's unchanged maps dedup with a full point's).
class MapBuilder {
 public:
  explicit MapBuilder(repo::BlobPipeline& pipe) : pipe_(pipe) {}

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

  // Appends a whole map tree that is already stored (REQUIRES: no partial map open).
  void Reuse(const repo::BlobId& map) { maps_.push_back(map); }

  Status Seal() {
    if (map_.slots.empty()) return Status::Ok();
    tree_.payload = EncodeImageMap(map_);
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, pipe_.PutTree(tree_));
    maps_.push_back(id);
    tree_ = {};
    map_ = {};
    slot_of_.clear();
    return Status::Ok();
  }

  const std::vector<repo::BlobId>& maps() const { return maps_; }

 private:
  repo::BlobPipeline& pipe_;
  repo::Tree tree_;
  ImageMap map_;
  std::unordered_map<repo::BlobId, uint32_t, repo::BlobIdHash> slot_of_;
  std::vector<repo::BlobId> maps_;
};

uint64_t ChunkCount(uint64_t size, uint32_t chunk_size) { return size / chunk_size + (size % chunk_size ? 1 : 0); }

Result<repo::BlobId> SaveRoot(repo::BlobPipeline& pipe, const MapBuilder& maps, uint64_t size, uint32_t chunk_size) {
  repo::Tree root{.refs = maps.maps(),
                  .payload = EncodeImageRoot({.size = size, .chunk_size = chunk_size, .chunks_per_map = kChunksPerMap})};
  return pipe.PutTree(root);
}

// Reads the whole source sequentially.
Result<ImageTrees> WriteAll(repo::Repository& repo, repo::BlobPipeline& pipe, const ImageReadPlan& plan,
                            const ProgressFn& progress) {
  const uint32_t chunk_size = repo.FixedOptions().chunk_size;
  const repo::RepositoryStats before = repo.stats();
  ::posix_fadvise(plan.file->fd(), 0, 0, POSIX_FADV_SEQUENTIAL);
  repo::FixedChunker chunker(repo.FixedOptions());
  MapBuilder maps(pipe);
  const repo::ChunkSink sink = [&](const repo::Chunk& c) -> Status {
    uint64_t index = c.offset / chunk_size;
    if (c.zero) return maps.Add(index, nullptr);
    CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, pipe.Put(repo::BlobType::kData, c.data));
    return maps.Add(index, &id);
  };
  // A multiple of the chunk size, so each read completes whole chunks.
  const uint64_t buf_size = std::max<uint64_t>(chunk_size, (8u << 20) / chunk_size * chunk_size);
  std::vector<uint8_t> buf(buf_size);
  Progress p{.bytes_total = plan.size};
  // Holes of a sparse file are not read: reading them costs the kernel a
  // zero-filled page per 4 KiB, for chunks the map records as zero anyway.
  // (SEEK_DATA fails on block devices and some file systems: read it all.)
  const int fd = plan.file->fd();
  bool holes = ::lseek(fd, 0, SEEK_DATA) >= 0 || errno == ENXIO;
  for (uint64_t off = 0; off < plan.size;) {
    const uint64_t end = std::min<uint64_t>(off + buf.size(), plan.size);
    uint64_t data_from = off;  // where the next data starts (>= off)
    while (holes && off < end) {
      off_t data = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
      if (data < 0 && errno != ENXIO) {
        holes = false;
        break;
      }
      uint64_t data_at = data < 0 ? plan.size : static_cast<uint64_t>(data);
      data_from = std::max(off, data_at);
      // Whole chunks before the data are zero.
      uint64_t skip_to = std::min(end, data_at / chunk_size * chunk_size);
      if (skip_to > off) {
        CONTINUUM_RETURN_IF_ERROR(chunker.SkipZeros(skip_to - off, sink));
        off = skip_to;
        continue;
      }
      break;  // data within the next chunk: read from here
    }
    if (off >= end) {
      p.bytes_done = off;
      if (progress) progress(p);
      continue;
    }
    // Read up to the next hole that starts a chunk (or the window's end).
    uint64_t read_end = end;
    if (holes) {
      // From the data's start: SEEK_HOLE at a hole position returns itself.
      off_t hole = ::lseek(fd, static_cast<off_t>(data_from), SEEK_HOLE);
      if (hole >= 0) {
        uint64_t h = (static_cast<uint64_t>(hole) + chunk_size - 1) / chunk_size * chunk_size;
        read_end = std::clamp<uint64_t>(h, off + 1, end);
      }
    }
    size_t n = static_cast<size_t>(read_end - off);
    CONTINUUM_RETURN_IF_ERROR(plan.file->PRead(off, std::span<uint8_t>(buf.data(), n)));
    CONTINUUM_RETURN_IF_ERROR(chunker.Write(std::span<const uint8_t>(buf.data(), n), sink));
    off += n;
    p.bytes_done = off;
    p.new_bytes = repo.stats().raw_bytes_new - before.raw_bytes_new;
    if (progress) progress(p);
  }
  CONTINUUM_RETURN_IF_ERROR(chunker.Finish(sink));
  CONTINUUM_RETURN_IF_ERROR(maps.Seal());
  CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId root, SaveRoot(pipe, maps, plan.size, chunk_size));
  return ImageTrees{.root = root, .bytes_read = plan.size};
}

// The sorted, distinct chunk indexes that overlap `changed`.
std::vector<uint64_t> ChangedChunks(const std::vector<ChangedRange>& changed, uint64_t size, uint32_t chunk_size) {
  std::vector<uint64_t> out;
  for (const auto& r : changed) {
    if (r.length == 0 || r.offset >= size) continue;
    uint64_t end = std::min(size, r.offset + r.length);
    for (uint64_t c = r.offset / chunk_size; c <= (end - 1) / chunk_size; ++c) out.push_back(c);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// A run of consecutive changed chunks inside one map, read with one pread.
struct Run {
  uint64_t first_chunk = 0;
  uint64_t chunks = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Groups the changed chunks into runs of at most 8 MiB that never cross a map.
std::vector<Run> Runs(const std::vector<uint64_t>& changed, uint64_t size, uint32_t chunk_size) {
  std::vector<Run> runs;
  for (size_t i = 0; i < changed.size();) {
    const uint64_t c = changed[i];
    const uint64_t map_end = (c / kChunksPerMap + 1) * kChunksPerMap;
    uint64_t n = 1;
    while (i + n < changed.size() && changed[i + n] == c + n && c + n < map_end && n * chunk_size < (8u << 20)) ++n;
    const uint64_t off = c * chunk_size;
    runs.push_back({c, n, off, std::min<uint64_t>(n * chunk_size, size - off)});
    i += n;
  }
  return runs;
}

// Reads only the changed chunks; the rest comes from the parent's maps. The
// next run is read on a helper thread while the current one is stored (the
// repository itself stays on this thread).
Result<ImageTrees> WriteChanged(repo::Repository& repo, repo::BlobPipeline& pipe, const ImageReadPlan& plan,
                                const ProgressFn& progress) {
  const uint32_t chunk_size = repo.FixedOptions().chunk_size;
  const repo::RepositoryStats before = repo.stats();
  const std::string what = "parent image root " + plan.parent_root->Hex().substr(0, 12);
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree parent, repo.GetTree(*plan.parent_root));
  CONTINUUM_ASSIGN_OR_RETURN(ImageRoot proot, DecodeImageRoot(parent.payload, parent.refs.size(), what));
  if (proot.size != plan.size || proot.chunk_size != chunk_size || proot.chunks_per_map != kChunksPerMap) {
    return FailedPrecondition(what + " does not match the source's size or chunk size");
  }
  const uint64_t chunks = ChunkCount(plan.size, chunk_size);
  const std::vector<Run> runs = Runs(ChangedChunks(plan.changed, plan.size, chunk_size), plan.size, chunk_size);
  uint64_t to_read = 0;
  for (const auto& r : runs) to_read += r.length;

  using Buffer = std::vector<uint8_t>;
  auto read_run = [&plan](const Run& r, Buffer buf) -> Result<Buffer> {
    buf.resize(r.length);
    CONTINUUM_RETURN_IF_ERROR(plan.file->PRead(r.offset, std::span<uint8_t>(buf.data(), r.length)));
    return buf;
  };
  std::future<Result<Buffer>> ahead;
  if (!runs.empty()) ahead = std::async(std::launch::async, read_run, runs[0], Buffer());
  // Invariant: `ahead` holds the read of runs[next] while next < runs.size().
  // A future of std::async waits in its destructor, so an early return never
  // leaves the read running against `plan`.

  MapBuilder maps(pipe);
  Progress p{.bytes_total = to_read};
  Buffer spare;
  size_t next = 0;
  for (size_t m = 0; m < parent.refs.size(); ++m) {
    const uint64_t first = uint64_t{m} * kChunksPerMap;
    const uint64_t end = std::min<uint64_t>(first + kChunksPerMap, chunks);
    if (next == runs.size() || runs[next].first_chunk >= end) {
      maps.Reuse(parent.refs[m]);
      continue;
    }
    CONTINUUM_ASSIGN_OR_RETURN(repo::Tree ptree, repo.GetTree(parent.refs[m]));
    CONTINUUM_ASSIGN_OR_RETURN(ImageMap pmap, DecodeImageMap(ptree.payload, ptree.refs.size(), what));
    if (pmap.first_chunk != first || pmap.slots.size() != end - first) {
      return DataLoss(what + ": map " + std::to_string(m) + " does not cover its chunks");
    }
    for (uint64_t c = first; c < end;) {
      if (next == runs.size() || runs[next].first_chunk != c) {
        uint32_t slot = pmap.slots[c - first];
        CONTINUUM_RETURN_IF_ERROR(maps.Add(c, slot == kHoleSlot ? nullptr : &ptree.refs[slot]));
        ++c;
        continue;
      }
      const Run run = runs[next];
      Result<Buffer> got = ahead.get();
      if (!got.ok()) return got.status();
      Buffer buf = std::move(got).value();
      if (++next < runs.size()) ahead = std::async(std::launch::async, read_run, runs[next], std::move(spare));
      for (uint64_t i = 0; i < run.chunks; ++i) {
        std::span<const uint8_t> data(buf.data() + i * chunk_size,
                                      std::min<uint64_t>(chunk_size, run.length - i * chunk_size));
        if (repo::IsAllZero(data)) {
          CONTINUUM_RETURN_IF_ERROR(maps.Add(c + i, nullptr));
        } else {
          CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId id, pipe.Put(repo::BlobType::kData, data));
          CONTINUUM_RETURN_IF_ERROR(maps.Add(c + i, &id));
        }
      }
      spare = std::move(buf);
      p.bytes_done += run.length;
      p.new_bytes = repo.stats().raw_bytes_new - before.raw_bytes_new;
      if (progress) progress(p);
      c += run.chunks;
    }
    CONTINUUM_RETURN_IF_ERROR(maps.Seal());
  }
  CONTINUUM_ASSIGN_OR_RETURN(repo::BlobId root, SaveRoot(pipe, maps, plan.size, chunk_size));
  return ImageTrees{.root = root, .bytes_read = to_read};
}

}  // namespace

Result<ImageTrees> WriteImageTrees(repo::Repository& repo, const ImageReadPlan& plan, const ProgressFn& progress) {
  // Chunks are compressed and encrypted on a worker pool, stored in order.
  CONTINUUM_ASSIGN_OR_RETURN(auto pipe, repo::BlobPipeline::Create(repo));
  Result<ImageTrees> trees =
      plan.parent_root ? WriteChanged(repo, *pipe, plan, progress) : WriteAll(repo, *pipe, plan, progress);
  if (!trees.ok()) return trees.status();
  CONTINUUM_RETURN_IF_ERROR(pipe->Drain());
  return trees;
}

Result<bool> AllBlobsPresent(repo::Repository& repo, const repo::BlobId& root) {
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree top, repo.GetTree(root));
  for (const auto& map_id : top.refs) {
    if (!repo.Has(map_id)) return false;
    CONTINUUM_ASSIGN_OR_RETURN(repo::Tree map, repo.GetTree(map_id));
    for (const auto& chunk : map.refs) {
      if (!repo.Has(chunk)) return false;
    }
  }
  return true;
}

Result<bool> ParentFits(repo::Repository& repo, const repo::BlobId& parent_root, uint64_t size) {
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree parent, repo.GetTree(parent_root));
  CONTINUUM_ASSIGN_OR_RETURN(ImageRoot r, DecodeImageRoot(parent.payload, parent.refs.size(),
                                                          "parent image root " + parent_root.Hex().substr(0, 12)));
  return r.size == size && r.chunk_size == repo.FixedOptions().chunk_size && r.chunks_per_map == kChunksPerMap;
}

}  // namespace continuum::backup
