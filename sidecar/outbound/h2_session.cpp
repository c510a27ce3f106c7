// The local service's HTTP/2 calls: each stream routed by :authority and balanced on its own.
#include "outbound/h2_session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <unordered_map>

#include "core/text.h"
#include "h2/grpc.h"
#include "h2/http1_relay.h"
#include "h2/proxy_server.h"
#include "net/access_log.h"
#include "outbound/handler.h"
#include "outbound/member.h"
#include "trace/b3.h"
#include "upstream/call_policy.h"

namespace sidecar {

namespace {

using Stream = h2::ProxyStream;
using Clock = std::chrono::steady_clock;

// A member's end of an HTTP/1.1 exchange (h2/http1_relay.h), for a member that chose HTTP/1.1
// when offered h2: the route's pooled connections to it, else a new one, by the rules every
// outbound protocol shares (outbound/member.h).
struct MemberH1Link final : h2::Http1Leg {
  using stream_type = TlsStream;
  // A member may have read the request before its connection broke: the call policy decides
  // whether another member gets it.
  static constexpr bool kReplayStale = false;
  MemberH1Link(OutboundHandler& h, std::shared_ptr<OutboundHandler::Route> r, tcp::endpoint m,
               std::optional<TlsStream> handedOver, Duration callLeft)
      : handler(h),
        route(std::move(r)),
        member(m),
        handed(std::move(handedOver)),
        left(callLeft),
        conn(h.worker().ioc().get_executor()) {}
  TlsStream& stream() { return conn.stream(); }
  bool takePooled() {
    if (handed) {
      conn.adopt(std::move(*handed));
      handed.reset();
      return true;
    }
    return conn.takePooled(*route, member);
  }
  awaitable<error_code> connect() {
    const auto& shared = handler.shared();
    return conn.open(*route, member, handler.tls(), route->info->name,
                     std::min(shared.config.connectTimeout, left), *shared.metrics,
                     handler.worker().index());
  }
  void release(bool reusable) { conn.release(*route, member, reusable, *handler.tls()); }
  void cancel() override { conn.cancel(); }
  void expireIfDue(Clock::time_point now) override { conn.expireIfDue(now); }

  OutboundHandler& handler;
  std::shared_ptr<OutboundHandler::Route> route;
  tcp::endpoint member;
  std::optional<TlsStream> handed;  // the connection whose handshake found HTTP/1.1
  Duration left;                    // of the call's time
  MemberConnection conn;
};

}  // namespace

bool looksLikeH2Preface(std::string_view firstBytes) {
  constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  const auto n = std::min(firstBytes.size(), kPreface.size());
  return n >= 3 && firstBytes.substr(0, n) == kPreface.substr(0, n);
}

class OutboundH2Server::Impl final : public h2::ProxyServer {
 public:
  explicit Impl(OutboundHandler& handler)
      : h2::ProxyServer(
            handler.worker().ioc().get_executor(), h2::Settings{},
            Limits{handler.shared().limits.maxHeadBytes, handler.shared().config.timeout}),
        handler_(handler),
        shared_(handler.shared()),
        m_(*shared_.metrics),
        shard_(handler.worker().index()) {}
  // Streams still open (the worker stops mid-connection) are finished while this is whole.
  ~Impl() override { closeAll(); }

  // One call: its route, the members it went to, the one it is on.
  struct Call {
    Call(std::shared_ptr<OutboundHandler::Route> r, Clock::time_point now, Duration timeout)
        : route(std::move(r)), attempts(route->budget, now, timeout) {}
    std::shared_ptr<OutboundHandler::Route> route;
    CallAttempts attempts;
    std::optional<tcp::endpoint> member;  // the attempt under way
    Clock::time_point attemptStart{};
  };

  void dispatch(Stream& s) override;
  void finish(Stream& s) override;
  void countLocalReply(unsigned) override {}
  void upFailed(Stream& s, UpEnd end) override;
  // The member's head: the attempt's time for the balancer (EWMA) is the time to it, however
  // long a streaming answer goes on after.
  void answerBegan(Stream& s) override {
    if (auto it = calls_.find(&s); it != calls_.end()) {
      attemptEnded(*it->second, s.status < 500);
      it->second->member.reset();
    }
  }
  Duration idleTimeout() const { return shared_.limits.idleTimeout; }

