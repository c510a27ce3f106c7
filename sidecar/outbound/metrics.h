#pragma once
// The outbound mesh's metrics, per route. A route has a slot, fixed when the control thread makes
// the route: declared routes first, then those made from --route-prefix, up to --max-routes. The
// request path adds to its worker's shard of the slot's series; no label lookup, no lock.

#include <metrics/name_table.h>
#include <metrics/series.h>
#include <metrics/sharded.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <array>
#include <optional>
#include <string>

#include "net/tls_context.h"

namespace sidecar {

// sidecar_outbound_grpc_requests_total{method, grpc_status}: the local service's gRPC calls by
// method ("package.Service/Method", the first 64 seen; the rest as other) and the grpc-status
// they got, labelled at scrape time. A series appears once it has a call.
class GrpcMethodMetrics final : public prometheus::Collectable {
 public:
  // grpc-status 0 to 16, another value, none (the call broke before its status).
  static constexpr std::size_t kStatuses = 19;
  static constexpr std::size_t kOtherStatus = 17;
  static constexpr std::size_t kNoStatus = 18;
  static constexpr std::size_t series(std::size_t slot, std::size_t status) {
    return slot * kStatuses + status;
  }
  // The status's index for series().
  static constexpr std::size_t statusIndex(std::optional<unsigned> status) {
    return !status ? kNoStatus : *status <= 16 ? *status : kOtherStatus;
  }

  explicit GrpcMethodMetrics(unsigned workers);

  metrics::NameTable table{metrics::NameTable::Names::grpcMethods};
  metrics::ShardedCounter calls;  // series()

  std::vector<prometheus::MetricFamily> Collect() const override;
};

struct OutboundMetrics {
  OutboundMetrics(prometheus::Registry& registry, std::size_t slots, unsigned workers);

  // sidecar_outbound_requests_total{route, code}: per slot, the status's class.
  using RequestSeries = metrics::Series<metrics::StatusClass>;
  static constexpr std::size_t requestSeries(std::size_t slot, unsigned status) {
    return RequestSeries::at(slot, metrics::statusClass(status));
  }
  // sidecar_outbound_handshake_failures_total{route, reason}: per slot, the inbound reasons
  // (HandshakeFailure), and a certificate that is not the route's expected identity.
  static constexpr std::size_t kWrongIdentity = kHandshakeFailures;
  static constexpr std::size_t kHandshakeReasons = kHandshakeFailures + 1;
  using HandshakeSeries = metrics::Series<metrics::Bounded<kHandshakeReasons>>;
  static constexpr std::size_t handshakeSeries(std::size_t slot, std::size_t reason) {
    return HandshakeSeries::at(slot, reason);
  }

  std::size_t slots;
  metrics::ShardedCounter requests;           // requestSeries()
  metrics::ShardedHistogram requestDuration;  // slot
  metrics::ShardedCounter retries;            // slot
  metrics::ShardedCounter budgetExhausted;    // slot
  metrics::ShardedCounter ejections;          // slot
  metrics::ShardedCounter noMembers;          // slot: answered 503
  metrics::ShardedCounter handshakeFailures;  // handshakeSeries()
  metrics::ShardedCounter connects;           // slot
  metrics::ShardedCollector collector;
  GrpcMethodMetrics grpc;

  // Set by the control thread.
  prometheus::Family<prometheus::Gauge>* members;
  prometheus::Family<prometheus::Gauge>* membersEjected;
  prometheus::Family<prometheus::Gauge>* stale;
  // Members announced with a host name: failed lookups of their names, and members left out now
  // because their name has no address yet (its first lookup under way or failed).
  prometheus::Family<prometheus::Counter>* dnsFailures;
  // Listings held because they took away more than --serverset-drop-limit of the members.
  prometheus::Family<prometheus::Counter>* dropsHeld;
  prometheus::Family<prometheus::Gauge>* membersUnresolved;
  prometheus::Counter* noRoute;            // answered 404
  prometheus::Counter* badHost;            // answered 400: no Host, or one that is no name
  prometheus::Counter* underscoreHeaders;  // header names with '_', dropped or refused
  prometheus::Counter* routesRefused;      // answered 404: a prefix route beyond --max-routes
  // Prefix routes removed: without members for 5 s, unused for --route-idle-timeout, or the least
  // recently used when a new one needed the place.
  prometheus::Counter* routesExpiredNegative;
  prometheus::Counter* routesExpiredIdle;
  prometheus::Counter* routesExpiredEvicted;

  // Shows the slot's series, labelled with the route's name (control thread).
  void name(std::size_t slot, const std::string& route);
  // Hides the slot's series and removes the route's gauges (control thread); the slot's counts
  // start from zero when name() gives it to another route.
  void unname(std::size_t slot, const std::string& route);

 private:
  // The series kept per slot alone, labelled {route}.
  std::array<metrics::ShardedCounter*, 5> perRoute() {
    return {&retries, &budgetExhausted, &ejections, &noMembers, &connects};
  }
  // The families with a series per route, made by name() and removed by unname().
  std::array<prometheus::Family<prometheus::Gauge>*, 4> routeGauges() const {
    return {members, membersEjected, stale, membersUnresolved};
  }
};

}  // namespace sidecar
