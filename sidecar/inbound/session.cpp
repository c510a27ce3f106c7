// The inbound handler: mTLS callers' connections, from their first byte to their last answer.
#include "inbound/session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include "http/exchange.h"
#include "http/local_reply.h"
#include "http/rewrite.h"
#include "http/server_session.h"
#include "inbound/h2_session.h"
#include "inbound/handler.h"
#include "net/access_log.h"
#include "net/caller_session.h"
#include "net/tls_context.h"
#include "net/tls_stream.h"
#include "trace/b3.h"
#include "upstream/connector.h"

namespace sidecar {

namespace http = beast::http;
namespace ssl = asio::ssl;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One caller's connection: the mTLS prelude (net/caller_session.h), then HTTP/1.1 requests
// (http/server_session.h), each an exchange with the local service.
class InboundSession final : public CallerTlsSession,
                             public Http1Server<InboundSession, TlsStream> {
 public:
  InboundSession(InboundHandler& handler, TcpSocket socket, std::shared_ptr<ssl::context> tls,
                 Clock::time_point handshakeDeadline)
      : CallerTlsSession(handler.worker(), Budget::listen, std::move(socket), std::move(tls),
                         handshakeDeadline),
        Http1Server(handler.shared().limits, Worker::kRelayBufferSize),
        handler_(handler),
        shared_(handler.shared()),
        m_(*handler.shared().metrics),
        shard_(handler.worker().index()) {}

  ~InboundSession() { m_.connectionsOpen.sub(shard_, 0); }

  awaitable<void> run() {
    const auto caller = co_await prelude(
        shared_.allowList, {"handshake_failed", handler_.logLimiter(LogEvent::handshakeFailed)},
        [this](std::optional<HandshakeFailure> failure, Clock::duration took) {
          m_.handshakeDuration.observe(shard_, 0, std::chrono::duration<double>(took).count());
          m_.handshakes.add(shard_, InboundMetrics::handshakeSeries(failure));
        });
    if (!caller) {
      co_return;
    }
    if (alpnSelected(stream_.native_handle()) == "h2") {
      co_await serveH2(std::move(*caller));
      co_return;
    }
    peer_ = std::move(caller->peer);
    allowed_ = caller->allowed;
    co_await serveRequests();
    co_await closeTls();
  }

  void expireIfDue(Clock::time_point now) override {
    CallerTlsSession::expireIfDue(now);
    if (h2_) {
      if (const bool idle = h2_->idle(); idle != h2Idle_) {
        h2Idle_ = idle;
        setIdle(idle);  // an eviction or the drain may close a connection with no stream
      }
      h2_->sweep(now);
    }
  }

  // Http1Server's hooks.
  TlsStream& callerStream() { return stream_; }

  // Waits for the first bytes of the next request; false when the connection is to close.
  // The idle deadline applies; the head deadline starts with the first byte. The wait lends no
  // buffer: the read happens once there is something to read.
  awaitable<bool> awaitRequest() {
    auto& lowest = stream_.lowest_layer();
    shrinkIfLarge(buffer_);
    lowest.expires_after(shared_.limits.idleTimeout);
    bool partial = false;  // OpenSSL holds part of a record: wait for the socket
    for (;;) {
      if (worker_.draining()) {
        co_return false;
      }
      setIdle(true);
      auto [ec] = co_await stream_.async_wait_readable(useTuple, partial);
      setIdle(false);
      if (ec) {
        co_return false;
      }
      std::size_t n = 0;
      const auto got = stream_.read_some_now(buffer_.prepare(2048), n);
      if (got == TlsStream::ReadNow::wouldBlock) {
        partial = true;
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

  void requestBegins() {
    requestStart_ = Clock::now();
    method_ = InboundMetrics::kMethods.size() - 1;
    target_.clear();
    if (shared_.tracer) [[unlikely]] {
      span_ = {};
    }
  }

  void headRead(Parser& req, const RequestHeadResult& head) {
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
  }

  unsigned admit(Parser&, const RequestHeadResult& head) {
    if (head.kind == RequestHeadResult::Kind::refused) {
      logEvent(LogEvent::badRequest, spdlog::level::info,
               "event=bad_request peer={} identity={} status={} reason=\"{}\"", clientIp_,
               identityForLog_, head.status, head.reason());
      return head.status;
    }
    if (!allowed_) {
      m_.identityRefused->Increment();
      if (peer_.unusable) {
        m_.identityUnusable->Increment();
      }
      logEvent(LogEvent::identityRefused, spdlog::level::info,
               "event=identity_refused peer={} identity={}", clientIp_, identityForLog_);
      return 403;
    }
    return 0;
  }

  awaitable<bool> handle(Parser& req) {
    auto& msg = req.get();
    const bool clientKeepAlive = msg.keep_alive();
    const unsigned clientVersion = msg.version();
    const bool isHead = msg.method() == http::verb::head;
    rewriteRequestHead(msg.base(),
                       ForwardContext{clientIp_, peer_.xfcc, shared_.upstreamAuthority});
    if (shared_.tracer) [[unlikely]] {
      traceRequest(msg);
    }
    co_return co_await forward(req, clientKeepAlive, clientVersion, isHead);
  }

  awaitable<void> answerLocal(unsigned status) {
    m_.localReply(status).Increment();
    finishRequest(status, 0);
    const auto& bytes = localReplyBytes(status);
    stream_.lowest_layer().expires_after(shared_.limits.idleTimeout);
    co_await asio::async_write(stream_, asio::buffer(bytes), useTuple);
  }

 private:
  // HTTP/2 (ALPN h2): the connection's streams, each a request (inbound/h2_session.h).
  awaitable<void> serveH2(CallerIdentity caller) {
    m_.h2Connections.add(shard_, 0);
    // The reader waits for readability without a read under way (h2/session.h), so an idle
    // connection gives OpenSSL's record buffers back, as an idle HTTP/1.1 one does.
    InboundH2Server h2(
        handler_, H2Caller{std::move(caller.peer), caller.allowed, clientIp_, identityForLog_});
    h2_ = &h2;
    co_await h2.run(stream_);
    h2_ = nullptr;
    co_await closeTls();
  }

  // One line for a data-path event, within the worker's budget for that event.
  template <class... Args>
  void logEvent(LogEvent e, spdlog::level::level_enum level, fmt::format_string<Args...> format,
                Args&&... args) {
    logWithin(handler_.logLimiter(e), level, format, std::forward<Args>(args)...);
  }

  // Still idle a sweep later: the request buffers are given back too.
  void releaseIdle() override {
    std::string().swap(out_);
    if (buffer_.size() == 0) {
      buffer_.shrink_to_fit();
    }
    if (upBuffer_.size() == 0) {
      upBuffer_.shrink_to_fit();
    }
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
      co_await answerLocal(503);
      co_return false;
    }
    m_.pending.add(shard_, 0);
    PendingGuard pendingGuard{m_, shard_, handler_.pending()};
    const auto& endpoint = shared_.local.addr().endpoints().front();
    LocalLink link{*this, endpoint};
    LazyRelayBuffer relay(worker_);
    const ExchangeLimits limits{shared_.limits.idleTimeout, shared_.limits.upstreamTimeout};
    auto r = co_await runExchange(
        stream_, req,
        ExchangeRequest{clientKeepAlive, clientVersion, isHead, &worker_.drainingFlag()}, link,
        relay, exchangeBuffers(), limits);

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
      co_await answerLocal(r.localStatus);
      co_return false;
    }
    if (r.status) {
      finishRequest(r.status, r.responseBytes);
    }
    co_return r.failure == Failure::none&& r.keepAlive;
  }
  // The request's server span (docs/tracing.md): it joins the caller's trace (B3's shared span:
  // the caller's span id), or starts one; the local service gets a child of it. The caller's B3
  // fields never reach the local service as they came: a malformed one is dropped and counted.
  void traceRequest(http::request<http::buffer_body>& msg) {
    auto& tracer = *shared_.tracer;
    const auto in = trace::readB3(msg);
    if (in.malformed) {
      tracer.metrics().b3Malformed->Increment();
      logEvent(LogEvent::badRequest, spdlog::level::info, "event=b3_malformed peer={} identity={}",
               clientIp_, identityForLog_);
    }
    if (in.present) {
      trace::eraseB3(msg);
    }
    span_ = tracer.join(in.context);
    spanShared_ = in.context.valid();
    if (span_.isSampled()) {
      spanTarget_ = msg.target();
      spanMethod_ = msg.method_string();
    }
    trace::writeB3(msg, trace::childOf(span_));
  }

  void reportSpan(unsigned status, double seconds) {
    const auto duration = static_cast<std::int64_t>(seconds * 1e6);
    auto s = trace::httpSpan(trace::Kind::server, span_, spanMethod_, spanTarget_, status,
                             trace::nowMicros() - duration, duration);
    s.shared = spanShared_;
    s.remoteIp = clientIp_;
    if (!peer_.identity.empty()) {
      s.tags.emplace_back("peer.identity", trace::tagValue(peer_.identity));
    }
    shared_.tracer->report(std::move(s));
    span_ = {};
  }

  // Counts the answer (and writes the access log line) once its head went out.
  void finishRequest(unsigned status, uint64_t responseBytes) {
    const double seconds = secondsSince(requestStart_);
    if (shared_.tracer && span_.isSampled()) [[unlikely]] {
      reportSpan(status, seconds);
    }
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

  InboundH2Server* h2_ = nullptr;  // while the connection speaks HTTP/2
  bool h2Idle_ = false;
  InboundHandler& handler_;
  const InboundShared& shared_;
  InboundMetrics& m_;
  unsigned shard_;
  PeerIdentity peer_;
  bool allowed_ = false;
  Clock::time_point requestStart_{};
  std::size_t method_ = 7;
  uint64_t requestBytes_ = 0;
  double upstreamSeconds_ = -1;
  std::string target_;  // kept only for the access log
  // Tracing, with --zipkin-url only: the request's server span.
  trace::Context span_;
  bool spanShared_ = false;
  std::string spanMethod_;
  std::string spanTarget_;
};

}  // namespace

awaitable<void> serveConnection(InboundHandler& handler, TcpSocket socket,
                                std::shared_ptr<ssl::context> tls,
                                Clock::time_point handshakeDeadline) {
  InboundSession session(handler, std::move(socket), std::move(tls), handshakeDeadline);
  co_await session.run();
}

}  // namespace sidecar
