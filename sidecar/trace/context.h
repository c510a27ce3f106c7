#pragma once
// A call's place in a Zipkin trace, whatever carried it in: B3 headers in HTTP (trace/b3.h) or the
// RequestHeader of Finagle's TTwitter protocol in Thrift. Plain data: ids are 64-bit, a trace id
// may have 64 more high bits (128-bit ids); zero means "none" for every id, as on both wires.

#include <cstdint>
#include <optional>
#include <random>

namespace sidecar::trace {

struct Context {
  std::uint64_t traceIdHigh = 0;  // the upper 64 bits of a 128-bit trace id, or 0
  std::uint64_t traceId = 0;
  std::uint64_t spanId = 0;
  std::uint64_t parentId = 0;   // 0: a root span
  std::optional<bool> sampled;  // none: the receiver decides
  bool debug = false;           // X-B3-Flags: 1 / TTwitter flags bit 0: always sampled

  bool valid() const { return traceId != 0 && spanId != 0; }
  bool isSampled() const { return debug || sampled.value_or(false); }
};

// Random non-zero ids, one generator per thread (workers never share one).
inline std::uint64_t newId() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  for (;;) {
    if (const auto id = gen()) {
      return id;
    }
  }
}

// A new span under parent (same trace, same sampling decision).
inline Context childOf(const Context& parent) {
  Context c = parent;
  c.parentId = parent.spanId;
  c.spanId = newId();
  return c;
}

// A new trace's root span, sampled as decided.
inline Context newTrace(bool sampled) {
  Context c;
  c.traceId = newId();
  c.spanId = c.traceId;
  c.sampled = sampled;
  return c;
}

}  // namespace sidecar::trace
