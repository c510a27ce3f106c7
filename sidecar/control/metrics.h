#pragma once
// The control thread's metrics: TLS reloads, the drain, the admin interface's connections
// (ControlMetrics), and the ZooKeeper session, announcements and health checks
// (AnnouncerMetrics). None is on the request path.

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

namespace sidecar {

struct ControlMetrics {
  explicit ControlMetrics(prometheus::Registry& registry);
  prometheus::Counter* certReloadOk;
  prometheus::Counter* certReloadFailed;
  prometheus::Gauge* certNotAfter;
  prometheus::Gauge* draining;
  // The admin interface's connections (bounded by kAdminMaxConnections in server.cpp).
  prometheus::Gauge* adminConnectionsOpen;
  prometheus::Counter* adminConnectionsRefused;
  prometheus::Counter* adminConnectionsEvicted;
};

struct AnnouncerMetrics {
  explicit AnnouncerMetrics(prometheus::Registry& registry);
  prometheus::Gauge* sessionConnected;
  prometheus::Gauge* announced;
  prometheus::Counter* announcements;
  prometheus::Counter* reannouncements;
  prometheus::Counter* withdrawals;
  prometheus::Counter* healthOk;
  prometheus::Counter* healthFailed;
};

}  // namespace sidecar
