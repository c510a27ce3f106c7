// Proxied HTTP/2 streams: the caller's end, the other side's, and what is the same for every
// listener.
#include "h2/proxy_server.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "h2/grpc.h"
#include "h2/grpc_frame.h"
#include "http/local_reply.h"

namespace sidecar::h2 {

namespace {
// A stream with nothing moving either way this long is reset (Envoy's stream_idle_timeout).
constexpr auto kStreamIdle = std::chrono::minutes(5);
// The other side's head (or trailers) past any sense: cut, not held.
constexpr std::size_t kMaxUpHead = 256 * 1024;
}  // namespace

// What nghttp2 lets through but a request line or Host must not carry (RFC 9113 8.3.1): a :path
// is origin-form, visible ASCII without a fragment ('#' would be split differently by the
// services behind); an :authority has no userinfo; a Host, when sent too, names the same.
bool requestTargetOk(const ProxyStream& s) {
  for (unsigned char c : s.path) {
    if (c <= 0x20 || c >= 0x7f || c == '#') {
      return false;
    }
  }
  if (s.authority.find('@') != std::string::npos) {
    return false;
  }
  for (const auto& f : s.fields) {
    if (f.name == "host" && !s.authority.empty() && f.value != s.authority) {
      return false;
    }
  }
  return true;
}

bool connectionSpecific(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade" || name == "te";
}

// ---- the caller's end ---------------------------------------------------------------------------

void ProxyStream::Down::header(std::string_view name, std::string_view value) {
  s.headBytes += name.size() + value.size() + 32;
  if (s.headBytes > s.server->limits().maxHeadBytes) {
    s.headTooLarge = true;
    return;
  }
  if (s.headEnded) {
    s.request.trailers.push_back({std::string(name), std::string(value)});
    return;
  }
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
}

void ProxyStream::Down::headersEnd(bool endStream) {
  if (!s.headEnded) {
    s.headEnded = true;
    if (endStream) {
      s.request.end();
    }
    s.lastMove = Clock::now();
    s.grpc = isGrpc(s.contentType);
    if (!s.headTooLarge && !requestTargetOk(s)) {
      return s.server->localReply(s, 400);
    }
    s.server->dispatch(s);
    return;
  }
  s.request.end();  // trailers end the request
  s.requestMoved();
}

bool ProxyStream::Down::answerEnded() {
  s.discardRequest = true;
  if (s.server) {
    s.server->consume(s.id, s.request.discard());
  }
  return true;
}

void ProxyStream::Down::data(const std::uint8_t* p, std::size_t n) {
  if (s.discardRequest) {
    s.server->consume(s.id, n);  // answered already: acknowledged, not kept
    return;
  }
  s.request.push(p, n);
  s.requestMoved();
}

void ProxyStream::Down::dataEnd() {
  s.request.end();
  s.requestMoved();
}

void ProxyStream::Down::closed(std::uint32_t error) {
  if (s.server) {
    s.server->streamClosed(s, error);
  }
}

ssize_t ProxyStream::Down::readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
  return s.readResponse(buf, length, flags);
}

// ---- the other side's end -----------------------------------------------------------------------

void ProxyStream::Up::header(std::string_view name, std::string_view value) {
  s.upHeadBytes += name.size() + value.size() + 32;
  if (s.upHeadBytes > kMaxUpHead) {
    return;
  }
  if (!s.upHeadDone) {
    s.upHead.push_back({std::string(name), std::string(value)});
  } else {
    s.response.trailers.push_back({std::string(name), std::string(value)});
  }
}

void ProxyStream::Up::headersEnd(bool endStream) {
  if (s.upHeadDone) {
    s.response.end();
    s.responseMoved();
    return;
  }
  if (!s.upHead.empty() && s.upHead.front().name == ":status" &&
      s.upHead.front().value.size() == 3 && s.upHead.front().value[0] == '1') {
    s.upHead.clear();  // an interim answer: the final one follows
    s.upHeadBytes = 0;
    return;
  }
  s.upHeadDone = true;
  if (s.server) {
    s.server->startResponse(s, std::move(s.upHead), endStream);
  }
  if (endStream) {
    s.response.end();
  }
}

void ProxyStream::Up::data(const std::uint8_t* p, std::size_t n) {
  if (!s.server || s.answeredLocally) {
    s.upSession->consume(s.upId, n);
    return;
  }
  s.response.push(p, n);
  s.responseMoved();
}

void ProxyStream::Up::dataEnd() {
  s.response.end();
  s.responseMoved();
}

