#pragma once
// Command-line and environment configuration of the sidecar: parsed and validated before anything
// starts.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sidecar {

using Duration = std::chrono::milliseconds;

// A host and port as given on the command line ("127.0.0.1:8080", "[::1]:8443", "localhost:80").
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string str() const;
};

// What to do with a request header whose name holds '_'. CGI/WSGI-style servers map '_' and '-'
// to the same variable, so a caller's X_Forwarded_Client_Cert would be read as the
// X-Forwarded-Client-Cert we set (Envoy's headers_with_underscores_action).
enum class UnderscoreHeaders {
  drop,    // removed before the request is forwarded, and counted
  reject,  // the request is refused with 400
  allow,   // forwarded as it is
};

// How the local service is called for a caller's HTTP/2 stream (--upstream-protocol).
enum class UpstreamProtocol {
  http1,      // HTTP/1.1, the request translated (the default: any HTTP service)
  h2c,        // HTTP/2 in clear text with prior knowledge (a gRPC or HTTP/2 service)
  automatic,  // per request: gRPC over h2c, the rest over HTTP/1.1 ("auto")
};

// HTTP/2 on --listen.
struct Http2Config {
  bool enabled = true;  // --http2: ALPN offers h2
  UpstreamProtocol upstream = UpstreamProtocol::http1;
  std::uint32_t maxConcurrentStreams = 100;  // per caller connection
  std::size_t upstreamConnections = 4;       // h2c connections to the local service, per worker
  std::optional<HostPort> grpcUpstream;      // --upstream-grpc: h2c goes there (else --upstream)
};

// The member initializers of ProxyLimits, AnnounceConfig, OutboundConfig, ThriftConfig and
// SidecarConfig are the flags' defaults: --help (and so the man page) shows them, made from
// default-constructed configs. Declare a default here only, never in the flag table.

