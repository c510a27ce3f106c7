// Body relay as the proxy runs it: parse into a small relay buffer, hand each piece to the
// serializer (relay.h), write. Invariant: the re-framed output parses back to exactly the body
// the parser read, and ends exactly once.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <string>

#include "fuzz.h"
#include "http/relay.h"

namespace http = boost::beast::http;
namespace net = boost::asio;

namespace {

// A SyncWriteStream that keeps what is written.
struct StringSink {
  std::string out;
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers, boost::beast::error_code& ec) {
    ec = {};
    std::size_t n = 0;
    for (auto b : boost::beast::buffers_range_ref(buffers)) {
      out.append(static_cast<const char*>(b.data()), b.size());
      n += b.size();
    }
    return n;
  }
  template <class Buffers>
  std::size_t write_some(const Buffers& buffers) {
    boost::beast::error_code ec;
    return write_some(buffers, ec);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  // The first byte picks the framing and the relay buffer size (1..64 bytes).
  const bool chunked = data[0] & 1;
  const std::size_t bufSize = 1 + (data[0] >> 2);
  std::string input =
      chunked ? "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              : "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string((size - 1) / 2) +
                    "\r\n\r\n";
  input.append(reinterpret_cast<const char*>(data + 1), size - 1);

  http::request_parser<http::buffer_body> p;
  p.body_limit(boost::none);
  boost::beast::error_code ec;
  std::size_t at = p.put(net::buffer(input), ec);
  if (ec || !p.is_header_done()) {
    return 0;
  }
  StringSink sink;
  http::request_serializer<http::buffer_body> sr{p.get()};
  http::write_header(sink, sr, ec);
  FUZZ_CHECK(!ec);
  std::string body;
  char buf[64];
  int rounds = 0;
  while (!p.is_done()) {
    FUZZ_CHECK(++rounds < 1'000'000);
    sidecar::offerRelayBuffer(p, buf, bufSize);
    std::size_t used = p.put(net::buffer(input.data() + at, input.size() - at), ec);
    at += used;
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      return 0;  // the proxy answers 400 and drops the upstream leg
    }
    std::size_t piece = sidecar::takeParsedPiece(p, buf, bufSize);
    body.append(buf, piece);
    if (used == 0 && piece == 0 && !p.is_done()) {
      return 0;  // input ended mid-body: the caller went quiet
    }
    http::write(sink, sr, ec);
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    FUZZ_CHECK(!ec);
  }
  if (!sr.is_done()) {
    p.get().body().data = nullptr;
    p.get().body().size = 0;
    p.get().body().more = false;
    http::write(sink, sr, ec);
    FUZZ_CHECK(!ec);
  }
  FUZZ_CHECK(sr.is_done());

  http::request_parser<http::string_body> again;
  again.body_limit(boost::none);
  std::size_t n = again.put(net::buffer(sink.out), ec);
  while (!ec && !again.is_done() && n < sink.out.size()) {
    n += again.put(net::buffer(sink.out.data() + n, sink.out.size() - n), ec);
  }
  FUZZ_CHECK(!ec);
  FUZZ_CHECK(again.is_done());
  FUZZ_CHECK(n == sink.out.size());  // the end is written once, and nothing after it
  FUZZ_CHECK(again.get().body() == body);
  return 0;
}
