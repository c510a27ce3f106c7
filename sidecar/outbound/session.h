#pragma once
// One connection of the local service to the outbound listener.

#include "net/io.h"

namespace sidecar {

class OutboundHandler;

// Serves the connection's requests until it closes.
awaitable<void> serveOutbound(OutboundHandler& handler, TcpSocket socket);

}  // namespace sidecar
