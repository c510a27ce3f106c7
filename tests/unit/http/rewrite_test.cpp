// Header rewriting toward the local service and back to the caller.
#include "http/rewrite.h"

#include <doctest/doctest.h>

#include <boost/beast/http/write.hpp>
#include <sstream>
#include <string>
#include <vector>

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
  rewriteRequestHead(h, ForwardContext{"10.1.2.3", "Hash=abc;URI=spiffe://real", ""});

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
  rewriteRequestHead(h, ForwardContext{"10.1.2.3", "", ""});
  CHECK(h["X-Forwarded-For"] == "192.0.2.1, 10.1.2.3");
  CHECK(h.count("X-Forwarded-Client-Cert") == 0);
}

TEST_CASE("request: the body's framing survives a Connection header naming it") {
  http::request_header<> h;
  h.set(http::field::connection, "Transfer-Encoding, Content-Length, close");
  h.set(http::field::transfer_encoding, "chunked");
  h.set(http::field::content_length, "5");
  rewriteRequestHead(h, ForwardContext{"10.0.0.1", "", ""});
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

TEST_CASE("scanHead: finds the end of a head, resumes, and spots obsolete line folding") {
  CHECK(scanHead("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0).state == HeadScan::complete);
  CHECK(scanHead("GET / HTTP/1.1\nHost: a\n\n", 0).state == HeadScan::complete);
  auto partial = scanHead("GET / HTTP/1.1\r\nHost: a\r\n", 0);
  CHECK(partial.state == HeadScan::incomplete);
  std::string more = "GET / HTTP/1.1\r\nHost: a\r\n X: folded\r\n\r\n";
  CHECK(scanHead(more, partial.resumeAt).state == HeadScan::obsFold);
  CHECK(scanHead("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 0).state == HeadScan::obsFold);
  // A fold after the head's end belongs to the body, not to this head.
  CHECK(scanHead("GET / HTTP/1.1\r\nHost: a\r\n\r\n \r\n", 0).state == HeadScan::complete);
  CHECK(scanHead("", 0).state == HeadScan::incomplete);
  CHECK(scanHead("\n", 0).state == HeadScan::incomplete);
  CHECK(scanHead("x\r\n\r", 0).state == HeadScan::incomplete);
}

namespace {
std::string check(http::verb method, std::string target, unsigned version,
                  std::vector<std::pair<std::string, std::string>> fields,
                  http::request_header<>* out = nullptr) {
  http::request_header<> h;
  h.method(method);
  h.target(target);
  h.version(version);
  for (auto& [n, v] : fields) {
    h.insert(n, v);
  }
  std::string why(checkRequestHead(h));
  if (out) {
    *out = h;
  }
  return why;
}
}  // namespace

TEST_CASE("checkRequestHead: framing must have exactly one reading") {
  using V = http::verb;
  CHECK(check(V::get, "/", 11, {{"Host", "a"}}).empty());
  CHECK(check(V::get, "/", 10, {}).empty());
  CHECK(check(V::post, "/", 11, {{"Host", "a"}, {"Content-Length", "12"}}).empty());
  CHECK(check(V::post, "/", 11, {{"Host", "a"}, {"Transfer-Encoding", "Chunked "}}).empty());
  CHECK_FALSE(check(V::get, "/", 11, {}).empty());
  CHECK_FALSE(check(V::get, "/", 11, {{"Host", "a"}, {"host", "b"}}).empty());
  CHECK_FALSE(
      check(V::post, "/", 11, {{"Host", "a"}, {"Content-Length", "1"}, {"Content-Length", "1"}})
          .empty());
  CHECK_FALSE(check(V::post, "/", 11, {{"Host", "a"}, {"Content-Length", "1, 1"}}).empty());
  CHECK_FALSE(check(V::post, "/", 11, {{"Host", "a"}, {"Content-Length", "+1"}}).empty());
  CHECK_FALSE(
      check(V::post, "/", 11, {{"Host", "a"}, {"Transfer-Encoding", "gzip, chunked"}}).empty());
  CHECK_FALSE(check(V::post, "/", 11,
                    {{"Host", "a"}, {"Transfer-Encoding", "chunked"}, {"Content-Length", "1"}})
                  .empty());
  CHECK_FALSE(check(V::post, "/", 10, {{"Transfer-Encoding", "chunked"}}).empty());
}

TEST_CASE("checkRequestHead: targets") {
  using V = http::verb;
  http::request_header<> h;
  CHECK(check(V::get, "http://Example.com:81/p?q", 11, {{"Host", "x"}}, &h).empty());
  CHECK(h.target() == "/p?q");
  CHECK(h[http::field::host] == "Example.com:81");
  CHECK(h.count(http::field::host) == 1);
  CHECK(check(V::get, "HTTPS://e.com?q=1", 11, {{"Host", "x"}}, &h).empty());
  CHECK(h.target() == "/?q=1");
  CHECK(check(V::options, "*", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::get, "*", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::get, "ftp://e.com/", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::get, "http://user@e.com/", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::get, "http:///p", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::get, "p", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::connect, "e.com:443", 11, {{"Host", "e.com:443"}}).empty());
}

TEST_CASE("checkRequestHead: Host must be host[:port] as RFC 9110 and 3986 say") {
  using V = http::verb;
  for (const char* good : {"a", "svc:8080", "127.0.0.1", "127.0.0.1:80", "[::1]", "[::1]:8443",
                           "Example.COM", "a-b.c_d~e", "x%41y", "a:", "[v1.fe]"}) {
    INFO(good);
    CHECK(check(V::get, "/", 11, {{"Host", good}}).empty());
  }
  for (const char* bad : {"", "a b", "u@evil", "a/b", "a:b:c", "a:99999x", "a:123456", "[::1", "[]",
                          "[::1]x", "x%4", "x%zz", ":80", "a\"b", "a?b", "a#b"}) {
    INFO(bad);
    CHECK_FALSE(check(V::get, "/", 11, {{"Host", bad}}).empty());
  }
  CHECK_FALSE(check(V::get, "http://a b/", 11, {{"Host", "x"}}).empty());
  CHECK_FALSE(check(V::get, "http://a:b:c/", 11, {{"Host", "x"}}).empty());
}

TEST_CASE("request: an HTTP/1.0 request without Host gets the local service's as it becomes 1.1") {
  http::request_header<> h;
  h.method(http::verb::get);
  h.target("/");
  h.version(10);
  rewriteRequestHead(h, ForwardContext{"10.1.2.3", "", "127.0.0.1:8080"});
  CHECK(h.version() == 11);
  CHECK(h[http::field::host] == "127.0.0.1:8080");
  CHECK(checkRequestHead(h).empty());
  http::request_header<> kept;
  kept.version(10);
  kept.set(http::field::host, "svc");
  rewriteRequestHead(kept, ForwardContext{"10.1.2.3", "", "127.0.0.1:8080"});
  CHECK(kept[http::field::host] == "svc");
}

namespace {
template <class Header>
std::string beastWrites(const Header& h) {
  std::ostringstream os;
  os << h;
  return os.str();
}
}  // namespace

TEST_CASE("appendHead writes exactly what Beast's serializer writes") {
  http::request_header<> req;
  req.method(http::verb::post);
  req.target("/a?b=c");
  req.version(11);
  req.set(http::field::host, "svc");
  req.insert("X-Custom", "one");
  req.insert("x-custom", "two");
  req.set(http::field::content_length, "3");
  std::string out = "kept";
  appendHead(out, req);
  CHECK(out == "kept" + beastWrites(req));
  CHECK(out ==
        "keptPOST /a?b=c HTTP/1.1\r\nHost: svc\r\nX-Custom: one\r\nx-custom: two\r\n"
        "Content-Length: 3\r\n\r\n");

  http::request_header<> odd;  // a method Beast does not know, and HTTP/1.0
  odd.method_string("PURGE");
  odd.target("*");
  odd.version(10);
  out.clear();
  appendHead(out, odd);
  CHECK(out == beastWrites(odd));

  http::response_header<> res;
  res.result(http::status::not_found);
  res.version(11);
  res.set(http::field::content_type, "text/plain");
  out.clear();
  appendHead(out, res);
  CHECK(out == beastWrites(res));
  CHECK(out == "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n");

  res.result(299);  // an unknown code, a reason of its own, HTTP/1.0
  res.reason("Fine Enough");
  res.version(10);
  out.clear();
  appendHead(out, res);
  CHECK(out == beastWrites(res));
  CHECK(out.starts_with("HTTP/1.0 299 Fine Enough\r\n"));
}

TEST_CASE("checkRequestHead: a second Expect is refused, not dropped") {
  http::request_header<> h;
  h.method(http::verb::post);
  h.target("/");
  h.version(11);
  h.set(http::field::host, "svc");
  h.insert(http::field::expect, "100-continue");
  CHECK(checkRequestHead(h).empty());
  h.insert(http::field::expect, "100-continue");
  CHECK(checkRequestHead(h) == "Expect repeated");
}

TEST_CASE("response: a repeated or listed Content-Length goes out once") {
  for (auto fields : {std::vector<std::string>{"2", "2"}, std::vector<std::string>{"2, 2"},
                      std::vector<std::string>{" 2 ,2"}}) {
    http::response_header<> h;
    h.result(http::status::ok);
    h.version(11);
    for (auto& f : fields) {
      h.insert(http::field::content_length, f);
    }
    rewriteResponseHead(h, 11, true);
    CHECK(h.count(http::field::content_length) == 1);
    CHECK(h[http::field::content_length] == "2");
  }
  http::response_header<> one;
  one.result(http::status::ok);
  one.version(11);
  one.set(http::field::content_length, "7");
  rewriteResponseHead(one, 11, true);
  CHECK(one[http::field::content_length] == "7");
}

TEST_CASE("underscoreHeaders: counts names with '_', erases them on request") {
  http::fields f;
  f.insert("X_Forwarded_Client_Cert", "forged");
  f.insert("X-Fine", "1");
  f.insert("x_other", "2");
  f.insert(http::field::host, "svc");
  CHECK(underscoreHeaders(f, false) == 2);
  CHECK(f.count("X_Forwarded_Client_Cert") == 1);
  CHECK(underscoreHeaders(f, true) == 2);
  CHECK(f.count("X_Forwarded_Client_Cert") == 0);
  CHECK(f.count("x_other") == 0);
  CHECK(f.count("X-Fine") == 1);
  CHECK(f.count(http::field::host) == 1);
  CHECK(underscoreHeaders(f, true) == 0);
}
