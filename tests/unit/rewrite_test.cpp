// Header rewriting toward the local service and back to the caller.
#include "rewrite.h"

#include <doctest/doctest.h>

using namespace sidecar;

TEST_CASE("request: hop-by-hop headers go, forwarded headers come, forged XFCC is replaced") {
  http::request_header<> h;
  h.method(http::verb::get);
  h.target("/ping");
  h.version(10);
  h.set(http::field::connection, "keep-alive, X-Secret");
  h.set("X-Secret", "drop me");
  h.set(http::field::keep_alive, "timeout=5");
  h.set(http::field::upgrade, "websocket");
  h.set(http::field::te, "trailers");
  h.set(http::field::proxy_authorization, "Basic Zm9v");
  h.insert("X-Forwarded-Client-Cert", "By=evil;URI=spiffe://forged");
  h.insert("x-forwarded-client-cert", "second forged");
  h.set("X-Forwarded-Proto", "http");
  h.set("X-Other", "kept");
  rewriteRequestHead(h, ForwardContext{"10.1.2.3", "Hash=abc;URI=spiffe://real"});

  CHECK(h.version() == 11);
  CHECK(h.count(http::field::connection) == 0);
  CHECK(h.count("X-Secret") == 0);
  CHECK(h.count(http::field::keep_alive) == 0);
  CHECK(h.count(http::field::upgrade) == 0);
  CHECK(h.count(http::field::te) == 0);
  CHECK(h.count(http::field::proxy_authorization) == 0);
  CHECK(h.count("X-Forwarded-Client-Cert") == 1);
  CHECK(h["X-Forwarded-Client-Cert"] == "Hash=abc;URI=spiffe://real");
  CHECK(h["X-Forwarded-For"] == "10.1.2.3");
  CHECK(h["X-Forwarded-Proto"] == "https");
  CHECK(h["X-Other"] == "kept");
}

TEST_CASE("request: X-Forwarded-For is appended to") {
  http::request_header<> h;
  h.set("X-Forwarded-For", "192.0.2.1");
  rewriteRequestHead(h, ForwardContext{"10.1.2.3", ""});
  CHECK(h["X-Forwarded-For"] == "192.0.2.1, 10.1.2.3");
  CHECK(h.count("X-Forwarded-Client-Cert") == 0);
}

TEST_CASE("request: the body's framing survives a Connection header naming it") {
  http::request_header<> h;
  h.set(http::field::connection, "Transfer-Encoding, Content-Length, close");
  h.set(http::field::transfer_encoding, "chunked");
  h.set(http::field::content_length, "5");
  rewriteRequestHead(h, ForwardContext{"10.0.0.1", ""});
  CHECK(h.count(http::field::transfer_encoding) == 1);
  CHECK(h.count(http::field::content_length) == 1);
}

TEST_CASE("response: hop-by-hop removed, caller's version and keep-alive applied") {
  http::response_header<> h;
  h.version(11);
  h.set(http::field::connection, "X-Hop");
  h.set("X-Hop", "1");
  h.set(http::field::keep_alive, "timeout=5");
  rewriteResponseHead(h, 11, false);
  CHECK(h.count("X-Hop") == 0);
  CHECK(h.count(http::field::keep_alive) == 0);
  CHECK(h[http::field::connection] == "close");

  http::response_header<> old;
  rewriteResponseHead(old, 10, true);
  CHECK(old.version() == 10);
  CHECK(old[http::field::connection] == "keep-alive");
}
