// The inbound handler: mTLS callers' connections, from their first byte to their last answer.
#include "inbound/session.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include "http/exchange.h"
#include "http/local_reply.h"
#include "http/read_head.h"
#include "http/rewrite.h"
#include "inbound/handler.h"
#include "net/access_log.h"
#include "net/caller_handshake.h"
#include "net/tls_context.h"
#include "net/tls_stream.h"
#include "upstream/connector.h"

namespace sidecar {

namespace http = beast::http;
namespace ssl = asio::ssl;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

constexpr std::chrono::milliseconds kCloseNotifyDeadline{500};

class InboundSession final : public WorkerSession {
 public:
  InboundSession(InboundHandler& handler, TcpSocket socket, std::shared_ptr<ssl::context> tls,
                 Clock::time_point handshakeDeadline)
      : WorkerSession(handler.worker(), Budget::listen),
        handshakeDeadline_(handshakeDeadline),
        handler_(handler),
        shared_(handler.shared()),
        m_(*handler.shared().metrics),
        shard_(handler.worker().index()),
        tls_(std::move(tls)),
        stream_(std::move(socket), *tls_),
        upstream_(handler.worker().ioc().get_executor()) {
    // Bounds what a caller can make us hold: a head, plus a relay's worth of body (a chunk-size
    // line with an endless extension fills it and is refused).
    buffer_.max_size(shared_.limits.maxHeadBytes + Worker::kRelayBufferSize + 4096);
    // And what the local service can make us hold: an answer's head, plus a relay's worth of
    // body. (Beast's parser bounds a chunk line itself today; this bound does not depend on it.)
    upBuffer_.max_size(ExchangeLimits{}.upstreamMaxHead + Worker::kRelayBufferSize + 4096);
  }

  ~InboundSession() { m_.connectionsOpen.sub(shard_, 0); }

  void expireIfDue(Clock::time_point now) override {
    beast::get_lowest_layer(stream_).expireIfDue(now);
    upstream_.expireIfDue(now);
    // Still idle a sweep later: give the TLS record buffers back. Busy keep-alive connections,
    // idle only between requests, keep theirs and do not churn the allocator.
    if (idle_ && ++idleSweeps_ == 2) {
      stream_.releaseBuffers();
      std::string().swap(out_);
      if (buffer_.size() == 0) {
        buffer_.shrink_to_fit();
      }
      if (upBuffer_.size() == 0) {
        upBuffer_.shrink_to_fit();
      }
    }
  }

  // Idle between requests, or not yet through its handshake (a caller that is not a caller yet,
  // and may never be): either may make room for a new connection at --max-connections.
  bool closeIfIdle() override {
    if (idle_ || handshaking_) {
      beast::get_lowest_layer(stream_).cancel();
      idle_ = false;  // once is enough: the operation completes with operation_aborted
      handshaking_ = false;
      evicted_ = true;
      return true;
    }
    return false;
  }

  awaitable<void> run() {
    auto& lowest = beast::get_lowest_layer(stream_);
    error_code ignored;
    auto remote = lowest.socket().remote_endpoint(ignored);
    clientIp_ = remote.address().to_string();

    // The deadline runs from the accept: the wait for the first byte took part of it.
    const auto shake = co_await handshakeCaller(stream_, handshakeDeadline_, handshaking_);
    if (evicted_) {
      co_return;  // counted as an eviction by the worker
    }
    m_.handshakeDuration.observe(shard_, 0, std::chrono::duration<double>(shake.took).count());
    if (shake.failure) {
      const auto why = *shake.failure;
      m_.handshakes.add(shard_, InboundMetrics::handshakeSeries(why));
      logEvent(LogEvent::handshakeFailed, spdlog::level::info,
               "event=handshake_failed peer={} reason={} detail=\"{}\"", clientIp_,
               handshakeFailureName(why), shake.ec.message());
      if (why != HandshakeFailure::Timeout) {
        // The caller has often sent its request already: see lingeringClose.
        co_await lingeringClose(beast::get_lowest_layer(stream_));
      }
      co_return;
    }
    m_.handshakes.add(shard_, InboundMetrics::handshakeSeries(std::nullopt));
    auto caller = identifyCaller(stream_, shared_.allowList);
    peer_ = std::move(caller.peer);
    allowed_ = caller.allowed;
    // A URI SAN may hold spaces, '=' and quotes: in a log line it is one quoted value, never
    // fields of its own. Formatted once, for every line this connection writes.
    identityForLog_ = identityLogField(peer_.identity);

    // Between requests a connection holds no coroutine frame but this one and lends no buffer:
    // the wait is for readability, and the read happens once there is something to read.
    // (No co_await on the right of ||: GCC 12 ran it here even when the left side was true.)
    for (;;) {
      if (buffer_.size() == 0) {
        const bool more = co_await awaitRequest();
        if (!more) {
          break;
        }
      }
      const bool keepAlive = co_await serveOne();
      if (!keepAlive) {
        break;
      }
    }
    if (lowest.socket().is_open()) {
      lowest.expires_after(kCloseNotifyDeadline);
      co_await stream_.async_shutdown(useTuple);
    }
  }

