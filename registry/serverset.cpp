// Encodes and leniently decodes serverset members; parses zk!/zk2! addresses.
#include "serverset.h"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>

namespace registry {

namespace json = boost::json;

namespace {

constexpr std::pair<Status, std::string_view> kStatusNames[] = {
    {Status::Dead, "DEAD"},         {Status::Starting, "STARTING"}, {Status::Alive, "ALIVE"},
    {Status::Stopping, "STOPPING"}, {Status::Stopped, "STOPPED"},   {Status::Warning, "WARNING"}};

std::string quoted(std::string_view s) { return json::serialize(json::string_view(s)); }

void appendEndpoint(std::string& out, const Endpoint& e) {
  out += "{\"host\":";
  out += quoted(e.host);
  out += ",\"port\":";
  out += std::to_string(e.port);
  out += '}';
}

std::optional<Endpoint> endpointFrom(const json::value& v) {
  const auto* obj = v.if_object();
  if (!obj) {
    return std::nullopt;
  }
  const auto* host = obj->if_contains("host");
  const auto* port = obj->if_contains("port");
  if (!host || !host->is_string() || !port || !(port->is_int64() || port->is_uint64())) {
    return std::nullopt;
  }
  auto p = port->is_int64() ? port->as_int64() : static_cast<int64_t>(port->as_uint64());
  // Port 0 is no one's: connecting to it fails, so a member announcing it is malformed, not
  // alive.
  if (p < 1 || p > 65535 || host->as_string().empty()) {
    return std::nullopt;
  }
  return Endpoint{std::string(host->as_string()), static_cast<uint16_t>(p)};
}

// Aurora's "no primary port": a string host with port 0. Anything else that is not an endpoint
// is a writer's mistake.
bool portZero(const json::value& v) {
  const auto* obj = v.if_object();
  const auto* host = obj ? obj->if_contains("host") : nullptr;
  const auto* port = obj ? obj->if_contains("port") : nullptr;
  return host && host->is_string() && port &&
         ((port->is_int64() && port->as_int64() == 0) ||
          (port->is_uint64() && port->as_uint64() == 0));
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    auto i = s.find(sep);
    out.push_back(s.substr(0, i));
    if (i == std::string_view::npos) {
      return out;
    }
    s.remove_prefix(i + 1);
  }
}

bool validHostList(std::string_view hosts) {
  if (hosts.empty()) {
    return false;
  }
  for (auto hp : split(hosts, ',')) {
    auto colon = hp.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      return false;
    }
    // A name or IPv4 address, or a bracketed IPv6 one: never '/', which starts a chroot in a
    // connect string, nor ',' '!' white space or control bytes.
    auto host = hp.substr(0, colon);
    const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
    if (bracketed) {
      host = host.substr(1, host.size() - 2);
    }
    for (char c : host) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_' || (bracketed && c == ':');
      if (!ok) {
        return false;
      }
    }
    unsigned port = 0;
    auto p = hp.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc() || end != p.data() + p.size() || port == 0 || port > 65535) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string_view statusName(Status s) {
  for (auto [status, name] : kStatusNames) {
    if (status == s) {
      return name;
    }
  }
  return "DEAD";
}

std::string encodeServiceInstance(const ServiceInstance& instance) {
  std::string out = "{";
  if (instance.serviceEndpoint) {
    out += "\"serviceEndpoint\":";
    appendEndpoint(out, *instance.serviceEndpoint);
    out += ',';
  }
  out += "\"additionalEndpoints\":{";
  bool first = true;
  for (const auto& [name, endpoint] : instance.additionalEndpoints) {
    out += first ? "" : ",";
    first = false;
    out += quoted(name);
    out += ':';
    appendEndpoint(out, endpoint);
  }
  out += "},\"status\":";
  out += quoted(statusName(instance.status));
  if (instance.shard) {
    out += ",\"shard\":";
    out += std::to_string(*instance.shard);
  }
  if (!instance.metadata.empty()) {
    out += ",\"metadata\":{";
    first = true;
    for (const auto& [k, v] : instance.metadata) {
      out += first ? "" : ",";
      first = false;
      out += quoted(k);
      out += ':';
      out += quoted(v);
    }
    out += '}';
  }
  out += '}';
  return out;
}

