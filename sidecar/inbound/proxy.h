#pragma once
// The inbound data path: a Worker owns one thread, one io_context, one SO_REUSEPORT acceptor and
// one upstream pool; a connection never leaves its worker, so the request path takes no lock.

#include <spdlog/logger.h>

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/intrusive/list.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "net/identity.h"
#include "net/io.h"
#include "core/metrics.h"

namespace sidecar {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

// Connections open across all workers: touched once per connection, never per request.
struct ConnectionCount {
  std::atomic<std::size_t> open{0};
};

// Read-only state every worker shares (but for the connection count).
struct ProxyShared {
  ProxyLimits limits;
  IdentityAllowList allowList;
  tcp::endpoint upstream;
  ProxyMetrics* metrics;
  std::shared_ptr<spdlog::logger> accessLog;  // null: off
  std::unique_ptr<ConnectionCount> connections = std::make_unique<ConnectionCount>();
  std::string upstreamAuthority;  // "host:port" of the local service, Host for HTTP/1.0 callers
};

// Keep-alive connections to the local service, owned by one worker.
class UpstreamPool {
 public:
  UpstreamPool(asio::io_context& ioc, const ProxyShared& shared) : ioc_(ioc), shared_(shared) {}

  // The most recently returned idle connection that is not too old, or none.
  std::optional<TcpSocket> takeIdle();
  void giveBack(TcpSocket socket);
  // Closes idle connections that are past --upstream-idle-timeout, were closed by the local
  // service, or hold bytes nobody asked for. One peek per idle connection.
  void sweep();
  void clear();
  std::size_t idle() const { return idle_.size(); }

 private:
  struct Idle {
    TcpSocket socket;
    std::chrono::steady_clock::time_point since;
  };
  asio::io_context& ioc_;
  const ProxyShared& shared_;
  std::deque<Idle> idle_;  // oldest first
};

// What a worker needs of a connection it tracks: its deadlines, and closing it when it waits for
// a request that shutdown will not serve.
class TrackedSession : public boost::intrusive::list_base_hook<
                           boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
 public:
  // Closes the connection if it waits for a request; true if it did.
  virtual bool closeIfIdle() = 0;
  // Ends what waits past its deadline (called by the worker's sweep).
  virtual void expireIfDue(std::chrono::steady_clock::time_point now) = 0;

 protected:
  ~TrackedSession() = default;
};

// Data-path events that are logged one line each. Their lines are rate-limited per worker.
enum class LogEvent : unsigned {
  handshakeFailed,
  badRequest,
  identityRefused,
  overloaded,
  upstreamConnectFailed,
  upstreamFailed,
  upstreamBodyFailed,
  acceptFailed,
  count
};

// At most kPerSecond lines per event and worker each second, so that a flood of bad callers or
// an outage of the local service under load cannot flood the log (or slow the data path down
// writing it). The next line written carries how many were left out; counters count them all.
class LogLimiter {
 public:
  static constexpr unsigned kPerSecond = 10;
  // True if a line may be written now; then `suppressed` is how many were left out before it.
  bool allow(std::chrono::steady_clock::time_point now, std::uint64_t& suppressed) {
    if (now - windowStart_ >= std::chrono::seconds(1)) {
      windowStart_ = now;
      written_ = 0;
    }
    if (written_ >= kPerSecond) {
      ++dropped_;
      return false;
    }
    ++written_;
    suppressed = dropped_;
    dropped_ = 0;
    return true;
  }

 private:
  std::chrono::steady_clock::time_point windowStart_{};
  unsigned written_ = 0;
  std::uint64_t dropped_ = 0;
};

class Worker {
 public:
  Worker(const ProxyShared& shared, unsigned index, unsigned workers);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds with SO_REUSEPORT; throws boost::system::system_error.
  void listen(const tcp::endpoint& endpoint);
  tcp::endpoint localEndpoint() const { return acceptor_->local_endpoint(); }
  void start(std::shared_ptr<asio::ssl::context> tls);
  // Thread-safe: new handshakes use ctx; open connections keep theirs.
  void setTls(std::shared_ptr<asio::ssl::context> ctx);
  // Thread-safe: stop accepting, close idle connections, let busy ones finish their request;
  // onDrained runs on the worker thread once no connection is left.
  void drain(std::function<void()> onDrained);
  // Thread-safe: stop the loop and join the thread (open connections are dropped).
  void stop();

  // Worker-thread only, for sessions.
  asio::io_context& ioc() { return *ioc_; }
  unsigned index() const { return index_; }
  const ProxyShared& shared() const { return shared_; }
  const std::shared_ptr<asio::ssl::context>& tls() const { return tls_; }
  UpstreamPool& pool() { return pool_; }
  bool draining() const { return draining_; }
  // Body relay buffers, lent while a body streams so that idle connections hold none.
  static constexpr std::size_t kRelayBufferSize = 16 * 1024;
  std::unique_ptr<char[]> takeRelayBuffer();
  void returnRelayBuffer(std::unique_ptr<char[]> buffer);
  void sessionStarted(TrackedSession& s);
  void sessionEnded(TrackedSession& s);
  LogLimiter& logLimiter(LogEvent e) { return logLimiters_[static_cast<unsigned>(e)]; }
  // How late a deadline may fire: the period of the sweep over this worker's connections.
  static constexpr std::chrono::milliseconds kSweepPeriod{100};
  // The upstream pool is swept every this many sweeps (once a second).
  static constexpr unsigned kPoolSweepEvery = 10;
  // Requests of this worker at the local service; past pendingLimit() they get a 503.
  std::size_t& pending() { return pending_; }
  std::size_t pendingLimit() const { return pendingLimit_; }

 private:
  void accept();
  void sweep();
  // Hands memory freed by a flood back to the system (worker 0 only, once a second).
  void trimAfterFlood();
  static constexpr std::size_t kTrimAfterDrop = 256;  // connections fewer than the peak
  static constexpr std::size_t kTrimSettled = 16;     // fewer gone in the last second
  // At --max-connections: closes this worker's longest-idle connection; false if none is idle.
  bool evictIdle();

  using SessionList =
      boost::intrusive::list<TrackedSession, boost::intrusive::constant_time_size<false>>;

  const ProxyShared& shared_;
  unsigned index_;
  // ~Worker destroys ioc_ first, by hand: that destroys the suspended sessions, which still use
  // the members below.
  std::unique_ptr<asio::io_context> ioc_;
  std::optional<TcpAcceptor> acceptor_;
  std::optional<SteadyTimer> sweepTimer_;
  UpstreamPool pool_;
  SessionList sessions_;
  std::size_t sessionCount_ = 0;
  unsigned sweeps_ = 0;
  std::size_t peakOpen_ = 0;  // connections open across all workers, highest since the last trim
  std::size_t lastOpen_ = 0;  // and a second ago
  std::size_t pending_ = 0;
  std::size_t pendingLimit_;
  bool refusalLogged_ = false;
  std::shared_ptr<asio::ssl::context> tls_;
  bool draining_ = false;
  std::function<void()> onDrained_;
  std::vector<std::unique_ptr<char[]>> freeRelayBuffers_;
  std::array<LogLimiter, static_cast<unsigned>(LogEvent::count)> logLimiters_{};
  std::thread thread_;
};

}  // namespace sidecar
