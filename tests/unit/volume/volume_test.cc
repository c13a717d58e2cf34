#include "continuum/volume/volume.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include "continuum/common/checksum.h"
#include "continuum/common/time_util.h"
#include "continuum/journal/log_reader.h"
#include "continuum/volume/volume_view.h"

namespace continuum::volume {
namespace {

namespace fs = std::filesystem;

class VolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("continuum-volume-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    cfg_.name = "v";
    cfg_.backing = (dir_ / "backing.img").string();
    cfg_.size = 8ull << 20;
    cfg_.journal_bytes = 64ull << 20;
    cfg_.created_ts_ns = WallNowNs();
    FILE* f = fopen(cfg_.backing.c_str(), "w");
    fclose(f);
    fs::resize_file(cfg_.backing, cfg_.size);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::shared_ptr<Volume> OpenVolume() {
    auto v = Volume::Open(cfg_, (dir_ / "state").string(), nullptr);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? v.value() : nullptr;
  }

  // Copies the state directory and the backing as a crash would leave them
  // (to "crashed" and "crashed.img"), then closes the volume.
  void CopyAsCrashedThenClose(const std::shared_ptr<Volume>& v) {
    fs::copy(dir_ / "state", dir_ / "crashed", fs::copy_options::recursive);
    fs::copy_file(cfg_.backing, dir_ / "crashed.img");
    ASSERT_TRUE(v->Close().ok());
  }

  // Opens the copies CopyAsCrashedThenClose made.
  Result<std::shared_ptr<Volume>> OpenCrashed() {
    cfg_.backing = (dir_ / "crashed.img").string();
    return Volume::Open(cfg_, (dir_ / "crashed").string(), nullptr);
  }

  fs::path dir_;
  VolumeConfig cfg_;
};

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  std::mt19937 rng(seed);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

TEST_F(VolumeTest, ReadsBackWritesBeforeAndAfterApply) {
  auto v = OpenVolume();
  auto data = Pattern(64 * 1024, 1);
  ASSERT_TRUE(v->Write(4096 * 3, data, false).ok());
  std::vector<uint8_t> got(data.size());
  ASSERT_TRUE(v->Read(4096 * 3, got).ok());
  EXPECT_EQ(got, data);
  ASSERT_TRUE(v->Drain().ok());
  ASSERT_TRUE(v->Read(4096 * 3, got).ok());
  EXPECT_EQ(got, data);
}

TEST_F(VolumeTest, UnalignedWriteIsReadModifyWrite) {
  auto v = OpenVolume();
  auto base = Pattern(8192, 2);
  ASSERT_TRUE(v->Write(0, base, false).ok());
  std::vector<uint8_t> patch = {1, 2, 3, 4, 5};
  ASSERT_TRUE(v->Write(4094, patch, false).ok());
  std::copy(patch.begin(), patch.end(), base.begin() + 4094);
  std::vector<uint8_t> got(8192);
  ASSERT_TRUE(v->Read(0, got).ok());
  EXPECT_EQ(got, base);
}

TEST_F(VolumeTest, RejectsOutOfRangeWrite) {
  auto v = OpenVolume();
  std::vector<uint8_t> d(4096, 1);
  EXPECT_FALSE(v->Write(cfg_.size, d, false).ok());
}

// Model-based: random writes, zeroes and bookmarks; views at many points
// must equal the model's image at that point, also after a reopen.
TEST_F(VolumeTest, ViewsMatchModelAtEveryPoint) {
  const uint32_t bs = 4096;
  const uint64_t nblocks = cfg_.size / bs;
  std::vector<uint8_t> model(cfg_.size, 0);
  std::map<uint64_t, std::vector<uint8_t>> snapshots;  // seq -> image
  std::map<uint64_t, int64_t> snapshot_time;
  std::mt19937 rng(42);
  auto v = OpenVolume();
  snapshots[0] = model;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 300; ++i) {
      uint64_t b = rng() % nblocks;
      uint64_t n = 1 + rng() % std::min<uint64_t>(16, nblocks - b);
      if (rng() % 10 == 0) {
        ASSERT_TRUE(v->WriteZeroes(b * bs, n * bs, false).ok());
        std::fill(model.begin() + b * bs, model.begin() + (b + n) * bs, 0);
      } else {
        auto d = Pattern(n * bs, rng());
        ASSERT_TRUE(v->Write(b * bs, d, false).ok());
        std::copy(d.begin(), d.end(), model.begin() + b * bs);
      }
      if (i % 37 == 0) {
        ASSERT_TRUE(v->Flush().ok());
        auto p = v->AddBookmark("bm-" + std::to_string(round) + "-" + std::to_string(i), 0);
        ASSERT_TRUE(p.ok()) << p.status().ToString();
        snapshots[p->seq] = model;
        snapshot_time[p->seq] = p->ts_ns;
      }
    }
    ASSERT_TRUE(v->Flush().ok());
    if (round == 0) {
      ASSERT_TRUE(v->Close().ok());
      v.reset();
      v = OpenVolume();
      ASSERT_TRUE(v);
    }
  }
  for (const auto& [seq, image] : snapshots) {
    auto point = v->ResolvePoint("seq:" + std::to_string(seq));
    ASSERT_TRUE(point.ok()) << point.status().ToString();
    auto view = v->OpenView(*point, "");
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    std::vector<uint8_t> got(cfg_.size);
    ASSERT_TRUE((*view)->Read(0, got).ok());
    EXPECT_TRUE(got == image) << "view at seq " << seq << " differs from model";
  }
  // Time-based and label-based resolution land on the bookmark's seq.
  for (const auto& [seq, ts] : snapshot_time) {
    auto p = v->ResolvePoint(FormatRfc3339(ts, true));
    ASSERT_TRUE(p.ok());
    EXPECT_GE(p->seq, seq);
  }
  auto latest = v->OpenView(v->cdp()->Latest(), "");
  ASSERT_TRUE(latest.ok());
  std::vector<uint8_t> got(cfg_.size);
  ASSERT_TRUE((*latest)->Read(0, got).ok());
  EXPECT_TRUE(got == model);
}

