// Declares the outbound metric families; a route's series appear once the route exists.
#include "outbound/metrics.h"

namespace sidecar {

namespace {

std::vector<metrics::Labels> blank(std::size_t n) { return std::vector<metrics::Labels>(n); }

}  // namespace

OutboundMetrics::OutboundMetrics(prometheus::Registry& r, std::size_t n, unsigned workers)
    : slots(n),
      requests("sidecar_outbound_requests_total",
               "Requests of the local service to other services, by route and status class.",
               blank(n * kClasses), workers),
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
                        blank(n * kHandshakeReasons), workers),
      connects("sidecar_outbound_connections_total",
               "Connections (TLS handshakes that succeeded) made to members, by route.", blank(n),
               workers) {
  for (auto* c : {&requests, &retries, &budgetExhausted, &ejections, &noMembers, &handshakeFailures,
                  &connects}) {
    c->hideAll();
    collector.add(c);
  }
  requestDuration.hideAll();
  collector.add(&requestDuration);
  members = &prometheus::BuildGauge()
                 .Name("sidecar_outbound_members")
                 .Help("Members of a route as last resolved (ALIVE, with the wanted endpoint).")
                 .Register(r);
  membersEjected = &prometheus::BuildGauge()
                        .Name("sidecar_outbound_members_ejected")
                        .Help(
                            "Members of a route that failure accrual has taken out, on the "
                            "worker that ejected most.")
                        .Register(r);
  stale = &prometheus::BuildGauge()
               .Name("sidecar_outbound_resolver_stale")
               .Help(
                   "1 while a route's members are the last known set because ZooKeeper cannot "
                   "be read; 0 when current.")
               .Register(r);
  dnsFailures = &prometheus::BuildCounter()
                     .Name("sidecar_outbound_dns_failures_total")
                     .Help(
                         "Failed lookups of the host names that members of a route announced, "
                         "by route; the name keeps its last good addresses.")
                     .Register(r);
  membersUnresolved = &prometheus::BuildGauge()
                           .Name("sidecar_outbound_members_unresolved")
                           .Help(
                               "Members of a route announced with a host name that has no "
                               "address (not looked up yet, or never found): left out.")
                           .Register(r);
  noRoute = &prometheus::BuildCounter()
                 .Name("sidecar_outbound_no_route_total")
                 .Help(
                     "Outbound requests answered 404 because no route names their Host "
                     "(those refused by --max-routes included).")
                 .Register(r)
                 .Add({});
  badHost = &prometheus::BuildCounter()
                 .Name("sidecar_outbound_bad_host_total")
                 .Help(
                     "Outbound requests answered 400 because their Host is missing or names no "
                     "service (an empty label, say).")
                 .Register(r)
                 .Add({});
  underscoreHeaders = &prometheus::BuildCounter()
                           .Name("sidecar_outbound_underscore_headers_total")
                           .Help(
                               "Header fields of the local service's calls whose name holds "
                               "'_', dropped or refused (400) as --headers-with-underscores "
                               "says.")
                           .Register(r)
                           .Add({});
  routesRefused = &prometheus::BuildCounter()
                       .Name("sidecar_outbound_routes_refused_total")
                       .Help(
                           "Outbound requests answered 404 because --route-prefix would have "
                           "made a route for their Host but the worker already waits for "
                           "--max-routes new ones.")
                       .Register(r)
                       .Add({});
  auto& expired = prometheus::BuildCounter()
                      .Name("sidecar_outbound_routes_expired_total")
                      .Help(
                          "Routes made from --route-prefix that were removed (their resolvers "
                          "closed, their watches ignored), by reason: negative (no member for 5 "
                          "s), idle "
                          "(unused for --route-idle-timeout), evicted (the least recently used, "
                          "to make room at --max-routes).")
                      .Register(r);
  routesExpiredNegative = &expired.Add({{"reason", "negative"}});
  routesExpiredIdle = &expired.Add({{"reason", "idle"}});
  routesExpiredEvicted = &expired.Add({{"reason", "evicted"}});
}

void OutboundMetrics::unname(std::size_t slot, const std::string& route) {
  for (std::size_t c = 0; c < kClasses; ++c) {
    requests.hide(slot * kClasses + c);
    requests.reset(slot * kClasses + c);
  }
  for (std::size_t reason = 0; reason < kHandshakeReasons; ++reason) {
    handshakeFailures.hide(slot * kHandshakeReasons + reason);
    handshakeFailures.reset(slot * kHandshakeReasons + reason);
  }
  for (auto* c : {&retries, &budgetExhausted, &ejections, &noMembers, &connects}) {
    c->hide(slot);
    c->reset(slot);
  }
  requestDuration.hide(slot);
  requestDuration.reset(slot);
  for (auto* family : {members, membersEjected, stale, membersUnresolved}) {
    family->Remove(&family->Add({{"route", route}}));
  }
  dnsFailures->Remove(&dnsFailures->Add({{"route", route}}));
}

void OutboundMetrics::name(std::size_t slot, const std::string& route) {
  static constexpr std::array<const char*, kClasses> kCodes{"1xx", "2xx", "3xx", "4xx", "5xx"};
  for (std::size_t c = 0; c < kClasses; ++c) {
    requests.setLabels(slot * kClasses + c, {{"route", route}, {"code", kCodes[c]}});
  }
  for (std::size_t reason = 0; reason < kHandshakeReasons; ++reason) {
    const std::string why =
        reason == kWrongIdentity
            ? "wrong_identity"
            : std::string(handshakeFailureName(static_cast<HandshakeFailure>(reason)));
    handshakeFailures.setLabels(slot * kHandshakeReasons + reason,
                                {{"route", route}, {"reason", why}});
  }
  for (auto* c : {&retries, &budgetExhausted, &ejections, &noMembers, &connects}) {
    c->setLabels(slot, {{"route", route}});
  }
  requestDuration.setLabels(slot, {{"route", route}});
  members->Add({{"route", route}});
  membersEjected->Add({{"route", route}});
  stale->Add({{"route", route}});
  membersUnresolved->Add({{"route", route}});
  dnsFailures->Add({{"route", route}});
}

}  // namespace sidecar