void ProxyStream::Up::closed(std::uint32_t error) {
  Session* was = std::exchange(s.upSession, nullptr);
  auto hold = std::move(s.upHold);  // this stream may go with it, at the end of this call
  if (!s.server || s.answeredLocally) {
    return;
  }
  if (s.response.ended()) {
    if (!s.request.drained()) {
      // Answered whole without reading the rest of the request: what the caller still sends
      // is acknowledged and dropped, so that its stream can end.
      s.discardRequest = true;
      s.server->consume(s.id, s.request.discard());
    }
    return;
  }
  if (s.responseStarted) {
    s.server->reset(s.id, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  // Sent again only when the other side cannot have acted on it: its HEADERS never went out, or
  // it refused the stream before any of the body was taken from us (a body taken is not held any
  // more, so it could not be sent whole again).
  using UpEnd = ProxyServer::UpEnd;
  auto end = UpEnd::failed;
  if (!s.headSent) {
    // Its HEADERS never went out: on a connection that never came, or one that went away (a
    // GOAWAY, a reset) while the stream waited in nghttp2's queue.
    end = was && was->ran() ? UpEnd::goneAway : UpEnd::notSent;
  } else if (error == NGHTTP2_REFUSED_STREAM && (!s.bodyTaken || s.request.rewindable())) {
    end = was && was->takesRequests() ? UpEnd::refused : UpEnd::goneAway;
  }
  s.server->upFailed(s, end);
}

ssize_t ProxyStream::Up::readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
  if (s.discardRequest) {
    // Dropped, so never ended here: the other side must not take a cut request for a whole one
    // (its stream is reset with the caller's).
    return NGHTTP2_ERR_DEFERRED;
  }
  const std::size_t n = s.request.take(buf, length);
  if (n) {
    s.bodyTaken = true;
    const std::size_t fresh = s.request.newlyTaken();
    if (fresh && s.server) {
      s.server->consume(s.id, fresh);
    }
  }
  if (s.request.drained()) {
    s.bodyTaken = true;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!s.request.trailers.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      s.upSession->trailers(s.upId, s.request.trailers);
    }
    return static_cast<ssize_t>(n);
  }
  return n ? static_cast<ssize_t>(n) : ssize_t{NGHTTP2_ERR_DEFERRED};
}

// ---- the stream ---------------------------------------------------------------------------------

ProxyStream::ProxyStream(ProxyServer& srv, std::int32_t streamId, IoExecutor ex)
    : server(&srv), id(streamId), wake(ex), start(Clock::now()), lastMove(start) {}

void ProxyStream::requestMoved() {
  lastMove = Clock::now();
  if (upSession) {
    upSession->resume(upId);
  }
  signal();
}

void ProxyStream::responseMoved() {
  if (server && responseStarted) {
    server->resume(id);
  }
}

void ProxyStream::signal() {
  signalled = true;
  wake.cancel();
}

awaitable<void> ProxyStream::waitSignal() {
  if (!signalled) {
    wake.expires_at(Clock::time_point::max());
    co_await wake.async_wait(useTuple);
  }
  signalled = false;
}

