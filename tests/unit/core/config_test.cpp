// Flag and environment parsing: values, defaults, precedence, and the one-line errors.
#include "core/config.h"

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
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

// The three required files are filled in unless args name them.
ParseResult parse(std::vector<std::string> args, std::vector<std::string> env = {}) {
  static TempFile file;
  std::vector<std::string> all{"sidecar"};
  for (const char* flag : {"--tls-cert", "--tls-key", "--tls-client-ca"}) {
    if (std::find(args.begin(), args.end(), flag) == args.end()) {
      all.insert(all.end(), {flag, file.path});
    }
  }
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

TEST_CASE("inbound Thrift flags: off by default, --thrift-upstream required, frame limit") {
  auto off = parse({});
  REQUIRE(off.config);
  CHECK_FALSE(off.config->thrift);
  auto on = parse({"--thrift-listen", "127.0.0.1:9443", "--thrift-upstream", "127.0.0.1:9090"});
  REQUIRE(on.config);
  REQUIRE(on.config->thrift);
  CHECK(on.config->thrift->listen.str() == "127.0.0.1:9443");
  CHECK(on.config->thrift->upstream.str() == "127.0.0.1:9090");
  CHECK(on.config->thrift->maxFrame == 16'384'000u);
  auto small = parse({"--thrift-listen", "127.0.0.1:9443", "--thrift-upstream", "127.0.0.1:9090",
                      "--thrift-max-frame", "64k"});
  REQUIRE(small.config);
  CHECK(small.config->thrift->maxFrame == 65536u);
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--thrift-listen", "127.0.0.1:9443"},
           {"--thrift-upstream", "127.0.0.1:9090"},
           {"--thrift-listen", "127.0.0.1:9443", "--thrift-upstream", "127.0.0.1:9090",
            "--thrift-max-frame", "0"},
           {"--thrift-listen", "127.0.0.1:9443", "--thrift-upstream", "127.0.0.1:9090",
            "--thrift-max-frame", "2g"},
           {"--listen", "127.0.0.1:9443", "--thrift-listen", "127.0.0.1:9443", "--thrift-upstream",
            "127.0.0.1:9090"}}) {
    auto r = parse(args);
    CHECK_FALSE(r.config);
    CHECK(r.exitCode == 2);
    CHECK(r.message.find("--thrift") != std::string::npos);
  }
}

