#pragma once
// The sidecar's side of Zipkin tracing: the sampling decision for traces that start here, and the
// spans of sampled calls, handed to a reporter thread that posts them to --zipkin-url in batches.
// A worker never waits for the reporter: a span is queued or, when the queue is full, dropped and
// counted. With no --zipkin-url there is no Tracer at all (a null pointer: one branch per call).

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "trace/context.h"

namespace sidecar::trace {

enum class Kind : std::uint8_t { server, client };

// One finished span, as Zipkin's v2 model has it. Made only for sampled calls.
struct Span {
  Context context;
  Kind kind = Kind::server;
  std::string name;              // lower case: the HTTP method, or the Thrift method
  std::int64_t timestampUs = 0;  // start, microseconds since the epoch
  std::int64_t durationUs = 0;
  std::string remoteIp;  // the caller (server span) or the member (client span)
  std::uint16_t remotePort = 0;
  bool shared = false;  // a server span that took the caller's span id (B3's shared span)
  std::vector<std::pair<std::string, std::string>> tags;
};

// A tag's value at most: a caller's 1 MiB path must not become a 1 MiB span in the queue.
inline constexpr std::size_t kMaxTagBytes = 256;
// value cut to kMaxTagBytes.
std::string tagValue(std::string_view value);

// A span's common part: named in lower case (at most 64 bytes), timed from startUs for
// durationUs (at least 1 µs: Zipkin reads 0 as unknown). Every protocol's spans start here.
Span makeSpan(Kind kind, const Context& context, std::string_view name, std::int64_t startUs,
              std::int64_t durationUs);

// An HTTP call's span: named by its method in lower case, tagged with the method, the path
// (without its query, which may hold secrets), the status, and error for a 5xx or no answer;
// every value at most kMaxTagBytes.
Span httpSpan(Kind kind, const Context& context, std::string_view method, std::string_view target,
              unsigned status, std::int64_t startUs, std::int64_t durationUs);

// Microseconds since the epoch, now.
inline std::int64_t nowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct TracerConfig {
  std::string zipkinUrl;                          // http://host:port/api/v2/spans
  double sampleRate = 0.001;                      // of the traces that start here
  std::string serviceName;                        // localEndpoint.serviceName
  std::size_t queueLimit = 10000;                 // spans waiting to be posted; more are dropped
  std::size_t batchSize = 100;                    // a post at this many spans, or
  std::chrono::milliseconds flushInterval{1000};  // after this long
  std::chrono::milliseconds postTimeout{2000};
};

struct TracerMetrics {
  explicit TracerMetrics(prometheus::Registry& registry);
  prometheus::Counter* spansReported;  // accepted by the collector
  prometheus::Counter* spansDroppedQueueFull;
  prometheus::Counter* spansDroppedPostFailed;
  prometheus::Counter* postFailures;
  prometheus::Counter* b3Malformed;  // B3 values dropped as malformed (trace/b3.h)
};

class Tracer {
 public:
  Tracer(TracerConfig config, TracerMetrics& metrics);
  // Posts what is queued (within postTimeout) and stops the reporter thread.
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Whether a trace that starts here is sampled (any thread).
  bool sampleNew() const;
  // The context of a call that came with in (maybe invalid: none came): the same trace with its
  // sampling decided (by in, else by the rate), or a new trace.
  Context join(const Context& in) const;
  // Queues a sampled span for the collector (any thread, never blocks on the network). Tag
  // values longer than kMaxTagBytes are cut here, whatever protocol made them.
  void report(Span span);
  TracerMetrics& metrics() { return metrics_; }
  const TracerConfig& config() const { return config_; }

 private:
  void run();
  bool post(std::vector<Span>& batch);  // false: it failed (counted)

  TracerConfig config_;
  TracerMetrics& metrics_;
  std::mutex mutex_;  // held for a push or a swap, never across the network
  std::condition_variable wake_;
  std::vector<Span> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace sidecar::trace
