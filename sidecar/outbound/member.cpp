// A worker's connection to one member: opened, counted when refused, pooled when let go.
#include "outbound/member.h"

#include "net/access_log.h"
#include "net/identity.h"
#include "net/io.h"
#include "net/tls_context.h"
#include "upstream/connector.h"

namespace sidecar {

namespace {

// The identity a refused member's certificate carried, quoted for a log line. After a refusal
// OpenSSL keeps the chain it was sent (the leaf first), not the peer certificate; after a
// resumed handshake it is the session's certificate.
std::string presentedIdentity(SSL* ssl) {
  X509* leaf = ssl ? SSL_get0_peer_certificate(ssl) : nullptr;
  if (STACK_OF(X509)* chain = ssl && !leaf ? SSL_get_peer_cert_chain(ssl) : nullptr;
      chain && sk_X509_num(chain) > 0) {
    leaf = sk_X509_value(chain, 0);
  }
  return leaf ? identityLogField(peerIdentityFromCert(leaf).identity) : std::string("-");
}

}  // namespace

bool MemberConnection::takePooled(OutboundHandler::Route& route, const tcp::endpoint& member) {
  conn_.reset();
  fullHandshake_ = false;
  if (auto pooled = route.pool.take(member)) {
    conn_.emplace(std::move(*pooled));
    return true;
  }
  return false;
}

awaitable<error_code> MemberConnection::open(OutboundHandler::Route& route,
                                             const tcp::endpoint& member,
                                             std::shared_ptr<asio::ssl::context> tls,
                                             std::string serverName, Duration timeout,
                                             OutboundMetrics& m, unsigned shard) {
  conn_.reset();
  fullHandshake_ = false;
  cancelled_ = false;
  const std::size_t slot = route.info->slot;
  if (auto ec = co_await connectPlain(connecting_, member, timeout)) {
    co_return ec;
  }
  if (cancelled_) {
    connecting_.socket() = TcpSocket(connecting_.get_executor());
    co_return asio::error::operation_aborted;
  }
  conn_.emplace(std::move(connecting_.socket()), *tls,
                TlsStream::Client{std::move(serverName), route.info->identity});
  connecting_.socket() = TcpSocket(connecting_.get_executor());
  auto& s = *conn_;
  s.setSession(route.session(member));
  s.lowest_layer().expires_after(timeout);
  auto [hec] = co_await s.async_handshake(useTuple);
  if (hec && cancelled_) {
    conn_.reset();  // the call's caller went: no fault of the member's, nothing counted
    co_return asio::error::operation_aborted;
  }
  if (hec) {
    const std::size_t reason = hec == TlsError::wrong_peer_identity
                                   ? OutboundMetrics::kWrongIdentity
                                   : static_cast<std::size_t>(classifyHandshakeFailure(
                                         hec, SSL_get_verify_result(s.native_handle())));
    m.handshakeFailures.add(shard, OutboundMetrics::handshakeSeries(slot, reason));
    if (hec == TlsError::wrong_peer_identity) {
      // The metric says that it happened; the line says who answered instead (a member
      // announced in the wrong serverset, a certificate issued for another service).
      logWithin(route.refusedLog, spdlog::level::warn,
                "event=member_refused direction=outbound route={} member={} "
                "reason=wrong_identity expected={} presented={}",
                route.info->name, endpointText(member), identityLogField(route.info->identity),
                presentedIdentity(s.native_handle()));
    }
    conn_.reset();
    co_return hec == boost::beast::error::timeout ? error_code(boost::beast::error::timeout) : hec;
  }
  m.connects.add(shard, slot);
  fullHandshake_ = !s.sessionReused();
  co_return error_code{};
}

void MemberConnection::release(OutboundHandler::Route& route, const tcp::endpoint& member,
                               bool reusable, asio::ssl::context& current) {
  if (!conn_) {
    return;
  }
  SSL* ssl = conn_->native_handle();
  // Records OpenSSL already read past the answer (read-ahead takes whole bursts) are as
  // unsolicited as bytes on the socket: the connection is out of step, never reused.
  if (reusable && ssl && SSL_has_pending(ssl)) {
    reusable = false;
  }
  // A session of the certificate before a rotation is not kept, nor its connection: resuming
  // it would present the old identity.
  const bool currentTls = ssl && SSL_get_SSL_CTX(ssl) == current.native_handle();
  // The kept session did not resume (the member restarted with new ticket keys, say): the one
  // this full handshake brought replaces it, or no connection would resume again.
  if (currentTls && (fullHandshake_ || !route.session(member))) {
    route.keepSession(member, conn_->session());
  }
  if (reusable && currentTls) {
    conn_->lowest_layer().expires_never();
    route.pool.giveBack(member, std::move(*conn_));
  }
  conn_.reset();
}

void MemberConnection::expireIfDue(DeadlineSocket::Clock::time_point now) {
  connecting_.expireIfDue(now);
  if (conn_) {
    conn_->lowest_layer().expireIfDue(now);
  }
}

}  // namespace sidecar
