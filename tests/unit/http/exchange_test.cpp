// The exchange core (http/exchange.h) between two in-memory streams: what reaches the upstream,
// what reaches the caller, and what the result says about both connections.
#include "http/exchange.h"

#include <doctest/doctest.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <optional>
#include <string>

namespace sidecar {
namespace {

using TestStream = beast::test::basic_stream<IoExecutor>;
using Failure = ExchangeResult::Failure;

// The upstream side: a pooled connection (maybe already closed by the peer), then fresh ones.
struct TestLink {
  using stream_type = TestStream;
  asio::io_context& ioc;
  std::optional<TestStream> pooled;       // handed out by takePooled, once
  std::vector<std::string> freshAnswers;  // what each new connection's peer has answered
  error_code connectError;
  std::optional<TestStream> current;
  std::optional<TestStream> peer;     // the upstream server's end of `current`
  std::vector<std::string> received;  // what each connection's peer got, in order
  int connects = 0;
  std::optional<bool> releasedReusable;

  TestStream& stream() { return *current; }
  void retire() {
    if (peer) {
      received.emplace_back(peer->str());
    }
    current.reset();
    peer.reset();
  }
  bool takePooled() {
    retire();
    if (!pooled) {
      return false;
    }
    current.emplace(std::move(*pooled));
    pooled.reset();
    return true;
  }
  awaitable<error_code> connect() {
    retire();
    ++connects;
    if (connectError) {
      co_return connectError;
    }
    current.emplace(ioc.get_executor());
    peer.emplace(ioc.get_executor());
    current->connect(*peer);
    if (!freshAnswers.empty()) {
      current->append(freshAnswers.front());
      freshAnswers.erase(freshAnswers.begin());
    }
    peer->close();  // the answer is all the upstream will ever send
    co_return error_code{};
  }
  void release(bool reusable) {
    releasedReusable = reusable;
    retire();
  }
};

struct TestRelay {
  std::array<char, 16 * 1024> buf{};
  char* get() { return buf.data(); }
  static constexpr std::size_t size() { return 16 * 1024; }
};

// One exchange: `request` is what the caller sent (head and any body), the answers what each
// fresh upstream connection will answer.
struct Run {
  asio::io_context ioc;
  TestStream caller{ioc.get_executor()};
  std::optional<TestStream> callerPeer{std::in_place, ioc.get_executor()};
  TestLink link{ioc, {}, {}, {}, {}, {}, {}, 0, {}};
  TestRelay relay;
  beast::flat_buffer callerBuf;
  beast::flat_buffer upBuf;
  std::string out;
  http::request_parser<http::buffer_body> req;
  ExchangeResult result;
  ExchangeRequest info;
  ExchangeLimits limits;

  Run() { caller.connect(*callerPeer); }

