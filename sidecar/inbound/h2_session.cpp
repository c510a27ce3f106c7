// A caller's HTTP/2 connection: each stream one request to the local service.
#include "inbound/h2_session.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <unordered_map>

#include "h2/client_pool.h"
#include "h2/grpc.h"
#include "h2/pipe.h"
#include "h2/session.h"
#include "http/local_reply.h"
#include "http/relay.h"
#include "http/rewrite.h"
#include "inbound/handler.h"
#include "net/access_log.h"
#include "upstream/connector.h"

namespace sidecar {

namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

namespace {

// An HTTP/1.1 answer's fields that mean nothing (or are forbidden) in HTTP/2 (RFC 9113 8.2.2).
bool connectionSpecific(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade" || name == "te";
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

constexpr auto kStreamIdle = std::chrono::minutes(5);

}  // namespace

class InboundH2Server::Impl final : public h2::Session {
 public:
  struct Stream;

  Impl(InboundHandler& handler, H2Caller caller)
      : h2::Session(Role::server, handler.worker().ioc().get_executor(), handler.shared().h2),
        handler_(handler),
        shared_(handler.shared()),
        m_(*shared_.metrics),
        shard_(handler.worker().index()),
        caller_(std::move(caller)) {}

  // Streams still open (the worker stops mid-connection) are told before streams_ goes.
  ~Impl() override { closeAll(); }

  h2::StreamEnd* streamOpened(std::int32_t id) override;

  void sweep(Clock::time_point now);
  bool idle() const { return streams_.empty(); }
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

  // The streams' steps, as each Stream calls them.
  void dispatch(Stream& s);
  void localReply(Stream& s, unsigned status);
  void startResponse(Stream& s, const h2::Fields& head, bool endStream);
  void streamClosed(Stream& s, std::uint32_t error);
  void finish(Stream& s);
  void cancelUpstream(Stream& s);
  awaitable<void> http1Exchange(std::shared_ptr<Stream> s);
  h2::Fields upstreamHead(Stream& s, http::request_header<>& head);
  http::request_header<> forwardedHead(Stream& s);

  InboundHandler& handler_;
  const InboundShared& shared_;
  InboundMetrics& m_;
  unsigned shard_;
  H2Caller caller_;
  std::unordered_map<std::int32_t, std::shared_ptr<Stream>> streams_;
  bool goawayForDrain_ = false;
};

// One stream: the caller's end (down) and, over h2c, the local service's (up).
struct InboundH2Server::Impl::Stream final : std::enable_shared_from_this<Stream> {
  struct Down final : h2::StreamEnd {
    Stream& s;
    explicit Down(Stream& st) : s(st) {}
    void header(std::string_view name, std::string_view value) override {
      s.headBytes += name.size() + value.size() + 32;
      if (s.headBytes > s.server->shared_.limits.maxHeadBytes) {
        s.headTooLarge = true;
        return;
      }
      if (!s.headEnded) {
        if (name == ":method") {
          s.method = value;
        } else if (name == ":path") {
          s.path = value;
        } else if (name == ":authority") {
          s.authority = value;
        } else if (name == "content-type") {
          s.contentType = value;
        } else if (name == "grpc-timeout") {
          s.grpcTimeout = value;
        }
        if (name.empty() || name[0] != ':') {
          s.fields.push_back({std::string(name), std::string(value)});
        }
      } else {
        s.request.trailers.push_back({std::string(name), std::string(value)});
      }
    }
    void headersEnd(bool endStream) override {
      if (!s.headEnded) {
        s.headEnded = true;
        if (endStream) {
          s.request.end();
        }
        s.server->dispatch(s);
        return;
      }
      s.request.end();  // trailers end the request
      s.requestMoved();
    }
    void data(const std::uint8_t* p, std::size_t n) override {
      if (s.discardRequest) {
        s.server->consume(s.id, n);  // answered already: acknowledged, not kept
        return;
      }
      s.request.push(p, n);
      s.requestMoved();
    }
    void dataEnd() override {
      s.request.end();
      s.requestMoved();
    }
    void closed(std::uint32_t error) override {
      if (s.server) {
        s.server->streamClosed(s, error);
      }
    }
    ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) override {
      return s.readResponse(buf, length, flags);
    }
  };

