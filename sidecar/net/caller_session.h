#pragma once
// What every mTLS listener's session is, whatever it speaks afterwards (HTTP/1.1 on --listen,
// framed Thrift on --thrift-listen): the caller's TLS stream, the connection to the local service
// a call is on, the prelude (handshake within the deadline that runs from the accept, its
// failure counted and logged within a budget, then the caller's identity and the allow-list's
// verdict), the idle state an eviction or the drain may end, the sweep's expiry, and the TLS
// close. The protocol's session derives from it and adds its own loop.

#include <spdlog/spdlog.h>

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "net/access_log.h"
#include "net/caller_handshake.h"
#include "net/deadline_socket.h"
#include "net/log_limiter.h"
#include "net/tls_stream.h"
#include "net/worker.h"

namespace sidecar {

class CallerTlsSession : public WorkerSession {
 public:
  using Clock = std::chrono::steady_clock;
  // How long a closing connection waits for the caller's close_notify.
  static constexpr std::chrono::milliseconds kCloseNotifyDeadline{500};

  void expireIfDue(Clock::time_point now) override {
    stream_.lowest_layer().expireIfDue(now);
    upstream_.expireIfDue(now);
    // Still idle a sweep later: memory it holds only for a call is given back. Busy keep-alive
    // connections, idle only between calls, keep theirs and do not churn the allocator.
    if (idle_ && ++idleSweeps_ == 2) {
      if (idleWithoutRead_) {
        stream_.releaseBuffers();
      }
      releaseIdle();
    }
  }

  // Idle between calls, or not yet through its handshake (a caller that is not a caller yet,
  // and may never be): either may make room for a new connection at the listener's limit.
  bool closeIfIdle() override {
    if (idle_ || handshaking_) {
      stream_.lowest_layer().cancel();
      idle_ = false;  // once is enough: the operation completes with operation_aborted
      handshaking_ = false;
      evicted_ = true;
      return true;
    }
    return false;
  }

 protected:
  CallerTlsSession(Worker& worker, Budget budget, TcpSocket socket,
                   std::shared_ptr<asio::ssl::context> tls, Clock::time_point handshakeDeadline)
      : WorkerSession(worker, budget),
        handshakeDeadline_(handshakeDeadline),
        tls_(std::move(tls)),
        stream_(std::move(socket), *tls_),
        upstream_(worker.ioc().get_executor()) {
    error_code ignored;
    clientIp_ = stream_.lowest_layer().socket().remote_endpoint(ignored).address().to_string();
  }
  ~CallerTlsSession() = default;

  // How a listener counts and logs its handshakes (each in its own series and log budget).
  struct HandshakeReport {
    std::string_view failedEvent;  // the log line's event=
    LogLimiter& log;
  };

  // The handshake and the caller's identity; none when the session is to end (evicted, or the
  // handshake failed). count(failure, took) is called once, with no failure on success.
  template <class Count>
  awaitable<std::optional<CallerIdentity>> prelude(const IdentityAllowList& allowList,
                                                   HandshakeReport report, Count count) {
    // The deadline runs from the accept: the wait for the first byte took part of it.
    const auto shake = co_await handshakeCaller(stream_, handshakeDeadline_, handshaking_);
    if (evicted_) {
      co_return std::nullopt;  // counted as an eviction by the worker
    }
    count(shake.failure, shake.took);
    if (shake.failure) {
      logWithin(report.log, spdlog::level::info, "event={} peer={} reason={} detail=\"{}\"",
                report.failedEvent, clientIp_, handshakeFailureName(*shake.failure),
                shake.ec.message());
      if (*shake.failure != HandshakeFailure::Timeout) {
        // The caller has often sent its first call already: a close now would reset the
        // connection, and the alert that says why would be lost.
        co_await lingeringClose(stream_.lowest_layer());
      }
      co_return std::nullopt;
    }
    auto caller = identifyCaller(stream_, allowList);
    // A URI SAN may hold spaces, '=' and quotes: in a log line it is one quoted value, never
    // fields of its own. Formatted once, for every line this connection writes.
    identityForLog_ = identityLogField(caller.peer.identity);
    co_return caller;
  }

  // The TLS close, when the connection is still open.
  awaitable<void> closeTls() {
    auto& lowest = stream_.lowest_layer();
    if (lowest.socket().is_open()) {
      lowest.expires_after(kCloseNotifyDeadline);
      co_await stream_.async_shutdown(useTuple);
    }
  }

  // Waiting for the caller's next call: an eviction or the drain may end the connection.
  void setIdle(bool idle) {
    idle_ = idle;
    idleSweeps_ = 0;
  }

  // What the protocol keeps only for a call, given back after a connection was idle a while.
  virtual void releaseIdle() {}

  Clock::time_point handshakeDeadline_;
  // The protocol waits for its next call with no read under way (HTTP waits for readability):
  // OpenSSL's buffers may then be freed. A session idle inside a read (Thrift's) keeps them:
  // freeing them under a pending read is what CVE-2024-4741 was about in OpenSSL before 3.0.14.
  bool idleWithoutRead_ = true;
  std::shared_ptr<asio::ssl::context> tls_;  // the context stream_ was made with
  TlsStream stream_;
  DeadlineSocket upstream_;  // the connection to the local service, while a call uses it
  std::string clientIp_;
  std::string identityForLog_ = "-";  // the caller's identity quoted and escaped, or "-"

 private:
  bool idle_ = false;
  bool handshaking_ = false;
  bool evicted_ = false;
  unsigned idleSweeps_ = 0;  // sweeps seen while idle
};

}  // namespace sidecar
