#include "continuum/journal/segment_log.h"
#include "continuum/journal/log_reader.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

namespace continuum::journal {
namespace {

namespace fs = std::filesystem;

class SegmentLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("continuum-seglog-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  SegmentLog::Options Opts(bool tolerate = false) {
    return {.dir = dir_.string(), .magic = kUndoMagic, .segment_bytes = 64 * 1024,
            .verify_all_payloads = true, .tolerate_damage = tolerate};
  }

  // Writes `n` records with payload sizes derived from seq; returns nothing.
  void Fill(int n) {
    auto log = SegmentLog::Open(Opts(), [](auto&, auto&) { return Status::Ok(); });
    ASSERT_TRUE(log.ok());
    for (int i = 1; i <= n; ++i) {
      std::vector<uint8_t> payload(100 + (i * 37) % 5000, static_cast<uint8_t>(i));
      RecordHeader h;
      h.kind = 1;
      h.seq = i;
      h.ts_ns = i * 1000;
      ASSERT_TRUE((*log)->Append(h, payload).ok());
    }
    ASSERT_TRUE((*log)->Sync().ok());
  }

  std::vector<fs::path> Segments() {
    std::vector<fs::path> out;
    for (auto& e : fs::directory_iterator(dir_)) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
  }

  fs::path dir_;
};

struct Seen {
  std::vector<uint64_t> seqs;
};

Result<std::unique_ptr<SegmentLog>> OpenCollect(const SegmentLog::Options& o, Seen* seen) {
  return SegmentLog::Open(o, [&](const RecordHeader& h, const RecordLocation& loc) -> Status {
    std::vector<uint8_t> p(h.payload_len);
    CONTINUUM_RETURN_IF_ERROR(loc.segment->file->PRead(loc.payload_offset, p));
    // Every visited record is whole and matches what was written.
    for (uint8_t b : p) {
      if (b != static_cast<uint8_t>(h.seq)) return DataLoss("payload mismatch");
    }
    seen->seqs.push_back(h.seq);
    return Status::Ok();
  });
}

TEST_F(SegmentLogTest, ReopenSeesEveryRecordInOrderAcrossSegments) {
  Fill(200);
  EXPECT_GT(Segments().size(), 3u);
  Seen seen;
  auto log = OpenCollect(Opts(), &seen);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ(seen.seqs.size(), 200u);
  for (size_t i = 0; i < seen.seqs.size(); ++i) EXPECT_EQ(seen.seqs[i], i + 1);
  EXPECT_EQ((*log)->LastSeq(), 200u);
}

TEST_F(SegmentLogTest, TornTailIsTruncatedAndAppendsContinue) {
  Fill(50);
  auto segs = Segments();
  auto last = segs.back();
  fs::resize_file(last, fs::file_size(last) - 17);
  Seen seen;
  {
    auto log = OpenCollect(Opts(), &seen);
    ASSERT_TRUE(log.ok());
    EXPECT_EQ(seen.seqs.back(), 49u);
    RecordHeader h;
    h.seq = 50;
    std::vector<uint8_t> p(10, 50);
    ASSERT_TRUE((*log)->Append(h, p).ok());
    ASSERT_TRUE((*log)->Sync().ok());
  }
  Seen again;
  ASSERT_TRUE(OpenCollect(Opts(), &again).ok());
  EXPECT_EQ(again.seqs.back(), 50u);
}

TEST_F(SegmentLogTest, DamageInOlderSegmentIsDataLossNamingTheFile) {
  Fill(200);
  auto segs = Segments();
  {
    std::fstream f(segs[1], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x5a');
  }
  Seen seen;
  auto log = OpenCollect(Opts(), &seen);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(log.status().message().find(segs[1].filename().string()), std::string::npos);

  Seen tolerant;
  auto log2 = OpenCollect(Opts(true), &tolerant);
  ASSERT_TRUE(log2.ok());
  ASSERT_EQ((*log2)->Damage().size(), 1u);
  EXPECT_GT((*log2)->Damage()[0].next_first_seq, 0u);
  EXPECT_EQ(tolerant.seqs.back(), 200u);
}

// Fuzz: random byte flips and truncations anywhere never crash Open, never
// yield a record whose payload differs from what was written, and either
// open (possibly with a shorter tail) or fail with a data-loss error.
TEST_F(SegmentLogTest, RandomCorruptionNeverYieldsBadRecords) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 150; ++iter) {
    fs::remove_all(dir_);
    Fill(60);
    auto segs = Segments();
    int damage = 1 + rng() % 4;
    for (int d = 0; d < damage; ++d) {
      auto& seg = segs[rng() % segs.size()];
      auto size = fs::file_size(seg);
      if (size == 0) continue;
      if (rng() % 4 == 0) {
        fs::resize_file(seg, rng() % size);
      } else {
        std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(rng() % size);
        f.put(static_cast<char>(rng()));
      }
    }
    for (bool tolerate : {false, true}) {
      Seen seen;
      auto log = OpenCollect(Opts(tolerate), &seen);
      if (!log.ok()) {
        EXPECT_EQ(log.status().code(), StatusCode::kDataLoss) << log.status().ToString();
        continue;
      }
      for (size_t i = 1; i < seen.seqs.size(); ++i) EXPECT_LT(seen.seqs[i - 1], seen.seqs[i]);
    }
  }
}


