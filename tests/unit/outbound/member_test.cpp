// MemberConnection (outbound/member.h) against a real TLS member on loopback: what open() counts
// and refuses, and the rules by which release() pools a connection and keeps its TLS session.
#include "outbound/member.h"

#include <doctest/doctest.h>
#include <prometheus/registry.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "net/identity.h"
#include "net/test_certs.h"
#include "net/tls_context.h"

namespace sidecar {
namespace {

using namespace std::chrono_literals;
namespace ssl = boost::asio::ssl;

constexpr auto kMemberIdentity = "spiffe://test/member";

std::shared_ptr<ssl::context> contextOf(std::variant<TlsContext, std::string> made) {
  if (auto* error = std::get_if<std::string>(&made)) {
    FAIL(*error);
  }
  return std::get<TlsContext>(made).ssl;
}

// Made once for the whole binary: key generation and context set-up are most of the cost.
struct Pki {
  test::TempDir dir;
  test::TestCa ca{"test ca"};
  std::shared_ptr<ssl::context> member;     // spiffe://test/member
  std::shared_ptr<ssl::context> restarted;  // the same certificate, other ticket keys
  std::shared_ptr<ssl::context> other;      // spiffe://test/other, from the same CA
  std::shared_ptr<ssl::context> client;     // what the worker connects with
  std::shared_ptr<ssl::context> rotated;    // the worker's context after a rotation

  Pki() {
    auto files = [&](const char* name, const char* san) {
      return test::writeTlsFiles(dir, name, ca.issue(name, san), ca);
    };
    const TlsFiles memberFiles = files("member", "URI:spiffe://test/member");
    member = contextOf(makeServerTlsContext(memberFiles));
    restarted = contextOf(makeServerTlsContext(memberFiles));
    other = contextOf(makeServerTlsContext(files("other", "URI:spiffe://test/other")));
    const TlsFiles callerFiles = files("caller", "URI:spiffe://test/caller");
    client = contextOf(makeClientTlsContext(callerFiles));
    rotated = contextOf(makeClientTlsContext(callerFiles));
  }
};

Pki& pki() {
  static Pki p;
  return p;
}

// A member of a route: a TLS server on 127.0.0.1 that answers each "ping" with "pong".
class MemberServer {
 public:
  enum class Mode {
    answer,          // "pong"
    answerAndLater,  // "pong", then a second record nobody asked for
    silent,          // accepts, never shakes hands
  };

  MemberServer(asio::io_context& ioc, ssl::context& tls)
      : ioc_(ioc),
        tls_(&tls),
        acceptor_(ioc.get_executor(), {asio::ip::make_address("127.0.0.1"), 0}) {
    endpoint_ = acceptor_.local_endpoint();
    asio::co_spawn(ioc_, acceptLoop(), asio::detached);
  }
  ~MemberServer() { stop(); }

  const tcp::endpoint& endpoint() const { return endpoint_; }
  // The context of connections accepted from now on (a restart, or another certificate).
  void use(ssl::context& tls) { tls_ = &tls; }
  Mode mode = Mode::answer;
  std::size_t accepted = 0;
  std::size_t answered = 0;  // answers written whole, with what follows them

  // Closes everything and lets its coroutines end, while the io_context is still there.
  void stop() {
    error_code ignored;
    acceptor_.close(ignored);
    for (auto& s : silent_) {
      s.close(ignored);
    }
    for (auto& c : conns_) {
      c.lowest_layer().socket().close(ignored);
    }
    ioc_.restart();
    ioc_.poll();
  }

 private:
  awaitable<void> acceptLoop() {
    for (;;) {
      TcpSocket socket(ioc_.get_executor());
      auto [ec] = co_await acceptor_.async_accept(socket, useTuple);
      if (ec) {
        co_return;
      }
      ++accepted;
      error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);  // as a member would; no 40 ms stalls
      if (mode == Mode::silent) {
        silent_.push_back(std::move(socket));
        continue;
      }
      auto& s = conns_.emplace_back(std::move(socket), *tls_);
      asio::co_spawn(ioc_, serve(s), asio::detached);
    }
  }

