// Covers src/repo/blob_pipeline.cc and blob_prefetcher.cc: parallel encoding
// stores the same blobs in the same order as Repository::Put; the prefetcher
// hands blobs out in queue order with Get's checks.
#include "continuum/repo/blob_pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <fstream>
#include <mutex>
#include <thread>

#include "continuum/repo/blob_prefetcher.h"
#include "continuum/repo/local_backend.h"
#include "repo_test_util.h"

namespace continuum::repo {
namespace {

namespace fs = std::filesystem;
using testing::Pw;
using testing::RandomBytes;
using testing::TextBytes;

class BlobPipelineTest : public testing::TempDirTest {
 protected:
  // Blobs of varied size and compressibility, with repeats (dedup inside the pipeline).
  static std::vector<std::vector<uint8_t>> Blobs() {
    std::vector<std::vector<uint8_t>> out;
    for (uint64_t i = 0; i < 60; ++i) {
      size_t n = 1000 + (i * 7919) % (96 << 10);
      out.push_back(i % 3 == 0 ? RandomBytes(n, i) : TextBytes(n, i));
      if (i % 10 == 9) out.push_back(out[i / 2]);
    }
    return out;
  }

  // Two copies of one fresh repository: they share the keys, so ids and
  // compressed sizes agree, and equal pack sizes mean equal packing order.
  std::pair<std::unique_ptr<Repository>, std::unique_ptr<Repository>> Twins(const fs::path& a, const fs::path& b) {
    EXPECT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
    fs::copy(repo_, a, fs::copy_options::recursive);
    fs::copy(repo_, b, fs::copy_options::recursive);
    auto ra = Repository::Open(a.string(), Pw(), testing::SmallPacks());
    auto rb = Repository::Open(b.string(), Pw(), testing::SmallPacks());
    if (!ra.ok() || !rb.ok()) return {};
    return {std::move(*ra), std::move(*rb)};
  }

  std::vector<uintmax_t> PackSizes(const fs::path& repo) {
    std::vector<uintmax_t> sizes;
    for (auto& e : fs::recursive_directory_iterator(repo / "data")) {
      if (e.is_regular_file()) sizes.push_back(e.file_size());
    }
    std::sort(sizes.begin(), sizes.end());
    return sizes;
  }
};

TEST_F(BlobPipelineTest, SameBlobsAndPacksAsSequentialPut) {
  const fs::path a = dir_ / "a", b = dir_ / "b";
  auto [ra, rb] = Twins(a, b);
  ASSERT_TRUE(ra && rb);
  const auto blobs = Blobs();
  std::vector<BlobId> ids_a;
  for (const auto& d : blobs) ids_a.push_back(*ra->Put(BlobType::kData, d));
  ASSERT_TRUE(ra->Flush().ok());

  std::vector<BlobId> ids_b;
  {
    auto p = BlobPipeline::Create(*rb, {.threads = 4, .max_pending_bytes = 200 << 10});
    ASSERT_TRUE(p.ok());
    for (const auto& d : blobs) {
      auto id = (*p)->Put(BlobType::kData, d);
      ASSERT_TRUE(id.ok()) << id.status().ToString();
      ids_b.push_back(*id);
    }
    ASSERT_TRUE((*p)->Drain().ok());
  }
  ASSERT_TRUE(rb->Flush().ok());

  EXPECT_EQ(ids_a, ids_b);
  EXPECT_EQ(ra->stats().blobs_new, rb->stats().blobs_new);
  EXPECT_EQ(ra->stats().blobs_deduplicated, rb->stats().blobs_deduplicated);
  EXPECT_EQ(ra->stats().raw_bytes_new, rb->stats().raw_bytes_new);
  EXPECT_EQ(ra->stats().stored_bytes_new, rb->stats().stored_bytes_new);
  EXPECT_EQ(ra->stats().packs_written, rb->stats().packs_written);
  EXPECT_EQ(PackSizes(a), PackSizes(b));
  for (size_t i = 0; i < blobs.size(); ++i) {
    auto got = rb->Get(ids_b[i]);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, blobs[i]);
  }
  auto check = rb->Check(/*read_data=*/true);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok());
}

