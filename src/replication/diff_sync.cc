#include "continuum/replication/diff_sync.h"

#include <algorithm>
#include <cstring>

#include "continuum/common/checksum.h"
#include "continuum/common/json_field.h"
#include "continuum/common/log.h"
#include "continuum/net/tls.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {
namespace {

// Reads per call on the target (a BlockTarget read of the live replica).
constexpr uint64_t kReadPiece = 1ull << 20;
// Local reads go through Volume::ReadCurrent, which holds the volume's
// admission lock while it reads: small pieces keep the application's writes
// (and the stream's own resync reads) from waiting long behind them.
constexpr uint64_t kLocalReadPiece = 256ull << 10;

void AddExtent(std::vector<volume::ChangedExtent>* out, uint64_t off, uint64_t len) {
  if (!out->empty() && out->back().offset + out->back().length == off) {
    out->back().length += len;
  } else {
    out->push_back({off, len});
  }
}

}  // namespace

nlohmann::json DiffRequestJson(const DiffRequest& req) {
  nlohmann::json ranges = nlohmann::json::array();
  for (const auto& r : req.ranges) ranges.push_back({r.offset, r.length});
  return {{"range_bytes", req.piece}, {"ranges", ranges}};
}

uint64_t DiffPieceCount(const DiffRequest& req) {
  uint64_t n = 0;
  for (const auto& r : req.ranges) n += (r.length + req.piece - 1) / req.piece;
  return n;
}

Result<DiffRequest> ParseDiffRequest(const nlohmann::json& j, uint64_t volume_size) {
  DiffRequest req;
  auto piece = JsonField<uint64_t>(j, "range_bytes", 0);
  if (!piece.ok()) return piece.status().WithContext("bad differential sync request");
  req.piece = *piece;
  auto ranges = j.find("ranges");
  if (ranges == j.end() || !ranges->is_array()) {
    return InvalidArgument("bad differential sync request: \"ranges\" must be a list of [offset, length]");
  }
  for (const auto& r : *ranges) {
    const bool pair = r.is_array() && r.size() == 2;
    auto off = pair ? JsonValue<uint64_t>(r[0], "offset") : Result<uint64_t>(InvalidArgument("not a pair"));
    auto len = pair ? JsonValue<uint64_t>(r[1], "length") : Result<uint64_t>(InvalidArgument("not a pair"));
    if (!off.ok() || !len.ok()) {
      return InvalidArgument("bad differential sync request: a range must be [offset, length], not " +
                             r.dump().substr(0, 40));
    }
    req.ranges.push_back({*off, *len});
  }
  if (req.piece < 4096 || req.piece > (64ull << 20) || req.piece % 4096 != 0) {
    return InvalidArgument("differential sync range of " + std::to_string(req.piece) + " bytes is not supported");
  }
  for (const auto& r : req.ranges) {
    if (r.length == 0 || r.offset > volume_size || r.length > volume_size - r.offset) {
      return InvalidArgument("differential sync range " + std::to_string(r.offset) + "+" + std::to_string(r.length) +
                             " is outside the volume");
    }
  }
  if (DiffPieceCount(req) > kMaxFramePayload / sizeof(uint64_t)) {
    return InvalidArgument("differential sync request asks for too many checksums");
  }
  return req;
}

void AppendPieceSums(std::span<const uint8_t> data, uint64_t piece, std::vector<uint64_t>* out) {
  for (size_t pos = 0; pos < data.size(); pos += piece) {
    out->push_back(Checksum64(data.subspan(pos, std::min<size_t>(piece, data.size() - pos))));
  }
}

Result<std::vector<uint64_t>> ServeDiffRequest(io::BlockTarget& target, const DiffRequest& req) {
  std::vector<uint64_t> sums;
  sums.reserve(DiffPieceCount(req));
  std::vector<uint8_t> buf;
  // Whole pieces per read, so a piece never spans two reads.
  const uint64_t step = std::max(kReadPiece / req.piece, uint64_t{1}) * req.piece;
  for (const auto& r : req.ranges) {
    const uint64_t end = r.offset + r.length;
    for (uint64_t off = r.offset; off < end; off += step) {
      buf.resize(std::min(step, end - off));
      CONTINUUM_RETURN_IF_ERROR(target.Read(off, buf));
      AppendPieceSums(buf, req.piece, &sums);
    }
  }
  return sums;
}

