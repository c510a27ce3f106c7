// Declares the inbound data path's metric families with their help strings.
#include "inbound/metrics.h"

#include <metrics/metrics.h>

#include <string>

namespace sidecar {

namespace {

std::vector<metrics::Labels> requestLabels() {
  std::vector<metrics::Labels> out;
  InboundMetrics::RequestSeries::forEach(
      [&](std::size_t, std::size_t method, metrics::StatusClass c) {
        out.push_back(
            {{"method", InboundMetrics::kMethods[method]}, {"code", metrics::statusClassName(c)}});
      });
  return out;
}

std::vector<metrics::Labels> handshakeLabels() {
  std::vector<metrics::Labels> out;
  InboundMetrics::HandshakeSeries::forEach([&](std::size_t, HandshakeResult result) {
    out.push_back({{"result", std::string(handshakeResultName(result))}});
  });
  return out;
}

std::vector<metrics::Labels> grpcLabels() {
  std::vector<metrics::Labels> out;
  for (std::size_t i = 0; i < InboundMetrics::kGrpcStatuses; ++i) {
    out.push_back({{"grpc_status", i <= 16 ? std::to_string(i) : i == 17 ? "other" : "none"}});
  }
  return out;
}

using Counter = metrics::Registered<InboundMetrics, prometheus::Counter>;
constexpr Counter kCounters[] = {
    {&InboundMetrics::identityRefused, "sidecar_identity_refused_total",
     "Requests refused with 403 because the caller's identity is not on the allow-list, or "
     "unusable."},
    {&InboundMetrics::underscoreHeaders, "sidecar_underscore_headers_total",
     "Request header fields whose name holds '_', dropped or refused (400) as "
     "--headers-with-underscores says."},
    {&InboundMetrics::identityUnusable, "sidecar_identity_unusable_total",
     "Requests refused with 403 because the name that would be the caller's identity (first URI "
     "SAN, else first DNS SAN, else CN) is empty or holds a control or non-ASCII byte."},
    {&InboundMetrics::upstreamConnectErrors, "sidecar_upstream_connect_errors_total",
     "Connections to the local service that failed or timed out."},
    {&InboundMetrics::upstreamTimeouts, "sidecar_upstream_timeouts_total",
     "Requests answered 504 because the local service was too slow."},
    {&InboundMetrics::upstreamStaleRetries, "sidecar_upstream_stale_retries_total",
     "Pooled connections found closed by the local service, when taken for a request or by the "
     "pool's sweep once a second; the request went out on another connection."},
    {&InboundMetrics::upstreamUnsolicited, "sidecar_upstream_unsolicited_closed_total",
     "Connections to the local service closed, never reused, because they held bytes past the "
     "end of the answer just relayed (a body after a HEAD, 204 or 304 answer, a body longer than "
     "its Content-Length, a response nobody asked for)."},
    {&InboundMetrics::upstreamConnectsTotal, "sidecar_upstream_connections_total",
     "Connections opened to the local service."},
    {&InboundMetrics::h2ResetsReceived, "sidecar_http2_resets_received_total",
     "RST_STREAM frames HTTP/2 callers sent (a cancelled call, or abuse: see "
     "sidecar_http2_floods_total)."},
    {&InboundMetrics::h2ResetsSent, "sidecar_http2_resets_sent_total",
     "RST_STREAM frames sent to HTTP/2 callers (a refused stream, a broken or timed-out answer)."},
    {&InboundMetrics::h2GoawaySent, "sidecar_http2_goaway_sent_total",
     "GOAWAY frames sent to HTTP/2 callers (idle, drain, protocol error or flood)."},
    {&InboundMetrics::h2Floods, "sidecar_http2_floods_total",
     "HTTP/2 caller connections ended for a flood: frames that carry no request (PING, SETTINGS, "
     "PRIORITY, empty DATA) past 1000 a second, streams reset faster than the rapid-reset bound, "
     "or answers to PING and SETTINGS left unread."},
    {&InboundMetrics::upstreamH2Connections, "sidecar_upstream_h2_connections_total",
     "HTTP/2 (h2c) connections opened to the local service (--upstream-protocol h2c or auto)."},
    {&InboundMetrics::upstreamH2Resent, "sidecar_upstream_h2_streams_resent_total",
     "Requests sent again to the local service over HTTP/2 because it refused their stream "
     "(REFUSED_STREAM, or a GOAWAY that left them out) before taking any of them."},
    {&InboundMetrics::h2FlowStalls, "sidecar_http2_flow_control_stalls_total",
     "Times an answer's body from the local service was paused because the HTTP/2 caller had "
     "not read the last 64 KiB of it (its flow-control window)."},
};

using Gauge = metrics::Registered<InboundMetrics, prometheus::Gauge>;
constexpr Gauge kGauges[] = {
    {&InboundMetrics::upstreamPoolIdle, "sidecar_upstream_pool_idle",
     "Idle pooled connections to the local service, all workers."},
};

}  // namespace

InboundMetrics::InboundMetrics(prometheus::Registry& r, unsigned workers)
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
                        metrics::latencyBuckets(), {{}}, workers),
      h2Connections("sidecar_http2_connections_total",
                    "Inbound connections that chose HTTP/2 (ALPN h2).", {{}}, workers),
      h2Streams("sidecar_http2_streams_total", "Streams HTTP/2 callers opened (one request each).",
                {{}}, workers),
      h2StreamsOpen("sidecar_http2_streams_open", "HTTP/2 callers' streams open now.", {{}},
                    workers, true),
      h2StreamsBroken("sidecar_http2_streams_broken_total",
                      "HTTP/2 streams that ended without a whole answer: reset by the caller "
                      "before the answer, or reset by the sidecar mid-answer.",
                      {{}}, workers),
      grpcRequests("sidecar_grpc_requests_total",
                   "gRPC requests (content-type application/grpc) answered, by grpc-status "
                   "(\"other\": a value past 16; \"none\": no grpc-status, e.g. a broken answer).",
                   grpcLabels(), workers) {
  for (const auto* c :
       {&requests, &handshakes, &connectionsTotal, &connectionsOpen, &pending, &receivedBytes,
        &sentBytes, &h2Connections, &h2Streams, &h2StreamsOpen, &h2StreamsBroken, &grpcRequests}) {
    collector.add(c);
  }
  for (const auto* h : {&requestDuration, &upstreamDuration, &handshakeDuration}) {
    collector.add(h);
  }
  auto& local = metrics::counterFamily(r, "sidecar_local_replies_total",
                                       "Error answers the sidecar wrote itself (not from the "
                                       "local service), by status.");
  for (std::size_t i = 0; i < kLocalReplies.size(); ++i) {
    localReplies[i] = &local.Add({{"status", std::to_string(kLocalReplies[i].status)}});
  }
  metrics::registerAll(r, *this, kCounters);
  metrics::registerAll(r, *this, kGauges);
}

}  // namespace sidecar
