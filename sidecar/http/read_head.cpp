#include "http/read_head.h"

namespace sidecar {

RequestHeadResult checkRequest(
    error_code ec, boost::beast::flat_buffer& buffer,
    boost::beast::http::request_parser<boost::beast::http::buffer_body>& req,
    const ProxyLimits& limits) {
  namespace http = boost::beast::http;
  using Kind = RequestHeadResult::Kind;
  RequestHeadResult out;
  if (ec == http::error::bad_obs_fold) {
    out.kind = Kind::refused;
    out.status = 400;
    out.why = "obsolete line folding";
    return out;
  }
  if (!ec) {
    // The whole head is buffered, so it parses here, with no operation to run and complete.
    buffer.consume(req.put(buffer.data(), ec));
  }
  if (ec) {
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == asio::ssl::error::stream_truncated) {
      out.kind = Kind::hungUp;
      return out;
    }
    out.kind = Kind::refused;
    out.status = statusForReadError(ec);
    out.ec = ec;
    return out;
  }
  auto& head = req.get().base();
  out.why = checkRequestHead(head);
  if (out.why.empty() && limits.underscoreHeaders != UnderscoreHeaders::allow) {
    const bool drop = limits.underscoreHeaders == UnderscoreHeaders::drop;
    out.underscores = underscoreHeaders(head, drop);
    if (out.underscores && !drop) {
      out.why = "header name with '_' (--headers-with-underscores reject)";
    }
  }
  if (!out.why.empty()) {
    out.kind = Kind::refused;
    out.status = 400;
  }
  return out;
}

}  // namespace sidecar
