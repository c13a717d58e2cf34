#include "continuum/replication/codec.h"

#include <cstring>

#include <zstd.h>
#ifdef CONTINUUM_HAVE_LZ4
#include <lz4.h>
#endif

#include "continuum/common/units.h"

namespace continuum::replication {
namespace {

// Level 1: the stream must keep up with the writes; ratio matters less.
constexpr int kZstdLevel = 1;

}  // namespace

Result<Codec> ParseCodec(const std::string& s) {
  if (s.empty() || s == "none") return Codec::kNone;
  if (s == "zstd") return Codec::kZstd;
  if (s == "lz4") {
#ifdef CONTINUUM_HAVE_LZ4
    return Codec::kLz4;
#else
    return FailedPrecondition("--compress lz4: this build has no lz4 (install liblz4-dev and rebuild)");
#endif
  }
  return InvalidArgument("invalid --compress '" + s + "': use zstd, lz4 or none");
}

std::string CodecName(Codec c) {
  switch (c) {
    case Codec::kZstd: return "zstd";
    case Codec::kLz4: return "lz4";
    case Codec::kNone: return "none";
  }
  return "none";
}

Result<Encoded> Encode(Codec codec, std::span<const uint8_t> in) {
  Encoded out;
  if (codec == Codec::kZstd) {
    out.bytes.resize(ZSTD_compressBound(in.size()));
    size_t n = ZSTD_compress(out.bytes.data(), out.bytes.size(), in.data(), in.size(), kZstdLevel);
    if (ZSTD_isError(n)) return Internal(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
    out.bytes.resize(n);
    out.flags = kFrameFlagZstd;
  }
#ifdef CONTINUUM_HAVE_LZ4
  if (codec == Codec::kLz4) {
    // lz4 blocks do not record their size: a u32 original length comes first.
    if (in.size() > static_cast<size_t>(LZ4_MAX_INPUT_SIZE)) return InvalidArgument("lz4 input too large");
    uint32_t len = static_cast<uint32_t>(in.size());
    out.bytes.resize(4 + LZ4_compressBound(static_cast<int>(in.size())));
    std::memcpy(out.bytes.data(), &len, 4);
    int n = LZ4_compress_default(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(out.bytes.data() + 4),
                                 static_cast<int>(in.size()), static_cast<int>(out.bytes.size() - 4));
    if (n <= 0) return Internal("lz4 compression failed");
    out.bytes.resize(4 + static_cast<size_t>(n));
    out.flags = kFrameFlagLz4;
  }
#endif
  if (out.bytes.size() >= in.size()) return Encoded{};  // incompressible: plain is cheaper to receive
  return out;
}

Result<std::vector<uint8_t>> Decode(uint16_t flags, std::span<const uint8_t> in, size_t max_out) {
  uint16_t codec = flags & kFrameCodecMask;
  if (codec == 0) return std::vector<uint8_t>(in.begin(), in.end());
  if (codec == kFrameFlagZstd) {
    unsigned long long size = ZSTD_getFrameContentSize(in.data(), in.size());
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > max_out) {
      return DataLoss("zstd frame payload has a bad or oversized content size");
    }
    std::vector<uint8_t> out(size);
    size_t n = ZSTD_decompress(out.data(), out.size(), in.data(), in.size());
    if (ZSTD_isError(n) || n != size) return DataLoss(std::string("zstd payload does not decode: ") + ZSTD_getErrorName(n));
    return out;
  }
#ifdef CONTINUUM_HAVE_LZ4
  if (codec == kFrameFlagLz4) {
    uint32_t len = 0;
    if (in.size() < 4) return DataLoss("lz4 payload is truncated");
    std::memcpy(&len, in.data(), 4);
    if (len > max_out) return DataLoss("lz4 payload is oversized");
    std::vector<uint8_t> out(len);
    int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data() + 4), reinterpret_cast<char*>(out.data()),
                                static_cast<int>(in.size() - 4), static_cast<int>(len));
    if (n < 0 || static_cast<uint32_t>(n) != len) return DataLoss("lz4 payload does not decode");
    return out;
  }
#endif
  return DataLoss("frame uses an unknown or unsupported codec (flags " + std::to_string(flags) + ")");
}

Result<uint64_t> ParseRate(const std::string& s) {
  std::string t = s;
  if (t.size() > 2 && t.compare(t.size() - 2, 2, "/s") == 0) t.resize(t.size() - 2);
  if (t.empty()) return 0;
  auto r = ParseSize(t);
  if (!r.ok()) return InvalidArgument("invalid --bandwidth '" + s + "': expected bytes per second like 500K, 20M or 1G");
  return *r;
}

}  // namespace continuum::replication
