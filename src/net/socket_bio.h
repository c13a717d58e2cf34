#pragma once

#include <openssl/bio.h>

namespace continuum::net {

// A BIO over a connected, non-blocking socket that it does not own. Unlike
// BIO_s_socket it sends with MSG_NOSIGNAL, so a peer that went away costs an
// EPIPE error instead of a SIGPIPE that kills the daemon.
BIO* NewSocketBio(int fd);

}  // namespace continuum::net
