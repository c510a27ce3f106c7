#pragma once
// Reading a request head off any stream: until the buffer holds the whole head, refusing
// obsolete line folding before Beast can join the folded lines, and bounding the whole head
// (request line and fields together; Beast's own limit counts them apart). Shared by every
// handler that serves HTTP (inbound over TLS, outbound over plain TCP).

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstddef>
#include <string_view>

#include "core/config.h"
#include "http/local_reply.h"
#include "http/rewrite.h"
#include "net/io.h"

namespace sidecar {

// Reads until buffer holds a whole request head, or fails: bad_obs_fold, header_limit,
// end_of_stream (the caller hung up), or the stream's error (a deadline: beast::error::timeout).
template <class Stream>
awaitable<error_code> readRequestHead(Stream& stream, boost::beast::flat_buffer& buffer,
                                      std::size_t maxHeadBytes) {
  namespace http = boost::beast::http;
  std::size_t from = 0;
  for (;;) {
    auto bytes = buffer.cdata();
    auto scan = scanHead({static_cast<const char*>(bytes.data()), bytes.size()}, from);
    if (scan.state == HeadScan::obsFold) {
      co_return http::error::bad_obs_fold;
    }
    // No byte past the limit is ever parsed.
    if (scan.state == HeadScan::complete) {
      co_return scan.resumeAt > maxHeadBytes ? error_code(http::error::header_limit) : error_code{};
    }
    if (bytes.size() >= maxHeadBytes) {
      co_return http::error::header_limit;
    }
    from = scan.resumeAt;
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(2048), useTuple);
    if (ec) {
      co_return ec == asio::error::eof ? error_code(http::error::end_of_stream) : ec;
    }
    buffer.commit(n);
  }
}

// What reading one request came to, for the listener to count, log and answer.
struct RequestHeadResult {
  enum class Kind {
    ok,       // the head is parsed and passed every check
    hungUp,   // the caller went away before a whole head: nothing to answer
    refused,  // answer status (from the local_reply table) and close
  };
  Kind kind = Kind::ok;
  unsigned status = 0;          // refused: our answer's status
  std::string why;              // refused: for the log line (allocated on that path only)
  std::size_t underscores = 0;  // header names holding '_': dropped or refused, to be counted
};

// The server side of one HTTP/1 request head, the same on every listener that serves HTTP/1
// (inbound over TLS, outbound over plain TCP): the parser's limits, the head read whole within
// --head-timeout, read errors mapped to statuses, the head checks (checkRequestHead) and the
// underscore rule (--headers-with-underscores).
template <class Stream>
awaitable<RequestHeadResult> readRequest(
    Stream& stream, boost::beast::flat_buffer& buffer,
    boost::beast::http::request_parser<boost::beast::http::buffer_body>& req,
    const ProxyLimits& limits) {
  namespace http = boost::beast::http;
  using Kind = RequestHeadResult::Kind;
  RequestHeadResult out;
  req.header_limit(static_cast<std::uint32_t>(limits.maxHeadBytes));
  req.body_limit(limits.maxBodyBytes ? boost::optional<std::uint64_t>(limits.maxBodyBytes)
                                     : boost::none);
  boost::beast::get_lowest_layer(stream).expires_after(limits.headTimeout);
  error_code ec = co_await readRequestHead(stream, buffer, limits.maxHeadBytes);
  if (ec == http::error::bad_obs_fold) {
    out.kind = Kind::refused;
    out.status = 400;
    out.why = "obsolete line folding";
    co_return out;
  }
  if (!ec) {
    // The whole head is buffered, so it parses here, with no operation to run and complete.
    buffer.consume(req.put(buffer.data(), ec));
  }
  if (ec) {
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == asio::ssl::error::stream_truncated) {
      out.kind = Kind::hungUp;
      co_return out;
    }
    out.kind = Kind::refused;
    out.status = statusForReadError(ec);
    out.why = ec.message();
    co_return out;
  }
  auto& head = req.get().base();
  std::string_view why = checkRequestHead(head);
  if (why.empty() && limits.underscoreHeaders != UnderscoreHeaders::allow) {
    const bool drop = limits.underscoreHeaders == UnderscoreHeaders::drop;
    out.underscores = underscoreHeaders(head, drop);
    if (out.underscores && !drop) {
      why = "header name with '_' (--headers-with-underscores reject)";
    }
  }
  if (!why.empty()) {
    out.why = why;
    out.kind = Kind::refused;
    out.status = 400;
  }
  co_return out;
}

enum class Expectation {
  met,     // none, or 100-continue (answered if the body is still to come): go on
  failed,  // an expectation other than 100-continue: answer 417 and close
  gone,    // writing 100 Continue failed: close
};

// Expect, once the head is read: 100-continue is answered by us, so the next hop never sees the
// field and never has to; any other expectation fails (417).
template <class Stream>
awaitable<Expectation> answerExpect(
    Stream& stream, boost::beast::http::request_parser<boost::beast::http::buffer_body>& req,
    Duration idleTimeout) {
  namespace http = boost::beast::http;
  auto& msg = req.get();
  auto expect = msg.find(http::field::expect);
  if (expect == msg.end()) {
    co_return Expectation::met;
  }
  if (!boost::beast::iequals(expect->value(), "100-continue")) {
    co_return Expectation::failed;
  }
  msg.erase(http::field::expect);
  if (msg.version() == 11 && !req.is_done()) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    boost::beast::get_lowest_layer(stream).expires_after(idleTimeout);
    auto [ec, n] = co_await asio::async_write(stream, asio::buffer(kContinue), useTuple);
    co_return ec ? Expectation::gone : Expectation::met;
  }
  co_return Expectation::met;
}

}  // namespace sidecar