  void sweepAll(Clock::time_point now) {
    handler_.sweepH2(now);
    if (handler_.worker().draining() && !goawayForDrain_) {
      goawayForDrain_ = true;
      goAway();
    }
    sweep(now);
  }

 private:
  awaitable<void> awaitRoute(std::shared_ptr<Stream> s, std::shared_ptr<OutboundHandler::Route> r);
  void callRoute(Stream& s, std::shared_ptr<OutboundHandler::Route> route);
  void attempt(Stream& s, Call& call);
  // The attempt's member failed it: another member (the policy allowing), else our answer.
  void nextAttempt(Stream& s, Call& call, AttemptEnd end, std::string_view reason);
  awaitable<void> http1Attempt(std::shared_ptr<Stream> s, std::shared_ptr<OutboundHandler::Route> r,
                               tcp::endpoint member, Duration timeout,
                               std::optional<TlsStream> handed = std::nullopt);
  boost::beast::http::request_header<> memberHeadHttp1(const Stream& s) const;
  void attemptEnded(Call& call, bool answered);
  h2::Fields memberHead(const Stream& s) const;
  void traceCall(Stream& s);
  void reportSpan(Stream& s, const Call* call, double seconds);
  void answer(Stream& s, unsigned status, std::string body) { localReply(s, status, body); }

