#pragma once
// Command-line and environment configuration of the sidecar: parsed and validated before anything starts.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
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
  std::size_t upstreamMaxIdle = 128;  // per worker
  std::size_t maxConnections = 0;     // 0: derived from the descriptor limit at start-up
  std::size_t maxPending = 1024;      // requests at the local service at once, all workers
  UnderscoreHeaders underscoreHeaders = UnderscoreHeaders::drop;
};

// Where and how to announce this instance in ZooKeeper (absent: no announcement).
struct AnnounceConfig {
  std::string zkConnect;  // host:port[,host:port][/chroot]
  std::string zkPath;
  std::optional<int32_t> shard;
  std::string endpointName;  // from --announce's optional last part
  std::string zkDigest;      // "user:password" from --zk-auth-file; never logged
  Duration zkSessionTimeout{10'000};
  std::string advertiseHost;  // empty: the primary non-loopback address
  std::string healthPath = "/ping";
  Duration healthInterval{1'000};
  unsigned rise = 2;
  unsigned fall = 3;
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
  ProxyLimits limits;
  Duration drainTimeout{20'000};
  Duration deregisterGrace{2'000};
  std::optional<AnnounceConfig> announce;
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

}  // namespace sidecar
