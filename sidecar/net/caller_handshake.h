#pragma once
// The step every TLS listener takes after its first-byte wait (net/first_byte_wait.h): the
// handshake, within the deadline that runs from the accept, timed and its failure named; then the
// caller's identity from its certificate and the allow-list's verdict. The HTTP and Thrift
// listeners count and log what it reports, each in its own series.

#include <openssl/ssl.h>

#include <chrono>
#include <optional>

#include "net/identity.h"
#include "net/io.h"
#include "net/tls_context.h"
#include "net/tls_stream.h"

namespace sidecar {

struct CallerHandshake {
  error_code ec;
  std::optional<HandshakeFailure> failure;  // none: the handshake succeeded
  std::chrono::steady_clock::duration took{};
};

// handshaking is true while the handshake runs, so that an eviction may end it (closeIfIdle).
inline awaitable<CallerHandshake> handshakeCaller(TlsStream& stream,
                                                  std::chrono::steady_clock::time_point deadline,
                                                  bool& handshaking) {
  stream.lowest_layer().expires_at(deadline);
  const auto start = std::chrono::steady_clock::now();
  handshaking = true;
  auto [ec] = co_await stream.async_handshake(useTuple);
  handshaking = false;
  CallerHandshake out{ec, std::nullopt, std::chrono::steady_clock::now() - start};
  if (ec) {
    out.failure = classifyHandshakeFailure(ec, SSL_get_verify_result(stream.native_handle()));
  }
  co_return out;
}

struct CallerIdentity {
  PeerIdentity peer;
  bool allowed = false;  // usable, and admitted by the allow-list
};

// After a successful handshake. The copies of the peer's chain OpenSSL keeps are dropped: the
// identity is all a session needs of them.
inline CallerIdentity identifyCaller(TlsStream& stream, const IdentityAllowList& allowList) {
  CallerIdentity out{peerIdentityFromCert(SSL_get0_peer_certificate(stream.native_handle()))};
  dropPeerChainCopies(stream.native_handle());
  out.allowed = !out.peer.unusable && allowList.allows(out.peer.identity);
  return out;
}

}  // namespace sidecar