// Large payloads go to the file with O_DIRECT at 4 KiB boundaries, with pad
// records around them; small ones stay buffered. Readers (the scan at open
// and LogReader) see exactly the appended records, with their payloads, and
// a torn direct write at the tail is cut like any torn record.
TEST_F(SegmentLogTest, DirectLargeAppendsReadBackWithPadsSkipped) {
  auto o = Opts();
  o.segment_bytes = 8ull << 20;
  o.direct_payload_bytes = 64 * 1024;
  std::map<uint64_t, std::vector<uint8_t>> want;
  {
    auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
    ASSERT_TRUE(log.ok());
    std::mt19937 rng(7);
    for (uint64_t seq = 1; seq <= 42; ++seq) {  // 42 is large: the tail is a direct write
      size_t n = seq % 3 == 0 ? (64 * 1024 + rng() % 300000) : rng() % 5000;
      std::vector<uint8_t> payload(n);
      for (auto& b : payload) b = static_cast<uint8_t>(rng());
      RecordHeader h;
      h.kind = 1;
      h.seq = seq;
      h.ts_ns = static_cast<int64_t>(seq);
      auto loc = (*log)->Append(h, payload);
      ASSERT_TRUE(loc.ok()) << loc.status().ToString();
      std::vector<uint8_t> back(n);
      ASSERT_TRUE((*log)->ReadPayload(*loc, 0, back).ok());
      ASSERT_EQ(back, payload) << "seq " << seq;
      want[seq] = std::move(payload);
    }
    ASSERT_TRUE((*log)->Sync().ok());
    auto reader = LogReader::Open(log->get(), 0);
    ASSERT_TRUE(reader.ok());
    uint64_t expect = 1;
    for (;;) {
      auto rec = (*reader)->Next();
      ASSERT_TRUE(rec.ok()) << rec.status().ToString();
      if (!*rec) break;
      ASSERT_EQ((*rec)->header.seq, expect);
      ASSERT_EQ((*rec)->payload, want[expect]);
      ++expect;
    }
    EXPECT_EQ(expect, 43u);
  }
  std::map<uint64_t, std::vector<uint8_t>> got;
  auto log = SegmentLog::Open(o, [&](const RecordHeader& h, const RecordLocation& loc) -> Status {
    EXPECT_NE(h.kind, kPadKind);
    std::vector<uint8_t> p(h.payload_len);
    CONTINUUM_RETURN_IF_ERROR(loc.segment->file->PRead(loc.payload_offset, p));
    got[h.seq] = std::move(p);
    return Status::Ok();
  });
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(got, want);
  log->reset();
  // Tear the last (direct) record: the scan cuts the tail after seq 41.
  auto seg = Segments().back();
  auto size = fs::file_size(seg);
  fs::resize_file(seg, size - 5000);
  got.clear();
  log = SegmentLog::Open(o, [&](const RecordHeader& h, const RecordLocation&) -> Status {
    got[h.seq] = {};
    return Status::Ok();
  });
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(got.size(), 41u);
  EXPECT_EQ(got.rbegin()->first, 41u);
}


