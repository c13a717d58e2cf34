#include "continuum/replication/verify.h"

#include <algorithm>
#include <cstring>

#include "continuum/common/checksum.h"
#include "continuum/net/tls.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {

Result<std::vector<uint64_t>> RangeChecksums(io::BlockTarget& target, uint64_t range_bytes) {
  if (range_bytes == 0) return InvalidArgument("verify range size must be positive");
  const uint64_t size = target.Size();
  std::vector<uint64_t> sums;
  sums.reserve((size + range_bytes - 1) / range_bytes);
  std::vector<uint8_t> buf(range_bytes);
  for (uint64_t off = 0; off < size; off += range_bytes) {
    uint64_t n = std::min(range_bytes, size - off);
    std::span<uint8_t> out(buf.data(), n);
    CONTINUUM_RETURN_IF_ERROR(target.Read(off, out));
    sums.push_back(Checksum64(out));
  }
  return sums;
}

std::vector<volume::ChangedExtent> DiffRanges(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b,
                                              uint64_t range_bytes, uint64_t size) {
  std::vector<volume::ChangedExtent> out;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i] == b[i]) continue;
    uint64_t off = i * range_bytes;
    uint64_t len = std::min(range_bytes, size - off);
    if (!out.empty() && out.back().offset + out.back().length == off) {
      out.back().length += len;
    } else {
      out.push_back({off, len});
    }
  }
  return out;
}

Result<std::vector<uint64_t>> FetchReplicaChecksums(const TargetOptions& opts, const VerifyRequest& req) {
  CONTINUUM_ASSIGN_OR_RETURN(auto conn, net::Dial(opts.address, opts.tls));
  CONTINUUM_RETURN_IF_ERROR(WriteJsonFrame(*conn, FrameType::kVerify,
                                           {{"version", kProtocolVersion}, {"source", opts.source_name},
                                            {"volume", req.volume}, {"size", req.size},
                                            {"block_size", req.block_size}, {"seq", req.seq},
                                            {"range_bytes", req.range_bytes}}));
  CONTINUUM_ASSIGN_OR_RETURN(Frame f, ReadFrame(*conn));
  if (f.type == FrameType::kError) {
    return FailedPrecondition("target " + opts.address +
                              " could not verify: " + ErrorMessage(f));
  }
  if (f.type != FrameType::kVerifySums) return DataLoss("target " + opts.address + " did not answer the verify");
  uint64_t expect = (req.size + req.range_bytes - 1) / req.range_bytes;
  if (f.payload.size() != expect * sizeof(uint64_t)) {
    return DataLoss("target " + opts.address + " sent " + std::to_string(f.payload.size() / 8) +
                    " checksums, expected " + std::to_string(expect));
  }
  std::vector<uint64_t> sums(expect);
  std::memcpy(sums.data(), f.payload.data(), f.payload.size());  // little-endian host (x86-64, aarch64)
  return sums;
}

}  // namespace continuum::replication
