// A route's typed series land on the series their labels name, and are given back with it.
#include "outbound/metrics.h"

#include <doctest/doctest.h>

#include <string>

#include "metrics/scrape.h"

namespace sidecar {
namespace {

using metrics::test::holds;
using metrics::test::scrape;

TEST_CASE("outbound: a route's series appear with its name, and start from zero for the next") {
  prometheus::Registry registry;
  OutboundMetrics m(registry, 3, 1);
  m.name(1, "billing");
  m.requests.add(0, OutboundMetrics::requestSeries(1, 503));
  m.handshakeFailures.add(0, OutboundMetrics::handshakeSeries(1, OutboundMetrics::kWrongIdentity));
  auto text = scrape(m.collector);
  CHECK(holds(text, "sidecar_outbound_requests_total{code=\"5xx\",route=\"billing\"} 1"));
  CHECK(holds(text, "sidecar_outbound_requests_total{code=\"2xx\",route=\"billing\"} 0"));
  CHECK(holds(text,
              "sidecar_outbound_handshake_failures_total{reason=\"wrong_identity\","
              "route=\"billing\"} 1"));
  CHECK(!holds(text, "route=\"\""));
  m.unname(1, "billing");
  CHECK(!holds(scrape(m.collector), "billing"));
  m.name(1, "ledger");
  text = scrape(m.collector);
  CHECK(holds(text, "sidecar_outbound_requests_total{code=\"5xx\",route=\"ledger\"} 0"));
}

}  // namespace
}  // namespace sidecar