TEST_F(VolumeTest, OpenViewStaysStableWhileVolumeChanges) {
  auto v = OpenVolume();
  auto a = Pattern(65536, 7);
  ASSERT_TRUE(v->Write(0, a, false).ok());
  auto p = v->AddBookmark("a", 0);
  ASSERT_TRUE(p.ok());
  auto view = v->OpenView(*p, "");
  ASSERT_TRUE(view.ok());
  auto b = Pattern(65536, 8);
  ASSERT_TRUE(v->Write(0, b, false).ok());
  ASSERT_TRUE(v->Write(65536, b, false).ok());
  ASSERT_TRUE(v->Drain().ok());
  std::vector<uint8_t> got(131072);
  ASSERT_TRUE((*view)->Read(0, got).ok());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), got.begin()));
  EXPECT_TRUE(std::all_of(got.begin() + 65536, got.end(), [](uint8_t c) { return c == 0; }));
}

TEST_F(VolumeTest, WritableViewNeverTouchesVolume) {
  auto v = OpenVolume();
  auto a = Pattern(8192, 9);
  ASSERT_TRUE(v->Write(0, a, false).ok());
  auto p = v->AddBookmark("a", 0);
  auto view = v->OpenView(*p, (dir_ / "overlay").string());
  ASSERT_TRUE(view.ok());
  std::vector<uint8_t> junk(4096, 0xEE);
  ASSERT_TRUE((*view)->Write(0, junk, false).ok());
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE((*view)->Read(0, got).ok());
  EXPECT_EQ(got, junk);
  ASSERT_TRUE(v->Read(0, got).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), a.begin()));
}

TEST_F(VolumeTest, RollbackRewindsAndCanBeUndone) {
  auto v = OpenVolume();
  auto a = Pattern(cfg_.size / 2, 10);
  ASSERT_TRUE(v->Write(0, a, false).ok());
  auto good = v->AddBookmark("good", 0);
  ASSERT_TRUE(good.ok());
  auto bad = Pattern(cfg_.size, 11);
  ASSERT_TRUE(v->Write(0, bad, false).ok());
  auto undo = v->Rollback(*good);
  ASSERT_TRUE(undo.ok()) << undo.status().ToString();
  std::vector<uint8_t> got(cfg_.size);
  ASSERT_TRUE(v->Read(0, got).ok());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), got.begin()));
  EXPECT_TRUE(std::all_of(got.begin() + a.size(), got.end(), [](uint8_t c) { return c == 0; }));
  // Undo the rollback.
  auto before = v->ResolvePoint(undo->label);
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(v->Rollback(*before).ok());
  ASSERT_TRUE(v->Read(0, got).ok());
  EXPECT_TRUE(got == bad);
}

