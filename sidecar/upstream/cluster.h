#pragma once
// Where an upstream's endpoints come from. The inbound path has one static endpoint (the local
// service); the outbound mesh gets a serverset watched in ZooKeeper. A worker reads its cluster
// on its own thread, without a lock: a dynamic cluster hands each worker an immutable snapshot
// by posting it to the worker's io_context, so the data path never waits on ZooKeeper.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "net/io.h"

namespace sidecar {

struct EndpointSet {
  std::vector<tcp::endpoint> endpoints;
  bool stale = false;         // the source is unreachable; this is the last set it gave
  std::uint64_t version = 0;  // grows with every change
};

class Cluster {
 public:
  virtual ~Cluster() = default;
  // The current endpoints, on the worker's thread; valid until the worker's next turn.
  virtual const EndpointSet& endpoints() const = 0;
  // Names the cluster in log lines and metrics ("local", a route's name).
  virtual const std::string& name() const = 0;
};

// A fixed set of endpoints: --upstream, or a route's `static!host:port,...`.
class StaticCluster final : public Cluster {
 public:
  StaticCluster(std::string name, std::vector<tcp::endpoint> endpoints)
      : name_(std::move(name)), set_{std::move(endpoints), false, 1} {}
  const EndpointSet& endpoints() const override { return set_; }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  EndpointSet set_;
};

}  // namespace sidecar
