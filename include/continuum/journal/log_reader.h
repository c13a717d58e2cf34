#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "continuum/common/result.h"
#include "continuum/journal/segment_log.h"

namespace continuum::journal {

struct OwnedRecord {
  RecordHeader header;
  std::vector<uint8_t> payload;
};

// Follows a SegmentLog from a seq onward while it is being appended to (the
// replication sender reads the write log this way). Records are returned
// whole and checksum-verified, in seq order.
// Thread-safety: one reader per thread; appends may run concurrently.
class LogReader {
 public:
  // Positions after `after_seq`. kOutOfRange when the records right after
  // it were already trimmed (the reader is too far behind).
  static Result<std::unique_ptr<LogReader>> Open(const SegmentLog* log, uint64_t after_seq);

  // The next record, or nullopt when the reader is at the end of the log.
  Result<std::optional<OwnedRecord>> Next();
  uint64_t last_seq() const { return last_seq_; }

 private:
  LogReader(const SegmentLog* log, uint64_t after_seq) : log_(log), last_seq_(after_seq) {}
  const SegmentLog* log_;
  std::shared_ptr<Segment> seg_;
  uint64_t pos_ = 0;
  uint64_t last_seq_;
};

}  // namespace continuum::journal
