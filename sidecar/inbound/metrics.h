#pragma once
// The inbound data path's metrics (--listen: handshakes, requests, the local service): every
// handle resolved once at start-up; the request path only adds. The worker's own counters are in
// net/worker.h, the control thread's in control/metrics.h.

#include <metrics/series.h>
#include <metrics/sharded.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <array>
#include <boost/beast/http/verb.hpp>
#include <optional>

#include "http/local_reply.h"
#include "net/tls_context.h"

namespace sidecar {

struct InboundMetrics {
  InboundMetrics(prometheus::Registry& registry, unsigned workers);

  // Request-path metrics, sharded by worker (see metrics/sharded.h).
  static constexpr std::array<const char*, 8> kMethods{"GET",    "HEAD",  "POST",    "PUT",
                                                       "DELETE", "PATCH", "OPTIONS", "OTHER"};
  // The index of a method in kMethods (OTHER for the rest).
  static constexpr std::size_t methodIndex(boost::beast::http::verb v) {
    using boost::beast::http::verb;
    switch (v) {
      case verb::get:
        return 0;
      case verb::head:
        return 1;
      case verb::post:
        return 2;
      case verb::put:
        return 3;
      case verb::delete_:
        return 4;
      case verb::patch:
        return 5;
      case verb::options:
        return 6;
      default:
        return 7;
    }
  }
  // sidecar_requests_total{method, code}: a method's index in kMethods, the status's class.
  using RequestSeries = metrics::Series<metrics::Bounded<kMethods.size()>, metrics::StatusClass>;
  static constexpr std::size_t requestSeries(std::size_t method, unsigned status) {
    return RequestSeries::index(method, metrics::statusClass(status));
  }
  // sidecar_tls_handshakes_total{result}: ok, or why it failed.
  using HandshakeSeries = metrics::Series<HandshakeResult>;
  static constexpr std::size_t handshakeSeries(std::optional<HandshakeFailure> failure) {
    return HandshakeSeries::index(handshakeResult(failure));
  }

  metrics::ShardedCounter requests;    // series: requestSeries()
  metrics::ShardedCounter handshakes;  // series: handshakeSeries()
  metrics::ShardedCounter connectionsTotal;
  metrics::ShardedCounter connectionsOpen;  // gauge
  metrics::ShardedCounter pending;          // gauge
  metrics::ShardedCounter receivedBytes;    // request bodies from callers
  metrics::ShardedCounter sentBytes;        // response bodies to callers
  metrics::ShardedHistogram requestDuration;
  metrics::ShardedHistogram upstreamDuration;
  metrics::ShardedHistogram handshakeDuration;
  // HTTP/2 callers (docs/http2.md).
  metrics::ShardedCounter h2Connections;
  metrics::ShardedCounter h2Streams;
  metrics::ShardedCounter h2StreamsOpen;    // gauge
  metrics::ShardedCounter h2StreamsBroken;  // reset, or ended without an answer
  // sidecar_grpc_requests_total{grpc_status}: 0 to 16, 17 for another value, 18 for none.
  static constexpr std::size_t kGrpcStatuses = 19;
  metrics::ShardedCounter grpcRequests;
  metrics::ShardedCollector collector;

  // Answers the sidecar wrote itself, by status: one counter per entry of kLocalReplies.
  prometheus::Counter& localReply(unsigned status) {
    return *localReplies[localReplyIndex(status)];
  }
  std::array<prometheus::Counter*, kLocalReplies.size()> localReplies;
  prometheus::Counter* identityRefused;
  prometheus::Counter* identityUnusable;
  prometheus::Counter* underscoreHeaders;
  prometheus::Counter* upstreamConnectErrors;
  prometheus::Counter* upstreamTimeouts;
  prometheus::Counter* upstreamStaleRetries;
  prometheus::Counter* upstreamUnsolicited;
  prometheus::Counter* upstreamConnectsTotal;
  prometheus::Gauge* upstreamPoolIdle;
  prometheus::Counter* h2ResetsReceived;
  prometheus::Counter* h2ResetsSent;
  prometheus::Counter* h2GoawaySent;
  prometheus::Counter* h2Floods;
  prometheus::Counter* h2FlowStalls;
  prometheus::Counter* upstreamH2Connections;
  prometheus::Counter* upstreamH2Resent;
};

}  // namespace sidecar
