// Declares the outbound metric families; a route's series appear once the route exists.
#include "outbound/metrics.h"

#include <metrics/metrics.h>

namespace sidecar {

namespace {

// A route's series have no labels until the route exists (name()).
std::vector<metrics::Labels> blank(std::size_t n) { return std::vector<metrics::Labels>(n); }

// The families with a series per route: made by name(), removed by unname().
using RouteGauges = metrics::Registered<OutboundMetrics, prometheus::Family<prometheus::Gauge>>;
constexpr RouteGauges kRouteGauges[] = {
    {&OutboundMetrics::members, "sidecar_outbound_members",
     "Members of a route as last resolved (ALIVE, with the wanted endpoint)."},
    {&OutboundMetrics::membersEjected, "sidecar_outbound_members_ejected",
     "Members of a route that failure accrual has taken out, on the worker that ejected most."},
    {&OutboundMetrics::stale, "sidecar_outbound_resolver_stale",
     "1 while a route's members are the last known set because ZooKeeper cannot be read; 0 when "
     "current."},
    {&OutboundMetrics::membersUnresolved, "sidecar_outbound_members_unresolved",
     "Members of a route announced with a host name that has no address (not looked up yet, or "
     "never found): left out."},
};
using RouteCounters = metrics::Registered<OutboundMetrics, prometheus::Family<prometheus::Counter>>;
constexpr RouteCounters kRouteCounters[] = {
    {&OutboundMetrics::dnsFailures, "sidecar_outbound_dns_failures_total",
     "Failed lookups of the host names that members of a route announced, by route; the name "
     "keeps its last good addresses."},
    {&OutboundMetrics::dropsHeld, "sidecar_outbound_serverset_drops_held_total",
     "Listings of a route's serverset that took away more than --serverset-drop-limit of its "
     "members at once, held (the last set kept) for up to --serverset-drop-hold."},
};

using Counter = metrics::Registered<OutboundMetrics, prometheus::Counter>;
constexpr Counter kCounters[] = {
    {&OutboundMetrics::noRoute, "sidecar_outbound_no_route_total",
     "Outbound requests answered 404 because no route names their Host (those refused by "
     "--max-routes included)."},
    {&OutboundMetrics::badHost, "sidecar_outbound_bad_host_total",
     "Outbound requests answered 400 because their Host is missing or names no service (an "
     "empty label, say)."},
    {&OutboundMetrics::underscoreHeaders, "sidecar_outbound_underscore_headers_total",
     "Header fields of the local service's calls whose name holds '_', dropped or refused (400) "
     "as --headers-with-underscores says."},
    {&OutboundMetrics::routesRefused, "sidecar_outbound_routes_refused_total",
     "Outbound requests answered 404 because --route-prefix would have made a route for their "
     "Host but the worker already waits for --max-routes new ones."},
};

std::string handshakeReasonName(std::size_t reason) {
  return reason == OutboundMetrics::kWrongIdentity
             ? "wrong_identity"
             : std::string(handshakeFailureName(static_cast<HandshakeFailure>(reason)));
}

// A series given up by its route: hidden, and zero for the next.
template <class Metric>
void forget(Metric& m, std::size_t series) {
  m.hide(series);
  m.reset(series);
}

std::vector<metrics::Labels> grpcSeriesLabels() {
  std::vector<metrics::Labels> out;
  for (std::size_t slot = 0; slot < metrics::NameTable::kSlots; ++slot) {
    for (std::size_t i = 0; i < GrpcMethodMetrics::kStatuses; ++i) {
      out.push_back({{"grpc_status", i <= 16                                ? std::to_string(i)
                                     : i == GrpcMethodMetrics::kOtherStatus ? "other"
                                                                            : "none"}});
    }
  }
  return out;
}

}  // namespace

GrpcMethodMetrics::GrpcMethodMetrics(unsigned workers)
    : calls("sidecar_outbound_grpc_requests_total",
            "gRPC calls of the local service to other services, by method (the first 64 "
            "package.Service/Method names seen; the rest as other) and the grpc-status they got "
            "(\"none\": the call broke before one).",
            grpcSeriesLabels(), workers) {}

std::vector<prometheus::MetricFamily> GrpcMethodMetrics::Collect() const {
  auto family = metrics::labelledBySlot(calls.collect(), table.named(), kStatuses);
  std::erase_if(family.metric,
                [](const prometheus::ClientMetric& m) { return m.counter.value == 0; });
  return {std::move(family)};
}

OutboundMetrics::OutboundMetrics(prometheus::Registry& r, std::size_t n, unsigned workers)
    : slots(n),
      requests("sidecar_outbound_requests_total",
               "Requests of the local service to other services, by route and status class.",
               blank(RequestSeries::total(n)), workers),
      requestDuration("sidecar_outbound_request_duration_seconds",
                      "Time from an outbound request's head to the end of its answer, by route.",
                      metrics::latencyBuckets(), blank(n), workers),
      retries("sidecar_outbound_retries_total",
              "Outbound requests sent again to another member after a failure, by route.", blank(n),
              workers),
      budgetExhausted("sidecar_outbound_retry_budget_exhausted_total",
                      "Failures returned without a retry because the route's retry budget was "
                      "empty, by route.",
                      blank(n), workers),
      ejections("sidecar_outbound_ejections_total",
                "Members taken out of a route's balancer by failure accrual, by route "
                "(each worker ejects on its own).",
                blank(n), workers),
      noMembers("sidecar_outbound_no_members_total",
                "Outbound requests answered 503 because the route had no usable member.", blank(n),
                workers),
      handshakeFailures("sidecar_outbound_handshake_failures_total",
                        "Failed TLS handshakes to members, by route and reason.",
                        blank(HandshakeSeries::total(n)), workers),
      connects("sidecar_outbound_connections_total",
               "Connections (TLS handshakes that succeeded) made to members, by route.", blank(n),
               workers),
      grpc(workers) {
  for (auto* c : {&requests, &retries, &budgetExhausted, &ejections, &noMembers, &handshakeFailures,
                  &connects}) {
    c->hideAll();
    collector.add(c);
  }
  requestDuration.hideAll();
  collector.add(&requestDuration);
  metrics::registerAll(r, *this, kRouteGauges);
  metrics::registerAll(r, *this, kRouteCounters);
  metrics::registerAll(r, *this, kCounters);
  metrics::addEach(
      metrics::counterFamily(
          r, "sidecar_outbound_routes_expired_total",
          "Routes made from --route-prefix that were removed (their resolvers closed, their "
          "watches ignored), by reason: negative (no member for 5 s), idle (unused for "
          "--route-idle-timeout), evicted (the least recently used, to make room at "
          "--max-routes)."),
      "reason",
      {{&routesExpiredNegative, "negative"},
       {&routesExpiredIdle, "idle"},
       {&routesExpiredEvicted, "evicted"}});
}

void OutboundMetrics::unname(std::size_t slot, const std::string& route) {
  RequestSeries::forEach(slot, [&](std::size_t series, auto) { forget(requests, series); });
  HandshakeSeries::forEach(slot,
                           [&](std::size_t series, auto) { forget(handshakeFailures, series); });
  for (auto* c : perRoute()) {
    forget(*c, slot);
  }
  forget(requestDuration, slot);
  for (auto* family : routeGauges()) {
    family->Remove(&family->Add({{"route", route}}));
  }
  dnsFailures->Remove(&dnsFailures->Add({{"route", route}}));
  dropsHeld->Remove(&dropsHeld->Add({{"route", route}}));
}

void OutboundMetrics::name(std::size_t slot, const std::string& route) {
  RequestSeries::forEach(slot, [&](std::size_t series, metrics::StatusClass c) {
    requests.setLabels(series, {{"route", route}, {"code", metrics::statusClassName(c)}});
  });
  HandshakeSeries::forEach(slot, [&](std::size_t series, std::size_t reason) {
    handshakeFailures.setLabels(series,
                                {{"route", route}, {"reason", handshakeReasonName(reason)}});
  });
  for (auto* c : perRoute()) {
    c->setLabels(slot, {{"route", route}});
  }
  requestDuration.setLabels(slot, {{"route", route}});
  for (auto* family : routeGauges()) {
    family->Add({{"route", route}});
  }
  dnsFailures->Add({{"route", route}});
  dropsHeld->Add({{"route", route}});
}

}  // namespace sidecar
