#pragma once
// One request and its answer between a caller's stream and an upstream stream: write the head and
// stream the body up, skip interim 1xx answers, read the final head, fix its framing for the
// caller, stream the answer back, and decide whether either connection may serve another
// request. Typed on the two streams, so that inbound (TLS in, plain out), outbound (plain in,
// TLS out) and the unit tests (beast::test::stream) share it. It keeps no metrics and writes no
// log line: it reports what happened, and the handler counts, logs and answers.
//
// Link, the upstream side of one exchange:
//   stream_type& stream();
//   bool takePooled();                  // a clean kept-alive connection, now; false if none
//   awaitable<error_code> connect();    // a new connection (its own deadline)
//   void release(bool reusable);        // the exchange is done with the connection
//   bool refuseAnswer(unsigned status); // optional: true drops a 5xx final head of a request
//                                       // we still hold whole, unrelayed, so the handler can
//                                       // send it elsewhere (the outbound link: another member)
//   static constexpr bool kReplayStale;  // optional, default true: a stale pooled connection's
//                                       // request goes out again on a new connection to the
//                                       // same upstream; false leaves that to the handler
// Relay: char* get(); static std::size_t size();   (a body buffer, borrowed on first use)

#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffer_traits.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "core/config.h"
#include "http/local_reply.h"
#include "http/relay.h"
#include "http/rewrite.h"
#include "net/io.h"

