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
  std::string_view why;         // refused by a check: for the log line
  error_code ec;                // refused by the read or the parser: for the log line
  std::size_t underscores = 0;  // header names holding '_': dropped or refused, to be counted
  std::string reason() const { return ec ? ec.message() : std::string(why); }
};

// The server side of one HTTP/1 request head, the same on every listener that serves HTTP/1
// (inbound over TLS, outbound over plain TCP), in two steps around readRequestHead so that no
// coroutine frame is added per request:
//   startRequest(stream, req, limits);
//   auto head = checkRequest(co_await readRequestHead(stream, buffer, limits.maxHeadBytes), ...);
// startRequest sets the parser's limits and the head's deadline (--head-timeout); checkRequest
// parses the buffered head, maps read errors to statuses and applies the head checks
// (checkRequestHead) and the underscore rule (--headers-with-underscores).
template <class Stream>
void startRequest(Stream& stream,
                  boost::beast::http::request_parser<boost::beast::http::buffer_body>& req,
                  const ProxyLimits& limits) {
  req.header_limit(static_cast<std::uint32_t>(limits.maxHeadBytes));
  req.body_limit(limits.maxBodyBytes ? boost::optional<std::uint64_t>(limits.maxBodyBytes)
                                     : boost::none);
  boost::beast::get_lowest_layer(stream).expires_after(limits.headTimeout);
}

RequestHeadResult checkRequest(
    error_code ec, boost::beast::flat_buffer& buffer,
    boost::beast::http::request_parser<boost::beast::http::buffer_body>& req,
    const ProxyLimits& limits);

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
