// TlsStream in both roles against itself over loopback TCP: mTLS, the expected identity, unknown
// CAs, data through Beast, deadlines, shutdown and session resumption; and the client context.
#include "net/tls_stream.h"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <variant>

#include "net/identity.h"
#include "net/tls_context.h"
#include "test_certs.h"

using namespace sidecar;
using namespace std::chrono_literals;
namespace http = boost::beast::http;
namespace ssl = boost::asio::ssl;

namespace {

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
  test::TestCa otherCa{"other ca"};
  std::shared_ptr<ssl::context> server;    // spiffe://test/pinghelp, trusts ca
  std::shared_ptr<ssl::context> client;    // spiffe://test/caller, trusts ca
  std::shared_ptr<ssl::context> other;     // spiffe://test/other from ca
  std::shared_ptr<ssl::context> stranger;  // spiffe://test/pinghelp from otherCa

  Pki() {
    auto files = [&](const char* name, const test::TestCa& issuer, const char* san) {
      return test::writeTlsFiles(dir, name, issuer.issue(name, san), ca);
    };
    server = contextOf(
        makeServerTlsContext(files("pinghelp", ca, "URI:spiffe://test/pinghelp,DNS:pinghelp")));
    client = contextOf(makeClientTlsContext(files("caller", ca, "URI:spiffe://test/caller")));
    other = contextOf(makeServerTlsContext(files("other", ca, "URI:spiffe://test/other")));
    stranger =
        contextOf(makeServerTlsContext(files("stranger", otherCa, "URI:spiffe://test/pinghelp")));
  }
};

Pki& pki() {
  static Pki p;
  return p;
}

// A connected pair of sockets on loopback, both on ioc.
struct SocketPair {
  TcpSocket client;
  TcpSocket server;
};

SocketPair connectedPair(asio::io_context& ioc) {
  TcpAcceptor acceptor(ioc.get_executor(), {asio::ip::make_address("127.0.0.1"), 0});
  SocketPair pair{TcpSocket(ioc.get_executor()), TcpSocket(ioc.get_executor())};
  pair.client.connect(acceptor.local_endpoint());
  acceptor.accept(pair.server);
  return pair;
}

struct Handshakes {
  std::optional<error_code> client;
  std::optional<error_code> server;
};

// Both ends of one connection, each role our own stream.
struct Connection {
  asio::io_context& ioc;
  TlsStream client;
  TlsStream server;

  Connection(asio::io_context& io, const TlsStream::Client& role,
             ssl::context& serverContext = *pki().server, SSL_SESSION* session = nullptr)
      : Connection(io, connectedPair(io), role, serverContext, session) {}

  Handshakes handshake() {
    Handshakes out;
    client.async_handshake([&](error_code ec) { out.client = ec; });
    server.async_handshake([&](error_code ec) { out.server = ec; });
    ioc.restart();
    ioc.run_for(5s);
    REQUIRE(out.client);
    REQUIRE(out.server);
    return out;
  }

  std::string clientSeesIdentity() {
    return peerIdentityFromCert(SSL_get0_peer_certificate(client.native_handle())).identity;
  }
  std::string serverSeesIdentity() {
    return peerIdentityFromCert(SSL_get0_peer_certificate(server.native_handle())).identity;
  }

 private:
  Connection(asio::io_context& io, SocketPair pair, const TlsStream::Client& role,
             ssl::context& serverContext, SSL_SESSION* session)
      : ioc(io),
        client(std::move(pair.client), *pki().client, role),
        server(std::move(pair.server), serverContext) {
    if (session) {
      REQUIRE(client.setSession(session));
    }
  }
};

const TlsStream::Client kPinghelp{"pinghelp", "spiffe://test/pinghelp"};

// A request from client to server and its answer back, through Beast.
std::string exchange(Connection& c) {
  http::request<http::string_body> req{http::verb::post, "/echo", 11};
  req.set(http::field::host, "pinghelp");
  req.body() = "ping";
  req.prepare_payload();
  http::request<http::string_body> got;
  http::response<http::string_body> res{http::status::ok, 11};
  http::response<http::string_body> answer;
  boost::beast::flat_buffer serverBuffer, clientBuffer;
  std::optional<error_code> done;

  http::async_write(c.client, req, [&](error_code ec, std::size_t) {
    if (ec) {
      done = ec;
      return;
    }
    http::async_read(c.client, clientBuffer, answer,
                     [&](error_code ec2, std::size_t) { done = ec2; });
  });
  http::async_read(c.server, serverBuffer, got, [&](error_code ec, std::size_t) {
    REQUIRE_FALSE(ec);
    res.body() = "echo " + got.body() + " " + std::string(got.target());
    res.prepare_payload();
    http::async_write(c.server, res, [&](error_code ec2, std::size_t) { REQUIRE_FALSE(ec2); });
  });
  c.ioc.restart();
  c.ioc.run_for(5s);
  REQUIRE(done);
  REQUIRE_FALSE(*done);
  return answer.body();
}

