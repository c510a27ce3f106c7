#pragma once
// Where an upstream's endpoints come from. The inbound path has one static endpoint (the local
// service); the outbound mesh gets a serverset watched in ZooKeeper. A worker reads its cluster
// on its own thread, without a lock: a dynamic cluster hands each worker an immutable snapshot
// by posting it to the worker's io_context, so the data path never waits on ZooKeeper.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "upstream/addr.h"

namespace sidecar {

class Cluster {
 public:
  virtual ~Cluster() = default;
  // The current address, on the worker's thread; valid until the worker's next turn.
  virtual const Addr& addr() const = 0;
  // Names the cluster in log lines and metrics ("local", a route's name).
  virtual const std::string& name() const = 0;
};

// A fixed set of endpoints: --upstream, or a route's `static!host:port,...`.
class StaticCluster final : public Cluster {
 public:
  StaticCluster(std::string name, std::vector<tcp::endpoint> endpoints)
      : name_(std::move(name)), addr_(Addr::bound(std::move(endpoints))) {}
  const Addr& addr() const override { return addr_; }
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
  Addr addr_;
};

}  // namespace sidecar
