#pragma once
// The inbound Thrift handler: callers' mTLS connections on --thrift-listen, one instance per
// worker. Each connection shakes hands, learns the caller's identity, checks the allow-list, and
// then passes framed calls through to the local Thrift service (--thrift-upstream) over this
// worker's pool, one call at a time, so that replies come back in the order of the calls.

#include <spdlog/logger.h>

#include <array>
#include <boost/asio/ssl/context.hpp>
#include <cstdint>
#include <memory>

#include "core/config.h"
#include "net/identity.h"
#include "net/log_limiter.h"
#include "net/tls_context.h"
#include "net/worker.h"
#include "thrift/metrics.h"
#include "trace/tracer.h"
#include "upstream/pool.h"

namespace sidecar {

// Read-only state every worker's Thrift handler shares.
struct ThriftShared {
  ProxyLimits limits;  // idle, upstream connect and call deadlines; the handshake's
  IdentityAllowList allowList;
  ThriftMetrics* metrics;
  tcp::endpoint local;     // the local Thrift service (--thrift-upstream)
  std::uint32_t maxFrame;  // --thrift-max-frame
  // --thrift-max-buffered: callers' frame bytes held at once per worker (at least maxFrame).
  std::size_t maxBuffered;
  trace::Tracer* tracer = nullptr;  // none: tracing is off (no --zipkin-url)
};

// Data-path events logged one line each, within a budget per worker and event.
enum class ThriftLogEvent : unsigned {
  handshakeFailed,
  badFrame,
  badRequestHeader,
  identityRefused,
  localFailed,
  count
};

class ThriftHandler final : public ConnectionHandler {
 public:
  ThriftHandler(Worker& worker, const ThriftShared& shared,
                std::shared_ptr<asio::ssl::context> tls);

  void accepted(TcpSocket socket) override;
  void tick() override { pool_.sweep(); }
  void clear() override { pool_.clear(); }

  // The first-byte wait's hooks (net/first_byte_wait.h): no TLS state before the first byte.
  static constexpr Budget kBudget = Budget::thrift;
  Duration handshakeTimeout() const { return shared_.limits.handshakeTimeout; }
  void waitStarted();
  void firstByte(TcpSocket socket, std::chrono::steady_clock::time_point handshakeDeadline);
  // A connection closed before its first byte: a handshake that timed out, as the HTTP
  // listener counts it.
  void neverSpoke(bool timedOut) {
    if (timedOut) {
      shared_.metrics->handshake(HandshakeFailure::Timeout).Increment();
    }
  }

  // Thread-safe: new handshakes use ctx; open connections keep theirs.
  void setTls(std::shared_ptr<asio::ssl::context> ctx);

  // Worker-thread only, for sessions.
  Worker& worker() { return worker_; }
  const ThriftShared& shared() const { return shared_; }
  ConnectionPool& pool() { return pool_; }
  ThriftMethodSlots& methodSlots() { return methodSlots_; }
  ThriftMethodSlots& clientSlots() { return clientSlots_; }  // TTwitter callers' client ids
  LogLimiter& logLimiter(ThriftLogEvent e) { return logLimiters_[static_cast<unsigned>(e)]; }
  // Callers' frame bytes this worker's sessions hold now, bounded by shared().maxBuffered.
  std::size_t& buffered() { return buffered_; }

 private:
  Worker& worker_;
  const ThriftShared& shared_;
  std::shared_ptr<asio::ssl::context> tls_;
  ConnectionPool pool_;
  ThriftMethodSlots methodSlots_;
  ThriftMethodSlots clientSlots_;
  std::array<LogLimiter, static_cast<unsigned>(ThriftLogEvent::count)> logLimiters_{};
  std::size_t buffered_ = 0;
};

}  // namespace sidecar
