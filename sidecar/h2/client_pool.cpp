// A worker's h2c connections to the local service.
#include "h2/client_pool.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "upstream/connector.h"

namespace sidecar::h2 {

class ClientConnection final : public Session,
                               public std::enable_shared_from_this<ClientConnection> {
 public:
  ClientConnection(ClientPool& pool, IoExecutor ex)
      : Session(Role::client, ex, pool.settings_), pool_(&pool), socket_(ex) {}

  void start() {
    asio::co_spawn(
        socket_.get_executor(), [self = shared_from_this()]() { return self->run(); },
        asio::detached);
  }
  DeadlineSocket& socket() { return socket_; }
  void orphan() {
    pool_ = nullptr;
    socket_.cancel();
  }

 private:
  awaitable<void> run() {
    const auto limits = pool_->limits_;
    const auto ec = co_await connectPlain(socket_, pool_->endpoint_, limits.connectTimeout);
    if (ec || !pool_) {
      // Nothing was sent: every stream waiting here is refused (an answer of ours, 502).
      closeAll(NGHTTP2_REFUSED_STREAM);
    } else {
      co_await Session::run(socket_, limits.writeTimeout, limits.idleTimeout);
    }
    error_code ignored;
    socket_.socket().close(ignored);
    if (pool_) {
      pool_->ended(this);
    }
  }

  ClientPool* pool_;
  DeadlineSocket socket_;
};

ClientPool::ClientPool(IoExecutor ex, tcp::endpoint endpoint, const Settings& settings,
                       const ClientLimits& limits)
    : ex_(ex), endpoint_(endpoint), settings_(settings), limits_(limits) {}

ClientPool::~ClientPool() { clear(); }

Session& ClientPool::pick() {
  ClientConnection* best = nullptr;
  ClientConnection* roomy = nullptr;
  for (auto& c : conns_) {
    if (!c->usable()) {
      continue;
    }
    if (!best || c->streams() < best->streams()) {
      best = c.get();
    }
    const std::uint32_t room = std::min(c->peerMaxStreams(), settings_.maxConcurrentStreams);
    if (c->streams() < room && (!roomy || c->streams() < roomy->streams())) {
      roomy = c.get();
    }
  }
  if (roomy) {
    return *roomy;
  }
  std::size_t live = 0;
  for (auto& c : conns_) {
    live += c->usable() ? 1 : 0;
  }
  if (best && live >= limits_.maxConnections) {
    return *best;  // nghttp2 queues the stream until one ends
  }
  auto c = std::make_shared<ClientConnection>(*this, ex_);
  conns_.push_back(c);
  ++opened_;
  if (limits_.opened) {
    limits_.opened->Increment();
  }
  c->start();
  return *c;
}

void ClientPool::sweep(std::chrono::steady_clock::time_point now) {
  for (auto& c : conns_) {
    c->socket().expireIfDue(now);
  }
}

void ClientPool::clear() {
  for (auto& c : conns_) {
    c->orphan();
  }
  conns_.clear();
}

void ClientPool::ended(ClientConnection* c) {
  std::erase_if(conns_, [c](const auto& p) { return p.get() == c; });
}

}  // namespace sidecar::h2