std::vector<volume::ChangedExtent> DifferingPieces(const DiffRequest& req, const std::vector<uint64_t>& local,
                                                   const std::vector<uint64_t>& remote) {
  std::vector<volume::ChangedExtent> out;
  size_t i = 0;
  for (const auto& r : req.ranges) {
    for (uint64_t off = r.offset; off < r.offset + r.length; off += req.piece, ++i) {
      if (i >= local.size() || i >= remote.size()) return out;
      if (local[i] != remote[i]) AddExtent(&out, off, std::min(req.piece, r.offset + r.length - off));
    }
  }
  return out;
}

std::unique_ptr<DiffSync> DiffSync::Start(std::shared_ptr<volume::Volume> volume, TargetOptions opts) {
  std::unique_ptr<DiffSync> d(new DiffSync(std::move(volume), std::move(opts)));
  d->thread_ = std::thread([raw = d.get()] { raw->Run(); });
  return d;
}

DiffSync::~DiffSync() {
  stop_ = true;
  {
    std::lock_guard lock(mu_);
    if (conn_) conn_->Shutdown();
  }
  if (thread_.joinable()) thread_.join();
}

DiffSyncProgress DiffSync::Progress() const {
  std::lock_guard lock(mu_);
  return progress_;
}

Status DiffSync::AppendResync(const std::vector<volume::ChangedExtent>& extents) {
  if (extents.empty()) return Status::Ok();
  CONTINUUM_ASSIGN_OR_RETURN(uint64_t last, volume_->AppendResync(extents));
  uint64_t bytes = 0;
  for (const auto& e : extents) bytes += e.length;
  std::lock_guard lock(mu_);
  progress_.last_seq = std::max(progress_.last_seq, last);
  progress_.differing_bytes += bytes;
  return Status::Ok();
}

void DiffSync::Run() {
  uint64_t next = 0;
  Status st = Compare(&next);
  if (stop_) return;
  const uint64_t size = volume_->config().size;
  if (!st.ok() && st.code() != StatusCode::kUnavailable && st.code() != StatusCode::kDataLoss && next < size) {
    // The target cannot compare (an older server, or a refusal): resend the
    // rest whole, which is always correct.
    Logger("replication")->warn("{} -> {}: differential sync: {}; resending from offset {} whole", opts_.volume,
                                opts_.address, st.message(), next);
    st = AppendResync({{next, size - next}});
    std::lock_guard lock(mu_);
    progress_.fallback = true;
  }
  std::lock_guard lock(mu_);
  if (st.ok()) {
    progress_.finished = true;
  } else {
    progress_.error = st;
  }
}

Status DiffSync::SendRequest(net::Connection& conn, const DiffRequest& req) {
  std::string s = DiffRequestJson(req).dump();
  CONTINUUM_RETURN_IF_ERROR(
      WriteFrame(conn, FrameType::kDiffRequest, {reinterpret_cast<const uint8_t*>(s.data()), s.size()}));
  std::lock_guard lock(mu_);
  progress_.request_bytes += s.size() + 32;
  return Status::Ok();
}

Result<std::vector<uint64_t>> DiffSync::ReadSums(net::Connection& conn, const DiffRequest& req) {
  CONTINUUM_ASSIGN_OR_RETURN(Frame f, ReadFrame(conn));
  if (f.type == FrameType::kError) {
    return FailedPrecondition("target " + opts_.address +
                              " cannot compare: " + ErrorMessage(f));
  }
  uint64_t expect = DiffPieceCount(req);
  if (f.type != FrameType::kDiffSums || f.payload.size() != expect * sizeof(uint64_t)) {
    return DataLoss("target " + opts_.address + " sent a bad differential sync answer");
  }
  std::vector<uint64_t> sums(expect);
  std::memcpy(sums.data(), f.payload.data(), f.payload.size());  // little-endian host (x86-64, aarch64)
  std::lock_guard lock(mu_);
  progress_.sums_bytes += f.payload.size() + 32;
  return sums;
}

