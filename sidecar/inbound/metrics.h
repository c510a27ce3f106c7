#pragma once
// The inbound data path's metrics (and the worker's, the announcer's and the admin's, made here
// with them): every handle resolved once at start-up; the request path only adds.

#include <metrics/sharded.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <array>
#include <boost/beast/http/verb.hpp>

#include "http/local_reply.h"
#include "net/tls_context.h"

namespace sidecar {

struct ProxyMetrics {
  ProxyMetrics(prometheus::Registry& registry, unsigned workers);

  // Request-path metrics, sharded by worker (see metrics/sharded.h).
  static constexpr std::array<const char*, 8> kMethods{"GET",    "HEAD",  "POST",    "PUT",
                                                       "DELETE", "PATCH", "OPTIONS", "OTHER"};
  static constexpr std::size_t kClasses = 5;  // 1xx .. 5xx
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
  static std::size_t requestSeries(std::size_t method, unsigned status) {
    unsigned cls = status / 100;
    return method * kClasses + (cls >= 1 && cls <= 5 ? cls - 1 : 4);
  }
  metrics::ShardedCounter requests;    // series: requestSeries()
  metrics::ShardedCounter handshakes;  // series: 0 ok, 1 + HandshakeFailure
  metrics::ShardedCounter connectionsTotal;
  metrics::ShardedCounter connectionsOpen;  // gauge
  metrics::ShardedCounter pending;          // gauge
  metrics::ShardedCounter receivedBytes;    // request bodies from callers
  metrics::ShardedCounter sentBytes;        // response bodies to callers
  metrics::ShardedHistogram requestDuration;
  metrics::ShardedHistogram upstreamDuration;
  metrics::ShardedHistogram handshakeDuration;
  metrics::ShardedCollector collector;

  // Answers the sidecar wrote itself, by status: one counter per entry of kLocalReplies.
  prometheus::Counter& localReply(unsigned status) {
    return *localReplies[localReplyIndex(status)];
  }
  std::array<prometheus::Counter*, kLocalReplies.size()> localReplies;
  prometheus::Counter* identityRefused;
  prometheus::Counter* identityUnusable;
  prometheus::Counter* underscoreHeaders;
  // By listener budget (net/worker.h's Budget, named as kListenerNames): listen, thrift, outbound.
  std::array<prometheus::Counter*, 3> connectionsRefused;
  std::array<prometheus::Counter*, 3> connectionsEvicted;
  prometheus::Counter* upstreamConnectErrors;
  prometheus::Counter* upstreamTimeouts;
  prometheus::Counter* upstreamStaleRetries;
  prometheus::Counter* upstreamUnsolicited;
  prometheus::Counter* upstreamConnectsTotal;
  prometheus::Gauge* upstreamPoolIdle;
  prometheus::Counter* memoryTrims;
  prometheus::Counter* accessLogDropped;
  prometheus::Counter* certReloadOk;
  prometheus::Counter* certReloadFailed;
  prometheus::Gauge* certNotAfter;
  prometheus::Gauge* draining;
  // The admin interface's connections (bounded by kAdminMaxConnections in server.cpp).
  prometheus::Gauge* adminConnectionsOpen;
  prometheus::Counter* adminConnectionsRefused;
  prometheus::Counter* adminConnectionsEvicted;
};

// The control thread's metrics: ZooKeeper session, announcements, health checks.
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