// Appends records seq first..last with the Seen-compatible payload pattern.
void AppendRange(SegmentLog* log, uint64_t first, uint64_t last, size_t size = 3000) {
  for (uint64_t i = first; i <= last; ++i) {
    std::vector<uint8_t> payload(size, static_cast<uint8_t>(i));
    RecordHeader h;
    h.kind = 1;
    h.seq = i;
    h.ts_ns = static_cast<int64_t>(i) * 1000;
    ASSERT_TRUE(log->Append(h, payload).ok());
  }
  ASSERT_TRUE(log->Sync().ok());
}

TEST_F(SegmentLogTest, TrimmedSegmentsAreRecycledAndTheirOldRecordsNeverReappear) {
  auto o = Opts();
  o.spare_segments = 1;
  o.preallocate = true;
  {
    auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
    ASSERT_TRUE(log.ok());
    AppendRange(log->get(), 1, 100);  // ~5 segments of 64 KiB
    ASSERT_GT((*log)->SegmentCount(), 3u);
    ASSERT_TRUE((*log)->TrimThrough(60).ok());
    EXPECT_EQ((*log)->SpareCount(), 1u);  // one kept, the others unlinked
    // The next segment reuses the spare: its blocks still hold records 1..~20.
    AppendRange(log->get(), 101, 130);
    EXPECT_EQ((*log)->SpareCount(), 0u);
    // A crash right after a partly filled, reused segment: nothing more is appended.
  }
  size_t spares = 0;
  for (auto& p : Segments()) spares += p.filename().string().rfind("spare-", 0) == 0;
  EXPECT_LE(spares, 1u);
  Seen seen;
  auto log = OpenCollect(o, &seen);
  ASSERT_TRUE(log.ok()) << log.status().message();
  // Exactly the records that were kept, in order, none from a file's earlier use.
  ASSERT_FALSE(seen.seqs.empty());
  for (size_t i = 1; i < seen.seqs.size(); ++i) ASSERT_EQ(seen.seqs[i], seen.seqs[i - 1] + 1);
  EXPECT_EQ(seen.seqs.back(), 130u);
  EXPECT_GT(seen.seqs.front(), 1u);  // trimmed whole segments (21 records each)
  EXPECT_LE(seen.seqs.front(), 61u);
  // Appends after reopen continue, and a further reopen agrees.
  AppendRange(log->get(), 131, 140);
  log->reset();
  Seen again;
  ASSERT_TRUE(OpenCollect(o, &again).ok());
  EXPECT_EQ(again.seqs.back(), 140u);
  EXPECT_EQ(again.seqs.size(), seen.seqs.size() + 10);
}

TEST_F(SegmentLogTest, RecordsPastATornOneInAPreallocatedSegmentAreClearedNotRevived) {
  auto o = Opts();
  o.segment_bytes = 1 << 20;
  o.preallocate = true;
  uint64_t torn_at = 0;
  {
    auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
    ASSERT_TRUE(log.ok());
    AppendRange(log->get(), 1, 10, 1000);
    torn_at = (*log)->BytesOf(*(*log)->Oldest());
    AppendRange(log->get(), 11, 14, 1000);
  }
  auto seg = Segments().front();
  EXPECT_EQ(fs::file_size(seg), 1u << 20);  // preallocated
  {
    // Tear record 11 (its payload): 12..14 behind it stay intact on disk.
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(torn_at + 64 + 10));
    f.put('\x55');
  }
  Seen seen;
  {
    auto log = OpenCollect(o, &seen);
    ASSERT_TRUE(log.ok());
    EXPECT_EQ(seen.seqs.back(), 10u);
    // New record 11 with a payload that ends exactly where old 12 began.
    std::vector<uint8_t> p(1000, 11);
    RecordHeader h;
    h.kind = 1;
    h.seq = 11;
    ASSERT_TRUE((*log)->Append(h, p).ok());
    ASSERT_TRUE((*log)->Sync().ok());
  }
  Seen again;
  ASSERT_TRUE(OpenCollect(o, &again).ok());
  // Old 12..14 were never acknowledged: they must not come back after 11.
  EXPECT_EQ(again.seqs.back(), 11u);
}