  awaitable<void> serve(TlsStream& s) {
    if (auto [ec] = co_await s.async_handshake(useTuple); ec) {
      co_return;
    }
    for (;;) {
      char request[4];
      if (auto [ec, n] = co_await asio::async_read(s, asio::buffer(request), useTuple); ec) {
        co_return;
      }
      if (auto [ec, n] = co_await asio::async_write(s, asio::buffer("pong", 4), useTuple); ec) {
        co_return;
      }
      if (mode == Mode::answerAndLater) {
        if (auto [ec, n] = co_await asio::async_write(s, asio::buffer("late", 4), useTuple); ec) {
          co_return;
        }
      }
      ++answered;
    }
  }

  asio::io_context& ioc_;
  ssl::context* tls_;
  TcpAcceptor acceptor_;
  tcp::endpoint endpoint_;
  std::list<TlsStream> conns_;
  std::vector<TcpSocket> silent_;
};

// One call over a member connection: "ping", and the answer's first four bytes. With
// waitFor, the answer is read only once the server has written that many answers whole (and
// what follows them), so that everything it wrote is on the socket when the read starts.
awaitable<error_code> ping(TlsStream& s, const MemberServer* waitFor = nullptr,
                           std::size_t answers = 0) {
  if (auto [ec, n] = co_await asio::async_write(s, asio::buffer("ping", 4), useTuple); ec) {
    co_return ec;
  }
  SteadyTimer timer(s.get_executor());
  while (waitFor && waitFor->answered < answers) {
    timer.expires_after(1ms);
    co_await timer.async_wait(useTuple);
  }
  char answer[4];
  auto [ec, n] = co_await asio::async_read(s, asio::buffer(answer), useTuple);
  if (ec) {
    co_return ec;
  }
  co_return std::string_view(answer, n) == "pong" ? error_code{}
                                                  : error_code(asio::error::invalid_argument);
}

std::shared_ptr<const RouteInfo> routeInfo(std::string name, std::size_t slot) {
  return std::make_shared<const RouteInfo>(RouteInfo{std::move(name), kMemberIdentity, slot});
}

const std::shared_ptr<const Addr> kAddr = std::make_shared<const Addr>(Addr::pending());

struct Fixture {
  asio::io_context ioc;
  prometheus::Registry registry;
  OutboundMetrics metrics{registry, 3, 1};
  static constexpr std::size_t kSlot = 1;
  OutboundHandler::Route route{routeInfo("members", kSlot), kAddr, 1, PoolSettings{}};
  MemberServer server{ioc, *pki().member};

  // As in the sidecar (control/server.cpp): a write to a connection the peer has closed (a
  // member's ticket to a client that went away, once a check has failed) is an error, not the
  // end of the process.
  Fixture() { std::signal(SIGPIPE, SIG_IGN); }

  tcp::endpoint member() const { return server.endpoint(); }

  // Runs a until it completes (5 s at most); with sweep, as the worker's sweep does, every few
  // milliseconds.
  template <class T>
  T run(awaitable<T> a, MemberConnection* sweep = nullptr) {
    auto out = std::make_shared<std::optional<T>>();
    auto failed = std::make_shared<std::exception_ptr>();
    asio::co_spawn(ioc, std::move(a), [out, failed](std::exception_ptr e, T v) {
      *failed = e;
      out->emplace(std::move(v));
    });
    ioc.restart();
    const auto giveUp = std::chrono::steady_clock::now() + 5s;
    while (!*out && std::chrono::steady_clock::now() < giveUp) {
      ioc.run_one_for(5ms);
      if (sweep) {
        sweep->expireIfDue(DeadlineSocket::Clock::now());
      }
    }
    if (*failed) {
      std::rethrow_exception(*failed);
    }
    REQUIRE(out->has_value());
    return **out;
  }

