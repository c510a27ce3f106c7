#pragma once
// The local service's HTTP/2 connection on --outbound-listen (h2c with prior knowledge: its first
// bytes are the HTTP/2 preface). Each stream is one call, routed by its :authority as an HTTP/1.1
// call is by its Host, and balanced on its own: a member is picked per stream (P2C peak EWMA),
// not per connection, so one long-lived gRPC connection of the local service spreads its calls
// over every member. Members are called over mTLS with ALPN h2 (h2/client_pool.h), a few
// connections each per worker and route. docs/http2.md describes it.

#include <chrono>
#include <memory>

#include "net/deadline_socket.h"
#include "net/io.h"

namespace sidecar {

class OutboundHandler;

class OutboundH2Server {
 public:
  explicit OutboundH2Server(OutboundHandler& handler);
  ~OutboundH2Server();
  OutboundH2Server(const OutboundH2Server&) = delete;
  OutboundH2Server& operator=(const OutboundH2Server&) = delete;

  // Serves the connection until it ends; every stream is closed then.
  awaitable<void> run(DeadlineSocket& caller);
  // The worker's sweep: streams' deadlines, the drain's GOAWAY.
  void sweep(std::chrono::steady_clock::time_point now);
  bool idle() const;  // no stream open

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// The first bytes of a connection are HTTP/2's preface ("PRI * HTTP/2.0"); at least `have` bytes
// of it (3 or more) are compared.
bool looksLikeH2Preface(std::string_view firstBytes);

}  // namespace sidecar
