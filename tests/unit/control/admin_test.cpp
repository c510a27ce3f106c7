// Admin routes as a pure function of the request.
#include "control/admin.h"

#include <doctest/doctest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <memory>

using namespace sidecar;

namespace {

struct Fake {
  bool ready = true;
  bool draining = false;
  int quits = 0;
  std::optional<Duration> grace;
  AdminHooks hooks() {
    return AdminHooks{
        .ready = [this] { return ready; },
        .draining = [this] { return draining; },
        .quit =
            [this](std::optional<Duration> g) {
              ++quits;
              grace = g;
            },
        .abort = [] {},
        .metricsText = [] { return std::string("# metrics\n"); },
        .metricsJson =
            [] {
              return boost::json::object{
                  {"srv/http/requests", 3.0}, {"a/gauge", 1.5}, {"clnt/x/connects", 0.0}};
            },
        .serverInfoJson = [] { return std::string("{}"); },
        .announcerJson = [] { return std::string("{\"member\":null}"); },
        .clientsJson = [] { return std::string("{\"clients\":[{\"route\":\"x\"}]}\n"); },
    };
  }
};

PlainRequest req(http::verb v, std::string target) { return PlainRequest{v, target, 11}; }

}  // namespace

TEST_CASE("ping, health, ready") {
  Fake f;
  auto h = f.hooks();
  CHECK(handleAdminRequest(req(http::verb::get, "/admin/ping"), h).body() == "pong");
  CHECK(handleAdminRequest(req(http::verb::get, "/health"), h).body() == "OK\n");
  CHECK(handleAdminRequest(req(http::verb::get, "/ready"), h).result() == http::status::ok);
  f.draining = true;
  f.ready = false;
  auto health = handleAdminRequest(req(http::verb::get, "/health"), h);
  CHECK(health.result() == http::status::service_unavailable);
  CHECK(health.body() == "draining\n");
  CHECK(handleAdminRequest(req(http::verb::get, "/ready"), h).result() ==
        http::status::service_unavailable);
}

TEST_CASE("/admin/clients is JSON from its hook, and an empty list without one") {
  Fake f;
  auto h = f.hooks();
  auto res = handleAdminRequest(req(http::verb::get, "/admin/clients"), h);
  CHECK(res.result() == http::status::ok);
  CHECK(res[http::field::content_type] == "application/json");
  CHECK(res.body().find("\"route\":\"x\"") != std::string::npos);
  h.clientsJson = nullptr;
  CHECK(handleAdminRequest(req(http::verb::get, "/admin/clients"), h).body() ==
        "{\"clients\":[]}\n");
}

TEST_CASE("quitquitquit takes POST only, with an optional grace") {
  Fake f;
  auto h = f.hooks();
  auto wrong = handleAdminRequest(req(http::verb::get, "/quitquitquit"), h);
  CHECK(wrong.result() == http::status::method_not_allowed);
  CHECK(wrong[http::field::allow] == "POST");
  CHECK(f.quits == 0);
  auto ok = handleAdminRequest(req(http::verb::post, "/quitquitquit?grace=3s"), h);
  CHECK(ok.body() == "quitting\n");
  CHECK(f.quits == 1);
  CHECK(f.grace == Duration(3000));
  CHECK(handleAdminRequest(req(http::verb::post, "/quitquitquit?grace=x"), h).result() ==
        http::status::bad_request);
  CHECK(handleAdminRequest(req(http::verb::get, "/abortabortabort"), h).result() ==
        http::status::method_not_allowed);
}

TEST_CASE("metrics and unknown paths") {
  Fake f;
  auto h = f.hooks();
  auto m = handleAdminRequest(req(http::verb::get, "/metrics"), h);
  CHECK(m.body() == "# metrics\n");
  CHECK(m[http::field::content_type].starts_with("text/plain; version=0.0.4"));
  CHECK(handleAdminRequest(req(http::verb::get, "/nope"), h).result() == http::status::not_found);
}

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// A PlainHttpServer bounded at two connections, its observers, and blocking clients.
struct Bounded {
  asio::io_context ioc{1};
  std::size_t open = 0, refused = 0, evicted = 0;
  std::unique_ptr<PlainHttpServer> server;

