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
};

// What a pooled connection holds while nobody reads it: nothing (it may serve the next request),
// end-of-file (the upstream closed it), or bytes no request asked for. One recv(MSG_PEEK).
enum class PooledState { clean, closed, unsolicited };
PooledState pooledState(TcpSocket& s);

class ConnectionPool {
 public:
  explicit ConnectionPool(PoolSettings settings) : settings_(settings) {}
  ~ConnectionPool() { clear(); }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // The most recently returned idle connection to e that is young enough and clean now (looked
  // at with one peek); those found closed or holding bytes are closed and counted on the way.
  std::optional<TcpSocket> take(const tcp::endpoint& e);
  void giveBack(const tcp::endpoint& e, TcpSocket socket);
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
    TcpSocket socket;
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

}  // namespace sidecar