TEST_F(VolumeTest, RetentionTrimsOldestAndReportsIt) {
  cfg_.journal_bytes = 4ull << 20;  // 1 MiB segments
  std::vector<std::string> events;
  auto v = Volume::Open(cfg_, (dir_ / "state").string(),
                        [&](const std::string& k, const std::string&) { events.push_back(k); });
  ASSERT_TRUE(v.ok());
  auto first = (*v)->AddBookmark("first", 0);
  for (int i = 0; i < 40; ++i) {
    auto d = Pattern(256 * 1024, i);
    ASSERT_TRUE((*v)->Write((i % 16) * 256 * 1024, d, false).ok());
  }
  ASSERT_TRUE((*v)->Drain().ok());
  ASSERT_TRUE((*v)->Close().ok());  // final checkpoint enforces retention
  EXPECT_LE((*v)->cdp()->JournalBytes(), (5ull << 20));
  EXPECT_GT((*v)->cdp()->Oldest().seq, first->seq);
  auto old = (*v)->cdp()->ResolveSeq(first->seq);
  ASSERT_FALSE(old.ok());
  EXPECT_EQ(old.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(old.status().message().find("oldest restorable point"), std::string::npos);
  EXPECT_FALSE(events.empty());
}

TEST_F(VolumeTest, BlockPolicyRefusesWritesWhenJournalFullInsideRetention) {
  cfg_.journal_bytes = 4ull << 20;
  cfg_.retention_ns = 3600ll * 1'000'000'000;
  cfg_.full_policy = cdp::FullPolicy::kBlock;
  auto v = OpenVolume();
  Status last;
  for (int i = 0; i < 64 && last.ok(); ++i) {
    auto d = Pattern(256 * 1024, i);
    last = v->Write((i % 16) * 256 * 1024, d, false);
    if (last.ok()) last = v->Drain();
    if (i % 4 == 0) (void)v->AddBookmark("b" + std::to_string(i), 0);
  }
  // Retention is enforced at checkpoints (every second); wait for one.
  for (int i = 0; i < 30 && last.ok(); ++i) {
    usleep(100000);
    auto d = Pattern(4096, i);
    last = v->Write(0, d, false);
  }
  ASSERT_FALSE(last.ok());
  EXPECT_EQ(last.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(last.message().find("journal is full"), std::string::npos);
}

TEST_F(VolumeTest, BackingTooSmallIsAClearError) {
  auto v = OpenVolume();
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  fs::resize_file(cfg_.backing, cfg_.size / 2);
  auto r = Volume::Open(cfg_, (dir_ / "state").string(), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("backing"), std::string::npos);
}

TEST_F(VolumeTest, ChangeTrackerReportsChangedRegions) {
  auto v = OpenVolume();
  ASSERT_TRUE(v->tracker()->Create("base1", 0).ok());
  auto d = Pattern(4096, 3);
  ASSERT_TRUE(v->Write(1 << 20, d, false).ok());
  ASSERT_TRUE(v->Drain().ok());
  auto ch = v->tracker()->Changes("base1");
  ASSERT_TRUE(ch.ok());
  ASSERT_EQ(ch->size(), 1u);
  EXPECT_EQ((*ch)[0].offset, 1u << 20);
  EXPECT_EQ((*ch)[0].length, 65536u);
  ASSERT_TRUE(v->Close().ok());
  v.reset();
  v = OpenVolume();
  ch = v->tracker()->Changes("base1");
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(ch->size(), 1u);
}


// Concurrent writers on overlapping ranges: the write log, the undo journal
// and the mirror must agree on the order. For every seq, the view at that seq
// holds exactly that write's data in its range (the write log records the
// data's checksum), and the volume equals the view at the last seq.
void CheckConcurrentOverlappingWrites(const std::shared_ptr<Volume>& v, const VolumeConfig& cfg_) {
  auto keep = v->AddCursor(0);  // keeps the whole write log for the check
  constexpr int kThreads = 4, kWrites = 60;
  std::vector<std::thread> threads;
  std::atomic<bool> failed{false};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      for (int i = 0; i < kWrites; ++i) {
        uint64_t blocks = 1 + rng() % 16;
        uint64_t first = rng() % (256 - blocks + 1);
        auto d = Pattern(blocks * 4096, t * 1000 + i);
        if (!v->Write(first * 4096, d, i % 7 == 0).ok()) failed = true;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_FALSE(failed);
  ASSERT_TRUE(v->Drain().ok());
  auto reader = journal::LogReader::Open(v->write_log(), 0);
  ASSERT_TRUE(reader.ok());
  int checked = 0;
  for (;;) {
    auto rec = (*reader)->Next();
    ASSERT_TRUE(rec.ok());
    if (!*rec) break;
    const auto& h = (*rec)->header;
    if (static_cast<journal::WriteKind>(h.kind) != journal::WriteKind::kWrite) continue;
    // A direct write's record has the data's checksum; a write-behind one the data.
    uint64_t want = 0;
    if (h.flags & journal::kFlagNoData) {
      ASSERT_EQ((*rec)->payload.size(), 8u);
      for (int i = 0; i < 8; ++i) want |= uint64_t((*rec)->payload[i]) << (8 * i);
    } else {
      ASSERT_EQ((*rec)->payload.size(), h.length);
      want = Checksum64((*rec)->payload);
    }
    auto view = v->OpenView({h.seq, h.ts_ns}, "");
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    std::vector<uint8_t> got(h.length);
    ASSERT_TRUE((*view)->Read(h.offset, got).ok());
    EXPECT_EQ(Checksum64(got), want) << "view at seq " << h.seq << " lacks that write's data";
    ++checked;
  }
  EXPECT_EQ(checked, kThreads * kWrites);
  auto last = v->OpenView({v->LastSeq(), v->LastTimestamp()}, "");
  ASSERT_TRUE(last.ok());
  std::vector<uint8_t> a(cfg_.size), b(cfg_.size);
  ASSERT_TRUE((*last)->Read(0, a).ok());
  ASSERT_TRUE(v->Read(0, b).ok());
  EXPECT_EQ(a, b);
}

TEST_F(VolumeTest, ConcurrentOverlappingWritesKeepOneOrder) {
  cfg_.size = 1ull << 20;  // 256 blocks: writers collide often
  auto v = OpenVolume();
  CheckConcurrentOverlappingWrites(v, cfg_);
}

TEST_F(VolumeTest, ConcurrentOverlappingWritesKeepOneOrderWithoutWriteBehind) {
  cfg_.size = 1ull << 20;
  cfg_.write_behind_max_bytes = 0;  // every write reaches the mirror before its acknowledgement
  auto v = OpenVolume();
  CheckConcurrentOverlappingWrites(v, cfg_);
}

TEST_F(VolumeTest, ConcurrentOverlappingWritesKeepOneOrderMixingWriteBehindAndDirect) {
  cfg_.size = 1ull << 20;
  cfg_.write_behind_max_bytes = 8 * 4096;  // writes of up to 8 blocks go behind, larger ones direct
  auto v = OpenVolume();
  CheckConcurrentOverlappingWrites(v, cfg_);
}

// Replication cache: data stays in the memory ring until every cursor has
// acknowledged it, goes to the write log when the ring is full, and past
// both is left for the target to resync (RingData == nullptr).
TEST_F(VolumeTest, ReplicationRingSpillsToWriteLogThenToResync) {
  cfg_.write_behind_max_bytes = 0;  // write-behind records always carry their data
  cfg_.cache_bytes = 64 * 1024;
  cfg_.spill_bytes = 256 * 1024;
  auto v = OpenVolume();
  auto cursor = v->AddCursor(0);
  std::vector<std::vector<uint8_t>> written;
  for (int i = 0; i < 40; ++i) {
    written.push_back(Pattern(16 * 1024, 500 + i));
    ASSERT_TRUE(v->Write(i * 16 * 1024, written.back(), false).ok());
  }
  VolumeStats s = v->Stats();
  EXPECT_EQ(s.pending_bytes, 64u * 1024) << "ring holds exactly its size";
  EXPECT_GT(s.spilled_records, 0u);
  EXPECT_GT(s.unbuffered_records, 0u);
  // The first writes are in the ring, with their data.
  auto first = v->RingData(1);
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(std::equal(written[0].begin(), written[0].end(), first->data()));
  // Spilled records carry the data in the write log; later ones do not.
  auto reader = journal::LogReader::Open(v->write_log(), 0);
  ASSERT_TRUE(reader.ok());
  int with_data = 0, without = 0;
  for (;;) {
    auto rec = (*reader)->Next();
    ASSERT_TRUE(rec.ok());
    if (!*rec) break;
    if ((*rec)->header.flags & journal::kFlagNoData) {
      ++without;
    } else {
      ++with_data;
      uint64_t seq = (*rec)->header.seq;
      EXPECT_TRUE(std::equal((*rec)->payload.begin(), (*rec)->payload.end(), written[seq - 1].begin()));
    }
  }
  EXPECT_EQ(with_data, static_cast<int>(s.spilled_records));
  EXPECT_EQ(without, 40 - with_data);
  // Once the target acknowledged everything, the ring empties.
  cursor->acked = v->LastSeq();
  for (int i = 0; i < 50 && v->Stats().pending_bytes > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(v->Stats().pending_bytes, 0u);
  EXPECT_EQ(v->RingData(1), nullptr);
}

// A crash (no Close) after acknowledged writes: reopening finds them in the
// mirror, in every view, and in the bitmap, whether the write log carried
// the data (spilled) or not.
TEST_F(VolumeTest, ReopenWithoutCloseKeepsAcknowledgedWritesAndBitmaps) {
  cfg_.cache_bytes = 16 * 1024;
  std::vector<uint8_t> model(cfg_.size, 0);
  {
    auto v = OpenVolume();
    ASSERT_TRUE(v->tracker()->Create("base", 0).ok());
    auto cursor = v->AddCursor(0);  // some records spill into the write log
    for (int i = 0; i < 20; ++i) {
      auto d = Pattern(8192, 900 + i);
      uint64_t off = (i * 3 % 64) * 4096;
      ASSERT_TRUE(v->Write(off, d, false).ok());
      std::copy(d.begin(), d.end(), model.begin() + off);
    }
    ASSERT_TRUE(v->Flush().ok());
    // Leak the volume's state as a crash would: copy the state dir and the
    // backing before Close, then reopen the copies.
    CopyAsCrashedThenClose(v);
  }
  auto v = OpenCrashed();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<uint8_t> got(cfg_.size);
  ASSERT_TRUE((*v)->Read(0, got).ok());
  EXPECT_EQ(got, model);
  auto changed = (*v)->tracker()->Changes("base");
  ASSERT_TRUE(changed.ok());
  for (int i = 0; i < 20; ++i) {
    uint64_t off = (i * 3 % 64) * 4096;
    bool covered = std::any_of(changed->begin(), changed->end(), [&](const ChangedExtent& e) {
      return e.offset <= off && off + 8192 <= e.offset + e.length;
    });
    EXPECT_TRUE(covered) << "bitmap lost the write at " << off;
  }
}

}  // namespace
}  // namespace continuum::volume

namespace continuum::volume {
namespace {

TEST_F(VolumeTest, DamagedOldUndoSegmentCostsOnlyOlderPoints) {
  cfg_.journal_bytes = 16ull << 20;  // 2 MiB undo segments
  std::vector<std::string> events;
  {
    auto v = OpenVolume();
    for (int i = 0; i < 24; ++i) {
      auto d = Pattern(512 * 1024, i);
      ASSERT_TRUE(v->Write((i % 8) * 512 * 1024, d, false).ok());
      if (i == 20) {
        ASSERT_TRUE(v->AddBookmark("late", 0).ok());
      }
    }
    ASSERT_TRUE(v->Close().ok());
  }
  std::vector<fs::path> segs;
  for (auto& e : fs::directory_iterator(dir_ / "state" / "cdp" / "undo")) segs.push_back(e.path());
  std::sort(segs.begin(), segs.end());
  ASSERT_GE(segs.size(), 3u);
  {
    std::fstream f(segs[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x42');
  }
  auto v = Volume::Open(cfg_, (dir_ / "state").string(),
                        [&](const std::string& k, const std::string&) { events.push_back(k); });
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_NE(std::find(events.begin(), events.end(), "journal_damaged"), events.end());
  EXPECT_GT((*v)->cdp()->Oldest().seq, 0u);
  EXPECT_FALSE((*v)->ResolvePoint("seq:1").ok());
  EXPECT_TRUE((*v)->ResolvePoint("late").ok());
  // The volume keeps working.
  auto d = Pattern(4096, 99);
  EXPECT_TRUE((*v)->Write(0, d, true).ok());
}

TEST_F(VolumeTest, DamagedWriteLogIsAClearDataLossError) {
  {
    auto v = OpenVolume();
    auto d = Pattern(4096, 1);
    ASSERT_TRUE(v->Write(0, d, true).ok());
    ASSERT_TRUE(v->Close().ok());
  }
  // Not JSON, and JSON with fields of the wrong type: a clear error, never a throw.
  for (const char* text : {"{not json", R"({"applied_seq": "12"})", R"({"applied_seq": -1})", "[1]"}) {
    std::ofstream(dir_ / "state" / "checkpoint.json", std::ios::trunc) << text;
    auto v = Volume::Open(cfg_, (dir_ / "state").string(), nullptr);
    ASSERT_FALSE(v.ok()) << text;
    EXPECT_EQ(v.status().code(), StatusCode::kDataLoss) << text;
    EXPECT_NE(v.status().message().find("checkpoint.json"), std::string::npos) << v.status().message();
  }
}

TEST_F(VolumeTest, DamagedUndoBaseFileIsAClearDataLossError) {
  {
    auto v = OpenVolume();
    ASSERT_TRUE(v->Write(0, Pattern(4096, 1), true).ok());
    ASSERT_TRUE(v->Close().ok());
  }
  for (const char* text : {R"({"seq": "3", "ts_ns": 1})", R"({"seq": 3, "ts_ns": [1]})", "7"}) {
    std::ofstream(dir_ / "state" / "cdp" / "base.json", std::ios::trunc) << text;
    auto v = Volume::Open(cfg_, (dir_ / "state").string(), nullptr);
    ASSERT_FALSE(v.ok()) << text;
    EXPECT_NE(v.status().message().find("base.json"), std::string::npos) << v.status().message();
  }
}

}  // namespace
}  // namespace continuum::volume

namespace continuum::volume {
namespace {

// Writes `data` at `off` of a closed backing file, as if a mirror write had not happened.
void Poke(const std::string& path, uint64_t off, const std::vector<uint8_t>& data) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(off));
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

TEST_F(VolumeTest, WriteInFlightAtACrashIsResentToTargetsNotClaimed) {
  cfg_.cdp = false;
  uint64_t last = 0;
  {
    auto v = OpenVolume();
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(v->Write(i * 4096, Pattern(4096, 70 + i), false).ok());
    // Block 0 is written again: its first record is covered by a later one.
    ASSERT_TRUE(v->Write(0, Pattern(4096, 99), false).ok());
    ASSERT_TRUE(v->Flush().ok());
    last = v->LastSeq();
    CopyAsCrashedThenClose(v);
  }
  // The crash came before the mirror write of block 5 (seq 6) and block 2.
  cfg_.backing = (dir_ / "crashed.img").string();
  Poke(cfg_.backing, 5 * 4096, std::vector<uint8_t>(4096, 0));
  Poke(cfg_.backing, 2 * 4096, std::vector<uint8_t>(4096, 0));
  std::vector<std::string> events;
  auto v = Volume::Open(cfg_, (dir_ / "crashed").string(),
                        [&](const std::string& kind, const std::string&) { events.push_back(kind); });
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_NE(std::find(events.begin(), events.end(), "unapplied_writes"), events.end());
  // The mirror's contents stand (never acknowledged) and targets get them again.
  std::vector<uint8_t> got(4096);
  ASSERT_TRUE((*v)->Read(5 * 4096, got).ok());
  EXPECT_EQ(got, std::vector<uint8_t>(4096, 0));
  ASSERT_GT((*v)->LastSeq(), last);
  auto reader = journal::LogReader::Open((*v)->write_log(), last);
  ASSERT_TRUE(reader.ok());
  std::vector<std::pair<uint64_t, uint64_t>> resync;
  for (;;) {
    auto rec = (*reader)->Next();
    ASSERT_TRUE(rec.ok());
    if (!rec->has_value()) break;
    ASSERT_EQ((*rec)->header.kind, static_cast<uint16_t>(journal::WriteKind::kResync));
    resync.push_back({(*rec)->header.offset, (*rec)->header.length});
  }
  std::sort(resync.begin(), resync.end());
  EXPECT_EQ(resync, (std::vector<std::pair<uint64_t, uint64_t>>{{2 * 4096, 4096}, {5 * 4096, 4096}}));
}

// Journal-first (ADR 0012): an fsynced write-behind write is durable in the
// journals alone. A crash before the applier wrote it to the mirror (the
// copied backing is put back to its old contents) loses nothing: Open
// re-applies it, and every point in time still reads as it was.
TEST_F(VolumeTest, WriteBehindSurvivesACrashBeforeTheMirrorHasIt) {
  std::vector<uint8_t> model(cfg_.size, 0);
  std::vector<std::pair<cdp::Point, std::vector<uint8_t>>> points;
  {
    auto v = OpenVolume();
    for (int i = 0; i < 12; ++i) {
      auto d = Pattern(8192, 300 + i);
      uint64_t off = (i * 5 % 16) * 4096;  // overlapping ranges
      ASSERT_TRUE(v->Write(off, d, false).ok());
      std::copy(d.begin(), d.end(), model.begin() + off);
      points.push_back({{v->LastSeq(), v->LastTimestamp()}, std::vector<uint8_t>(model.begin(), model.begin() + 32 * 4096)});
    }
    ASSERT_TRUE(v->Flush().ok());
    EXPECT_GT(v->Stats().wlog_bytes, 12u * 8192) << "write-behind records carry their data";
    CopyAsCrashedThenClose(v);
  }
  cfg_.backing = (dir_ / "crashed.img").string();
  Poke(cfg_.backing, 0, std::vector<uint8_t>(32 * 4096, 0));  // none of it reached the mirror
  auto v = Volume::Open(cfg_, (dir_ / "crashed").string(), nullptr);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<uint8_t> got(cfg_.size);
  ASSERT_TRUE((*v)->Read(0, got).ok());
  EXPECT_EQ(got, model);
  for (const auto& [p, want] : points) {
    auto view = (*v)->OpenView(p, "");
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    std::vector<uint8_t> at(want.size());
    ASSERT_TRUE((*view)->Read(0, at).ok());
    EXPECT_EQ(at, want) << "view at seq " << p.seq;
  }
}

// A direct (large) write over a range an earlier write-behind write changed:
// recovery must not put the older data back over the newer (it re-applies a
// record only where no later write may have changed the mirror).
TEST_F(VolumeTest, ReplayNeverPutsAWriteBehindWriteOverALaterDirectOne) {
  auto small = Pattern(8192, 41);
  auto large = Pattern(256 * 1024, 42);  // past write_behind_max_bytes: direct
  std::vector<uint8_t> model(cfg_.size, 0);
  {
    auto v = OpenVolume();
    ASSERT_TRUE(v->Write(4096, small, false).ok());
    ASSERT_TRUE(v->Write(0, large, false).ok());
    ASSERT_TRUE(v->Write(512 * 1024, small, false).ok());  // behind, after the direct one
    ASSERT_TRUE(v->Flush().ok());
    CopyAsCrashedThenClose(v);
  }
  std::copy(large.begin(), large.end(), model.begin());
  std::copy(small.begin(), small.end(), model.begin() + 512 * 1024);
  auto v = OpenCrashed();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<uint8_t> got(cfg_.size);
  ASSERT_TRUE((*v)->Read(0, got).ok());
  EXPECT_EQ(got, model);
}

// The same for the replication file cache: a spilled record (data in the
// write log) under a later metadata-only write to the same blocks.
TEST_F(VolumeTest, ReplayNeverPutsASpilledWriteOverALaterOne) {
  cfg_.cdp = false;
  cfg_.cache_bytes = 4096;       // neither fits the ring:
  cfg_.spill_bytes = 12 * 1024;  // the first goes to the write log, the second is metadata only
  auto first = Pattern(8192, 51);
  auto second = Pattern(8192, 52);
  {
    auto v = OpenVolume();
    auto cursor = v->AddCursor(0);
    ASSERT_TRUE(v->Write(0, first, false).ok());
    ASSERT_TRUE(v->Write(0, second, false).ok());
    ASSERT_TRUE(v->Flush().ok());
    ASSERT_EQ(v->Stats().spilled_records, 1u);
    ASSERT_EQ(v->Stats().unbuffered_records, 1u);
    CopyAsCrashedThenClose(v);
  }
  auto v = OpenCrashed();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<uint8_t> got(8192);
  ASSERT_TRUE((*v)->Read(0, got).ok());
  EXPECT_EQ(got, second);
}

TEST_F(VolumeTest, ReplicaReappliesAWriteItsCrashCutShort) {
  cfg_.replica = true;
  auto data = Pattern(8192, 5);
  {
    auto v = OpenVolume();
    for (uint64_t s = 1; s <= 3; ++s) {
      journal::RecordHeader h;
      h.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
      h.seq = 10 + s;
      h.ts_ns = WallNowNs();
      h.offset = s * 8192;
      h.length = 8192;
      ASSERT_TRUE(v->AdmitReplicated(h, data).ok());
    }
    ASSERT_TRUE(v->Flush().ok());
    CopyAsCrashedThenClose(v);
  }
  cfg_.backing = (dir_ / "crashed.img").string();
  Poke(cfg_.backing, 3 * 8192, std::vector<uint8_t>(8192, 0));  // seq 13 never reached the mirror
  auto v = Volume::Open(cfg_, (dir_ / "crashed").string(), nullptr);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  // It still holds seq 13 (the source will not resend it), so the data is back.
  EXPECT_EQ((*v)->LastSeq(), 13u);
  std::vector<uint8_t> got(8192);
  ASSERT_TRUE((*v)->Read(3 * 8192, got).ok());
  EXPECT_EQ(got, data);
}

// AdmitReplicatedBatch takes records in groups (parallel before-image reads
// and mirror writes): a random stream with overlapping writes, zero ranges,
// bookmarks, large writes and resends must leave the same mirror, the same
// seqs and the same point-in-time views as admitting the records one by one.
TEST_F(VolumeTest, ReplicaBatchAdmissionEqualsOneByOne) {
  cfg_.replica = true;
  std::mt19937 rng(42);
  std::vector<journal::RecordWithData> stream;
  const int64_t t0 = WallNowNs();
  const uint64_t blocks = cfg_.size / 4096;
  for (uint64_t seq = 1; seq <= 600; ++seq) {
    journal::RecordWithData r;
    r.header.seq = seq;
    r.header.ts_ns = t0 + static_cast<int64_t>(seq) * 1000;
    const uint32_t pick = rng() % 100;
    if (pick < 3) {
      r.header.kind = static_cast<uint16_t>(journal::WriteKind::kBookmark);
      std::string label = "b" + std::to_string(seq);
      r.data.assign(label.begin(), label.end());
    } else if (pick < 8) {
      r.header.kind = static_cast<uint16_t>(journal::WriteKind::kZero);
      r.header.length = (1 + rng() % 64) * 4096;
      r.header.offset = rng() % (blocks - r.header.length / 4096) * 4096;
    } else {
      r.header.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
      // Mostly small writes into a hot 256 KiB region (overlaps within a
      // frame), some up to 2 MiB (over the grouping limit).
      r.header.length = (pick < 12 ? 256 + rng() % 257 : 1 + rng() % 4) * 4096;
      const uint64_t span_blocks = pick < 60 ? 64 : blocks;
      r.header.offset = rng() % (span_blocks - std::min(span_blocks - 1, r.header.length / 4096)) * 4096;
      if (r.header.offset + r.header.length > cfg_.size) r.header.offset = cfg_.size - r.header.length;
      r.data = Pattern(r.header.length, static_cast<uint32_t>(seq));
    }
    stream.push_back(std::move(r));
  }
  auto open_at = [&](const std::string& name) {
    VolumeConfig cfg = cfg_;
    cfg.backing = (dir_ / (name + ".img")).string();
    FILE* f = fopen(cfg.backing.c_str(), "w");
    fclose(f);
    fs::resize_file(cfg.backing, cfg.size);
    auto v = Volume::Open(cfg, (dir_ / name).string(), nullptr);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? v.value() : nullptr;
  };
  auto one = open_at("one");
  auto batch = open_at("batch");
  ASSERT_TRUE(one && batch);
  for (const auto& r : stream) ASSERT_TRUE(one->AdmitReplicated(r.header, r.data).ok()) << r.header.seq;
  // Frames of random sizes, each followed by a resend of part of the last one.
  for (size_t i = 0; i < stream.size();) {
    size_t n = std::min<size_t>(1 + rng() % 80, stream.size() - i);
    std::vector<journal::RecordWithData> frame(stream.begin() + static_cast<long>(i),
                                               stream.begin() + static_cast<long>(i + n));
    ASSERT_TRUE(batch->AdmitReplicatedBatch(frame).ok()) << "frame at " << i;
    std::vector<journal::RecordWithData> resend(stream.begin() + static_cast<long>(i + n / 2),
                                                stream.begin() + static_cast<long>(i + n));
    ASSERT_TRUE(batch->AdmitReplicatedBatch(resend).ok());
    ASSERT_TRUE(batch->Flush().ok());
    i += n;
  }
  EXPECT_EQ(batch->LastSeq(), one->LastSeq());
  std::vector<uint8_t> a(cfg_.size), b(cfg_.size);
  ASSERT_TRUE(one->Read(0, a).ok());
  ASSERT_TRUE(batch->Read(0, b).ok());
  EXPECT_TRUE(a == b) << "mirrors differ";
  // The model: the image after each checked seq.
  const std::vector<uint64_t> checked = {1, 57, 200, 333, 599};
  std::map<uint64_t, std::vector<uint8_t>> model;
  std::vector<uint8_t> image(cfg_.size, 0);
  for (const auto& r : stream) {
    auto kind = static_cast<journal::WriteKind>(r.header.kind);
    if (kind == journal::WriteKind::kWrite) std::copy(r.data.begin(), r.data.end(), image.begin() + r.header.offset);
    if (kind == journal::WriteKind::kZero) std::fill_n(image.begin() + r.header.offset, r.header.length, 0);
    if (std::find(checked.begin(), checked.end(), r.header.seq) != checked.end()) model[r.header.seq] = image;
  }
  EXPECT_TRUE(b == image) << "mirror differs from the model";
  for (uint64_t seq : checked) {
    auto pa = one->ResolvePoint("seq:" + std::to_string(seq));
    auto pb = batch->ResolvePoint("seq:" + std::to_string(seq));
    ASSERT_TRUE(pa.ok() && pb.ok()) << seq;
    auto va = one->OpenView(*pa, "");
    auto vb = batch->OpenView(*pb, "");
    ASSERT_TRUE(va.ok() && vb.ok()) << seq;
    ASSERT_TRUE((*va)->Read(0, a).ok());
    ASSERT_TRUE((*vb)->Read(0, b).ok());
    EXPECT_TRUE(a == b) << "views at seq " << seq << " differ";
    EXPECT_TRUE(b == model[seq]) << "view at seq " << seq << " differs from the model";
  }
  ASSERT_TRUE(one->Close().ok());
  ASSERT_TRUE(batch->Close().ok());
}

// A bad record in the middle of a frame: the ones before it are admitted (as
// one by one), the error names it, nothing after it is admitted.
TEST_F(VolumeTest, ReplicaBatchStopsAtABadRecord) {
  cfg_.replica = true;
  auto v = OpenVolume();
  std::vector<journal::RecordWithData> frame;
  for (uint64_t seq = 1; seq <= 5; ++seq) {
    journal::RecordWithData r;
    r.header.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
    r.header.seq = seq;
    r.header.ts_ns = WallNowNs();
    r.header.offset = seq * 8192;
    r.header.length = 8192;
    r.data = Pattern(8192, static_cast<uint32_t>(seq));
    frame.push_back(std::move(r));
  }
  frame[3].data.resize(4096);  // seq 4: data shorter than its length
  auto want2 = frame[1].data;
  Status st = v->AdmitReplicatedBatch(frame);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("seq 4"), std::string::npos) << st.message();
  EXPECT_EQ(v->LastSeq(), 3u);
  ASSERT_TRUE(v->Flush().ok());
  std::vector<uint8_t> got(8192);
  ASSERT_TRUE(v->Read(2 * 8192, got).ok());
  EXPECT_EQ(got, want2);
  ASSERT_TRUE(v->Read(5 * 8192, got).ok());
  EXPECT_EQ(got, std::vector<uint8_t>(8192, 0));
  ASSERT_TRUE(v->Close().ok());
}

// Cascade seeding (Volume::WriteSeed/EndSeed): the replica takes the blocks
// without seqs, then holds seq S with no history before it; the stream goes
// on at S + 1, and a restart keeps S. A replica that holds a seq is refused.
TEST_F(VolumeTest, ReplicaSeededAtASeqContinuesFromIt) {
  cfg_.replica = true;
  auto data = Pattern(1 << 20, 9);
  auto next = Pattern(8192, 10);
  const int64_t ts = WallNowNs();
  {
    auto v = OpenVolume();
    ASSERT_TRUE(v->WriteSeed(0, data.size(), data).ok());
    ASSERT_TRUE(v->WriteSeed(1 << 20, 1 << 20, {}).ok());
    EXPECT_EQ(v->LastSeq(), 0u);
    ASSERT_TRUE(v->EndSeed(500, ts).ok());
    EXPECT_EQ(v->LastSeq(), 500u);
    EXPECT_FALSE(v->WriteSeed(0, 4096, {}).ok());
    journal::RecordHeader h;
    h.kind = static_cast<uint16_t>(journal::WriteKind::kWrite);
    h.seq = 501;
    h.ts_ns = ts + 1;
    h.offset = 0;
    h.length = next.size();
    ASSERT_TRUE(v->AdmitReplicated(h, next).ok());
    ASSERT_TRUE(v->Flush().ok());
    // The seed's point is a view: the seeded contents, before seq 501.
    auto p = v->ResolvePoint("seq:500");
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto view = v->OpenView(*p, "");
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    std::vector<uint8_t> got(data.size());
    ASSERT_TRUE((*view)->Read(0, got).ok());
    EXPECT_EQ(got, data);
    EXPECT_FALSE(v->ResolvePoint("seq:499").ok());
    ASSERT_TRUE(v->Close().ok());
  }
  auto v = OpenVolume();
  EXPECT_EQ(v->LastSeq(), 501u);
  std::vector<uint8_t> got(8192);
  ASSERT_TRUE(v->Read(0, got).ok());
  EXPECT_EQ(got, next);
  EXPECT_FALSE(v->EndSeed(600, ts).ok());
}

}  // namespace
}  // namespace continuum::volume
