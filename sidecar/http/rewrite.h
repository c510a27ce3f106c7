#pragma once
// Request head checks and header rewriting between the caller and the local service: pure
// functions of the bytes or the parsed head, so they can be unit-tested and fuzzed alone.

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <cstddef>
#include <string>
#include <string_view>

namespace sidecar {

namespace http = boost::beast::http;

// What the sidecar knows about the connection a request came in on.
struct ForwardContext {
  std::string_view clientAddress;  // the caller's IP, for X-Forwarded-For
  std::string_view xfcc;           // the verified certificate, for X-Forwarded-Client-Cert
  std::string_view defaultHost;  // Host for an HTTP/1.0 request that has none (HTTP/1.1 needs one)
};

// Where the raw bytes of a request head end, found before Beast parses them. Beast silently
// joins obsolete line folding (a line starting with SP or HTAB) into one value; RFC 9112 lets a
// server refuse it instead, and we do, so the local service never sees a header Beast rewrote.
struct HeadScan {
  enum State { incomplete, complete, obsFold } state = incomplete;
  std::size_t resumeAt = 0;  // where to continue scanning once more bytes arrived
};
HeadScan scanHead(std::string_view bytes, std::size_t from);

// Checks a parsed request head for every framing and routing ambiguity Beast lets through, and
// brings an absolute-form target to origin form (its authority becomes Host). Returns the
// reason it is refused (answered 400), or an empty view when it may be forwarded.
std::string_view checkRequestHead(http::request_header<>& head);

// Header fields whose name holds '_': CGI/WSGI-style servers read X_Forwarded_Client_Cert and
// X-Forwarded-Client-Cert as one variable, so such a name can pose as a header we set. Counts
// them, and removes them when erase is true.
std::size_t underscoreHeaders(http::fields& fields, bool erase);

// Removes hop-by-hop headers (and those named in Connection), drops any X-Forwarded-Client-Cert
// the caller sent, appends X-Forwarded-For, sets X-Forwarded-Proto and X-Forwarded-Client-Cert,
// and asks for keep-alive on HTTP/1.1 (adding ctx.defaultHost as Host to HTTP/1.0 requests that
// had none). Transfer-Encoding stays: the body is re-framed as parsed.
void rewriteRequestHead(http::request_header<>& head, const ForwardContext& ctx);

// A request of the local service to another service: hop-by-hop headers and any
// X-Forwarded-Client-Cert removed; out as HTTP/1.1 keep-alive (Host is the route's name).
void rewriteOutboundRequestHead(http::request_header<>& head);

// Removes hop-by-hop headers and sets the caller's HTTP version and keep-alive choice.
void rewriteResponseHead(http::response_header<>& head, unsigned clientVersion, bool keepAlive);

// Appends the head exactly as Beast's serializer writes it (start line, fields in order, blank
// line), as one contiguous piece: the proxy sends a head, and a small body after it, with one
// write instead of walking Beast's views of a dozen small buffers.
void appendHead(std::string& out, const http::request_header<>& head);
void appendHead(std::string& out, const http::response_header<>& head);

// Fields that must not travel past one hop (RFC 9110 7.6.1), plus those the Connection header
// names.
void eraseHopByHop(http::fields& fields);

}  // namespace sidecar
