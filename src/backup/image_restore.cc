#include "image_restore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>

#include "continuum/common/time_util.h"
#include "continuum/common/units.h"
#include "continuum/io/file.h"
#include "continuum/io/unique_fd.h"
#include "continuum/repo/blob_prefetcher.h"
#include "continuum/repo/chunker.h"
#include "image_map.h"
#include "point_util.h"
#include "restore_progress.h"
#include "sparse_write.h"

namespace continuum::backup {
namespace {

// What restore wrote (or an interrupted run wrote) at one chunk, for --verify:
// zeros or the data blob `id`.
struct Written {
  uint64_t offset;
  uint32_t length;
  bool zero;
  repo::BlobId id;
};

Status Verify(repo::Repository& repo, io::File& file, const std::vector<Written>& written, uint32_t chunk_size,
              RestoreReport* report) {
  CONTINUUM_RETURN_IF_ERROR(file.Sync());
  // Drop the page cache so the comparison reads the medium, not our own writes.
  ::posix_fadvise(file.fd(), 0, 0, POSIX_FADV_DONTNEED);
  std::vector<uint8_t> buf(chunk_size);
  for (const auto& w : written) {
    std::span<uint8_t> s(buf.data(), w.length);
    CONTINUUM_RETURN_IF_ERROR(file.PRead(w.offset, s));
    // The keyed id of what is there: no need to read the repository again, so
    // chunks a resumed restore skipped are verified as cheaply as the others.
    bool good = w.zero ? repo::IsAllZero(s) : repo.IdOf(repo::BlobType::kData, s) == w.id;
    if (!good) {
      return DataLoss("verify " + file.path() + ": bytes at offset " + std::to_string(w.offset) +
                      " differ from the point");
    }
    report->bytes_verified += w.length;
  }
  return Status::Ok();
}

}  // namespace

Result<RestoreReport> RestoreImage(repo::Repository& repo, const repo::ManifestId& point, const repo::BlobId& root_id,
                                   const RestoreOptions& options, const ProgressFn& progress) {
  const std::string what = "image point root " + root_id.Hex().substr(0, 12);
  CONTINUUM_ASSIGN_OR_RETURN(repo::Tree root_tree, repo.GetTree(root_id));
  CONTINUUM_ASSIGN_OR_RETURN(ImageRoot root, DecodeImageRoot(root_tree.payload, root_tree.refs.size(), what));
  const uint64_t chunks = root.size / root.chunk_size + (root.size % root.chunk_size ? 1 : 0);

  // The progress file is judged before the target is touched: a target that
  // holds another unfinished restore is refused as it is.
  struct stat st;
  bool device = ::stat(options.target.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
  RestoreProgressFile pf(RestoreProgressFile::ForImage(options.target, device, options.state_dir));
  RestoreProgress rec{.point = point,
                      .type = PointType::kImage,
                      .options = RestoreOptionsDigest(PointType::kImage, {}, root.chunk_size, root.size),
                      .done = 0,
                      .total = chunks,
                      .bytes_done = 0,
                      .bytes_total = root.size};
  CONTINUUM_ASSIGN_OR_RETURN(std::optional<RestoreProgress> prior, pf.Claim(rec, options.restart));
  DropUnusedProgress drop_unused(pf);

  int flags = options.verify ? O_RDWR : O_WRONLY;
  CONTINUUM_ASSIGN_OR_RETURN(auto file, io::File::Open(options.target, flags | O_CREAT | O_CLOEXEC, 0600));
  if (::fstat(file->fd(), &st) != 0) return PosixError("stat " + options.target, errno);
  device = S_ISBLK(st.st_mode);
  uint64_t resume = prior ? std::min(prior->done, chunks) : 0;
  if (device) {
    off_t end = ::lseek(file->fd(), 0, SEEK_END);
    if (end < 0) return PosixError("size of " + options.target, errno);
    if (static_cast<uint64_t>(end) < root.size) {
      return InvalidArgument("device " + options.target + " holds " + std::to_string(end) + " bytes, the image " +
                             std::to_string(root.size));
    }
  } else if (S_ISREG(st.st_mode)) {
    // A file of another size is not what the interrupted run left: start over.
    if (resume > 0 && static_cast<uint64_t>(st.st_size) != root.size) {
      if (options.notice) {
        options.notice("cannot resume the restore recorded in " + pf.path() + ": " + options.target + " holds " +
                       std::to_string(st.st_size) + " bytes, not " + std::to_string(root.size) + "; starting over");
      }
      resume = 0;
    }
    // Empty it first (past the resume point): every region the point has as
    // zeros becomes a hole, and WriteSparse may skip zero blocks.
    CONTINUUM_RETURN_IF_ERROR(file->Truncate(std::min(resume * root.chunk_size, root.size)));
    CONTINUUM_RETURN_IF_ERROR(file->Truncate(root.size));
  } else {
    return InvalidArgument(options.target + " is neither a regular file nor a block device");
  }
  // Ordering: the truncation is durable before a progress file claims the target.
  CONTINUUM_RETURN_IF_ERROR(file->Sync());
  rec.done = resume;
  rec.bytes_done = std::min(resume * root.chunk_size, root.size);
  CONTINUUM_RETURN_IF_ERROR(pf.Save(rec));

  RestoreReport report;
  report.files = 1;
  report.progress_file = pf.path();
  report.resumed = resume > 0;
  report.bytes_resumed = rec.bytes_done;
  if (report.resumed && options.notice) {
    options.notice("resuming restore of " + point.Hex().substr(0, 12) + " at " + FormatSize(rec.bytes_done) + " of " +
                   FormatSize(root.size) + " (chunk " + std::to_string(resume) + " of " + std::to_string(chunks) +
                   ", recorded in " + pf.path() + ")");
  }

  // Checkpoints: the chunks before `done` are made durable, then recorded, in
  // the background while the restore goes on (BackgroundCheckpointer).
  uint64_t unsynced_bytes = 0;
  int64_t last_checkpoint_ns = MonoNowNs();
  BackgroundCheckpointer checkpointer(pf, [&]() -> Status { return file->DataSync(); });
  auto checkpoint = [&](uint64_t done) -> Status {
    const bool due = unsynced_bytes >= options.checkpoint_bytes ||
                     MonoNowNs() - last_checkpoint_ns >= options.checkpoint_interval_ns;
    if (!due) return Status::Ok();
    rec.done = done;
    rec.bytes_done = std::min(done * root.chunk_size, root.size);
    unsynced_bytes = 0;
    last_checkpoint_ns = MonoNowNs();
    return checkpointer.Offer(rec);
  };

  std::vector<Written> written;
  const std::vector<uint8_t> zeros(device ? root.chunk_size : 0, 0);
  Progress p{.bytes_total = root.size, .files_done = 0};
  // Chunks are read, decrypted, decompressed and written at their offsets on
  // the prefetch workers (sinks), ahead of this thread, which takes them in
  // order (Next) to count and checkpoint them; the next map's chunks are
  // queued before this map's are taken.
  // Declared before the prefetcher, whose destructor waits for running sinks.
  // Past the page cache where the target allows (see WriteSparseDirect).
  const io::UniqueFd direct(io::ReopenDirect(file->fd()));
  auto write_chunk = [&](uint64_t offset, std::span<const uint8_t> data) -> Status {
    if (device) return WriteAllDirect(file->fd(), direct.get(), offset, data, options.target);
    // The file reads as zeros here: zero blocks inside chunks stay holes.
    return WriteSparseDirect(file->fd(), direct.get(), offset, data, options.target);
  };
  CONTINUUM_ASSIGN_OR_RETURN(auto prefetch, repo::BlobPrefetcher::Create(repo));
  struct QueuedMap {
    repo::Tree tree;
    ImageMap map;
  };
  std::deque<QueuedMap> queued;
  auto write_map = [&](const QueuedMap& q) -> Status {
    const ImageMap& map = q.map;
    for (size_t i = 0; i < map.slots.size(); ++i) {
      const uint64_t chunk = map.first_chunk + i;
      const uint64_t offset = chunk * root.chunk_size;
      const uint32_t length = static_cast<uint32_t>(std::min<uint64_t>(root.chunk_size, root.size - offset));
      const bool zero = map.slots[i] == kHoleSlot;
      Written w{.offset = offset,
                .length = length,
                .zero = zero,
                .id = zero ? repo::BlobId{} : q.tree.refs[map.slots[i]]};
      if (options.verify) written.push_back(w);
      p.bytes_done = offset + length;
      if (chunk < resume) continue;  // durable from the interrupted run; not queued
      if (zero) {
        if (device) {
          CONTINUUM_RETURN_IF_ERROR(file->PWrite(offset, std::span<const uint8_t>(zeros.data(), length)));
          report.bytes_written += length;
          unsynced_bytes += length;
        }
      } else {
        // Written by a worker (its length was checked when it was queued).
        CONTINUUM_RETURN_IF_ERROR(prefetch->Next().status());
        report.bytes_written += length;
        unsynced_bytes += length;
      }
      CONTINUUM_RETURN_IF_ERROR(checkpoint(chunk + 1));
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
    for (size_t i = 0; i < map.slots.size(); ++i) {
      if (map.slots[i] == kHoleSlot || first + i < resume) continue;
      const repo::BlobId& id = map_tree.refs[map.slots[i]];
      const uint64_t offset = (first + i) * root.chunk_size;
      const uint64_t length = std::min<uint64_t>(root.chunk_size, root.size - offset);
      CONTINUUM_ASSIGN_OR_RETURN(uint32_t len, prefetch->Enqueue(id, [&write_chunk, offset](auto data) {
                                   return write_chunk(offset, data);
                                 }));
      // Checked before anything is read: a sink never writes past its chunk.
      if (len != length) {
        prefetch->Abandon();
        return DataLoss(what + ": chunk " + id.Hex() + " at offset " + std::to_string(offset) + " holds " +
                        std::to_string(len) + " bytes, expected " + std::to_string(length));
      }
    }
    queued.push_back({.tree = std::move(map_tree), .map = std::move(map)});
    if (queued.size() > 1) {
      CONTINUUM_RETURN_IF_ERROR(write_map(queued.front()));
      queued.pop_front();
    }
  }
  for (; !queued.empty(); queued.pop_front()) CONTINUUM_RETURN_IF_ERROR(write_map(queued.front()));
  CONTINUUM_RETURN_IF_ERROR(checkpointer.Drain());
  if (progress) progress(p);
  CONTINUUM_RETURN_IF_ERROR(file->Sync());
  if (options.verify) {
    // Everything is durable: a run interrupted while verifying resumes to verify only.
    rec.done = chunks;
    rec.bytes_done = root.size;
    CONTINUUM_RETURN_IF_ERROR(pf.Save(rec));
    Status verified = Verify(repo, *file, written, root.chunk_size, &report);
    if (!verified.ok()) {
      // What is on the medium is wrong: the next run must write it again.
      pf.Remove().IgnoreError();
      return verified;
    }
  }
  CONTINUUM_RETURN_IF_ERROR(pf.Remove());
  return report;
}

}  // namespace continuum::backup
