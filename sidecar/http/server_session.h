#pragma once
// The server side of HTTP/1.1, one template for every listener that serves it: inbound (mTLS
// callers, the local service behind) and outbound (the local service's plain calls, a route's
// members behind). The template owns the request loop and the head stage, the same for both:
// parser limits and the head deadline, the bounded head read, read errors to statuses, the head
// checks and the underscore rule (http/read_head.h), the listener's own admission (identity,
// Host), Expect; every answer it writes comes from the local_reply table. What a request then
// becomes (an exchange with the local service, a call over a route) is the session's.
//
// A Session derives from Http1Server<Session, Stream> and provides:
//   Stream& callerStream();
//   void requestBegins();             // the request's time starts (its first bytes are here)
//   awaitable<bool> awaitRequest();   // the next request's first bytes (or readability) are
//                                     // there; false: the connection is to close
//   unsigned admit(Parser& req, const RequestHeadResult& head);
//                                     // after the head is read (hung-up heads aside): counts
//                                     // and logs what it refuses; 0 admits, else the status
//                                     // of our answer (the session may keep the text of it)
//   awaitable<void> answerLocal(unsigned status);   // our answer; the connection then closes
//   awaitable<bool> handle(Parser& req);            // false: the connection is to close
//   void headRead(Parser& req, const RequestHeadResult& head);  // before anything else:
//                                     // counts what the head check reports (underscores)

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <string>

#include "core/config.h"
#include "http/exchange.h"
#include "http/read_head.h"
#include "net/io.h"

namespace sidecar {

template <class Session, class Stream>
class Http1Server {
 public:
  using Parser = boost::beast::http::request_parser<boost::beast::http::buffer_body>;

 protected:
  // relayBuffer: the size of the worker's relay buffer (a body passes through it).
  Http1Server(const ProxyLimits& limits, std::size_t relayBuffer) : limits_(limits) {
    // Bounds what a caller can make us hold: a head, plus a relay's worth of body (a chunk-size
    // line with an endless extension fills it and is refused).
    buffer_.max_size(limits.maxHeadBytes + relayBuffer + 4096);
    // And what the other side can make us hold: an answer's head, plus a relay's worth of body.
    // (Beast's parser bounds a chunk line itself today; this bound does not depend on it.)
    upBuffer_.max_size(ExchangeLimits{}.upstreamMaxHead + relayBuffer + 4096);
  }
  ~Http1Server() = default;

  // Serves the connection's requests until it is to close.
  awaitable<void> serveRequests() {
    // Between requests a connection holds no coroutine frame but this one (and the session's
    // wait): the read happens once there is something to read.
    // (No co_await on the right of || or &&: GCC 12 ran it even when the left side decided.)
    for (;;) {
      if (buffer_.size() == 0) {
        const bool more = co_await self().awaitRequest();
        if (!more) {
          break;
        }
      }
      const bool keepAlive = co_await serveOne();
      if (!keepAlive) {
        break;
      }
    }
  }

  // Serves one request; false when the connection is to close.
  awaitable<bool> serveOne() {
    auto& s = self();
    auto& stream = s.callerStream();
    s.requestBegins();
    Parser req;
    startRequest(stream, req, limits_);
    const error_code readError = co_await readRequestHead(stream, buffer_, limits_.maxHeadBytes);
    const auto head = checkRequest(readError, buffer_, req, limits_);
    s.headRead(req, head);
    if (head.kind == RequestHeadResult::Kind::hungUp) {
      co_return false;  // the caller hung up mid-head: nobody to answer
    }
    if (const unsigned refusal = s.admit(req, head)) {
      co_await s.answerLocal(refusal);
      co_return false;
    }
    if (auto e = co_await answerExpect(stream, req, limits_.idleTimeout); e != Expectation::met) {
      if (e == Expectation::failed) {
        co_await s.answerLocal(417);
      }
      co_return false;
    }
    co_return co_await s.handle(req);
  }

  ExchangeBuffers exchangeBuffers() { return ExchangeBuffers{buffer_, upBuffer_, out_}; }

  const ProxyLimits& limits_;
  boost::beast::flat_buffer buffer_;    // the caller's bytes read ahead of the parser
  boost::beast::flat_buffer upBuffer_;  // the other side's bytes read ahead of its parser
  std::string out_;                     // a serialized head (and small body) on its way out

 private:
  Session& self() { return static_cast<Session&>(*this); }
};

}  // namespace sidecar
