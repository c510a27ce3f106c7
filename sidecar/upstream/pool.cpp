// The per-worker pool of keep-alive upstream connections.
#include "upstream/pool.h"

#include <sys/socket.h>

#include <cerrno>

namespace sidecar {

PooledState pooledState(TcpSocket& s) {
  char c = 0;
  ssize_t n = ::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) {
    return PooledState::unsolicited;
  }
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? PooledState::clean
                                                            : PooledState::closed;
}

ConnectionPool::Bucket& ConnectionPool::bucket(const tcp::endpoint& e) {
  for (auto& b : buckets_) {
    if (b.endpoint == e) {
      return b;
    }
  }
  buckets_.push_back(Bucket{e, {}, 0});
  return buckets_.back();
}

const ConnectionPool::Bucket* ConnectionPool::find(const tcp::endpoint& e) const {
  for (const auto& b : buckets_) {
    if (b.endpoint == e) {
      return &b;
    }
  }
  return nullptr;
}

void ConnectionPool::dropped(std::size_t n) {
  if (n == 0) {
    return;
  }
  idleCount_ -= n;
  if (settings_.idle) {
    settings_.idle->Decrement(static_cast<double>(n));
  }
}

std::size_t ConnectionPool::idle(const tcp::endpoint& e) const {
  const auto* b = find(e);
  return b ? b->idle.size() : 0;
}

std::size_t ConnectionPool::inFlight(const tcp::endpoint& e) const {
  const auto* b = find(e);
  return b ? b->inFlight : 0;
}

std::optional<TcpSocket> ConnectionPool::take(const tcp::endpoint& e) {
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
    const auto state = pooledState(item.socket);
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

void ConnectionPool::giveBack(const tcp::endpoint& e, TcpSocket socket) {
  auto& idle = bucket(e).idle;
  const auto now = std::chrono::steady_clock::now();
  // The oldest sit at the front; drop those past their idle time so they do not linger.
  std::size_t expired = 0;
  while (expired < idle.size() && now - idle[expired].since >= settings_.idleTimeout) {
    ++expired;
  }
  idle.erase(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(expired));
  dropped(expired);
  if (idleCount_ >= settings_.maxIdle) {
    return;
  }
  idle.push_back(Idle{std::move(socket), now});
  ++idleCount_;
  if (settings_.idle) {
    settings_.idle->Increment();
  }
}

void ConnectionPool::sweep() {
  // A connection the upstream closed would otherwise sit in CLOSE-WAIT until the pool is next
  // used, and one past its idle time would stay open: both go now.
  const auto now = std::chrono::steady_clock::now();
  for (auto& b : buckets_) {
    const auto before = b.idle.size();
    std::erase_if(b.idle, [&](Idle& item) {
      if (now - item.since >= settings_.idleTimeout) {
        return true;
      }
      const auto state = pooledState(item.socket);
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

void ConnectionPool::clear() {
  for (auto& b : buckets_) {
    dropped(b.idle.size());
    b.idle.clear();
  }
}

}  // namespace sidecar
