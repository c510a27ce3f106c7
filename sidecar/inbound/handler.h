#pragma once
// The inbound handler: callers' mTLS connections on --listen, one instance per worker. Each
// connection waits for its first byte without TLS state, shakes hands, learns the caller's
// identity, checks the allow-list, and then runs exchanges with the local service (http/exchange.h)
// over this worker's pool.

#include <spdlog/logger.h>

#include <array>
#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>

#include "core/config.h"
#include "h2/client_pool.h"
#include "h2/session.h"
#include "inbound/metrics.h"
#include "net/identity.h"
#include "net/log_limiter.h"
#include "net/worker.h"
#include "trace/tracer.h"
#include "upstream/cluster.h"
#include "upstream/pool.h"

namespace sidecar {

// Read-only state every worker's inbound handler shares.
struct InboundShared {
  ProxyLimits limits;
  IdentityAllowList allowList;
  InboundMetrics* metrics;
  StaticCluster local;              // the local service (--upstream)
  std::string upstreamAuthority;    // "host:port" of the local service, Host for HTTP/1.0 callers
  trace::Tracer* tracer = nullptr;  // none: tracing is off (no --zipkin-url)
  // HTTP/2 callers (ALPN h2): how their streams reach the local service, and their bounds.
  UpstreamProtocol upstreamProtocol = UpstreamProtocol::http1;
  h2::Settings h2{};
  std::size_t upstreamH2Connections = 4;
  tcp::endpoint h2Upstream{};  // where h2c goes: --upstream-grpc, else --upstream
};

// Data-path events that are logged one line each, within a budget per worker and event.
enum class LogEvent : unsigned {
  handshakeFailed,
  badRequest,
  identityRefused,
  overloaded,
  upstreamConnectFailed,
  upstreamFailed,
  upstreamBodyFailed,
  count
};

class InboundHandler final : public ConnectionHandler {
 public:
  InboundHandler(Worker& worker, const InboundShared& shared, unsigned workers,
                 std::shared_ptr<asio::ssl::context> tls);

  void accepted(TcpSocket socket) override;
  void tick() override {
    pool_.sweep();
    if (h2Pool_) {
      // Also when no HTTP/2 caller is left to sweep it more often: its deadlines still pass.
      h2Pool_->sweep(std::chrono::steady_clock::now());
    }
  }

  // The first-byte wait's hooks (net/first_byte_wait.h).
  static constexpr Budget kBudget = Budget::listen;
  Duration handshakeTimeout() const { return shared_.limits.handshakeTimeout; }
  void waitStarted();
  void firstByte(TcpSocket socket, std::chrono::steady_clock::time_point handshakeDeadline);
  void neverSpoke(bool timedOut);
  void clear() override {
    pool_.clear();
    if (h2Pool_) {
      h2Pool_->clear();
    }
  }

  // Thread-safe: new handshakes use ctx; open connections keep theirs.
  void setTls(std::shared_ptr<asio::ssl::context> ctx);

  // Worker-thread only, for sessions.
  Worker& worker() { return worker_; }
  const InboundShared& shared() const { return shared_; }
  const std::shared_ptr<asio::ssl::context>& tls() const { return tls_; }
  ConnectionPool& pool() { return pool_; }
  // The worker's h2c connections to the local service (made on first use).
  h2::ClientPool& h2Pool();
  LogLimiter& logLimiter(LogEvent e) { return logLimiters_[static_cast<unsigned>(e)]; }
  // Requests of this worker at the local service; past pendingLimit() they get a 503.
  std::size_t& pending() { return pending_; }
  std::size_t pendingLimit() const { return pendingLimit_; }

 private:
  Worker& worker_;
  const InboundShared& shared_;
  std::shared_ptr<asio::ssl::context> tls_;
  ConnectionPool pool_;
  std::unique_ptr<h2::ClientPool> h2Pool_;
  std::size_t pending_ = 0;
  std::size_t pendingLimit_;
  std::array<LogLimiter, static_cast<unsigned>(LogEvent::count)> logLimiters_{};
};

}  // namespace sidecar
