// A caller's HTTP/2 connection: each stream one request to the local service.
#include "inbound/h2_session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <unordered_map>

#include "core/text.h"
#include "h2/client_pool.h"
#include "h2/grpc.h"
#include "h2/http1_relay.h"
#include "h2/pipe.h"
#include "h2/proxy_server.h"
#include "http/local_reply.h"
#include "http/relay.h"
#include "http/rewrite.h"
#include "inbound/handler.h"
#include "net/access_log.h"
#include "trace/b3.h"
#include "upstream/connector.h"

namespace sidecar {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

namespace {

using h2::connectionSpecific;
using Stream = h2::ProxyStream;

}  // namespace

class InboundH2Server::Impl final : public h2::ProxyServer {
 public:
  Impl(InboundHandler& handler, H2Caller caller)
      : h2::ProxyServer(
            handler.worker().ioc().get_executor(), handler.shared().h2,
            Limits{handler.shared().limits.maxHeadBytes, handler.shared().limits.upstreamTimeout}),
        handler_(handler),
        shared_(handler.shared()),
        m_(*shared_.metrics),
        shard_(handler.worker().index()),
        caller_(std::move(caller)) {}
  // Streams still open (the worker stops mid-connection) are finished while this is whole.
  ~Impl() override { closeAll(); }

  void finishConnection() {
    const auto& c = counters();
    if (c.flood) {
      m_.h2Floods->Increment();
      logWithin(handler_.logLimiter(LogEvent::badRequest), spdlog::level::info,
                "event=http2_flood peer={} identity={}", caller_.clientIp, caller_.identityForLog);
    }
    m_.h2ResetsReceived->Increment(static_cast<double>(c.resetsReceived));
    m_.h2ResetsSent->Increment(static_cast<double>(c.resetsSent));
    m_.h2GoawaySent->Increment(static_cast<double>(c.goawaySent));
  }

  void dispatch(Stream& s) override;
  void finish(Stream& s) override;
  // A stream the local service refused before taking any of it (too many at once, or its
  // connection goes away) is sent again on the pool, a few times at most; else 502.
  void upFailed(Stream& s, UpEnd end) override {
    if ((end == UpEnd::refused || end == UpEnd::goneAway) && s.resends < kMaxResends && s.server) {
      ++s.resends;
      if (resend(s, handler_.h2Pool().pick())) {
        m_.upstreamH2Resent->Increment();
        return;
      }
    }
    localReply(s, 502);
  }
  void countLocalReply(unsigned status) override {
    m_.localReply(status).Increment();
    if (status == 504) {
      m_.upstreamTimeouts->Increment();
    }
  }
  void streamOpenedOrClosed(bool opened) override {
    if (opened) {
      m_.h2Streams.add(shard_, 0);
      m_.h2StreamsOpen.add(shard_, 0);
    } else {
      m_.h2StreamsOpen.sub(shard_, 0);
    }
  }

  void sweepAll(Clock::time_point now) {
    handler_.h2Pool().sweep(now);
    if (handler_.worker().draining() && !goawayForDrain_) {
      goawayForDrain_ = true;
      goAway();
    }
    sweep(now);
  }

  awaitable<void> http1Exchange(std::shared_ptr<Stream> s);
  h2::Fields upstreamHead(Stream& s, http::request_header<>& head);
  http::request_header<> forwardedHead(Stream& s);
  void traceRequest(Stream& s, http::request_header<>& head);
  void reportSpan(Stream& s, double seconds);

