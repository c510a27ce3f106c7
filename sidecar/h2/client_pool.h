#pragma once
// HTTP/2 connections from one worker to one plain (h2c, prior knowledge) upstream: the local
// service under --upstream-protocol h2c or auto. Streams of every caller are multiplexed over a
// few connections: a stream goes to the least busy one that has room under the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS; a new connection is opened while there are fewer than the
// bound; past it, nghttp2 queues the stream on the least busy one until a stream ends.

#include <prometheus/counter.h>

#include <memory>
#include <vector>

#include "h2/session.h"
#include "net/deadline_socket.h"

namespace sidecar::h2 {

struct ClientLimits {
  Duration connectTimeout{1'000};
  Duration idleTimeout{30'000};   // no stream open this long: GOAWAY, closed
  Duration writeTimeout{30'000};  // one write that does not progress
  std::size_t maxConnections = 4;
  prometheus::Counter* opened = nullptr;  // connections made, if counted
};

class ClientConnection;

class ClientPool {
 public:
  ClientPool(IoExecutor ex, tcp::endpoint endpoint, const Settings& settings,
             const ClientLimits& limits);
  ~ClientPool();
  ClientPool(const ClientPool&) = delete;
  ClientPool& operator=(const ClientPool&) = delete;

  // The connection a new stream goes on (made now if needed; its streams fail if it cannot be).
  Session& pick();
  // Deadlines of the connections' sockets (connect, write, idle): from a worker's sweep.
  void sweep(std::chrono::steady_clock::time_point now);
  // The worker stops.
  void clear();
  std::size_t connections() const { return conns_.size(); }
  std::uint64_t opened() const { return opened_; }

 private:
  friend class ClientConnection;
  void ended(ClientConnection* c);

  IoExecutor ex_;
  tcp::endpoint endpoint_;
  Settings settings_;
  ClientLimits limits_;
  std::vector<std::shared_ptr<ClientConnection>> conns_;
  std::uint64_t opened_ = 0;
};

}  // namespace sidecar::h2
