#pragma once
// The inbound Thrift listener's metrics: calls by result, frames refused, probes answered, the
// local service's failures. Counters are resolved once; the data path only increments them.

#include <prometheus/counter.h>
#include <prometheus/registry.h>

namespace sidecar {

struct ThriftMetrics {
  explicit ThriftMetrics(prometheus::Registry& registry);

  // sidecar_thrift_calls_total{result}
  prometheus::Counter* callsReplied;     // the local service's reply relayed
  prometheus::Counter* callsOneway;      // a ONEWAY call forwarded
  prometheus::Counter* callsLocalError;  // answered with INTERNAL_ERROR: the local service failed
  prometheus::Counter* callsRefused;     // the caller's identity is not allowed
  // sidecar_thrift_frames_refused_total{reason}
  prometheus::Counter* framesTooLarge;
  prometheus::Counter* framesNotThrift;
  // sidecar_thrift_probes_total
  prometheus::Counter* probes;
  // sidecar_thrift_local_errors_total{reason}
  prometheus::Counter* localConnect;
  prometheus::Counter* localTimeout;
  prometheus::Counter* localBroken;
  // sidecar_thrift_connections_total
  prometheus::Counter* connections;
};

}  // namespace sidecar
