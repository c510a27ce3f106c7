#pragma once
// The inbound Thrift listener's metrics: calls by result, frames refused, probes answered, the
// local service's failures, and per method (a bounded set of names) calls, replies, exceptions
// and latency. Counters are resolved once; the data path only increments them.

#include <metrics/name_table.h>
#include <metrics/series.h>
#include <metrics/sharded.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "net/tls_context.h"

namespace sidecar {

// The method names (and TTwitter client ids) that have a series of their own: the first 64 seen.
using ThriftMethodTable = metrics::NameTable;
using ThriftMethodSlots = metrics::NameSlots;

// Per-method series, labelled `method` at scrape time with the table's names; the slots not
// named yet are left out.
class ThriftMethodMetrics final : public prometheus::Collectable {
 public:
  explicit ThriftMethodMetrics(unsigned workers);

  // Where an EXCEPTION reply came from (the `source` label).
  enum class Source : std::size_t { service, sidecar, count };
  static constexpr Source fromService = Source::service;
  static constexpr Source fromSidecar = Source::sidecar;
  // sidecar_thrift_method_exceptions_total{method, source}
  using ExceptionSeries = metrics::Series<metrics::Bounded<ThriftMethodTable::kSlots>, Source>;
  static constexpr std::size_t exceptionSeries(std::size_t slot, Source s) {
    return ExceptionSeries::index(slot, s);
  }

  ThriftMethodTable table;
  metrics::ShardedCounter calls;       // slot
  metrics::ShardedCounter replies;     // slot: REPLY messages relayed
  metrics::ShardedCounter exceptions;  // exceptionSeries(slot, source)
  metrics::ShardedHistogram duration;  // slot

  // (slot, name) of the slots in use, `other` last.
  std::vector<std::pair<std::size_t, std::string>> named() const;

  std::vector<prometheus::MetricFamily> Collect() const override;
};

// Per-client series of TTwitter callers (the client_id of their RequestHeader), labelled
// `client_id` at scrape time like the methods' series; calls with no client_id count as `other`.
class ThriftClientMetrics final : public prometheus::Collectable {
 public:
  explicit ThriftClientMetrics(unsigned workers);

  ThriftMethodTable table{ThriftMethodTable::Names::clientIds};
  metrics::ShardedCounter requests;  // slot
  metrics::ShardedCounter failures;  // slot: answered with an EXCEPTION (ours or the service's)

  std::vector<prometheus::MetricFamily> Collect() const override;
};

struct ThriftMetrics {
  ThriftMetrics(prometheus::Registry& registry, unsigned workers);

  // sidecar_thrift_calls_total{result}
  prometheus::Counter* callsReplied;     // the local service's reply relayed
  prometheus::Counter* callsOneway;      // a ONEWAY call forwarded
  prometheus::Counter* callsLocalError;  // answered with INTERNAL_ERROR: the local service failed
  prometheus::Counter* callsRefused;     // the caller's identity is not allowed
  // sidecar_thrift_frames_refused_total{reason}
  prometheus::Counter* framesTooLarge;
  prometheus::Counter* framesNotThrift;
  prometheus::Counter* framesMalformed;   // a CALL whose frame is not exactly one whole message
  prometheus::Counter* framesOverloaded;  // past --thrift-max-buffered on its worker
  prometheus::Counter* framesCutShort;
  // sidecar_thrift_probes_total
  prometheus::Counter* probes;
  // sidecar_thrift_ttwitter_calls_total{result}: calls on upgraded connections
  prometheus::Counter* ttwitterCalls;      // with a RequestHeader read and stripped
  prometheus::Counter* ttwitterMalformed;  // whose RequestHeader could not be read (closed)
  // sidecar_thrift_local_errors_total{reason}
  prometheus::Counter* localConnect;
  prometheus::Counter* localTimeout;
  prometheus::Counter* localBroken;
  // sidecar_thrift_handshakes_total{result}
  using HandshakeSeries = metrics::Series<HandshakeResult>;
  prometheus::Counter& handshake(std::optional<HandshakeFailure> failure) {
    return *handshakes[HandshakeSeries::index(handshakeResult(failure))];
  }
  std::array<prometheus::Counter*, HandshakeSeries::size> handshakes;
  // sidecar_thrift_connections_total
  prometheus::Counter* connections;
  // sidecar_thrift_method_*{method}: a collector of its own, scraped beside the registry.
  ThriftMethodMetrics methods;
  // sidecar_thrift_client_*{client_id}: a collector of its own too.
  ThriftClientMetrics clients;
};

}  // namespace sidecar