  struct Up final : h2::StreamEnd {
    Stream& s;
    explicit Up(Stream& st) : s(st) {}
    void header(std::string_view name, std::string_view value) override {
      s.upHeadBytes += name.size() + value.size() + 32;
      if (s.upHeadBytes > 256 * 1024) {
        return;  // the local service's head past any sense: cut, not held
      }
      if (!s.upHeadDone) {
        s.upHead.push_back({std::string(name), std::string(value)});
      } else {
        s.response.trailers.push_back({std::string(name), std::string(value)});
      }
    }
    void headersEnd(bool endStream) override {
      if (!s.upHeadDone) {
        if (!s.upHead.empty() && s.upHead.front().name == ":status" &&
            s.upHead.front().value.size() == 3 && s.upHead.front().value[0] == '1') {
          s.upHead.clear();  // an interim answer: the final one follows
          return;
        }
        s.upHeadDone = true;
        if (s.server) {
          s.server->startResponse(s, s.upHead, endStream);
        }
        if (endStream) {
          s.response.end();
        }
        return;
      }
      s.response.end();
      s.responseMoved();
    }
    void data(const std::uint8_t* p, std::size_t n) override {
      if (!s.server || s.answeredLocally) {
        s.upSession->consume(s.upId, n);
        return;
      }
      s.response.push(p, n);
      s.responseMoved();
    }
    void dataEnd() override {
      s.response.end();
      s.responseMoved();
    }
    void closed(std::uint32_t) override {
      s.upSession = nullptr;
      auto hold = std::move(s.upHold);  // this stream may go with it, at the end of this call
      if (!s.response.ended() && s.server) {
        if (!s.responseStarted) {
          s.server->localReply(s, 502);
        } else {
          s.server->reset(s.id, NGHTTP2_INTERNAL_ERROR);
        }
      }
    }
    ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) override {
      const std::size_t n = s.request.take(buf, length);
      if (n && s.server) {
        s.server->consume(s.id, n);
      }
      if (s.request.drained()) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!s.request.trailers.empty()) {
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          s.upSession->trailers(s.upId, s.request.trailers);
        }
        return static_cast<ssize_t>(n);
      }
      return n ? static_cast<ssize_t>(n) : ssize_t{NGHTTP2_ERR_DEFERRED};
    }
  };

  Stream(Impl& srv, std::int32_t streamId)
      : server(&srv), id(streamId), wake(srv.handler_.worker().ioc()), start(Clock::now()) {}

  // The request's body moved (bytes, its end): whoever sends it up goes on.
  void requestMoved() {
    lastMove = Clock::now();
    if (upSession) {
      upSession->resume(upId);
    }
    signal();
  }
  // The answer's body moved: the caller's side sends it.
  void responseMoved() {
    if (server && responseStarted) {
      server->resume(id);
    }
  }
  void signal() {
    signalled = true;
    wake.cancel();
  }
  awaitable<void> waitSignal() {
    if (!signalled) {
      wake.expires_at(Clock::time_point::max());
      co_await wake.async_wait(useTuple);
    }
    signalled = false;
  }

  ssize_t readResponse(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
    const std::size_t n = response.take(buf, length);
    responseBytes += n;
    if (n) {
      lastMove = Clock::now();
      if (upSession) {
        upSession->consume(upId, n);
      }
      signal();  // an HTTP/1.1 producer may have waited for room
    }
    if (response.drained()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!response.trailers.empty() && server) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        server->trailers(id, response.trailers);
      }
      return static_cast<ssize_t>(n);
    }
    return n ? static_cast<ssize_t>(n) : ssize_t{NGHTTP2_ERR_DEFERRED};
  }

  Impl* server;  // none once the caller's stream closed
  std::int32_t id;
  Down down{*this};
  Up up{*this};
  // The request.
  std::string method, path, authority, contentType, grpcTimeout;
  h2::Fields fields;  // regular fields, in order
  std::size_t headBytes = 0;
  bool headTooLarge = false;
  bool headEnded = false;
  bool discardRequest = false;
  bool grpc = false;
  h2::Pipe request;
  // The answer.
  h2::Fields upHead;
  std::size_t upHeadBytes = 0;
  bool upHeadDone = false;
  bool responseStarted = false;
  bool answeredLocally = false;
  unsigned status = 0;
  std::optional<unsigned> grpcStatus;
  h2::Pipe response;
  std::uint64_t responseBytes = 0;
  // The local service's side: an h2c stream, or an HTTP/1.1 exchange.
  h2::Session* upSession = nullptr;
  std::int32_t upId = 0;
  std::shared_ptr<Stream> upHold;  // while the h2c stream is open
  std::optional<DeadlineSocket> h1;
  bool cancelled = false;
  bool pendingCounted = false;
  bool finished = false;
  SteadyTimer wake;
  bool signalled = false;
  // Time.
  Clock::time_point start;
  Clock::time_point lastMove{};
  Clock::time_point headDeadline = Clock::time_point::max();  // the answer's head, by then
  Clock::time_point callDeadline = Clock::time_point::max();  // grpc-timeout
  double upstreamSeconds = -1;
};