TEST_F(BlobPipelineTest, TreesFollowTheirRefsAndManifestsSave) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  auto p = BlobPipeline::Create(*r, {.threads = 3});
  ASSERT_TRUE(p.ok());
  auto d1 = (*p)->Put(BlobType::kData, TextBytes(50000, 1));
  auto d2 = (*p)->Put(BlobType::kData, RandomBytes(70000, 2));
  ASSERT_TRUE(d1.ok() && d2.ok());
  // Refs still in the pipeline count as stored; an unknown ref does not.
  auto t = (*p)->PutTree({.refs = {*d1, *d2}, .payload = {1, 2, 3}});
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  BlobId unknown;
  unknown.bytes[0] = 7;
  EXPECT_EQ((*p)->PutTree({.refs = {unknown}}).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*p)->Drain().ok());
  auto m = r->SaveManifest({.time_ns = 1, .roots = {*t}});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  r.reset();
  auto again = Reopen();
  auto blobs = again->ManifestBlobs(*m);
  ASSERT_TRUE(blobs.ok()) << blobs.status().ToString();
  EXPECT_EQ(blobs->size(), 3u);
  EXPECT_EQ(*again->Get(*d2), RandomBytes(70000, 2));
}

TEST_F(BlobPipelineTest, UndrainedBlobsAreDroppedLikeACrash) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  {
    auto p = BlobPipeline::Create(*r);
    ASSERT_TRUE(p.ok());
    for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE((*p)->Put(BlobType::kData, RandomBytes(30000, i)).ok());
  }  // destroyed without Drain: nothing dangles, the repository still opens and checks
  r.reset();
  auto again = Reopen();
  auto check = again->Check(true);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok());
}

// Hashing on the workers (PutLater, Resolve) stores exactly what Put would:
// same ids, duplicates stored once, packs in Resolve order; a ticket that is
// never resolved stores nothing.
TEST_F(BlobPipelineTest, PutLaterStoresWhatPutWouldAndAnUnresolvedTicketNothing) {
  const fs::path a = dir_ / "a", b = dir_ / "b";
  auto [ra, rb] = Twins(a, b);
  ASSERT_TRUE(ra && rb);
  const auto blobs = Blobs();
  std::vector<BlobId> ids_a, ids_b;
  {
    auto p = BlobPipeline::Create(*ra, {.threads = 3, .max_pending_bytes = 200 << 10});
    ASSERT_TRUE(p.ok());
    for (const auto& d : blobs) ids_a.push_back(*(*p)->Put(BlobType::kData, d));
    ASSERT_TRUE((*p)->Drain().ok());
  }
  BlobId never;
  {
    auto p = BlobPipeline::Create(*rb, {.threads = 3, .max_pending_bytes = 200 << 10});
    ASSERT_TRUE(p.ok());
    // Up to 7 tickets in flight, resolved oldest first, as a backup does.
    std::deque<BlobPipeline::Ticket> tickets;
    for (const auto& d : blobs) {
      tickets.push_back((*p)->PutLater(BlobType::kData, d));
      while (tickets.size() > 7) {
        auto id = (*p)->Resolve(tickets.front());
        ASSERT_TRUE(id.ok()) << id.status().ToString();
        ids_b.push_back(*id);
        tickets.pop_front();
      }
    }
    for (; !tickets.empty(); tickets.pop_front()) ids_b.push_back(*(*p)->Resolve(tickets.front()));
    auto extra = RandomBytes(5000, 999);
    never = ra->IdOf(BlobType::kData, extra);
    (*p)->PutLater(BlobType::kData, extra);  // dropped
    ASSERT_TRUE((*p)->Drain().ok());
  }
  ASSERT_TRUE(ra->Flush().ok());
  ASSERT_TRUE(rb->Flush().ok());
  EXPECT_EQ(ids_a, ids_b);
  EXPECT_EQ(ra->stats().blobs_new, rb->stats().blobs_new);
  EXPECT_EQ(ra->stats().blobs_deduplicated, rb->stats().blobs_deduplicated);
  EXPECT_EQ(PackSizes(a), PackSizes(b));
  EXPECT_FALSE(rb->Has(never));
  for (size_t i = 0; i < blobs.size(); ++i) EXPECT_EQ(*rb->Get(ids_b[i]), blobs[i]);
}

