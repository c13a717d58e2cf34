#include "continuum/replication/frame.h"

#include <cstring>

#include "continuum/common/checksum.h"
#include "continuum/common/json_field.h"

namespace continuum::replication {
namespace {

#pragma pack(push, 1)
struct FrameHeader {
  uint32_t magic;
  uint16_t type;
  uint16_t flags;
  uint32_t payload_len;
  uint32_t reserved;
  uint64_t payload_checksum;
  uint64_t header_checksum;
};
#pragma pack(pop)
static_assert(sizeof(FrameHeader) == 32);

}  // namespace

std::vector<uint8_t> EncodeFrame(FrameType type, std::span<const uint8_t> payload, uint16_t flags) {
  FrameHeader h{};
  h.magic = kFrameMagic;
  h.type = static_cast<uint16_t>(type);
  h.flags = flags;
  h.payload_len = static_cast<uint32_t>(payload.size());
  h.payload_checksum = Checksum64(payload);
  h.header_checksum = Checksum64(&h, 24);
  // One send for small frames keeps header and payload in one TLS record.
  std::vector<uint8_t> buf(sizeof(h) + payload.size());
  std::memcpy(buf.data(), &h, sizeof(h));
  if (!payload.empty()) std::memcpy(buf.data() + sizeof(h), payload.data(), payload.size());
  return buf;
}

Status WriteFrame(net::Connection& conn, FrameType type, std::span<const uint8_t> payload, uint16_t flags) {
  return conn.SendAll(EncodeFrame(type, payload, flags));
}

Status WriteJsonFrame(net::Connection& conn, FrameType type, const nlohmann::json& j) {
  std::string s = j.dump();
  return WriteFrame(conn, type, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

Result<Frame> ReadFrame(net::Connection& conn) {
  FrameHeader h;
  CONTINUUM_RETURN_IF_ERROR(conn.RecvAll({reinterpret_cast<uint8_t*>(&h), sizeof(h)}));
  if (h.magic != kFrameMagic || h.header_checksum != Checksum64(&h, 24)) {
    return DataLoss("bad frame header from " + conn.PeerName() + " (corrupted or not a continuum peer)");
  }
  if (h.payload_len > kMaxFramePayload) {
    return DataLoss("frame from " + conn.PeerName() + " is too large (" + std::to_string(h.payload_len) + " bytes)");
  }
  Frame f;
  f.type = static_cast<FrameType>(h.type);
  f.flags = h.flags;
  f.payload.resize(h.payload_len);
  CONTINUUM_RETURN_IF_ERROR(conn.RecvAll(f.payload));
  if (Checksum64(f.payload) != h.payload_checksum) {
    return DataLoss("frame from " + conn.PeerName() + " fails its checksum");
  }
  return f;
}

Result<nlohmann::json> FrameJson(const Frame& f) {
  auto j = nlohmann::json::parse(f.payload.begin(), f.payload.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("frame payload is not a JSON object");
  return j;
}

std::string ErrorMessage(const Frame& f) {
  auto j = FrameJson(f);
  auto msg = j.ok() ? JsonField<std::string>(*j, "message", "") : Result<std::string>(std::string());
  return msg.ok() && !msg->empty() ? *msg : std::string("(an error frame without a readable message)");
}

void AppendRecord(std::vector<uint8_t>* batch, journal::RecordHeader h, std::span<const uint8_t> data) {
  h.magic = journal::kWriteLogMagic;
  h.version = journal::kRecordVersion;
  journal::SealHeader(&h, data);
  size_t at = batch->size();
  batch->resize(at + sizeof(h) + data.size());
  std::memcpy(batch->data() + at, &h, sizeof(h));
  if (!data.empty()) std::memcpy(batch->data() + at + sizeof(h), data.data(), data.size());
}

Result<std::vector<WireRecord>> ParseRecords(std::span<const uint8_t> payload) {
  std::vector<WireRecord> out;
  size_t pos = 0;
  while (pos < payload.size()) {
    if (payload.size() - pos < sizeof(journal::RecordHeader)) return DataLoss("truncated record in batch");
    WireRecord r;
    std::memcpy(&r.header, payload.data() + pos, sizeof(r.header));
    if (!journal::HeaderValid(r.header, journal::kWriteLogMagic)) return DataLoss("bad record header in batch");
    pos += sizeof(r.header);
    if (payload.size() - pos < r.header.payload_len) return DataLoss("truncated record payload in batch");
    r.data.assign(payload.begin() + pos, payload.begin() + pos + r.header.payload_len);
    if (!journal::PayloadValid(r.header, r.data)) return DataLoss("record seq " + std::to_string(r.header.seq) + " fails its checksum");
    pos += r.header.payload_len;
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace continuum::replication
