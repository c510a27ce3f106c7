// The worker's loop: accepting under --max-connections, the deadline sweep, draining.
#include "net/worker.h"

#include <malloc.h>
#include <metrics/metrics.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "core/alloc_cache.h"
#include "net/listener.h"

namespace sidecar {

Worker::Worker(const WorkerShared& shared, unsigned index)
    : shared_(shared), index_(index), ioc_(std::make_unique<asio::io_context>(1)) {}

Worker::~Worker() {
  stop();
  sweepTimer_.reset();
  for (auto& l : listeners_) {
    l.acceptor.reset();
    l.handler->clear();
  }
  ioc_.reset();
}

WorkerMetrics::WorkerMetrics(prometheus::Registry& r) {
  auto& refused = metrics::counterFamily(
      r, "sidecar_inbound_connections_refused_total",
      "Connections closed at once because their listener's budget was full and none of its "
      "connections was idle, by listener: listen (--max-connections), thrift "
      "(--thrift-max-connections), outbound (--outbound-max-connections: --outbound-listen and "
      "--thrift-route).");
  auto& evicted = metrics::counterFamily(
      r, "sidecar_inbound_connections_evicted_total",
      "Idle keep-alive (or not yet handshaken) connections closed to make room for a new one at "
      "their listener's budget, by listener.");
  for (std::size_t i = 0; i < kListenerNames.size(); ++i) {
    connectionsRefused[i] = &refused.Add({{"listener", kListenerNames[i]}});
    connectionsEvicted[i] = &evicted.Add({{"listener", kListenerNames[i]}});
  }
  memoryTrims = &metrics::counter(r, "sidecar_memory_trims_total",
                                  "Times freed memory was handed back to the system (malloc_trim) "
                                  "after the open connections fell 256 or more below their peak.");
  accessLogDropped = &metrics::counter(
      r, "sidecar_access_log_dropped_lines_total",
      "Access-log lines dropped, never written: the writer was more than 4 MiB behind (a stalled "
      "disk or a full pipe), or a write failed. Requests never wait for the access log.");
}

std::size_t ConnectionCount::open() const {
  std::size_t n = 0;
  for (const auto& b : budgets) {
    n += b.open.load(std::memory_order_relaxed);
  }
  return n;
}

std::size_t Worker::addListener(const tcp::endpoint& endpoint,
                                std::unique_ptr<ConnectionHandler> handler, Budget budget) {
  Listener l;
  l.handler = std::move(handler);
  l.budget = budget;
  l.acceptor.emplace(*ioc_);
  bindAndListen(*l.acceptor, endpoint, true);
  listeners_.push_back(std::move(l));
  return listeners_.size() - 1;
}

tcp::endpoint Worker::localEndpoint(std::size_t listener) const {
  return listeners_.at(listener).acceptor->local_endpoint();
}

void Worker::start() {
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    accept(i);
  }
  sweepTimer_.emplace(*ioc_);
  sweep();
  if (shared_.accessLog) {
    accessLog_.emplace(*shared_.accessLog);
  }
  thread_ = std::thread([this] {
    alloc::useOnThisThread();
    spdlog::debug("event=worker_started worker={}", index_);
    loop();
    if (accessLog_) {
      accessLog_->flush();
    }
  });
}

