#pragma once

#include <sys/socket.h>

#include <chrono>
#include <string>

#include "continuum/common/result.h"

// TCP plumbing shared by Dial, the listener and connections. Every socket here
// is non-blocking; waits go through WaitFd so they can time out and be woken.
namespace continuum::net {

using Clock = std::chrono::steady_clock;

struct HostPort {
  std::string host;  // without brackets; "" means any address
  std::string port;
};

// "host:port", "1.2.3.4:port", "[::1]:port". The port must be numeric.
Result<HostPort> ParseHostPort(const std::string& host_port);

// "1.2.3.4:5" or "[::1]:5".
std::string FormatSockaddr(const sockaddr* addr, socklen_t len);
std::string LocalAddress(int fd);
std::string RemoteAddress(int fd);

// errno -> Status through PosixError, with the errors of a peer that went away
// (reset, refused, unreachable, timed out) as kUnavailable: they are retryable.
Status NetError(const std::string& context, int err);

// TCP_NODELAY (replication frames must not wait for Nagle) and keepalive (a
// silently dead peer is noticed even while idle).
Status SetStreamOptions(int fd, const std::string& peer);

// Milliseconds left until `deadline` (0 when past); -1 for "no deadline".
int RemainingMs(Clock::time_point deadline);
Clock::time_point DeadlineAfter(int timeout_ms);  // <= 0: Clock::time_point::max()

enum class WaitResult { kReady, kTimedOut };
// Polls one fd for `events` until ready (including error/hangup) or `deadline`,
// retrying EINTR. Never sleeps past `max_wait_ms` when that is >= 0, so a
// caller can re-check state periodically.
Result<WaitResult> WaitFd(int fd, short events, Clock::time_point deadline, int max_wait_ms = -1);

// Resolves and connects (non-blocking) to the first address that answers
// before `deadline`. Returns the connected fd.
Result<int> ConnectTcp(const std::string& host_port, Clock::time_point deadline, int timeout_ms);

}  // namespace continuum::net
