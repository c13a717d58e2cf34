#include "continuum/journal/log_reader.h"

namespace continuum::journal {

Result<std::unique_ptr<LogReader>> LogReader::Open(const SegmentLog* log, uint64_t after_seq) {
  std::unique_ptr<LogReader> r(new LogReader(log, after_seq));
  r->seg_ = log->SegmentFor(after_seq + 1);
  if (!r->seg_) {
    auto oldest = log->Oldest();
    if (oldest && oldest->first_seq > after_seq + 1) {
      return OutOfRange("write log no longer holds seq " + std::to_string(after_seq + 1) +
                        " (oldest is " + std::to_string(oldest->first_seq) + ")");
    }
  }
  return r;
}

Result<std::optional<OwnedRecord>> LogReader::Next() {
  for (;;) {
    if (!seg_) {
      seg_ = log_->SegmentFor(last_seq_ + 1);
      pos_ = 0;
      if (!seg_) return std::optional<OwnedRecord>();
    }
    uint64_t end = log_->BytesOf(*seg_);
    if (pos_ + sizeof(RecordHeader) > end) {
      auto next = log_->SegmentAfter(*seg_);
      // Only move on once this segment is complete (a newer one exists and
      // this one had no more records when we looked again).
      if (!next || log_->BytesOf(*seg_) != end) return std::optional<OwnedRecord>();
      seg_ = next;
      pos_ = 0;
      continue;
    }
    OwnedRecord rec;
    CONTINUUM_RETURN_IF_ERROR(
        seg_->file->PRead(pos_, {reinterpret_cast<uint8_t*>(&rec.header), sizeof(rec.header)}));
    const uint64_t seed = SegmentSeed(seg_->first_seq);
    if (!HeaderValid(rec.header, kWriteLogMagic, seed) && !HeaderValid(rec.header, kUndoMagic, seed)) {
      return DataLoss("log " + seg_->file->path() + ": bad record header at offset " + std::to_string(pos_));
    }
    rec.payload.resize(rec.header.payload_len);
    CONTINUUM_RETURN_IF_ERROR(seg_->file->PRead(pos_ + sizeof(rec.header), rec.payload));
    if (!PayloadValid(rec.header, rec.payload)) {
      return DataLoss("log " + seg_->file->path() + ": record seq " + std::to_string(rec.header.seq) +
                      " fails its checksum");
    }
    pos_ += sizeof(rec.header) + rec.payload.size();
    if (rec.header.kind == kPadKind || rec.header.seq <= last_seq_) continue;
    last_seq_ = rec.header.seq;
    return std::optional<OwnedRecord>(std::move(rec));
  }
}

}  // namespace continuum::journal
