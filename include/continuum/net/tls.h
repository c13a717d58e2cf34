#pragma once

// The replication transport: TLS 1.3 with mutual certificate authentication
// between `continuum agent` and `continuum server`, or plaintext TCP with
// TlsOptions::insecure. src/net/socket_connection.h explains the threading.

#include <memory>
#include <string>

#include "continuum/common/result.h"
#include "continuum/net/connection.h"
#include "continuum/net/listener.h"
#include "continuum/net/tls_options.h"

namespace continuum::net {

// Connects to `host_port` ("dr1.example:7700", "10.0.0.5:7700", "[fd00::5]:7700"),
// verifies the server's certificate against the site CA and, when
// `expected_peer_name` is not empty, that its common name equals it. Returns
// only once the server has also accepted our certificate, so a refusal (expired,
// wrong CA) is reported here rather than on the first Recv. The whole dial is
// bounded by options.connect_timeout_ms (name resolution excepted).
// Errors: kFailedPrecondition for certificate and configuration problems (an
// operator must act; the message says what to run), kUnavailable for network
// ones (retry with backoff), kInvalidArgument for a malformed address.
// Thread-safety: safe to call concurrently; each call loads the PKI files
// afresh, so a renewed certificate is picked up on the next reconnect.
Result<std::unique_ptr<Connection>> Dial(const std::string& host_port, const TlsOptions& options,
                                         const std::string& expected_peer_name = "");

}  // namespace continuum::net