  InboundHandler& handler_;
  const InboundShared& shared_;
  InboundMetrics& m_;
  unsigned shard_;
  H2Caller caller_;
  bool goawayForDrain_ = false;
};

void InboundH2Server::Impl::dispatch(Stream& s) {
  if (s.headTooLarge) {
    return localReply(s, 431);
  }
  if (!caller_.allowed) {
    m_.identityRefused->Increment();
    if (caller_.peer.unusable) {
      m_.identityUnusable->Increment();
    }
    logWithin(handler_.logLimiter(LogEvent::identityRefused), spdlog::level::info,
              "event=identity_refused peer={} identity={}", caller_.clientIp,
              caller_.identityForLog);
    return localReply(s, 403);
  }
  if (s.method == "CONNECT" || s.path.empty() || s.path[0] != '/') {
    return localReply(s, 400);  // not a tunnel; origin-form paths only
  }
  // The underscore rule, as for HTTP/1.1 (http/read_head.h).
  std::size_t underscores = 0;
  for (const auto& f : s.fields) {
    underscores += f.name.find('_') != std::string::npos ? 1 : 0;
  }
  if (underscores) {
    m_.underscoreHeaders->Increment(static_cast<double>(underscores));
    if (shared_.limits.underscoreHeaders == UnderscoreHeaders::reject) {
      return localReply(s, 400);
    }
    if (shared_.limits.underscoreHeaders == UnderscoreHeaders::drop) {
      std::erase_if(s.fields,
                    [](const h2::Field& f) { return f.name.find('_') != std::string::npos; });
    }
  }
  if (handler_.pending() >= handler_.pendingLimit()) {
    logWithin(handler_.logLimiter(LogEvent::overloaded), spdlog::level::info,
              "event=overloaded peer={} pending={}", caller_.clientIp, handler_.pending());
    return localReply(s, 503);
  }
  ++handler_.pending();
  m_.pending.add(shard_, 0);
  s.pendingCounted = true;
  startClock(s);
  const bool useH2 = shared_.upstreamProtocol == UpstreamProtocol::h2c ||
                     (shared_.upstreamProtocol == UpstreamProtocol::automatic && s.grpc);
  if (!useH2) {
    asio::co_spawn(handler_.worker().ioc(), http1Exchange(hold(s)), asio::detached);
    return;
  }
  auto head = forwardedHead(s);
  if (!bind(s, handler_.h2Pool().pick(), upstreamHead(s, head))) {
    localReply(s, 502);
  }
}

namespace {

// The local service's end of an HTTP/1.1 exchange (h2/http1_relay.h): a pooled plain connection
// of the worker's (kept per caller identity, as HTTP/1.1 callers' are), else a new one.
struct LocalH1Link final : h2::Http1Leg {
  using stream_type = DeadlineSocket;
  static constexpr bool kReplayStale = true;  // one local service: a stale connection's request
                                              // goes to it again on a new one
  LocalH1Link(InboundHandler& h, tcp::endpoint e, std::string o)
      : handler(h), endpoint(e), owner(std::move(o)), socket(h.worker().ioc().get_executor()) {}
  DeadlineSocket& stream() { return socket; }
  bool takePooled() {
    if (auto idle = handler.pool().take(endpoint, owner)) {
      socket.socket() = std::move(*idle);
      return true;
    }
    return false;
  }
  awaitable<error_code> connect() {
    auto ec =
        co_await connectPlain(socket, endpoint, handler.shared().limits.upstreamConnectTimeout);
    auto& m = *handler.shared().metrics;
    (ec ? m.upstreamConnectErrors : m.upstreamConnectsTotal)->Increment();
    co_return ec;
  }
  void release(bool reusable) {
    if (reusable) {
      socket.expires_never();
      handler.pool().giveBack(endpoint, std::move(socket.socket()), owner);
    } else {
      error_code ignored;
      socket.socket().close(ignored);
    }
  }
  void cancel() override { socket.cancel(); }
  void expireIfDue(Clock::time_point now) override { socket.expireIfDue(now); }

