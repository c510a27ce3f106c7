// Flag and environment parsing: values, defaults, precedence, and the one-line errors.
#include "config.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <unistd.h>
#include <fstream>
#include <vector>

using namespace sidecar;

namespace {

struct TempFile {
  std::string path;
  TempFile() {
    char name[] = "/tmp/sidecar-unit-XXXXXX";
    int fd = mkstemp(name);
    close(fd);
    path = name;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

ParseResult parse(std::vector<std::string> args, std::vector<std::string> env = {}) {
  static TempFile file;
  std::vector<std::string> all{"sidecar", "--tls-cert", file.path, "--tls-key", file.path,
                               "--tls-client-ca", file.path};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<const char*> argv;
  for (auto& a : all) {
    argv.push_back(a.c_str());
  }
  std::vector<const char*> envp;
  for (auto& e : env) {
    envp.push_back(e.c_str());
  }
  envp.push_back(nullptr);
  return parseSidecarArgs(static_cast<int>(argv.size()), argv.data(), envp.data());
}

}  // namespace

TEST_CASE("durations need a unit") {
  CHECK(parseDuration("250ms") == Duration(250));
  CHECK(parseDuration("2s") == Duration(2000));
  CHECK(parseDuration("1m") == Duration(60000));
  CHECK_FALSE(parseDuration("5"));
  CHECK_FALSE(parseDuration("s"));
  CHECK_FALSE(parseDuration("-1s"));
  CHECK_FALSE(parseDuration("1h"));
  CHECK_FALSE(parseDuration("99999999999999999999s"));
}

TEST_CASE("sizes take binary suffixes") {
  CHECK(parseSize("65536") == 65536u);
  CHECK(parseSize("64KiB") == 65536u);
  CHECK(parseSize("64k") == 65536u);
  CHECK(parseSize("1MiB") == (1u << 20));
  CHECK(parseSize("1g") == (1ull << 30));
  CHECK_FALSE(parseSize("1TB"));
  CHECK_FALSE(parseSize(""));
  CHECK_FALSE(parseSize("KiB"));
}

TEST_CASE("host:port forms") {
  auto v4 = parseHostPort("127.0.0.1:8080");
  REQUIRE(v4);
  CHECK(v4->host == "127.0.0.1");
  CHECK(v4->port == 8080);
  auto v6 = parseHostPort("[::1]:8443");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->str() == "[::1]:8443");
  CHECK(parseHostPort("localhost:0"));
  CHECK_FALSE(parseHostPort("::1:80"));
  CHECK_FALSE(parseHostPort("host"));
  CHECK_FALSE(parseHostPort("host:70000"));
  CHECK_FALSE(parseHostPort(":80"));
}

TEST_CASE("defaults and flags") {
  auto r = parse({"--listen", "127.0.0.1:0", "--workers", "3", "--head-timeout", "250ms"});
  REQUIRE(r.config);
  CHECK(r.config->listen.port == 0);
  CHECK(r.config->workers == 3);
  CHECK(r.config->limits.headTimeout == Duration(250));
  CHECK(r.config->upstream.str() == "127.0.0.1:8080");
  CHECK(r.config->adminListen.str() == "127.0.0.1:9990");
  CHECK(r.config->limits.maxBodyBytes == (1ull << 30));
}

TEST_CASE("environment variables fill flags; the command line wins") {
  auto r = parse({"--workers", "2"}, {"SIDECAR_WORKERS=5", "SIDECAR_UPSTREAM=127.0.0.1:9000",
                                      "SIDECAR_SERVICE_HOST=10.0.0.1", "SIDECAR_ALLOW_IDENTITY=a,b*"});
  REQUIRE(r.config);
  CHECK(r.config->workers == 2);
  CHECK(r.config->upstream.port == 9000);
  CHECK(r.config->allowIdentities == std::vector<std::string>{"a", "b*"});
}

TEST_CASE("a command-line allow-list replaces the environment's") {
  auto r = parse({"--allow-identity", "x"}, {"SIDECAR_ALLOW_IDENTITY=a,b"});
  REQUIRE(r.config);
  CHECK(r.config->allowIdentities == std::vector<std::string>{"x"});
}

TEST_CASE("--headers-with-underscores: drop by default, reject or allow on request") {
  auto r = parse({});
  REQUIRE(r.config);
  CHECK(r.config->limits.underscoreHeaders == UnderscoreHeaders::drop);
  r = parse({"--headers-with-underscores", "reject"});
  REQUIRE(r.config);
  CHECK(r.config->limits.underscoreHeaders == UnderscoreHeaders::reject);
  r = parse({"--headers-with-underscores=allow"});
  REQUIRE(r.config);
  CHECK(r.config->limits.underscoreHeaders == UnderscoreHeaders::allow);
  r = parse({}, {"SIDECAR_HEADERS_WITH_UNDERSCORES=reject"});
  REQUIRE(r.config);
  CHECK(r.config->limits.underscoreHeaders == UnderscoreHeaders::reject);
  r = parse({"--headers-with-underscores", "allow"}, {"SIDECAR_HEADERS_WITH_UNDERSCORES=reject"});
  REQUIRE(r.config);
  CHECK(r.config->limits.underscoreHeaders == UnderscoreHeaders::allow);
  for (const char* value : {"Drop", "", "ignore", "drop,allow"}) {
    r = parse({"--headers-with-underscores", value});
    CHECK_FALSE(r.config);
    CHECK(r.exitCode == 2);
    CHECK(r.message == std::string("sidecar: --headers-with-underscores: '") + value +
                           "' is not one of drop, reject, allow\n");
  }
  r = parse({}, {"SIDECAR_HEADERS_WITH_UNDERSCORES=strip"});
  CHECK(r.exitCode == 2);
  CHECK(r.message.find("--headers-with-underscores") != std::string::npos);
}

TEST_CASE("bad input gives one line naming it and exit code 2") {
  auto bad = [](std::vector<std::string> args, const char* mentions) {
    auto r = parse(std::move(args));
    CHECK_FALSE(r.config);
    CHECK(r.exitCode == 2);
    CHECK(r.message.find(mentions) != std::string::npos);
    CHECK(r.message.find('\n') == r.message.size() - 1);
  };
  bad({"--listen", "nonsense"}, "--listen");
  bad({"--head-timeout", "10"}, "--head-timeout");
  bad({"--max-body-size", "lots"}, "--max-body-size");
  bad({"--no-such-flag"}, "no-such-flag");
  bad({"--allow-identity", "a*b"}, "--allow-identity");
  bad({"--log-level", "loud"}, "--log-level");
  bad({"--workers", "many"}, "workers");
}

TEST_CASE("an unreadable file is named") {
  const char* argv[] = {"sidecar", "--tls-cert", "/nonexistent/cert.pem"};
  const char* envp[] = {nullptr};
  auto r = parseSidecarArgs(3, argv, envp);
  CHECK(r.exitCode == 2);
  CHECK(r.message == "sidecar: --tls-cert: cannot read file '/nonexistent/cert.pem'\n");
}

TEST_CASE("a missing required file flag is named") {
  const char* argv[] = {"sidecar"};
  const char* envp[] = {nullptr};
  auto r = parseSidecarArgs(1, argv, envp);
  CHECK(r.exitCode == 2);
  CHECK(r.message.find("--tls-cert") != std::string::npos);
}

TEST_CASE("--help lists every flag and exits 0") {
  const char* argv[] = {"sidecar", "--help"};
  const char* envp[] = {nullptr};
  auto r = parseSidecarArgs(2, argv, envp);
  CHECK(r.exitCode == 0);
  for (const char* flag : {"--listen", "--upstream", "--tls-cert", "--tls-key", "--tls-client-ca",
                           "--allow-identity", "--admin-listen", "--workers", "--max-head-size",
                           "--max-body-size", "--head-timeout", "--idle-timeout",
                           "--upstream-connect-timeout", "--upstream-timeout", "--drain-timeout",
                           "--log-level", "--tls-reload-interval", "--handshake-timeout"}) {
    CHECK_MESSAGE(r.message.find(flag) != std::string::npos, flag);
  }
}

TEST_CASE("a %word% in a flag or value is refused, not looped on (found by fuzzing)") {
  const char* argv[] = {"sidecar", "--workers=%value%", nullptr};
  const char* envp[] = {nullptr};
  auto r = parseSidecarArgs(2, argv, envp);
  CHECK_FALSE(r.config);
  CHECK(r.exitCode == 2);
  const char* argv2[] = {"sidecar", "--%original_token%x", nullptr};
  CHECK(parseSidecarArgs(2, argv2, envp).exitCode == 2);
  const char* argv3[] = {"sidecar", "--announce=zk!h:1!/a!2\n", nullptr};
  auto r3 = parseSidecarArgs(2, argv3, envp);
  CHECK(r3.exitCode == 2);
  CHECK(r3.message.find('\n') == r3.message.size() - 1);  // one line, control bytes escaped
}
