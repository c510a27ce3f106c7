// The inbound handler: one per worker; each accepted connection waits for its first byte
// (net/first_byte_wait.h), then becomes an InboundSession.
#include "inbound/handler.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "inbound/session.h"
#include "net/first_byte_wait.h"
#include "net/tls_context.h"

namespace sidecar {

InboundHandler::InboundHandler(Worker& worker, const InboundShared& shared, unsigned workers,
                               std::shared_ptr<asio::ssl::context> tls)
    : worker_(worker),
      shared_(shared),
      tls_(std::move(tls)),
      pool_(PoolSettings{shared.limits.upstreamIdleTimeout, shared.limits.upstreamMaxIdle,
                         shared.metrics->upstreamPoolIdle, shared.metrics->upstreamStaleRetries,
                         shared.metrics->upstreamUnsolicited}),
      pendingLimit_(std::max<std::size_t>(1, (shared.limits.maxPending + workers - 1) / workers)) {}

void InboundHandler::accepted(TcpSocket socket) {
  FirstByteWait<InboundHandler>::start(*this, std::move(socket));
}

void InboundHandler::waitStarted() {
  auto& m = *shared_.metrics;
  m.connectionsTotal.add(worker_.index(), 0);
  m.connectionsOpen.add(worker_.index(), 0);
}

void InboundHandler::firstByte(TcpSocket socket, std::chrono::steady_clock::time_point deadline) {
  asio::co_spawn(worker_.ioc(), serveConnection(*this, std::move(socket), tls_, deadline),
                 asio::detached);
}

void InboundHandler::neverSpoke(bool timedOut) {
  auto& m = *shared_.metrics;
  if (timedOut) {
    m.handshakes.add(worker_.index(), InboundMetrics::handshakeSeries(HandshakeFailure::Timeout));
  }
  m.connectionsOpen.sub(worker_.index(), 0);
}

h2::ClientPool& InboundHandler::h2Pool() {
  if (!h2Pool_) {
    h2::ClientLimits limits{shared_.limits.upstreamConnectTimeout,
                            shared_.limits.upstreamIdleTimeout, shared_.limits.upstreamTimeout,
                            shared_.upstreamH2Connections, shared_.metrics->upstreamH2Connections};
    h2Pool_ = std::make_unique<h2::ClientPool>(worker_.ioc().get_executor(), shared_.h2Upstream,
                                               shared_.h2, limits);
  }
  return *h2Pool_;
}

void InboundHandler::setTls(std::shared_ptr<asio::ssl::context> ctx) {
  asio::post(worker_.ioc(), [this, ctx = std::move(ctx)]() mutable { tls_ = std::move(ctx); });
}

}  // namespace sidecar