  OutboundHandler& handler_;
  const OutboundShared& shared_;
  OutboundMetrics& m_;
  unsigned shard_;
  std::unordered_map<const Stream*, std::unique_ptr<Call>> calls_;
  bool goawayForDrain_ = false;
};

void OutboundH2Server::Impl::dispatch(Stream& s) {
  if (s.headTooLarge) {
    return localReply(s, 431);
  }
  if (s.method == "CONNECT" || s.path.empty() || s.path[0] != '/') {
    return localReply(s, 400);
  }
  std::string_view host = s.authority;
  for (const auto& f : s.fields) {
    if (host.empty() && f.name == "host") {
      host = f.value;
    }
  }
  if (s.authority.empty()) {
    s.authority = host;  // the member's :authority, from the host field
  }
  if (host.empty()) {
    m_.badHost->Increment();
    return answer(s, 400, "missing :authority: it names the service to call\n");
  }
  const bool address = hostIsAddress(host);
  const std::string name = address ? addressName(host) : serviceName(host);
  if (name.empty()) {
    m_.badHost->Increment();
    return answer(s, 400,
                  "authority is not a service name (letters, digits, '.', '-', '_', no empty "
                  "label)\n");
  }
  auto route = handler_.route(name, !address);
  if (!route) {
    m_.noRoute->Increment();
    return answer(s, 404, "no route to service " + name + "\n");
  }
  startClock(s);
  if (route->addr->isPending()) {
    asio::co_spawn(handler_.worker().ioc(), awaitRoute(hold(s), std::move(route)), asio::detached);
    return;
  }
  callRoute(s, std::move(route));
}

// A route made on first use waits for its first members (--resolve-timeout), as HTTP/1.1 calls do.
awaitable<void> OutboundH2Server::Impl::awaitRoute(std::shared_ptr<Stream> s,
                                                   std::shared_ptr<OutboundHandler::Route> r) {
  if (!s->server) {
    co_return;  // the stream (and maybe its connection, this) ended before this ran
  }
  auto& shared = shared_;
  co_await r->awaitResolution(handler_.worker().ioc(), shared.config.resolveTimeout);
  if (s->server && !s->responseStarted) {
    callRoute(*s, std::move(r));
  }
}

void OutboundH2Server::Impl::callRoute(Stream& s, std::shared_ptr<OutboundHandler::Route> route) {
  const auto& name = route->info->name;
  if (!route->addr->isBound()) {
    return answer(s, 503, "service " + name + " is not resolved yet\n");
  }
  ++route->calls;
  s.slot = route->info->slot;
  if (shared_.tracer) [[unlikely]] {
    traceCall(s);
  }
  auto& call = *(
      calls_[&s] = std::make_unique<Call>(std::move(route), Clock::now(), shared_.config.timeout));
  attempt(s, call);
}

// One attempt: a member picked for this stream alone, and the stream opened on one of its
// connections.
void OutboundH2Server::Impl::attempt(Stream& s, Call& call) {
  auto& route = *call.route;
  const auto now = Clock::now();
  std::optional<tcp::endpoint> picked;
  if (s.grpc && !route.http1Members.empty()) [[unlikely]] {
    // gRPC needs HTTP/2 to the member (its status comes in trailers): members known to speak only
    // HTTP/1.1 are passed over, neither tried nor failed, since they serve the route's other calls.
    std::vector<tcp::endpoint> http1Only;
    for (const auto& [member, until] : route.http1Members) {
      if (now < until) {
        http1Only.push_back(member);
      }
    }
    picked = call.attempts.pick(route.balancer, now, http1Only);
  } else {
    picked = call.attempts.pick(route.balancer, now);
  }
  if (!picked) {
    if (!call.attempts.exhausted()) {
      m_.noMembers.add(shard_, s.slot);
      logWithin(handler_.logLimiter(OutboundLogEvent::noMembers), spdlog::level::warn,
                "event=no_members direction=outbound route={} protocol=h2", route.info->name);
      return answer(s, 503, "no usable member of service " + route.info->name + "\n");
    }
    return answer(s, 502, "service " + route.info->name + " is unavailable\n");
  }
  call.attempts.begin(*picked);
  route.balancer.started(*picked, now);
  call.member = *picked;
  call.attemptStart = now;
  if (route.speaksHttp1(*picked, now)) {
    asio::co_spawn(handler_.worker().ioc(),
                   http1Attempt(hold(s), call.route, *picked, call.attempts.left(now)),
                   asio::detached);
    return;
  }
  auto& pool = route.h2Pool(*picked, handler_);
  if (!bind(s, pool.pick(), memberHead(s))) {
    upFailed(s, UpEnd::notSent);
  }
}

// One attempt over HTTP/1.1, to a member that does not speak HTTP/2. Its end goes to the call
// policy as an HTTP/1.1 call's would: a connection that never came is not sent; one that broke
// before an answer may go to another member when the request is idempotent and held whole.
awaitable<void> OutboundH2Server::Impl::http1Attempt(std::shared_ptr<Stream> sp,
                                                     std::shared_ptr<OutboundHandler::Route> r,
                                                     tcp::endpoint member, Duration timeout,
                                                     std::optional<TlsStream> handed) {
  auto& s = *sp;
  auto& handler = handler_;  // the worker's: outlives this session
  MemberH1Link link(handler, std::move(r), member, std::move(handed), timeout);
  LazyRelayBuffer relay(handler.worker());
  const auto end =
      co_await h2::relayOverHttp1(s, link, memberHeadHttp1(s), timeout, nullptr, relay);
  using Kind = h2::Http1End::Kind;
  if (end.kind == Kind::answered || end.kind == Kind::cancelled || !s.server) {
    co_return;  // answered (answerBegan() told the balancer), or nobody is waiting
  }
  if (end.kind == Kind::upstreamBody) {
    logWithin(handler.logLimiter(OutboundLogEvent::memberFailed), spdlog::level::warn,
              "event=member_failed direction=outbound route={} member={} protocol=h2 "
              "reason=\"{}\"",
              link.route->info->name, endpointText(member), end.ec.message());
    s.server->reset(s.id, NGHTTP2_INTERNAL_ERROR);
    co_return;
  }
  // s.server alive: so are this session and the call (finish() has not run).
  auto& self = static_cast<Impl&>(*s.server);
  auto it = self.calls_.find(&s);
  if (it == self.calls_.end()) {
    co_return;
  }
  AttemptEnd attemptEnd = AttemptEnd::failed;
  if (end.kind == Kind::connect) {
    attemptEnd = AttemptEnd::notSent;
  } else if (end.ec == boost::beast::error::timeout) {
    attemptEnd = AttemptEnd::timedOut;
  } else if (end.rewindable &&
             exchange_detail::isIdempotent(boost::beast::http::string_to_verb(s.method))) {
    attemptEnd = AttemptEnd::closedEarly;
  }
  self.nextAttempt(s, *it->second, attemptEnd, end.ec.message());
}

void OutboundH2Server::Impl::attemptEnded(Call& call, bool answered) {
  if (!call.member) {
    return;
  }
  const auto now = Clock::now();
  call.route->balancer.finished(*call.member, now, now - call.attemptStart, answered);
  call.member.reset();
}

// The member's stream ended with nothing of its answer. A stream the member refused on a
// connection that still takes streams (sent before its SETTINGS said how many it takes, say) goes
// to it again, kMaxResends times at most; else another member takes the call when nothing of it was
// taken (a refused stream, a connection that never came or goes away), the policy allows and the
// budget has room; else our answer.
void OutboundH2Server::Impl::upFailed(Stream& s, UpEnd end) {
  auto it = calls_.find(&s);
  if (it == calls_.end()) {
    return localReply(s, 502);
  }
  auto& call = *it->second;
  if (end == UpEnd::refused && call.member && s.resends < kMaxResends) {
    ++s.resends;
    if (resend(s, call.route->h2Pool(*call.member, handler_).pick())) {
      m_.retries.add(shard_, s.slot);
      return;
    }
  }
  auto* pool = call.member ? call.route->refusingH2(*call.member) : nullptr;
  if (end == UpEnd::notSent && pool) {
    // The member chose HTTP/1.1 when offered h2: the same attempt goes to it over HTTP/1.1 (its
    // connection handed over already), and so do later ones for a while; a gRPC call goes to
    // another member.
    const auto now = Clock::now();
    call.route->http1Members[*call.member] = now + OutboundHandler::Route::kHttp1Recheck;
    if (s.grpc) {
      call.route->balancer.passedOver(*call.member, now);
      call.member.reset();
      call.attempts.unbegin();  // not an attempt: passed over, as it will be from now on
      return attempt(s, call);  // to a member that speaks HTTP/2, if there is one
    }
    asio::co_spawn(
        handler_.worker().ioc(),
        http1Attempt(hold(s), call.route, *call.member, call.attempts.left(now), pool->takeHttp1()),
        asio::detached);
    return;
  }
  nextAttempt(s, call, end == UpEnd::failed ? AttemptEnd::failed : AttemptEnd::notSent,
              "stream refused");
}

void OutboundH2Server::Impl::nextAttempt(Stream& s, Call& call, AttemptEnd end,
                                         std::string_view reason) {
  const auto member = call.member.value_or(tcp::endpoint{});
  attemptEnded(call, false);
  const auto& name = call.route->info->name;
  const auto step = end == AttemptEnd::timedOut
                        ? CallStep::outOfTime
                        : call.attempts.after(end, call.route->balancer.size(), Clock::now());
  if (step == CallStep::next) {
    logWithin(handler_.logLimiter(OutboundLogEvent::memberFailed), spdlog::level::warn,
              "event=member_failed direction=outbound route={} member={} protocol=h2 "
              "reason=\"{}\"",
              name, endpointText(member), reason);
    m_.retries.add(shard_, s.slot);
    return attempt(s, call);
  }
  if (step == CallStep::outOfBudget) {
    m_.budgetExhausted.add(shard_, s.slot);
  }
  answer(s, step == CallStep::outOfTime ? 504 : 502,
         "service " + name + (step == CallStep::outOfTime ? " timed out\n" : " is unavailable\n"));
}

// The call's client span, as an HTTP/1.1 call's (docs/tracing.md): a child of the local
// service's span when its B3 fields came (replaced by ours; a malformed one dropped and counted),
// else a new trace. Every attempt carries it.
void OutboundH2Server::Impl::traceCall(Stream& s) {
  namespace http = boost::beast::http;
  auto& tracer = *shared_.tracer;
  const auto isB3 = [](const h2::Field& f) {
    return f.name == "b3" || f.name.starts_with("x-b3-");
  };
  http::fields in;
  for (const auto& f : s.fields) {
    if (isB3(f)) {
      in.insert(f.name, f.value);
    }
  }
  const auto b3 = trace::readB3(in);
  if (b3.malformed) {
    tracer.metrics().b3Malformed->Increment();
    logWithin(handler_.logLimiter(OutboundLogEvent::badRequest), spdlog::level::info,
              "event=b3_malformed direction=outbound protocol=h2");
  }
  std::erase_if(s.fields, isB3);
  const auto context = tracer.join(b3.context);
  s.span = b3.context.valid() ? trace::childOf(context) : context;
  http::fields out;
  trace::writeB3(out, s.span);
  for (const auto& f : out) {
    s.fields.push_back({lower(f.name_string()), std::string(f.value())});
  }
}

void OutboundH2Server::Impl::reportSpan(Stream& s, const Call* call, double seconds) {
  const auto duration = static_cast<std::int64_t>(seconds * 1e6);
  auto span = trace::httpSpan(trace::Kind::client, s.span, s.method, s.path, s.status,
                              trace::nowMicros() - duration, duration);
  if (call && !call->attempts.tried().empty()) {
    const auto& member = call->attempts.tried().back();
    span.remoteIp = member.address().to_string();
    span.remotePort = member.port();
  }
  if (call) {
    span.tags.emplace_back("sidecar.route", call->route->info->name);
  }
  span.tags.emplace_back("http.protocol", "h2");
  shared_.tracer->report(std::move(span));
}

// The request as the member gets it: the local service's fields but the connection-specific
// ones and any X-Forwarded-Client-Cert (the member's sidecar sets its own from our certificate).
h2::Fields OutboundH2Server::Impl::memberHead(const Stream& s) const {
  h2::Fields out;
  out.reserve(5 + s.fields.size());
  out.push_back({":method", s.method});
  out.push_back({":scheme", "https"});
  out.push_back({":authority", s.authority});
  out.push_back({":path", s.path});
  for (const auto& f : s.fields) {
    if (h2::connectionSpecific(f.name) || f.name == "host" || f.name == "x-forwarded-client-cert") {
      continue;
    }
    out.push_back(f);
  }
  if (s.grpc) {
    out.push_back({"te", "trailers"});
  }
  return out;
}

// The same request as HTTP/1.1 (a member that does not speak HTTP/2): :authority as Host, the
// cookie fields one again, the rest as memberHead() has them.
boost::beast::http::request_header<> OutboundH2Server::Impl::memberHeadHttp1(
    const Stream& s) const {
  const auto skip = [](const std::string& name) {
    return h2::connectionSpecific(name) || name == "host" || name == "x-forwarded-client-cert";
  };
  return h2::http1RequestHead(s, skip, s.authority);
}

// Counts the call and writes its access-log line, once, when the local service's stream closes.
void OutboundH2Server::Impl::finish(Stream& s) {
  auto it = calls_.find(&s);
  std::unique_ptr<Call> call;
  if (it != calls_.end()) {
    call = std::move(it->second);
    calls_.erase(it);
    attemptEnded(*call, s.responseStarted && !s.answeredLocally && s.status < 500);
  }
  if (!s.responseStarted) {
    return;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - s.start).count();
  if (shared_.tracer && s.span.isSampled()) [[unlikely]] {
    reportSpan(s, call.get(), seconds);
  }
  if (call) {
    m_.requests.add(shard_, OutboundMetrics::requestSeries(s.slot, s.status));
    m_.requestDuration.observe(shard_, s.slot, seconds);
  }
  if (s.grpc && !s.grpcStatus) {
    s.grpcStatus = h2::grpcStatusOf(s.response.trailers);  // not in the head: in the trailers
  }
  if (s.grpc && call) {
    // The method as "package.Service/Method", the path's leading '/' left out.
    const std::string_view method = std::string_view(s.path).substr(s.path.empty() ? 0 : 1);
    m_.grpc.calls.add(shard_,
                      GrpcMethodMetrics::series(handler_.grpcMethods().slotOf(method),
                                                GrpcMethodMetrics::statusIndex(s.grpcStatus)));
  }
  if (auto* log = handler_.worker().accessLog()) {
    const auto* member =
        call && !call->attempts.tried().empty() ? &call->attempts.tried().back() : nullptr;
    log->line(
        "direction=outbound route={} member={} status={} req_bytes={} resp_bytes={} "
        "duration_us={} protocol=h2{}{}",
        call ? call->route->info->name : std::string("-"),
        member ? endpointText(*member) : std::string("-"), s.status, s.request.total(),
        s.responseBytes, static_cast<int64_t>(seconds * 1e6), s.grpc ? " grpc_status=" : "",
        s.grpc ? (s.grpcStatus ? std::to_string(*s.grpcStatus) : std::string("-")) : std::string());
  }
}

OutboundH2Server::OutboundH2Server(OutboundHandler& handler)
    : impl_(std::make_unique<Impl>(handler)) {}

OutboundH2Server::~OutboundH2Server() = default;

awaitable<void> OutboundH2Server::run(DeadlineSocket& caller) {
  const auto idle = impl_->idleTimeout();
  co_await impl_->run(caller, idle, idle);
}

void OutboundH2Server::sweep(Clock::time_point now) { impl_->sweepAll(now); }

bool OutboundH2Server::idle() const { return impl_->idle(); }

}  // namespace sidecar