  error_code open(MemberConnection& c, OutboundHandler::Route& r, const tcp::endpoint& e,
                  Duration timeout = Duration(2'000)) {
    return run(c.open(r, e, pki().client, "member", timeout, metrics, 0), &c);
  }
  error_code open(MemberConnection& c) { return open(c, route, member()); }
  error_code ping(MemberConnection& c) { return run(sidecar::ping(c.stream())); }

  std::uint64_t connects() const { return metrics.connects.value(kSlot); }
  std::uint64_t failures(std::size_t reason) const {
    return metrics.handshakeFailures.value(OutboundMetrics::handshakeSeries(kSlot, reason));
  }
  std::uint64_t allFailures() const {
    std::uint64_t n = 0;
    for (std::size_t r = 0; r < OutboundMetrics::kHandshakeReasons; ++r) {
      n += failures(r);
    }
    return n;
  }
  static std::size_t reason(HandshakeFailure f) { return static_cast<std::size_t>(f); }
};

std::string peerIdentity(TlsStream& s) {
  return peerIdentityFromCert(SSL_get0_peer_certificate(s.native_handle())).identity;
}

TEST_CASE("member: open() connects and shakes hands with the member, counted in connects") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  CHECK_FALSE(c.open());
  REQUIRE_FALSE(f.open(c));
  REQUIRE(c.open());
  CHECK(peerIdentity(c.stream()) == kMemberIdentity);
  CHECK_FALSE(c.stream().sessionReused());
  CHECK(f.ping(c) == error_code{});
  CHECK(f.server.accepted == 1);
  CHECK(f.connects() == 1);
  CHECK(f.metrics.connects.value(0) == 0);  // the route's series, no other
  CHECK(f.allFailures() == 0);
}

TEST_CASE("member: a member with another identity is refused, counted as wrong_identity") {
  Fixture f;
  f.server.use(*pki().other);
  MemberConnection c(f.ioc.get_executor());
  CHECK(f.open(c) == TlsError::wrong_peer_identity);
  CHECK_FALSE(c.open());
  CHECK(f.failures(OutboundMetrics::kWrongIdentity) == 1);
  CHECK(f.allFailures() == 1);
  CHECK(f.connects() == 0);
  CHECK(f.route.session(f.member()) == nullptr);

  // The same member with the route's identity is accepted: it was the identity.
  f.server.use(*pki().member);
  REQUIRE_FALSE(f.open(c));
  CHECK(c.open());
  CHECK(f.connects() == 1);
  CHECK(f.failures(OutboundMetrics::kWrongIdentity) == 1);
}

TEST_CASE("member: a connect to a closed port fails, and no handshake is counted") {
  Fixture f;
  tcp::endpoint closed;
  {
    TcpAcceptor a(f.ioc.get_executor(), {asio::ip::make_address("127.0.0.1"), 0});
    closed = a.local_endpoint();
  }
  MemberConnection c(f.ioc.get_executor());
  CHECK(f.open(c, f.route, closed) == asio::error::connection_refused);
  CHECK_FALSE(c.open());
  CHECK(f.connects() == 0);
  CHECK(f.allFailures() == 0);
}

TEST_CASE("member: a member that accepts and never shakes hands times out within the timeout") {
  Fixture f;
  f.server.mode = MemberServer::Mode::silent;
  MemberConnection c(f.ioc.get_executor());
  const auto timeout = Duration(60);
  const auto start = std::chrono::steady_clock::now();
  CHECK(f.open(c, f.route, f.member(), timeout) == boost::beast::error::timeout);
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= timeout);
  CHECK(took < timeout + 300ms);  // a sweep period late at most, and some slack
  CHECK(f.server.accepted == 1);
  CHECK_FALSE(c.open());
  CHECK(f.failures(Fixture::reason(HandshakeFailure::Timeout)) == 1);
  CHECK(f.allFailures() == 1);
  CHECK(f.connects() == 0);
}

TEST_CASE("member: a reusable connection is pooled, and takePooled() hands back the same one") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(c));
  REQUIRE(f.ping(c) == error_code{});
  SSL* ssl = c.stream().native_handle();
  c.release(f.route, f.member(), true, *pki().client);
  CHECK_FALSE(c.open());
  CHECK(f.route.pool.idle(f.member()) == 1);

  MemberConnection again(f.ioc.get_executor());
  REQUIRE(again.takePooled(f.route, f.member()));
  REQUIRE(again.open());
  CHECK(again.stream().native_handle() == ssl);
  CHECK(f.route.pool.idle(f.member()) == 0);
  CHECK(f.ping(again) == error_code{});
  CHECK(f.server.accepted == 1);  // no new connection
  CHECK(f.connects() == 1);
}

TEST_CASE("member: a connection that is not reusable is not pooled; its session is kept") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(c));
  REQUIRE(f.ping(c) == error_code{});
  c.release(f.route, f.member(), false, *pki().client);
  CHECK_FALSE(c.open());
  CHECK(f.route.pool.idle(f.member()) == 0);
  CHECK_FALSE(c.takePooled(f.route, f.member()));
  CHECK(f.route.session(f.member()) != nullptr);
}