h2::StreamEnd* InboundH2Server::Impl::streamOpened(std::int32_t id) {
  auto s = std::make_shared<Stream>(*this, id);
  auto* end = &s->down;
  streams_.emplace(id, std::move(s));
  m_.h2Streams.add(shard_, 0);
  m_.h2StreamsOpen.add(shard_, 0);
  return end;
}

void InboundH2Server::Impl::dispatch(Stream& s) {
  s.lastMove = Clock::now();
  s.grpc = h2::isGrpc(s.contentType);
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
  const auto now = Clock::now();
  s.headDeadline = now + shared_.limits.upstreamTimeout;
  if (!s.grpcTimeout.empty()) {
    if (auto t = h2::parseGrpcTimeout(s.grpcTimeout)) {
      s.callDeadline = now + std::chrono::duration_cast<Clock::duration>(
                                 std::min(*t, std::chrono::nanoseconds(std::chrono::hours(24 * 365))));
      s.headDeadline = std::min(s.headDeadline, s.callDeadline);
    }
  }
  const bool useH2 = shared_.upstreamProtocol == UpstreamProtocol::h2c ||
                     (shared_.upstreamProtocol == UpstreamProtocol::automatic && s.grpc);
  auto head = forwardedHead(s);
  auto self = streams_.at(s.id);
  if (!useH2) {
    asio::co_spawn(handler_.worker().ioc(), http1Exchange(std::move(self)), asio::detached);
    return;
  }
  auto& up = handler_.h2Pool().pick();
  const auto fields = upstreamHead(s, head);
  const bool body = !s.request.drained() || !s.request.trailers.empty();
  const std::int32_t upId = up.request(fields, body, s.up);
  if (upId < 0) {
    return localReply(s, 502);
  }
  s.upSession = &up;
  s.upId = upId;
  s.upHold = std::move(self);
}

