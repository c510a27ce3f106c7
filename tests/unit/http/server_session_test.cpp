// The HTTP/1.1 server template (http/server_session.h) that the inbound and outbound listeners
// share: its request loop and head stage over an in-memory stream, with a session whose hooks
// record what the template asked of them.
#include "http/server_session.h"

#include <doctest/doctest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/write.hpp>
#include <optional>
#include <string>
#include <vector>

#include "http/local_reply.h"
#include "http/timed_stream.h"

namespace sidecar {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

using test::TimedStream;

constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

class TestSession final : public Http1Server<TestSession, TimedStream> {
 public:
  TestSession(asio::io_context& ioc, const ProxyLimits& limits)
      : Http1Server(limits, 16 * 1024), stream(ioc.get_executor()) {}

  awaitable<void> run() { co_await serveRequests(); }

  // The hooks.
  TimedStream& callerStream() { return stream; }
  awaitable<bool> awaitRequest() {
    ++waits;
    auto [ec, n] = co_await stream.async_read_some(buffer_.prepare(2048), useTuple);
    buffer_.commit(n);
    co_return !ec;
  }
  void requestBegins() { ++begun; }
  void headRead(Parser&, const RequestHeadResult& head) { underscores += head.underscores; }
  unsigned admit(Parser& req, const RequestHeadResult& head) {
    if (head.kind == RequestHeadResult::Kind::refused) {
      return head.status;
    }
    return std::string_view(req.get().target()) == "/forbidden" ? 403 : 0;
  }
  awaitable<void> answerLocal(unsigned status) {
    answered.push_back(status);
    co_await asio::async_write(stream, asio::buffer(localReplyBytes(status)), useTuple);
  }
  awaitable<bool> handle(Parser& req) {
    handled.emplace_back(req.get().target());
    // The body, if any, is the exchange's to read; here it is read away.
    while (!req.is_done()) {
      char body[64];
      req.get().body().data = body;
      req.get().body().size = sizeof body;
      auto [ec, n] = co_await http::async_read_some(stream, buffer_, req, useTuple);
      if (ec && ec != http::error::need_buffer) {
        co_return false;
      }
    }
    co_await asio::async_write(stream, asio::buffer(kOk), useTuple);
    co_return req.get().keep_alive();
  }

  TimedStream stream;
  int waits = 0;
  int begun = 0;
  std::size_t underscores = 0;
  std::vector<unsigned> answered;
  std::vector<std::string> handled;
};

struct Serve {
  asio::io_context ioc;
  ProxyLimits limits;
  std::optional<TestSession> session;
  std::optional<TimedStream> peer{std::in_place, ioc.get_executor()};

  Serve() {
    session.emplace(ioc, limits);
    session->stream.connect(*peer);
  }

  // The caller sends `bytes` and closes its end; the session serves until it stops.
  void go(std::string_view bytes) {
    peer->write_some(asio::buffer(bytes.data(), bytes.size()));  // test streams take it whole
    peer->close();
    bool done = false;
    asio::co_spawn(ioc, session->run(), [&](std::exception_ptr e) {
      REQUIRE_FALSE(e);
      done = true;
    });
    ioc.run_for(std::chrono::seconds(2));
    REQUIRE(done);
  }
  std::string toCaller() const { return std::string(peer->str()); }
};

TEST_CASE("HTTP/1 server: keep-alive requests are served in turn until the caller leaves") {
  Serve s;
  s.go(
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n"
      "abcGET /c HTTP/1.0\r\n\r\nGET /never HTTP/1.1\r\nHost: x\r\n\r\n");
  // HTTP/1.0 without keep-alive ends the connection: the fourth request is not served.
  CHECK(s.session->handled == std::vector<std::string>{"/a", "/b", "/c"});
  CHECK(s.session->answered.empty());
  CHECK(s.session->begun == 3);
  CHECK(s.toCaller() == std::string(kOk) + std::string(kOk) + std::string(kOk));
}

TEST_CASE("HTTP/1 server: a refused head is answered from the table and the connection ends") {
  struct Case {
    const char* bytes;
    unsigned status;
  };
  for (const auto& c : {
           Case{"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
           Case{"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400},  // obsolete folding
           Case{"NOT HTTP\r\n\r\n", 400},
           Case{"GET /forbidden HTTP/1.1\r\nHost: x\r\n\r\n", 403},  // the session's admission
           Case{"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417},
       }) {
    CAPTURE(c.bytes);
    Serve s;
    s.go(std::string(c.bytes) + "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(s.session->answered == std::vector<unsigned>{c.status});
    CHECK(s.session->handled.empty());
    CHECK(s.toCaller() == localReplyBytes(c.status));
  }
}

TEST_CASE("HTTP/1 server: a head over the limit is refused with 431 before it is parsed") {
  Serve s;
  s.limits.maxHeadBytes = 256;
  s.go("GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + std::string(400, 'a') + "\r\n\r\n");
  CHECK(s.session->answered == std::vector<unsigned>{431});
  CHECK(s.session->handled.empty());
}

TEST_CASE("HTTP/1 server: a caller that hangs up mid-head gets no answer") {
  Serve s;
  s.go("GET / HTTP/1.1\r\nHost: x\r\n");
  CHECK(s.session->answered.empty());
  CHECK(s.session->handled.empty());
  CHECK(s.toCaller().empty());
}

TEST_CASE("HTTP/1 server: 100-continue is answered by the server, and the field dropped") {
  Serve s;
  s.go("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
  CHECK(s.session->handled == std::vector<std::string>{"/up"});
  CHECK(s.toCaller() == "HTTP/1.1 100 Continue\r\n\r\n" + std::string(kOk));
}

TEST_CASE("HTTP/1 server: header names with '_' are reported to the session once per head") {
  Serve s;
  s.go("GET / HTTP/1.1\r\nHost: x\r\nX_A: 1\r\nX_B: 2\r\nConnection: close\r\n\r\n");
  CHECK(s.session->underscores == 2);
  CHECK(s.session->handled.size() == 1);
}

}  // namespace
}  // namespace sidecar
