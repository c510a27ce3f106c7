// The inbound handler: one per worker; each accepted connection waits for its first byte here,
// then becomes an InboundSession.
#include "inbound/handler.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "inbound/session.h"
#include "net/tls_context.h"

namespace sidecar {

namespace {

using Clock = std::chrono::steady_clock;

// A connection accepted but silent. As nginx does, it gets no TLS state, no buffer and no
// coroutine frame until its first byte arrives: a socket, a deadline and a place in the worker's
// list (about 200 bytes, instead of the tens of KiB a TLS session costs), so a flood of
// connections that never send a ClientHello costs little. The oldest are evicted first at
// --max-connections, like idle keep-alive connections.
class FirstByteWait final : public TrackedSession {
 public:
  ~FirstByteWait() { handler_.worker().sessionEnded(*this); }

  static void start(InboundHandler& handler, TcpSocket socket) {
    std::unique_ptr<FirstByteWait> self(new FirstByteWait(handler, std::move(socket)));
    auto& s = self->socket_;
    // The pending wait owns the object: it goes when the wait completes, however it ends, or
    // with the worker's io_context if that is destroyed first.
    s.async_wait(TcpSocket::wait_read,
                 [self = std::move(self)](error_code ec) { self->onReadable(ec); });
  }

  bool closeIfIdle() override {
    if (closing_) {
      return false;
    }
    closing_ = true;
    error_code ignored;
    socket_.cancel(ignored);
    return true;
  }

  void expireIfDue(Clock::time_point now) override {
    if (!closing_ && now >= deadline_) {
      closing_ = timedOut_ = true;
      error_code ignored;
      socket_.cancel(ignored);
    }
  }

 private:
  FirstByteWait(InboundHandler& handler, TcpSocket socket)
      : handler_(handler),
        socket_(std::move(socket)),
        deadline_(Clock::now() + handler.shared().limits.handshakeTimeout) {
    auto& m = *handler_.shared().metrics;
    auto& w = handler_.worker();
    m.connectionsTotal.add(w.index(), 0);
    m.connectionsOpen.add(w.index(), 0);
    w.sessionStarted(*this);
  }

  void onReadable(error_code ec) {
    auto& w = handler_.worker();
    if (!ec && !closing_ && !w.draining()) {
      // The session takes the connection over, with what is left of the handshake deadline.
      asio::co_spawn(w.ioc(),
                     serveConnection(handler_, std::move(socket_), handler_.tls(), deadline_),
                     asio::detached);
      return;
    }
    auto& m = *handler_.shared().metrics;
    if (timedOut_) {
      m.handshakes.add(w.index(), 1 + static_cast<std::size_t>(HandshakeFailure::Timeout));
    }
    error_code ignored;
    socket_.close(ignored);
    w.connectionClosed();
    m.connectionsOpen.sub(w.index(), 0);
  }

  InboundHandler& handler_;
  TcpSocket socket_;
  Clock::time_point deadline_;
  bool closing_ = false;
  bool timedOut_ = false;
};

}  // namespace

InboundHandler::InboundHandler(Worker& worker, const InboundShared& shared, unsigned workers,
                               std::shared_ptr<asio::ssl::context> tls)
    : worker_(worker),
      shared_(shared),
      tls_(std::move(tls)),
      pool_(PoolSettings{shared.limits.upstreamIdleTimeout, shared.limits.upstreamMaxIdle,
                         shared.metrics->upstreamPoolIdle, shared.metrics->upstreamStaleRetries,
                         shared.metrics->upstreamUnsolicited}),
      pendingLimit_(std::max<std::size_t>(1, (shared.limits.maxPending + workers - 1) / workers)) {}

void InboundHandler::accepted(TcpSocket socket) { FirstByteWait::start(*this, std::move(socket)); }

void InboundHandler::setTls(std::shared_ptr<asio::ssl::context> ctx) {
  asio::post(worker_.ioc(), [this, ctx = std::move(ctx)]() mutable { tls_ = std::move(ctx); });
}

}  // namespace sidecar