// The request's head as the local service gets it: the caller's fields, then the rules of
// http/rewrite.h (hop-by-hop fields out, X-Forwarded-For, -Proto, -Client-Cert).
http::request_header<> InboundH2Server::Impl::forwardedHead(Stream& s) {
  http::request_header<> head;
  head.version(11);
  head.method_string(s.method);
  head.target(s.path);
  std::string cookies;
  for (const auto& f : s.fields) {
    if (f.name == "cookie") {  // split into several fields by HTTP/2; one again for HTTP/1.1
      cookies += cookies.empty() ? "" : "; ";
      cookies += f.value;
    } else {
      head.insert(f.name, f.value);
    }
  }
  if (!cookies.empty()) {
    head.set(http::field::cookie, cookies);
  }
  if (head.count(http::field::host) == 0 && !s.authority.empty()) {
    head.set(http::field::host, s.authority);
  }
  rewriteRequestHead(head, ForwardContext{caller_.clientIp, caller_.peer.xfcc,
                                          shared_.upstreamAuthority});
  return head;
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

void InboundH2Server::Impl::startResponse(Stream& s, const h2::Fields& head, bool endStream) {
  if (s.responseStarted) {
    return;
  }
  s.responseStarted = true;
  s.upstreamSeconds = std::chrono::duration<double>(Clock::now() - s.start).count();
  h2::Fields out;
  out.reserve(head.size());
  for (const auto& f : head) {
    if (f.name == ":status") {
      s.status = static_cast<unsigned>(std::atoi(f.value.c_str()));
    }
    if (!connectionSpecific(f.name)) {
      out.push_back(f);
    }
  }
  if (s.grpc) {
    s.grpcStatus = h2::grpcStatusOf(head);
  }
  respond(s.id, out, !endStream);
}

void InboundH2Server::Impl::localReply(Stream& s, unsigned status) {
  if (s.responseStarted) {
    reset(s.id, NGHTTP2_INTERNAL_ERROR);
    cancelUpstream(s);
    return;
  }
  m_.localReply(status).Increment();
  s.responseStarted = true;
  s.answeredLocally = true;
  s.status = status;
  const auto& reply = kLocalReplies[localReplyIndex(status)];
  std::string body(reply.body);
  if (!body.empty() && body.back() == '\n') {
    body.pop_back();
  }
  if (s.grpc) {
    // gRPC callers read the status from grpc-status: HTTP 200, trailers only.
    s.status = 200;
    s.grpcStatus = h2::grpcStatusFor(status);
    respond(s.id,
            {{":status", "200"},
             {"content-type", "application/grpc"},
             {"grpc-status", std::to_string(*s.grpcStatus)},
             {"grpc-message", body}},
            false);
  } else {
    s.response.push(reply.body.data(), reply.body.size());
    s.response.end();
    respond(s.id,
            {{":status", std::to_string(status)},
             {"content-type", "text/plain"},
             {"content-length", std::to_string(reply.body.size())}},
            true);
  }
  // The request's body is not wanted: its bytes are acknowledged as they come.
  s.discardRequest = true;
  consume(s.id, s.request.discard());
  cancelUpstream(s);
}

void InboundH2Server::Impl::cancelUpstream(Stream& s) {
  if (s.upSession) {
    s.upSession->detach(s.upId, s.up);
    s.upSession = nullptr;
    s.upHold.reset();  // s stays: streams_ holds it
  }
  if (s.h1 && !s.cancelled) {
    s.cancelled = true;
    s.h1->cancel();
  }
  s.cancelled = true;
  s.signal();
}

void InboundH2Server::Impl::streamClosed(Stream& s, std::uint32_t error) {
  if (!s.responseStarted || (error != NGHTTP2_NO_ERROR && !s.response.drained())) {
    m_.h2StreamsBroken.add(shard_, 0);
  }
  finish(s);
  s.server = nullptr;
  cancelUpstream(s);
  m_.h2StreamsOpen.sub(shard_, 0);
  streams_.erase(s.id);  // may be the last reference: s is gone after this
}

// Counts the request and writes its access-log line, once.
void InboundH2Server::Impl::finish(Stream& s) {
  if (s.finished) {
    return;
  }
  s.finished = true;
  if (s.pendingCounted) {
    --handler_.pending();
    m_.pending.sub(shard_, 0);
  }
  if (!s.responseStarted) {
    return;  // the caller reset the stream before any answer: nobody was answered
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - s.start).count();
  const auto verb = http::string_to_verb(s.method);
  const std::size_t method = InboundMetrics::methodIndex(verb);
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
        s.grpc ? (s.grpcStatus ? std::to_string(*s.grpcStatus) : std::string("-"))
               : std::string());
  }
}

