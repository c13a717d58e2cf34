// Replica side of Volume: admitting the source's records (one by one or a
// frame's at a time) and seeding a replica at a seq.

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "continuum/common/time_util.h"
#include "continuum/volume/volume.h"

namespace continuum::volume {

namespace {

// Seqs a source may send: 0 means "assign one" in the pipeline, and seqs stay
// far from wrapping.
bool ValidSourceSeq(uint64_t seq) { return seq != 0 && seq <= static_cast<uint64_t>(INT64_MAX); }

}  // namespace

Result<Volume::Op> Volume::ReplicatedOp(const journal::RecordHeader& h, std::vector<uint8_t> data) const {
  auto kind = static_cast<journal::WriteKind>(h.kind);
  if (!ValidSourceSeq(h.seq)) {
    return InvalidArgument("volume " + cfg_.name + ": replicated record has seq " + std::to_string(h.seq) +
                           " (1 to 2^63-1 allowed)");
  }
  if (kind != journal::WriteKind::kWrite && kind != journal::WriteKind::kZero &&
      kind != journal::WriteKind::kBookmark) {
    return InvalidArgument("volume " + cfg_.name + ": cannot replicate record kind " + std::to_string(h.kind));
  }
  if (kind != journal::WriteKind::kBookmark &&
      (h.offset % cfg_.block_size != 0 || h.length % cfg_.block_size != 0 || h.offset > cfg_.size ||
       h.length > cfg_.size - h.offset ||
       h.length > kMaxZeroRecord || (kind == journal::WriteKind::kWrite && data.size() != h.length))) {
    return InvalidArgument("volume " + cfg_.name + ": replicated record seq " + std::to_string(h.seq) +
                           " has a bad range");
  }
  if (kind == journal::WriteKind::kBookmark && (data.empty() || data.size() > kMaxLabelBytes)) {
    return InvalidArgument("volume " + cfg_.name + ": replicated bookmark seq " + std::to_string(h.seq) +
                           " has a label of " + std::to_string(data.size()) + " bytes (1-" +
                           std::to_string(kMaxLabelBytes) + " allowed)");
  }
  Op op{.kind = kind, .offset = h.offset, .length = h.length, .flags = h.flags & ~journal::kFlagNoData,
        .given_seq = h.seq, .given_ts = h.ts_ns};
  if (kind == journal::WriteKind::kWrite) {
    auto buf = std::make_shared<io::AlignedBuffer>(data.size());
    std::memcpy(buf->data(), data.data(), data.size());
    op.data = std::move(buf);
  } else if (kind == journal::WriteKind::kBookmark) {
    op.label = std::move(data);
  }
  return op;
}

Status Volume::AdmitReplicated(const journal::RecordHeader& h, std::vector<uint8_t> data) {
  CONTINUUM_ASSIGN_OR_RETURN(Op op, ReplicatedOp(h, std::move(data)));
  return Commit(std::move(op)).status();
}

namespace {

// Replicated data writes are admitted in groups: consecutive writes to
// disjoint ranges, up to this many or this many bytes; larger writes go alone.
constexpr size_t kGroupWrites = 64;
constexpr uint64_t kGroupBytes = 16ull << 20;
constexpr uint64_t kGroupedWriteMax = 1ull << 20;
constexpr size_t kApplyThreads = 8;

}  // namespace

Status Volume::AdmitReplicatedBatch(std::vector<journal::RecordWithData>& records) {
  auto groupable = [&](const journal::RecordWithData& r) {
    return static_cast<journal::WriteKind>(r.header.kind) == journal::WriteKind::kWrite &&
           r.header.length <= kGroupedWriteMax;
  };
  for (size_t i = 0; i < records.size();) {
    if (!groupable(records[i])) {
      CONTINUUM_RETURN_IF_ERROR(AdmitReplicated(records[i].header, std::move(records[i].data)));
      ++i;
      continue;
    }
    std::vector<Op> group;
    uint64_t bytes = 0;
    for (; i < records.size() && group.size() < kGroupWrites && groupable(records[i]); ++i) {
      const journal::RecordHeader& h = records[i].header;
      const bool overlaps = std::any_of(group.begin(), group.end(), [&](const Op& o) {
        return o.offset < h.offset + h.length && h.offset < o.offset + o.length;
      });
      if (overlaps || (!group.empty() && bytes + h.length > kGroupBytes)) break;
      auto op = ReplicatedOp(h, std::move(records[i].data));
      if (!op.ok()) {
        // The records before the bad one are admitted, as one by one.
        CONTINUUM_RETURN_IF_ERROR(CommitGroup(group));
        return op.status();
      }
      bytes += op->length;
      group.push_back(std::move(*op));
    }
    CONTINUUM_RETURN_IF_ERROR(CommitGroup(group));
  }
  return Status::Ok();
}

Status Volume::CommitGroup(std::vector<Op>& group) {
  if (group.empty()) return Status::Ok();
  // The pipeline of Commit, one stage at a time for the whole group: the
  // synchronous reads of before-images and writes of the mirror overlap
  // across the group, and its writers share one sync of the undo journal
  // (ApplyToMirror). The ranges are disjoint, so the order of the mirror
  // writes does not matter; admission (seq, undo journal, write log) stays in
  // seq order.
  if (!apply_pool_) apply_pool_ = std::make_unique<TaskPool>(kApplyThreads - 1);
  const size_t n = group.size();
  std::vector<RangeLock> ranges;
  ranges.reserve(n);
  for (const Op& op : group) ranges.push_back(LockRange(op.offset, op.offset + op.length));
  // Journal-first (ADR 0012): small writes are in the journals once
  // admitted; the applier puts them in the mirror. The others go direct,
  // after earlier write-behind data in their ranges is in the mirror.
  std::vector<bool> behind(n, false);
  for (size_t k = 0; k < n; ++k) {
    behind[k] = WriteBehindFits(group[k]);
    if (!behind[k] && write_behind_max_ > 0) {
      CONTINUUM_RETURN_IF_ERROR(SettleWriteBehind(group[k].offset, group[k].offset + group[k].length));
    }
  }
  std::vector<io::AlignedBuffer> before(n);
  std::vector<Status> st(n);
  if (cdp_) {
    apply_pool_->Run(n, [&](size_t k) {
      if (behind[k]) return;  // the applier reads it
      before[k].Resize(group[k].length);
      st[k] = ReadLogical(group[k].offset, before[k].span());
    });
    for (const Status& s : st) CONTINUUM_RETURN_IF_ERROR(s);
  }
  std::vector<uint64_t> seqs(n, 0);
  Status admit_error;
  for (size_t k = 0; k < n; ++k) {
    auto seq = Admit(group[k], before[k], behind[k]);
    if (!seq.ok()) {
      admit_error = seq.status();  // the ones admitted before it are still applied
      break;
    }
    seqs[k] = *seq;
  }
  apply_pool_->Run(n, [&](size_t k) {
    if (seqs[k] == 0 || behind[k]) return;  // not admitted, a resend, or the applier's
    st[k] = ApplyToMirror(group[k]);
    Complete(seqs[k]);
  });
  for (size_t k = 0; k < n; ++k) {
    if (seqs[k] != 0 && !behind[k] && !st[k].ok()) return Fail(st[k]);
  }
  return admit_error;
}

Status Volume::WriteSeed(uint64_t offset, uint64_t length, std::span<const uint8_t> data) {
  const uint32_t bs = cfg_.block_size;
  if (!cfg_.replica) return FailedPrecondition("volume " + cfg_.name + " is not a replica: it cannot be seeded");
  if (offset % bs != 0 || length % bs != 0 || offset > cfg_.size || length > cfg_.size - offset || length == 0 ||
      (!data.empty() && data.size() != length)) {
    return InvalidArgument("volume " + cfg_.name + ": seed range at " + std::to_string(offset) + " is not valid");
  }
  {
    std::lock_guard lock(mu_);
    CONTINUUM_RETURN_IF_ERROR(CheckWritable());
    if (last_seq_ != 0) {
      return FailedPrecondition("replica " + cfg_.name + " already holds seq " + std::to_string(last_seq_) +
                                ": it cannot be seeded (delete it to start over)");
    }
  }
  RangeLock range = LockRange(offset, offset + length);
  Status st;
  if (data.empty()) {
    st = ZeroMirror(offset, length);
  } else if (mirror_direct_ && !io::AlignedBuffer::IsAligned(data.data(), data.size())) {
    io::AlignedBuffer buf(length);
    std::memcpy(buf.data(), data.data(), length);
    st = WriteMirror(offset, buf.span());
  } else {
    st = WriteMirror(offset, data);
  }
  if (!st.ok()) return st;
  tracker_->Mark(offset, length);
  return Status::Ok();
}

Status Volume::EndSeed(uint64_t seq, int64_t ts_ns) {
  if (!cfg_.replica) return FailedPrecondition("volume " + cfg_.name + " is not a replica: it cannot be seeded");
  if (!ValidSourceSeq(seq)) {
    return InvalidArgument("volume " + cfg_.name + ": a seed cannot end at seq " + std::to_string(seq));
  }
  // Ordering: mirror durable -> undo journal based at `seq` -> bitmaps and
  // checkpoint name `seq` -> the volume admits seq + 1 onwards. A crash before
  // the checkpoint leaves a volume holding no seq: the seed starts again.
  std::lock_guard ckpt(checkpoint_mu_);
  std::lock_guard append(append_mu_);
  {
    std::lock_guard lock(mu_);
    if (last_seq_ != 0 || !inflight_.empty()) {
      return FailedPrecondition("replica " + cfg_.name + " already holds seq " + std::to_string(last_seq_) +
                                ": it cannot be seeded");
    }
  }
  Status st = mirror_->DataSync();
  if (!st.ok()) return st.WithContext("volume " + cfg_.name + ": sync mirror after seeding");
  if (cdp_) CONTINUUM_RETURN_IF_ERROR(cdp_->Rebase({seq, ts_ns}));
  CONTINUUM_RETURN_IF_ERROR(tracker_->Save(seq));
  nlohmann::json j{{"applied_seq", seq}, {"ts_ns", WallNowNs()}, {"seeded_at", seq}};
  CONTINUUM_RETURN_IF_ERROR(io::WriteFileAtomic(dir_ + "/checkpoint.json", j.dump() + "\n"));
  checkpoint_seq_ = seq;
  std::lock_guard lock(mu_);
  last_seq_ = seq;
  applied_seq_ = seq;
  last_ts_ns_ = std::max(last_ts_ns_, ts_ns);
  admitted_cv_.notify_all();
  applied_cv_.notify_all();
  return Status::Ok();
}

}  // namespace continuum::volume
