#pragma once
// Header rewriting between the caller and the local service: pure functions of a message head.

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>

#include <string_view>

namespace sidecar {

namespace http = boost::beast::http;

// What the sidecar knows about the connection a request came in on.
struct ForwardContext {
  std::string_view clientAddress;  // the caller's IP, for X-Forwarded-For
  std::string_view xfcc;           // the verified certificate, for X-Forwarded-Client-Cert
};

// Removes hop-by-hop headers (and those named in Connection), drops any X-Forwarded-Client-Cert
// the caller sent, appends X-Forwarded-For, sets X-Forwarded-Proto and X-Forwarded-Client-Cert,
// and asks for keep-alive on HTTP/1.1. Transfer-Encoding stays: the body is re-framed as parsed.
void rewriteRequestHead(http::request_header<>& head, const ForwardContext& ctx);

// Removes hop-by-hop headers and sets the caller's HTTP version and keep-alive choice.
void rewriteResponseHead(http::response_header<>& head, unsigned clientVersion, bool keepAlive);

// Fields that must not travel past one hop (RFC 9110 7.6.1), plus those the Connection header names.
void eraseHopByHop(http::fields& fields);

}  // namespace sidecar
