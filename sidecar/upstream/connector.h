#pragma once
// Opening connections to upstream endpoints: plain TCP to the local service. (The mTLS
// connector for the outbound mesh wraps the same socket in a client-role TlsStream.)

#include "core/config.h"
#include "net/io.h"
#include "net/tls_stream.h"

namespace sidecar {

// Connects s (closed first if open) to e within timeout; a deadline that passes ends it with
// beast::error::timeout. Nagle off: heads and small bodies go out as written.
inline awaitable<error_code> connectPlain(DeadlineSocket& s, const tcp::endpoint& e,
                                          Duration timeout) {
  auto& socket = s.socket();
  error_code ignored;
  socket.close(ignored);
  s.expires_after(timeout);
  auto [ec] = co_await socket.async_connect(e, useTuple);
  if (ec == asio::error::operation_aborted && s.timedOut()) {
    ec = boost::beast::error::timeout;
  }
  if (!ec) {
    socket.set_option(tcp::no_delay(true), ignored);
  }
  co_return ec;
}

}  // namespace sidecar