 private:
  // One line for a data-path event, within the worker's budget for that event.
  template <class... Args>
  void logEvent(LogEvent e, spdlog::level::level_enum level, fmt::format_string<Args...> format,
                Args&&... args) {
    logWithin(handler_.logLimiter(e), level, format, std::forward<Args>(args)...);
  }

  // Waits for the first bytes of the next request; false when the connection is to close.
  // The idle deadline applies; the head deadline starts with the first byte.
  awaitable<bool> awaitRequest() {
    auto& lowest = beast::get_lowest_layer(stream_);
    shrinkIfLarge(buffer_);
    lowest.expires_after(shared_.limits.idleTimeout);
    for (;;) {
      if (worker_.draining()) {
        co_return false;
      }
      idle_ = true;
      idleSweeps_ = 0;
      auto [ec] = co_await stream_.async_wait_readable(useTuple);
      idle_ = false;
      if (ec) {
        co_return false;
      }
      std::size_t n = 0;
      const auto got = stream_.read_some_now(buffer_.prepare(2048), n);
      if (got == TlsStream::ReadNow::wouldBlock) {
        continue;  // part of a record: wait for the rest
      }
      if (got == TlsStream::ReadNow::useAsync) {  // end of stream, an error, or a write first
        auto [aec, an] = co_await stream_.async_read_some(buffer_.prepare(2048), useTuple);
        if (aec) {
          co_return false;
        }
        buffer_.commit(an);
        co_return true;
      }
      buffer_.commit(n);
      co_return true;
    }
  }

  // Serves one request; false when the caller's connection is to close.
  awaitable<bool> serveOne() {
    requestStart_ = Clock::now();
    method_ = InboundMetrics::kMethods.size() - 1;
    target_.clear();

    http::request_parser<http::buffer_body> req;
    startRequest(stream_, req, shared_.limits);
    const error_code readError =
        co_await readRequestHead(stream_, buffer_, shared_.limits.maxHeadBytes);
    const auto head = checkRequest(readError, buffer_, req, shared_.limits);
    if (req.is_header_done()) {
      // Before any answer, so that a 400 for a parsed head is logged with its method and path.
      method_ = InboundMetrics::methodIndex(req.get().method());
      if (worker_.accessLog()) {
        target_ = req.get().target();
      }
    }
    if (head.underscores) {
      m_.underscoreHeaders->Increment(static_cast<double>(head.underscores));
    }
    if (head.kind == RequestHeadResult::Kind::hungUp) {
      co_return false;  // the caller hung up mid-head
    }
    if (head.kind == RequestHeadResult::Kind::refused) {
      logEvent(LogEvent::badRequest, spdlog::level::info,
               "event=bad_request peer={} identity={} status={} reason=\"{}\"", clientIp_,
               identityForLog_, head.status, head.reason());
      co_await replyLocal(head.status);
      co_return false;
    }
    auto& msg = req.get();
    if (!allowed_) {
      m_.identityRefused->Increment();
      if (peer_.unusable) {
        m_.identityUnusable->Increment();
      }
      logEvent(LogEvent::identityRefused, spdlog::level::info,
               "event=identity_refused peer={} identity={}", clientIp_, identityForLog_);
      co_await replyLocal(403);
      co_return false;
    }
    const bool clientKeepAlive = msg.keep_alive();
    const unsigned clientVersion = msg.version();
    const bool isHead = msg.method() == http::verb::head;
    if (auto e = co_await answerExpect(stream_, req, shared_.limits.idleTimeout);
        e != Expectation::met) {
      if (e == Expectation::failed) {
        co_await replyLocal(417);
      }
      co_return false;
    }
    rewriteRequestHead(msg.base(),
                       ForwardContext{clientIp_, peer_.xfcc, shared_.upstreamAuthority});
    co_return co_await forward(req, clientKeepAlive, clientVersion, isHead);
  }

