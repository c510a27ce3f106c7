// Admin routes as a pure function of the request.
#include "admin.h"

#include <doctest/doctest.h>

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
        .quit = [this](std::optional<Duration> g) { ++quits; grace = g; },
        .abort = [] {},
        .metricsText = [] { return std::string("# metrics\n"); },
        .metricsJson = [] { return std::string("{}"); },
        .serverInfoJson = [] { return std::string("{}"); },
        .announcerJson = [] { return std::string("{\"member\":null}"); },
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
