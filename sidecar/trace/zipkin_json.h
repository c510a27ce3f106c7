#pragma once
// Spans as Zipkin's v2 JSON (the body of POST /api/v2/spans): ids in lower-case hex (a 128-bit
// trace id as 32 digits), timestamps and durations in microseconds, endpoints and tags.

#include <string>
#include <string_view>
#include <vector>

#include "trace/tracer.h"

namespace sidecar::trace {

// The id as 16 lower-case hex digits.
std::string hexId(std::uint64_t id);
// The trace id as 16 digits, or 32 with its high half.
std::string hexTraceId(const Context& c);
// A JSON array of the spans, each with localEndpoint.serviceName = serviceName.
std::string encodeSpans(const std::vector<Span>& spans, std::string_view serviceName);

}  // namespace sidecar::trace
