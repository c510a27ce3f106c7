// The sidecar's own answers, serialized once at first use.
#include "http/local_reply.h"

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

namespace sidecar {

namespace http = boost::beast::http;

std::string localReplyNaming(unsigned status, std::string_view body) {
  auto reason = http::obsolete_reason(http::int_to_status(status));
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
         "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + std::string(body);
}

const std::string& localReplyBytes(unsigned status) {
  static const auto table = [] {
    std::array<std::string, kLocalReplies.size()> t;
    for (std::size_t i = 0; i < kLocalReplies.size(); ++i) {
      t[i] = localReplyNaming(kLocalReplies[i].status, kLocalReplies[i].body);
    }
    return t;
  }();
  return table[localReplyIndex(status)];
}

unsigned statusForReadError(const boost::system::error_code& ec) {
  if (ec == http::error::header_limit) {
    return 431;
  }
  if (ec == http::error::body_limit) {
    return 413;
  }
  if (ec == boost::beast::error::timeout) {
    return 408;
  }
  return 400;
}

bool isMalformedBody(const boost::system::error_code& ec) {
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) {
    return false;
  }
  // Every other error of Beast's HTTP category is a framing violation (or an overflowing line).
  return ec.category() == http::make_error_code(http::error::bad_chunk).category();
}

}  // namespace sidecar
