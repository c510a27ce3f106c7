#pragma once
// Zipkin's B3 propagation in HTTP headers: the multi-header form (X-B3-TraceId, X-B3-SpanId,
// X-B3-ParentSpanId, X-B3-Sampled, X-B3-Flags) and the single `b3` header
// ({TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]], or the sampling state alone).
// Read leniently as to case, written in the multi-header form every B3 tracer reads (Finagle
// reads no other), lower-case hex.

#include <boost/beast/http/fields.hpp>

#include "trace/context.h"

namespace sidecar::trace {

struct B3 {
  Context context;         // valid() when ids came; sampled/debug may come without ids
  bool present = false;    // any B3 field was there
  bool malformed = false;  // one was, and could not be read: the whole context is dropped
};

// The B3 context of a head (the single header wins when both forms are there, as the B3
// specification says).
B3 readB3(const boost::beast::http::fields& fields);
// Removes every B3 field, both forms.
void eraseB3(boost::beast::http::fields& fields);
// Sets the multi-header form for c (its sampling decision, if any; X-B3-Flags: 1 when debug).
void writeB3(boost::beast::http::fields& fields, const Context& c);

}  // namespace sidecar::trace