// Limits and deadlines of the data path, shared read-only by every worker.
struct ProxyLimits {
  std::size_t maxHeadBytes = 64 * 1024;
  uint64_t maxBodyBytes = 1ull << 30;  // 0: unlimited
  Duration handshakeTimeout{5'000};
  Duration headTimeout{10'000};
  Duration idleTimeout{60'000};
  Duration upstreamConnectTimeout{1'000};
  Duration upstreamTimeout{30'000};
  Duration upstreamIdleTimeout{30'000};
  std::size_t upstreamMaxIdle = 1024;  // per worker: as many as --max-pending lets be busy
  std::size_t maxConnections = 0;  // --listen's; 0: derived from the descriptor limit at start-up
  std::size_t thriftMaxConnections = 0;    // --thrift-listen's own; 0: derived likewise
  std::size_t outboundMaxConnections = 0;  // --outbound-listen's and --thrift-route's; 0: likewise
  std::size_t maxPending = 1024;           // requests at the local service at once, all workers
  UnderscoreHeaders underscoreHeaders = UnderscoreHeaders::drop;
};

// Where and how to announce this instance in ZooKeeper (absent: no announcement).
struct AnnounceConfig {
  std::string zkConnect;  // host:port[,host:port][/chroot]
  std::string zkPath;
  std::optional<int32_t> shard;
  std::string endpointName;      // from --announce's optional last part
  std::string zkDigest;          // "user:password" from --zk-auth-file; never logged
  bool zkSecureParents = false;  // --zk-parent-acl creator-all
  Duration zkSessionTimeout{10'000};
  std::string advertiseHost;  // empty: the primary non-loopback address
  // How the local service is polled: GET --health-path over HTTP/1.1, or gRPC's
  // grpc.health.v1.Health/Check over h2c (a gRPC service need not answer HTTP/1.1 at all).
  enum class HealthCheck { http, grpc } healthCheck = HealthCheck::http;
  std::string healthGrpcService;  // HealthCheckRequest.service; empty: the server as a whole
  std::string healthPath = "/ping";
  Duration healthInterval{1'000};
  unsigned rise = 2;
  unsigned fall = 3;
};

// One outbound route: a service name (the Host the local service calls) and where its members
// are found. DEST is zk2!hosts[#hosts...]!/path[!endpoint] (or Finagle's older zk!hosts!/path
// [!endpoint]), /path[!endpoint] on --zk, or static!h:p[,h:p].
struct RouteConfig {
  std::string name;
  std::string dest;  // as given, for the admin page
  enum class Kind { serverset, fixed } kind = Kind::fixed;
  std::string zkConnect;        // serverset: the ensemble (several joined by '#': their union)
  std::string zkPath;           // serverset: the path
  std::string endpoint;         // serverset: the named additional endpoint, or empty
  std::vector<HostPort> fixed;  // static members
  // The identity the callee's certificate must carry: exact, or a prefix with a trailing '*';
  // empty: any certificate --outbound-ca vouches for.
  std::string identity;
};

// An outbound Thrift route (--thrift-route 127.0.0.1:PORT=DEST): the local Thrift client
// connects to listen, and each framed call goes to a member of route, named "thrift:PORT".
struct ThriftRouteConfig {
  HostPort listen;
  RouteConfig route;
  std::string serverName;  // SNI: the serverset path's last part, or the first static host
};

// The outbound mesh: the local service's calls to other services by name (absent: off).
struct OutboundConfig {
  bool httpListener = true;  // --outbound-listen given (else Thrift routes only)
  HostPort listen{"127.0.0.1", 4140};
  bool allowRemote = false;            // --outbound-allow-remote: a non-loopback listener
  std::vector<RouteConfig> routes;     // --route, in order
  std::string routePrefix;             // --route-prefix: any other name is a path under it
  std::string prefixZk;                // the ensemble prefix routes use (--zk)
  std::string prefixIdentity;          // --route-prefix-identity: {name} is the route's name
  std::size_t maxRoutes = 100;         // prefix routes at most
  Duration routeIdleTimeout{600'000};  // a prefix route unused this long is removed
  std::string caFile;                  // --outbound-ca (default: --tls-client-ca)
  Duration connectTimeout{1'000};
  Duration timeout{30'000};           // the answer's head, and longest pause mid-body
  Duration idleTimeout{30'000};       // pooled connections to members
  Duration resolveTimeout{3'000};     // a first request waits this long for a new route's members
  Duration zkSessionTimeout{10'000};  // the resolvers' sessions (--zk-session-timeout)
  Duration dnsRefresh{30'000};        // members' host names are looked up again this often
  // A listing that takes away more than this share of a serverset's members at once is held
  // (the last set kept) for dropHold, unless a later one comes back within it (1: never held).
  double dropLimit = 0.5;
  Duration dropHold{30'000};
  // --aperture: each serverset route balanced over a window of at least apertureSize of its
  // members, from this sidecar's coordinate (outbound/aperture.h); grown while loaded.
  bool aperture = false;
  std::size_t apertureSize = 12;  // Finagle's minimum aperture
  // This sidecar as its serverset member would be (host: --advertise-host, else the primary
  // address when empty; port: --listen's): its coordinate's source.
  HostPort apertureSelf;
  // The serverset this sidecar announces in (--announce; empty: none): with --aperture, its
  // position among those members places it on every route's ring.
  std::string apertureZk;
  std::string aperturePath;
  std::vector<ThriftRouteConfig> thriftRoutes;  // --thrift-route, in order
  std::uint32_t thriftMaxFrame = 16'384'000;    // --thrift-max-frame, calls and replies
};

// Inbound Thrift: callers' framed Thrift over mTLS, passed through to the local Thrift service
// (absent: off).
struct ThriftConfig {
  HostPort listen;                          // --thrift-listen
  HostPort upstream;                        // --thrift-upstream
  std::uint32_t maxFrame = 16'384'000;      // --thrift-max-frame, Apache Thrift's default
  std::uint64_t maxBuffered = 64ull << 20;  // --thrift-max-buffered, per worker
};

// Zipkin tracing (docs/tracing.md): B3 in HTTP, TTwitter in Thrift (docs/thrift.md), spans to
// --zipkin-url.
struct TraceConfig {
  std::string zipkinUrl;       // http://host:port/api/v2/spans; empty: no spans, B3 untouched
  double sampleRate = 0.001;   // of the traces that start here (Finagle's default)
  std::string serviceName;     // localEndpoint.serviceName; empty: the announced path's last part
  std::string thriftClientId;  // TTwitter client_id toward members; empty: serviceName
};

struct SidecarConfig {
  HostPort listen{"0.0.0.0", 8443};
  HostPort upstream{"127.0.0.1", 8080};
  HostPort adminListen{"127.0.0.1", 9990};
  std::string tlsCert;
  std::string tlsKey;
  std::string tlsClientCa;
  Duration tlsReloadInterval{2'000};
  std::vector<std::string> allowIdentities;
  unsigned workers = 0;  // 0: one per core
  // After its last event a worker polls this long before it sleeps in epoll_wait (0: never).
  std::chrono::microseconds busyPoll{0};
  ProxyLimits limits;
  Http2Config http2;
  Duration drainTimeout{20'000};
  Duration deregisterGrace{22'000};
  std::optional<AnnounceConfig> announce;
  std::optional<OutboundConfig> outbound;
  std::optional<ThriftConfig> thrift;
  TraceConfig trace;
  std::string logLevel = "info";
  std::string accessLog;  // "-" for stdout, a file path, or empty for none
};

// Outcome of parsing: a config to run, text to print and exit 0 (--help, --version), or one line
// naming what is wrong (exit 2).
struct ParseResult {
  std::optional<SidecarConfig> config;
  std::string message;
  int exitCode = 0;
};

// Parses argv, then SIDECAR_* variables from envp (a command-line flag wins over its variable).
// Checks that the files it names are readable.
ParseResult parseSidecarArgs(int argc, const char* const* argv, const char* const* envp);

// "250ms", "2s", "1m" (a unit is required). nullopt on anything else.
std::optional<Duration> parseDuration(std::string_view text);
// "65536", "64k", "64KiB", "1m", "1MiB", "1g", "1GiB" (binary multiples). nullopt on anything else.
std::optional<uint64_t> parseSize(std::string_view text);
std::optional<HostPort> parseHostPort(std::string_view text);
// "NAME=DEST[;identity=PATTERN]" (see RouteConfig); zk is the ensemble for /path routes (may be
// empty: then such a route is an error). On failure: why, as one line without the flag's name.
std::variant<RouteConfig, std::string> parseRoute(std::string_view text, std::string_view zk);
// SIDECAR_ROUTE: routes separated by commas, where a comma that starts a new route is followed
// by NAME= (static!h:p,h:p and zk2!h1,h2 keep theirs).
// Splits an environment variable's "KEY=VALUE,KEY=VALUE" whose values may hold commas: a comma
// starts a new entry only where what follows it, up to the next '=', is a key.
std::vector<std::string> splitKeyedList(std::string_view text, bool (*isKey)(std::string_view key));
std::vector<std::string> splitRouteList(std::string_view text);
// "127.0.0.1:PORT=DEST[;identity=PATTERN]" (see ThriftRouteConfig), DEST as parseRoute's; the
// address must be loopback unless allowRemote. On failure: why, as one line.
std::variant<ThriftRouteConfig, std::string> parseThriftRoute(std::string_view text,
                                                              std::string_view zk,
                                                              bool allowRemote);
// SIDECAR_THRIFT_ROUTE: routes separated by commas, where a comma that starts a new route is
// followed by HOST:PORT= (static!h:p,h:p and zk2!h1,h2 keep theirs).
std::vector<std::string> splitThriftRouteList(std::string_view text);
// A Host header's service name: the port and one trailing dot stripped, lower case; empty when it
// is not a name (an address, an empty label).
std::string serviceName(std::string_view host);
// A Host header that names an address (127.0.0.1, 10.1.2.3:8080, [::1]:80), not a service.
bool hostIsAddress(std::string_view host);
// Such a Host without its port, as answers and logs name it.
std::string addressName(std::string_view host);
// ZooKeeper's own subtree (/zookeeper: quotas, configuration), which no route may read.
bool reservedZkPath(std::string_view path);

}  // namespace sidecar