ssize_t ProxyStream::readResponse(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
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

// ---- the server ---------------------------------------------------------------------------------

ProxyServer::ProxyServer(IoExecutor ex, const Settings& settings, const Limits& limits)
    : Session(Role::server, ex, settings), limits_(limits), ex_(ex) {}

ProxyServer::~ProxyServer() { closeAll(); }

StreamEnd* ProxyServer::streamOpened(std::int32_t id) {
  auto s = std::make_shared<ProxyStream>(*this, id, ex_);
  auto* end = &s->down;
  streams_.emplace(id, std::move(s));
  streamOpenedOrClosed(true);
  return end;
}

void ProxyServer::startClock(ProxyStream& s) {
  const auto now = Clock::now();
  s.headDeadline = now + limits_.headTimeout;
  if (!s.grpcTimeout.empty()) {
    if (auto t = parseGrpcTimeout(s.grpcTimeout)) {
      s.callDeadline = now + std::chrono::duration_cast<Clock::duration>(*t);  // at most a year
      s.headDeadline = std::min(s.headDeadline, s.callDeadline);
    }
  }
}

bool ProxyServer::bind(ProxyStream& s, Session& up, Fields head) {
  s.upRequest = std::move(head);
  s.request.keep(kKeptBody);
  return resend(s, up);
}

bool ProxyServer::resend(ProxyStream& s, Session& up) {
  if (!s.request.rewind()) {
    return false;
  }
  s.headSent = false;
  s.bodyTaken = false;
  const bool body = !s.request.drained() || !s.request.trailers.empty();
  const std::int32_t upId = up.request(s.upRequest, body, s.up);
  if (upId < 0) {
    return false;
  }
  s.upSession = &up;
  s.upId = upId;
  s.upHold = s.shared_from_this();
  return true;
}

void ProxyServer::upFailed(ProxyStream& s, UpEnd) { localReply(s, 502); }

void ProxyServer::startResponse(ProxyStream& s, Fields head, bool endStream) {
  if (s.responseStarted) {
    return;
  }
  s.responseStarted = true;
  s.request.forget();  // answered: never sent again
  s.upstreamSeconds = std::chrono::duration<double>(Clock::now() - s.start).count();
  std::erase_if(head, [](const Field& f) { return connectionSpecific(f.name); });
  for (const auto& f : head) {
    if (f.name == ":status") {
      s.status = static_cast<unsigned>(std::atoi(f.value.c_str()));
      break;
    }
  }
  if (s.grpc) {
    s.grpcStatus = grpcStatusOf(head);
  }
  respond(s.id, head, !endStream);
  answerBegan(s);
}

void ProxyServer::localReply(ProxyStream& s, unsigned status, std::string_view body) {
  if (s.responseStarted) {
    reset(s.id, NGHTTP2_INTERNAL_ERROR);
    cancelUpstream(s);
    return;
  }
  countLocalReply(status);
  s.responseStarted = true;
  s.answeredLocally = true;
  s.status = status;
  const auto& reply = kLocalReplies[localReplyIndex(status)];
  const std::string_view text = body.empty() ? reply.body : body;
  if (s.grpc) {
    // gRPC callers read the status from grpc-status: HTTP 200, trailers only.
    std::string message(text);
    while (!message.empty() && message.back() == '\n') {
      message.pop_back();
    }
    s.status = 200;
    s.grpcStatus = grpcStatusFor(status);
    respond(s.id,
            {{":status", "200"},
             {"content-type", "application/grpc"},
             {"grpc-status", std::to_string(*s.grpcStatus)},
             {"grpc-message", grpcMessageText(message)}},
            false);
  } else {
    s.response.push(text.data(), text.size());
    s.response.end();
    respond(s.id,
            {{":status", std::to_string(status)},
             {"content-type", "text/plain"},
             {"content-length", std::to_string(text.size())}},
            true);
  }
  s.discardRequest = true;
  consume(s.id, s.request.discard());
  cancelUpstream(s);
}

void ProxyServer::cancelUpstream(ProxyStream& s) {
  if (s.upSession) {
    // An upstream whose answer came whole is told it ended cleanly, not cancelled.
    s.upSession->detach(
        s.upId, s.up,
        s.response.ended() ? std::uint32_t{NGHTTP2_NO_ERROR} : std::uint32_t{NGHTTP2_CANCEL});
    s.upSession = nullptr;
    s.upHold.reset();  // s stays: streams_ holds it
  }
  if (s.h1 && !s.cancelled) {
    s.h1->cancel();
  }
  s.cancelled = true;
  s.signal();
}

void ProxyServer::streamClosed(ProxyStream& s, std::uint32_t) {
  if (!s.finished) {
    s.finished = true;
    finish(s);
  }
  s.server = nullptr;
  cancelUpstream(s);
  auto keep = streams_.find(s.id);
  if (keep != streams_.end()) {
    auto hold = std::move(keep->second);  // s goes at the end of this call, if last
    streams_.erase(keep);
    streamOpenedOrClosed(false);
  }
}

void ProxyServer::sweep(Clock::time_point now) {
  std::vector<std::shared_ptr<ProxyStream>> due;
  for (auto& [id, s] : streams_) {
    if (s->h1) {
      s->h1->expireIfDue(now);
    }
    if ((!s->responseStarted && now >= s->headDeadline) || now >= s->callDeadline ||
        (s->lastMove != Clock::time_point{} && now - s->lastMove > kStreamIdle) ||
        (!s->headEnded && now - s->start > limits_.requestHeadTimeout)) {
      due.push_back(s);
    }
  }
  for (auto& s : due) {
    if (!s->server) {
      continue;
    }
    const bool pastCall = now >= s->callDeadline;
    if (!s->headEnded) {
      reset(s->id, NGHTTP2_PROTOCOL_ERROR);  // a head that never ends: nothing to answer
    } else if (!s->responseStarted) {
      localReply(*s, 504);
    } else if (pastCall && s->response.ended()) {
      // The whole answer is in hand (the service met its deadline, or answered it with its own
      // DEADLINE_EXCEEDED at the same moment): it only has to reach the caller.
      s->headDeadline = s->callDeadline = Clock::time_point::max();
      continue;
    } else if (pastCall && s->grpc) {
      // Mid-answer past grpc-timeout: what came is sent, then DEADLINE_EXCEEDED as trailers, as
      // a gRPC server ends a call it gave up on.
      cancelUpstream(*s);
      s->discardRequest = true;  // nobody reads the rest: the caller is asked to stop sending it
      consume(s->id, s->request.discard());
      s->response.trailers = {{"grpc-status", "4"}, {"grpc-message", "deadline exceeded"}};
      s->grpcStatus = 4;
      s->response.end();
      s->responseMoved();
    } else {
      reset(s->id, NGHTTP2_CANCEL);
      cancelUpstream(*s);
    }
    s->headDeadline = s->callDeadline = Clock::time_point::max();
    s->lastMove = Clock::time_point{};
  }
}

}  // namespace sidecar::h2