TEST_F(SegmentLogTest, ARecordCopiedIntoAnotherSegmentDoesNotValidate) {
  auto o = Opts();
  o.spare_segments = 1;
  {
    auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
    ASSERT_TRUE(log.ok());
    AppendRange(log->get(), 1, 60);
  }
  auto segs = Segments();
  ASSERT_GE(segs.size(), 2u);
  // Append the first segment's first record (whole, valid there) to the newest segment.
  std::ifstream in(segs.front(), std::ios::binary);
  std::vector<char> rec(64 + 3000);
  in.read(rec.data(), static_cast<std::streamsize>(rec.size()));
  {
    std::ofstream out(segs.back(), std::ios::binary | std::ios::app);
    out.write(rec.data(), static_cast<std::streamsize>(rec.size()));
  }
  Seen seen;
  ASSERT_TRUE(OpenCollect(o, &seen).ok());
  EXPECT_EQ(seen.seqs.back(), 60u);
  EXPECT_EQ(seen.seqs.size(), 60u);
}

TEST_F(SegmentLogTest, SegmentsOfVersionOneStillRead) {
  // A segment written before records were bound to their segment (version 1).
  fs::create_directories(dir_);
  {
    std::ofstream out(dir_ / "00000000000000000001.log", std::ios::binary);
    for (uint64_t i = 1; i <= 3; ++i) {
      std::vector<uint8_t> p(100, static_cast<uint8_t>(i));
      RecordHeader h;
      h.magic = kUndoMagic;
      h.version = kRecordVersion;
      h.kind = 1;
      h.seq = i;
      SealHeader(&h, p);
      out.write(reinterpret_cast<const char*>(&h), sizeof(h));
      out.write(reinterpret_cast<const char*>(p.data()), static_cast<std::streamsize>(p.size()));
    }
  }
  Seen seen;
  auto log = OpenCollect(Opts(), &seen);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(seen.seqs, (std::vector<uint64_t>{1, 2, 3}));
  AppendRange(log->get(), 4, 5, 100);
  log->reset();
  Seen again;
  ASSERT_TRUE(OpenCollect(Opts(), &again).ok());
  EXPECT_EQ(again.seqs.back(), 5u);
}

}  // namespace
}  // namespace continuum::journal

