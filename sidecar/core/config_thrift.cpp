// The Thrift flags: the inbound listener (where callers connect, the local Thrift service, the
// largest frame) and the outbound routes (--thrift-route: a loopback port per destination).
#include "core/config.h"
#include "core/flags.h"

namespace sidecar::flags {

std::optional<ThriftConfig> thriftFlags(const po::variables_map& vm) {
  if (!vm.count("thrift-listen")) {
    if (vm.count("thrift-upstream")) {
      throw FlagError{"--thrift-upstream needs --thrift-listen"};
    }
    return std::nullopt;
  }
  if (!vm.count("thrift-upstream")) {
    throw FlagError{"--thrift-listen needs --thrift-upstream (the local Thrift service)"};
  }
  ThriftConfig t;
  t.listen = hostPortFlag(vm, "thrift-listen");
  t.upstream = hostPortFlag(vm, "thrift-upstream");
  t.maxFrame = static_cast<std::uint32_t>(sizeFlag(vm, "thrift-max-frame", 1, 1ull << 30));
  t.maxBuffered = sizeFlag(vm, "thrift-max-buffered", 1, 1ull << 40);
  return t;
}

}  // namespace sidecar::flags

namespace sidecar {

namespace {

// The name a Thrift route's members are asked for (SNI): the service's, where DEST names one.
std::string thriftServerName(const RouteConfig& r) {
  if (r.kind == RouteConfig::Kind::serverset) {
    return r.zkPath.substr(r.zkPath.rfind('/') + 1);
  }
  return r.fixed.empty() ? std::string{} : r.fixed.front().host;
}

}  // namespace

std::variant<ThriftRouteConfig, std::string> parseThriftRoute(std::string_view text,
                                                              std::string_view zk,
                                                              bool allowRemote) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return "'" + std::string(text) + "' is not 127.0.0.1:PORT=DEST";
  }
  auto listen = parseHostPort(text.substr(0, eq));
  if (!listen || listen->port == 0) {
    return "'" + std::string(text.substr(0, eq)) +
           "' is not host:port with a port from 1 to 65535 (the local client connects there)";
  }
  if (!allowRemote && !flags::loopbackHost(listen->host)) {
    return "'" + listen->str() +
           "' is not a loopback address; it would carry this pod's identity to anyone who "
           "reaches it (--outbound-allow-remote true to mean it)";
  }
  ThriftRouteConfig t;
  t.listen = *listen;
  // parseRoute reads DEST as --route does; the name is ours, and no Host can spell it (':').
  auto r = parseRoute("thrift=" + std::string(text.substr(eq + 1)), zk);
  if (auto* why = std::get_if<std::string>(&r)) {
    static constexpr std::string_view kPrefix = "route thrift: ";
    return listen->str() + ": " + (why->starts_with(kPrefix) ? why->substr(kPrefix.size()) : *why);
  }
  t.route = std::get<RouteConfig>(std::move(r));
  t.route.name = "thrift:" + std::to_string(listen->port);
  t.serverName = thriftServerName(t.route);
  return t;
}

std::vector<std::string> splitThriftRouteList(std::string_view text) {
  // A Thrift route's HOST:PORT holds a ':' and no ',', '!', '/' or ';' (which a static member
  // list, a zk2! ensemble or an identity would hold).
  return splitKeyedList(text, [](std::string_view key) {
    return key.find(':') != std::string_view::npos &&
           key.find_first_of(",!/;") == std::string_view::npos;
  });
}

namespace flags {

void thriftRouteFlags(const po::variables_map& vm, OutboundConfig& o) {
  o.thriftMaxFrame = static_cast<std::uint32_t>(sizeFlag(vm, "thrift-max-frame", 1, 1ull << 30));
  if (!vm.count("thrift-route")) {
    return;
  }
  const std::string zk = vm.count("zk") ? vm["zk"].as<std::string>() : std::string{};
  for (const auto& text : vm["thrift-route"].as<std::vector<std::string>>()) {
    auto r = parseThriftRoute(text, zk, o.allowRemote);
    if (auto* why = std::get_if<std::string>(&r)) {
      throw FlagError{"--thrift-route: " + printable(*why)};
    }
    auto& route = std::get<ThriftRouteConfig>(r);
    for (const auto& other : o.thriftRoutes) {
      if (other.listen.port == route.listen.port) {
        throw FlagError{"--thrift-route: port " + std::to_string(route.listen.port) +
                        " is routed twice"};
      }
    }
    o.thriftRoutes.push_back(std::move(route));
  }
}

}  // namespace flags

}  // namespace sidecar
