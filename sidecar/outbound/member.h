#pragma once
// A worker's connection to one member of a route, for every kind of outbound route (HTTP on
// --outbound-listen, Thrift on --thrift-route): opened with the route's TLS session to resume
// and its expected identity, and let go by the same rules, so that the two never differ on
// what may be pooled or which session is kept.

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <optional>
#include <string>

#include "core/config.h"
#include "net/deadline_socket.h"
#include "net/tls_stream.h"
#include "net/worker.h"
#include "outbound/handler.h"
#include "outbound/metrics.h"

namespace sidecar {

class MemberConnection {
 public:
  explicit MemberConnection(const DeadlineSocket::executor_type& ex) : connecting_(ex) {}

  // A pooled connection to member, if the route has a clean one; true if taken.
  bool takePooled(OutboundHandler::Route& route, const tcp::endpoint& member);
  // A connection to member made elsewhere (an HTTP/2 handshake the member answered with
  // HTTP/1.1), verified by the same rules: this call's, and kept by release() as one of ours.
  void adopt(TlsStream stream) {
    conn_.emplace(std::move(stream));
    fullHandshake_ = !conn_->sessionReused();
  }
  // Connects and shakes hands within timeout (SNI serverName, the route's identity, its TLS
  // session with member resumed if kept). A failed handshake is counted by its reason.
  // The context and name are held by value: a rotation during the connect must not free them.
  awaitable<error_code> open(OutboundHandler::Route& route, const tcp::endpoint& member,
                             std::shared_ptr<asio::ssl::context> tls, std::string serverName,
                             Duration timeout, OutboundMetrics& m, unsigned shard);
  // Done with the connection: pooled when reusable, unless OpenSSL holds bytes past the answer
  // (out of step) or it was made with a certificate since rotated (current is the context new
  // connections use); the TLS session kept when a full handshake brought a new one.
  void release(OutboundHandler::Route& route, const tcp::endpoint& member, bool reusable,
               asio::ssl::context& current);

  TlsStream& stream() { return *conn_; }
  bool open() const { return conn_.has_value(); }
  void expireIfDue(DeadlineSocket::Clock::time_point now);
  // Whatever waits on the connection (or its connect) stops.
  void cancel() {
    cancelled_ = true;  // an open() between its connect and its handshake stops there
    connecting_.cancel();
    if (conn_) {
      conn_->lowest_layer().cancel();
    }
  }

 private:
  DeadlineSocket connecting_;      // before its handshake
  std::optional<TlsStream> conn_;  // while a call uses it
  bool fullHandshake_ = false;     // open() did not resume a session
  bool cancelled_ = false;         // cancel() since open() began
};

// What every outbound session (an HTTP call on --outbound-listen, a --thrift-route port) is: the
// local service's plain connection, whose wait for the next call an eviction or the drain ends,
// and the member connection a call is on; both expired by the worker's sweep.
class OutboundCallerSession : public WorkerSession {
 public:
  bool closeIfIdle() override {
    if (idle_) {
      caller_.cancel();
      idle_ = false;
      return true;
    }
    return false;
  }
  void expireIfDue(DeadlineSocket::Clock::time_point now) override {
    caller_.expireIfDue(now);
    member_.expireIfDue(now);
  }

 protected:
  OutboundCallerSession(Worker& worker, TcpSocket socket)
      : WorkerSession(worker, Budget::outbound),
        caller_(std::move(socket)),
        member_(worker.ioc().get_executor()) {}
  ~OutboundCallerSession() = default;

  DeadlineSocket caller_;
  MemberConnection member_;  // to the member a call is on
  bool idle_ = false;        // waiting for the next call: closeIfIdle may end the connection
};

}  // namespace sidecar