namespace sidecar {

namespace beast = boost::beast;

// Sets the deadline of a stream's lowest layer, if it has one (test streams have none).
template <class Stream>
void setDeadline(Stream& s, Duration d) {
  auto& lowest = beast::get_lowest_layer(s);
  if constexpr (requires { lowest.expires_after(d); }) {
    lowest.expires_after(d);
  }
}

// Gives a read-ahead buffer's memory back once it is empty and grew past 8 KiB (a large head or
// body piece), so that a connection waiting for its next request holds little.
inline void shrinkIfLarge(beast::flat_buffer& b) {
  constexpr std::size_t kShrinkAbove = 8 * 1024;
  if (b.size() == 0 && b.capacity() > kShrinkAbove) {
    b.shrink_to_fit();
  }
}

struct ExchangeLimits {
  Duration callerTimeout{60'000};  // each read of the request body, each write of the answer
  Duration upstreamTimeout{
      30'000};  // writing the request and reading the final head; each body read
  std::size_t upstreamMaxHead = 64 * 1024;
};

// The request as the handler accepted it.
struct ExchangeRequest {
  bool clientKeepAlive = true;
  unsigned clientVersion = 11;
  bool isHead = false;
  // Read when the answer's head goes out, not when the request came: a drain that began while
  // the call was in flight still closes the caller's connection after this answer.
  const bool* draining = nullptr;  // null: never
};

// The session's buffers, reused from one request to the next.
struct ExchangeBuffers {
  beast::flat_buffer& caller;    // the caller's bytes read ahead of the parser
  beast::flat_buffer& upstream;  // the upstream's bytes read ahead of the parser
  std::string& out;              // a serialized head (and small body) on its way out
};

struct ExchangeResult {
  enum class Failure {
    none,
    connect,           // no connection to the upstream (localStatus 502, or 504 on a timeout)
    upstream,          // writing the request or reading the answer's head failed (502 / 504)
    requestTooLarge,   // the caller's body grew past --max-body-size (413)
    requestMalformed,  // the caller's body broke its framing (400)
    requestBroken,     // the caller's body broke off (no answer: the caller is gone)
    upstreamBody,      // the answer's body failed (502 if its head had not gone out yet)
    callerGone,        // writing the answer to the caller failed
    answerRefused,     // the link refused the answer's head (localStatus: its status); nothing
                       // of it went to the caller, and the connection is closed
  };
  Failure failure = Failure::none;
  error_code ec;
  unsigned localStatus = 0;         // an answer of ours is due: nothing of the upstream's went out
  unsigned status = 0;              // the upstream's answer, once its head went to the caller
  bool keepAlive = false;           // the caller's connection may serve another request
  std::uint64_t requestBytes = 0;   // body bytes forwarded up
  std::uint64_t responseBytes = 0;  // body bytes forwarded down
  double upstreamSeconds = -1;      // request written to final head read, when it was
  unsigned staleRetries = 0;        // a pooled connection turned out closed; sent again
  bool unsolicited = false;         // bytes past the end of the answer: the connection was closed
};

namespace exchange_detail {

using Clock = std::chrono::steady_clock;

inline bool isIdempotent(http::verb v) {
  switch (v) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::options:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::trace:
      return true;
    default:
      return false;
  }
}

// Whether a request that failed on a stale pooled connection is sent again to the same upstream.
// The local service is one upstream, so yes; a member may have read the request before it reset
// the connection, and the outbound handler sends it to another member instead (each member at
// most once per call).
template <class Link>
constexpr bool replaysStale() {
  if constexpr (requires { Link::kReplayStale; }) {
    return Link::kReplayStale;
  } else {
    return true;
  }
}

inline bool looksStale(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == asio::error::eof;
}

template <class Body>
void markNoBody(Body& body) {
  body.data = nullptr;
  body.size = 0;
  body.more = false;
}

template <class Link>
struct Lease {
  Link& link;
  bool reusable = false;
  ~Lease() { link.release(reusable); }
};

}  // namespace exchange_detail

struct RelayResult {
  error_code readError;
  error_code writeError;
  std::uint64_t bytes = 0;  // body bytes written out
};

// Beast's documented relay: parse a chunk of body into buf, serialize it out, until done. The
// serializer re-frames the body (Content-Length or chunked) exactly as the parser understood it.
template <bool isRequest, class In, class Out>
awaitable<RelayResult> relayBody(In& in, beast::flat_buffer& inBuffer,
                                 http::parser<isRequest, http::buffer_body>& p, Out& out,
                                 http::serializer<isRequest, http::buffer_body>& sr, char* buf,
                                 std::size_t bufSize, Duration inTimeout, Duration outTimeout) {
  // Beast sizes each read by the buffer's free capacity (512 bytes at least): without room, a
  // body would move 512 bytes per system call.
  inBuffer.reserve(bufSize);
  RelayResult r;
  do {
    std::size_t chunk = 0;
    if (!p.is_done()) {
      offerRelayBuffer(p, buf, bufSize);
      setDeadline(in, inTimeout);
      auto [ec, n] = co_await http::async_read_some(in, inBuffer, p, useTuple);
      if (ec == http::error::need_buffer) {
        ec = {};
      }
      if (ec) {
        r.readError = ec;
        co_return r;
      }
      chunk = takeParsedPiece(p, buf, bufSize);
    } else {
      exchange_detail::markNoBody(p.get().body());
    }
    setDeadline(out, outTimeout);
    auto [ec, n] = co_await http::async_write(out, sr, useTuple);
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      r.writeError = ec;
      co_return r;
    }
    r.bytes += chunk;
  } while (!p.is_done() && !sr.is_done());
  co_return r;
}

namespace exchange_detail {

// The caller's body broke off, was malformed or grew past the limit; the upstream connection is
// unusable either way.
inline void requestBodyFailed(ExchangeResult& r, error_code readError) {
  using Failure = ExchangeResult::Failure;
  r.ec = readError;
  if (readError == http::error::body_limit) {
    r.failure = Failure::requestTooLarge;
    r.localStatus = 413;
  } else if (isMalformedBody(readError)) {
    r.failure = Failure::requestMalformed;
    r.localStatus = 400;
  } else {
    r.failure = Failure::requestBroken;
  }
}

struct CallerFraming {
  bool keepAlive;         // the caller's connection goes on after this answer
  bool upstreamReusable;  // the upstream's may go back to the pool
};

// The answer's head made right for the caller's HTTP version and connection.
inline CallerFraming frameForCaller(http::response_parser<http::buffer_body>& res,
                                    const ExchangeRequest& info) {
  auto& rmsg = res.get();
  CallerFraming f{info.clientKeepAlive && !(info.draining && *info.draining), rmsg.keep_alive()};
  if (!res.is_done() && res.need_eof()) {
    // A body that ends when the upstream closes: chunk it for HTTP/1.1 callers.
    f.upstreamReusable = false;
    if (info.clientVersion == 11) {
      rmsg.chunked(true);
    } else {
      f.keepAlive = false;
    }
  } else if (info.clientVersion == 10 && rmsg.chunked()) {
    rmsg.chunked(false);
    f.keepAlive = false;
  }
  rewriteResponseHead(rmsg.base(), info.clientVersion, f.keepAlive);
  return f;
}

// Body bytes that came with the head are parsed in place into buf (no read needed), to go out in
// the same write as the head: for the common small answer, one TLS record and one system call
// instead of two. As many parser steps as the bytes allow (a chunked body's chunk headers take
// steps of their own). piece: how many; an error when they cannot be parsed.
inline error_code takeFirstPiece(http::response_parser<http::buffer_body>& res,
                                 beast::flat_buffer& upstream, char* buf, std::size_t bufSize,
                                 std::uint64_t& piece) {
  auto& rmsg = res.get();
  if (res.is_done()) {
    markNoBody(rmsg.body());
    return {};
  }
  if (upstream.size() == 0) {
    return {};
  }
  rmsg.body().data = buf;
  rmsg.body().size = bufSize;
  while (!res.is_done() && upstream.size() > 0 && rmsg.body().size > 0) {
    error_code ec;
    const std::size_t used = res.put(upstream.data(), ec);
    upstream.consume(used);
    if (ec == http::error::need_buffer || ec == http::error::need_more) {
      break;
    }
    if (ec) {
      return ec;
    }
    if (used == 0) {
      break;
    }
  }
  piece = bufSize - rmsg.body().size;
  rmsg.body().data = piece ? buf : nullptr;
  rmsg.body().size = piece;
  rmsg.body().more = !res.is_done();
  return {};
}

// A HEAD, 204 or 304 answer has no body whatever its head says: with Transfer-Encoding: chunked
// the serializer would add a last chunk ("0\r\n\r\n") that the caller then reads as the start
// of its next answer. RFC 9112 forbids Transfer-Encoding on a 204 (and it means nothing on a
// 304); readers such as Python's http.client then wait for chunks that never come. True when the
// answer is bodiless.
inline bool dropBodyFraming(http::response<http::buffer_body>& rmsg, bool isHead) {
  const unsigned status = rmsg.result_int();
  if (status == 204 || status == 304) {
    rmsg.erase(http::field::transfer_encoding);
    if (status == 204) {
      rmsg.erase(http::field::content_length);
    }
  }
  return isHead || status == 204 || status == 304;
}

}  // namespace exchange_detail

// Runs one exchange. req holds the parsed (and rewritten) head; its body, if any, is still in
// the caller's stream and buffer. One coroutine from the request's head to the answer's end, and
// longer than our rule of 80 lines for that reason: each step split into a coroutine of its own
// would allocate a frame per request (the synchronous steps are functions above).
template <class Caller, class Link, class Relay>
awaitable<ExchangeResult> runExchange(Caller& caller, http::request_parser<http::buffer_body>& req,
                                      ExchangeRequest info, Link& link, Relay& relay,
                                      ExchangeBuffers b, const ExchangeLimits& limits) {
  using namespace exchange_detail;
  using Failure = ExchangeResult::Failure;
  ExchangeResult r;
  auto& msg = req.get();
  const bool hasBody = !req.is_done();
  // A request we still hold whole may go out again if a pooled connection turns out stale.
  const bool replayable = !hasBody && isIdempotent(msg.method());
  if (!hasBody) {
    markNoBody(msg.body());
  }
  Lease<Link> lease{link};
  std::optional<http::response_parser<http::buffer_body>> res;
  error_code ec;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = link.takePooled();
    if (!reused) {
      if (auto cec = co_await link.connect()) {
        r.failure = Failure::connect;
        r.ec = cec;
        r.localStatus = cec == beast::error::timeout ? 504 : 502;
        co_return r;
      }
    }
    auto& up = link.stream();
    http::request_serializer<http::buffer_body> sr{msg};
    setDeadline(up, limits.upstreamTimeout);
    const auto upstreamStart = Clock::now();
    if (!hasBody) {
      b.out.clear();
      appendHead(b.out, msg.base());
      auto [wec, wn] = co_await asio::async_write(up, asio::buffer(b.out), useTuple);
      ec = wec;
    } else {
      auto [wec, wn] = co_await http::async_write_header(up, sr, useTuple);
      ec = wec;
      if (!ec) {
        auto rr = co_await relayBody(caller, b.caller, req, up, sr, relay.get(), relay.size(),
                                     limits.callerTimeout, limits.upstreamTimeout);
        r.requestBytes = rr.bytes;
        if (rr.readError) {
          requestBodyFailed(r, rr.readError);
          co_return r;
        }
        ec = rr.writeError;
      }
    }
    if (!ec) {
      b.upstream.clear();
      // One deadline for the final answer: interim 1xx answers (dropped; we wait for the final
      // one) do not extend it, or a 102 every second would hold a request forever.
      setDeadline(up, limits.upstreamTimeout);
      do {
        res.emplace();
        res->header_limit(static_cast<std::uint32_t>(limits.upstreamMaxHead));
        res->body_limit(boost::none);
        if (info.isHead) {
          res->skip(true);
        }
        auto [rec, rn] = co_await http::async_read_header(up, b.upstream, *res, useTuple);
        ec = rec;
      } while (!ec && res->get().result_int() / 100 == 1);
    }
    if (!ec) {
      r.upstreamSeconds = std::chrono::duration<double>(Clock::now() - upstreamStart).count();
      break;
    }
    if (replaysStale<Link>() && attempt == 0 && reused && replayable && looksStale(ec)) {
      ++r.staleRetries;
      continue;
    }
    break;
  }
  if (ec) {
    r.failure = Failure::upstream;
    r.ec = ec;
    r.localStatus = ec == beast::error::timeout ? 504 : 502;
    co_return r;
  }

