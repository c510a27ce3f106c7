#pragma once
// A caller's HTTP/2 connection on --listen (ALPN h2), after the mTLS prelude every inbound
// connection shares (net/caller_session.h). Each stream is one request: the same identity rule,
// X-Forwarded-Client-Cert, limits, access-log line and metrics as an HTTP/1.1 request, then an
// exchange with the local service over h2c (a stream on a pooled connection, h2/client_pool.h)
// or over HTTP/1.1 (a pooled connection per request, the request translated), as
// --upstream-protocol says. docs/http2.md describes it.

#include <chrono>
#include <memory>
#include <string>

#include "net/identity.h"
#include "net/io.h"
#include "net/tls_stream.h"

namespace sidecar {

class InboundHandler;

// Who the caller is, from the prelude.
struct H2Caller {
  PeerIdentity peer;
  bool allowed = false;
  std::string clientIp;
  std::string identityForLog;
};

class InboundH2Server {
 public:
  InboundH2Server(InboundHandler& handler, H2Caller caller);
  ~InboundH2Server();
  InboundH2Server(const InboundH2Server&) = delete;
  InboundH2Server& operator=(const InboundH2Server&) = delete;

  // Serves the connection until it ends; every stream is closed then.
  awaitable<void> run(TlsStream& stream);
  // The worker's sweep: streams' deadlines, the upstream connections', the drain's GOAWAY.
  void sweep(std::chrono::steady_clock::time_point now);
  bool idle() const;  // no stream open

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidecar
