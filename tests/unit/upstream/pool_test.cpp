// The per-worker connection pool over real loopback sockets: what it hands out, what it closes.
#include "upstream/pool.h"

#include <doctest/doctest.h>

#include <boost/asio/write.hpp>
#include <string>
#include <thread>

namespace sidecar {
namespace {

// A loopback listener and the connections made to it: client ends go to the pool, server ends
// stay here to close or write on.
struct Loopback {
  asio::io_context ioc;
  TcpAcceptor acceptor{ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::vector<TcpSocket> serverEnds;

  tcp::endpoint endpoint() const { return acceptor.local_endpoint(); }
  TcpSocket connect() {
    TcpSocket client(ioc);
    client.connect(endpoint());
    serverEnds.push_back(acceptor.accept());
    return client;
  }
};

// Waits until the kernel has delivered what the peer did (FIN or bytes) to the pooled end.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }

struct Counters {
  prometheus::Gauge idle;
  prometheus::Counter closed;
  prometheus::Counter unsolicited;
  PoolSettings settings(Duration idleTimeout = Duration(30'000), std::size_t maxIdle = 8) {
    return PoolSettings{idleTimeout, maxIdle, &idle, &closed, &unsolicited};
  }
};

TEST_CASE("pool: a connection given back is taken again, for its own endpoint only") {
  Loopback lo;
  Loopback other;
  Counters c;
  ConnectionPool pool(c.settings());
  pool.giveBack(lo.endpoint(), lo.connect());
  CHECK(pool.idle() == 1);
  CHECK(c.idle.Value() == 1);
  CHECK_FALSE(pool.take(other.endpoint()));
  auto s = pool.take(lo.endpoint());
  REQUIRE(s);
  CHECK(s->is_open());
  CHECK(pool.idle() == 0);
  CHECK(c.idle.Value() == 0);
}

TEST_CASE("pool: the most recently returned connection goes out first") {
  Loopback lo;
  Counters c;
  ConnectionPool pool(c.settings());
  auto a = lo.connect();
  auto b = lo.connect();
  const auto bPort = b.local_endpoint().port();
  pool.giveBack(lo.endpoint(), std::move(a));
  pool.giveBack(lo.endpoint(), std::move(b));
  auto s = pool.take(lo.endpoint());
  REQUIRE(s);
  CHECK(s->local_endpoint().port() == bPort);
}

TEST_CASE("pool: a connection the upstream closed, or that holds bytes, is never handed out") {
  Loopback lo;
  Counters c;
  ConnectionPool pool(c.settings());
  pool.giveBack(lo.endpoint(), lo.connect());  // will be closed by its peer
  pool.giveBack(lo.endpoint(), lo.connect());  // will hold an unsolicited answer
  lo.serverEnds[0].close();
  asio::write(lo.serverEnds[1], asio::buffer(std::string_view("HTTP/1.1 200 OK\r\n\r\n")));
  settle();
  CHECK_FALSE(pool.take(lo.endpoint()));
  CHECK(c.closed.Value() == 1);
  CHECK(c.unsolicited.Value() == 1);
  CHECK(pool.idle() == 0);
  CHECK(c.idle.Value() == 0);
}

TEST_CASE("pool: once swept, an idle connection is closed the moment a byte or EOF arrives") {
  Loopback lo;
  Counters c;
  ConnectionPool pool(c.settings());
  pool.giveBack(lo.endpoint(), lo.connect());
  pool.giveBack(lo.endpoint(), lo.connect());
  pool.giveBack(lo.endpoint(), lo.connect());
  pool.sweep();  // all clean: kept, and watched from now on
  lo.ioc.poll();
  CHECK(pool.idle() == 3);
  // A late answer on one, a close on another: no take and no sweep, only the watch sees them.
  asio::write(lo.serverEnds[0], asio::buffer(std::string_view("HTTP/1.1 200 OK\r\n\r\n")));
  lo.serverEnds[1].close();
  settle();
  lo.ioc.poll();
  CHECK(pool.idle() == 1);
  CHECK(c.unsolicited.Value() == 1);
  CHECK(c.closed.Value() == 1);
  CHECK(c.idle.Value() == 1);
  // The one left is still clean, and its watch ends when it is taken.
  auto s = pool.take(lo.endpoint());
  REQUIRE(s);
  lo.ioc.poll();
  asio::write(lo.serverEnds[2], asio::buffer(std::string_view("x")));
  settle();
  lo.ioc.poll();
  CHECK(s->is_open());
  CHECK(c.unsolicited.Value() == 1);
}

TEST_CASE("pool: a connection serves one owner; another owner never gets it") {
  Loopback lo;
  Counters c;
  ConnectionPool pool(c.settings());
  pool.giveBack(lo.endpoint(), lo.connect(), "spiffe://a");
  CHECK_FALSE(pool.take(lo.endpoint(), "spiffe://b"));
  CHECK_FALSE(pool.take(lo.endpoint()));
  CHECK(pool.idle(lo.endpoint(), "spiffe://a") == 1);
  CHECK(pool.take(lo.endpoint(), "spiffe://a"));
  // Many owners: the total bound holds over all of them, and quiet owners leave no bucket.
  for (int i = 0; i < 20; ++i) {
    pool.giveBack(lo.endpoint(), lo.connect(), "spiffe://owner/" + std::to_string(i));
  }
  CHECK(pool.idle() == 8);
  // At the bound the oldest idle connection (a caller that has likely gone) makes room for the
  // caller giving one back: the newest owners are kept.
  CHECK(pool.idle(lo.endpoint(), "spiffe://owner/19") == 1);
  CHECK(pool.idle(lo.endpoint(), "spiffe://owner/12") == 1);
  CHECK(pool.idle(lo.endpoint(), "spiffe://owner/11") == 0);
  CHECK(pool.idle(lo.endpoint(), "spiffe://owner/0") == 0);
  pool.clear();
  lo.ioc.poll();
  pool.sweep();
  CHECK(pool.idle() == 0);
}

TEST_CASE("pool: a watch that completes after its pool is gone does nothing") {
  Loopback lo;
  Counters c;
  {
    ConnectionPool pool(c.settings());
    pool.giveBack(lo.endpoint(), lo.connect());
    pool.sweep();
    asio::write(lo.serverEnds[0], asio::buffer(std::string_view("late")));
    settle();
  }
  lo.ioc.poll();  // the wait's completion runs now, after the pool: no use of it
  CHECK(c.unsolicited.Value() == 0);
}

TEST_CASE("pool: the sweep closes what the upstream closed and what is past its idle time") {
  Loopback lo;
  Counters c;
  ConnectionPool pool(c.settings());
  pool.giveBack(lo.endpoint(), lo.connect());
  pool.giveBack(lo.endpoint(), lo.connect());
  lo.serverEnds[0].close();
  settle();
  pool.sweep();
  CHECK(pool.idle() == 1);
  CHECK(c.closed.Value() == 1);

  Counters quick;
  ConnectionPool expiring(quick.settings(Duration(1)));
  expiring.giveBack(lo.endpoint(), lo.connect());
  settle();
  expiring.sweep();
  CHECK(expiring.idle() == 0);
  CHECK(quick.idle.Value() == 0);
  CHECK_FALSE(expiring.take(lo.endpoint()));
}

TEST_CASE("pool: no more idle connections than the bound are kept") {
  Loopback lo;
  Counters c;
  ConnectionPool pool(c.settings(Duration(30'000), 2));
  for (int i = 0; i < 4; ++i) {
    pool.giveBack(lo.endpoint(), lo.connect());
  }
  CHECK(pool.idle() == 2);
  CHECK(c.idle.Value() == 2);
  pool.clear();
  CHECK(c.idle.Value() == 0);
}

TEST_CASE("pool: pools that share a bound keep no more idle connections together") {
  Loopback lo;
  Counters c;
  std::size_t shared = 0;
  auto settings = c.settings(Duration(30'000), 3);
  settings.sharedIdle = &shared;
  {
    ConnectionPool a(settings);
    ConnectionPool b(settings);
    a.giveBack(lo.endpoint(), lo.connect());
    a.giveBack(lo.endpoint(), lo.connect());
    b.giveBack(lo.endpoint(), lo.connect());
    b.giveBack(lo.endpoint(), lo.connect());  // over the shared bound: closed
    CHECK(a.idle() == 2);
    CHECK(b.idle() == 1);
    CHECK(shared == 3);
    REQUIRE(a.take(lo.endpoint()));
    CHECK(shared == 2);
    b.giveBack(lo.endpoint(), lo.connect());  // room again
    CHECK(b.idle() == 2);
    CHECK(shared == 3);
  }
  CHECK(shared == 0);  // pools gone: their connections too
}

TEST_CASE("pool: requests in flight are counted per endpoint") {
  Loopback a;
  Loopback b;
  Counters c;
  ConnectionPool pool(c.settings());
  pool.started(a.endpoint());
  pool.started(a.endpoint());
  pool.started(b.endpoint());
  pool.finished(a.endpoint());
  CHECK(pool.inFlight(a.endpoint()) == 1);
  CHECK(pool.inFlight(b.endpoint()) == 1);
  pool.finished(a.endpoint());
  pool.finished(b.endpoint());
  pool.sweep();  // empty endpoints leave no trace
  CHECK(pool.inFlight(a.endpoint()) == 0);
}

}  // namespace
}  // namespace sidecar
