#include "continuum/replication/heartbeat.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "continuum/common/time_util.h"
#include "continuum/replication/frame.h"

namespace continuum::replication {

MonitoredConnection::MonitoredConnection(net::Connection& inner)
    : inner_(inner), last_rx_ns_(MonoNowNs()), last_tx_ns_(MonoNowNs()) {}

Status MonitoredConnection::Translate(Status st) const {
  if (st.ok()) return st;
  std::string reason = expired();
  return reason.empty() ? st : Unavailable(reason);
}

Status MonitoredConnection::SendAll(std::span<const uint8_t> data) {
  std::lock_guard lock(send_mu_);
  Status st = inner_.SendAll(data);
  if (st.ok()) last_tx_ns_ = MonoNowNs();
  return Translate(std::move(st));
}

bool MonitoredConnection::TrySendAll(std::span<const uint8_t> data) {
  std::unique_lock lock(send_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  Status st = inner_.SendAll(data);
  if (!st.ok()) return false;  // the reader side reports the dead connection
  last_tx_ns_ = MonoNowNs();
  return true;
}

Status MonitoredConnection::RecvAll(std::span<uint8_t> out) {
  constexpr size_t kPiece = 16 << 10;
  for (size_t pos = 0; pos < out.size();) {
    size_t n = std::min(kPiece, out.size() - pos);
    recv_since_ns_ = MonoNowNs();
    Status st = inner_.RecvAll(out.subspan(pos, n));
    recv_since_ns_ = 0;
    if (!st.ok()) return Translate(std::move(st));
    last_rx_ns_ = MonoNowNs();
    pos += n;
  }
  return Status::Ok();
}

void MonitoredConnection::Expire(const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    if (!expired_.empty()) return;
    expired_ = reason;
  }
  inner_.Shutdown();
}

std::string MonitoredConnection::expired() const {
  std::lock_guard lock(mu_);
  return expired_;
}

Heartbeat::Heartbeat(MonitoredConnection& conn, HeartbeatOptions opts) : conn_(conn), opts_(opts) {
  thread_ = std::thread([this] { Loop(); });
}

Heartbeat::~Heartbeat() { Stop(); }

void Heartbeat::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Heartbeat::Loop() {
  const int64_t interval_ns = static_cast<int64_t>(opts_.interval_ms) * 1'000'000;
  const int64_t timeout_ns = static_cast<int64_t>(opts_.timeout_ms) * 1'000'000;
  const auto tick = std::chrono::milliseconds(std::clamp(opts_.interval_ms / 4, 10, 250));
  // A heartbeat is a frame with an empty payload; its bytes never change.
  std::vector<uint8_t> frame = EncodeFrame(FrameType::kHeartbeat, {});
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, tick, [&] { return stop_; })) {
    int64_t now = MonoNowNs();
    int64_t waiting = conn_.recv_waiting_since_ns();
    if (waiting != 0 && now - std::max(waiting, conn_.last_rx_ns()) > timeout_ns) {
      conn_.Expire(fmt::format("no data or heartbeat from {} for {:.1f} s (peer timeout)", conn_.PeerName(),
                               opts_.timeout_ms / 1000.0));
      return;
    }
    if (now - conn_.last_tx_ns() >= interval_ns) {
      lock.unlock();
      conn_.TrySendAll(frame);  // busy: a send in progress tells the peer we are here
      lock.lock();
    }
  }
}

}  // namespace continuum::replication
