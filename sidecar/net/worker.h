#pragma once
// A worker: one thread, one io_context, its own SO_REUSEPORT acceptor for each listener, and the
// connections it accepted. A connection never leaves its worker, so nothing on the request path
// takes a lock. What a connection is (mTLS inbound, plain outbound, Thrift) is the business of
// the listener's ConnectionHandler; the worker bounds, tracks, times out and drains them all.

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/intrusive/list.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "net/access_log.h"
#include "net/io.h"
#include "net/log_limiter.h"

namespace sidecar {

// Which connection budget a listener's connections count in. Each has its own limit, so that
// callers of one listener at their limit never lock out another's: remote callers on --listen
// cannot refuse the local service's own calls on --outbound-listen, nor Thrift callers.
enum class Budget : std::uint8_t {
  listen,    // --listen, --max-connections
  thrift,    // --thrift-listen, --thrift-max-connections
  outbound,  // --outbound-listen and every --thrift-route port, --outbound-max-connections
  count
};
inline constexpr std::size_t kBudgets = static_cast<std::size_t>(Budget::count);
// The budgets' names, as the `listener` label of the connection metrics says them.
inline constexpr std::array<const char*, kBudgets> kListenerNames = {"listen", "thrift",
                                                                     "outbound"};

// One budget's connections open across all workers: touched once per connection, never per
// request.
struct ConnectionBudget {
  std::size_t limit = 0;
  std::atomic<std::size_t> open{0};
};
struct ConnectionCount {
  std::array<ConnectionBudget, kBudgets> budgets;
  ConnectionBudget& operator[](Budget b) { return budgets[static_cast<std::size_t>(b)]; }
  std::size_t open() const;  // all budgets together
  // Raised by worker 0 when a flood of connections has ended: each worker frees its block cache
  // once per raise (alloc::flush), and worker 0 trims a second later.
  std::atomic<std::uint32_t> flushes{0};
};

// What the workers count themselves, whichever listener: by budget, connections refused and
// evicted at the limit; malloc_trim calls; access-log lines dropped (by the writer, AccessLog).
struct WorkerMetrics {
  WorkerMetrics() = default;  // no metrics yet: set before the workers start
  explicit WorkerMetrics(prometheus::Registry& registry);
  std::array<prometheus::Counter*, kBudgets> connectionsRefused{};
  std::array<prometheus::Counter*, kBudgets> connectionsEvicted{};
  prometheus::Counter* memoryTrims = nullptr;
  prometheus::Counter* accessLogDropped = nullptr;
};

// What every worker shares, read-only but for the connection counts (and their limits, set
// before the workers start).
struct WorkerShared {
  std::chrono::microseconds busyPoll{0};  // --busy-poll-us
  AccessLog* accessLog = nullptr;         // --access-log; null: off
  WorkerMetrics metrics;
  std::unique_ptr<ConnectionCount> connections = std::make_unique<ConnectionCount>();
};

// What a worker needs of a connection it tracks: its deadlines, and closing it when it waits for
// a request that shutdown will not serve, or when --max-connections needs the room.
class TrackedSession : public boost::intrusive::list_base_hook<
                           boost::intrusive::link_mode<boost::intrusive::auto_unlink>> {
 public:
  explicit TrackedSession(Budget budget) : budget_(budget) {}
  // The budget its connection counts in; at a budget's limit only its own sessions are evicted.
  Budget budget() const { return budget_; }
  // Closes the connection if it waits for a request (or is not yet a caller); true if it did.
  virtual bool closeIfIdle() = 0;
  // Ends what waits past its deadline (called by the worker's sweep).
  virtual void expireIfDue(std::chrono::steady_clock::time_point now) = 0;

 protected:
  ~TrackedSession() = default;

 private:
  Budget budget_;
};

// A listener's handler on one worker: it takes over each accepted connection. One instance per
// worker and listener, used on the worker's thread only.
class ConnectionHandler {
 public:
  virtual ~ConnectionHandler() = default;
  // The worker counted the connection in WorkerShared::connections; the handler calls
  // Worker::connectionClosed(budget) once it is gone.
  virtual void accepted(TcpSocket socket) = 0;
  // Once a second (pools, caches).
  virtual void tick() {}
  // The worker stops: give back sockets (pooled connections) while the io_context still exists.
  virtual void clear() {}
};

class Worker {
 public:
  Worker(const WorkerShared& shared, unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Binds endpoint with SO_REUSEPORT for handler; throws boost::system::system_error. Returns the
  // listener's index (for localEndpoint). Before start() only.
  std::size_t addListener(const tcp::endpoint& endpoint, std::unique_ptr<ConnectionHandler> handler,
                          Budget budget);
  tcp::endpoint localEndpoint(std::size_t listener = 0) const;
  ConnectionHandler& handler(std::size_t listener) { return *listeners_[listener].handler; }
  void start();
  // Thread-safe: stop accepting, close idle connections, let busy ones finish their request;
  // onDrained runs on the worker thread once no connection is left.
  void drain(std::function<void()> onDrained);
  // Thread-safe: stop the loop and join the thread (open connections are dropped).
  void stop();

  // Worker-thread only, for handlers and sessions.
  asio::io_context& ioc() { return *ioc_; }
  unsigned index() const { return index_; }
  const WorkerShared& shared() const { return shared_; }
  bool draining() const { return draining_; }
  const bool& drainingFlag() const { return draining_; }  // for reads later on this thread
  // This worker's access-log lines (handed to the writer at 16 KiB and every sweep); null: off.
  AccessLog::Buffer* accessLog() { return accessLog_ ? &*accessLog_ : nullptr; }
  void sessionStarted(TrackedSession& s);
  void sessionEnded(TrackedSession& s);
  // A connection this worker accepted on a listener of budget b is gone (see
  // ConnectionHandler::accepted).
  void connectionClosed(Budget b) {
    (*shared_.connections)[b].open.fetch_sub(1, std::memory_order_relaxed);
  }

  // Body relay buffers, lent while a body streams so that idle connections hold none.
  static constexpr std::size_t kRelayBufferSize = 16 * 1024;
  std::unique_ptr<char[]> takeRelayBuffer();
  void returnRelayBuffer(std::unique_ptr<char[]> buffer);

  // How late a deadline may fire: the period of the sweep over this worker's connections.
  static constexpr std::chrono::milliseconds kSweepPeriod{100};
  // Handlers tick every this many sweeps (once a second).
  static constexpr unsigned kTickEvery = 10;

 private:
  // The thread's loop: io_context::run(), or with --busy-poll-us, polls while events came lately.
  void loop();
  void accept(std::size_t listener);
  void admit(std::size_t listener, TcpSocket socket);
  void sweep();
  // Hands memory freed by a flood back to the system (worker 0 only, once a second).
  void trimAfterFlood();
  static constexpr std::size_t kTrimAfterDrop = 256;  // connections fewer than the peak
  static constexpr std::size_t kTrimSettled = 16;     // fewer gone in the last second
  // At a budget's limit: closes this worker's longest-idle connection of that budget; false if
  // none is idle.
  bool evictIdle(Budget b);

  struct Listener {
    std::optional<TcpAcceptor> acceptor;
    std::unique_ptr<ConnectionHandler> handler;
    Budget budget;
  };
  using SessionList =
      boost::intrusive::list<TrackedSession, boost::intrusive::constant_time_size<false>>;

  const WorkerShared& shared_;
  unsigned index_;
  // ~Worker destroys ioc_ first, by hand: that destroys the suspended sessions, which still use
  // the members below (the handlers among them).
  std::unique_ptr<asio::io_context> ioc_;
  std::vector<Listener> listeners_;
  std::optional<SteadyTimer> sweepTimer_;
  SessionList sessions_;
  std::size_t sessionCount_ = 0;
  unsigned sweeps_ = 0;
  std::size_t peakOpen_ = 0;   // connections open across all workers, highest since the last trim
  std::size_t lastOpen_ = 0;   // and a second ago
  bool trimDue_ = false;       // the flood settled: malloc_trim at the next tick
  std::uint32_t flushed_ = 0;  // the last ConnectionCount::flushes this worker acted on
  std::array<bool, kBudgets> refusalLogged_{};
  bool draining_ = false;
  std::function<void()> onDrained_;
  std::vector<std::unique_ptr<char[]>> freeRelayBuffers_;
  std::optional<AccessLog::Buffer> accessLog_;
  LogLimiter acceptLog_;
  std::thread thread_;
};

// A session that owns its connection to the end, as every listener's session does: registered
// with its worker (sweeps, evictions, drain) from construction, and counted in its listener's
// budget until it is destroyed. (FirstByteWait, which hands its socket on, registers itself.)
class WorkerSession : public TrackedSession {
 protected:
  WorkerSession(Worker& worker, Budget budget) : TrackedSession(budget), worker_(worker) {
    worker_.sessionStarted(*this);
  }
  ~WorkerSession() {
    worker_.sessionEnded(*this);
    worker_.connectionClosed(budget());
  }
  WorkerSession(const WorkerSession&) = delete;
  WorkerSession& operator=(const WorkerSession&) = delete;

  Worker& worker_;
};

// A relay buffer borrowed from the worker on first use, for as long as one exchange runs.
class LazyRelayBuffer {
 public:
  explicit LazyRelayBuffer(Worker& w) : worker_(w) {}
  ~LazyRelayBuffer() { worker_.returnRelayBuffer(std::move(buffer_)); }
  LazyRelayBuffer(const LazyRelayBuffer&) = delete;
  LazyRelayBuffer& operator=(const LazyRelayBuffer&) = delete;
  char* get() {
    if (!buffer_) {
      buffer_ = worker_.takeRelayBuffer();
    }
    return buffer_.get();
  }
  static constexpr std::size_t size() { return Worker::kRelayBufferSize; }

 private:
  Worker& worker_;
  std::unique_ptr<char[]> buffer_;
};

}  // namespace sidecar