  Bounded() {
    PlainHttpServer::Options o;
    o.idleTimeout = Duration(5'000);
    o.maxConnections = 2;
    o.name = "test";
    o.openChanged = [this](std::size_t n) { open = n; };
    o.refused = [this] { ++refused; };
    o.evicted = [this] { ++evicted; };
    server = std::make_unique<PlainHttpServer>(
        ioc,
        [](const PlainRequest& r) {
          // Bigger than the loopback socket buffers: its writer stays busy while nobody reads.
          return textResponse(r, http::status::ok,
                              r.target() == "/big" ? std::string(32 << 20, 'x') : "pong");
        },
        o);
    server->listen({asio::ip::make_address("127.0.0.1"), 0});
    server->start();
  }
  tcp::socket connect() {
    tcp::socket s(ioc);
    s.connect(server->localEndpoint());
    return s;
  }
  void settle() {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(200));
  }
  static bool closedByPeer(tcp::socket& s) {
    char c;
    boost::system::error_code ec;
    s.non_blocking(false);
    s.read_some(asio::buffer(&c, 1), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }
};

}  // namespace

TEST_CASE("plain server: at its bound the longest-waiting connection makes room") {
  Bounded b;
  auto first = b.connect();
  b.settle();
  auto second = b.connect();
  b.settle();
  CHECK(b.open == 2);
  auto third = b.connect();
  b.settle();
  CHECK(b.open == 2);
  CHECK(b.evicted == 1);
  CHECK(b.refused == 0);
  CHECK(Bounded::closedByPeer(first));
  // The newcomer is served.
  asio::write(third, asio::buffer(std::string_view("GET /p HTTP/1.1\r\nHost: x\r\n\r\n")));
  b.settle();
  std::string got(256, '\0');
  auto n = third.read_some(asio::buffer(got));
  CHECK(std::string_view(got).substr(0, n).ends_with("pong"));
}

TEST_CASE("plain server: at its bound with every connection busy, the new one is refused") {
  Bounded b;
  auto one = b.connect();
  auto two = b.connect();
  for (auto* s : {&one, &two}) {
    asio::write(*s, asio::buffer(std::string_view("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")));
  }
  b.settle();
  CHECK(b.open == 2);
  auto three = b.connect();
  b.settle();
  CHECK(b.refused == 1);
  CHECK(b.evicted == 0);
  CHECK(b.open == 2);
  CHECK(Bounded::closedByPeer(three));
}

TEST_CASE("plain server: connections outliving the server do not call its observers") {
  auto ioc = std::make_unique<asio::io_context>(1);
  std::size_t opened = 0;
  tcp::endpoint where;
  {
    PlainHttpServer::Options o;
    o.openChanged = [&opened](std::size_t n) { opened = n; };
    PlainHttpServer server(
        *ioc, [](const PlainRequest& r) { return textResponse(r, http::status::ok, ""); }, o);
    server.listen({asio::ip::make_address("127.0.0.1"), 0});
    server.start();
    where = server.localEndpoint();
    tcp::socket s(*ioc);
    s.connect(where);
    ioc->run_for(std::chrono::milliseconds(200));
    CHECK(opened == 1);
    opened = 42;
  }
  ioc.reset();  // destroys the suspended connection
  CHECK(opened == 42);
}

TEST_CASE(
    "/admin/metrics.json: integers as integers, pretty=true sorted and indented, filter=REGEX") {
  Fake f;
  auto h = f.hooks();
  auto get = [&](std::string target) {
    return handleAdminRequest(req(http::verb::get, target), h);
  };
  auto plain = get("/admin/metrics.json");
  CHECK(plain[http::field::content_type] == "application/json");
  CHECK(plain.body().find("\"srv/http/requests\":3") != std::string::npos);
  CHECK(plain.body().find("\"clnt/x/connects\":0") != std::string::npos);
  CHECK(plain.body().find("E0") == std::string::npos);
  CHECK(plain.body().find("\"a/gauge\":1.5") != std::string::npos);
  auto pretty = get("/admin/metrics.json?pretty=true");
  CHECK(pretty.body() ==
        "{\n  \"a/gauge\" : 1.5,\n  \"clnt/x/connects\" : 0,\n  \"srv/http/requests\" : 3\n}\n");
  auto filtered = get("/admin/metrics.json?filter=srv%2F.*");
  CHECK(filtered.body() == "{\"srv/http/requests\":3}\n");
  CHECK(get("/admin/metrics.json?filter=srv").body() == "{}\n");  // the whole name must match
  auto bad = get("/admin/metrics.json?filter=%28");
  CHECK(bad.result() == http::status::bad_request);
}
