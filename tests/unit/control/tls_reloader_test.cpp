// Certificate rotation (control/tls_reloader.h) with real files: a changed certificate is built
// and handed on, a broken one keeps the previous context, and both are counted.
#include "control/tls_reloader.h"

#include <doctest/doctest.h>
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "net/test_certs.h"

namespace sidecar {
namespace {

using namespace std::chrono_literals;

struct Rotation {
  test::TestCa ca{"reload-ca"};
  test::TempDir dir;
  TlsFiles files;
  boost::asio::io_context ioc;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  ControlMetrics m{*registry};
  std::vector<long> applied;  // the expiry of each context handed on
  TlsReloader reloader;

  Rotation()
      : files(
            test::writeTlsFiles(dir, "server", ca.issue("server", "URI:spiffe://test/server"), ca)),
        reloader(ioc, files, Duration(20), m,
                 [this](const TlsContext& ctx) { applied.push_back(ctx.certNotAfter); }) {}

  void replaceCert(long notAfterSeconds) {
    auto leaf = ca.issue("server", "URI:spiffe://test/server", -60, notAfterSeconds);
    dir.write("server.pem", leaf.certPem());
    dir.write("server.key", leaf.keyPem());
  }
  void runFor(std::chrono::milliseconds d) {
    ioc.restart();
    ioc.run_for(d);
  }
  // Runs until done() holds, up to 10 s (a busy machine may be slow to schedule the timer).
  template <class Done>
  void runUntil(Done done) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (!done() && std::chrono::steady_clock::now() < until) {
      runFor(20ms);
    }
  }
};

TEST_CASE("tls reloader: the start-up context builds; a broken file is named") {
  Rotation r;
  auto first = r.reloader.initial();
  CHECK(std::holds_alternative<TlsContext>(first));
  r.dir.write("server.pem", "not a certificate");
  auto broken = r.reloader.initial();
  REQUIRE(std::holds_alternative<std::string>(broken));
  CHECK(std::get<std::string>(broken).find("server.pem") != std::string::npos);
}

TEST_CASE("tls reloader: a changed certificate is handed on; a broken one keeps the last") {
  Rotation r;
  REQUIRE(std::holds_alternative<TlsContext>(r.reloader.initial()));
  r.reloader.start();
  r.runFor(100ms);
  CHECK(r.applied.empty());  // nothing changed: nothing rebuilt

  r.replaceCert(7 * 24 * 3600);
  r.runUntil([&] { return !r.applied.empty(); });
  REQUIRE(r.applied.size() == 1);
  CHECK(r.applied[0] > std::time(nullptr) + 6 * 24 * 3600);
  CHECK(r.m.certReloadOk->Value() == 1);

  r.dir.write("server.pem", "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n");
  r.runUntil([&] { return r.m.certReloadFailed->Value() >= 1; });
  CHECK(r.applied.size() == 1);  // the previous context stands
  CHECK(r.m.certReloadFailed->Value() == 1);

  r.reloader.reload("sighup");  // still broken: counted again, nothing handed on
  CHECK(r.m.certReloadFailed->Value() == 2);
  r.reloader.stop();
}

}  // namespace
}  // namespace sidecar
