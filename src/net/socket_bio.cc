#include "net/socket_bio.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstdint>

namespace continuum::net {
namespace {

int Fd(BIO* b) { return static_cast<int>(reinterpret_cast<intptr_t>(BIO_get_data(b))); }

bool Retryable(int err) { return err == EAGAIN || err == EWOULDBLOCK || err == EINTR; }

int Write(BIO* b, const char* data, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n = ::send(Fd(b), data, static_cast<size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && Retryable(errno)) BIO_set_retry_write(b);
  return static_cast<int>(n);
}

int Read(BIO* b, char* out, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n = ::recv(Fd(b), out, static_cast<size_t>(len), 0);
  if (n < 0 && Retryable(errno)) BIO_set_retry_read(b);
  // libssl tells a truncated stream from an error by BIO_eof.
  if (n == 0) BIO_set_flags(b, BIO_FLAGS_IN_EOF);
  return static_cast<int>(n);
}

long Ctrl(BIO* b, int cmd, long num, void* ptr) {
  switch (cmd) {
    case BIO_C_GET_FD:
      if (ptr != nullptr) *static_cast<int*>(ptr) = Fd(b);
      return Fd(b);
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:
      return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0 ? 1 : 0;
    default:
      return 0;
  }
}

const BIO_METHOD* Method() {
  // Built once; BIO_METHODs are immutable after setup and shared by all threads.
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "continuum socket");
    BIO_meth_set_write(m, Write);
    BIO_meth_set_read(m, Read);
    BIO_meth_set_ctrl(m, Ctrl);
    return m;
  }();
  return method;
}

}  // namespace

BIO* NewSocketBio(int fd) {
  BIO* b = BIO_new(Method());
  if (b == nullptr) return nullptr;
  BIO_set_data(b, reinterpret_cast<void*>(static_cast<intptr_t>(fd)));
  BIO_set_init(b, 1);
  return b;
}

}  // namespace continuum::net
