// The announcer and the health checker, wired to each other and to their metrics.
#include "control/announce.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "control/startup.h"

namespace sidecar {

registry::ServiceInstance announcedInstance(const AnnounceConfig& a, const std::string& host,
                                            const AnnouncedPorts& ports) {
  registry::ServiceInstance instance;
  instance.serviceEndpoint = {host, ports.service};
  auto& extra = instance.additionalEndpoints;
  // Finagle's multi-endpoint servers name each protocol's port, so that a client picks one with
  // zk2!hosts!/path!thrift; a name given twice would leave readers to pick one of two ports.
  extra.emplace_back("admin", registry::Endpoint{host, ports.admin});
  extra.emplace_back("http", registry::Endpoint{host, ports.service});
  if (ports.thrift) {
    extra.emplace_back("thrift", registry::Endpoint{host, *ports.thrift});
  }
  const bool taken = std::any_of(extra.begin(), extra.end(),
                                 [&](const auto& e) { return e.first == a.endpointName; });
  if (!a.endpointName.empty() && !taken) {
    extra.emplace_back(a.endpointName, registry::Endpoint{host, ports.service});
  }
  // Always written, as Finagle's announcer does (its announce form requires one): Linkerd 1's
  // `#N` shard selection, and Prometheus' __meta_serverset_shard, read it.
  instance.shard = a.shard.value_or(0);
  return instance;
}

Announcement::Announcement(boost::asio::io_context& ioc, const AnnounceConfig& a,
                           const boost::asio::ip::tcp::endpoint& upstream,
                           const AnnouncedPorts& ports, AnnouncerMetrics& m) {
  const std::string host = a.advertiseHost.empty() ? primaryAddress() : a.advertiseHost;
  const auto instance = announcedInstance(a, host, ports);
  announcer_ = std::make_unique<registry::Announcer>(
      ioc,
      registry::AnnouncerConfig{a.zkConnect, a.zkPath, a.zkSessionTimeout, a.zkDigest,
                                a.zkSecureParents, instance},
      registry::AnnouncerEvents{
          .announced =
              [&m] {
                m.announcements->Increment();
                m.announced->Set(1);
              },
          .reannounced = [&m] { m.reannouncements->Increment(); },
          .withdrawn =
              [&m] {
                m.withdrawals->Increment();
                m.announced->Set(0);
              },
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
      ioc,
      HealthChecker::Options{upstream, a.healthPath, a.healthInterval, a.rise, a.fall,
                             a.healthCheck == AnnounceConfig::HealthCheck::grpc,
                             a.healthGrpcService},
      [this](bool healthy) { announcer_->setHealthy(healthy); },
      [&m](bool ok) { (ok ? m.healthOk : m.healthFailed)->Increment(); });
  health_->start();
  spdlog::info("event=announcing zk={} path={} host={} port={} thrift_port={} shard={}",
               a.zkConnect, a.zkPath, host, ports.service,
               ports.thrift ? std::to_string(*ports.thrift) : "none", a.shard.value_or(0));
}

void Announcement::withdraw(std::function<void(bool hadMember)> done) {
  health_->stop();
  const bool hadMember = announcer_->announced();
  announcer_->shutdown(std::chrono::seconds(5),
                       [done = std::move(done), hadMember] { done(hadMember); });
}

}  // namespace sidecar