  // The local service's side of one exchange: this worker's pool, and plain connections.
  struct LocalLink {
    using stream_type = DeadlineSocket;
    InboundSession& s;
    const tcp::endpoint& endpoint;

    DeadlineSocket& stream() { return s.upstream_; }
    bool takePooled() {
      error_code ignored;
      s.upstream_.socket().close(ignored);
      // Connections to the local service serve one caller identity each: an answer it writes
      // late can only ever reach a later request of the same caller.
      if (auto idle = s.handler_.pool().take(endpoint, s.peer_.identity)) {
        s.upstream_.socket() = std::move(*idle);
        return true;
      }
      return false;
    }
    awaitable<error_code> connect() {
      auto ec =
          co_await connectPlain(s.upstream_, endpoint, s.shared_.limits.upstreamConnectTimeout);
      if (!ec) {
        s.m_.upstreamConnectsTotal->Increment();
      }
      co_return ec;
    }
    void release(bool reusable) {
      if (reusable) {
        s.handler_.pool().giveBack(endpoint, std::move(s.upstream_.socket()), s.peer_.identity);
      } else {
        error_code ignored;
        s.upstream_.socket().close(ignored);
      }
      s.upstream_.expires_never();
    }
  };

  // Sends the request to the local service and its answer back; false when the caller's
  // connection is to close.
  awaitable<bool> forward(http::request_parser<http::buffer_body>& req, bool clientKeepAlive,
                          unsigned clientVersion, bool isHead) {
    if (handler_.pending() >= handler_.pendingLimit()) {
      // Overload: a fast answer the caller can retry elsewhere, not a queue that grows.
      logEvent(LogEvent::overloaded, spdlog::level::info, "event=overloaded peer={} pending={}",
               clientIp_, handler_.pending());
      co_await replyLocal(503);
      co_return false;
    }
    m_.pending.add(shard_, 0);
    PendingGuard pendingGuard{m_, shard_, handler_.pending()};
    const auto& endpoint = shared_.local.endpoints().endpoints.front();
    LocalLink link{*this, endpoint};
    LazyRelayBuffer relay(worker_);
    const ExchangeLimits limits{shared_.limits.idleTimeout, shared_.limits.upstreamTimeout};
    auto r = co_await runExchange(
        stream_, req,
        ExchangeRequest{clientKeepAlive, clientVersion, isHead, &worker_.drainingFlag()}, link,
        relay, ExchangeBuffers{buffer_, upBuffer_, out_}, limits);

    requestBytes_ = r.requestBytes;
    upstreamSeconds_ = r.upstreamSeconds;
    if (r.upstreamSeconds >= 0) {
      m_.upstreamDuration.observe(shard_, 0, r.upstreamSeconds);
    }
    if (r.staleRetries) {
      m_.upstreamStaleRetries->Increment(r.staleRetries);
    }
    if (r.unsolicited) {
      m_.upstreamUnsolicited->Increment();
    }
    using Failure = ExchangeResult::Failure;
    switch (r.failure) {
      case Failure::none:
      case Failure::callerGone:
      case Failure::requestBroken:
      case Failure::answerRefused:  // LocalLink refuses no answer
        break;
      case Failure::connect:
        m_.upstreamConnectErrors->Increment();
        logEvent(LogEvent::upstreamConnectFailed, spdlog::level::warn,
                 "event=upstream_connect_failed upstream={} reason=\"{}\"",
                 endpoint.address().to_string(), r.ec.message());
        break;
      case Failure::upstream:
        if (r.localStatus == 504) {
          m_.upstreamTimeouts->Increment();
        }
        logEvent(LogEvent::upstreamFailed, spdlog::level::warn,
                 "event=upstream_failed identity={} status={} reason=\"{}\"", identityForLog_,
                 r.localStatus, r.ec.message());
        break;
      case Failure::requestTooLarge:
        logEvent(LogEvent::badRequest, spdlog::level::info,
                 "event=bad_request peer={} identity={} status=413", clientIp_, identityForLog_);
        break;
      case Failure::requestMalformed:
        logEvent(LogEvent::badRequest, spdlog::level::info,
                 "event=bad_request peer={} identity={} status=400 reason=\"{}\"", clientIp_,
                 identityForLog_, r.ec.message());
        break;
      case Failure::upstreamBody:
        logEvent(LogEvent::upstreamBodyFailed, spdlog::level::warn,
                 "event=upstream_body_failed identity={} reason=\"{}\"", identityForLog_,
                 r.ec.message());
        break;
    }
    if (r.localStatus) {
      co_await replyLocal(r.localStatus);
      co_return false;
    }
    if (r.status) {
      finishRequest(r.status, r.responseBytes);
    }
    co_return r.failure == Failure::none&& r.keepAlive;
  }
  // Counts the answer (and writes the access log line) once its head went out.
  void finishRequest(unsigned status, uint64_t responseBytes) {
    const double seconds = secondsSince(requestStart_);
    m_.requests.add(shard_, InboundMetrics::requestSeries(method_, status));
    m_.requestDuration.observe(shard_, 0, seconds);
    m_.receivedBytes.add(shard_, 0, requestBytes_);
    m_.sentBytes.add(shard_, 0, responseBytes);
    if (auto* log = worker_.accessLog()) {
      log->line(
          "identity={} method={} path=\"{}\" status={} req_bytes={} resp_bytes={} "
          "duration_us={} upstream_us={}",
          identityForLog_, InboundMetrics::kMethods[method_], escapeForLog(target_), status,
          requestBytes_, responseBytes, static_cast<int64_t>(seconds * 1e6),
          upstreamSeconds_ < 0 ? -1 : static_cast<int64_t>(upstreamSeconds_ * 1e6));
    }
    requestBytes_ = 0;
  }

