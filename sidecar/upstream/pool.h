#pragma once
// Keep-alive connections to upstream endpoints, owned by one worker and keyed by endpoint. A
// connection is handed out only when it holds nothing: a byte the local service wrote after its
// last answer would otherwise be read as the next caller's answer.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <sys/socket.h>
#include <list>

#include "core/config.h"
#include "net/io.h"

namespace sidecar {

struct PoolSettings {
  Duration idleTimeout{30'000};  // an idle connection older than this is closed
  std::size_t maxIdle = 128;     // idle connections kept, all endpoints together
  prometheus::Gauge* idle = nullptr;           // idle connections now (all workers)
  prometheus::Counter* closedByPeer = nullptr;  // found closed by the upstream when looked at
  prometheus::Counter* unsolicited = nullptr;   // found holding bytes nobody asked for
  // Idle connections of every pool that shares maxIdle (a worker's outbound routes: the bound is
  // the worker's, not each route's); null: this pool's own.
  std::size_t* sharedIdle = nullptr;
};

// What a pooled connection holds while nobody reads it: nothing (it may serve the next request),
// end-of-file (the upstream closed it), or bytes no request asked for. One recv(MSG_PEEK).
enum class PooledState { clean, closed, unsolicited };
PooledState pooledState(TcpSocket& s);

// The socket under a pooled connection, for the peek.
inline TcpSocket& lowestSocket(TcpSocket& s) { return s; }

// Conn: a TcpSocket (the local service) or a TlsStream (members of a route), movable, with a
// lowestSocket(Conn&) overload.
template <class Conn>
class BasicConnectionPool {
 public:
  explicit BasicConnectionPool(PoolSettings settings) : settings_(settings) {}
  ~BasicConnectionPool() { clear(); }
  BasicConnectionPool(const BasicConnectionPool&) = delete;
  BasicConnectionPool& operator=(const BasicConnectionPool&) = delete;

  // The most recently returned idle connection to e that is young enough and clean now (looked
  // at with one peek); those found closed or holding bytes are closed and counted on the way.
  std::optional<Conn> take(const tcp::endpoint& e);
  void giveBack(const tcp::endpoint& e, Conn socket);
  // Closes idle connections past the idle timeout, closed by the upstream, or holding bytes
  // nobody asked for. One peek per idle connection; the worker calls it once a second.
  void sweep();
  void clear();
  std::size_t idle() const { return idleCount_; }
  std::size_t idle(const tcp::endpoint& e) const;

  // Requests in flight per endpoint, for a load balancer: an exchange counts itself in and out.
  void started(const tcp::endpoint& e) { ++bucket(e).inFlight; }
  void finished(const tcp::endpoint& e) { --bucket(e).inFlight; }
  std::size_t inFlight(const tcp::endpoint& e) const;

 private:
  struct Idle {
    Conn socket;
    std::chrono::steady_clock::time_point since;
  };
  struct Bucket {
    tcp::endpoint endpoint;
    std::deque<Idle> idle;  // oldest first
    std::size_t inFlight = 0;
  };
  // A handful of endpoints per worker (one for the local service; the members of a few routes
  // outbound): a linear search beats hashing at that size.
  Bucket& bucket(const tcp::endpoint& e);
  const Bucket* find(const tcp::endpoint& e) const;
  void dropped(std::size_t n);