Status DiffSync::Compare(uint64_t* next_offset) {
  const auto& cfg = volume_->config();
  const uint64_t size = cfg.size;
  const uint64_t block = cfg.block_size;
  CONTINUUM_ASSIGN_OR_RETURN(auto conn, net::Dial(opts_.address, opts_.tls));
  {
    std::lock_guard lock(mu_);
    conn_ = conn.get();
  }
  struct Reset {
    DiffSync* d;
    ~Reset() {
      std::lock_guard lock(d->mu_);
      d->conn_ = nullptr;
    }
  } reset{this};
  if (stop_) return Unavailable("stopped");
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kDiff,
                                           {{"version", kProtocolVersion}, {"source", opts_.source_name},
                                            {"volume", opts_.volume}, {"size", size}, {"block_size", block}}));
  CONTINUUM_ASSIGN_OR_RETURN(Frame hello, ReadFrame(*conn));
  if (hello.type == FrameType::kError) {
    return FailedPrecondition("target " + opts_.address +
                              " refused differential sync: " + ErrorMessage(hello));
  }
  if (hello.type != FrameType::kHelloAck) return FailedPrecondition("target " + opts_.address + " cannot compare");

  auto coarse = [&](uint64_t off) {
    return DiffRequest{.piece = kDiffCoarseBytes, .ranges = {{off, std::min(kDiffChunkBytes, size - off)}}};
  };
  std::vector<uint8_t> buf(kDiffChunkBytes);
  if (size > 0) CONTINUUM_RETURN_IF_ERROR(SendRequest(*conn, coarse(0)));
  // Invariant: the coarse request for the chunk at `off` is on the wire, and
  // everything before `off` is compared (differences appended).
  for (uint64_t off = 0; off < size && !stop_;) {
    *next_offset = off;
    DiffRequest req = coarse(off);
    const uint64_t len = req.ranges[0].length;
    uint64_t read_seq = 0;
    for (uint64_t pos = 0; pos < len; pos += kLocalReadPiece) {
      std::span<uint8_t> piece(buf.data() + pos, std::min(kLocalReadPiece, len - pos));
      CONTINUUM_ASSIGN_OR_RETURN(uint64_t s, volume_->ReadCurrent(off + pos, piece));
      read_seq = std::max(read_seq, s);
    }
    std::span<const uint8_t> data(buf.data(), len);
    std::vector<uint64_t> local;
    AppendPieceSums(data, kDiffCoarseBytes, &local);
    CONTINUUM_ASSIGN_OR_RETURN(auto remote, ReadSums(*conn, req));
    DiffRequest fine{.piece = block, .ranges = DifferingPieces(req, local, remote)};
    if (!fine.ranges.empty()) CONTINUUM_RETURN_IF_ERROR(SendRequest(*conn, fine));
    // The target checksums the next chunk while we compare blocks here.
    if (off + len < size) CONTINUUM_RETURN_IF_ERROR(SendRequest(*conn, coarse(off + len)));
    if (!fine.ranges.empty()) {
      std::vector<uint64_t> local_fine;
      for (const auto& r : fine.ranges) AppendPieceSums(data.subspan(r.offset - off, r.length), block, &local_fine);
      CONTINUUM_ASSIGN_OR_RETURN(auto remote_fine, ReadSums(*conn, fine));
      CONTINUUM_RETURN_IF_ERROR(AppendResync(DifferingPieces(fine, local_fine, remote_fine)));
    }
    {
      std::lock_guard lock(mu_);
      progress_.compared_bytes += len;
      // Equal ranges are equal as of read_seq: the window must reach it.
      progress_.last_seq = std::max(progress_.last_seq, read_seq);
    }
    off += len;
    *next_offset = off;
  }
  if (stop_) return Unavailable("stopped");
  return Status::Ok();
}

}  // namespace continuum::replication
