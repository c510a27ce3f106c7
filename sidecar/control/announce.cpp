// The announcer and the health checker, wired to each other and to their metrics.
#include "control/announce.h"

#include <spdlog/spdlog.h>

#include "control/startup.h"

namespace sidecar {

Announcement::Announcement(boost::asio::io_context& ioc, const AnnounceConfig& a,
                           const boost::asio::ip::tcp::endpoint& upstream, uint16_t port,
                           uint16_t adminPort, AnnouncerMetrics& m) {
  registry::ServiceInstance instance;
  const std::string host = a.advertiseHost.empty() ? primaryAddress() : a.advertiseHost;
  instance.serviceEndpoint = {host, port};
  instance.additionalEndpoints.emplace_back("admin", registry::Endpoint{host, adminPort});
  if (!a.endpointName.empty() && a.endpointName != "admin") {
    instance.additionalEndpoints.emplace_back(a.endpointName, registry::Endpoint{host, port});
  }
  instance.shard = a.shard;
  announcer_ = std::make_unique<registry::Announcer>(
      ioc,
      registry::AnnouncerConfig{a.zkConnect, a.zkPath, a.zkSessionTimeout, a.zkDigest, instance},
      registry::AnnouncerEvents{
          .announced = [&m] { m.announcements->Increment(); m.announced->Set(1); },
          .reannounced = [&m] { m.reannouncements->Increment(); },
          .withdrawn = [&m] { m.withdrawals->Increment(); m.announced->Set(0); },
          .sessionState =
              [&m](registry::ZkState s) {
                m.sessionConnected->Set(s == registry::ZkState::Connected ? 1 : 0);
                if (s == registry::ZkState::Expired) {
                  m.announced->Set(0);
                }
              },
      });
  announcer_->start();
  health_ = std::make_unique<HealthChecker>(
      ioc, HealthChecker::Options{upstream, a.healthPath, a.healthInterval, a.rise, a.fall},
      [this](bool healthy) { announcer_->setHealthy(healthy); },
      [&m](bool ok) { (ok ? m.healthOk : m.healthFailed)->Increment(); });
  health_->start();
  spdlog::info("event=announcing zk={} path={} host={} port={} shard={}", a.zkConnect, a.zkPath,
               host, port, a.shard ? std::to_string(*a.shard) : "none");
}

void Announcement::withdraw(std::function<void()> done) {
  health_->stop();
  announcer_->shutdown(std::chrono::seconds(5), std::move(done));
}

}  // namespace sidecar
