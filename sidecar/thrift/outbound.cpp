// The outbound Thrift route's handler and its session: frame by frame from the local Thrift
// client, each call to a member picked for it, carried over mTLS, its reply relayed back; when no
// member can take a call, a TApplicationException of our own with the call's name and seqid.
#include "thrift/outbound.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <cctype>
#include <string>
#include <vector>

#include "net/access_log.h"
#include "outbound/member.h"
#include "thrift/frame.h"
#include "thrift/frame_io.h"
#include "thrift/ttwitter.h"
#include "upstream/call_policy.h"

namespace sidecar {

ThriftOutboundMetrics::ThriftOutboundMetrics(prometheus::Registry& r)
    : refused_(&prometheus::BuildCounter()
                    .Name("sidecar_thrift_outbound_frames_refused_total")
                    .Help("Frames from the local Thrift client on a --thrift-route port refused, "
                          "closing its connection, by route and reason: too_large "
                          "(--thrift-max-frame), not_thrift, malformed (not exactly one whole "
                          "message), or bad_request_header (an upgraded client's TTwitter "
                          "RequestHeader could not be read)")
                    .Register(r)),
      probes_(&prometheus::BuildCounter()
                   .Name("sidecar_thrift_outbound_probes_total")
                   .Help("Finagle upgrade probes from the local Thrift client answered by the "
                         "sidecar on a --thrift-route port, by route")
                   .Register(r)),
      upgrades_(&prometheus::BuildCounter()
                     .Name("sidecar_thrift_outbound_upgrades_total")
                     .Help("TTwitter upgrade probes the sidecar sent on new connections to "
                           "members of a --thrift-route, by route and result: upgraded (the "
                           "member answered REPLY; calls carry a RequestHeader) or refused "
                           "(plain framed Thrift)")
                     .Register(r)) {}

ThriftOutboundMetrics::Route ThriftOutboundMetrics::route(const std::string& name) {
  return Route{&refused_->Add({{"route", name}, {"reason", "too_large"}}),
               &refused_->Add({{"route", name}, {"reason", "not_thrift"}}),
               &refused_->Add({{"route", name}, {"reason", "malformed"}}),
               &refused_->Add({{"route", name}, {"reason", "bad_request_header"}}),
               &probes_->Add({{"route", name}}),
               &upgrades_->Add({{"route", name}, {"result", "upgraded"}}),
               &upgrades_->Add({{"route", name}, {"result", "refused"}})};
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kKeptBuffer = 64 * 1024;
// How one attempt on one member ended.
enum class Attempt {
  replied,   // the member's reply is in reply_
  sent,      // a ONEWAY call went out whole
  notSent,   // nothing of the call reached the member (connect, handshake): another may take it
  failed,    // the call went out (or part of it) and no reply of its own came back
  timedOut,  // --outbound-timeout passed
};

// An attempt's end in the call policy's terms (upstream/call_policy.h).
AttemptEnd attemptEnd(Attempt a) {
  switch (a) {
    case Attempt::replied:
    case Attempt::sent:
      return AttemptEnd::answered;
    case Attempt::notSent:
      return AttemptEnd::notSent;
    case Attempt::failed:
      return AttemptEnd::failed;
    case Attempt::timedOut:
      return AttemptEnd::timedOut;
  }
  return AttemptEnd::failed;
}

class ThriftOutboundSession final : public OutboundCallerSession {
 public:
  ThriftOutboundSession(ThriftOutboundHandler& handler, TcpSocket socket)
      : OutboundCallerSession(handler.worker(), std::move(socket)),
        handler_(handler),
        shared_(handler.shared()),
        m_(*handler.shared().metrics),
        shard_(handler.worker().index()) {}

  awaitable<void> run() {
    const auto& name = handler_.config().route.name;
    while (!worker_.draining()) {
      if (!co_await readCall()) {
        break;
      }
      if (localUpgraded_ && !stripLocalHeader()) {
        break;
      }
      const auto header = thrift::parseHeader(std::string_view(frame_).substr(4));
      if (!header || (header->type != thrift::MessageType::call &&
                      header->type != thrift::MessageType::oneway)) {
        handler_.metrics().framesNotThrift->Increment();
        logWithin(handler_.logLimiter(ThriftOutboundLogEvent::badFrame), spdlog::level::info,
                  "event=thrift_not_thrift direction=outbound route={}", name);
        break;
      }
      if (!thrift::holdsOneMessage(std::string_view(frame_).substr(4), *header)) {
        // A second message in the frame would be answered by the member as a second reply,
        // which the next call on that pooled connection would read as its own.
        handler_.metrics().framesMalformed->Increment();
        logWithin(handler_.logLimiter(ThriftOutboundLogEvent::badFrame), spdlog::level::info,
                  "event=thrift_malformed_frame direction=outbound route={} method={} seqid={}",
                  name, methodLogField(header->name), header->seqid);
        if (header->type == thrift::MessageType::call) {
          co_await writeCaller(thrift::exceptionFrame(*header, thrift::AppError::protocolError,
                                                      thrift::kNotOneMessage));
        }
        break;
      }
      if (header->type == thrift::MessageType::call && header->name == thrift::kFinagleProbe) {
        // A Finagle client's upgrade probe, answered here (it costs no member a call): a REPLY,
        // so that the client sends its trace context in a RequestHeader with each call. Our own
        // upgrade toward each member is apart from it. A compact probe is refused: TTwitter's
        // headers are binary.
        handler_.metrics().probes->Increment();
        const bool binary = header->protocol == thrift::Protocol::binary;
        const auto answer = binary
                                ? thrift::ttwitter::probeReplyFrame(*header)
                                : thrift::exceptionFrame(*header, thrift::AppError::unknownMethod,
                                                         "Unknown method " + header->name);
        if (!co_await writeCaller(answer)) {
          break;
        }
        localUpgraded_ = localUpgraded_ || binary;
        continue;
      }
      if (!co_await serveCall(*header)) {
        break;
      }
    }
    error_code ignored;
    caller_.socket().shutdown(TcpSocket::shutdown_send, ignored);
  }

 private:
  // The next whole call into frame_; false when the connection is to close (the client left,
  // stayed idle past --idle-timeout, or sent a frame over --thrift-max-frame).
  awaitable<bool> readCall() {
    caller_.expires_after(shared_.limits.idleTimeout);
    if (frame_.capacity() > kKeptBuffer) {
      std::string().swap(frame_);
    }
    if (reply_.capacity() > kKeptBuffer) {
      std::string().swap(reply_);
    }
    idle_ = true;
    auto ec = co_await thrift::readFramePrefix(caller_, frame_);
    idle_ = false;
    if (ec) {
      co_return false;
    }
    const auto length = thrift::frameLength(frame_);
    const auto max = shared_.config.thriftMaxFrame;
    if (length > max || length == 0) {
      (length ? handler_.metrics().framesTooLarge : handler_.metrics().framesNotThrift)
          ->Increment();
      logWithin(handler_.logLimiter(ThriftOutboundLogEvent::badFrame), spdlog::level::info,
                "event=thrift_frame_refused direction=outbound route={} length={} max={}",
                handler_.config().route.name, length, max);
      co_return false;
    }
    ec = co_await thrift::readFramePayload(
        caller_, frame_, length, [&] { caller_.expires_after(shared_.limits.idleTimeout); });
    co_return !ec;
  }

  // On a connection the local client upgraded: reads and takes out the RequestHeader before its
  // call in frame_, keeping its trace context as our client span's parent. False (counted) when
  // it cannot be read: the connection closes, as on --thrift-listen.
  bool stripLocalHeader() {
    localHeader_ = {};
    const auto payload = std::string_view(frame_).substr(4);
    const auto n = thrift::ttwitter::readRequestHeader(payload, localHeader_);
    if (!n || *n == payload.size()) {
      handler_.metrics().framesBadHeader->Increment();
      logWithin(handler_.logLimiter(ThriftOutboundLogEvent::badFrame), spdlog::level::info,
                "event=thrift_bad_request_header direction=outbound route={}",
                handler_.config().route.name);
      return false;
    }
    thrift::ttwitter::eraseAfterPrefix(frame_, *n);
    return true;
  }

  // The call's context toward members: a child of the local client's when it sent one, else a
  // new trace. Reported as a client span only with tracing on; with it off the ids are made only
  // for an upgraded member (idsWithoutTracer) and still go, so that the member's trace stays
  // joined to the local client's, sampled as the local client said.
  void startSpan() {
    span_ = trace::Context{};
    if (!shared_.tracer) {
      return;
    }
    const auto& in = localHeader_.context;
    span_ = localUpgraded_ && in.valid() ? trace::childOf(shared_.tracer->join(in))
                                         : shared_.tracer->join(trace::Context{});
    spanStartUs_ = trace::nowMicros();
  }

  void idsWithoutTracer() {
    const auto& in = localHeader_.context;
    if (localUpgraded_ && in.valid()) {
      span_ = trace::childOf(in);
    } else {
      span_.traceId = trace::newId();
      span_.spanId = span_.traceId;
    }
  }

  void reportSpan(const thrift::MessageHeader& header, unsigned status,
                  const tcp::endpoint* member) {
    if (!shared_.tracer || !span_.isSampled()) {
      return;
    }
    auto s = trace::makeSpan(trace::Kind::client, span_, header.name, spanStartUs_,
                             trace::nowMicros() - spanStartUs_);
    if (member) {
      s.remoteIp = member->address().to_string();
      s.remotePort = member->port();
    }
    s.tags.emplace_back("thrift.method", trace::tagValue(header.name));
    s.tags.emplace_back("thrift.client_id", handler_.clientId());
    s.tags.emplace_back("route", handler_.config().route.name);
    s.tags.emplace_back("thrift.status", std::to_string(status));
    if (status != 200) {
      s.tags.emplace_back("error", std::to_string(status));
    } else if (replyIsException_) {
      s.tags.emplace_back("error", "exception");
    }
    shared_.tracer->report(std::move(s));
  }

  // Writes a whole frame to the local client; when it upgraded, with an empty ResponseHeader
  // first (the member's response contexts are not passed on).
  awaitable<bool> writeCaller(const std::string& bytes) {
    if (localUpgraded_) {
      std::string framed = bytes;
      thrift::ttwitter::insertAfterPrefix(framed, {&thrift::ttwitter::kEmptyResponseHeader, 1});
      co_return co_await writeRaw(framed);
    }
    co_return co_await writeRaw(bytes);
  }

  awaitable<bool> writeRaw(const std::string& bytes) {
    caller_.expires_after(shared_.limits.idleTimeout);
    auto [ec, n] = co_await asio::async_write(caller_, asio::buffer(bytes), useTuple);
    co_return !ec;
  }

  // Balances one call over the route's members, retrying on another one only while nothing of
  // it was sent, and answers the local client. False when its connection is to close.
  awaitable<bool> serveCall(const thrift::MessageHeader& header) {
    const auto start = Clock::now();
    const auto& name = handler_.config().route.name;
    auto* route = handler_.route();
    if (route && route->addr->isPending()) {
      co_await route->awaitResolution(worker_.ioc(), shared_.config.resolveTimeout);
    }
    if (!route || !route->addr->isBound()) {
      co_return co_await answerOurs(route, header, 503, start, nullptr,
                                    "route " + name + " is not resolved yet");
    }
    const std::size_t slot = route->info->slot;
    startSpan();
    replyIsException_ = false;
    CallAttempts call(route->budget, start, shared_.config.timeout);
    tcp::endpoint member;
    Attempt outcome = Attempt::notSent;
    for (;;) {
      const auto now = Clock::now();
      auto picked = call.pick(route->balancer, now);
      if (!picked && call.exhausted()) {
        break;  // every member it could pick has failed this call already
      }
      if (!picked) {
        m_.noMembers.add(shard_, slot);
        logWithin(handler_.logLimiter(ThriftOutboundLogEvent::noMembers), spdlog::level::warn,
                  "event=no_members direction=outbound route={}", name);
        co_return co_await answerOurs(route, header, 503, start, nullptr,
                                      "no usable member of route " + name);
      }
      member = *picked;
      call.begin(member);
      route->balancer.started(member, now);
      outcome = co_await attempt(*route, member, header, call.deadline());
      const auto done = Clock::now();
      route->balancer.finished(member, done, done - now,
                               outcome == Attempt::replied || outcome == Attempt::sent);
      const auto step = call.after(attemptEnd(outcome), route->balancer.size(), done);
      if (step == CallStep::done) {
        break;
      }
      if (step == CallStep::outOfTime) {
        outcome = Attempt::timedOut;  // connects that failed slowly used the call's time up
        break;
      }
      if (step == CallStep::outOfBudget) {
        m_.budgetExhausted.add(shard_, slot);
        why_ = "the retry budget is exhausted; last: " + why_;
        break;
      }
      logWithin(handler_.logLimiter(ThriftOutboundLogEvent::memberFailed), spdlog::level::warn,
                "event=member_failed direction=outbound route={} member={} reason=\"{}\"", name,
                endpointText(member), why_);
      m_.retries.add(shard_, slot);
    }
    switch (outcome) {
      case Attempt::replied:
        finish(*route, 200, start, &member, header);
        co_return co_await writeCaller(reply_);
      case Attempt::sent:
        finish(*route, 200, start, &member, header);
        co_return true;
      case Attempt::timedOut:
        co_return co_await answerOurs(route, header, 504, start, &member,
                                      "route " + name + ": no reply within --outbound-timeout (" +
                                          endpointText(member) + ")");
      default:
        logWithin(handler_.logLimiter(ThriftOutboundLogEvent::memberFailed), spdlog::level::warn,
                  "event=member_failed direction=outbound route={} member={} reason=\"{}\"", name,
                  endpointText(member), why_);
        co_return co_await answerOurs(
            route, header, 502, start, &member,
            "route " + name + ": member " + endpointText(member) + " failed: " + why_);
    }
  }

  // The call answered by us: an INTERNAL_ERROR with its name and seqid (a ONEWAY call gets
  // nothing, as from a member), counted under status as an HTTP call of the route would be.
  awaitable<bool> answerOurs(OutboundHandler::Route* route, const thrift::MessageHeader& header,
                             unsigned status, Clock::time_point start, const tcp::endpoint* member,
                             std::string why) {
    if (route) {
      finish(*route, status, start, member, header);
    }
    if (header.type == thrift::MessageType::oneway) {
      co_return true;
    }
    co_return co_await writeCaller(
        thrift::exceptionFrame(header, thrift::AppError::internalError, why));
  }

  // One try of the call on member: a pooled connection or a new one, the call, then its reply.
  awaitable<Attempt> attempt(OutboundHandler::Route& route, const tcp::endpoint& member,
                             const thrift::MessageHeader& header, Clock::time_point deadline) {
    if (!member_.takePooled(route, member)) {
      if (auto ec = co_await connect(route, member, deadline)) {
        why_ = ec.message();
        co_return ec == boost::beast::error::timeout&& Clock::now() >= deadline ? Attempt::timedOut
                                                                                : Attempt::notSent;
      }
      if (auto ec = co_await upgrade(deadline)) {
        // Nothing of the call went out: another member may take it.
        release(route, member, false);
        why_ = "the TTwitter upgrade probe failed: " + ec.message();
        co_return ec == boost::beast::error::timeout ? Attempt::timedOut : Attempt::notSent;
      }
    }
    auto& tls = member_.stream();
    tls.lowest_layer().expires_at(deadline);
    const bool upgraded = handler_.upgraded(tls.lowest_layer().socket().native_handle());
    if (upgraded) {
      withHeader();
    }
    auto [wec, wn] =
        co_await asio::async_write(tls, asio::buffer(upgraded ? sent_ : frame_), useTuple);
    if (wec) {
      co_return broken(route, member, wec, "sending the call");
    }
    if (header.type == thrift::MessageType::oneway) {
      // Not pooled, as inbound: an answer to a ONEWAY-typed message would be read as the next
      // call's reply.
      release(route, member, false);
      co_return Attempt::sent;
    }
    if (auto ec = co_await thrift::readFramePrefix(tls, reply_)) {
      co_return broken(route, member, ec, "waiting for the reply");
    }
    const auto length = thrift::frameLength(reply_);
    if (length == 0 || length > shared_.config.thriftMaxFrame) {
      release(route, member, false);
      why_ = "its reply frame of " + std::to_string(length) +
             " bytes is over --thrift-max-frame or empty";
      co_return Attempt::failed;
    }
    if (auto ec = co_await thrift::readFramePayload(tls, reply_, length, [] {})) {
      co_return broken(route, member, ec, "reading the reply");
    }
    if (upgraded) {
      const auto n = thrift::ttwitter::responseHeaderSize(std::string_view(reply_).substr(4));
      if (!n) {
        release(route, member, false);
        why_ = "its reply's TTwitter ResponseHeader is not whole";
        co_return Attempt::failed;
      }
      thrift::ttwitter::eraseAfterPrefix(reply_, *n);
    }
    // The reply must be this call's: a connection out of step with its calls is closed, and
    // the client told, never handed another's reply.
    const auto type = thrift::replyType(std::string_view(reply_).substr(4), header);
    if (!type) {
      release(route, member, false);
      why_ = "its reply is not this call's";
      co_return Attempt::failed;
    }
    replyIsException_ = *type == thrift::MessageType::exception;
    release(route, member, true);
    co_return Attempt::replied;
  }

  // On a new connection to a member: sends Finagle's probe and reads its answer, as a Finagle
  // client does (upgraded unless the answer is an EXCEPTION), and remembers it for the
  // connection. An error when the connection failed (the caller closes it).
  awaitable<error_code> upgrade(Clock::time_point deadline) {
    auto& tls = member_.stream();
    tls.lowest_layer().expires_at(deadline);
    const std::int32_t seqid = static_cast<std::int32_t>(trace::newId());
    const auto probe = thrift::ttwitter::probeFrame(seqid);
    if (auto [ec, n] = co_await asio::async_write(tls, asio::buffer(probe), useTuple); ec) {
      co_return ec;
    }
    std::string answer;
    if (auto ec = co_await thrift::readFramePrefix(tls, answer)) {
      co_return ec;
    }
    const auto length = thrift::frameLength(answer);
    if (length == 0 || length > kKeptBuffer) {
      co_return error_code(asio::error::message_size);
    }
    if (auto ec = co_await thrift::readFramePayload(tls, answer, length, [] {})) {
      co_return ec;
    }
    auto call = thrift::parseHeader(std::string_view(probe).substr(4));
    const auto type = thrift::replyType(std::string_view(answer).substr(4), *call);
    if (!type) {
      co_return error_code(asio::error::invalid_argument);  // not the probe's answer
    }
    const bool upgraded = *type != thrift::MessageType::exception;
    (upgraded ? handler_.metrics().upgraded : handler_.metrics().upgradeRefused)->Increment();
    handler_.setUpgraded(tls.lowest_layer().socket().native_handle(), upgraded);
    co_return error_code{};
  }

  // sent_: frame_'s call with our RequestHeader before it (span_'s ids, our client id, and the
  // local client's contexts, destination and delegations when it sent them).
  void withHeader() {
    if (!span_.valid()) {
      idsWithoutTracer();
    }
    thrift::ttwitter::RequestHeader h;
    h.context = span_;
    h.clientId = handler_.clientId();
    if (localUpgraded_) {
      h.contexts = localHeader_.contexts;
      h.delegations = localHeader_.delegations;
      h.dest = localHeader_.dest;
    }
    sent_.assign(4, '\0');
    thrift::ttwitter::writeRequestHeader(sent_, h);
    sent_.append(frame_, 4);
    thrift::ttwitter::eraseAfterPrefix(sent_, 0);  // (sets the length)
  }

  Attempt broken(OutboundHandler::Route& route, const tcp::endpoint& member, error_code ec,
                 const char* during) {
    release(route, member, false);
    why_ = std::string(during) + ": " + ec.message();
    return ec == boost::beast::error::timeout ? Attempt::timedOut : Attempt::failed;
  }

  // A new mTLS connection to member, resuming the route's session with it when one is kept;
  // handshake failures counted by reason, as the HTTP routes' are.
  awaitable<error_code> connect(OutboundHandler::Route& route, const tcp::endpoint& member,
                                Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<Duration>(deadline - Clock::now());
    if (left <= Duration::zero()) {
      co_return error_code(boost::beast::error::timeout);
    }
    co_return co_await member_.open(route, member, handler_.tls(), handler_.config().serverName,
                                    std::min(shared_.config.connectTimeout, left), m_, shard_);
  }

  // Done with the member's connection (the rules every outbound route shares).
  void release(OutboundHandler::Route& route, const tcp::endpoint& member, bool reusable) {
    member_.release(route, member, reusable, *handler_.tls());
  }

  void finish(OutboundHandler::Route& route, unsigned status, Clock::time_point start,
              const tcp::endpoint* member, const thrift::MessageHeader& header) {
    reportSpan(header, status, member);
    const std::size_t slot = route.info->slot;
    m_.requests.add(shard_, OutboundMetrics::requestSeries(slot, status));
    const auto elapsed = Clock::now() - start;
    m_.requestDuration.observe(shard_, slot, std::chrono::duration<double>(elapsed).count());
    if (auto* log = worker_.accessLog()) {
      log->line(
          "direction=outbound protocol=thrift route={} member={} method={} seqid={} "
          "status={} req_bytes={} resp_bytes={} duration_us={}",
          route.info->name, member ? endpointText(*member) : std::string("-"),
          methodLogField(header.name), header.seqid, status, frame_.size(),
          status == 200 ? reply_.size() : 0,
          static_cast<std::int64_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()));
    }
  }

  ThriftOutboundHandler& handler_;
  const OutboundShared& shared_;
  OutboundMetrics& m_;
  unsigned shard_;
  std::string frame_;  // the call, length prefix included
  std::string reply_;  // the member's reply, length prefix included
  std::string why_;    // why the last attempt failed
  // TTwitter: whether the local client upgraded (its probe answered REPLY) and its last call's
  // header; the call as sent to an upgraded member; the call's client span.
  bool localUpgraded_ = false;
  thrift::ttwitter::RequestHeader localHeader_;
  std::string sent_;
  trace::Context span_;
  std::int64_t spanStartUs_ = 0;
  bool replyIsException_ = false;
};

awaitable<void> serveThriftOutbound(ThriftOutboundHandler& handler, TcpSocket socket) {
  ThriftOutboundSession session(handler, std::move(socket));
  co_await session.run();
}

}  // namespace

