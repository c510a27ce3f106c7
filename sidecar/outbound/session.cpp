// One connection of the local service to the outbound listener: each request is routed by its
// Host, balanced over the route's members and carried to one of them over mTLS.
#include "outbound/session.h"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <span>

#include "http/exchange.h"
#include "http/local_reply.h"
#include "http/rewrite.h"
#include "http/server_session.h"
#include "net/access_log.h"
#include "outbound/h2_session.h"
#include "outbound/handler.h"
#include "outbound/member.h"
#include "trace/b3.h"
#include "upstream/call_policy.h"

namespace sidecar {

namespace http = beast::http;

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::string_view kFinagleDeadline = "Finagle-Ctx-com.twitter.finagle.Deadline";
using Failure = ExchangeResult::Failure;

// Whether an exchange's end counts for the member (failure accrual, EWMA): its answers below 500
// do, and so do the caller's own failures, which are no fault of the member's.
bool memberAnswered(const ExchangeResult& r) {
  return r.failure == Failure::none
             ? r.status < 500
             : r.failure == Failure::callerGone || r.failure == Failure::requestBroken ||
                   r.failure == Failure::requestTooLarge || r.failure == Failure::requestMalformed;
}

// An exchange's end in the call policy's terms. Nothing of the request reached the member
// (connect or handshake failed), or the member closed before answering an idempotent request we
// still hold whole: another member may take it. A refused answer was decided on with the next
// member picked and the budget drawn (MemberLink::refuseAnswer).
AttemptEnd attemptEnd(const ExchangeResult& r, bool hasBody, http::verb method) {
  switch (r.failure) {
    case Failure::connect:
      return AttemptEnd::notSent;
    case Failure::answerRefused:
      return AttemptEnd::refused;
    case Failure::upstream:
      return r.localStatus == 502 && !hasBody && exchange_detail::isIdempotent(method)
                 ? AttemptEnd::closedEarly
                 : AttemptEnd::failed;
    case Failure::none:
      return AttemptEnd::answered;
    default:
      return AttemptEnd::failed;
  }
}

// One connection of the local service: HTTP/1.1 requests (http/server_session.h), each a call
// over the route its Host names.
class OutboundSession final : public OutboundCallerSession,
                              public Http1Server<OutboundSession, DeadlineSocket> {
 public:
  OutboundSession(OutboundHandler& handler, TcpSocket socket)
      : OutboundCallerSession(handler.worker(), std::move(socket)),
        Http1Server(handler.shared().limits, Worker::kRelayBufferSize),
        handler_(handler),
        shared_(handler.shared()),
        m_(*handler.shared().metrics),
        shard_(handler.worker().index()) {}

  awaitable<void> run() {
    co_await serveRequests();
    if (h2Preface_) {
      // The local service speaks HTTP/2 (prior knowledge): each stream a call of its own.
      OutboundH2Server h2(handler_);
      h2_ = &h2;
      co_await h2.run(caller_);
      h2_ = nullptr;
      error_code ignored;
      caller_.socket().shutdown(TcpSocket::shutdown_send, ignored);
      co_return;
    }
    if (unread_ || buffer_.size() > 0) {
      // An answer of ours (404, 503, 413...) went out with the request's body unread.
      co_await lingeringClose(caller_);
    } else {
      error_code ignored;
      caller_.socket().shutdown(TcpSocket::shutdown_send, ignored);
    }
  }

  // Http1Server's hooks.
  DeadlineSocket& callerStream() { return caller_; }

  awaitable<bool> awaitRequest() {
    caller_.expires_after(shared_.limits.idleTimeout);
    idle_ = !worker_.draining();
    if (!idle_) {
      co_return false;
    }
    auto [ec] = co_await caller_.socket().async_wait(TcpSocket::wait_read, useTuple);
    idle_ = false;
    if (!ec && firstRequest_) {
      firstRequest_ = false;
      char peek[24];
      error_code pec;
      const auto n = caller_.socket().receive(asio::buffer(peek), TcpSocket::message_peek, pec);
      if (!pec && looksLikeH2Preface(std::string_view(peek, n))) {
        h2Preface_ = true;
        co_return false;
      }
    }
    co_return !ec;
  }

  void expireIfDue(DeadlineSocket::Clock::time_point now) override {
    OutboundCallerSession::expireIfDue(now);
    if (h2_) {
      idle_ = h2_->idle() && !worker_.draining();
      h2_->sweep(now);
    }
  }

  void requestBegins() {
    start_ = Clock::now();
    target_ = CallTarget{};
    if (shared_.tracer) [[unlikely]] {
      span_ = {};
    }
  }

  void headRead(Parser&, const RequestHeadResult& head) {
    if (head.underscores) {
      shared_.metrics->underscoreHeaders->Increment(static_cast<double>(head.underscores));
    }
  }

  // A head that could not be read or parsed is refused with its status; one that was parsed is
  // judged by its Host (a check that failed gives the reason), so the 400 can say what is wrong.
  unsigned admit(Parser& req, const RequestHeadResult& head) {
    if (head.kind == RequestHeadResult::Kind::refused && (head.ec || !req.is_header_done())) {
      logEvent(OutboundLogEvent::badRequest, spdlog::level::info,
               "event=bad_request direction=outbound status={} reason=\"{}\"", head.status,
               head.reason());
      return head.status;
    }
    unread_ = !req.is_done();  // until the exchange has read the body
    target_ = callTarget(req.get(), head.why);
    if (!target_.why.empty()) {
      logEvent(OutboundLogEvent::badRequest, spdlog::level::info,
               "event=bad_request direction=outbound status=400 reason=\"{}\"", target_.why);
      return 400;
    }
    return 0;
  }

  awaitable<void> answerLocal(unsigned status) {
    // Made before the co_await: GCC 12 destroyed a conditional's temporary there twice.
    std::string bytes = target_.answer.empty() ? std::string(localReplyBytes(status))
                                               : localReplyNaming(status, target_.answer);
    co_await reply(bytes);
  }

  awaitable<bool> handle(Parser& req) {
    const auto route = handler_.route(target_.name, !target_.address);
    if (route && route->addr->isPending()) {
      co_await route->awaitResolution(worker_.ioc(), shared_.config.resolveTimeout);
    }
    if (!route || !route->addr->isBound()) {
      co_await answerUnrouted(route.get(), target_, start_);
      co_return false;
    }
    co_return co_await callRoute(*route, req, target_.name, start_);
  }

 private:
  template <class... Args>
  void logEvent(OutboundLogEvent e, spdlog::level::level_enum level,
                fmt::format_string<Args...> format, Args&&... args) {
    logWithin(handler_.logLimiter(e), level, format, std::forward<Args>(args)...);
  }

  awaitable<void> reply(const std::string& bytes) {
    caller_.expires_after(shared_.limits.idleTimeout);
    co_await asio::async_write(caller_, asio::buffer(bytes), useTuple);
  }

  // Whom a request calls, by its Host; why and answer say what is wrong with it, if anything.
  struct CallTarget {
    std::string name;
    bool address = false;     // the Host is an address: looked up, never made from the prefix
    std::string_view why;     // for the log line (a check of the head already failed: its why)
    std::string_view answer;  // a 400 that says what is wrong with the Host
  };
  CallTarget callTarget(const http::request<http::buffer_body>& msg, std::string_view why) {
    CallTarget t;
    t.why = why;
    const auto host = msg.find(http::field::host);
    const std::string_view hostValue =
        host == msg.end() ? std::string_view{}
                          : std::string_view(host->value().data(), host->value().size());
    // An address names no service: it is looked up among the routes made (a --route may be
    // named so), never made from --route-prefix (as Envoy, which has no virtual host for it: 404).
    t.address = hostIsAddress(hostValue);
    t.name = t.address ? addressName(hostValue) : serviceName(hostValue);
    if (host == msg.end()) {
      t.why = t.why.empty() ? "no Host header" : t.why;  // HTTP/1.1's check says so already
      t.answer = "missing Host header: it names the service to call\n";
    } else if (t.why.empty() && t.name.empty() && !t.address) {
      t.why = "Host is not a service name";
      t.answer = "Host is not a service name (letters, digits, '.', '-', '_', no empty label)\n";
    }
    if (!t.answer.empty()) {
      shared_.metrics->badHost->Increment();
    }
    return t;
  }

  // No route takes the call: none by that name (404), one beyond --max-routes (404), or one made
  // on first use still pending after --resolve-timeout (503).
  awaitable<void> answerUnrouted(OutboundHandler::Route* route, const CallTarget& target,
                                 Clock::time_point start) {
    const auto& name = target.name;
    if (route) {
      logEvent(OutboundLogEvent::noMembers, spdlog::level::warn,
               "event=route_unresolved direction=outbound service={}", name);
      finish(*route, 503, start, nullptr, ExchangeResult{});
      co_await reply(localReplyNaming(503, "service " + name + " is not resolved yet\n"));
      co_return;
    }
    shared_.metrics->noRoute->Increment();
    if (target.address) {
      logEvent(OutboundLogEvent::noRoute, spdlog::level::info,
               "event=no_route direction=outbound service={} reason=address", name);
      logAccess(name, 404, start, nullptr, ExchangeResult{});
      co_await reply(localReplyNaming(
          404, "no route to service " + name + " (an address is not a service name)\n"));
      co_return;
    }
    if (shared_.config.routePrefix.empty()) {
      logEvent(OutboundLogEvent::noRoute, spdlog::level::info,
               "event=no_route direction=outbound service={}", name);
    } else {
      // The prefix would route any name: this worker already waits for --max-routes new
      // routes (a burst faster than the control thread answers). Counted per call.
      shared_.metrics->routesRefused->Increment();
      logEvent(OutboundLogEvent::noRoute, spdlog::level::warn,
               "event=route_refused direction=outbound service={} reason=max_routes limit={}", name,
               shared_.config.maxRoutes);
    }
    logAccess(name, 404, start, nullptr, ExchangeResult{});
    co_await reply(localReplyNaming(404, "no route to service " + name + "\n"));
  }

  // The call over the route's members, by the call policy (upstream/call_policy.h); false when
  // the local service's connection is to close.
  awaitable<bool> callRoute(OutboundHandler::Route& route,
                            http::request_parser<http::buffer_body>& req, const std::string& name,
                            Clock::time_point start) {
    auto& msg = req.get();
    ++route.calls;
    const std::size_t slot = route.info->slot;
    const ExchangeRequest info{msg.keep_alive(), msg.version(), msg.method() == http::verb::head,
                               &worker_.drainingFlag()};
    const auto method = msg.method();
    const bool hasBody = !req.is_done();
    rewriteOutboundRequestHead(msg.base());
    if (shared_.tracer) [[unlikely]] {
      traceCall(msg);
    }
    // A Finagle caller's deadline shortens the call; one already past is not sent at all.
    const Duration timeout = callTimeout(msg);
    if (timeout <= Duration::zero()) {
      logEvent(OutboundLogEvent::memberFailed, spdlog::level::info,
               "event=deadline_exceeded direction=outbound route={}", name);
      finish(route, 504, start, nullptr, ExchangeResult{});
      co_await reply(
          localReplyNaming(504, "service " + name + ": the caller's deadline has passed\n"));
      co_return false;
    }
    LazyRelayBuffer relay(worker_);
    const ExchangeLimits limits{shared_.limits.idleTimeout, timeout};
    // The call's time starts here: retries share it, each gets what is left.
    CallAttempts call(route.budget, Clock::now(), timeout);
    ExchangeResult r;
    tcp::endpoint member;
    for (;;) {
      const auto now = Clock::now();
      auto picked = call.pick(route.balancer, now);
      if (!picked && call.exhausted()) {
        break;  // every member it could pick has failed this request already: r stands
      }
      if (!picked) {
        m_.noMembers.add(shard_, slot);
        logEvent(OutboundLogEvent::noMembers, spdlog::level::warn,
                 "event=no_members direction=outbound route={}", name);
        finish(route, 503, start, nullptr, ExchangeResult{});
        co_await reply(localReplyNaming(503, "no usable member of service " + name + "\n"));
        co_return false;
      }
      member = *picked;
      call.begin(member);  // excluded from the pick refuseAnswer makes
      route.balancer.started(member, now);
      const auto left = call.left(now);
      ExchangeLimits attempt = limits;
      attempt.upstreamTimeout = std::min(limits.upstreamTimeout, left);
      MemberLink link{.s = *this,
                      .route = route,
                      .endpoint = member,
                      .connectTimeout = std::min(shared_.config.connectTimeout, left),
                      .deadline = call.deadline(),
                      .exclude = call.tried(),
                      .mayRetry = call.attemptLeft(),
                      .next = std::nullopt};
      r = co_await runExchange(caller_, req, info, link, relay, exchangeBuffers(), attempt);
      const auto done = Clock::now();
      route.balancer.finished(member, done, done - now, memberAnswered(r));
      const auto step =
          call.after(attemptEnd(r, hasBody, method), route.balancer.size(), done, link.next);
      if (!retrying(step, r, slot, name, member)) {
        break;
      }
    }
    if (r.localStatus) {
      co_await answerFailed(route, r, member, name, start);
      co_return false;
    }
    if (r.status) {
      finish(route, r.status, start, &member, r);
    }
    if (r.failure == Failure::none) {
      unread_ = false;
    }
    co_return r.failure == Failure::none&& r.keepAlive;
  }

  // --outbound-timeout, or less when the local service is a Finagle client that sent its deadline
  // (Finagle-Ctx-com.twitter.finagle.Deadline: "<timestamp ns> <deadline ns>" since the epoch);
  // the header goes on to the member, whose own Finagle stack reads it too. A value that cannot
  // be read is ignored (Finagle ignores it too).
  Duration callTimeout(const http::request<http::buffer_body>& msg) const {
    const Duration configured = shared_.config.timeout;
    const auto it = msg.find(kFinagleDeadline);
    if (it == msg.end()) {
      return configured;
    }
    const std::string_view v(it->value().data(), it->value().size());
    const auto space = v.find(' ');
    std::int64_t deadlineNs = 0;
    const auto field = v.substr(space == std::string_view::npos ? v.size() : space + 1);
    const auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), deadlineNs);
    if (space == std::string_view::npos || ec != std::errc{} ||
        end != field.data() + field.size()) {
      return configured;
    }
    const std::int64_t nowNs = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
    if (deadlineNs <= nowNs) {
      return Duration::zero();  // past (Finagle's Time.Bottom included)
    }
    // Without overflow whatever the values; rounded up, so that 0.5 ms left is not "past".
    const auto leftNs = static_cast<std::uint64_t>(deadlineNs) - static_cast<std::uint64_t>(nowNs);
    const auto configuredNs = static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(configured).count());
    if (leftNs >= configuredNs) {
      return configured;
    }
    return std::chrono::ceil<Duration>(std::chrono::nanoseconds(static_cast<std::int64_t>(leftNs)));
  }

  // After an attempt: true when the call goes to another member (counted and logged); else r is
  // the call's end (a timeout made of slow connects is turned into one, a 504).
  bool retrying(CallStep step, ExchangeResult& r, std::size_t slot, const std::string& name,
                const tcp::endpoint& member) {
    switch (step) {
      case CallStep::done:
        return false;
      case CallStep::outOfTime:
        // Connects that failed slowly used the call's time up: it ends at --outbound-timeout,
        // as a call to one slow member does.
        r.failure = Failure::upstream;
        r.ec = beast::error::timeout;
        r.localStatus = 504;
        return false;
      case CallStep::outOfBudget:
        m_.budgetExhausted.add(shard_, slot);
        return false;
      case CallStep::next:
        break;
    }
    logEvent(OutboundLogEvent::memberFailed, spdlog::level::warn,
             "event=member_failed direction=outbound route={} member={} reason=\"{}\"", name,
             endpointText(member),
             r.failure == Failure::answerRefused ? "answered " + std::to_string(r.localStatus)
                                                 : r.ec.message());
    m_.retries.add(shard_, slot);
    return true;
  }

  // Nothing of a member's answer went out: ours does (502, 503, 504 naming the service).
  awaitable<void> answerFailed(OutboundHandler::Route& route, const ExchangeResult& r,
                               const tcp::endpoint& member, const std::string& name,
                               Clock::time_point start) {
    finish(route, r.localStatus, start, &member, r);
    if (r.localStatus == 502 || r.localStatus == 503 || r.localStatus == 504) {
      co_await reply(localReplyNaming(
          r.localStatus,
          "service " + name + (r.localStatus == 504 ? " timed out\n" : " is unavailable\n")));
    } else {
      co_await reply(localReplyBytes(r.localStatus));
    }
  }

  // Every call that named a route counts in it, answered by a member or by us (502, 503, 504).
  // The call's client span (docs/tracing.md): a child of the local service's span when its B3
  // fields came (they are replaced by ours; a malformed one is dropped and counted), else a new
  // trace. Every attempt carries it: a retry is the same call.
  void traceCall(http::request<http::buffer_body>& msg) {
    auto& tracer = *shared_.tracer;
    const auto in = trace::readB3(msg);
    if (in.malformed) {
      tracer.metrics().b3Malformed->Increment();
      logEvent(OutboundLogEvent::badRequest, spdlog::level::info,
               "event=b3_malformed direction=outbound");
    }
    if (in.present) {
      trace::eraseB3(msg);
    }
    const auto context = tracer.join(in.context);
    span_ = in.context.valid() ? trace::childOf(context) : context;
    if (span_.isSampled()) {
      spanTarget_ = msg.target();
      spanMethod_ = msg.method_string();
    }
    trace::writeB3(msg, span_);
  }

  void reportSpan(const std::string& route, unsigned status, Clock::time_point start,
                  const tcp::endpoint* member) {
    const auto duration =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    auto s = trace::httpSpan(trace::Kind::client, span_, spanMethod_, spanTarget_, status,
                             trace::nowMicros() - duration, duration);
    if (member) {
      s.remoteIp = member->address().to_string();
      s.remotePort = member->port();
    }
    s.tags.emplace_back("sidecar.route", route);
    shared_.tracer->report(std::move(s));
  }

  void finish(OutboundHandler::Route& route, unsigned status, Clock::time_point start,
              const tcp::endpoint* member, const ExchangeResult& r) {
    if (shared_.tracer && span_.isSampled()) [[unlikely]] {
      reportSpan(route.info->name, status, start, member);
    }
    const std::size_t slot = route.info->slot;
    m_.requests.add(shard_, OutboundMetrics::requestSeries(slot, status));
    m_.requestDuration.observe(shard_, slot,
                               std::chrono::duration<double>(Clock::now() - start).count());
    logAccess(route.info->name, status, start, member, r);
  }

  // member: the last one tried; none when the call was answered before one was picked.
  void logAccess(const std::string& route, unsigned status, Clock::time_point start,
                 const tcp::endpoint* member, const ExchangeResult& r) {
    auto* log = worker_.accessLog();
    if (!log) {
      return;
    }
    const auto micros =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count();
    log->line(
        "direction=outbound route={} member={} status={} req_bytes={} resp_bytes={} "
        "duration_us={}",
        route, member ? endpointText(*member) : std::string("-"), status, r.requestBytes,
        r.responseBytes, static_cast<int64_t>(micros));
  }

  // One member's side of an exchange: this worker's pool of TLS connections to it, or a new one.
  struct MemberLink {
    using stream_type = TlsStream;
    // A member that reset a pooled connection may have read the request: the call's retry loop
    // sends it to another member, never again to this one.
    static constexpr bool kReplayStale = false;
    OutboundSession& s;
    OutboundHandler::Route& route;
    const tcp::endpoint& endpoint;
    Duration connectTimeout{};               // the connect's and handshake's share of the call
    Clock::time_point deadline{};            // the call's
    std::span<const tcp::endpoint> exclude;  // the members this call went to, this one last
    bool mayRetry = false;                   // an attempt is left
    std::optional<tcp::endpoint> next;       // refuseAnswer's pick for the retry

    // A 502 or 503 head, to an idempotent call the exchange still holds whole: dropped, so that
    // another member takes the call, only when the balancer has one this call has not tried,
    // time is left and the budget allows; else the answer is relayed as it is.
    bool refuseAnswer(unsigned status) {
      if ((status != 502 && status != 503) || !mayRetry) {
        return false;
      }
      const auto now = Clock::now();
      if (deadline - now < s.shared_.config.connectTimeout) {
        return false;  // too little time left for another member: this answer is the call's
      }
      auto candidate = route.balancer.pick(now, exclude);
      if (!candidate || std::ranges::find(exclude, *candidate) != exclude.end() ||
          !route.balancer.usable(*candidate, now)) {
        return false;
      }
      if (!route.budget.tryWithdraw(now)) {
        s.m_.budgetExhausted.add(s.shard_, route.info->slot);
        return false;
      }
      next = candidate;
      return true;
    }
    TlsStream& stream() { return s.member_.stream(); }
    bool takePooled() { return s.member_.takePooled(route, endpoint); }
    awaitable<error_code> connect() {
      return s.member_.open(route, endpoint, s.handler_.tls(), route.info->name, connectTimeout,
                            s.m_, s.shard_);
    }
    void release(bool reusable) { s.member_.release(route, endpoint, reusable, *s.handler_.tls()); }
  };

  OutboundHandler& handler_;
  const OutboundShared& shared_;
  OutboundMetrics& m_;
  unsigned shard_;
  Clock::time_point start_{};  // the request's first bytes were there
  CallTarget target_;          // whom the request calls, by its Host
  // Tracing, with --zipkin-url only: the call's client span.
  trace::Context span_;
  std::string spanMethod_;
  std::string spanTarget_;
  bool unread_ = false;  // the current request's body is not read whole: linger when closing
  bool firstRequest_ = true;
  bool h2Preface_ = false;          // the connection opened with HTTP/2's preface
  OutboundH2Server* h2_ = nullptr;  // while it speaks HTTP/2
};

}  // namespace

awaitable<void> serveOutbound(OutboundHandler& handler, TcpSocket socket) {
  OutboundSession session(handler, std::move(socket));
  co_await session.run();
}

}  // namespace sidecar
