#include "capture/nbd_socket.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace continuum::capture {

NbdSocket::NbdSocket(int fd, std::string peer) : fd_(fd), peer_(std::move(peer)) {}

NbdSocket::~NbdSocket() { ::close(fd_); }

Status NbdSocket::ReadExact(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::recv(fd_, out.data() + done, out.size() - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      return Unavailable(done == 0 ? "nbd client " + peer_ + " closed the connection"
                                   : "nbd client " + peer_ + " closed the connection mid-message");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Unavailable("nbd client " + peer_ + " timed out");
    }
    if (errno == ECONNRESET) return Unavailable("nbd client " + peer_ + " reset the connection");
    return PosixError("read from nbd client " + peer_, errno);
  }
  return Status::Ok();
}

Status NbdSocket::Discard(uint64_t length) {
  std::vector<uint8_t> scratch(std::min<uint64_t>(length, 1 << 20));
  while (length > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(length, scratch.size()));
    CONTINUUM_RETURN_IF_ERROR(ReadExact({scratch.data(), chunk}));
    length -= chunk;
  }
  return Status::Ok();
}

Status NbdSocket::Write(std::span<const uint8_t> head, std::span<const uint8_t> body) {
  std::lock_guard lock(write_mu_);
  iovec iov[2] = {{const_cast<uint8_t*>(head.data()), head.size()},
                  {const_cast<uint8_t*>(body.data()), body.size()}};
  int first = 0;
  while (first < 2) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    msghdr msg{};
    msg.msg_iov = &iov[first];
    msg.msg_iovlen = static_cast<size_t>(2 - first);
    // MSG_NOSIGNAL: a client that went away must cost an error, not SIGPIPE.
    ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) {
        return Unavailable("nbd client " + peer_ + " went away before reading its replies");
      }
      return PosixError("write to nbd client " + peer_, errno);
    }
    size_t left = static_cast<size_t>(n);
    while (first < 2 && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      iov[first].iov_len = 0;
      ++first;
    }
    if (first < 2) {
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return Status::Ok();
}

Status NbdSocket::SetReceiveTimeout(int timeout_ms) {
  timeval tv{.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  if (::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
    return PosixError("set receive timeout for nbd client " + peer_, errno);
  }
  return Status::Ok();
}

void NbdSocket::Shutdown() {
  // Deliberately ignored: the socket may already be shut down or reset.
  (void)::shutdown(fd_, SHUT_RDWR);
}

}  // namespace continuum::capture
