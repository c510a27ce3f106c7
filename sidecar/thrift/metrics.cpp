// Declares the inbound Thrift listener's metric families.
#include "thrift/metrics.h"

#include <prometheus/family.h>

namespace sidecar {

namespace {

prometheus::Family<prometheus::Counter>& counters(prometheus::Registry& r, const char* name,
                                                  const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r);
}

}  // namespace

ThriftMetrics::ThriftMetrics(prometheus::Registry& r) {
  auto& calls = counters(r, "sidecar_thrift_calls_total",
                         "Thrift calls on --thrift-listen by result: replied, oneway, "
                         "local_error (answered INTERNAL_ERROR), refused (identity)");
  callsReplied = &calls.Add({{"result", "replied"}});
  callsOneway = &calls.Add({{"result", "oneway"}});
  callsLocalError = &calls.Add({{"result", "local_error"}});
  callsRefused = &calls.Add({{"result", "refused"}});
  auto& frames = counters(r, "sidecar_thrift_frames_refused_total",
                          "Thrift frames refused, closing the connection: too_large "
                          "(--thrift-max-frame) or not_thrift");
  framesTooLarge = &frames.Add({{"reason", "too_large"}});
  framesNotThrift = &frames.Add({{"reason", "not_thrift"}});
  probes = &counters(r, "sidecar_thrift_probes_total",
                     "Finagle upgrade probes (__can__finagle__trace__v3__) answered by the sidecar")
                .Add({});
  auto& local = counters(r, "sidecar_thrift_local_errors_total",
                         "Failures of the local Thrift service (--thrift-upstream) by reason: "
                         "connect, timeout, broken");
  localConnect = &local.Add({{"reason", "connect"}});
  localTimeout = &local.Add({{"reason", "timeout"}});
  localBroken = &local.Add({{"reason", "broken"}});
  connections =
      &counters(r, "sidecar_thrift_connections_total", "Connections accepted on --thrift-listen")
           .Add({});
}

}  // namespace sidecar
