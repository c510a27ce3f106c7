// The outbound mesh's flags: the listener, the routes and their destinations.
#include <registry/serverset.h>

#include <algorithm>
#include <charconv>

#include "core/config.h"
#include "core/flags.h"
#include "core/text.h"

namespace sidecar {

namespace {

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

// A service name as a route and a Host header spell it: [a-z0-9][a-z0-9._-]*, lower case, and
// no empty label: `a..b` or a trailing dot would make a second route for the same service (or
// none DNS would know).
bool validName(std::string_view name) {
  return !name.empty() && name.size() <= 253 && isNameChar(name.front()) && name.front() != '.' &&
         name.front() != '-' && name.front() != '_' && name.back() != '.' &&
         name.find("..") == std::string_view::npos &&
         std::all_of(name.begin(), name.end(), isNameChar);
}

// The host part of a Host value, without its port; an IPv6 literal keeps its brackets.
std::string_view hostPart(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  if (auto colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  return host;
}

}  // namespace

bool flags::loopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string serviceName(std::string_view host) {
  host = hostPart(host);
  if (host.empty() || host.front() == '[') {
    return {};
  }
  if (host.back() == '.') {
    host.remove_suffix(1);  // an absolute name, as DNS reads it: one dot only
  }
  auto name = lower(host);
  return validName(name) ? name : std::string{};
}

bool hostIsAddress(std::string_view host) {
  host = hostPart(host);
  if (!host.empty() && host.front() == '[') {
    return true;  // only an IPv6 literal is bracketed
  }
  // Dotted digits: what inet_aton would take for IPv4 (127.1 and 2130706433 included); no
  // service name is all digits and dots.
  return !host.empty() && std::all_of(host.begin(), host.end(),
                                      [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
}

std::string addressName(std::string_view host) { return lower(hostPart(host)); }

bool reservedZkPath(std::string_view path) {
  return path == "/zookeeper" || path.starts_with("/zookeeper/");
}

std::variant<RouteConfig, std::string> parseRoute(std::string_view text, std::string_view zk) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return "'" + std::string(text) + "' is not NAME=DEST";
  }
  RouteConfig r;
  r.name = lower(text.substr(0, eq));
  if (!validName(r.name)) {
    return "'" + std::string(text.substr(0, eq)) +
           "' is not a service name (letters, digits, '.', '-', '_')";
  }
  std::string_view dest = text.substr(eq + 1);
  static constexpr std::string_view kIdentity = ";identity=";
  if (auto at = dest.find(kIdentity); at != std::string_view::npos) {
    r.identity = std::string(dest.substr(at + kIdentity.size()));
    dest = dest.substr(0, at);
    if (r.identity.empty() || flags::hasSpaceOrControl(r.identity)) {
      return "route " + r.name + ": identity '" + r.identity + "' is empty or holds spaces";
    }
  }
  r.dest = std::string(dest);
  if (dest.starts_with("zk2!") || dest.starts_with("zk!")) {
    // Finagle's two resolver forms; zk2! may join ensembles with '#', read as one serverset.
    auto a = registry::parseResolveAddress(dest);
    if (!a) {
      return "route " + r.name + ": '" + r.dest + "' is not " +
             (dest.starts_with("zk!")
                  ? "zk!host:port[,host:port]!/path[!endpoint]"
                  : "zk2!host:port[,host:port][#host:port...]!/path[!endpoint]");
    }
    if (reservedZkPath(a->path)) {
      return "route " + r.name + ": '" + a->path + "' is ZooKeeper's own subtree, not a serverset";
    }
    r.kind = RouteConfig::Kind::serverset;
    r.zkConnect = a->connect;
    r.zkPath = a->path;
    r.endpoint = a->endpoint;
  } else if (dest.starts_with("static!")) {
    auto list = dest.substr(7);
    for (std::size_t start = 0;;) {
      const auto comma = list.find(',', start);
      auto item = list.substr(
          start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      auto hp = parseHostPort(item);
      if (!hp) {
        return "route " + r.name + ": '" + std::string(item) + "' is not host:port";
      }
      r.fixed.push_back(*hp);
      if (comma == std::string_view::npos) {
        break;
      }
      start = comma + 1;
    }
  } else if (dest.starts_with("/")) {
    auto bang = dest.find('!');
    r.kind = RouteConfig::Kind::serverset;
    r.zkPath = std::string(dest.substr(0, bang));
    if (bang != std::string_view::npos) {
      r.endpoint = std::string(dest.substr(bang + 1));
      if (r.endpoint.empty() || flags::hasSpaceOrControl(r.endpoint)) {
        return "route " + r.name + ": '" + r.dest + "' names an empty endpoint";
      }
    }
    if (!registry::validZkPath(r.zkPath) || r.zkPath == "/") {
      return "route " + r.name + ": '" + r.zkPath + "' is not an absolute ZooKeeper path";
    }
    if (reservedZkPath(r.zkPath)) {
      return "route " + r.name + ": '" + r.zkPath + "' is ZooKeeper's own subtree, not a serverset";
    }
    if (zk.empty()) {
      return "route " + r.name + ": '" + r.dest + "' is a path, and --zk names no ensemble";
    }
    r.zkConnect = std::string(zk);
  } else {
    return "route " + r.name + ": '" + r.dest +
           "' is not zk2!hosts!/path[!endpoint], zk!hosts!/path[!endpoint], /path[!endpoint] or "
           "static!host:port[,...]";
  }
  return r;
}

std::vector<std::string> splitKeyedList(std::string_view text,
                                        bool (*isKey)(std::string_view key)) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') {
      continue;
    }
    const auto eq = text.find('=', i + 1);
    if (eq != std::string_view::npos && isKey(text.substr(i + 1, eq - i - 1))) {
      out.emplace_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  out.emplace_back(text.substr(start));
  return out;
}

std::vector<std::string> splitRouteList(std::string_view text) {
  // A route's NAME holds no ',', '!', ':' or '/' (a DEST's member list, ensemble or path would).
  return splitKeyedList(text, [](std::string_view key) {
    return !key.empty() && key.find_first_of(",!:/") == std::string_view::npos;
  });
}

namespace flags {

// The outbound values that have defaults, checked whether outbound is on or not: a wrong one is a
// mistake to name now, not when someone turns outbound on.
void outboundValues(const po::variables_map& vm, OutboundConfig& o) {
  o.maxRoutes = countFlag(vm, "max-routes", 1, 10'000);
  o.routeIdleTimeout = durationFlag(vm, "route-idle-timeout");
  // Each refresh is a lookup per name: under a second would be a resolver's load for nothing.
  o.dnsRefresh = durationFlag(vm, "dns-refresh");
  if (o.dnsRefresh < std::chrono::seconds(1) || o.dnsRefresh > std::chrono::minutes(60)) {
    throw FlagError{"--dns-refresh: '" + vm["dns-refresh"].as<std::string>() +
                    "' is not a duration from 1s to 60m"};
  }
  const auto limit = vm["serverset-drop-limit"].as<std::string>();
  const auto [end, ec] = std::from_chars(limit.data(), limit.data() + limit.size(), o.dropLimit);
  if (ec != std::errc{} || end != limit.data() + limit.size() ||
      !(o.dropLimit >= 0.0 && o.dropLimit <= 1.0)) {
    throw FlagError{"--serverset-drop-limit: '" + limit + "' is not a number from 0 to 1"};
  }
  o.dropHold = durationFlag(vm, "serverset-drop-hold");
  if (o.dropHold < std::chrono::seconds(1) || o.dropHold > std::chrono::minutes(60)) {
    throw FlagError{"--serverset-drop-hold: '" + vm["serverset-drop-hold"].as<std::string>() +
                    "' is not a duration from 1s to 60m"};
  }
  const auto aperture = vm["aperture"].as<std::string>();
  if (aperture != "true" && aperture != "false") {
    throw FlagError{"--aperture: '" + aperture + "' is not true or false"};
  }
  o.aperture = aperture == "true";
  o.apertureSize = countFlag(vm, "aperture-size", 1, 10'000);
  o.connectTimeout = durationFlag(vm, "outbound-connect-timeout");
  o.timeout = durationFlag(vm, "outbound-timeout");
  o.idleTimeout = durationFlag(vm, "outbound-idle-timeout");
}

std::optional<OutboundConfig> outboundFlags(const po::variables_map& vm,
                                            const std::string& defaultCa) {
  OutboundConfig o;
  outboundValues(vm, o);
  const bool any = vm.count("route") || vm.count("route-prefix");
  if (!vm.count("outbound-listen")) {
    if (any) {
      throw FlagError{std::string("--") + (vm.count("route") ? "route" : "route-prefix") +
                      " needs --outbound-listen"};
    }
    if (!vm.count("thrift-route")) {
      return std::nullopt;
    }
  }
  o.httpListener = vm.count("outbound-listen") > 0;
  if (o.httpListener) {
    o.listen = hostPortFlag(vm, "outbound-listen");
  }
  const auto allow = vm["outbound-allow-remote"].as<std::string>();
  if (allow != "true" && allow != "false") {
    throw FlagError{"--outbound-allow-remote: '" + allow + "' is not true or false"};
  }
  o.allowRemote = allow == "true";
  if (o.httpListener && !o.allowRemote && !loopbackHost(o.listen.host)) {
    throw FlagError{"--outbound-listen: '" + o.listen.str() +
                    "' is not a loopback address; it would carry this pod's identity to anyone "
                    "who reaches it (--outbound-allow-remote true to mean it)"};
  }
  const std::string zk = vm.count("zk") ? vm["zk"].as<std::string>() : std::string{};
  if (vm.count("route")) {
    for (const auto& text : vm["route"].as<std::vector<std::string>>()) {
      auto r = parseRoute(text, zk);
      if (auto* why = std::get_if<std::string>(&r)) {
        throw FlagError{"--route: " + printable(*why)};
      }
      auto& route = std::get<RouteConfig>(r);
      if (std::any_of(o.routes.begin(), o.routes.end(),
                      [&](const RouteConfig& x) { return x.name == route.name; })) {
        throw FlagError{"--route: " + route.name + " is routed twice"};
      }
      o.routes.push_back(std::move(route));
    }
  }
  if (vm.count("route-prefix")) {
    o.routePrefix = vm["route-prefix"].as<std::string>();
    if (!registry::validZkPath(o.routePrefix) || o.routePrefix == "/") {
      throw FlagError{"--route-prefix: '" + printable(o.routePrefix) +
                      "' is not an absolute ZooKeeper path like /discovery/prod"};
    }
    if (reservedZkPath(o.routePrefix)) {
      throw FlagError{"--route-prefix: '" + printable(o.routePrefix) +
                      "' is ZooKeeper's own subtree, not where services are announced"};
    }
    if (zk.empty()) {
      throw FlagError{"--route-prefix needs --zk (the ensemble its services are announced in)"};
    }
    o.prefixZk = zk;
  }
  if (vm.count("route-prefix-identity")) {
    o.prefixIdentity = vm["route-prefix-identity"].as<std::string>();
    if (o.routePrefix.empty()) {
      throw FlagError{"--route-prefix-identity needs --route-prefix"};
    }
    if (o.prefixIdentity.empty() || flags::hasSpaceOrControl(o.prefixIdentity)) {
      throw FlagError{"--route-prefix-identity: '" + printable(o.prefixIdentity) +
                      "' is empty or holds spaces"};
    }
  }
  o.caFile = vm.count("outbound-ca") ? fileFlag(vm, "outbound-ca") : defaultCa;
  o.zkSessionTimeout = durationFlag(vm, "zk-session-timeout", Duration(60 * 60'000));
  return o;
}

}  // namespace flags

}  // namespace sidecar