  PoolSettings settings_;
  std::list<Bucket> buckets_;  // stable: a Bucket& survives another endpoint's arrival
  std::size_t idleCount_ = 0;
};

using ConnectionPool = BasicConnectionPool<TcpSocket>;

template <class Conn>
typename BasicConnectionPool<Conn>::Bucket& BasicConnectionPool<Conn>::bucket(const tcp::endpoint& e) {
  for (auto& b : buckets_) {
    if (b.endpoint == e) {
      return b;
    }
  }
  buckets_.push_back(Bucket{e, {}, 0});
  return buckets_.back();
}

template <class Conn>
const typename BasicConnectionPool<Conn>::Bucket* BasicConnectionPool<Conn>::find(const tcp::endpoint& e) const {
  for (const auto& b : buckets_) {
    if (b.endpoint == e) {
      return &b;
    }
  }
  return nullptr;
}

template <class Conn>
void BasicConnectionPool<Conn>::dropped(std::size_t n) {
  if (n == 0) {
    return;
  }
  idleCount_ -= n;
  if (settings_.sharedIdle) {
    *settings_.sharedIdle -= n;
  }
  if (settings_.idle) {
    settings_.idle->Decrement(static_cast<double>(n));
  }
}

template <class Conn>
std::size_t BasicConnectionPool<Conn>::idle(const tcp::endpoint& e) const {
  const auto* b = find(e);
  return b ? b->idle.size() : 0;
}

template <class Conn>
std::size_t BasicConnectionPool<Conn>::inFlight(const tcp::endpoint& e) const {
  const auto* b = find(e);
  return b ? b->inFlight : 0;
}

template <class Conn>
std::optional<Conn> BasicConnectionPool<Conn>::take(const tcp::endpoint& e) {
  auto& idle = bucket(e).idle;
  const auto now = std::chrono::steady_clock::now();
  while (!idle.empty()) {
    Idle item = std::move(idle.back());
    idle.pop_back();
    dropped(1);
    if (now - item.since >= settings_.idleTimeout) {
      continue;
    }
    // Every reused connection is looked at before it carries a request, whatever the method:
    // bytes the upstream wrote after its last answer (a second response after a 204, a body after
    // a HEAD answer) would otherwise be read as this caller's answer, and this caller's answer
    // would go to the next one.
    const auto state = pooledState(lowestSocket(item.socket));
    if (state == PooledState::clean) {
      return std::move(item.socket);
    }
    auto* counter = state == PooledState::closed ? settings_.closedByPeer : settings_.unsolicited;
    if (counter) {
      counter->Increment();
    }
  }
  return std::nullopt;
}

template <class Conn>
void BasicConnectionPool<Conn>::giveBack(const tcp::endpoint& e, Conn socket) {
  auto& idle = bucket(e).idle;
  const auto now = std::chrono::steady_clock::now();
  // The oldest sit at the front; drop those past their idle time so they do not linger.
  std::size_t expired = 0;
  while (expired < idle.size() && now - idle[expired].since >= settings_.idleTimeout) {
    ++expired;
  }
  idle.erase(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(expired));
  dropped(expired);
  if ((settings_.sharedIdle ? *settings_.sharedIdle : idleCount_) >= settings_.maxIdle) {
    return;
  }
  idle.push_back(Idle{std::move(socket), now});
  ++idleCount_;
  if (settings_.sharedIdle) {
    ++*settings_.sharedIdle;
  }
  if (settings_.idle) {
    settings_.idle->Increment();
  }
}

template <class Conn>
void BasicConnectionPool<Conn>::sweep() {
  // A connection the upstream closed would otherwise sit in CLOSE-WAIT until the pool is next
  // used, and one past its idle time would stay open: both go now.
  const auto now = std::chrono::steady_clock::now();
  for (auto& b : buckets_) {
    const auto before = b.idle.size();
    std::erase_if(b.idle, [&](Idle& item) {
      if (now - item.since >= settings_.idleTimeout) {
        return true;
      }
      const auto state = pooledState(lowestSocket(item.socket));
      if (state != PooledState::clean) {
        auto* counter =
            state == PooledState::closed ? settings_.closedByPeer : settings_.unsolicited;
        if (counter) {
          counter->Increment();
        }
      }
      return state != PooledState::clean;
    });
    dropped(before - b.idle.size());
  }
  // Endpoints that left (members gone from a cluster) leave no empty bucket behind.
  std::erase_if(buckets_, [](const Bucket& b) { return b.idle.empty() && b.inFlight == 0; });
}

template <class Conn>
void BasicConnectionPool<Conn>::clear() {
  for (auto& b : buckets_) {
    dropped(b.idle.size());
    b.idle.clear();
  }
}

}  // namespace sidecar