void InboundH2Server::Impl::sweep(Clock::time_point now) {
  handler_.h2Pool().sweep(now);
  if (handler_.worker().draining() && !goawayForDrain_) {
    goawayForDrain_ = true;
    goAway();
  }
  std::vector<std::shared_ptr<Stream>> due;
  for (auto& [id, s] : streams_) {
    if (s->h1) {
      s->h1->expireIfDue(now);
    }
    if ((!s->responseStarted && now >= s->headDeadline) || now >= s->callDeadline ||
        (s->lastMove != Clock::time_point{} && now - s->lastMove > kStreamIdle)) {
      due.push_back(s);
    }
  }
  for (auto& s : due) {
    if (!s->server) {
      continue;
    }
    if (!s->responseStarted) {
      m_.upstreamTimeouts->Increment();
      localReply(*s, 504);
    } else {
      reset(s->id, NGHTTP2_CANCEL);
      cancelUpstream(*s);
    }
    s->headDeadline = s->callDeadline = Clock::time_point::max();
    s->lastMove = Clock::time_point{};
  }
}

// One request over HTTP/1.1 to the local service: the head translated, the body streamed up
// (chunked when the caller gave no length), the answer's head translated and its body streamed
// back within the caller's window.
awaitable<void> InboundH2Server::Impl::http1Exchange(std::shared_ptr<Stream> sp) {
  auto& s = *sp;
  auto& handler = handler_;  // outlives this: the worker's
  auto& m = m_;
  const auto& shared = shared_;
  const auto& endpoint = shared.local.addr().endpoints().front();
  const std::string owner = caller_.peer.identity;
  const std::string identityForLog = caller_.identityForLog;  // this session may end first
  auto head = forwardedHead(s);
  const bool chunked = head.count(http::field::content_length) == 0 &&
                       (!s.request.drained() || !s.request.trailers.empty());
  if (chunked) {
    head.set(http::field::transfer_encoding, "chunked");
  }
  const bool isHead = s.method == "HEAD";
  s.h1.emplace(handler.worker().ioc().get_executor());
  auto& up = *s.h1;
  bool reused = false;
  if (auto idle = handler.pool().take(endpoint, owner)) {
    up.socket() = std::move(*idle);
    reused = true;
  } else {
    auto ec = co_await connectPlain(up, endpoint, shared.limits.upstreamConnectTimeout);
    if (ec) {
      m.upstreamConnectErrors->Increment();
      if (s.server && !s.cancelled) {
        s.server->localReply(s, ec == boost::beast::error::timeout ? 504 : 502);
      }
      co_return;
    }
    m.upstreamConnectsTotal->Increment();
  }
  (void)reused;
  std::string out;
  appendHead(out, head);
  up.expires_after(shared.limits.upstreamTimeout);
  error_code ec;
  {
    auto [wec, n] = co_await asio::async_write(up, asio::buffer(out), useTuple);
    ec = wec;
  }
  std::uint8_t buf[16 * 1024];
  while (!ec && !s.cancelled) {
    if (s.request.empty() && !s.request.ended()) {
      co_await s.waitSignal();
      continue;
    }
    if (s.request.drained()) {
      if (chunked) {
        out = "0\r\n";
        for (const auto& t : s.request.trailers) {
          out += t.name + ": " + t.value + "\r\n";
        }
        out += "\r\n";
        up.expires_after(shared.limits.upstreamTimeout);
        auto [wec, n] = co_await asio::async_write(up, asio::buffer(out), useTuple);
        ec = wec;
      }
      break;
    }
    const std::size_t n = s.request.take(buf, sizeof buf);
    if (s.server) {
      s.server->consume(s.id, n);
    }
    out.clear();
    if (chunked) {
      char size[20];
      const int len = std::snprintf(size, sizeof size, "%zx\r\n", n);
      out.append(size, static_cast<std::size_t>(len));
    }
    out.append(reinterpret_cast<const char*>(buf), n);
    if (chunked) {
      out += "\r\n";
    }
    up.expires_after(shared.limits.upstreamTimeout);
    auto [wec, wn] = co_await asio::async_write(up, asio::buffer(out), useTuple);
    ec = wec;
  }
  if (s.cancelled) {
    co_return;
  }
  boost::beast::flat_buffer upBuf;
  std::optional<http::response_parser<http::buffer_body>> res;
  if (!ec) {
    up.expires_after(shared.limits.upstreamTimeout);
    do {
      res.emplace();
      res->header_limit(64 * 1024);
      res->body_limit(boost::none);
      if (isHead) {
        res->skip(true);
      }
      auto [rec, rn] = co_await http::async_read_header(up, upBuf, *res, useTuple);
      ec = rec;
    } while (!ec && res->get().result_int() / 100 == 1);
  }
  if (s.cancelled) {
    co_return;
  }
  if (ec) {
    if (ec == boost::beast::error::timeout) {
      m.upstreamTimeouts->Increment();
    }
    logWithin(handler.logLimiter(LogEvent::upstreamFailed), spdlog::level::warn,
              "event=upstream_failed identity={} protocol=h2 reason=\"{}\"", identityForLog,
              ec.message());
    if (s.server) {
      s.server->localReply(s, ec == boost::beast::error::timeout ? 504 : 502);
    }
    co_return;
  }
  auto& rmsg = res->get();
  const unsigned status = rmsg.result_int();
  const bool bodiless = isHead || status == 204 || status == 304 || res->is_done();
  h2::Fields fields;
  fields.push_back({":status", std::to_string(status)});
  for (const auto& f : rmsg) {
    auto name = lower(f.name_string());
    if (!connectionSpecific(name)) {
      fields.push_back({std::move(name), std::string(f.value())});
    }
  }
  if (!s.server) {
    co_return;
  }
  s.server->startResponse(s, fields, bodiless);
  if (bodiless) {
    s.response.end();
  }
  while (!res->is_done() && !s.cancelled) {
    if (s.response.size() >= h2::Pipe::kHigh) {
      m.h2FlowStalls->Increment();
      while (s.response.size() >= h2::Pipe::kHigh && !s.cancelled) {
        co_await s.waitSignal();
      }
      continue;
    }
    rmsg.body().data = buf;
    rmsg.body().size = sizeof buf;
    up.expires_after(shared.limits.upstreamTimeout);
    auto [rec, rn] = co_await http::async_read_some(up, upBuf, *res, useTuple);
    if (rec == http::error::need_buffer) {
      rec = {};
    }
    if (rec) {
      ec = rec;
      break;
    }
    const std::size_t piece = sizeof buf - rmsg.body().size;
    if (piece && !s.cancelled) {
      s.response.push(buf, piece);
      s.responseMoved();
    }
  }
  if (s.cancelled) {
    co_return;
  }
  if (ec) {
    logWithin(handler.logLimiter(LogEvent::upstreamBodyFailed), spdlog::level::warn,
              "event=upstream_body_failed identity={} protocol=h2 reason=\"{}\"",
              identityForLog, ec.message());
    if (s.server) {
      s.server->reset(s.id, NGHTTP2_INTERNAL_ERROR);
    }
    co_return;
  }
  if (!bodiless) {
    s.response.end();
    s.responseMoved();
  }
  if (rmsg.keep_alive() && upBuf.size() == 0) {
    handler.pool().giveBack(endpoint, std::move(up.socket()), owner);
  }
}

InboundH2Server::InboundH2Server(InboundHandler& handler, H2Caller caller)
    : impl_(std::make_unique<Impl>(handler, std::move(caller))) {}

InboundH2Server::~InboundH2Server() = default;

awaitable<void> InboundH2Server::run(TlsStream& stream) {
  auto& limits = impl_->shared_.limits;
  co_await impl_->Session::run(stream, limits.idleTimeout, limits.idleTimeout);
  impl_->finishConnection();
}

void InboundH2Server::sweep(Clock::time_point now) { impl_->sweep(now); }

bool InboundH2Server::idle() const { return impl_->idle(); }

}  // namespace sidecar