// Packs are stored on a background thread while the next one fills: a store
// that fails (disk full) is an error at the next seal, its blobs stay
// buffered and readable, and a Flush once space is back stores them.
TEST_F(BlobPipelineTest, AFailedBackgroundStoreKeepsItsBlobsForTheNextFlush) {
  ASSERT_TRUE(Repository::Init(repo_, Pw(), testing::FastInit()).ok());
  auto fault = std::make_unique<testing::FaultBackend>(std::make_unique<LocalBackend>(repo_));
  testing::FaultBackend* f = fault.get();
  auto r = Repository::Open(std::move(fault), Pw(), testing::SmallPacks());
  ASSERT_TRUE(r.ok());
  f->write_budget = 0;  // every store fails from now on (the owner thread writes nothing else here)
  std::vector<std::pair<BlobId, std::vector<uint8_t>>> put;
  Status st;
  {
    auto p = BlobPipeline::Create(**r, {.threads = 2});
    ASSERT_TRUE(p.ok());
    for (uint64_t i = 0; i < 40 && st.ok(); ++i) {
      auto data = RandomBytes(30000, 100 + i);  // incompressible: ~9 per 256 KiB pack
      auto id = (*p)->Put(BlobType::kData, data);
      if (id.ok()) put.emplace_back(*id, std::move(data));
      st = id.status();
    }
    if (st.ok()) st = (*p)->Drain();
  }
  ASSERT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  ASSERT_GT(put.size(), 9u);
  // The first pack's blobs are neither lost nor half-stored: still readable
  // from memory, and no index names a pack that is not there.
  for (size_t i = 0; i < 9; ++i) {
    auto got = (*r)->Get(put[i].first);
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    EXPECT_EQ(*got, put[i].second);
  }
  f->write_budget = -1;  // space is back
  ASSERT_TRUE((*r)->Flush().ok());
  r->reset();
  auto again = Reopen();
  ASSERT_TRUE(again);
  for (size_t i = 0; i < 9; ++i) {
    auto got = again->Get(put[i].first);
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    EXPECT_EQ(*got, put[i].second);
  }
  auto check = again->Check(/*read_data=*/true);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(check->ok());
}

TEST_F(BlobPipelineTest, PrefetcherReturnsBlobsInQueueOrder) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  std::vector<BlobId> ids;
  std::vector<std::vector<uint8_t>> data;
  for (uint64_t i = 0; i < 40; ++i) {
    data.push_back(i % 2 ? RandomBytes(20000 + i * 1000, i) : TextBytes(30000, i));
    ids.push_back(*r->Put(BlobType::kData, data.back()));
  }
  ASSERT_TRUE(r->Flush().ok());
  // One blob still in the unsealed pack is served from memory.
  data.push_back(TextBytes(1234, 99));
  ids.push_back(*r->Put(BlobType::kData, data.back()));

  auto pf = BlobPrefetcher::Create(*r, {.threads = 4, .max_ahead_bytes = 64 << 10});
  ASSERT_TRUE(pf.ok());
  std::vector<size_t> order;
  for (size_t round = 0; round < 3; ++round) {
    for (size_t i = 0; i < ids.size(); ++i) order.push_back((i * 17 + round) % ids.size());
  }
  for (size_t i : order) ASSERT_TRUE((*pf)->Enqueue(ids[i]).ok());
  EXPECT_EQ((*pf)->queued(), order.size());
  for (size_t i : order) {
    auto got = (*pf)->Next();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, data[i]);
  }
  EXPECT_EQ((*pf)->Next().status().code(), StatusCode::kFailedPrecondition);
  BlobId unknown;
  unknown.bytes[3] = 9;
  EXPECT_EQ((*pf)->Enqueue(unknown).code(), StatusCode::kNotFound);
}