// What the worker's sweep does: expireIfDue on the stream's lowest layer, until done.
void sweepUntil(asio::io_context& ioc, DeadlineSocket& socket, const bool& done) {
  SteadyTimer timer(ioc.get_executor());
  std::function<void()> arm = [&] {
    timer.expires_after(5ms);
    timer.async_wait([&](error_code ec) {
      if (ec || done) {
        return;
      }
      socket.expireIfDue(DeadlineSocket::Clock::now());
      arm();
    });
  };
  arm();
  ioc.restart();
  ioc.run_for(5s);
}

}  // namespace

TEST_SUITE("net/tls_stream") {
  TEST_CASE("mTLS both ways: the client verifies the server's identity, the server the client's") {
    asio::io_context ioc;
    Connection c(ioc, kPinghelp);
    auto hs = c.handshake();
    CHECK_FALSE(*hs.client);
    CHECK_FALSE(*hs.server);
    CHECK(c.clientSeesIdentity() == "spiffe://test/pinghelp");
    CHECK(c.serverSeesIdentity() == "spiffe://test/caller");
    CHECK(SSL_get_verify_result(c.client.native_handle()) == X509_V_OK);
    CHECK(SSL_get_verify_result(c.server.native_handle()) == X509_V_OK);
  }

  TEST_CASE("an expected identity may be a prefix with a trailing '*', or absent") {
    for (const char* expected : {"spiffe://test/ping*", "spiffe://test/*", "*", ""}) {
      CAPTURE(expected);
      asio::io_context ioc;
      Connection c(ioc, {"pinghelp", expected});
      auto hs = c.handshake();
      CHECK_FALSE(*hs.client);
      CHECK_FALSE(*hs.server);
    }
  }

  TEST_CASE("SNI carries a host name, never an IP address") {
    asio::io_context ioc;
    Connection named(ioc, {"pinghelp.test", ""});
    named.handshake();
    const char* sni = SSL_get_servername(named.server.native_handle(), TLSEXT_NAMETYPE_host_name);
    REQUIRE(sni);
    CHECK(std::string(sni) == "pinghelp.test");

    for (const char* address : {"127.0.0.1", "::1", ""}) {
      CAPTURE(address);
      Connection c(ioc, {address, ""});
      auto hs = c.handshake();
      CHECK_FALSE(*hs.client);
      CHECK(SSL_get_servername(c.server.native_handle(), TLSEXT_NAMETYPE_host_name) == nullptr);
    }
  }

  TEST_CASE("a request and its answer through Beast, both ways") {
    asio::io_context ioc;
    Connection c(ioc, kPinghelp);
    auto hs = c.handshake();
    REQUIRE_FALSE(*hs.client);
    CHECK(exchange(c) == "echo ping /echo");
    CHECK(exchange(c) == "echo ping /echo");  // keep-alive
  }

  TEST_CASE("a server with another identity: wrong_peer_identity, and its handshake fails") {
    asio::io_context ioc;
    Connection c(ioc, kPinghelp, *pki().other);
    auto hs = c.handshake();
    CHECK(*hs.client == TlsError::wrong_peer_identity);
    CHECK(*hs.server);
    CHECK(hs.client->message().find("expected identity") != std::string::npos);
    CHECK(classifyHandshakeFailure(*hs.client, SSL_get_verify_result(c.client.native_handle())) ==
          HandshakeFailure::BadCertificate);
    // The server never completed: no request can have reached it.
    CHECK(SSL_is_init_finished(c.server.native_handle()) == 0);
  }

  TEST_CASE("TLS 1.2: the identity is checked the same way") {
    asio::io_context ioc;
    Connection good(ioc, kPinghelp);
    SSL_set_max_proto_version(good.client.native_handle(), TLS1_2_VERSION);
    auto hs = good.handshake();
    CHECK_FALSE(*hs.client);
    CHECK_FALSE(*hs.server);
    CHECK(SSL_version(good.client.native_handle()) == TLS1_2_VERSION);
    CHECK(exchange(good) == "echo ping /echo");

    Connection wrong(ioc, kPinghelp, *pki().other);
    SSL_set_max_proto_version(wrong.client.native_handle(), TLS1_2_VERSION);
    hs = wrong.handshake();
    CHECK(*hs.client == TlsError::wrong_peer_identity);
    CHECK(*hs.server);
  }

  TEST_CASE("a server certificate from an unknown CA fails as unknown_ca, not as an identity") {
    asio::io_context ioc;
    Connection c(ioc, kPinghelp, *pki().stranger);
    auto hs = c.handshake();
    REQUIRE(*hs.client);
    CHECK(*hs.client != TlsError::wrong_peer_identity);
    CHECK(*hs.server);
    CHECK(classifyHandshakeFailure(*hs.client, SSL_get_verify_result(c.client.native_handle())) ==
          HandshakeFailure::UnknownCa);

    // With no expectation at all, the chain is still verified.
    Connection anyone(ioc, {"pinghelp", ""}, *pki().stranger);
    hs = anyone.handshake();
    REQUIRE(*hs.client);
    CHECK(classifyHandshakeFailure(*hs.client,
                                   SSL_get_verify_result(anyone.client.native_handle())) ==
          HandshakeFailure::UnknownCa);
  }

  TEST_CASE("a handshake the peer never answers ends with timeout after expireIfDue") {
    asio::io_context ioc;
    auto pair = connectedPair(ioc);
    SUBCASE("client role") {
      TlsStream client(std::move(pair.client), *pki().client, kPinghelp);
      std::optional<error_code> result;
      bool done = false;
      client.lowest_layer().expires_after(20ms);
      client.async_handshake([&](error_code ec) {
        result = ec;
        done = true;
      });
      const auto start = std::chrono::steady_clock::now();
      sweepUntil(ioc, client.lowest_layer(), done);
      REQUIRE(result);
      CHECK(*result == boost::beast::error::timeout);
      CHECK(client.lowest_layer().timedOut());
      CHECK(std::chrono::steady_clock::now() - start < 1s);
    }
    SUBCASE("server role") {
      TlsStream server(std::move(pair.server), *pki().server);
      std::optional<error_code> result;
      bool done = false;
      server.lowest_layer().expires_after(20ms);
      server.async_handshake([&](error_code ec) {
        result = ec;
        done = true;
      });
      sweepUntil(ioc, server.lowest_layer(), done);
      REQUIRE(result);
      CHECK(*result == boost::beast::error::timeout);
    }
  }

  TEST_CASE("shutdown: close_notify reaches the other side as end of stream") {
    asio::io_context ioc;
    for (bool clientCloses : {true, false}) {
      CAPTURE(clientCloses);
      Connection c(ioc, kPinghelp);
      REQUIRE_FALSE(*c.handshake().client);
      TlsStream& closer = clientCloses ? c.client : c.server;
      TlsStream& reader = clientCloses ? c.server : c.client;
      std::optional<error_code> shut, read;
      char byte = 0;
      closer.async_shutdown([&](error_code ec) { shut = ec; });
      reader.async_read_some(asio::buffer(&byte, 1),
                             [&](error_code ec, std::size_t) { read = ec; });
      ioc.restart();
      ioc.run_for(5s);
      REQUIRE(shut);
      CHECK_FALSE(*shut);
      REQUIRE(read);
      CHECK(*read == asio::error::eof);
    }
  }

  TEST_CASE("session resumption: the next connection resumes, still held to its expectation") {
    asio::io_context ioc;
    TlsStream::Session session;
    {
      Connection first(ioc, kPinghelp);
      REQUIRE_FALSE(*first.handshake().client);
      CHECK_FALSE(first.client.sessionReused());
      exchange(first);  // a TLS 1.3 ticket arrives with the server's first records
      session = first.client.session();
      REQUIRE(session);
    }
    // Each connection here ends without close_notify, which makes OpenSSL mark its session not
    // resumable: the copies that session() and setSession() make keep the pool's session usable.
    {
      Connection again(ioc, kPinghelp, *pki().server, session.get());
      auto hs = again.handshake();
      REQUIRE_FALSE(*hs.client);
      REQUIRE_FALSE(*hs.server);
      CHECK(again.client.sessionReused());
      CHECK(again.clientSeesIdentity() == "spiffe://test/pinghelp");
      CHECK(exchange(again) == "echo ping /echo");
    }
    {
      // No certificate is verified when a session resumes: the expectation is checked anyway.
      Connection elsewhere(ioc, {"pinghelp", "spiffe://test/other"}, *pki().server, session.get());
      auto hs = elsewhere.handshake();
      CHECK(elsewhere.client.sessionReused());
      CHECK(*hs.client == TlsError::wrong_peer_identity);
    }
  }

  TEST_CASE("the server frees its copies of the client's chain; identity and resumption stay") {
    asio::io_context ioc;
    TlsStream::Session session;
    {
      Connection first(ioc, kPinghelp);
      auto hs = first.handshake();
      REQUIRE_FALSE(*hs.client);
      REQUIRE_FALSE(*hs.server);
      // Our client, like curl, sends its CA beside its own certificate (OpenSSL builds the chain
      // from the CA it trusts); the server's session keeps a parsed copy of it.
      STACK_OF(X509)* chain = SSL_get_peer_cert_chain(first.server.native_handle());
      REQUIRE(chain);
      CHECK(sk_X509_num(chain) >= 1);
      dropPeerChainCopies(first.server.native_handle());
      CHECK(sk_X509_num(chain) == 0);
      CHECK(first.serverSeesIdentity() == "spiffe://test/caller");
      CHECK(exchange(first) == "echo ping /echo");
      session = first.client.session();
      REQUIRE(session);
    }
    Connection again(ioc, kPinghelp, *pki().server, session.get());
    auto hs = again.handshake();
    REQUIRE_FALSE(*hs.client);
    REQUIRE_FALSE(*hs.server);
    CHECK(again.client.sessionReused());
    CHECK(again.serverSeesIdentity() == "spiffe://test/caller");  // from the ticket
    CHECK(exchange(again) == "echo ping /echo");

    // TLS 1.2: the session may be shared through the server's session cache; left alone.
    Connection old(ioc, kPinghelp);
    SSL_set_max_proto_version(old.client.native_handle(), TLS1_2_VERSION);
    hs = old.handshake();
    REQUIRE_FALSE(*hs.server);
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(old.server.native_handle());
    REQUIRE(chain);
    const int before = sk_X509_num(chain);
    CHECK(before >= 1);
    dropPeerChainCopies(old.server.native_handle());
    CHECK(sk_X509_num(chain) == before);
  }

  TEST_CASE("makeClientTlsContext: one line naming the file and what is wrong") {
    auto& p = pki();
    auto leaf = p.ca.issue("caller", "URI:spiffe://test/caller");
    auto good = test::writeTlsFiles(p.dir, "ctx", leaf, p.ca);
    auto stranger = p.ca.issue("stranger", "URI:spiffe://test/stranger");
    const std::string otherKey = p.dir.write("stranger.key", stranger.keyPem());
    const std::string garbage = p.dir.write("garbage.pem", "not a certificate\n");
    const std::string missing = (p.dir.path() / "missing.pem").string();

    auto error = [](const TlsFiles& files, std::string_view caFlag = "--tls-client-ca") {
      auto made = makeClientTlsContext(files, caFlag);
      auto* e = std::get_if<std::string>(&made);
      return e ? *e : std::string();
    };
    CHECK(error(good).empty());
    CHECK(error({missing, good.key, good.clientCa}).starts_with("--tls-cert '" + missing + "': "));
    CHECK(error({good.cert, missing, good.clientCa}).starts_with("--tls-key '" + missing + "': "));
    CHECK(error({good.cert, otherKey, good.clientCa}) ==
          "--tls-key '" + otherKey + "' does not match --tls-cert '" + good.cert + "'");
    CHECK(error({good.cert, good.key, missing}).starts_with("--tls-client-ca '" + missing + "': "));
    CHECK(error({good.cert, good.key, garbage}, "--outbound-ca")
              .starts_with("--outbound-ca '" + garbage + "': "));
    for (const auto& message :
         {error({missing, good.key, good.clientCa}), error({good.cert, good.key, garbage})}) {
      CHECK(message.find('\n') == std::string::npos);
    }
  }
}
