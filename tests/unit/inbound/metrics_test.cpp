// The typed series of the request families land on the series their labels name.
#include "inbound/metrics.h"

#include <doctest/doctest.h>

#include <string>

#include "metrics/scrape.h"

namespace sidecar {
namespace {

using metrics::test::holds;
using metrics::test::scrape;

TEST_CASE("inbound: a request and a handshake are counted under their labels") {
  prometheus::Registry registry;
  InboundMetrics m(registry, 2);
  m.requests.add(1, InboundMetrics::requestSeries(
                        InboundMetrics::methodIndex(boost::beast::http::verb::post), 404));
  m.requests.add(0, InboundMetrics::requestSeries(
                        InboundMetrics::methodIndex(boost::beast::http::verb::trace), 700));
  m.handshakes.add(0, InboundMetrics::handshakeSeries(HandshakeFailure::Expired));
  m.handshakes.add(1, InboundMetrics::handshakeSeries(std::nullopt));
  const auto text = scrape(m.collector);
  CHECK(holds(text, "sidecar_requests_total{code=\"4xx\",method=\"POST\"} 1"));
  CHECK(holds(text, "sidecar_requests_total{code=\"5xx\",method=\"OTHER\"} 1"));
  CHECK(holds(text, "sidecar_tls_handshakes_total{result=\"expired\"} 1"));
  CHECK(holds(text, "sidecar_tls_handshakes_total{result=\"ok\"} 1"));
  CHECK(holds(text, "sidecar_tls_handshakes_total{result=\"timeout\"} 0"));
}

}  // namespace
}  // namespace sidecar
