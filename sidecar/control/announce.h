#pragma once
// Announcing this instance: the ZooKeeper member (registry::Announcer), gated by the health of the
// local service (HealthChecker), with their metrics. Runs on the control io_context.

#include <registry/announcer.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "control/health.h"
#include "control/metrics.h"
#include "core/config.h"

namespace sidecar {

// The ports this instance serves on, as bound.
struct AnnouncedPorts {
  uint16_t service = 0;            // the mTLS HTTP listener (--listen)
  uint16_t admin = 0;              // --admin-listen
  std::optional<uint16_t> thrift;  // --thrift-listen, when set
};

// The member written into ZooKeeper: serviceEndpoint is the HTTP port; additionalEndpoints are
// `admin`, `http`, `thrift` (with --thrift-listen), then the --announce endpoint name on the HTTP
// port unless one of those already has that name, all on `host`.
registry::ServiceInstance announcedInstance(const AnnounceConfig& a, const std::string& host,
                                            const AnnouncedPorts& ports);

class Announcement {
 public:
  // Starts announcing ports (see announcedInstance) while the local service at `upstream`
  // answers its health path.
  Announcement(boost::asio::io_context& ioc, const AnnounceConfig& a,
               const boost::asio::ip::tcp::endpoint& upstream, const AnnouncedPorts& ports,
               AnnouncerMetrics& m);
  bool announced() const { return announcer_->announced(); }
  std::string statusJson() const { return announcer_->statusJson(); }
  // Stops the health checks and deletes the member (bounded), then calls done, saying whether
  // there was a member to delete.
  void withdraw(std::function<void(bool hadMember)> done);

 private:
  std::unique_ptr<registry::Announcer> announcer_;
  std::unique_ptr<HealthChecker> health_;
};

}  // namespace sidecar