// At moderate load a worker runs dry between requests, sleeps in epoll_wait and is woken for the
// next one: a context switch each way and the wake-up latency on every request. With a busy-poll
// window it keeps asking the kernel (epoll_wait with no timeout, through poll()) until the window
// passes with nothing to do; only then does it sleep. HAProxy's `busy-polling` spins always; a
// window bounds the cost at idle to one window per timer (the sweep: 10 a second).
void Worker::loop() {
  const auto window = shared_.busyPoll;
  if (window.count() == 0) {
    ioc_->run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  auto lastWork = Clock::now();
  while (!ioc_->stopped()) {
    if (ioc_->poll() > 0) {
      lastWork = Clock::now();
    } else if (Clock::now() - lastWork >= window) {
      if (ioc_->run_one() == 0) {
        return;
      }
      lastWork = Clock::now();
    }
  }
}

void Worker::drain(std::function<void()> onDrained) {
  asio::post(*ioc_, [this, cb = std::move(onDrained)]() mutable {
    draining_ = true;
    onDrained_ = std::move(cb);
    for (auto& l : listeners_) {
      error_code ignored;
      l.acceptor->close(ignored);
    }
    for (auto& s : sessions_) {
      s.closeIfIdle();
    }
    if (sessionCount_ == 0) {
      std::exchange(onDrained_, {})();
    }
  });
}

void Worker::stop() {
  ioc_->stop();
  if (thread_.joinable()) {
    thread_.join();
  }
}

std::unique_ptr<char[]> Worker::takeRelayBuffer() {
  if (freeRelayBuffers_.empty()) {
    return std::make_unique_for_overwrite<char[]>(kRelayBufferSize);
  }
  auto b = std::move(freeRelayBuffers_.back());
  freeRelayBuffers_.pop_back();
  return b;
}

void Worker::returnRelayBuffer(std::unique_ptr<char[]> buffer) {
  if (buffer && freeRelayBuffers_.size() < 64) {
    freeRelayBuffers_.push_back(std::move(buffer));
  }
}

void Worker::sessionStarted(TrackedSession& s) {
  sessions_.push_back(s);
  ++sessionCount_;
}

void Worker::sessionEnded(TrackedSession& s) {
  s.unlink();
  --sessionCount_;
  if (draining_ && sessionCount_ == 0 && onDrained_) {
    std::exchange(onDrained_, {})();
  }
}

// One timer per worker instead of one per connection: a deadline is a time stamp, and setting it
// on the request path costs no timer operation, no system call and no cancelled wait.
void Worker::sweep() {
  sweepTimer_->expires_after(kSweepPeriod);
  sweepTimer_->async_wait([this](error_code ec) {
    if (ec) {
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    for (auto& s : sessions_) {
      s.expireIfDue(now);
    }
    if (accessLog_) {
      accessLog_->flush();
    }
    if (++sweeps_ % kTickEvery == 0) {
      for (auto& l : listeners_) {
        l.handler->tick();
      }
      if (const auto f = shared_.connections->flushes.load(std::memory_order_relaxed);
          f != flushed_) {
        flushed_ = f;
        alloc::flush();  // a flood ended: its blocks are not kept from malloc_trim
      }
      if (index_ == 0) {
        trimAfterFlood();
      }
    }
    sweep();
  });
}

// After a flood of connections ends, glibc keeps the freed memory in its arenas (one per
// thread), fragmented, and the process stays at its peak size. Once a second, worker 0 looks at
// how many connections are open across all workers; when that fell well below the peak since the
// last trim, malloc_trim hands the free pages back (it walks every arena, a few milliseconds
// after a flood of thousands of connections, and nothing in steady state).
void Worker::trimAfterFlood() {
  const std::size_t open = shared_.connections->open();
  peakOpen_ = std::max(peakOpen_, open);
  // Only once the count has settled (no longer falling), so that one trim comes after the
  // last of the flood's connections is gone, not one per second while they go.
  const bool settled = open + kTrimSettled >= lastOpen_;
  lastOpen_ = open;
  if (trimDue_) {
    // A second after the flood settled: every worker has flushed its block cache since
    // (alloc::flush), so the blocks the flood's connections left there are free too.
    trimDue_ = false;
    ::malloc_trim(0);
    shared_.metrics.memoryTrims->Increment();
    peakOpen_ = open;
  } else if (settled && peakOpen_ >= open + kTrimAfterDrop) {
    trimDue_ = true;
    shared_.connections->flushes.fetch_add(1, std::memory_order_relaxed);
  }
}

bool Worker::evictIdle(Budget b) {
  for (auto& s : sessions_) {  // oldest first
    if (s.budget() == b && s.closeIfIdle()) {
      return true;
    }
  }
  return false;
}

void Worker::accept(std::size_t listener) {
  asio::co_spawn(
      *ioc_,
      acceptLoop(*listeners_[listener].acceptor, fmt::format("worker={}", index_), acceptLog_,
                 [this, listener](TcpSocket socket) { admit(listener, std::move(socket)); }),
      asio::detached);
}

void Worker::admit(std::size_t listener, TcpSocket socket) {
  // At the limit, an idle keep-alive connection makes room for a new caller (as nginx does);
  // with none idle, the new connection is closed at once.
  const Budget b = listeners_[listener].budget;
  const auto i = static_cast<std::size_t>(b);
  auto& budget = (*shared_.connections)[b];
  if (budget.open.fetch_add(1, std::memory_order_relaxed) >= budget.limit) {
    if (evictIdle(b)) {
      shared_.metrics.connectionsEvicted[i]->Increment();
    } else {
      budget.open.fetch_sub(1, std::memory_order_relaxed);
      shared_.metrics.connectionsRefused[i]->Increment();
      if (!refusalLogged_[i]) {  // once per burst, not once per connection
        spdlog::warn(
            "event=connection_refused worker={} listener={} reason=max_connections "
            "limit={}",
            index_, kListenerNames[i], budget.limit);
        refusalLogged_[i] = true;
      }
      error_code ignored;
      socket.set_option(asio::socket_base::linger(true, 0), ignored);  // RST, no TIME_WAIT
      socket.close(ignored);
      return;
    }
  }
  refusalLogged_[i] = false;
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  listeners_[listener].handler->accepted(std::move(socket));
}

}  // namespace sidecar