ThriftOutboundHandler::ThriftOutboundHandler(Worker& worker, const OutboundShared& shared,
                                             ThriftOutboundMetrics& metrics,
                                             const ThriftRouteConfig& config,
                                             const std::string& clientId,
                                             std::shared_ptr<asio::ssl::context> tls)
    : worker_(worker),
      shared_(shared),
      config_(config),
      clientId_(clientId),
      metrics_(metrics.route(config.route.name)),
      tls_(std::move(tls)) {}

void ThriftOutboundHandler::accepted(TcpSocket socket) {
  asio::co_spawn(worker_.ioc(), serveThriftOutbound(*this, std::move(socket)), asio::detached);
}

void ThriftOutboundHandler::setRoute(std::shared_ptr<const RouteInfo> info,
                                     std::shared_ptr<const Addr> addr) {
  if (info->name != config_.route.name) {
    return;
  }
  asio::post(worker_.ioc(), [this, info = std::move(info), addr = std::move(addr)] {
    if (!route_) {
      route_.emplace(info, addr, OutboundHandler::Route::seed(info->name, worker_.index()),
                     PoolSettings{shared_.config.idleTimeout, shared_.limits.upstreamMaxIdle,
                                  nullptr, nullptr, nullptr, nullptr});
    }
    route_->update(info, addr);
  });
}

void ThriftOutboundHandler::setTls(std::shared_ptr<asio::ssl::context> ctx) {
  asio::post(worker_.ioc(), [this, ctx = std::move(ctx)]() mutable {
    tls_ = std::move(ctx);
    if (route_) {
      route_->forgetTls();
    }
  });
}

void ThriftOutboundHandler::clear() {
  if (route_) {
    route_->pool.clear();
  }
}

void ThriftOutboundHandler::tick() {
  if (route_) {
    route_->tick(worker_.index(), shared_);
  }
}

}  // namespace sidecar
