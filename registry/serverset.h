#pragma once
// Finagle serverset members (Twitter's endpoint.thrift as JSON) and the zk!/zk2! addresses that
// name them. Pure functions; the ZooKeeper side lives in announcer.h and resolver.h.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace registry {

struct Endpoint {
  std::string host;
  uint16_t port = 0;
  bool operator==(const Endpoint&) const = default;
};

enum class Status { Dead, Starting, Alive, Stopping, Stopped, Warning };

struct ServiceInstance {
  // None: a member that offers named endpoints only (Finagle's Entry allows it); readers find it
  // by an endpoint name, never by default.
  std::optional<Endpoint> serviceEndpoint;
  std::vector<std::pair<std::string, Endpoint>> additionalEndpoints;
  Status status = Status::Alive;
  std::optional<int32_t> shard;
  std::vector<std::pair<std::string, std::string>> metadata;
};

// Compact JSON, keys in Finagle's order:
// {"serviceEndpoint":{...},"additionalEndpoints":{...},"status":"ALIVE","shard":0,"metadata":{...}}
// serviceEndpoint is left out when there is none, as Gson leaves out a null field.
std::string encodeServiceInstance(const ServiceInstance& instance);

// Lenient: any key order and white space; unknown keys ignored. A member whose serviceEndpoint
// lacks a string host or an integer port, whose status is missing or unknown, or that has no
// endpoint at all (neither serviceEndpoint nor a valid additional one), is malformed. One without
// serviceEndpoint (or with port 0 there, as Aurora writes it) but with additional endpoints is
// not: Finagle selects it by endpoint name.
struct Decoded {
  std::optional<ServiceInstance> instance;
  std::string error;  // why it is malformed
};
Decoded decodeServiceInstance(std::string_view json);

std::string_view statusName(Status s);

// Where a serverset lives. connect is what the ZooKeeper C client takes: "h1:2181,h2:2181" with
// an optional "/chroot" suffix; or, from zk2!, several such ensembles joined by '#'
// ("a1:2181,a2:2181#b1:2181"), whose serversets at the same path are read as one (ensembles()).
struct ServersetAddress {
  std::string connect;
  std::string path;
  std::optional<int32_t> shard;
  std::string endpoint;  // named additional endpoint to use instead of serviceEndpoint
};

// Finagle's announcer form: zk!host:port[,host:port]!/path!shard[!endpointName]
std::optional<ServersetAddress> parseAnnounceAddress(std::string_view text);
// Finagle's resolver forms:
// zk2!host:port[,host:port][#host:port[,host:port]...]!/path[!endpointName] (Zk2Resolver: '#'
// separates ensembles, whose members are unioned) and the older
// zk!host:port[,host:port]!/path[!endpointName] (ZkResolver: one ensemble). Either one's third
// part is an endpoint name, never a shard, unlike parseAnnounceAddress's zk! form.
std::optional<ServersetAddress> parseResolveAddress(std::string_view text);
// The ensembles of a connect string: split at '#', each once (in their first order; the same hosts
// in another order are the same ensemble, as in Finagle's session cache).
std::vector<std::string> ensembles(std::string_view connect);
// host:port[,host:port...][/chroot]
bool validConnectString(std::string_view text);
// An absolute ZooKeeper path: "/a/b", no empty segment, no trailing slash.
bool validZkPath(std::string_view path);

}  // namespace registry