  InboundHandler& handler;
  tcp::endpoint endpoint;
  std::string owner;  // the caller's identity: its connections are not another caller's
  DeadlineSocket socket;
};

}  // namespace

// One request over HTTP/1.1 to the local service; our answer when it brought none.
awaitable<void> InboundH2Server::Impl::http1Exchange(std::shared_ptr<Stream> sp) {
  auto& s = *sp;
  auto& handler = handler_;  // outlives this: the worker's
  const auto& shared = shared_;
  const std::string identityForLog = caller_.identityForLog;  // this session may end first
  LocalH1Link link(handler, shared.local.addr().endpoints().front(), caller_.peer.identity);
  LazyRelayBuffer relay(handler.worker());
  const auto end =
      co_await h2::relayOverHttp1(s, link, forwardedHead(s), shared.limits.upstreamTimeout,
                                  shared.metrics->h2FlowStalls, relay);
  using Kind = h2::Http1End::Kind;
  if (end.kind == Kind::answered || end.kind == Kind::cancelled || !s.server) {
    co_return;
  }
  if (end.kind == Kind::upstreamBody) {
    logWithin(handler.logLimiter(LogEvent::upstreamBodyFailed), spdlog::level::warn,
              "event=upstream_body_failed identity={} protocol=h2 reason=\"{}\"", identityForLog,
              end.ec.message());
    s.server->reset(s.id, NGHTTP2_INTERNAL_ERROR);
    co_return;
  }
  // A timeout is counted with our 504 (countLocalReply).
  if (end.kind == Kind::upstream) {
    logWithin(handler.logLimiter(LogEvent::upstreamFailed), spdlog::level::warn,
              "event=upstream_failed identity={} protocol=h2 reason=\"{}\"", identityForLog,
              end.ec.message());
  }
  s.server->localReply(s, end.ec == boost::beast::error::timeout ? 504 : 502);
}

// The request's head as the local service gets it: the caller's fields, then the rules of
// http/rewrite.h (hop-by-hop fields out, X-Forwarded-For, -Proto, -Client-Cert).
http::request_header<> InboundH2Server::Impl::forwardedHead(Stream& s) {
  // Every field: rewriteRequestHead drops the hop-by-hop ones, as for an HTTP/1.1 caller's.
  auto head = h2::http1RequestHead(s, [](const std::string&) { return false; });
  if (head.count(http::field::host) == 0 && !s.authority.empty()) {
    head.set(http::field::host, s.authority);
  }
  rewriteRequestHead(
      head, ForwardContext{caller_.clientIp, caller_.peer.xfcc, shared_.upstreamAuthority});
  if (shared_.tracer) [[unlikely]] {
    traceRequest(s, head);
  }
  return head;
}

// The stream's server span, as an HTTP/1.1 request's (docs/tracing.md): it joins the caller's
// B3 context or starts a trace; the local service gets a child of it; a malformed B3 field is
// dropped and counted, never forwarded.
void InboundH2Server::Impl::traceRequest(Stream& s, http::request_header<>& head) {
  auto& tracer = *shared_.tracer;
  const auto in = trace::readB3(head);
  if (in.malformed) {
    tracer.metrics().b3Malformed->Increment();
    logWithin(handler_.logLimiter(LogEvent::badRequest), spdlog::level::info,
              "event=b3_malformed peer={} identity={} protocol=h2", caller_.clientIp,
              caller_.identityForLog);
  }
  if (in.present) {
    trace::eraseB3(head);
  }
  s.span = tracer.join(in.context);
  s.spanShared = in.context.valid();
  trace::writeB3(head, trace::childOf(s.span));
}

void InboundH2Server::Impl::reportSpan(Stream& s, double seconds) {
  const auto duration = static_cast<std::int64_t>(seconds * 1e6);
  auto span = trace::httpSpan(trace::Kind::server, s.span, s.method, s.path, s.status,
                              trace::nowMicros() - duration, duration);
  span.shared = s.spanShared;
  span.remoteIp = caller_.clientIp;
  if (!caller_.peer.identity.empty()) {
    span.tags.emplace_back("peer.identity", trace::tagValue(caller_.peer.identity));
  }
  span.tags.emplace_back("http.protocol", "h2");
  shared_.tracer->report(std::move(span));
}

h2::Fields InboundH2Server::Impl::upstreamHead(Stream& s, http::request_header<>& head) {
  h2::Fields out;
  out.reserve(8 + s.fields.size());
  out.push_back({":method", s.method});
  out.push_back({":scheme", "http"});
  std::string authority = s.authority;
  if (auto host = head.find(http::field::host); host != head.end()) {
    authority = std::string(host->value());
  }
  out.push_back({":authority", authority.empty() ? shared_.upstreamAuthority : authority});
  out.push_back({":path", s.path});
  for (const auto& f : head) {
    auto name = lower(f.name_string());
    if (name == "host" || connectionSpecific(name)) {
      continue;
    }
    out.push_back({std::move(name), std::string(f.value())});
  }
  if (s.grpc) {
    out.push_back({"te", "trailers"});  // gRPC servers ask for it
  }
  return out;
}

// Counts the request and writes its access-log line, once, when the caller's stream closes.
void InboundH2Server::Impl::finish(Stream& s) {
  if (s.pendingCounted) {
    --handler_.pending();
    m_.pending.sub(shard_, 0);
  }
  if (!s.responseStarted || (!s.response.drained() && !s.answeredLocally)) {
    m_.h2StreamsBroken.add(shard_, 0);
  }
  if (!s.responseStarted) {
    return;  // the caller reset the stream before any answer: nobody was answered
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - s.start).count();
  if (shared_.tracer && s.span.isSampled()) [[unlikely]] {
    reportSpan(s, seconds);
  }
  const std::size_t method = InboundMetrics::methodIndex(http::string_to_verb(s.method));
  m_.requests.add(shard_, InboundMetrics::requestSeries(method, s.status));
  m_.requestDuration.observe(shard_, 0, seconds);
  m_.receivedBytes.add(shard_, 0, s.request.total());
  m_.sentBytes.add(shard_, 0, s.responseBytes);
  if (s.upstreamSeconds >= 0) {
    m_.upstreamDuration.observe(shard_, 0, s.upstreamSeconds);
  }
  if (s.grpc) {
    if (!s.grpcStatus) {
      s.grpcStatus = h2::grpcStatusOf(s.response.trailers);
    }
    m_.grpcRequests.add(shard_, s.grpcStatus ? *s.grpcStatus : 18);
  }
  if (auto* log = handler_.worker().accessLog()) {
    log->line(
        "identity={} method={} path=\"{}\" status={} req_bytes={} resp_bytes={} "
        "duration_us={} upstream_us={} protocol=h2{}{}",
        caller_.identityForLog, InboundMetrics::kMethods[method], escapeForLog(s.path), s.status,
        s.request.total(), s.responseBytes, static_cast<int64_t>(seconds * 1e6),
        s.upstreamSeconds < 0 ? -1 : static_cast<int64_t>(s.upstreamSeconds * 1e6),
        s.grpc ? " grpc_status=" : "",
        s.grpc ? (s.grpcStatus ? std::to_string(*s.grpcStatus) : std::string("-")) : std::string());
  }
}

InboundH2Server::InboundH2Server(InboundHandler& handler, H2Caller caller)
    : impl_(std::make_unique<Impl>(handler, std::move(caller))) {}

InboundH2Server::~InboundH2Server() = default;

awaitable<void> InboundH2Server::run(TlsStream& stream) {
  auto& limits = impl_->shared_.limits;
  co_await impl_->run(stream, limits.idleTimeout, limits.idleTimeout);
  impl_->finishConnection();
}

void InboundH2Server::sweep(Clock::time_point now) { impl_->sweepAll(now); }

bool InboundH2Server::idle() const { return impl_->idle(); }

}  // namespace sidecar
