// Declares the inbound Thrift listener's metric families and keeps the per-method names.
#include "thrift/metrics.h"

#include <metrics/metrics.h>
#include <prometheus/family.h>

#include <algorithm>

#include "net/tls_context.h"

namespace sidecar {

namespace {

// One series per method slot, labelled at scrape time (metrics::labelledBySlot()).
std::vector<metrics::Labels> methodSeries() {
  return std::vector<metrics::Labels>(ThriftMethodTable::kSlots);
}

}  // namespace

ThriftMethodMetrics::ThriftMethodMetrics(unsigned workers)
    : calls("sidecar_thrift_method_calls_total",
            "Thrift calls forwarded to the local service, by method (the first 64 names seen; "
            "the rest as other)",
            methodSeries(), workers),
      replies("sidecar_thrift_method_replies_total",
              "REPLY messages relayed to Thrift callers, by method (a declared exception is a "
              "REPLY too)",
              methodSeries(), workers),
      exceptions("sidecar_thrift_method_exceptions_total",
                 "EXCEPTION replies (TApplicationException) to Thrift callers, by method and "
                 "source: service (the local service's, relayed) or sidecar (ours, INTERNAL_ERROR)",
                 std::vector<metrics::Labels>(ExceptionSeries::size), workers),
      duration("sidecar_thrift_method_duration_seconds",
               "Thrift calls from the whole call read to the reply written, by method",
               metrics::latencyBuckets(), methodSeries(), workers) {
  ExceptionSeries::forEach([&](std::size_t series, std::size_t, Source source) {
    exceptions.setLabels(series, {{"source", source == fromService ? "service" : "sidecar"}});
  });
}

std::vector<std::pair<std::size_t, std::string>> ThriftMethodMetrics::named() const {
  return table.named();
}

std::vector<prometheus::MetricFamily> ThriftMethodMetrics::Collect() const {
  constexpr std::size_t kExceptionsPerSlot = ExceptionSeries::size / ThriftMethodTable::kSlots;
  const auto slots = named();
  return {metrics::labelledBySlot(calls.collect(), slots, 1),
          metrics::labelledBySlot(replies.collect(), slots, 1),
          metrics::labelledBySlot(exceptions.collect(), slots, kExceptionsPerSlot),
          metrics::labelledBySlot(duration.collect(), slots, 1)};
}

ThriftClientMetrics::ThriftClientMetrics(unsigned workers)
    : requests("sidecar_thrift_client_requests_total",
               "Calls of TTwitter (upgraded) Thrift callers forwarded to the local service, by "
               "their RequestHeader's client_id (the first 64 ids seen; the rest, and calls with "
               "none, as other)",
               methodSeries(), workers),
      failures("sidecar_thrift_client_failures_total",
               "Calls of TTwitter Thrift callers answered with an EXCEPTION (the local service's "
               "or the sidecar's), by client_id",
               methodSeries(), workers) {}

std::vector<prometheus::MetricFamily> ThriftClientMetrics::Collect() const {
  const auto slots = table.named();
  return {metrics::labelledBySlot(requests.collect(), slots, 1, "client_id"),
          metrics::labelledBySlot(failures.collect(), slots, 1, "client_id")};
}

ThriftMetrics::ThriftMetrics(prometheus::Registry& r, unsigned workers)
    : methods(workers), clients(workers) {
  metrics::addEach(metrics::counterFamily(r, "sidecar_thrift_calls_total",
                                          "Thrift calls on --thrift-listen by result: replied, "
                                          "oneway, local_error (answered INTERNAL_ERROR), refused "
                                          "(identity)"),
                   "result",
                   {{&callsReplied, "replied"},
                    {&callsOneway, "oneway"},
                    {&callsLocalError, "local_error"},
                    {&callsRefused, "refused"}});
  metrics::addEach(
      metrics::counterFamily(r, "sidecar_thrift_frames_refused_total",
                             "Thrift frames that closed their connection: too_large "
                             "(--thrift-max-frame), not_thrift, malformed (not exactly one whole "
                             "message), overloaded (its worker held --thrift-max-buffered of "
                             "frames already), or cut_short (the caller left or was silent past "
                             "--idle-timeout inside a frame)"),
      "reason",
      {{&framesTooLarge, "too_large"},
       {&framesNotThrift, "not_thrift"},
       {&framesMalformed, "malformed"},
       {&framesOverloaded, "overloaded"},
       {&framesCutShort, "cut_short"}});
  probes = &metrics::counter(
      r, "sidecar_thrift_probes_total",
      "Finagle upgrade probes (__can__finagle__trace__v3__) answered by the sidecar");
  metrics::addEach(metrics::counterFamily(
                       r, "sidecar_thrift_ttwitter_calls_total",
                       "Calls on TTwitter (upgraded) --thrift-listen connections by result: ok "
                       "(RequestHeader read and stripped), malformed (it could not be read; the "
                       "connection closed)"),
                   "result", {{&ttwitterCalls, "ok"}, {&ttwitterMalformed, "malformed"}});
  metrics::addEach(
      metrics::counterFamily(r, "sidecar_thrift_local_errors_total",
                             "Failures of the local Thrift service "
                             "(--thrift-upstream) by reason: connect, timeout, broken"),
      "reason", {{&localConnect, "connect"}, {&localTimeout, "timeout"}, {&localBroken, "broken"}});
  connections = &metrics::counter(r, "sidecar_thrift_connections_total",
                                  "Connections accepted on --thrift-listen");
  auto& shakes = metrics::counterFamily(r, "sidecar_thrift_handshakes_total",
                                        "TLS handshakes on --thrift-listen by result (ok or the "
                                        "reason they failed)");
  HandshakeSeries::forEach([&](std::size_t series, HandshakeResult result) {
    handshakes[series] = &shakes.Add({{"result", std::string(handshakeResultName(result))}});
  });
}

}  // namespace sidecar
