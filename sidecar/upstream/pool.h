#pragma once
// Keep-alive connections to upstream endpoints, owned by one worker and keyed by endpoint and
// owner (the caller identity a connection to the local service serves). A connection is handed
// out only when it holds nothing, and is watched while it sits idle: a byte the local service
// wrote after its last answer would otherwise be read as the next caller's answer. Keyed by
// owner, an answer written late can only ever reach a later request of the same caller.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/config.h"
#include "net/io.h"

namespace sidecar {

struct PoolSettings {
  Duration idleTimeout{30'000};                 // an idle connection older than this is closed
  std::size_t maxIdle = 128;                    // idle connections kept, all endpoints together
  prometheus::Gauge* idle = nullptr;            // idle connections now (all workers)
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

  // The most recently returned idle connection to e for owner that is young enough and clean now
  // (looked at with one peek); those found closed or holding bytes are closed and counted on the
  // way. owner: the caller identity the connection serves (empty where there is one caller, the
  // local service, as on outbound routes).
  std::optional<Conn> take(const tcp::endpoint& e, std::string_view owner = {});
  // Keeps socket for owner's next request to e.
  void giveBack(const tcp::endpoint& e, Conn socket, std::string_view owner = {});
  // Closes idle connections past the idle timeout, closed by the upstream, or holding bytes
  // nobody asked for (one peek per idle connection), and watches those it keeps: from then on a
  // byte or end-of-file that arrives while one is idle closes it at once (as nginx's keepalive
  // close handler does). The worker calls it once a second. A connection idle for less than that
  // is not watched: under keep-alive it is idle for microseconds, and take()'s peek sees what
  // arrived; arming and cancelling a wait on each request cost 5 % of its instructions.
  void sweep();
  void clear();
  std::size_t idle() const { return idleCount_; }
  std::size_t idle(const tcp::endpoint& e, std::string_view owner = {}) const;

  // Requests in flight per endpoint, for a load balancer: an exchange counts itself in and out.
  void started(const tcp::endpoint& e) { ++bucket(e, {}).inFlight; }
  void finished(const tcp::endpoint& e) { --bucket(e, {}).inFlight; }
  std::size_t inFlight(const tcp::endpoint& e) const;

 private:
  struct Idle {
    Conn socket;
    std::chrono::steady_clock::time_point since;
    std::uint64_t id;  // what its watch finds it by
    bool watched = false;
  };
  struct Bucket {
    std::deque<Idle> idle;  // oldest first
    std::size_t inFlight = 0;
    std::size_t watches = 0;  // waits not yet completed: the bucket stays while any is pending
  };
  struct Key {
    tcp::endpoint endpoint;
    std::string owner;
  };
  struct KeyView {
    const tcp::endpoint& endpoint;
    std::string_view owner;
  };
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(const KeyView& k) const {
      std::size_t h = std::hash<std::string_view>{}(k.owner) ^ k.endpoint.port();
      if (k.endpoint.address().is_v4()) {
        h ^= std::hash<std::uint32_t>{}(k.endpoint.address().to_v4().to_uint()) << 1;
      } else {
        const auto bytes = k.endpoint.address().to_v6().to_bytes();
        h ^= std::hash<std::string_view>{}(
                 std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()))
             << 1;
      }
      return h;
    }
    std::size_t operator()(const Key& k) const { return (*this)(KeyView{k.endpoint, k.owner}); }
  };
  struct KeyEq {
    using is_transparent = void;
    static KeyView view(const Key& k) { return {k.endpoint, k.owner}; }
    static KeyView view(const KeyView& k) { return k; }
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      const KeyView x = view(a), y = view(b);
      return x.endpoint == y.endpoint && x.owner == y.owner;
    }
  };

  Bucket& bucket(const tcp::endpoint& e, std::string_view owner);
  const Bucket* find(const tcp::endpoint& e, std::string_view owner) const;
  void dropped(std::size_t n);
  void count(PooledState state);
  void watch(Bucket& b, Idle& item);
  // At the bound: closes the oldest idle connection of another bucket; false if there is none.
  bool evictOldest(const Bucket& keep);
  void onIdleReadable(Bucket& b, std::uint64_t id);

  PoolSettings settings_;
  // Nodes are stable: a Bucket& (and a watch's pointer) survives other buckets' arrival; a bucket
  // goes only when it is empty and no watch of its is pending.
  std::unordered_map<Key, Bucket, KeyHash, KeyEq> buckets_;
  // The bucket looked up last: a worker's requests mostly come from one caller at a time, and
  // this spares hashing its identity twice per request. Reset when buckets are erased.
  Key* lastKey_ = nullptr;
  Bucket* lastBucket_ = nullptr;
  std::size_t idleCount_ = 0;
  std::uint64_t nextId_ = 0;
  // Watches hold it weakly: one that completes after the pool is gone (a route removed) does
  // nothing.
  std::shared_ptr<char> alive_ = std::make_shared<char>();
};