  // Parses the head from `request` (as the session does) and leaves the rest for the body.
  void go(std::string_view request, std::uint64_t bodyLimit = 1 << 20) {
    req.body_limit(bodyLimit);
    auto b = callerBuf.prepare(request.size());
    std::memcpy(b.data(), request.data(), request.size());
    callerBuf.commit(request.size());
    error_code ec;
    req.eager(false);
    callerBuf.consume(req.put(callerBuf.data(), ec));
    REQUIRE_FALSE(ec);
    REQUIRE(req.is_header_done());
    if (callerPeer) {
      callerPeer->close();  // the caller sends nothing more than `request`
    }
    info.isHead = req.get().method() == http::verb::head;
    info.clientVersion = req.get().version();
    info.clientKeepAlive = req.get().keep_alive();
    bool done = false;
    asio::co_spawn(
        ioc,
        runExchange(caller, req, info, link, relay, ExchangeBuffers{callerBuf, upBuf, out}, limits),
        [&](std::exception_ptr e, ExchangeResult r) {
          REQUIRE_FALSE(e);
          result = r;
          done = true;
        });
    ioc.run_for(std::chrono::seconds(5));
    REQUIRE(done);
  }
  std::string toCaller() const { return callerPeer ? std::string(callerPeer->str()) : ""; }
  std::string toUpstream() const { return link.received.empty() ? "" : link.received.back(); }
};

TEST_CASE("exchange: a Content-Length answer is relayed and both connections stay usable") {
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong"};
  t.go("GET /ping HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::none);
  CHECK(t.result.status == 200);
  CHECK(t.result.keepAlive);
  CHECK(t.result.responseBytes == 4);
  CHECK(t.link.releasedReusable == true);
  CHECK(t.toUpstream().starts_with("GET /ping HTTP/1.1\r\n"));
  CHECK(t.toCaller().starts_with("HTTP/1.1 200 OK\r\n"));
  CHECK(t.toCaller().ends_with("\r\n\r\npong"));
}

TEST_CASE("exchange: a chunked answer is re-chunked for an HTTP/1.1 caller") {
  Run t;
  t.link.freshAnswers = {
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n3\r\n!!!\r\n0\r\n\r\n"};
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::none);
  CHECK(t.result.responseBytes == 7);
  const auto caller = t.toCaller();
  CHECK(caller.find("pong") != std::string::npos);
  CHECK(caller.find("!!!") != std::string::npos);
  CHECK(caller.ends_with("0\r\n\r\n"));
  CHECK(t.link.releasedReusable == true);
}

TEST_CASE(
    "exchange: an HTTP/1.0 caller gets a chunked answer unchunked, and the connection closes") {
  Run t;
  t.link.freshAnswers = {
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npong\r\n0\r\n\r\n"};
  t.go("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::none);
  CHECK_FALSE(t.result.keepAlive);
  const auto caller = t.toCaller();
  CHECK(caller.starts_with("HTTP/1.0 200"));
  CHECK(caller.find("chunked") == std::string::npos);
  CHECK(caller.ends_with("pong"));
}

TEST_CASE(
    "exchange: a 204 with Transfer-Encoding reaches the caller with neither body nor framing") {
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"};
  t.go("DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.status == 204);
  const auto caller = t.toCaller();
  CHECK(caller.find("Transfer-Encoding") == std::string::npos);
  CHECK(caller.ends_with("\r\n\r\n"));
  CHECK(caller.find("0\r\n\r\n") == std::string::npos);
}

TEST_CASE("exchange: a HEAD answer is its head only, whatever Content-Length says") {
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"};
  t.go("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::none);
  CHECK(t.result.responseBytes == 0);
  CHECK(t.toCaller().ends_with("Content-Length: 100\r\n\r\n"));
  CHECK(t.link.releasedReusable == true);
}

TEST_CASE("exchange: interim 1xx answers are skipped; the caller sees only the final one") {
  Run t;
  t.link.freshAnswers = {
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"};
  t.go("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  CHECK(t.result.failure == Failure::none);
  CHECK(t.result.status == 201);
  CHECK(t.result.requestBytes == 3);
  CHECK(t.toCaller().starts_with("HTTP/1.1 201 Created\r\n"));
  CHECK(t.toCaller().find("100 Continue") == std::string::npos);
  CHECK(t.toUpstream().ends_with("\r\n\r\nabc"));
}

TEST_CASE("exchange: an upstream that closes mid-body ends the caller's connection") {
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"};
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::upstreamBody);
  CHECK(t.result.status == 200);  // its head went out: counted as the upstream's answer
  CHECK(t.result.localStatus == 0);
  CHECK_FALSE(t.result.keepAlive);
  CHECK(t.link.releasedReusable == false);
}

TEST_CASE("exchange: an upstream that closes before answering is a 502, never the next answer") {
  Run t;
  t.link.freshAnswers = {""};
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::upstream);
  CHECK(t.result.localStatus == 502);
  CHECK(t.result.status == 0);
  CHECK(t.toCaller().empty());  // the handler writes the 502
}

TEST_CASE("exchange: a refused connection is a 502, a connect timeout a 504") {
  Run t;
  t.link.connectError = asio::error::connection_refused;
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::connect);
  CHECK(t.result.localStatus == 502);

  Run slow;
  slow.link.connectError = beast::error::timeout;
  slow.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(slow.result.localStatus == 504);
}

TEST_CASE(
    "exchange: a stale pooled connection is retried once on a new one, for an idempotent request") {
  Run t;
  TestStream stale(t.ioc.get_executor());
  TestStream stalePeer(t.ioc.get_executor());
  stale.connect(stalePeer);
  stalePeer.close();  // the local service closed it while it sat in the pool
  t.link.pooled.emplace(std::move(stale));
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::none);
  CHECK(t.result.staleRetries == 1);
  CHECK(t.link.connects == 1);
  CHECK(t.toCaller().ends_with("ok"));
}

TEST_CASE("exchange: a POST on a stale pooled connection is not sent twice") {
  Run t;
  TestStream stale(t.ioc.get_executor());
  TestStream stalePeer(t.ioc.get_executor());
  stale.connect(stalePeer);
  stalePeer.close();
  t.link.pooled.emplace(std::move(stale));
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
  t.go("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
  CHECK(t.result.failure == Failure::upstream);
  CHECK(t.result.localStatus == 502);
  CHECK(t.link.connects == 0);
}

TEST_CASE("exchange: bytes past the end of the answer close the upstream connection") {
  Run t;
  t.link.freshAnswers = {
      "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"};
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.status == 204);
  CHECK(t.result.unsolicited);
  CHECK(t.link.releasedReusable == false);
  CHECK(t.toCaller().find("evil") == std::string::npos);
}

TEST_CASE("exchange: a chunked request body that grows over the limit is a 413") {
  // (A Content-Length over the limit is refused with the head, before any exchange.)
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
  t.go(
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
      "chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
      4);
  CHECK(t.result.failure == Failure::requestTooLarge);
  CHECK(t.result.localStatus == 413);
  CHECK(t.link.releasedReusable == false);
}

TEST_CASE("exchange: a malformed chunked request body is a 400") {
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"};
  t.go("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
  CHECK(t.result.failure == Failure::requestMalformed);
  CHECK(t.result.localStatus == 400);
}

TEST_CASE(
    "exchange: a caller that is gone before its answer leaves the upstream connection unused") {
  Run t;
  t.link.freshAnswers = {"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npong"};
  t.callerPeer.reset();  // the caller's end is gone: writing the answer fails
  t.go("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  CHECK(t.result.failure == Failure::callerGone);
  CHECK(t.result.status == 0);
  CHECK(t.link.releasedReusable == false);
}

}  // namespace
}  // namespace sidecar