TEST_CASE("environment variables fill flags; the command line wins") {
  auto r =
      parse({"--workers", "2"}, {"SIDECAR_WORKERS=5", "SIDECAR_UPSTREAM=127.0.0.1:9000",
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
  bad({"--busy-poll-us", "10001"}, "--busy-poll-us");
}

TEST_CASE("--busy-poll-us: off by default, in microseconds") {
  auto off = parse({});
  REQUIRE(off.config);
  CHECK(off.config->busyPoll.count() == 0);
  auto on = parse({"--busy-poll-us", "50"});
  REQUIRE(on.config);
  CHECK(on.config->busyPoll == std::chrono::microseconds(50));
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
  for (const char* flag :
       {"--listen", "--upstream", "--tls-cert", "--tls-key", "--tls-client-ca", "--allow-identity",
        "--admin-listen", "--workers", "--max-head-size", "--max-body-size", "--head-timeout",
        "--idle-timeout", "--upstream-connect-timeout", "--upstream-timeout", "--drain-timeout",
        "--log-level", "--tls-reload-interval", "--handshake-timeout",
        "--headers-with-underscores"}) {
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

namespace {

// One line, exit 2, exactly this text.
void refused(const ParseResult& r, const std::string& line) {
  CHECK_FALSE(r.config);
  CHECK(r.exitCode == 2);
  CHECK(r.message == "sidecar: " + line + "\n");
}

struct TempDir {
  std::string path;
  TempDir() {
    char name[] = "/tmp/sidecar-unit-dir-XXXXXX";
    path = mkdtemp(name);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

}  // namespace

TEST_CASE("--max-head-size is 1KiB to 1MiB (8GiB was cut to 32 bits: every request a 431)") {
  refused(parse({"--max-head-size", "8GiB"}),
          "--max-head-size: '8GiB' is not a size from 1KiB to 1MiB");
  refused(parse({"--max-head-size", "4294967296"}),
          "--max-head-size: '4294967296' is not a size from 1KiB to 1MiB");
  refused(parse({"--max-head-size", "1023"}),
          "--max-head-size: '1023' is not a size from 1KiB to 1MiB");
  refused(parse({"--max-head-size", "1025KiB"}),
          "--max-head-size: '1025KiB' is not a size from 1KiB to 1MiB");
  refused(parse({"--max-head-size", "big"}),
          "--max-head-size: 'big' is not a size (use e.g. 65536, 64KiB, 1MiB, 1GiB)");
  for (auto [text, bytes] : {std::pair{"1KiB", 1024u}, {"1MiB", 1u << 20}, {"4KiB", 4096u}}) {
    auto r = parse({"--max-head-size", text});
    REQUIRE(r.config);
    CHECK(r.config->limits.maxHeadBytes == bytes);
  }
  CHECK(parse({}).config->limits.maxHeadBytes == 64 * 1024);
}

TEST_CASE("counts refuse a sign, a non-number or an out-of-range value instead of wrapping") {
  refused(parse({"--rise", "-1"}), "--rise: '-1' is not a whole number from 1 to 1000");
  refused(parse({"--rise=0"}), "--rise: '0' is not a whole number from 1 to 1000");
  refused(parse({"--fall", "0"}), "--fall: '0' is not a whole number from 1 to 1000");
  refused(parse({"--fall", "1001"}), "--fall: '1001' is not a whole number from 1 to 1000");
  refused(parse({"--max-connections", "-1"}),
          "--max-connections: '-1' is not a whole number from 0 to 10000000");
  refused(parse({"--max-connections", "18446744073709551616"}),
          "--max-connections: '18446744073709551616' is not a whole number from 0 to 10000000");
  refused(parse({"--upstream-max-idle", "-1"}),
          "--upstream-max-idle: '-1' is not a whole number from 0 to 100000");
  refused(parse({"--upstream-max-idle", "+5"}),
          "--upstream-max-idle: '+5' is not a whole number from 0 to 100000");
  refused(parse({"--workers", "-1"}), "--workers: '-1' is not a whole number from 0 to 256");
  refused(parse({"--workers", "257"}), "--workers: '257' is not a whole number from 0 to 256");
  refused(parse({"--workers", "2.5"}), "--workers: '2.5' is not a whole number from 0 to 256");
  refused(parse({"--workers", " 2"}), "--workers: ' 2' is not a whole number from 0 to 256");
  refused(parse({"--max-pending", "-1"}),
          "--max-pending: '-1' is not a whole number from 1 to 10000000");
  refused(parse({"--max-pending", "0"}),
          "--max-pending: '0' is not a whole number from 1 to 10000000");
  refused(parse({"--max-pending", "0x10"}),
          "--max-pending: '0x10' is not a whole number from 1 to 10000000");
  // The same through the environment.
  refused(parse({}, {"SIDECAR_RISE=-1"}), "--rise: '-1' is not a whole number from 1 to 1000");
  CHECK(parse({}, {"SIDECAR_WORKERS="}).message.find("'--workers'") != std::string::npos);

  auto r = parse({"--rise", "1", "--fall", "1000", "--workers", "256", "--max-connections", "0",
                  "--upstream-max-idle", "0", "--max-pending", "10000000"});
  REQUIRE(r.config);
  CHECK(r.config->workers == 256);
  CHECK(r.config->limits.maxConnections == 0);
  CHECK(r.config->limits.upstreamMaxIdle == 0);
  CHECK(r.config->limits.maxPending == 10'000'000);
  auto d = parse({});
  REQUIRE(d.config);
  CHECK(d.config->workers >= 1);
  CHECK(d.config->workers <= 256);
  CHECK(d.config->limits.upstreamMaxIdle == 1024);
  CHECK(d.config->limits.maxPending == 1024);
}

TEST_CASE("--rise and --fall reach the announcement config") {
  auto r = parse({"--zk", "127.0.0.1:2181", "--zk-path", "/a/b", "--rise", "5", "--fall", "7"});
  REQUIRE(r.config);
  REQUIRE(r.config->announce);
  CHECK(r.config->announce->rise == 5);
  CHECK(r.config->announce->fall == 7);
  auto d = parse({"--zk", "127.0.0.1:2181", "--zk-path", "/a/b"});
  REQUIRE(d.config);
  CHECK(d.config->announce->rise == 2);
  CHECK(d.config->announce->fall == 3);
}

TEST_CASE("an empty --allow-identity item is refused, in the flag or the variable") {
  refused(parse({"--allow-identity", ""}),
          "--allow-identity: '' is empty (leave the flag out to allow any caller)");
  refused(parse({"--allow-identity", "a", "--allow-identity", ""}),
          "--allow-identity: '' is empty (leave the flag out to allow any caller)");
  for (const char* value : {",", "", "a,", ",a", "a,,b"}) {
    refused(parse({}, {std::string("SIDECAR_ALLOW_IDENTITY=") + value}),
            std::string("--allow-identity: SIDECAR_ALLOW_IDENTITY='") + value +
                "' has an empty item (leave the variable out to allow any caller)");
  }
  // Even when the command line's list replaces it.
  CHECK(parse({"--allow-identity", "x"}, {"SIDECAR_ALLOW_IDENTITY=,"}).exitCode == 2);
  auto r = parse({}, {"SIDECAR_ALLOW_IDENTITY=a"});
  REQUIRE(r.config);
  CHECK(r.config->allowIdentities == std::vector<std::string>{"a"});
}

TEST_CASE("--access-log needs an existing directory, and a file rather than a directory") {
  TempDir dir;
  refused(parse({"--access-log", dir.path + "/missing/access.log"}),
          "--access-log: directory '" + dir.path + "/missing' does not exist");
  CHECK_FALSE(std::filesystem::exists(dir.path + "/missing"));  // and nothing was created
  refused(parse({"--access-log", dir.path}),
          "--access-log: '" + dir.path + "' is a directory, not a file");
  { std::ofstream(dir.path + "/plain") << "x"; }
  refused(parse({"--access-log", dir.path + "/plain/access.log"}),
          "--access-log: '" + dir.path + "/plain' is not a directory");
  refused(parse({}, {"SIDECAR_ACCESS_LOG=/nonexistent-sidecar-dir/a.log"}),
          "--access-log: directory '/nonexistent-sidecar-dir' does not exist");
  for (const std::string& ok : {dir.path + "/access.log", dir.path + "/plain", std::string("-"),
                                std::string("access.log"), std::string("/dev/null")}) {
    auto r = parse({"--access-log", ok});
    REQUIRE_MESSAGE(r.config, r.message);
    CHECK(r.config->accessLog == ok);
  }
  CHECK_FALSE(std::filesystem::exists(dir.path + "/access.log"));  // checked, not created
}

TEST_CASE("a directory or pipe given as a PEM or auth file is not a regular readable file") {
  TempDir dir;
  for (const char* flag : {"--tls-cert", "--tls-key", "--tls-client-ca"}) {
    refused(parse({flag, dir.path}), std::string(flag) + ": '" + dir.path +
                                         "' is not a regular readable file (it is a directory)");
  }
  refused(parse({"--zk", "h:1", "--zk-path", "/p", "--zk-auth-file", dir.path}),
          "--zk-auth-file: '" + dir.path + "' is not a regular readable file (it is a directory)");
  const std::string fifo = dir.path + "/fifo";
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  refused(parse({"--tls-cert", fifo}),  // would block in open() before this check
          "--tls-cert: '" + fifo + "' is not a regular readable file (it is a pipe)");
  refused(parse({"--tls-key", "/nonexistent/key.pem"}),
          "--tls-key: cannot read file '/nonexistent/key.pem'");
  // A symbolic link to a regular file, as Kubernetes mounts secrets, is fine.
  TempFile target;
  const std::string link = dir.path + "/link.pem";
  REQUIRE(symlink(target.path.c_str(), link.c_str()) == 0);
  auto r = parse({"--tls-cert", link});
  REQUIRE_MESSAGE(r.config, r.message);
  CHECK(r.config->tlsCert == link);
  { std::ofstream(dir.path + "/auth") << "user:secret\n"; }
  auto a = parse({"--zk", "h:1", "--zk-path", "/p", "--zk-auth-file", dir.path + "/auth"});
  REQUIRE_MESSAGE(a.config, a.message);
  CHECK(a.config->announce->zkDigest == "user:secret");
}

TEST_CASE("durations: zero is too short, the ZooKeeper session fits the client's int") {
  refused(parse({"--health-interval", "0s"}),
          "--health-interval: '0s' is too short (at least 1ms)");
  refused(parse({"--tls-reload-interval", "0ms"}),
          "--tls-reload-interval: '0ms' is too short (at least 1ms)");
  refused(parse({"--idle-timeout", "0m"}), "--idle-timeout: '0m' is too short (at least 1ms)");
  refused(parse({"--zk", "h:1", "--zk-path", "/p", "--zk-session-timeout", "0s"}),
          "--zk-session-timeout: '0s' is not a duration from 1ms to 60m");
  refused(parse({"--zk", "h:1", "--zk-path", "/p", "--zk-session-timeout", "36000m"}),
          "--zk-session-timeout: '36000m' is not a duration from 1ms to 60m");
  refused(parse({"--head-timeout", "-1s"}),
          "--head-timeout: '-1s' is not a duration (use e.g. 250ms, 5s, 1m)");
  auto r = parse({"--zk", "h:1", "--zk-path", "/p", "--zk-session-timeout", "60m",
                  "--health-interval", "1ms"});
  REQUIRE(r.config);
  CHECK(r.config->announce->zkSessionTimeout == Duration(3'600'000));
  CHECK(r.config->announce->healthInterval == Duration(1));
}

TEST_CASE("addresses: an upstream on port 0, admin on --listen's address") {
  refused(parse({"--upstream", "127.0.0.1:0"}),
          "--upstream: '127.0.0.1:0' needs a port from 1 to 65535");
  refused(parse({"--listen", "127.0.0.1:9000", "--admin-listen", "127.0.0.1:9000"}),
          "--admin-listen: '127.0.0.1:9000' is --listen's address too");
  refused(parse({"--listen", "127.0.0.1:99999"}), "--listen: '127.0.0.1:99999' is not host:port");
  // Port 0 on the listeners means "any free port" (tests use it).
  auto r = parse({"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"});
  REQUIRE(r.config);
}

TEST_CASE("announcement strings: health path and advertised host") {
  const std::vector<std::string> zk{"--zk", "h:1", "--zk-path", "/p"};
  auto with = [&](std::vector<std::string> more) {
    auto args = zk;
    args.insert(args.end(), more.begin(), more.end());
    return parse(args);
  };
  refused(with({"--health-path", "/a b"}),
          "--health-path: '/a b' holds a space or control character (percent-encode it)");
  refused(
      with({"--health-path", "/a\r\nX: y"}),
      "--health-path: '/a\\x0d\\x0aX: y' holds a space or control character (percent-encode it)");
  refused(with({"--health-path", "ping"}), "--health-path: 'ping' must start with /");
  refused(with({"--advertise-host", ""}),
          "--advertise-host: '' is not a host name or address (leave the flag out for the primary "
          "address)");
  refused(with({"--advertise-host", "a b"}),
          "--advertise-host: 'a b' is not a host name or address (leave the flag out for the "
          "primary address)");
  auto r = with({"--health-path", "/health?deep=1", "--advertise-host", "::1"});
  REQUIRE(r.config);
  CHECK(r.config->announce->healthPath == "/health?deep=1");
  CHECK(r.config->announce->advertiseHost == "::1");
}

TEST_CASE("--thrift-route: a loopback port per destination, named thrift:PORT, no HTTP listener") {
  auto r = parse(
      {"--thrift-route", "127.0.0.1:9100=static!10.0.0.1:9443,10.0.0.2:9443", "--thrift-route",
       "127.0.0.1:9101=zk2!z1:2181,z2:2181!/discovery/pinghelp!thrift;identity=spiffe://x/*"});
  REQUIRE(r.config);
  REQUIRE(r.config->outbound);
  const auto& o = *r.config->outbound;
  CHECK_FALSE(o.httpListener);
  CHECK(o.routes.empty());
  REQUIRE(o.thriftRoutes.size() == 2);
  CHECK(o.thriftRoutes[0].listen.str() == "127.0.0.1:9100");
  CHECK(o.thriftRoutes[0].route.name == "thrift:9100");
  CHECK(o.thriftRoutes[0].route.kind == RouteConfig::Kind::fixed);
  CHECK(o.thriftRoutes[0].route.fixed.size() == 2);
  CHECK(o.thriftRoutes[0].serverName == "10.0.0.1");
  const auto& zk = o.thriftRoutes[1];
  CHECK(zk.route.name == "thrift:9101");
  CHECK(zk.route.kind == RouteConfig::Kind::serverset);
  CHECK(zk.route.zkConnect == "z1:2181,z2:2181");
  CHECK(zk.route.zkPath == "/discovery/pinghelp");
  CHECK(zk.route.endpoint == "thrift");
  CHECK(zk.route.identity == "spiffe://x/*");
  CHECK(zk.serverName == "pinghelp");
  CHECK(o.thriftMaxFrame == 16'384'000u);
  CHECK_FALSE(r.config->announce);  // no --zk-path: nothing to announce

  // A path on --zk; with --outbound-listen both kinds of route live together.
  auto both =
      parse({"--zk", "127.0.0.1:2181", "--outbound-listen", "127.0.0.1:4140", "--thrift-route",
             "127.0.0.1:9100=/discovery/pinghelp!thrift", "--thrift-max-frame", "64k"});
  REQUIRE(both.config);
  REQUIRE(both.config->outbound);
  CHECK(both.config->outbound->httpListener);
  CHECK(both.config->outbound->thriftRoutes.at(0).route.zkConnect == "127.0.0.1:2181");
  CHECK(both.config->outbound->thriftMaxFrame == 65536u);
  CHECK_FALSE(both.config->announce);

  // A remote address only with the same flag as --outbound-listen's.
  auto remote = parse(
      {"--thrift-route", "0.0.0.0:9100=static!10.0.0.1:9443", "--outbound-allow-remote", "true"});
  REQUIRE(remote.config);
  CHECK(remote.config->outbound->thriftRoutes.at(0).listen.host == "0.0.0.0");
}

TEST_CASE("--thrift-route: bad values give one line naming the flag") {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--thrift-route", "0.0.0.0:9100=static!10.0.0.1:9443"},
           {"--thrift-route", "10.1.2.3:9100=static!10.0.0.1:9443"},
           {"--thrift-route", "127.0.0.1:0=static!10.0.0.1:9443"},
           {"--thrift-route", "127.0.0.1=static!10.0.0.1:9443"},
           {"--thrift-route", "127.0.0.1:9100"},
           {"--thrift-route", "127.0.0.1:9100=static!nope"},
           {"--thrift-route", "127.0.0.1:9100=/discovery/x"},  // a path, and no --zk
           {"--thrift-route", "127.0.0.1:9100=http://x"},
           {"--thrift-route", "127.0.0.1:9100=static!10.0.0.1:1", "--thrift-route",
            "localhost:9100=static!10.0.0.1:2"},
           {"--admin-listen", "127.0.0.1:9100", "--thrift-route",
            "127.0.0.1:9100=static!10.0.0.1:1"},
           {"--outbound-listen", "127.0.0.1:9100", "--thrift-route",
            "127.0.0.1:9100=static!10.0.0.1:1"}}) {
    auto r = parse(args);
    CHECK_FALSE(r.config);
    CHECK(r.exitCode == 2);
    CHECK_MESSAGE(r.message.find("--thrift-route") != std::string::npos, r.message);
    CHECK(std::count(r.message.begin(), r.message.end(), '\n') == 1);
  }
  // --route still needs the HTTP listener, whatever Thrift routes there are.
  auto r = parse(
      {"--route", "a=static!10.0.0.1:1", "--thrift-route", "127.0.0.1:9100=static!10.0.0.1:1"});
  CHECK_FALSE(r.config);
  CHECK(r.message.find("--route needs --outbound-listen") != std::string::npos);
}

TEST_CASE("SIDECAR_THRIFT_ROUTE: routes split at a comma followed by HOST:PORT=") {
  CHECK(splitThriftRouteList("127.0.0.1:1=static!a:1,b:2,127.0.0.1:2=zk2!z1:1,z2:2!/p!thrift") ==
        std::vector<std::string>{"127.0.0.1:1=static!a:1,b:2",
                                 "127.0.0.1:2=zk2!z1:1,z2:2!/p!thrift"});
  CHECK(splitThriftRouteList("127.0.0.1:1=static!a:1;identity=x,[::1]:2=/p") ==
        std::vector<std::string>{"127.0.0.1:1=static!a:1;identity=x", "[::1]:2=/p"});
  CHECK(splitThriftRouteList("127.0.0.1:1=static!a:1,b:2;identity=spiffe://x") ==
        std::vector<std::string>{"127.0.0.1:1=static!a:1,b:2;identity=spiffe://x"});
  auto r = parse({}, {"SIDECAR_THRIFT_ROUTE=127.0.0.1:9100=static!10.0.0.1:1,10.0.0.2:1,"
                      "127.0.0.1:9101=static!10.0.0.3:1"});
  REQUIRE(r.config);
  REQUIRE(r.config->outbound);
  REQUIRE(r.config->outbound->thriftRoutes.size() == 2);
  CHECK(r.config->outbound->thriftRoutes[0].route.fixed.size() == 2);
  CHECK(r.config->outbound->thriftRoutes[1].route.name == "thrift:9101");
  // The command line's list replaces the variable's.
  auto cli = parse({"--thrift-route", "127.0.0.1:9200=static!10.0.0.9:1"},
                   {"SIDECAR_THRIFT_ROUTE=127.0.0.1:9100=static!10.0.0.1:1"});
  REQUIRE(cli.config);
  REQUIRE(cli.config->outbound->thriftRoutes.size() == 1);
  CHECK(cli.config->outbound->thriftRoutes[0].route.name == "thrift:9200");
}

// Issue 25, item 9: drifts between what the flags accept and what the mesh can use.
TEST_CASE("outbound values are range-checked whether outbound is on or not") {
  refused(parse({"--max-routes", "0"}), "--max-routes: '0' is not a whole number from 1 to 10000");
  refused(parse({"--max-routes", "4294967297"}),
          "--max-routes: '4294967297' is not a whole number from 1 to 10000");
  refused(parse({"--outbound-timeout", "0ms"}),
          "--outbound-timeout: '0ms' is too short (at least 1ms)");
  refused(parse({"--route-idle-timeout", "soon"}),
          "--route-idle-timeout: 'soon' is not a duration (use e.g. 250ms, 5s, 1m)");
  auto on = parse({"--outbound-listen", "127.0.0.1:0", "--max-routes", "4294967297"});
  CHECK_FALSE(on.config);
  CHECK(on.message.find("--max-routes") != std::string::npos);
  auto d = parse({"--outbound-listen", "127.0.0.1:0", "--route", "a=static!10.0.0.1:1"});
  REQUIRE(d.config);
  CHECK(d.config->outbound->routeIdleTimeout == Duration(600'000));
  CHECK(d.config->outbound->dnsRefresh == Duration(30'000));
}

TEST_CASE("--dns-refresh is a duration from 1s to 60m") {
  refused(parse({"--dns-refresh", "500ms"}),
          "--dns-refresh: '500ms' is not a duration from 1s to 60m");
  refused(parse({"--dns-refresh", "61m"}), "--dns-refresh: '61m' is not a duration from 1s to 60m");
  refused(parse({"--dns-refresh", "often"}),
          "--dns-refresh: 'often' is not a duration (use e.g. 250ms, 5s, 1m)");
  auto d = parse({"--outbound-listen", "127.0.0.1:0", "--route", "a=static!db.example:1",
                  "--dns-refresh", "1s"});
  REQUIRE(d.config);
  CHECK(d.config->outbound->dnsRefresh == Duration(1'000));
}

TEST_CASE("--route-prefix / and ZooKeeper's own subtree are refused") {
  const std::vector<std::string> on{"--outbound-listen", "127.0.0.1:0", "--zk", "127.0.0.1:2181"};
  auto with = [&](std::vector<std::string> more) {
    auto args = on;
    args.insert(args.end(), more.begin(), more.end());
    return parse(args);
  };
  refused(with({"--route-prefix", "/"}),
          "--route-prefix: '/' is not an absolute ZooKeeper path like /discovery/prod");
  refused(with({"--route-prefix", "/zookeeper"}),
          "--route-prefix: '/zookeeper' is ZooKeeper's own subtree, not where services are "
          "announced");
  for (const char* route :
       {"q=/zookeeper/quota", "q=zk2!127.0.0.1:2181!/zookeeper", "q=/zookeeper"}) {
    auto r = with({"--route", route});
    CHECK_FALSE(r.config);
    CHECK_MESSAGE(r.message.find("ZooKeeper's own subtree") != std::string::npos, r.message);
  }
  CHECK(with({"--route-prefix", "/zookeeperish"}).config);
  CHECK(with({"--route", "q=/zookeeper-services/q"}).config);
}

TEST_CASE("a Host names a service by DNS's rules: one trailing dot, no empty label") {
  CHECK(serviceName("pinghelp") == "pinghelp");
  CHECK(serviceName("PingHelp.:4140") == "pinghelp");
  CHECK(serviceName("pinghelp..").empty());
  CHECK(serviceName("a..b").empty());
  CHECK(serviceName(".a").empty());
  CHECK(serviceName("a.b.c") == "a.b.c");
  CHECK(serviceName("[::1]:80").empty());
  CHECK(hostIsAddress("127.0.0.1"));
  CHECK(hostIsAddress("127.0.0.1:8080"));
  CHECK(hostIsAddress("[::1]:80"));
  CHECK(hostIsAddress("[fe80::1]"));
  CHECK_FALSE(hostIsAddress("pinghelp"));
  CHECK_FALSE(hostIsAddress("a1.b2:80"));
  auto dots = parse({"--outbound-listen", "127.0.0.1:0", "--route", "a..b=static!10.0.0.1:1"});
  CHECK_FALSE(dots.config);
  CHECK(dots.message.find("is not a service name") != std::string::npos);
}

// The flag table's defaults are made from default-constructed configs (core/config.h), so a
// parse that gives no optional flag must come out equal to them, field by field. This fails if a
// default is ever written twice again and the two drift (--deregister-grace's did: 22s in the
// table, 2s in the struct).
TEST_CASE("every defaulted flag parses to its member's initializer") {
  auto r = parse({});
  REQUIRE_MESSAGE(r.config, r.message);
  const SidecarConfig& c = *r.config;
  const SidecarConfig s{};
  CHECK(c.listen.str() == s.listen.str());
  CHECK(c.upstream.str() == s.upstream.str());
  CHECK(c.adminListen.str() == s.adminListen.str());
  CHECK(c.tlsReloadInterval == s.tlsReloadInterval);
  CHECK(c.busyPoll == s.busyPoll);
  CHECK(s.workers == 0);  // parsed as one per core
  CHECK(c.workers >= 1);
  CHECK(c.drainTimeout == s.drainTimeout);
  CHECK(c.deregisterGrace == s.deregisterGrace);
  CHECK(c.logLevel == s.logLevel);
  CHECK(c.allowIdentities.empty());
  CHECK(c.accessLog.empty());
  CHECK_FALSE(c.announce);
  CHECK_FALSE(c.outbound);
  CHECK_FALSE(c.thrift);

  const ProxyLimits& l = c.limits;
  const ProxyLimits dl{};
  CHECK(l.maxHeadBytes == dl.maxHeadBytes);
  CHECK(l.maxBodyBytes == dl.maxBodyBytes);
  CHECK(l.handshakeTimeout == dl.handshakeTimeout);
  CHECK(l.headTimeout == dl.headTimeout);
  CHECK(l.idleTimeout == dl.idleTimeout);
  CHECK(l.upstreamConnectTimeout == dl.upstreamConnectTimeout);
  CHECK(l.upstreamTimeout == dl.upstreamTimeout);
  CHECK(l.upstreamIdleTimeout == dl.upstreamIdleTimeout);
  CHECK(l.upstreamMaxIdle == dl.upstreamMaxIdle);
  CHECK(l.maxConnections == dl.maxConnections);
  CHECK(l.thriftMaxConnections == dl.thriftMaxConnections);
  CHECK(l.outboundMaxConnections == dl.outboundMaxConnections);
  CHECK(l.maxPending == dl.maxPending);
  CHECK(l.underscoreHeaders == dl.underscoreHeaders);

  // Announcing, the outbound mesh and inbound Thrift only with the flags that switch them on.
  auto on = parse({"--zk", "127.0.0.1:2181", "--zk-path", "/discovery/prod/svc",
                   "--outbound-listen", "127.0.0.1:4140", "--thrift-listen", "127.0.0.1:9443",
                   "--thrift-upstream", "127.0.0.1:9090"});
  REQUIRE_MESSAGE(on.config, on.message);
  REQUIRE(on.config->announce);
  REQUIRE(on.config->outbound);
  REQUIRE(on.config->thrift);
  const AnnounceConfig& a = *on.config->announce;
  const AnnounceConfig da{};
  CHECK(a.zkSecureParents == da.zkSecureParents);
  CHECK(a.zkSessionTimeout == da.zkSessionTimeout);
  CHECK(a.healthPath == da.healthPath);
  CHECK(a.healthInterval == da.healthInterval);
  CHECK(a.rise == da.rise);
  CHECK(a.fall == da.fall);
  CHECK(a.shard == da.shard);
  CHECK(a.advertiseHost == da.advertiseHost);

  const OutboundConfig& o = *on.config->outbound;
  const OutboundConfig dout{};
  CHECK(o.allowRemote == dout.allowRemote);
  CHECK(o.maxRoutes == dout.maxRoutes);
  CHECK(o.routeIdleTimeout == dout.routeIdleTimeout);
  CHECK(o.connectTimeout == dout.connectTimeout);
  CHECK(o.timeout == dout.timeout);
  CHECK(o.idleTimeout == dout.idleTimeout);
  CHECK(o.zkSessionTimeout == dout.zkSessionTimeout);
  CHECK(o.dnsRefresh == dout.dnsRefresh);
  CHECK(o.thriftMaxFrame == dout.thriftMaxFrame);

  const ThriftConfig& t = *on.config->thrift;
  const ThriftConfig dt{};
  CHECK(t.maxFrame == dt.maxFrame);
  CHECK(t.maxBuffered == dt.maxBuffered);
}