using ConnectionPool = BasicConnectionPool<TcpSocket>;

template <class Conn>
typename BasicConnectionPool<Conn>::Bucket& BasicConnectionPool<Conn>::bucket(
    const tcp::endpoint& e, std::string_view owner) {
  if (lastKey_ && lastKey_->owner == owner && lastKey_->endpoint == e) {
    return *lastBucket_;
  }
  auto it = buckets_.find(KeyView{e, owner});
  if (it == buckets_.end()) {
    it = buckets_.emplace(Key{e, std::string(owner)}, Bucket{}).first;
  }
  lastKey_ = const_cast<Key*>(&it->first);
  lastBucket_ = &it->second;
  return it->second;
}

template <class Conn>
const typename BasicConnectionPool<Conn>::Bucket* BasicConnectionPool<Conn>::find(
    const tcp::endpoint& e, std::string_view owner) const {
  const auto it = buckets_.find(KeyView{e, owner});
  return it == buckets_.end() ? nullptr : &it->second;
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
void BasicConnectionPool<Conn>::count(PooledState state) {
  auto* counter = state == PooledState::closed ? settings_.closedByPeer : settings_.unsolicited;
  if (counter) {
    counter->Increment();
  }
}

template <class Conn>
std::size_t BasicConnectionPool<Conn>::idle(const tcp::endpoint& e, std::string_view owner) const {
  const auto* b = find(e, owner);
  return b ? b->idle.size() : 0;
}

template <class Conn>
std::size_t BasicConnectionPool<Conn>::inFlight(const tcp::endpoint& e) const {
  const auto* b = find(e, {});
  return b ? b->inFlight : 0;
}

template <class Conn>
void BasicConnectionPool<Conn>::watch(Bucket& b, Idle& item) {
  // The socket is registered with the reactor already; this queues a wait (Asio re-arms the
  // descriptor with one epoll_ctl, once a sweep per idle connection) that
  // completes on the next byte or end-of-file, or is cancelled when the connection is taken.
  ++b.watches;
  item.watched = true;
  lowestSocket(item.socket)
      .async_wait(TcpSocket::wait_read, [this, alive = std::weak_ptr<char>(alive_), bucket = &b,
                                         id = item.id](error_code ec) {
        if (alive.expired()) {
          return;
        }
        --bucket->watches;
        if (!ec) {
          onIdleReadable(*bucket, id);
        }
      });
}

template <class Conn>
void BasicConnectionPool<Conn>::onIdleReadable(Bucket& b, std::uint64_t id) {
  auto it = std::find_if(b.idle.begin(), b.idle.end(), [id](const Idle& i) { return i.id == id; });
  if (it == b.idle.end()) {
    return;  // taken (and looked at then) before this ran
  }
  const auto state = pooledState(lowestSocket(it->socket));
  if (state == PooledState::clean) {
    watch(b, *it);  // woken for nothing it can read (an error cleared, say): watch on
    return;
  }
  count(state);
  b.idle.erase(it);
  dropped(1);
}

template <class Conn>
std::optional<Conn> BasicConnectionPool<Conn>::take(const tcp::endpoint& e,
                                                    std::string_view owner) {
  auto& idle = bucket(e, owner).idle;
  const auto now = std::chrono::steady_clock::now();
  while (!idle.empty()) {
    Idle item = std::move(idle.back());
    idle.pop_back();
    dropped(1);
    if (item.watched) {
      error_code ignored;
      lowestSocket(item.socket).cancel(ignored);  // its watch ends (operation_aborted)
    }
    if (now - item.since >= settings_.idleTimeout) {
      continue;
    }
    // Every reused connection is looked at before it carries a request, whatever the method:
    // bytes the upstream wrote after its last answer (a second response after a 204, a body after
    // a HEAD answer) would otherwise be read as this caller's answer, and this caller's answer
    // would go to the next one. (Bytes that arrived with the answer raise no new readiness, so
    // the watch alone would not see them.)
    const auto state = pooledState(lowestSocket(item.socket));
    if (state == PooledState::clean) {
      return std::move(item.socket);
    }
    count(state);
  }
  return std::nullopt;
}

template <class Conn>
void BasicConnectionPool<Conn>::giveBack(const tcp::endpoint& e, Conn socket,
                                         std::string_view owner) {
  auto& b = bucket(e, owner);
  auto& idle = b.idle;
  const auto now = std::chrono::steady_clock::now();
  // The oldest sit at the front; drop those past their idle time so they do not linger.
  std::size_t expired = 0;
  while (expired < idle.size() && now - idle[expired].since >= settings_.idleTimeout) {
    ++expired;
  }
  idle.erase(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(expired));
  dropped(expired);
  if (settings_.sharedIdle ? *settings_.sharedIdle >= settings_.maxIdle
                           : idleCount_ >= settings_.maxIdle && !evictOldest(b)) {
    return;
  }
  idle.push_back(Idle{std::move(socket), now, nextId_++});
  ++idleCount_;
  if (settings_.sharedIdle) {
    ++*settings_.sharedIdle;
  }
  if (settings_.idle) {
    settings_.idle->Increment();
  }
}

template <class Conn>
bool BasicConnectionPool<Conn>::evictOldest(const Bucket& keep) {
  // The caller giving this connection back is active; the oldest idle one of another owner
  // belongs, most likely, to a caller that has gone. Only at the bound, so a scan is fine.
  Bucket* oldest = nullptr;
  for (auto& [key, b] : buckets_) {
    if (&b != &keep && !b.idle.empty() &&
        (!oldest || b.idle.front().since < oldest->idle.front().since)) {
      oldest = &b;
    }
  }
  if (!oldest) {
    return false;
  }
  oldest->idle.pop_front();
  dropped(1);
  return true;
}

template <class Conn>
void BasicConnectionPool<Conn>::sweep() {
  // A connection the upstream closed would otherwise sit in CLOSE-WAIT until the pool is next
  // used, and one past its idle time would stay open: both go now.
  const auto now = std::chrono::steady_clock::now();
  for (auto& [key, b] : buckets_) {
    const auto before = b.idle.size();
    std::erase_if(b.idle, [&](Idle& item) {
      if (now - item.since >= settings_.idleTimeout) {
        return true;
      }
      const auto state = pooledState(lowestSocket(item.socket));
      if (state != PooledState::clean) {
        count(state);
      }
      return state != PooledState::clean;
    });
    dropped(before - b.idle.size());
    for (auto& item : b.idle) {
      if (!item.watched) {
        watch(b, item);
      }
    }
  }
  // Endpoints that left (members gone from a cluster) and owners that went quiet leave no empty
  // bucket behind.
  lastKey_ = nullptr;
  lastBucket_ = nullptr;
  std::erase_if(buckets_, [](const auto& kv) {
    const Bucket& b = kv.second;
    return b.idle.empty() && b.inFlight == 0 && b.watches == 0;
  });
}

template <class Conn>
void BasicConnectionPool<Conn>::clear() {
  for (auto& [key, b] : buckets_) {
    dropped(b.idle.size());
    b.idle.clear();
  }
}

}  // namespace sidecar