  auto& rmsg = res->get();
  if constexpr (requires { link.refuseAnswer(0u); }) {
    // Only a request that went out whole from what we hold, so that sending it again is the
    // same request; the answer's body is never read, so its connection is not reused.
    if (replayable && link.refuseAnswer(rmsg.result_int())) {
      r.failure = Failure::answerRefused;
      r.localStatus = rmsg.result_int();
      co_return r;
    }
  }
  const auto framing = frameForCaller(*res, info);
  const unsigned status = rmsg.result_int();

  http::response_serializer<http::buffer_body> rs{rmsg};
  char* buf = relay.get();
  const std::size_t bufSize = relay.size();
  // Body bytes that came with the head go out in the same write as the head: for the common
  // small answer, one TLS record and one system call instead of two. Parsing them needs no read.
  std::uint64_t firstPiece = 0;
  if (auto pec = takeFirstPiece(*res, b.upstream, buf, bufSize, firstPiece)) {
    r.failure = Failure::upstreamBody;
    r.ec = pec;
    r.localStatus = 502;
    co_return r;
  }
  setDeadline(caller, limits.callerTimeout);
  const bool bodiless = dropBodyFraming(rmsg, info.isHead);
  error_code wec;
  if (res->is_done() && (bodiless || !rmsg.chunked())) {
    // The whole answer is in hand and needs no framing of ours: head and body in one write.
    b.out.clear();
    appendHead(b.out, rmsg.base());
    b.out.append(buf, firstPiece);
    auto [e, n] = co_await asio::async_write(caller, asio::buffer(b.out), useTuple);
    wec = e;
  } else if (res->is_done() || firstPiece) {
    auto [e, n] = co_await http::async_write(caller, rs, useTuple);
    wec = e == http::error::need_buffer ? error_code{} : e;
  } else {
    auto [e, n] = co_await http::async_write_header(caller, rs, useTuple);
    wec = e;
  }
  if (wec) {
    r.failure = Failure::callerGone;
    r.ec = wec;
    co_return r;
  }
  r.status = status;
  r.responseBytes = firstPiece;
  if (!res->is_done()) {
    auto rr = co_await relayBody(link.stream(), b.upstream, *res, caller, rs, buf, bufSize,
                                 limits.upstreamTimeout, limits.callerTimeout);
    r.responseBytes += rr.bytes;
    if (rr.readError) {
      r.failure = Failure::upstreamBody;
      r.ec = rr.readError;
      co_return r;
    }
    if (rr.writeError) {
      r.failure = Failure::callerGone;
      r.ec = rr.writeError;
      co_return r;
    }
  }
  if (b.upstream.size() != 0) {
    // Bytes past the end of the answer (a body after a bodiless answer, a body longer than its
    // Content-Length): the connection is out of step with its requests; never reuse it.
    r.unsolicited = true;
    b.upstream.clear();
  } else {
    lease.reusable = framing.upstreamReusable;
  }
  shrinkIfLarge(b.upstream);
  r.keepAlive = framing.keepAlive;
  co_return r;
}

}  // namespace sidecar
