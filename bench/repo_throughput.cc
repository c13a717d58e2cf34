// Single-thread throughput of the backup repository write path on 1 GiB of mixed
// data (half random, half text-like): FastCDC -> keyed SHA-256 -> zstd ->
// AES-256-GCM -> pack, with and without the disk. Not built by CMake; see the
// compile line in the session report or:
//   g++ -O2 -std=c++20 -Iinclude -Isrc bench/repo_throughput.cc \
//     build-repo/libcontinuum_repo.a build-repo/libcontinuum_io.a build-repo/libcontinuum_common.a \
//     -lzstd -lcrypto -lsodium -lxxhash -lspdlog -lfmt -o /tmp/repo_throughput
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <zstd.h>

#include "continuum/repo/fast_cdc_chunker.h"
#include "continuum/repo/local_backend.h"
#include "continuum/repo/repository.h"
#include "repo/crypto.h"

using namespace continuum;
using namespace continuum::repo;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// 64 MiB blocks, alternating random and log-like text, never repeating.
void FillBlock(std::vector<uint8_t>& b, uint64_t block, const std::vector<std::string>& vocab) {
  std::mt19937_64 rng(block * 7919 + 1);
  if (block % 2 == 0) {
    for (size_t i = 0; i + 8 <= b.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(&b[i], &v, 8);
    }
    return;
  }
  size_t pos = 0;
  char line[256];
  while (pos < b.size()) {
    int n = std::snprintf(line, sizeof(line), "2026-11-%02d %02d:%02d:%02d.%06u host%u ", int(rng() % 28 + 1),
                          int(rng() % 24), int(rng() % 60), int(rng() % 60), unsigned(rng() % 1000000),
                          unsigned(rng() % 50));
    std::string s(line, n);
    int words = 4 + rng() % 12;
    for (int w = 0; w < words; ++w) s += vocab[rng() % vocab.size()] + " ";
    s += std::to_string(rng() % 100000) + "\n";
    size_t take = std::min(s.size(), b.size() - pos);
    std::memcpy(&b[pos], s.data(), take);
    pos += take;
  }
}

// Discards packs and index files: measures the CPU pipeline alone.
class NullBackend : public LocalBackend {
 public:
  using LocalBackend::LocalBackend;
  Status Write(FileKind kind, const std::string& name, std::span<const uint8_t> data, bool replace) override {
    if (kind == FileKind::kPack || kind == FileKind::kIndex) return Status::Ok();
    return LocalBackend::Write(kind, name, data, replace);
  }
};

}  // namespace

int main(int argc, char** argv) {
  uint64_t total = argc > 1 ? std::stoull(argv[1]) << 20 : 1ull << 30;
  std::string dir = argc > 2 ? argv[2] : "/var/tmp/continuum-repo-bench";
  int level = argc > 3 ? std::stoi(argv[3]) : 3;
  const size_t kBlock = 64u << 20;
  std::vector<std::string> vocab;
  std::mt19937_64 vr(42);
  for (int i = 0; i < 2000; ++i) {
    std::string w;
    int len = 2 + vr() % 9;
    for (int j = 0; j < len; ++j) w += char('a' + vr() % 26);
    vocab.push_back(w);
  }
  std::vector<uint8_t> block(kBlock);

  // Components, on one text block and one random block.
  {
    MasterKey k;
    k.data_key.fill(1);
    k.id_key.fill(2);
    auto crypto = std::move(*Crypto::Create(k));
    for (int kind = 0; kind < 2; ++kind) {
      FillBlock(block, kind, vocab);
      auto cdc = std::move(*FastCdcChunker::Create({}));
      std::vector<std::pair<size_t, size_t>> chunks;
      double t0 = Now();
      (void)cdc->Write(block, [&](const Chunk& c) {
        chunks.emplace_back(c.offset, c.data.size());
        return Status::Ok();
      });
      (void)cdc->Finish([&](const Chunk& c) {
        chunks.emplace_back(c.offset, c.data.size());
        return Status::Ok();
      });
      double t1 = Now();
      for (auto [o, n] : chunks) crypto->Id(BlobType::kData, {block.data() + o, n});
      double t2 = Now();
      std::vector<uint8_t> z(ZSTD_compressBound(9u << 20));
      size_t zbytes = 0;
      ZSTD_CCtx* cctx = ZSTD_createCCtx();
      for (auto [o, n] : chunks) zbytes += ZSTD_compressCCtx(cctx, z.data(), z.size(), block.data() + o, n, level);
      ZSTD_freeCCtx(cctx);
      double t3 = Now();
      std::vector<uint8_t> out;
      out.reserve(10u << 20);
      for (auto [o, n] : chunks) {
        out.clear();
        (void)crypto->SealAppend({}, {block.data() + o, n}, &out);
      }
      double t4 = Now();
      double mb = kBlock / 1e6;
      std::printf("%-6s chunks %zu (avg %.0f KiB) | fastcdc %.0f MB/s | hmac-sha256 %.0f MB/s | zstd %.0f MB/s "
                  "(ratio %.2f) | aes-256-gcm %.0f MB/s\n",
                  kind ? "text" : "random", chunks.size(), kBlock / 1024.0 / chunks.size(), mb / (t1 - t0),
                  mb / (t2 - t1), mb / (t3 - t2), double(kBlock) / zbytes, mb / (t4 - t3));
    }
  }

  for (int with_disk = 0; with_disk < 2; ++with_disk) {
    std::filesystem::remove_all(dir);
    InitOptions io;
    io.kdf = {.ops_limit = 1, .mem_limit = 8192};
    if (!Repository::Init(dir, {.password = "bench"}, io).ok()) return 1;
    std::unique_ptr<Backend> backend = with_disk ? std::make_unique<LocalBackend>(dir) : std::make_unique<NullBackend>(dir);
    OpenOptions oo;
    oo.compression_level = level;
    auto repo = Repository::Open(std::move(backend), {.password = "bench"}, oo);
    if (!repo.ok()) {
      std::fprintf(stderr, "%s\n", repo.status().ToString().c_str());
      return 1;
    }
    auto cdc = std::move(*FastCdcChunker::Create((*repo)->CdcOptions()));
    ChunkSink sink = [&](const Chunk& c) { return (*repo)->Put(BlobType::kData, c.data).status(); };
    double busy = 0;
    for (uint64_t done = 0, b = 0; done < total; done += kBlock, ++b) {
      FillBlock(block, b, vocab);  // not timed
      double t0 = Now();
      Status st = cdc->Write(block, sink);
      busy += Now() - t0;
      if (!st.ok()) {
        std::fprintf(stderr, "%s\n", st.ToString().c_str());
        return 1;
      }
    }
    double t0 = Now();
    if (!cdc->Finish(sink).ok() || !(*repo)->Flush().ok()) return 1;
    busy += Now() - t0;
    const auto& s = (*repo)->stats();
    std::printf("zstd level %d, %s: %.2f GiB in %.2f s = %.0f MB/s | blobs %lu, stored %.1f%% of input, packs %lu\n",
                level, with_disk ? "full pipeline + local disk (fsync per pack)" : "full pipeline, packs discarded",
                total / double(1ull << 30), busy, total / 1e6 / busy, (unsigned long)s.blobs_new,
                100.0 * s.stored_bytes_new / total, (unsigned long)s.packs_written);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
