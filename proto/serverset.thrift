// The Finagle serverset member format: Twitter's endpoint.thrift, which ZooKeeper members carry
// as JSON. The sidecar writes and reads this JSON (registry/serverset.h); this file documents it.
//
// A member node is <path>/member_NNNNNNNNNN, EPHEMERAL_SEQUENTIAL. Its data, compact, keys in
// this order (additionalEndpoints is {} when empty; shard and metadata only when set):
//   {"serviceEndpoint":{"host":"10.0.0.5","port":8443},
//    "additionalEndpoints":{"admin":{"host":"10.0.0.5","port":9990}},
//    "status":"ALIVE","shard":0}
// Readers accept any key order and white space, keep only ALIVE members, and skip (and count)
// a member whose serviceEndpoint lacks a string host or an integer port.

namespace java com.twitter.thrift
namespace cpp registry

struct Endpoint {
  1: string host
  2: i32 port
}

enum Status {
  DEAD = 0,
  STARTING = 1,
  ALIVE = 2,
  STOPPING = 3,
  STOPPED = 4,
  WARNING = 5
}

struct ServiceInstance {
  1: Endpoint serviceEndpoint
  2: map<string, Endpoint> additionalEndpoints
  3: Status status
  4: optional i32 shard
  5: optional map<string, string> metadata
}
