// Declares the data path's metric families with their help strings.
#include "proxy_metrics.h"

#include <prometheus/family.h>

#include <string>

namespace sidecar {

namespace {

prometheus::Family<prometheus::Counter>& counters(prometheus::Registry& r, const char* name,
                                                  const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

prometheus::Family<prometheus::Gauge>& gauges(prometheus::Registry& r, const char* name,
                                              const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

ProxyMetrics::ProxyMetrics(prometheus::Registry& r) {
  auto& handshakes = counters(r, "sidecar_tls_handshakes_total",
                              "Inbound TLS handshakes by result (ok or the reason they failed).");
  handshakeOk = &handshakes.Add({{"result", "ok"}});
  for (std::size_t i = 0; i < handshakeFailed.size(); ++i) {
    auto name = handshakeFailureName(static_cast<HandshakeFailure>(i));
    handshakeFailed[i] = &handshakes.Add({{"result", std::string(name)}});
  }
  auto& responses = counters(r, "sidecar_responses_total",
                             "Responses sent to callers, by status class.");
  for (std::size_t i = 0; i < responsesByClass.size(); ++i) {
    responsesByClass[i] = &responses.Add({{"code", std::to_string(i + 1) + "xx"}});
  }
  auto& local = counters(r, "sidecar_local_replies_total",
                         "Error answers the sidecar wrote itself (not from the local service), "
                         "by status.");
  for (std::size_t i = 0; i < kLocalStatuses.size(); ++i) {
    localReplies[i] = &local.Add({{"status", std::to_string(kLocalStatuses[i])}});
  }
  identityRefused = &counters(r, "sidecar_identity_refused_total",
                              "Requests refused with 403 because the caller's identity is not "
                              "on the allow-list.")
                         .Add({});
  connectionsTotal = &counters(r, "sidecar_inbound_connections_total",
                               "Inbound connections accepted.")
                          .Add({});
  connectionsOpen = &gauges(r, "sidecar_inbound_connections_open",
                            "Inbound connections open now.")
                         .Add({});
  upstreamConnectErrors = &counters(r, "sidecar_upstream_connect_errors_total",
                                    "Connections to the local service that failed or timed out.")
                               .Add({});
  upstreamTimeouts = &counters(r, "sidecar_upstream_timeouts_total",
                               "Requests answered 504 because the local service was too slow.")
                          .Add({});
  upstreamStaleRetries = &counters(r, "sidecar_upstream_stale_retries_total",
                                   "Pooled connections found closed by the local service; the "
                                   "request went out again on a fresh connection.")
                              .Add({});
  upstreamConnectsTotal = &counters(r, "sidecar_upstream_connections_total",
                                    "Connections opened to the local service.")
                               .Add({});
  upstreamPoolIdle = &gauges(r, "sidecar_upstream_pool_idle",
                             "Idle pooled connections to the local service, all workers.")
                          .Add({});
  auto& reloads = counters(r, "sidecar_tls_reloads_total",
                           "Reloads of the TLS certificate, key and CA files, by result.");
  certReloadOk = &reloads.Add({{"result", "ok"}});
  certReloadFailed = &reloads.Add({{"result", "failed"}});
  certNotAfter = &gauges(r, "sidecar_tls_certificate_expiry_timestamp_seconds",
                         "When the serving certificate expires, seconds since the epoch.")
                      .Add({});
  draining = &gauges(r, "sidecar_draining", "1 while the sidecar is shutting down, else 0.")
                  .Add({});
}

AnnouncerMetrics::AnnouncerMetrics(prometheus::Registry& r) {
  sessionConnected = &gauges(r, "sidecar_zk_session_connected",
                             "1 while the ZooKeeper session is connected, else 0.")
                          .Add({});
  announced = &gauges(r, "sidecar_announced",
                      "1 while this instance's serverset member exists, else 0.")
                   .Add({});
  announcements = &counters(r, "sidecar_announcements_total",
                            "Serverset members created for this instance.")
                       .Add({});
  reannouncements = &counters(r, "sidecar_reannouncements_total",
                              "Members created again after a session expiry or a deletion.")
                         .Add({});
  withdrawals = &counters(r, "sidecar_withdrawals_total",
                          "Members deleted because the local service turned unhealthy or on "
                          "shutdown.")
                     .Add({});
  auto& checks = counters(r, "sidecar_health_checks_total",
                          "Polls of the local service's health path, by result.");
  healthOk = &checks.Add({{"result", "ok"}});
  healthFailed = &checks.Add({{"result", "failed"}});
}

prometheus::Counter& ProxyMetrics::localReply(unsigned status) {
  for (std::size_t i = 0; i < kLocalStatuses.size(); ++i) {
    if (kLocalStatuses[i] == status) {
      return *localReplies[i];
    }
  }
  return *localReplies.back();
}

}  // namespace sidecar
