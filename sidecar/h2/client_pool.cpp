// A worker's h2c connections to the local service.
#include "h2/client_pool.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "net/tls_context.h"
#include "net/tls_stream.h"
#include "upstream/connector.h"

namespace sidecar::h2 {

class ClientConnection final : public Session,
                               public std::enable_shared_from_this<ClientConnection> {
 public:
  ClientConnection(ClientPool& pool, IoExecutor ex)
      : Session(Role::client, ex, pool.settings_), pool_(&pool), socket_(ex), tls_(pool.tls_) {}

  void start() {
    asio::co_spawn(
        socket_.get_executor(), [self = shared_from_this()]() { return self->run(); },
        asio::detached);
  }
  DeadlineSocket& socket() { return stream_ ? stream_->lowest_layer() : socket_; }
  void orphan() {
    pool_ = nullptr;
    socket().cancel();
  }

 private:
  awaitable<void> run() {
    const auto limits = pool_->limits_;
    auto ec = co_await connectPlain(socket_, pool_->endpoint_, limits.connectTimeout);
    if (!ec && pool_ && tls_) {
      ec = co_await handshake(limits.connectTimeout);
    }
    if (ec || !pool_) {
      // Nothing was sent: every stream waiting here is refused (an answer of ours, or another
      // member).
      closeAll(NGHTTP2_REFUSED_STREAM);
    } else if (stream_) {
      co_await Session::run(*stream_, limits.writeTimeout, limits.idleTimeout);
    } else {
      co_await Session::run(socket_, limits.writeTimeout, limits.idleTimeout);
    }
    error_code ignored;
    socket().socket().close(ignored);
    if (pool_) {
      pool_->ended(this);
    }
  }

  // mTLS with ALPN h2, then http/1.1: an upstream that chooses HTTP/1.1 (or no protocol) is not
  // spoken to here; its verified connection is kept by the pool for an HTTP/1.1 call, and the
  // streams waiting here end unsent (refusedH2() says why).
  awaitable<error_code> handshake(Duration timeout) {
    stream_.emplace(std::move(socket_.socket()), *tls_->context,
                    TlsStream::Client{tls_->serverName, tls_->expectedIdentity});
    static constexpr unsigned char kProtocols[] = "\x02h2\x08http/1.1";
    SSL_set_alpn_protos(stream_->native_handle(), kProtocols, sizeof(kProtocols) - 1);
    stream_->lowest_layer().expires_after(timeout);
    auto [ec] = co_await stream_->async_handshake(useTuple);
    if (!ec && alpnSelected(stream_->native_handle()) != "h2") {
      if (pool_) {
        pool_->refusedH2_ = true;
        stream_->lowest_layer().expires_never();
        pool_->http1_.emplace(std::move(*stream_));
        stream_.reset();
      }
      co_return asio::error::operation_not_supported;
    }
    if (!ec && pool_) {
      pool_->refusedH2_ = false;
    }
    co_return ec;
  }

  ClientPool* pool_;
  DeadlineSocket socket_;            // until the handshake, or for h2c
  std::optional<ClientTls> tls_;     // as the pool said when this connection was made
  std::optional<TlsStream> stream_;  // mTLS, once connected
};

ClientPool::ClientPool(IoExecutor ex, tcp::endpoint endpoint, const Settings& settings,
                       const ClientLimits& limits, std::optional<ClientTls> tls)
    : ex_(ex), endpoint_(endpoint), settings_(settings), limits_(limits), tls_(std::move(tls)) {}

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
  http1_.reset();
  for (auto& c : conns_) {
    c->orphan();
  }
  conns_.clear();
}

void ClientPool::retire(std::optional<ClientTls> tls) {
  http1_.reset();  // made with the certificate before
  tls_ = std::move(tls);
  for (auto& c : conns_) {
    c->goAway();
  }
}

void ClientPool::ended(ClientConnection* c) {
  std::erase_if(conns_, [c](const auto& p) { return p.get() == c; });
}

}  // namespace sidecar::h2
