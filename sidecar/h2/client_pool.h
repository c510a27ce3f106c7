#pragma once
// HTTP/2 connections from one worker to one upstream: plain (h2c, prior knowledge: the local
// service under --upstream-protocol h2c or auto), or over mTLS with ALPN h2 (a member of an
// outbound route, offered h2 then http/1.1; one that chooses HTTP/1.1 has its connection kept
// for an HTTP/1.1 call (takeHttp1()), and the streams waiting on it end unsent, refusedH2()
// telling the caller why). Streams of every caller are multiplexed over a few connections: a
// stream goes to the least busy one that has room under the peer's SETTINGS_MAX_CONCURRENT_STREAMS;
// a new connection is opened while there are fewer than the bound; past it, nghttp2 queues the
// stream on the least busy one until a stream ends.

#include <prometheus/counter.h>

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "h2/session.h"
#include "net/deadline_socket.h"
#include "net/tls_stream.h"

namespace sidecar::h2 {

struct ClientLimits {
  Duration connectTimeout{1'000};
  Duration idleTimeout{30'000};   // no stream open this long: GOAWAY, closed
  Duration writeTimeout{30'000};  // one write that does not progress
  std::size_t maxConnections = 4;
  prometheus::Counter* opened = nullptr;  // connections made, if counted
};

// mTLS toward the upstream: the context, SNI and the identity its certificate must carry.
struct ClientTls {
  std::shared_ptr<asio::ssl::context> context;
  std::string serverName;
  std::string expectedIdentity;  // empty: any certificate the context's CA signed
};

class ClientConnection;

class ClientPool {
 public:
  ClientPool(IoExecutor ex, tcp::endpoint endpoint, const Settings& settings,
             const ClientLimits& limits, std::optional<ClientTls> tls = std::nullopt);
  ~ClientPool();
  ClientPool(const ClientPool&) = delete;
  ClientPool& operator=(const ClientPool&) = delete;

  // The connection a new stream goes on (made now if needed; its streams fail if it cannot be).
  Session& pick();
  // Deadlines of the connections' sockets (connect, write, idle): from a worker's sweep.
  void sweep(std::chrono::steady_clock::time_point now);
  // The worker stops: every connection is closed, its streams with it.
  void clear();
  // New connections use tls (a rotated certificate); those open take no new stream and close
  // once their streams are done.
  void retire(std::optional<ClientTls> tls);
  // The last connection failed because the upstream does not speak HTTP/2 (ALPN chose another).
  bool refusedH2() const { return refusedH2_; }
  // That connection, verified, for an HTTP/1.1 call (once; none if taken or gone). Handed over
  // directly, not pooled: the upstream's post-handshake records (a TLS 1.3 session ticket) may
  // still be on their way, which a pooled connection's check would take for unsolicited bytes.
  std::optional<TlsStream> takeHttp1() { return std::exchange(http1_, std::nullopt); }
  const tcp::endpoint& endpoint() const { return endpoint_; }
  std::size_t connections() const { return conns_.size(); }
  std::uint64_t opened() const { return opened_; }

 private:
  friend class ClientConnection;
  void ended(ClientConnection* c);

  IoExecutor ex_;
  tcp::endpoint endpoint_;
  Settings settings_;
  ClientLimits limits_;
  std::optional<ClientTls> tls_;
  std::vector<std::shared_ptr<ClientConnection>> conns_;
  std::uint64_t opened_ = 0;
  bool refusedH2_ = false;
  std::optional<TlsStream> http1_;
};

}  // namespace sidecar::h2
