#pragma once
// The data path's metrics: every handle resolved once at start-up; the request path only adds.

#include "tls.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <array>

namespace sidecar {

struct ProxyMetrics {
  explicit ProxyMetrics(prometheus::Registry& registry);

  // Answers the sidecar wrote itself, by status; the status codes it can write are fixed.
  static constexpr std::array<unsigned, 10> kLocalStatuses{400, 403, 408, 413, 417,
                                                           431, 502, 503, 504, 500};
  prometheus::Counter& localReply(unsigned status);

  prometheus::Counter* handshakeOk;
  std::array<prometheus::Counter*, 6> handshakeFailed;  // by HandshakeFailure
  std::array<prometheus::Counter*, 5> responsesByClass; // 1xx .. 5xx
  std::array<prometheus::Counter*, kLocalStatuses.size()> localReplies;
  prometheus::Counter* identityRefused;
  prometheus::Counter* connectionsTotal;
  prometheus::Gauge* connectionsOpen;
  prometheus::Counter* upstreamConnectErrors;
  prometheus::Counter* upstreamTimeouts;
  prometheus::Counter* upstreamStaleRetries;
  prometheus::Counter* upstreamConnectsTotal;
  prometheus::Gauge* upstreamPoolIdle;
  prometheus::Counter* certReloadOk;
  prometheus::Counter* certReloadFailed;
  prometheus::Gauge* certNotAfter;
  prometheus::Gauge* draining;
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
