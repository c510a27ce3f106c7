// The request head as the proxy handles it: scan for folding, parse with Beast, check, rewrite,
// serialize. Invariants: scanning in two steps agrees with one; our serializer writes what
// Beast's does, byte for byte; whatever the sidecar would forward parses again, the same way,
// and passes its own checks (one reading, never two).
#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "fuzz.h"
#include "http/rewrite.h"

namespace http = boost::beast::http;
using sidecar::HeadScan;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto whole = sidecar::scanHead(bytes, 0);
  if (size > 1) {
    const auto half = sidecar::scanHead(bytes.substr(0, size / 2), 0);
    if (half.state == HeadScan::incomplete) {
      FUZZ_CHECK(sidecar::scanHead(bytes, half.resumeAt).state == whole.state);
    }
  }
  if (whole.state != HeadScan::complete) {
    return 0;
  }
  http::request_parser<http::buffer_body> p;
  p.header_limit(64 * 1024);
  boost::beast::error_code ec;
  p.put(boost::asio::buffer(data, size), ec);
  if (ec || !p.is_header_done()) {
    return 0;
  }
  auto& msg = p.get();
  if (!sidecar::checkRequestHead(msg.base()).empty()) {
    return 0;
  }
  const bool chunked = msg.chunked();
  const auto length = p.content_length();
  sidecar::rewriteRequestHead(msg.base(),
                              sidecar::ForwardContext{"10.0.0.1", "Hash=ab", "127.0.0.1:8080"});
  std::ostringstream os;
  os << msg.base();
  const std::string forwarded = os.str();
  std::string ours = "x";  // the proxy's own serializer appends, and writes what Beast writes
  sidecar::appendHead(ours, msg.base());
  FUZZ_CHECK(ours.substr(1) == forwarded);

  http::request_parser<http::empty_body> again;
  again.header_limit(128 * 1024);
  again.eager(false);
  again.put(boost::asio::buffer(forwarded), ec);
  FUZZ_CHECK(!ec);
  FUZZ_CHECK(again.is_header_done());
  FUZZ_CHECK(again.get().method_string() == msg.method_string());
  FUZZ_CHECK(again.get().target() == msg.target());
  FUZZ_CHECK(again.get().chunked() == chunked);
  FUZZ_CHECK(again.content_length() == length);
  FUZZ_CHECK(sidecar::scanHead(forwarded, 0).state == HeadScan::complete);
  http::request_header<> reparsed = again.get().base();
  FUZZ_CHECK(sidecar::checkRequestHead(reparsed).empty());
  return 0;
}
