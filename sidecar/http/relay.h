#pragma once
// The body relay's one subtle step, shared by the proxy and its fuzz target: after the parser
// wrote part of a relay buffer, hand exactly that part to the serializer.

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstddef>

namespace sidecar {

namespace http = boost::beast::http;

// Points the parser's body at buf before a read.
template <bool isRequest>
void offerRelayBuffer(http::parser<isRequest, http::buffer_body>& p, char* buf, std::size_t size) {
  p.get().body().data = buf;
  p.get().body().size = size;
}

// Turns what the parser left in the body into the piece the serializer writes next; returns its
// size. A read that parsed only chunk framing yields no piece, and must not reach the serializer
// as an empty buffer: for a chunked body that would write the terminating zero-size chunk early.
template <bool isRequest>
std::size_t takeParsedPiece(http::parser<isRequest, http::buffer_body>& p, char* buf,
                            std::size_t size) {
  auto& body = p.get().body();
  const std::size_t parsed = size - body.size;
  body.size = parsed;
  body.data = parsed ? buf : nullptr;
  body.more = !p.is_done();
  return parsed;
}

}  // namespace sidecar
