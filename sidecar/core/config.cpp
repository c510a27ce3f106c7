// Parses and validates the sidecar's flags and SIDECAR_* environment variables.
#include "core/config.h"

#include <registry/serverset.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

#include "core/flags.h"
#include "core/text.h"
#include "h2/grpc_frame.h"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace sidecar {

using namespace flags;  // the flag readers (core/flags.h)

namespace {

// Ranges of the flags that have one; --help and the error lines say them.
constexpr uint64_t kMinHeadBytes = 1024;
constexpr uint64_t kMaxHeadBytes = 1024 * 1024;
constexpr uint64_t kMaxWorkers = 256;
constexpr uint64_t kMaxBusyPollUs = 10'000;
constexpr uint64_t kMaxUpstreamIdle = 100'000;
constexpr uint64_t kMaxConnections = 10'000'000;
constexpr uint64_t kMaxPending = 10'000'000;
constexpr uint64_t kMaxRiseFall = 1'000;
// ZooKeeper's C client takes the session timeout as an int of milliseconds, and servers cap it
// at 20 ticks (40s by default) anyway.
constexpr Duration kMaxZkSessionTimeout{60 * 60'000};

// %word%, as in Boost.ProgramOptions' message templates.
bool hasPlaceholder(std::string_view text) {
  for (auto open = text.find('%'); open != std::string_view::npos;
       open = text.find('%', open + 1)) {
    auto close = text.find('%', open + 1);
    if (close == std::string_view::npos) {
      return false;
    }
    auto word = text.substr(open + 1, close - open - 1);
    if (!word.empty() && std::all_of(word.begin(), word.end(),
                                     [](char c) { return (c >= 'a' && c <= 'z') || c == '_'; })) {
      return true;
    }
  }
  return false;
}

// Maps SIDECAR_UPSTREAM_TIMEOUT to "upstream-timeout" when that flag exists; other variables
// (Kubernetes injects SIDECAR_SERVICE_HOST for a Service named "sidecar") are ignored.
std::string envToFlag(const po::options_description& desc, const std::string& var) {
  static constexpr std::string_view prefix = "SIDECAR_";
  if (var.rfind(prefix, 0) != 0) {
    return {};
  }
  std::string flag = lower(std::string_view(var).substr(prefix.size()));
  std::replace(flag.begin(), flag.end(), '_', '-');
  return desc.find_nothrow(flag, false) ? flag : std::string{};
}

// The flag table's default texts come from default-constructed configs: each default is
// declared once, as a member's initializer in core/config.h.
po::typed_value<std::string>* byDefault(std::string text) {
  return po::value<std::string>()->default_value(std::move(text));
}

// The shortest text that reads back as v ("0.001", "0.5"), as --help prints a share.
std::string shortestText(double v) {
  char text[32];
  const auto [end, ec] = std::to_chars(text, text + sizeof text, v);
  return ec == std::errc{} ? std::string(text, end) : std::to_string(v);
}

// As durationText, but a minute or less in seconds: "60s", as the docs write --idle-timeout's.
std::string durationDefault(Duration d) {
  if (d <= Duration(60'000) && d.count() % 1'000 == 0) {
    return std::to_string(d.count() / 1'000) + "s";
  }
  return durationText(d);
}

std::string_view upstreamProtocolName(UpstreamProtocol p) {
  switch (p) {
    case UpstreamProtocol::http1:
      return "http1";
    case UpstreamProtocol::h2c:
      return "h2c";
    case UpstreamProtocol::automatic:
      return "auto";
  }
  return "http1";
}

std::string_view underscoreName(UnderscoreHeaders action) {
  switch (action) {
    case UnderscoreHeaders::drop:
      return "drop";
    case UnderscoreHeaders::reject:
      return "reject";
    case UnderscoreHeaders::allow:
      return "allow";
  }
  return "drop";
}

po::options_description describeFlags() {
  po::options_description d(
      "sidecar: mTLS-terminating reverse proxy for one local service\n\n"
      "Usage: sidecar [flags]   (every flag also reads SIDECAR_<FLAG>, e.g. SIDECAR_TLS_CERT)\n"
      "       sidecar resolve zk2!host:port[,host:port]!/path [--watch]   print a serverset's "
      "members (resolve --help)\n"
      "       sidecar probe [http://host:port/path]   one HTTP request for health checks; no URL: "
      "/health on SIDECAR_ADMIN_LISTEN (probe --help)\n\nFlags");
  const SidecarConfig s{};
  const ProxyLimits& l = s.limits;
  const AnnounceConfig a{};
  const OutboundConfig o{};
  const ThriftConfig t{};
  const TraceConfig z{};
  // clang-format off
  d.add_options()
    ("help,h", "print this help and exit")
    ("version", "print the version and exit")
    ("listen", byDefault(s.listen.str()), "mTLS listener, host:port")
    ("upstream", byDefault(s.upstream.str()), "local service, host:port (plain HTTP/1.1, or h2c as --upstream-protocol says)")
    ("tls-cert", po::value<std::string>(), "server certificate chain, PEM (required)")
    ("tls-key", po::value<std::string>(), "server private key, PEM (required)")
    ("tls-client-ca", po::value<std::string>(), "CA bundle that client certificates must chain to, PEM (required)")
    ("tls-reload-interval", byDefault(durationDefault(s.tlsReloadInterval)), "how often to check the three TLS files for changes (SIGHUP reloads at once)")
    ("allow-identity", po::value<std::vector<std::string>>()->composing(), "caller identity allowed to call, exact or with a trailing '*'; repeatable (environment: comma-separated). Default: any identity the CA vouches for")
    ("admin-listen", byDefault(s.adminListen.str()), "admin HTTP listener, host:port")
    ("workers", byDefault(std::to_string(s.workers)), "worker threads, each with its own acceptor and upstream pool, 0 to 256 (0: one per core, up to 256)")
    ("busy-poll-us", byDefault(std::to_string(s.busyPoll.count())), "microseconds a worker keeps polling for events after its last one before it sleeps, 0 to 10000 (0: it sleeps at once); trades CPU for the wake-up at moderate load")
    ("max-head-size", byDefault(sizeText(l.maxHeadBytes)), "largest request head (request line and headers), 1KiB to 1MiB; larger: 431")
    ("max-body-size", byDefault(sizeText(l.maxBodyBytes)), "largest request body; larger: 413 (0: unlimited)")
    ("headers-with-underscores", byDefault(std::string(underscoreName(l.underscoreHeaders))), "request header names holding '_': drop (removed before forwarding, counted), reject (400) or allow (forwarded as they are). CGI/WSGI servers read X_Forwarded_Client_Cert as X-Forwarded-Client-Cert")
    ("http2", byDefault(s.http2.enabled ? "on" : "off"), "on: --listen offers HTTP/2 by ALPN (h2, then http/1.1; the caller chooses); off: HTTP/1.1 only")
    ("upstream-protocol", byDefault(std::string(upstreamProtocolName(s.http2.upstream))), "how a caller's HTTP/2 request reaches the local service: http1 (HTTP/1.1, translated), h2c (HTTP/2 in clear text, prior knowledge; gRPC needs it) or auto (gRPC requests over h2c, the rest over HTTP/1.1)")
    ("http2-max-concurrent-streams", byDefault(std::to_string(s.http2.maxConcurrentStreams)), "streams an HTTP/2 caller may have open at once on one connection, 1 to 10000; announced in SETTINGS; the stream past it is refused (RST_STREAM REFUSED_STREAM), or its connection ended once the caller acknowledged the setting")
    ("upstream-grpc", po::value<std::string>(), "host:port where the local service takes h2c, when it is not --upstream (a gRPC server on a port of its own): with --upstream-protocol auto, gRPC requests go there and the rest to --upstream; with h2c, every HTTP/2 caller's request")
    ("upstream-h2-connections", byDefault(std::to_string(s.http2.upstreamConnections)), "h2c connections each worker opens to the local service at most, 1 to 64; streams beyond what they take wait for one to end")
    ("handshake-timeout", byDefault(durationDefault(l.handshakeTimeout)), "deadline for the TLS handshake")
    ("head-timeout", byDefault(durationDefault(l.headTimeout)), "deadline for reading a request head once its first byte arrived; slower: closed, counted as 408")
    ("idle-timeout", byDefault(durationDefault(l.idleTimeout)), "keep-alive idle time between requests, and longest pause of a caller mid-body")
    ("upstream-connect-timeout", byDefault(durationDefault(l.upstreamConnectTimeout)), "deadline for connecting to the local service; slower: 504")
    ("upstream-timeout", byDefault(durationDefault(l.upstreamTimeout)), "deadline for the local service's response head, and longest pause mid-body; slower: 504")
    ("upstream-idle-timeout", byDefault(durationDefault(l.upstreamIdleTimeout)), "pooled upstream connections idle longer than this are closed, not reused")
    ("upstream-max-idle", byDefault(std::to_string(l.upstreamMaxIdle)), "idle upstream connections kept per worker, 0 to 100000 (0: none, a connection per request)")
    ("max-connections", byDefault(std::to_string(l.maxConnections)), "inbound connections open at once, 0 to 10000000; beyond it the worker's oldest connection that is idle between requests or not yet through its handshake is closed to make room, else the new one is (0: (descriptor limit - 64) / 2)")
    ("thrift-max-connections", byDefault(std::to_string(l.thriftMaxConnections)), "connections open at once on --thrift-listen, a budget of its own, 0 to 10000000, evicting as --max-connections does (0: as --max-connections's default)")
    ("outbound-max-connections", byDefault(std::to_string(l.outboundMaxConnections)), "the local service's connections open at once on --outbound-listen and the --thrift-route ports together, a budget of its own that remote callers cannot fill, 0 to 10000000 (0: as --max-connections's default)")
    ("max-pending", byDefault(std::to_string(l.maxPending)), "requests at the local service at once, 1 to 10000000, split evenly across workers; beyond it: 503 at once")
    ("drain-timeout", byDefault(durationDefault(s.drainTimeout)), "on shutdown, how long in-flight requests may take to finish")
    ("zk", po::value<std::string>(), "ZooKeeper ensemble: host:port[,host:port][/chroot]; announces with --zk-path, and holds the services of /path routes and --route-prefix")
    ("zk-path", po::value<std::string>(), "serverset path to announce under, e.g. /discovery/prod/pinghelp")
    ("announce", po::value<std::string>(), "Finagle's form instead of --zk/--zk-path: zk!host:port[,host:port]!/path!shard[!endpointName]")
    ("shard", po::value<int32_t>(), "shard id written in the member (with --zk); default 0, always written as Finagle's announcer does")
    ("zk-auth-file", po::value<std::string>(), "file holding user:password for ZooKeeper digest auth; members become world-read, creator-all")
    ("zk-parent-acl", byDefault(a.zkSecureParents ? "creator-all" : "open"), "ACL of the serverset parents the sidecar creates: open (anyone may add members, as Finagle's announcer leaves them) or creator-all (world-read, creator-all; needs --zk-auth-file; other announcers without these credentials are refused)")
    ("zk-session-timeout", byDefault(durationDefault(a.zkSessionTimeout)), "ZooKeeper session timeout, at most 60m; a dead sidecar's member goes after this long")
    ("advertise-host", po::value<std::string>(), "host written in the member (default: the primary non-loopback address)")
    ("health-check", byDefault(a.healthCheck == AnnounceConfig::HealthCheck::grpc ? "grpc" : "http"), "how the local service is polled before announcing: http (GET --health-path, healthy on 2xx) or grpc (grpc.health.v1.Health/Check over h2c, healthy on SERVING)")
    ("health-grpc-service", po::value<std::string>(), "with --health-check grpc: the service name the Check asks about (default: empty, the server as a whole)")
    ("health-path", byDefault(a.healthPath), "path of the local service polled before announcing")
    ("health-interval", byDefault(durationDefault(a.healthInterval)), "how often the local service is polled")
    ("rise", byDefault(std::to_string(a.rise)), "consecutive healthy polls before announcing, 1 to 1000")
    ("fall", byDefault(std::to_string(a.fall)), "consecutive failed polls before withdrawing, 1 to 1000")
    ("deregister-grace", byDefault(durationDefault(s.deregisterGrace)), "on shutdown, time between deleting the member and closing the listener, so that callers' resolvers catch up (a Finagle zk2! client keeps calling a removed member for up to 20s)")
    ("outbound-listen", po::value<std::string>(), "outbound listener, host:port (e.g. 127.0.0.1:4140): the local service calls other services there by name (Host header; HTTP/1.1, or HTTP/2 with prior knowledge, routed per stream by :authority), over mTLS (off by default)")
    ("outbound-allow-remote", byDefault(o.allowRemote ? "true" : "false"), "true: let --outbound-listen bind a non-loopback address (it carries this pod's identity to anyone who reaches it)")
    ("route", po::value<std::vector<std::string>>()->composing(), "NAME=DEST[;identity=PATTERN], DEST one of zk2!host:port[,host:port]!/path[!endpoint] ('#' joins ensembles, their members unioned: zk2!a:2181#b:2181!/path), zk!host:port[,host:port]!/path[!endpoint] (Finagle's older form), /path[!endpoint] (on --zk), static!host:port[,host:port]; repeatable (environment: comma-separated)")
    ("route-prefix", po::value<std::string>(), "serverset path under which any other name is found on --zk, e.g. /discovery/prod (NAME -> /discovery/prod/NAME)")
    ("route-prefix-identity", po::value<std::string>(), "identity a --route-prefix route's members must carry, {name} standing for the service name (e.g. spiffe://prod/{name}); exact or trailing *; default: any the CA signed")
    ("max-routes", byDefault(std::to_string(o.maxRoutes)), "routes made from --route-prefix at most, 1 to 10000; a new one then replaces the least recently used")
    ("route-idle-timeout", byDefault(durationDefault(o.routeIdleTimeout)), "a --route-prefix route unused this long is removed, its resolver with it (one without members: after 5s)")
    ("dns-refresh", byDefault(durationDefault(o.dnsRefresh)), "members announced with a host name, not an address: how often the name is looked up again, 1s to 60m (a failed lookup: after 5s, keeping its last addresses)")
    ("serverset-drop-limit", byDefault(shortestText(o.dropLimit)), "share of a serverset route's members that one listing may take away before it is held, 0 to 1 (1: never held); a sudden loss (a ZooKeeper session storm, an announcer's bug) keeps the last set for --serverset-drop-hold")
    ("serverset-drop-hold", byDefault(durationDefault(o.dropHold)), "how long a listing that lost more than --serverset-drop-limit of the members is held before it is trusted, 1s to 60m")
    ("aperture", byDefault(o.aperture ? "true" : "false"), "true: balance each serverset route over a window of its members (Finagle's deterministic aperture) instead of all of them, from this sidecar's position among them when it is one, else a hash of its host:port; grown while loaded")
    ("aperture-size", byDefault(std::to_string(o.apertureSize)), "with --aperture, the fewest members a route's window holds, 1 to 10000 (all when the route has fewer)")
    ("outbound-ca", po::value<std::string>(), "CA bundle that called services' certificates must chain to, PEM (default: --tls-client-ca)")
    ("outbound-connect-timeout", byDefault(durationDefault(o.connectTimeout)), "deadline for connecting to a member and its TLS handshake")
    ("outbound-timeout", byDefault(durationDefault(o.timeout)), "deadline for a called service's response head, and longest pause mid-body; slower: 504")
    ("outbound-idle-timeout", byDefault(durationDefault(o.idleTimeout)), "pooled connections to members idle longer than this are closed")
    ("thrift-listen", po::value<std::string>(), "inbound Thrift listener, host:port: callers' framed Thrift over mTLS (the same certificates and --allow-identity), passed to --thrift-upstream (off by default)")
    ("thrift-upstream", po::value<std::string>(), "the local Thrift service, host:port (framed transport); required with --thrift-listen")
    ("thrift-max-frame", byDefault(std::to_string(t.maxFrame)), "largest Thrift frame, call or reply, in bytes (16384000, 64k, 16MiB), at most 1GiB; a larger call closes the connection")
    ("thrift-max-buffered", byDefault(sizeText(t.maxBuffered)), "callers' Thrift frame bytes a worker holds at once, over all its --thrift-listen connections, at most 1TiB (never less than --thrift-max-frame); a call whose frame would go past it gets INTERNAL_ERROR and its connection closes")
    ("thrift-route", po::value<std::vector<std::string>>()->composing(), "127.0.0.1:PORT=DEST[;identity=PATTERN], DEST as --route's (usually with the !thrift endpoint): the local Thrift client connects to the loopback PORT, each framed call goes to a member over mTLS; route name thrift:PORT; repeatable (environment: comma-separated)")
    ("zipkin-url", po::value<std::string>(), "Zipkin collector to post spans to, http://host:port/api/v2/spans (v2 JSON, batched, from a thread of its own); unset: no spans, B3 headers passed through untouched")
    ("trace-sample-rate", byDefault(shortestText(z.sampleRate)), "share of the traces that start at this sidecar that are sampled, 0 to 1 (a caller's decision and X-B3-Flags: 1 always win); with --zipkin-url")
    ("service-name", po::value<std::string>(), "the service's name in spans and its TTwitter client_id (default: the last part of the announced serverset path, else \"sidecar\")")
    ("thrift-client-id", po::value<std::string>(), "client_id this sidecar's --thrift-route calls carry toward members that speak TTwitter (default: --service-name)")
    ("log-level", byDefault(s.logLevel), "trace, debug, info, warn, error or off")
    ("access-log", po::value<std::string>(), "one line per request to - (stdout) or a file (its directory must exist), written by a background thread (off by default)");
  // clang-format on
  return d;
}

// The access log is opened after the listeners are bound, by spdlog, which creates missing
// directories: a typo in the path made a new directory tree rather than an error. "-" is stdout;
// a device such as /dev/stderr is fine.
void checkAccessLog(const std::string& path) {
  if (path == "-") {
    return;
  }
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (st.type() == fs::file_type::directory) {
    throw FlagError{"--access-log: '" + path + "' is a directory, not a file"};
  }
  if (fs::exists(st)) {
    if (::access(path.c_str(), W_OK) != 0) {
      throw FlagError{"--access-log: cannot write to '" + path + "'"};
    }
    return;
  }
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) {
    dir = ".";
  }
  const auto dirStatus = fs::status(dir, ec);
  if (dirStatus.type() == fs::file_type::not_found) {
    throw FlagError{"--access-log: directory '" + dir.string() + "' does not exist"};
  }
  if (dirStatus.type() != fs::file_type::directory) {
    throw FlagError{"--access-log: '" + dir.string() + "' is not a directory"};
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw FlagError{"--access-log: cannot create a file in '" + dir.string() + "'"};
  }
}

// --http2, --upstream-protocol and the HTTP/2 bounds.
void http2Flags(const po::variables_map& vm, SidecarConfig& c) {
  const auto onOff = vm["http2"].as<std::string>();
  if (onOff != "on" && onOff != "off") {
    throw FlagError{"--http2: '" + onOff + "' is not one of on, off"};
  }
  c.http2.enabled = onOff == "on";
  const auto protocol = vm["upstream-protocol"].as<std::string>();
  bool known = false;
  for (auto p : {UpstreamProtocol::http1, UpstreamProtocol::h2c, UpstreamProtocol::automatic}) {
    if (protocol == upstreamProtocolName(p)) {
      c.http2.upstream = p;
      known = true;
    }
  }
  if (!known) {
    throw FlagError{"--upstream-protocol: '" + protocol + "' is not one of http1, h2c, auto"};
  }
  c.http2.maxConcurrentStreams =
      static_cast<std::uint32_t>(countFlag(vm, "http2-max-concurrent-streams", 1, 10'000));
  c.http2.upstreamConnections = countFlag(vm, "upstream-h2-connections", 1, 64);
  if (vm.count("upstream-grpc")) {
    c.http2.grpcUpstream = hostPortFlag(vm, "upstream-grpc");
    if (c.http2.grpcUpstream->port == 0) {
      throw FlagError{"--upstream-grpc: '" + c.http2.grpcUpstream->str() +
                      "' needs a port from 1 to 65535"};
    }
    if (c.http2.upstream == UpstreamProtocol::http1) {
      throw FlagError{
          "--upstream-grpc: needs --upstream-protocol h2c or auto (http1 calls "
          "--upstream over HTTP/1.1 only)"};
    }
  }
}

UnderscoreHeaders underscoreFlag(const po::variables_map& vm, const char* name) {
  auto text = vm[name].as<std::string>();
  for (auto action :
       {UnderscoreHeaders::drop, UnderscoreHeaders::reject, UnderscoreHeaders::allow}) {
    if (text == underscoreName(action)) {
      return action;
    }
  }
  throw FlagError{std::string("--") + name + ": '" + text + "' is not one of drop, reject, allow"};
}

std::string readDigest(const std::string& path) {
  checkRegularReadable("zk-auth-file", path);
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    throw FlagError{"--zk-auth-file: cannot read file '" + path + "'"};
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
    line.pop_back();
  }
  auto colon = line.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == line.size()) {
    throw FlagError{"--zk-auth-file: '" + path + "' must hold user:password on its first line"};
  }
  return line;
}

// The flags of announcing that have defaults, checked even without --zk: a bad value should not
// wait until someone adds --zk to show up.
void healthFlags(const po::variables_map& vm, AnnounceConfig& a) {
  a.zkSessionTimeout = durationFlag(vm, "zk-session-timeout", kMaxZkSessionTimeout);
  a.healthPath = vm["health-path"].as<std::string>();
  if (a.healthPath.empty() || a.healthPath.front() != '/') {
    throw FlagError{"--health-path: '" + a.healthPath + "' must start with /"};
  }
  // It is written into the poll's request line as it is: a space would make every poll a 400.
  if (hasSpaceOrControl(a.healthPath)) {
    throw FlagError{"--health-path: '" + a.healthPath +
                    "' holds a space or control character (percent-encode it)"};
  }
  const auto mode = vm["health-check"].as<std::string>();
  if (mode != "http" && mode != "grpc") {
    throw FlagError{"--health-check: '" + mode + "' is neither http nor grpc"};
  }
  a.healthCheck =
      mode == "grpc" ? AnnounceConfig::HealthCheck::grpc : AnnounceConfig::HealthCheck::http;
  if (vm.count("health-grpc-service")) {
    if (mode != "grpc") {
      throw FlagError{"--health-grpc-service needs --health-check grpc"};
    }
    a.healthGrpcService = vm["health-grpc-service"].as<std::string>();
    // A protobuf string: a server would refuse the Check as malformed, every poll.
    if (!h2::validUtf8(a.healthGrpcService)) {
      throw FlagError{"--health-grpc-service: not UTF-8"};
    }
  }
  a.healthInterval = durationFlag(vm, "health-interval");
  a.rise = static_cast<unsigned>(countFlag(vm, "rise", 1, kMaxRiseFall));
  a.fall = static_cast<unsigned>(countFlag(vm, "fall", 1, kMaxRiseFall));
}

std::optional<AnnounceConfig> announceFlags(const po::variables_map& vm) {
  // Checked whether or not the sidecar announces: a typo is an error, never ignored.
  const auto parentAcl = vm["zk-parent-acl"].as<std::string>();
  if (parentAcl != "open" && parentAcl != "creator-all") {
    throw FlagError{"--zk-parent-acl: '" + parentAcl + "' is neither open nor creator-all"};
  }
  AnnounceConfig a;
  healthFlags(vm, a);
  // --zk alone may only name where routes are found (--route /path, --route-prefix).
  const bool zkForRoutesOnly =
      vm.count("zk") && !vm.count("zk-path") &&
      (vm.count("route") || vm.count("route-prefix") || vm.count("thrift-route"));
  const bool zk = (vm.count("zk") && !zkForRoutesOnly) || vm.count("zk-path");
  if (!zk && !vm.count("announce")) {
    for (const char* f : {"shard", "zk-auth-file", "advertise-host"}) {
      if (vm.count(f)) {
        throw FlagError{std::string("--") + f + " needs --zk and --zk-path, or --announce"};
      }
    }
    return std::nullopt;
  }
  if (zk && vm.count("announce")) {
    throw FlagError{"--announce: give either --announce or --zk with --zk-path, not both"};
  }
  if (vm.count("announce")) {
    auto text = vm["announce"].as<std::string>();
    auto parsed = registry::parseAnnounceAddress(text);
    if (!parsed) {
      throw FlagError{"--announce: '" + text +
                      "' is not zk!host:port[,host:port]!/path!shard[!endpoint]"};
    }
    if (vm.count("shard")) {
      throw FlagError{"--shard: --announce already names the shard"};
    }
    a.zkConnect = parsed->connect;
    a.zkPath = parsed->path;
    a.shard = parsed->shard;
    a.endpointName = parsed->endpoint;
  } else {
    if (!vm.count("zk") || !vm.count("zk-path")) {
      throw FlagError{vm.count("zk") ? "--zk-path is required with --zk"
                                     : "--zk is required with --zk-path"};
    }
    a.zkConnect = vm["zk"].as<std::string>();
    a.zkPath = vm["zk-path"].as<std::string>();
    if (!registry::validConnectString(a.zkConnect)) {
      throw FlagError{"--zk: '" + a.zkConnect + "' is not host:port[,host:port][/chroot]"};
    }
    if (!registry::validZkPath(a.zkPath) || a.zkPath == "/") {
      throw FlagError{"--zk-path: '" + a.zkPath +
                      "' is not an absolute ZooKeeper path like /discovery/prod/svc"};
    }
    if (vm.count("shard")) {
      a.shard = vm["shard"].as<int32_t>();
    }
  }
  if (vm.count("zk-auth-file")) {
    a.zkDigest = readDigest(vm["zk-auth-file"].as<std::string>());
  }
  if (parentAcl == "creator-all" && a.zkDigest.empty()) {
    throw FlagError{"--zk-parent-acl creator-all needs --zk-auth-file (the creator's credentials)"};
  }
  a.zkSecureParents = parentAcl == "creator-all";
  if (vm.count("advertise-host")) {
    a.advertiseHost = vm["advertise-host"].as<std::string>();
    // Empty would silently mean "the primary address"; callers could not dial a host with spaces.
    if (a.advertiseHost.empty() || hasSpaceOrControl(a.advertiseHost)) {
      throw FlagError{
          "--advertise-host: '" + a.advertiseHost +
          "' is not a host name or address (leave the flag out for the primary address)"};
    }
  }
  return a;
}

// SIDECAR_* variables as flags ("--upstream-timeout=5s"); lists split into one flag per item.
std::vector<std::string> environmentArgs(const po::options_description& desc,
                                         const char* const* envp) {
  std::vector<std::string> envArgs;
  for (auto e = envp; e && *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) {
      continue;
    }
    auto flag = envToFlag(desc, std::string(kv.substr(0, eq)));
    if (flag.empty()) {
      continue;
    }
    auto value = std::string(kv.substr(eq + 1));
    if (hasPlaceholder(value)) {
      throw FlagError{std::string(kv.substr(0, eq)) + ": a %word% sequence is not allowed"};
    }
    if (flag == "route") {
      for (auto& item : splitRouteList(value)) {
        envArgs.push_back("--route=" + item);
      }
    } else if (flag == "thrift-route") {
      for (auto& item : splitThriftRouteList(value)) {
        envArgs.push_back("--thrift-route=" + item);
      }
    } else if (flag == "allow-identity") {
      // An empty item used to be skipped, so "," (or "") allowed every caller. It is refused
      // even when the command line replaces the list: the variable is broken either way.
      for (std::size_t start = 0;;) {
        const auto comma = value.find(',', start);
        auto item =
            value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (item.empty()) {
          throw FlagError{"--allow-identity: SIDECAR_ALLOW_IDENTITY='" + value +
                          "' has an empty item (leave the variable out to allow any caller)"};
        }
        envArgs.push_back("--" + flag + "=" + item);
        if (comma == std::string::npos) {
          break;
        }
        start = comma + 1;
      }
    } else {
      envArgs.push_back("--" + flag + "=" + value);
    }
  }
  return envArgs;
}

// Environment second: po::store keeps values already set, so flags win.
void storeEnvironment(const po::options_description& desc, const char* const* envp,
                      po::variables_map& vm) {
  auto envArgs = environmentArgs(desc, envp);
  // A list on the command line replaces the environment's rather than adding to it.
  for (std::string list : {"allow-identity", "route", "thrift-route"}) {
    if (vm.count(list)) {
      std::erase_if(envArgs, [&](auto& a) { return a.rfind("--" + list + "=", 0) == 0; });
    }
  }
  std::vector<const char*> envArgv{"sidecar"};
  for (auto& a : envArgs) {
    envArgv.push_back(a.c_str());
  }
  po::store(
      po::command_line_parser(static_cast<int>(envArgv.size()), envArgv.data()).options(desc).run(),
      vm);
}

// The inbound listener, the local service, the admin listener, TLS and who may call.
void inboundFlags(const po::variables_map& vm, SidecarConfig& c) {
  c.listen = hostPortFlag(vm, "listen");
  c.upstream = hostPortFlag(vm, "upstream");
  if (c.upstream.port == 0) {
    // Nothing can be reached on port 0: every request would be a 502.
    throw FlagError{"--upstream: '" + c.upstream.str() + "' needs a port from 1 to 65535"};
  }
  c.adminListen = hostPortFlag(vm, "admin-listen");
  if (c.adminListen.port != 0 && c.adminListen.port == c.listen.port &&
      c.adminListen.host == c.listen.host) {
    throw FlagError{"--admin-listen: '" + c.adminListen.str() + "' is --listen's address too"};
  }
  c.tlsCert = fileFlag(vm, "tls-cert");
  c.tlsKey = fileFlag(vm, "tls-key");
  c.tlsClientCa = fileFlag(vm, "tls-client-ca");
  c.tlsReloadInterval = durationFlag(vm, "tls-reload-interval");
  if (vm.count("allow-identity")) {
    c.allowIdentities = vm["allow-identity"].as<std::vector<std::string>>();
    for (auto& id : c.allowIdentities) {
      if (id.empty()) {
        throw FlagError{"--allow-identity: '' is empty (leave the flag out to allow any caller)"};
      }
      auto star = id.find('*');
      if (star != std::string::npos && star != id.size() - 1) {
        throw FlagError{"--allow-identity: '" + id +
                        "' is not an identity (a '*' may only end it)"};
      }
    }
  }
}

// Workers, the data path's limits and deadlines, and shutdown's.
void limitFlags(const po::variables_map& vm, SidecarConfig& c) {
  c.workers = static_cast<unsigned>(countFlag(vm, "workers", 0, kMaxWorkers));
  if (c.workers == 0) {
    // One per core, but not an error on a host with more cores than a worker count may be.
    c.workers =
        std::clamp(std::thread::hardware_concurrency(), 1u, static_cast<unsigned>(kMaxWorkers));
  }
  c.busyPoll = std::chrono::microseconds(countFlag(vm, "busy-poll-us", 0, kMaxBusyPollUs));
  // The parser's header limit is 32 bits: 8GiB became 0 and every request a 431.
  c.limits.maxHeadBytes = sizeFlag(vm, "max-head-size", kMinHeadBytes, kMaxHeadBytes);
  c.limits.maxBodyBytes = sizeFlag(vm, "max-body-size");
  c.limits.underscoreHeaders = underscoreFlag(vm, "headers-with-underscores");
  c.limits.handshakeTimeout = durationFlag(vm, "handshake-timeout");
  c.limits.headTimeout = durationFlag(vm, "head-timeout");
  c.limits.idleTimeout = durationFlag(vm, "idle-timeout");
  c.limits.upstreamConnectTimeout = durationFlag(vm, "upstream-connect-timeout");
  c.limits.upstreamTimeout = durationFlag(vm, "upstream-timeout");
  c.limits.upstreamIdleTimeout = durationFlag(vm, "upstream-idle-timeout");
  c.limits.upstreamMaxIdle = countFlag(vm, "upstream-max-idle", 0, kMaxUpstreamIdle);
  c.limits.maxConnections = countFlag(vm, "max-connections", 0, kMaxConnections);
  c.limits.thriftMaxConnections = countFlag(vm, "thrift-max-connections", 0, kMaxConnections);
  c.limits.outboundMaxConnections = countFlag(vm, "outbound-max-connections", 0, kMaxConnections);
  // Bounded also because each worker's share is (max-pending + workers - 1) / workers.
  c.limits.maxPending = countFlag(vm, "max-pending", 1, kMaxPending);
  c.drainTimeout = durationFlag(vm, "drain-timeout");
  c.deregisterGrace = durationFlag(vm, "deregister-grace");
}

// The outbound mesh and inbound Thrift, each listener on an address of its own.
void meshFlags(const po::variables_map& vm, SidecarConfig& c) {
  c.outbound = outboundFlags(vm, c.tlsClientCa);
  if (c.outbound) {
    // The aperture's coordinate: this sidecar as its announced member reads.
    c.outbound->apertureSelf =
        HostPort{c.announce ? c.announce->advertiseHost : std::string(), c.listen.port};
    if (c.announce) {
      c.outbound->apertureZk = c.announce->zkConnect;
      c.outbound->aperturePath = c.announce->zkPath;
    }
    for (const auto* other : {&c.listen, &c.adminListen}) {
      if (c.outbound->listen.port != 0 && c.outbound->listen.port == other->port &&
          c.outbound->listen.host == other->host) {
        throw FlagError{"--outbound-listen: '" + c.outbound->listen.str() +
                        "' is another listener's address too"};
      }
    }
  }
  c.thrift = thriftFlags(vm);
  if (c.thrift) {
    for (const auto* other : {&c.listen, &c.adminListen}) {
      if (c.thrift->listen.port != 0 && c.thrift->listen.port == other->port &&
          c.thrift->listen.host == other->host) {
        throw FlagError{"--thrift-listen: '" + c.thrift->listen.str() +
                        "' is another listener's address too"};
      }
    }
  }
  if (!c.outbound) {
    return;
  }
  thriftRouteFlags(vm, *c.outbound);
  std::vector<const HostPort*> others{&c.listen, &c.adminListen};
  if (c.outbound->httpListener) {
    others.push_back(&c.outbound->listen);
  }
  if (c.thrift) {
    others.push_back(&c.thrift->listen);
  }
  for (const auto& t : c.outbound->thriftRoutes) {
    for (const auto* other : others) {
      if (t.listen.port == other->port && t.listen.host == other->host) {
        throw FlagError{"--thrift-route: '" + t.listen.str() +
                        "' is another listener's address too"};
      }
    }
  }
}

// An http:// URL with a host (the reporter speaks plain HTTP/1.1; a collector behind TLS is
// reached through a local agent).
void checkZipkinUrl(const std::string& url) {
  static constexpr std::string_view scheme = "http://";
  if (url.rfind(scheme, 0) != 0 || url.size() == scheme.size() || url[scheme.size()] == '/' ||
      hasSpaceOrControl(url)) {
    throw FlagError{"--zipkin-url: '" + url +
                    "' is not http://host[:port]/path (e.g. http://127.0.0.1:9411/api/v2/spans)"};
  }
}

void traceFlags(const po::variables_map& vm, SidecarConfig& c) {
  auto& t = c.trace;
  if (vm.count("zipkin-url")) {
    t.zipkinUrl = vm["zipkin-url"].as<std::string>();
    checkZipkinUrl(t.zipkinUrl);
  }
  const auto rate = vm["trace-sample-rate"].as<std::string>();
  double value = -1;
  const auto [end, ec] = std::from_chars(rate.data(), rate.data() + rate.size(), value);
  if (ec != std::errc{} || end != rate.data() + rate.size() || !(value >= 0.0 && value <= 1.0)) {
    throw FlagError{"--trace-sample-rate: '" + rate + "' is not a number from 0 to 1"};
  }
  t.sampleRate = value;
  if (vm.count("service-name")) {
    t.serviceName = vm["service-name"].as<std::string>();
  } else if (c.announce && !c.announce->zkPath.empty()) {
    t.serviceName = c.announce->zkPath.substr(c.announce->zkPath.rfind('/') + 1);
  }
  if (t.serviceName.empty() || hasSpaceOrControl(t.serviceName)) {
    if (vm.count("service-name")) {
      throw FlagError{"--service-name: '" + t.serviceName + "' is empty or holds a space"};
    }
    t.serviceName = "sidecar";
  }
  t.thriftClientId =
      vm.count("thrift-client-id") ? vm["thrift-client-id"].as<std::string>() : t.serviceName;
  if (t.thriftClientId.empty() || hasSpaceOrControl(t.thriftClientId)) {
    throw FlagError{"--thrift-client-id: '" + t.thriftClientId + "' is empty or holds a space"};
  }
}

void logFlags(const po::variables_map& vm, SidecarConfig& c) {
  c.logLevel = vm["log-level"].as<std::string>();
  if (vm.count("access-log")) {
    c.accessLog = vm["access-log"].as<std::string>();
    if (c.accessLog.empty()) {
      throw FlagError{"--access-log: give - for stdout or a file path"};
    }
    checkAccessLog(c.accessLog);
  }
  static const std::vector<std::string> levels{"trace", "debug", "info", "warn", "error", "off"};
  if (std::find(levels.begin(), levels.end(), c.logLevel) == levels.end()) {
    throw FlagError{"--log-level: '" + c.logLevel +
                    "' is not one of trace, debug, info, warn, "
                    "error, off"};
  }
}

}  // namespace

ParseResult parseSidecarArgs(int argc, const char* const* argv, const char* const* envp) {
  auto desc = describeFlags();
  ParseResult result;
  try {
    // Boost.ProgramOptions formats its errors by replacing %placeholders% in a loop, so a flag or
    // value holding one (--workers=%value%) made that loop endless (found by fuzzing).
    for (int i = 1; i < argc; ++i) {
      if (hasPlaceholder(argv[i])) {
        throw FlagError{"'" + std::string(argv[i]) + "': a %word% sequence is not allowed"};
      }
    }
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::ostringstream out;
      out << desc
          << "\nDurations take ms, s or m and are more than 0; sizes take k/KiB, m/MiB, g/GiB.\n"
          << "Signals: SIGTERM/SIGINT drain and exit (a second one exits at once); SIGHUP reloads "
             "the TLS files.\n";
      return {std::nullopt, out.str(), 0};
    }
    if (vm.count("version")) {
      return {std::nullopt, "sidecar " SIDECAR_VERSION "\n", 0};
    }
    storeEnvironment(desc, envp, vm);
    po::notify(vm);

    SidecarConfig c;
    inboundFlags(vm, c);
    limitFlags(vm, c);
    http2Flags(vm, c);
    c.announce = announceFlags(vm);
    meshFlags(vm, c);
    traceFlags(vm, c);
    logFlags(vm, c);
    result.config = std::move(c);
  } catch (const FlagError& e) {
    return {std::nullopt, "sidecar: " + printable(e.line) + "\n", 2};
  } catch (const po::error& e) {
    return {std::nullopt, "sidecar: " + printable(e.what()) + " (see --help)\n", 2};
  }
  return result;
}

}  // namespace sidecar