namespace continuum::journal {
namespace {

// WriteBackSettled (ADR 0011) offers the shared flush only where an append
// changes no metadata: blocks of a preallocated segment that were written and
// synced before, or the former records of a recycled segment.
TEST_F(SegmentLogTest, SharedFlushCoversOnlySettledBlocks) {
  SegmentLog::Options o = Opts();
  o.preallocate = true;
  o.spare_segments = 1;
  auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  uint64_t seq = 0;
  auto append = [&](size_t n) {
    RecordHeader h;
    h.kind = 1;
    h.seq = ++seq;
    h.ts_ns = static_cast<int64_t>(seq);
    std::vector<uint8_t> payload(n, static_cast<uint8_t>(seq));
    ASSERT_TRUE((*log)->Append(h, payload).ok());
  };
  append(100);
  auto wb = (*log)->WriteBackSettled();
  ASSERT_TRUE(wb.ok());
  EXPECT_FALSE(wb->has_value()) << "fresh preallocated blocks: their extents must be committed by a Sync";
  ASSERT_TRUE((*log)->Sync().ok());

  append(100);  // same 4 KiB block as the synced records
  wb = (*log)->WriteBackSettled();
  ASSERT_TRUE(wb.ok() && wb->has_value());
  EXPECT_EQ((*wb)->end, (*log)->BytesOf(*(*wb)->segment));
  (*log)->MarkDurable(**wb);

  append(5000);  // crosses into blocks no Sync has settled
  wb = (*log)->WriteBackSettled();
  ASSERT_TRUE(wb.ok());
  EXPECT_FALSE(wb->has_value());
  ASSERT_TRUE((*log)->Sync().ok());
  append(10);
  wb = (*log)->WriteBackSettled();
  ASSERT_TRUE(wb.ok() && wb->has_value()) << "the Sync settled the blocks it covered";

  // A recycled segment's former records were written and synced: appends over
  // them are settled from the first one. (A held SettledWriteBack keeps its
  // segment from being recycled, as a reader would.)
  wb = std::optional<SettledWriteBack>();
  // (Loops are bounded: a failing append must not run forever.)
  for (int i = 0; i < 200 && (*log)->SegmentCount() < 3; ++i) append(3000);
  ASSERT_EQ((*log)->SegmentCount(), 3u);
  ASSERT_TRUE((*log)->Sync().ok());
  ASSERT_TRUE((*log)->TrimThrough(seq - 1).ok());
  ASSERT_EQ((*log)->SpareCount(), 1u);
  for (int i = 0; i < 200 && (*log)->SpareCount() == 1; ++i) append(3000);  // the next segment reuses the spare
  ASSERT_EQ((*log)->SpareCount(), 0u);
  wb = (*log)->WriteBackSettled();
  ASSERT_TRUE(wb.ok());
  EXPECT_TRUE(wb->has_value()) << "appends over the spare's former records need no metadata";

  // Everything appended is still there after a reopen.
  ASSERT_TRUE((*log)->Sync().ok());
  log->reset();
  uint64_t last = 0;
  auto again = SegmentLog::Open(o, [&](const RecordHeader& h, const RecordLocation&) {
    last = h.seq;
    return Status::Ok();
  });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(last, seq);
}

TEST_F(SegmentLogTest, SharedFlushNeedsPreallocatedSegments) {
  auto log = SegmentLog::Open(Opts(), [](auto&, auto&) { return Status::Ok(); });
  ASSERT_TRUE(log.ok());
  RecordHeader h;
  h.kind = 1;
  h.seq = 1;
  std::vector<uint8_t> payload(64, 1);
  ASSERT_TRUE((*log)->Append(h, payload).ok());
  ASSERT_TRUE((*log)->Sync().ok());
  h.seq = 2;
  ASSERT_TRUE((*log)->Append(h, payload).ok());
  auto wb = (*log)->WriteBackSettled();
  ASSERT_TRUE(wb.ok());
  EXPECT_FALSE(wb->has_value()) << "an append that grows the file changes its size (metadata)";
}

}  // namespace
}  // namespace continuum::journal

