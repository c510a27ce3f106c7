#pragma once
// One caller HTTP/2 stream carried over HTTP/1.1: the request's head (translated by the
// listener) written, its body streamed up (chunked when the caller gave no length, its trailers in
// the last chunk), interim answers skipped, the answer's head translated and its body streamed
// back within the caller's window. Both listeners use it: inbound toward the local service
// (plain; --upstream-protocol http1, or auto for a call that is not gRPC), outbound toward a
// member that does not offer h2 (mTLS). As http/exchange.h, it counts nothing and logs nothing:
// it says how the exchange ended, and the listener answers.
//
// Link, the upstream side of the exchange, is an Http1Leg (the stream's sweep and the caller's
// reset reach it while it runs) with:
//   stream_type& stream();
//   bool takePooled();                  // a clean kept-alive connection, now; false if none
//   awaitable<error_code> connect();    // a new connection (its own deadline)
//   void release(bool reusable);        // done with the connection
//   static constexpr bool kReplayStale; // a stale pooled connection's idempotent request goes out
//                                       // again on a new connection to the same upstream (the
//                                       // local service: yes; a member: the call policy decides)

#include <prometheus/counter.h>

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "core/text.h"
#include "h2/proxy_server.h"
#include "http/exchange.h"

namespace sidecar::h2 {

struct Http1End {
  enum class Kind : std::uint8_t {
    answered,      // the whole answer went to the caller's stream
    cancelled,     // the caller's stream ended first: nothing more is owed
    connect,       // no connection: nothing of the request went out
    upstream,      // writing the request or reading the answer's head failed: nothing answered
    upstreamBody,  // the answer's body broke off after its head went to the caller
  };
  Kind kind = Kind::answered;
  error_code ec;
  bool rewindable = false;  // upstream: the request could go out again whole (held, not taken)
};

// The stream's request as an HTTP/1.1 head: :method and :path as the request line, the fields
// in order but those skip(name) leaves out, the cookie fields HTTP/2 splits joined into one again
// (RFC 9113 8.2.3). host, when given, is the first field.
template <class Skip>
boost::beast::http::request_header<> http1RequestHead(const ProxyStream& s, Skip skip,
                                                      std::string_view host = {}) {
  namespace http = boost::beast::http;
  http::request_header<> head;
  head.version(11);
  head.method_string(s.method);
  head.target(s.path);
  if (!host.empty()) {
    head.set(http::field::host, host);
  }
  std::string cookies;
  for (const auto& f : s.fields) {
    if (skip(f.name)) {
      continue;
    }
    if (f.name == "cookie") {
      cookies += cookies.empty() ? "" : "; ";
      cookies += f.value;
    } else {
      head.insert(f.name, f.value);
    }
  }
  if (!cookies.empty()) {
    head.set(http::field::cookie, cookies);
  }
  return head;
}

// Runs the exchange for s on link. The caller holds s (ProxyServer::hold) until this ends.
// Relay: char* get(); static std::size_t size();  (the answer's body buffer, borrowed on first
// use: net/worker.h's LazyRelayBuffer, so that a coroutine frame per request holds none.)
template <class Link, class Relay>
awaitable<Http1End> relayOverHttp1(ProxyStream& s, Link& link,
                                   boost::beast::http::request_header<> head, Duration timeout,
                                   prometheus::Counter* flowStalls, Relay& relay) {
  namespace http = boost::beast::http;
  using Kind = Http1End::Kind;
  // Called from nghttp2's callback for the HEADERS: the rest of what was read (the caller's
  // RST_STREAM, say) is seen first, so that a request the caller cancelled in the same write
  // never goes out.
  co_await asio::post(co_await asio::this_coro::executor, useTuple);
  if (!s.server || s.cancelled) {
    co_return Http1End{Kind::cancelled, {}, false};
  }
  struct Registered {
    ProxyStream& s;
    ~Registered() { s.h1 = nullptr; }
  } registered{s};
  s.h1 = &link;
  // A request that goes on after another attempt (an HTTP/2 member that refused it, say) starts
  // from its body's first byte again: that attempt may have taken some of it.
  if (!s.request.rewind()) {
    co_return Http1End{Kind::upstream, {}, false};
  }
  s.request.keep(ProxyServer::kKeptBody);
  // Framed by its length when the caller gave one; else chunked, unless it has no body at all.
  const bool chunked = head.count(http::field::content_length) == 0 &&
                       (!s.request.drained() || !s.request.trailers.empty());
  if (chunked) {
    head.set(http::field::transfer_encoding, "chunked");
  }
  const bool isHead = s.method == "HEAD";
  // A stale pooled connection's request goes out again only when it is idempotent: the upstream
  // may have acted on it before the connection broke.
  const bool replayable = Link::kReplayStale && exchange_detail::isIdempotent(
                                                    boost::beast::http::string_to_verb(s.method));
  std::string out;
  boost::beast::flat_buffer upBuf;
  std::optional<http::response_parser<http::buffer_body>> res;
  error_code ec;
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = attempt == 0 && link.takePooled();  // a replay: a new connection
    if (!reused) {
      ec = co_await link.connect();
      if (s.cancelled) {
        link.release(false);
        co_return Http1End{Kind::cancelled, {}, false};
      }
      if (ec) {
        co_return Http1End{Kind::connect, ec, true};
      }
    }
    if (s.cancelled) {
      link.release(true);  // nothing was written on it
      co_return Http1End{Kind::cancelled, {}, false};
    }
    auto& up = link.stream();
    out.clear();
    appendHead(out, head);
    setDeadline(up, timeout);
    {
      auto [wec, n] = co_await asio::async_write(up, asio::buffer(out), useTuple);
      ec = wec;
    }
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
          setDeadline(up, timeout);
          auto [wec, n] = co_await asio::async_write(up, asio::buffer(out), useTuple);
          ec = wec;
        }
        break;
      }
      // Up to 16 KiB of the body, taken straight into the write's buffer (in a chunk when
      // chunked).
      const std::size_t n = std::min<std::size_t>(s.request.size(), 16 * 1024);
      out.clear();
      if (chunked) {
        char size[20];
        const int len = std::snprintf(size, sizeof size, "%zx\r\n", n);
        out.append(size, static_cast<std::size_t>(len));
      }
      const std::size_t at = out.size();
      out.resize(at + n);
      s.request.take(reinterpret_cast<std::uint8_t*>(out.data() + at), n);
      if (const std::size_t fresh = s.request.newlyTaken(); fresh && s.server) {
        s.server->consume(s.id, fresh);
      }
      if (chunked) {
        out += "\r\n";
      }
      setDeadline(up, timeout);
      auto [wec, wn] = co_await asio::async_write(up, asio::buffer(out), useTuple);
      ec = wec;
    }
    if (s.cancelled) {
      link.release(false);
      co_return Http1End{Kind::cancelled, {}, false};
    }
    if (!ec) {
      // One deadline for the final answer: interim answers do not extend it.
      setDeadline(up, timeout);
      do {
        res.emplace();
        res->header_limit(64 * 1024);
        res->body_limit(boost::none);
        if (isHead) {
          res->skip(true);
        }
        auto [rec, rn] = co_await http::async_read_header(up, upBuf, *res, useTuple);
        ec = rec;
      } while (!ec && res->get().result_int() / 100 == 1 && !s.cancelled);
    }
    if (s.cancelled) {
      link.release(false);
      co_return Http1End{Kind::cancelled, {}, false};
    }
    if (!ec) {
      break;
    }
    link.release(false);
    const bool rewindable = s.request.rewind();
    if (replayable && attempt == 0 && reused && rewindable && exchange_detail::looksStale(ec)) {
      upBuf.clear();
      continue;  // the pooled connection had closed: the same request on a new one
    }
    co_return Http1End{Kind::upstream, ec, rewindable};
  }
  auto& rmsg = res->get();
  const unsigned status = rmsg.result_int();
  const bool bodiless = isHead || status == 204 || status == 304 || res->is_done();
  Fields fields;
  fields.reserve(1 + static_cast<std::size_t>(std::distance(rmsg.begin(), rmsg.end())));
  fields.push_back({":status", std::to_string(status)});
  for (const auto& f : rmsg) {
    auto name = lower(f.name_string());
    if (!connectionSpecific(name)) {
      fields.push_back({std::move(name), std::string(f.value())});
    }
  }
  if (!s.server) {
    link.release(false);
    co_return Http1End{Kind::cancelled, {}, false};
  }
  // What of the body came in the same read as the head is parsed now, before the session's
  // writer runs: HEADERS and the first DATA (the whole answer, for a small one) go out in one
  // write, not one each. Broken there, before anything of the answer went to the caller: answered
  // as a bad head is (a 502 from the listener), and never sent again.
  std::uint64_t early = 0;
  if (!bodiless) {
    if (auto pec = exchange_detail::takeFirstPiece(*res, upBuf, relay.get(), relay.size(), early)) {
      link.release(false);
      co_return Http1End{Kind::upstream, pec, false};
    }
  }
  s.server->startResponse(s, std::move(fields), bodiless);
  if (bodiless) {
    s.response.end();
  }
  if (early) {
    s.response.push(relay.get(), static_cast<std::size_t>(early));
    s.responseMoved();
  }
  auto& up = link.stream();
  while (!res->is_done() && !s.cancelled) {
    if (s.response.size() >= Pipe::kHigh) {
      if (flowStalls) {
        flowStalls->Increment();
      }
      while (s.response.size() >= Pipe::kHigh && !s.cancelled) {
        co_await s.waitSignal();
      }
      continue;
    }
    char* buf = relay.get();
    rmsg.body().data = buf;
    rmsg.body().size = relay.size();
    setDeadline(up, timeout);
    auto [rec, rn] = co_await http::async_read_some(up, upBuf, *res, useTuple);
    if (rec == http::error::need_buffer) {
      rec = {};
    }
    if (rec) {
      ec = rec;
      break;
    }
    const std::size_t piece = relay.size() - rmsg.body().size;
    if (piece && !s.cancelled) {
      s.response.push(buf, piece);
      s.responseMoved();
    }
  }
  if (s.cancelled) {
    link.release(false);
    co_return Http1End{Kind::cancelled, {}, false};
  }
  if (ec) {
    link.release(false);
    co_return Http1End{Kind::upstreamBody, ec, false};
  }
  if (!bodiless) {
    s.response.end();
    s.responseMoved();
  }
  link.release(rmsg.keep_alive() && upBuf.size() == 0);
  co_return Http1End{Kind::answered, {}, false};
}

}  // namespace sidecar::h2