TEST_F(BlobPipelineTest, PrefetcherReportsADamagedPackAsDataLoss) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  auto id = r->Put(BlobType::kData, RandomBytes(100000, 5));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(r->Flush().ok());
  for (const auto& f : Files("data")) {
    std::fstream s(f, std::ios::in | std::ios::out | std::ios::binary);
    s.seekp(100);
    s.put('\x55');
  }
  auto pf = BlobPrefetcher::Create(*r);
  ASSERT_TRUE(pf.ok());
  ASSERT_TRUE((*pf)->Enqueue(*id).ok());
  EXPECT_EQ((*pf)->Next().status().code(), StatusCode::kDataLoss);
}

TEST_F(BlobPipelineTest, PrefetcherSinksTakeBlobsOnWorkersAndReportTheirErrors) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  std::vector<BlobId> ids;
  std::vector<std::vector<uint8_t>> data;
  for (uint64_t i = 0; i < 30; ++i) {
    data.push_back(i % 2 ? RandomBytes(10000 + i * 500, i) : TextBytes(40000, i));
    ids.push_back(*r->Put(BlobType::kData, data.back()));
  }
  ASSERT_TRUE(r->Flush().ok());
  auto pf = BlobPrefetcher::Create(*r, {.threads = 4, .max_ahead_bytes = 32 << 10});
  ASSERT_TRUE(pf.ok());
  std::mutex mu;
  std::vector<std::vector<uint8_t>> got(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    // Every third blob goes to Next as before; the rest to a sink; blob 7's sink fails.
    if (i % 3 == 0) {
      ASSERT_TRUE((*pf)->Enqueue(ids[i]).ok());
      continue;
    }
    auto len = (*pf)->Enqueue(ids[i], [&, i](std::span<const uint8_t> d) -> Status {
      if (i == 7) return Status(StatusCode::kIoError, "disk full");
      std::lock_guard lock(mu);
      got[i].assign(d.begin(), d.end());
      return Status::Ok();
    });
    ASSERT_TRUE(len.ok());
    EXPECT_EQ(*len, data[i].size());  // known before the read
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    auto next = (*pf)->Next();
    if (i == 7) {
      EXPECT_EQ(next.status().code(), StatusCode::kIoError);
      continue;
    }
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    if (i % 3 == 0) {
      EXPECT_EQ(*next, data[i]);
    } else {
      EXPECT_TRUE(next->empty());
      std::lock_guard lock(mu);
      EXPECT_EQ(got[i], data[i]) << i;
    }
  }
}

TEST_F(BlobPipelineTest, AbandonStopsEverySinkBeforeItReturns) {
  auto r = InitAndOpen();
  ASSERT_TRUE(r);
  std::vector<BlobId> ids;
  for (uint64_t i = 0; i < 50; ++i) ids.push_back(*r->Put(BlobType::kData, RandomBytes(50000, i)));
  ASSERT_TRUE(r->Flush().ok());
  auto pf = BlobPrefetcher::Create(*r, {.threads = 4});
  ASSERT_TRUE(pf.ok());
  std::atomic<int> running{0}, calls{0};
  for (const auto& id : ids) {
    ASSERT_TRUE((*pf)->Enqueue(id, [&](std::span<const uint8_t>) -> Status {
                        ++running;
                        ++calls;
                        std::this_thread::sleep_for(std::chrono::milliseconds(5));
                        --running;
                        return Status::Ok();
                      })
                    .ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(12));
  (*pf)->Abandon();
  EXPECT_EQ(running.load(), 0);  // nothing runs after Abandon returned
  const int after = calls.load();
  EXPECT_LT(after, 50);  // the queue was dropped, not drained
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(calls.load(), after);
  EXPECT_EQ((*pf)->Next().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*pf)->Enqueue(ids[0]).code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace continuum::repo