Decoded decodeServiceInstance(std::string_view text) {
  json::error_code ec;
  auto v = json::parse(text, ec);
  if (ec) {
    return {std::nullopt, "not JSON: " + ec.message()};
  }
  const auto* obj = v.if_object();
  if (!obj) {
    return {std::nullopt, "not a JSON object"};
  }
  ServiceInstance inst;
  // Absent (or null, as some writers put it): a member of named endpoints only. Port 0 says the
  // same: Aurora's announcer writes it when the task has no primary port. Otherwise unusable:
  // the writer meant one and got it wrong, which an operator should hear of.
  if (const auto* se = obj->if_contains("serviceEndpoint"); se && !se->is_null()) {
    inst.serviceEndpoint = endpointFrom(*se);
    if (!inst.serviceEndpoint && !portZero(*se)) {
      return {std::nullopt, "serviceEndpoint needs a string host and a port from 1 to 65535"};
    }
  }
  if (const auto* ae = obj->if_contains("additionalEndpoints"); ae && ae->is_object()) {
    for (const auto& [name, ev] : ae->as_object()) {
      if (auto e = endpointFrom(ev)) {
        inst.additionalEndpoints.emplace_back(std::string(name), *e);
      }
    }
  }
  if (!inst.serviceEndpoint && inst.additionalEndpoints.empty()) {
    return {std::nullopt,
            "no serviceEndpoint and no additional endpoint with a string host and a "
            "port from 1 to 65535"};
  }
  const auto* status = obj->if_contains("status");
  if (!status || !status->is_string()) {
    return {std::nullopt, "status missing"};
  }
  bool known = false;
  for (auto [s, name] : kStatusNames) {
    if (status->as_string() == name) {
      inst.status = s;
      known = true;
    }
  }
  if (!known) {
    return {std::nullopt, "unknown status"};
  }
  if (const auto* shard = obj->if_contains("shard"); shard && shard->is_int64()) {
    inst.shard = static_cast<int32_t>(shard->as_int64());
  }
  if (const auto* md = obj->if_contains("metadata"); md && md->is_object()) {
    for (const auto& [k, mv] : md->as_object()) {
      if (mv.is_string()) {
        inst.metadata.emplace_back(std::string(k), std::string(mv.as_string()));
      }
    }
  }
  return {std::move(inst), {}};
}

bool validZkPath(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return false;
  }
  if (path == "/") {
    return true;
  }
  for (auto seg : split(path.substr(1), '/')) {
    if (seg.empty() || seg == "." || seg == "..") {
      return false;
    }
  }
  return true;
}

bool validConnectString(std::string_view text) {
  auto slash = text.find('/');
  if (slash != std::string_view::npos &&
      (!validZkPath(text.substr(slash)) || text.substr(slash) == "/")) {
    return false;
  }
  return validHostList(text.substr(0, slash));
}

std::optional<ServersetAddress> parseAnnounceAddress(std::string_view text) {
  auto parts = split(text, '!');
  if (parts.size() < 4 || parts.size() > 5 || parts[0] != "zk" || !validHostList(parts[1]) ||
      !validZkPath(parts[2])) {
    return std::nullopt;
  }
  int32_t shard = 0;
  auto s = parts[3];
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), shard);
  if (ec != std::errc() || end != s.data() + s.size()) {
    return std::nullopt;
  }
  ServersetAddress a{std::string(parts[1]), std::string(parts[2]), shard, ""};
  if (parts.size() == 5) {
    if (parts[4].empty()) {
      return std::nullopt;
    }
    a.endpoint = std::string(parts[4]);
  }
  return a;
}

std::optional<ServersetAddress> parseResolveAddress(std::string_view text) {
  auto parts = split(text, '!');
  if (parts.size() < 3 || parts.size() > 4 || (parts[0] != "zk2" && parts[0] != "zk") ||
      !validZkPath(parts[2])) {
    return std::nullopt;
  }
  // Only zk2! joins ensembles; Finagle's older resolver takes one host list.
  const auto clusters =
      parts[0] == "zk2" ? split(parts[1], '#') : std::vector<std::string_view>{parts[1]};
  if (!std::all_of(clusters.begin(), clusters.end(), validHostList)) {
    return std::nullopt;
  }
  ServersetAddress a{std::string(parts[1]), std::string(parts[2]), std::nullopt, ""};
  if (parts.size() == 4) {
    if (parts[3].empty()) {
      return std::nullopt;
    }
    a.endpoint = std::string(parts[3]);
  }
  return a;
}

std::vector<std::string> ensembles(std::string_view connect) {
  std::vector<std::string> out;
  std::vector<std::vector<std::string_view>> seen;
  for (auto cluster : split(connect, '#')) {
    auto slash = cluster.find('/');
    auto hosts = split(cluster.substr(0, slash), ',');
    std::sort(hosts.begin(), hosts.end());
    hosts.push_back(slash == std::string_view::npos ? "" : cluster.substr(slash));
    if (std::find(seen.begin(), seen.end(), hosts) == seen.end()) {
      seen.push_back(std::move(hosts));
      out.emplace_back(cluster);
    }
  }
  return out;
}

}  // namespace registry
