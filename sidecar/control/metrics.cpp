// Declares the control thread's metric families with their help strings.
#include "control/metrics.h"

#include <metrics/metrics.h>

namespace sidecar {

namespace {

constexpr metrics::Registered<ControlMetrics, prometheus::Gauge> kControlGauges[] = {
    {&ControlMetrics::certNotAfter, "sidecar_tls_certificate_expiry_timestamp_seconds",
     "When the serving certificate expires, seconds since the epoch."},
    {&ControlMetrics::draining, "sidecar_draining",
     "1 while the sidecar is shutting down, else 0."},
    {&ControlMetrics::adminConnectionsOpen, "sidecar_admin_connections_open",
     "Connections to the admin interface open now."},
};

constexpr metrics::Registered<ControlMetrics, prometheus::Counter> kControlCounters[] = {
    {&ControlMetrics::adminConnectionsRefused, "sidecar_admin_connections_refused_total",
     "Admin connections closed at once because the admin interface's bound of open connections "
     "was reached and every open one was busy answering."},
    {&ControlMetrics::adminConnectionsEvicted, "sidecar_admin_connections_evicted_total",
     "Admin connections waiting for a request that were closed to make room for a new one at "
     "the bound (longest-waiting first)."},
};

constexpr metrics::Registered<AnnouncerMetrics, prometheus::Gauge> kAnnouncerGauges[] = {
    {&AnnouncerMetrics::sessionConnected, "sidecar_zk_session_connected",
     "1 while the ZooKeeper session is connected, else 0."},
    {&AnnouncerMetrics::announced, "sidecar_announced",
     "1 while this instance's serverset member exists, else 0."},
};

constexpr metrics::Registered<AnnouncerMetrics, prometheus::Counter> kAnnouncerCounters[] = {
    {&AnnouncerMetrics::announcements, "sidecar_announcements_total",
     "Serverset members created for this instance."},
    {&AnnouncerMetrics::reannouncements, "sidecar_reannouncements_total",
     "Members created again after a session expiry or a deletion."},
    {&AnnouncerMetrics::withdrawals, "sidecar_withdrawals_total",
     "Members deleted because the local service turned unhealthy or on shutdown."},
};

}  // namespace

ControlMetrics::ControlMetrics(prometheus::Registry& r) {
  metrics::addEach(metrics::counterFamily(r, "sidecar_tls_reloads_total",
                                          "Reloads of the TLS certificate, key and CA files, by "
                                          "result."),
                   "result", {{&certReloadOk, "ok"}, {&certReloadFailed, "failed"}});
  metrics::registerAll(r, *this, kControlGauges);
  metrics::registerAll(r, *this, kControlCounters);
}

AnnouncerMetrics::AnnouncerMetrics(prometheus::Registry& r) {
  metrics::registerAll(r, *this, kAnnouncerGauges);
  metrics::registerAll(r, *this, kAnnouncerCounters);
  metrics::addEach(metrics::counterFamily(r, "sidecar_health_checks_total",
                                          "Polls of the local service's health (its health path, "
                                          "or gRPC health Check), by result."),
                   "result", {{&healthOk, "ok"}, {&healthFailed, "failed"}});
}

}  // namespace sidecar
