// The server side of a request head (http/read_head.h), shared by the inbound and outbound
// listeners: what each kind of head comes to, over an in-memory stream.
#include "http/read_head.h"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <optional>
#include <string>

#include "http/timed_stream.h"

namespace sidecar {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

using test::TimedStream;

struct Read {
  asio::io_context ioc;
  TimedStream stream{ioc.get_executor()};
  std::optional<TimedStream> peer{std::in_place, ioc.get_executor()};
  beast::flat_buffer buffer;
  http::request_parser<http::buffer_body> req;
  RequestHeadResult result;
  ProxyLimits limits;

  Read() { stream.connect(*peer); }

  // The caller sends `bytes`, then either waits (open) or closes its end.
  void go(std::string_view bytes, bool close = true) {
    peer->write_some(asio::buffer(bytes.data(), bytes.size()));  // test streams take it whole
    if (close) {
      peer->close();
    }
    bool done = false;
    startRequest(stream, req, limits);
    asio::co_spawn(ioc, readRequestHead(stream, buffer, limits.maxHeadBytes),
                   [&](std::exception_ptr e, error_code ec) {
                     REQUIRE_FALSE(e);
                     result = checkRequest(ec, buffer, req, limits);
                     done = true;
                   });
    ioc.run_for(std::chrono::seconds(2));
    REQUIRE(done);
  }
  Expectation expect() {
    std::optional<Expectation> out;
    asio::co_spawn(ioc, answerExpect(stream, req, Duration(1'000)),
                   [&](std::exception_ptr e, Expectation x) {
                     REQUIRE_FALSE(e);
                     out = x;
                   });
    ioc.restart();
    ioc.run_for(std::chrono::seconds(2));
    REQUIRE(out);
    return *out;
  }
  std::string toCaller() const { return std::string(peer->str()); }
};

using Kind = RequestHeadResult::Kind;

TEST_CASE("request head: a good head is parsed whole, its body left to read") {
  Read r;
  r.go("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", false);
  CHECK(r.result.kind == Kind::ok);
  CHECK(r.req.is_header_done());
  CHECK_FALSE(r.req.is_done());
  CHECK(r.req.get().target() == "/x");
}

TEST_CASE("request head: each refusal has its status and a reason") {
  struct Case {
    const char* bytes;
    unsigned status;
    const char* why;
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400, "obsolete line folding"},
      {"GET / HTTP/1.1\r\n\r\n", 400, "Host"},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host"},
      {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.bytes);
    Read r;
    r.go(c.bytes);
    CHECK(r.result.kind == Kind::refused);
    CHECK(r.result.status == c.status);
    CHECK_FALSE(r.result.reason().empty());
    CHECK(r.result.reason().find(c.why) != std::string::npos);
  }
}

TEST_CASE("request head: a body over --max-body-size is refused (413) once the head is read") {
  Read r;
  r.limits.maxBodyBytes = 10;
  r.go("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", false);
  CHECK(r.result.kind == Kind::refused);
  CHECK(r.result.status == 413);
  CHECK(r.result.ec);
}

TEST_CASE("request head: a head over the limit is refused with 431") {
  Read r;
  r.limits.maxHeadBytes = 64;
  r.go("GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + std::string(100, 'x') + "\r\n\r\n");
  CHECK(r.result.kind == Kind::refused);
  CHECK(r.result.status == 431);
}

TEST_CASE("request head: a caller that hangs up mid-head gets nothing") {
  Read r;
  r.go("GET / HTTP/1.1\r\nHos");
  CHECK(r.result.kind == Kind::hungUp);
}

TEST_CASE("request head: underscore names are dropped and counted, or refused") {
  SUBCASE("drop") {
    Read r;
    r.go("GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_Client_Cert: forged\r\nA_b: 1\r\n\r\n");
    CHECK(r.result.kind == Kind::ok);
    CHECK(r.result.underscores == 2);
    CHECK(r.req.get().find("X_Forwarded_Client_Cert") == r.req.get().end());
  }
  SUBCASE("reject") {
    Read r;
    r.limits.underscoreHeaders = UnderscoreHeaders::reject;
    r.go("GET / HTTP/1.1\r\nHost: a\r\nA_b: 1\r\n\r\n");
    CHECK(r.result.kind == Kind::refused);
    CHECK(r.result.status == 400);
    CHECK(r.result.underscores == 1);
  }
  SUBCASE("allow") {
    Read r;
    r.limits.underscoreHeaders = UnderscoreHeaders::allow;
    r.go("GET / HTTP/1.1\r\nHost: a\r\nA_b: 1\r\n\r\n");
    CHECK(r.result.kind == Kind::ok);
    CHECK(r.result.underscores == 0);
    CHECK(r.req.get().find("A_b") != r.req.get().end());
  }
}

TEST_CASE("request head: Expect 100-continue is answered by us and removed; others fail") {
  SUBCASE("100-continue with a body to come") {
    Read r;
    r.go("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", false);
    REQUIRE(r.result.kind == Kind::ok);
    CHECK(r.expect() == Expectation::met);
    CHECK(r.toCaller() == "HTTP/1.1 100 Continue\r\n\r\n");
    CHECK(r.req.get().find(http::field::expect) == r.req.get().end());
  }
  SUBCASE("100-continue with no body: no interim answer") {
    Read r;
    r.go("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false);
    CHECK(r.expect() == Expectation::met);
    CHECK(r.toCaller().empty());
  }
  SUBCASE("another expectation") {
    Read r;
    r.go("POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 3\r\n\r\n",
         false);
    CHECK(r.expect() == Expectation::failed);
    CHECK(r.toCaller().empty());
  }
}

}  // namespace
}  // namespace sidecar
