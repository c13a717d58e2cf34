#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

// A one-connection TCP relay between a client and `target_port` on 127.0.0.1
// that can corrupt the client-to-server stream or cut the connection: the
// network faults a replication link must survive.
namespace continuum::net::testing {

class TcpProxy {
 public:
  explicit TcpProxy(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(listen_fd_, 1);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    address_ = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
    thread_ = std::thread([this] { Run(); });
  }
  ~TcpProxy() {
    Cut();
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }

  std::string Address() const { return address_; }
  // Bytes relayed from the client so far.
  uint64_t ClientBytes() const { return client_bytes_.load(); }
  // Flips the bits of the client-to-server byte at stream offset `offset`.
  void CorruptClientByteAt(uint64_t offset) { corrupt_at_.store(offset); }
  // Cuts both directions, as a dropped link would.
  void Cut() {
    int a = client_fd_.load(), b = server_fd_.load();
    if (a >= 0) ::shutdown(a, SHUT_RDWR);
    if (b >= 0) ::shutdown(b, SHUT_RDWR);
  }

 private:
  void Run() {
    int client = ::accept(listen_fd_, nullptr, nullptr);
    if (client < 0) return;
    int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ::close(client);
      ::close(server);
      return;
    }
    client_fd_ = client;
    server_fd_ = server;
    std::thread back([&] { Pump(server, client, nullptr); });
    Pump(client, server, &client_bytes_);
    back.join();
    ::close(client);
    ::close(server);
  }

  void Pump(int from, int to, std::atomic<uint64_t>* counter) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(from, buf, sizeof(buf), 0);
      if (n <= 0) break;
      if (counter != nullptr) {
        uint64_t start = counter->load();
        uint64_t at = corrupt_at_.load();
        if (at >= start && at < start + static_cast<uint64_t>(n)) buf[at - start] ^= 0xff;
        counter->fetch_add(static_cast<uint64_t>(n));
      }
      if (::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    ::shutdown(to, SHUT_WR);
  }

  int target_port_;
  int listen_fd_ = -1;
  std::string address_;
  std::thread thread_;
  std::atomic<int> client_fd_{-1};
  std::atomic<int> server_fd_{-1};
  std::atomic<uint64_t> client_bytes_{0};
  std::atomic<uint64_t> corrupt_at_{UINT64_MAX};
};

}  // namespace continuum::net::testing
