// Declares the data path's metric families with their help strings.
#include "inbound/metrics.h"

#include <prometheus/family.h>

#include <string>

#include "net/worker.h"

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

std::vector<metrics::Labels> requestLabels() {
  std::vector<metrics::Labels> out;
  for (const char* method : ProxyMetrics::kMethods) {
    for (std::size_t c = 1; c <= ProxyMetrics::kClasses; ++c) {
      out.push_back({{"method", method}, {"code", std::to_string(c) + "xx"}});
    }
  }
  return out;
}

std::vector<metrics::Labels> handshakeLabels() {
  std::vector<metrics::Labels> out{{{"result", "ok"}}};
  for (std::size_t i = 0; i < 6; ++i) {
    out.push_back(
        {{"result", std::string(handshakeFailureName(static_cast<HandshakeFailure>(i)))}});
  }
  return out;
}

}  // namespace

ProxyMetrics::ProxyMetrics(prometheus::Registry& r, unsigned workers)
    : requests("sidecar_requests_total", "Requests answered, by method and status class.",
               requestLabels(), workers),
      handshakes("sidecar_tls_handshakes_total",
                 "Inbound TLS handshakes by result (ok or the reason they failed).",
                 handshakeLabels(), workers),
      connectionsTotal("sidecar_inbound_connections_total", "Inbound connections accepted.", {{}},
                       workers),
      connectionsOpen("sidecar_inbound_connections_open", "Inbound connections open now.", {{}},
                      workers, true),
      pending("sidecar_requests_pending", "Requests being served now.", {{}}, workers, true),
      receivedBytes("sidecar_request_body_bytes_total",
                    "Request body bytes received from callers and forwarded.", {{}}, workers),
      sentBytes("sidecar_response_body_bytes_total", "Response body bytes forwarded to callers.",
                {{}}, workers),
      requestDuration("sidecar_request_duration_seconds",
                      "Time from a request's first byte to the end of its response.",
                      metrics::latencyBuckets(), {{}}, workers),
      upstreamDuration("sidecar_upstream_duration_seconds",
                       "Time from sending a request to the local service to its response head.",
                       metrics::latencyBuckets(), {{}}, workers),
      handshakeDuration("sidecar_tls_handshake_duration_seconds",
                        "Time taken by inbound TLS handshakes, successful or not.",
                        metrics::latencyBuckets(), {{}}, workers) {
  for (const auto* c : {&requests, &handshakes, &connectionsTotal, &connectionsOpen, &pending,
                        &receivedBytes, &sentBytes}) {
    collector.add(c);
  }
  for (const auto* h : {&requestDuration, &upstreamDuration, &handshakeDuration}) {
    collector.add(h);
  }
  auto& local = counters(r, "sidecar_local_replies_total",
                         "Error answers the sidecar wrote itself (not from the local service), "
                         "by status.");
  for (std::size_t i = 0; i < kLocalReplies.size(); ++i) {
    localReplies[i] = &local.Add({{"status", std::to_string(kLocalReplies[i].status)}});
  }
  identityRefused = &counters(r, "sidecar_identity_refused_total",
                              "Requests refused with 403 because the caller's identity is not "
                              "on the allow-list, or unusable.")
                         .Add({});
  underscoreHeaders = &counters(r, "sidecar_underscore_headers_total",
                                "Request header fields whose name holds '_', dropped or refused "
                                "(400) as --headers-with-underscores says.")
                           .Add({});
  identityUnusable = &counters(r, "sidecar_identity_unusable_total",
                               "Requests refused with 403 because the name that would be the "
                               "caller's identity (first URI SAN, else first DNS SAN, else CN) is "
                               "empty or holds a control or non-ASCII byte.")
                          .Add({});
  auto& refused = counters(r, "sidecar_inbound_connections_refused_total",
                           "Connections closed at once because their listener's budget was full "
                           "and none of its connections was idle, by listener: listen "
                           "(--max-connections), thrift (--thrift-max-connections), outbound "
                           "(--outbound-max-connections: --outbound-listen and --thrift-route).");
  auto& evicted = counters(r, "sidecar_inbound_connections_evicted_total",
                           "Idle keep-alive (or not yet handshaken) connections closed to make "
                           "room for a new one at their listener's budget, by listener.");
  for (std::size_t i = 0; i < kListenerNames.size(); ++i) {
    connectionsRefused[i] = &refused.Add({{"listener", kListenerNames[i]}});
    connectionsEvicted[i] = &evicted.Add({{"listener", kListenerNames[i]}});
  }
  upstreamConnectErrors = &counters(r, "sidecar_upstream_connect_errors_total",
                                    "Connections to the local service that failed or timed out.")
                               .Add({});
  upstreamTimeouts = &counters(r, "sidecar_upstream_timeouts_total",
                               "Requests answered 504 because the local service was too slow.")
                          .Add({});
  upstreamStaleRetries = &counters(r, "sidecar_upstream_stale_retries_total",
                                   "Pooled connections found closed by the local service, when "
                                   "taken for a request or by the pool's sweep once a second; "
                                   "the request went out on another connection.")
                              .Add({});
  memoryTrims = &counters(r, "sidecar_memory_trims_total",
                          "Times freed memory was handed back to the system (malloc_trim) "
                          "after the open connections fell 256 or more below their peak.")
                     .Add({});
  accessLogDropped = &counters(r, "sidecar_access_log_dropped_lines_total",
                               "Access-log lines dropped, never written: the writer was more "
                               "than 4 MiB behind (a stalled disk or a full pipe), or a write "
                               "failed. Requests never wait for the access log.")
                          .Add({});
  upstreamUnsolicited = &counters(r, "sidecar_upstream_unsolicited_closed_total",
                                  "Connections to the local service closed, never reused, "
                                  "because they held bytes past the end of the answer just "
                                  "relayed (a body after a HEAD, 204 or 304 answer, a body longer "
                                  "than its Content-Length, a response nobody asked for).")
                             .Add({});
  upstreamConnectsTotal =
      &counters(r, "sidecar_upstream_connections_total", "Connections opened to the local service.")
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
  draining =
      &gauges(r, "sidecar_draining", "1 while the sidecar is shutting down, else 0.").Add({});
  adminConnectionsOpen =
      &gauges(r, "sidecar_admin_connections_open", "Connections to the admin interface open now.")
           .Add({});
  adminConnectionsRefused = &counters(r, "sidecar_admin_connections_refused_total",
                                      "Admin connections closed at once because the admin "
                                      "interface's bound of open connections was reached and "
                                      "every open one was busy answering.")
                                 .Add({});
  adminConnectionsEvicted = &counters(r, "sidecar_admin_connections_evicted_total",
                                      "Admin connections waiting for a request that were closed "
                                      "to make room for a new one at the bound (longest-waiting "
                                      "first).")
                                 .Add({});
}

AnnouncerMetrics::AnnouncerMetrics(prometheus::Registry& r) {
  sessionConnected = &gauges(r, "sidecar_zk_session_connected",
                             "1 while the ZooKeeper session is connected, else 0.")
                          .Add({});
  announced =
      &gauges(r, "sidecar_announced", "1 while this instance's serverset member exists, else 0.")
           .Add({});
  announcements =
      &counters(r, "sidecar_announcements_total", "Serverset members created for this instance.")
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

}  // namespace sidecar
