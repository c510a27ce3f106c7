#pragma once
// Announcing this instance: the ZooKeeper member (registry::Announcer), gated by the health of the
// local service (HealthChecker), with their metrics. Runs on the control io_context.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <registry/announcer.h>
#include <string>

#include "control/health.h"
#include "core/config.h"
#include "core/metrics.h"

namespace sidecar {

class Announcement {
 public:
  // Starts announcing `port` (and the admin port as the `admin` endpoint) while the local service
  // at `upstream` answers its health path.
  Announcement(boost::asio::io_context& ioc, const AnnounceConfig& a,
               const boost::asio::ip::tcp::endpoint& upstream, uint16_t port, uint16_t adminPort,
               AnnouncerMetrics& m);
  bool announced() const { return announcer_->announced(); }
  std::string statusJson() const { return announcer_->statusJson(); }
  // Stops the health checks and deletes the member (bounded), then calls done.
  void withdraw(std::function<void()> done);

 private:
  std::unique_ptr<registry::Announcer> announcer_;
  std::unique_ptr<HealthChecker> health_;
};

}  // namespace sidecar