TEST_CASE("member: a connection of a TLS context since rotated is not pooled, nor its session") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(c));
  REQUIRE(f.ping(c) == error_code{});
  c.release(f.route, f.member(), true, *pki().rotated);
  CHECK_FALSE(c.open());
  CHECK(f.route.pool.idle(f.member()) == 0);
  CHECK_FALSE(c.takePooled(f.route, f.member()));
  CHECK(f.route.session(f.member()) == nullptr);
}

TEST_CASE("member: OpenSSL holding records past the answer: out of step, not pooled") {
  Fixture f;
  f.server.mode = MemberServer::Mode::answerAndLater;
  MemberConnection c(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(c));
  // Both records are on the socket before the read: read-ahead takes them together, the answer
  // is read and the second record stays in OpenSSL's buffer, the socket itself empty.
  REQUIRE(f.run(ping(c.stream(), &f.server, 1)) == error_code{});
  REQUIRE(SSL_has_pending(c.stream().native_handle()) == 1);
  CHECK(pooledState(lowestSocket(c.stream())) == PooledState::clean);  // a peek sees nothing
  c.release(f.route, f.member(), true, *pki().client);
  CHECK_FALSE(c.open());
  CHECK(f.route.pool.idle(f.member()) == 0);
  CHECK_FALSE(c.takePooled(f.route, f.member()));
}

TEST_CASE("member: takePooled() gets nothing from an empty pool, nor another route's connection") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  CHECK_FALSE(c.takePooled(f.route, f.member()));
  CHECK_FALSE(c.open());

  REQUIRE_FALSE(f.open(c));
  REQUIRE(f.ping(c) == error_code{});
  c.release(f.route, f.member(), true, *pki().client);
  REQUIRE(f.route.pool.idle(f.member()) == 1);

  // Another route to the same address (here even expecting the same identity).
  OutboundHandler::Route other{routeInfo("others", 2), kAddr, 2, PoolSettings{}};
  MemberConnection elsewhere(f.ioc.get_executor());
  CHECK_FALSE(elsewhere.takePooled(other, f.member()));
  CHECK_FALSE(elsewhere.open());
  CHECK(other.session(f.member()) == nullptr);
  CHECK(f.route.pool.idle(f.member()) == 1);  // still the route's
  CHECK(c.takePooled(f.route, f.member()));
}

TEST_CASE("member: the next open() resumes the kept session; a resumed one does not replace it") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(c));
  CHECK_FALSE(c.stream().sessionReused());
  REQUIRE(f.ping(c) == error_code{});  // a TLS 1.3 ticket comes with the member's first records
  c.release(f.route, f.member(), false, *pki().client);
  SSL_SESSION* kept = f.route.session(f.member());
  REQUIRE(kept != nullptr);

  REQUIRE_FALSE(f.open(c));
  CHECK(c.stream().sessionReused());
  CHECK(peerIdentity(c.stream()) == kMemberIdentity);
  REQUIRE(f.ping(c) == error_code{});  // brings a new ticket, which is not kept
  c.release(f.route, f.member(), true, *pki().client);
  CHECK(f.route.session(f.member()) == kept);
  CHECK(f.route.pool.idle(f.member()) == 1);  // resumed or not, reusable is pooled
  CHECK(f.connects() == 2);
  CHECK(f.server.accepted == 2);

  // The session is the route's: another route to the same member shakes hands in full.
  OutboundHandler::Route other{routeInfo("others", 2), kAddr, 2, PoolSettings{}};
  MemberConnection elsewhere(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(elsewhere, other, f.member()));
  CHECK_FALSE(elsewhere.stream().sessionReused());
}

TEST_CASE("member: a kept session that no longer resumes is replaced by the next full one") {
  Fixture f;
  MemberConnection c(f.ioc.get_executor());
  REQUIRE_FALSE(f.open(c));
  REQUIRE(f.ping(c) == error_code{});
  c.release(f.route, f.member(), false, *pki().client);
  SSL_SESSION* before = f.route.session(f.member());
  REQUIRE(before != nullptr);

  // The member restarted: its new ticket keys cannot open the old ticket.
  f.server.use(*pki().restarted);
  REQUIRE_FALSE(f.open(c));
  CHECK_FALSE(c.stream().sessionReused());
  REQUIRE(f.ping(c) == error_code{});
  c.release(f.route, f.member(), false, *pki().client);
  SSL_SESSION* after = f.route.session(f.member());
  CHECK(after != nullptr);
  CHECK(after != before);

  REQUIRE_FALSE(f.open(c));
  CHECK(c.stream().sessionReused());
}

}  // namespace
}  // namespace sidecar