namespace continuum::journal {
namespace {

// Extents of `path` the file system still marks unwritten (FIEMAP).
int UnwrittenExtents(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  constexpr int kMax = 256;
  std::vector<uint8_t> buf(sizeof(fiemap) + kMax * sizeof(fiemap_extent));
  auto* fm = reinterpret_cast<fiemap*>(buf.data());
  fm->fm_start = 0;
  fm->fm_length = ~0ull;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  fm->fm_extent_count = kMax;
  int rc = ::ioctl(fd, FS_IOC_FIEMAP, fm);
  ::close(fd);
  if (rc != 0) return -1;
  int unwritten = 0;
  for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
    if (fm->fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) ++unwritten;
  }
  return unwritten;
}

// zero_fill_spares: while small records arrive, PrepareSpare writes a spare
// of zeros, and a log still converting unwritten extents moves on to it.
TEST_F(SegmentLogTest, ZeroFilledSparesTakeOverWhileRecordsAreSmall) {
  SegmentLog::Options o = Opts();
  o.preallocate = true;
  o.spare_segments = 1;
  o.zero_fill_spares = true;
  auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ((*log)->SpareCount(), 0u) << "an idle log gets no file of zeros";
  uint64_t seq = 0;
  auto append = [&](size_t n) {
    RecordHeader h;
    h.kind = 1;
    h.seq = ++seq;
    std::vector<uint8_t> payload(n, static_cast<uint8_t>(seq));
    ASSERT_TRUE((*log)->Append(h, payload).ok());
  };
  auto prepare = [&] {
    auto made = (*log)->PrepareSpare();
    EXPECT_TRUE(made.ok()) << made.status().ToString();
    return made.ok() && *made;
  };
  EXPECT_FALSE(prepare());
  append(4096);
  append(4096);
  EXPECT_TRUE(prepare()) << "small records: a spare of zeros is made";
  ASSERT_EQ((*log)->SpareCount(), 1u);
  fs::path spare;
  for (const auto& p : Segments()) {
    if (p.filename().string().rfind("spare-", 0) == 0) spare = p;
  }
  ASSERT_FALSE(spare.empty());
  EXPECT_EQ(fs::file_size(spare), o.segment_bytes);
  const int unwritten = UnwrittenExtents(spare.string());
  if (unwritten >= 0) EXPECT_EQ(unwritten, 0) << "the spare's blocks must be written, not just allocated";

  append(4096);  // the fresh first segment hands over to the spare at once
  EXPECT_EQ((*log)->SegmentCount(), 2u);
  EXPECT_EQ((*log)->SpareCount(), 0u);
  EXPECT_TRUE(prepare()) << "the next spare, ahead of need";
  append(4096);
  EXPECT_EQ((*log)->SegmentCount(), 2u) << "a zero-filled segment is kept until it is full";
  EXPECT_FALSE(prepare()) << "one spare is enough";
  EXPECT_FALSE(prepare()) << "nothing appended since the last look";
  ASSERT_TRUE((*log)->Sync().ok());
  log->reset();

  // Records survive a reopen as usual, across the early hand-over.
  uint64_t last = 0, count = 0;
  auto again = SegmentLog::Open(o, [&](const RecordHeader& h, const RecordLocation&) {
    last = h.seq;
    ++count;
    return Status::Ok();
  });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(last, seq);
  EXPECT_EQ(count, seq);
  again->reset();

  // Large records go with O_DIRECT elsewhere: no zero-filling ahead of them.
  fs::remove_all(dir_);
  log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
  ASSERT_TRUE(log.ok());
  seq = 0;
  append(70 * 1024);
  EXPECT_FALSE(prepare()) << "records of 64 KiB and more pay their conversion once each";
  EXPECT_EQ((*log)->SpareCount(), 0u);
}

}  // namespace
}  // namespace continuum::journal

namespace continuum::journal {
namespace {

// A full disk while zero-filling a spare: the error says so, no partial spare
// is left behind, and records still append and read back.
TEST(SegmentLogDiskFullTest, ZeroFillOnAFullDiskFailsCleanly) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  const fs::path dir = fs::temp_directory_path() / ("continuum-seglog-full-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ASSERT_EQ(::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1536k"), 0) << std::strerror(errno);
  struct Unmount {
    fs::path d;
    ~Unmount() {
      ::umount2(d.c_str(), MNT_DETACH);
      fs::remove_all(d);
    }
  } unmount{dir};
  SegmentLog::Options o{.dir = (dir / "log").string(), .magic = kUndoMagic, .segment_bytes = 1 << 20,
                        .preallocate = true, .spare_segments = 1, .zero_fill_spares = true};
  auto log = SegmentLog::Open(o, [](auto&, auto&) { return Status::Ok(); });
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  RecordHeader h;
  h.kind = 1;
  std::vector<uint8_t> payload(4096, 7);
  for (uint64_t seq = 1; seq <= 8; ++seq) {
    h.seq = seq;
    ASSERT_TRUE((*log)->Append(h, payload).ok());
  }
  // The 1 MiB segment is preallocated; a 1 MiB spare of zeros does not fit.
  auto made = (*log)->PrepareSpare();
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("zero-fill journal spare"), std::string::npos) << made.status().ToString();
  EXPECT_EQ((*log)->SpareCount(), 0u);
  for (const auto& e : fs::directory_iterator(dir / "log")) {
    EXPECT_EQ(e.path().filename().string().rfind("spare-", 0), std::string::npos) << "left behind: " << e.path();
  }
  h.seq = 9;
  EXPECT_TRUE((*log)->Append(h, payload).ok());
  EXPECT_TRUE((*log)->Sync().ok());
  EXPECT_FALSE(*(*log)->PrepareSpare()) << "no new attempt right after a failure";
  log->reset();
  uint64_t last = 0;
  auto again = SegmentLog::Open(o, [&](const RecordHeader& r, const RecordLocation&) {
    last = r.seq;
    return Status::Ok();
  });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(last, 9u);
}

}  // namespace
}  // namespace continuum::journal