  awaitable<void> replyLocal(unsigned status) {
    m_.localReply(status).Increment();
    finishRequest(status, 0);
    const auto& bytes = localReplyBytes(status);
    beast::get_lowest_layer(stream_).expires_after(shared_.limits.idleTimeout);
    co_await asio::async_write(stream_, asio::buffer(bytes), useTuple);
  }

  struct PendingGuard {
    InboundMetrics& m;
    unsigned shard;
    std::size_t& pending;
    PendingGuard(InboundMetrics& metrics, unsigned s, std::size_t& p)
        : m(metrics), shard(s), pending(p) {
      ++pending;
    }
    ~PendingGuard() {
      --pending;
      m.pending.sub(shard, 0);
    }
    PendingGuard(const PendingGuard&) = delete;
    PendingGuard& operator=(const PendingGuard&) = delete;
  };

  Clock::time_point handshakeDeadline_;
  InboundHandler& handler_;
  const InboundShared& shared_;
  InboundMetrics& m_;
  unsigned shard_;
  std::shared_ptr<ssl::context> tls_;
  TlsStream stream_;
  beast::flat_buffer buffer_;    // the caller's bytes read ahead of the parser
  DeadlineSocket upstream_;      // the connection to the local service, while a request uses it
  beast::flat_buffer upBuffer_;  // the local service's bytes read ahead of the parser
  std::string out_;              // a serialized head (and small body) on its way out
  PeerIdentity peer_;
  std::string identityForLog_ = "-";  // peer_.identity quoted and escaped, or "-"
  std::string clientIp_;
  bool allowed_ = false;
  bool idle_ = false;
  bool handshaking_ = false;
  bool evicted_ = false;
  unsigned idleSweeps_ = 0;  // sweeps seen while idle_
  Clock::time_point requestStart_{};
  std::size_t method_ = 7;
  uint64_t requestBytes_ = 0;
  double upstreamSeconds_ = -1;
  std::string target_;  // kept only for the access log
};

}  // namespace

awaitable<void> serveConnection(InboundHandler& handler, TcpSocket socket,
                                std::shared_ptr<ssl::context> tls,
                                Clock::time_point handshakeDeadline) {
  InboundSession session(handler, std::move(socket), std::move(tls), handshakeDeadline);
  co_await session.run();
}

}  // namespace sidecar
