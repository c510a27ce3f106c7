#pragma once
// One caller's mTLS connection, from its handshake to its last answer: identity, allow-list, head
// checks and rewriting, then one exchange with the local service per request.

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>

#include "net/io.h"

namespace sidecar {

class InboundHandler;

// Serves the connection until it closes. The handshake must end by handshakeDeadline.
awaitable<void> serveConnection(InboundHandler& handler, TcpSocket socket,
                                std::shared_ptr<asio::ssl::context> tls,
                                std::chrono::steady_clock::time_point handshakeDeadline);

}  // namespace sidecar
