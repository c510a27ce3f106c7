// B3 headers read and written. A value that is not what the specification allows (a wrong length,
// a non-hex digit, an all-zero id, a span id without a trace id) drops the whole context: half a
// context forwarded would join a trace that is not the caller's.
#include "trace/b3.h"

#include <array>
#include <string_view>

#include "trace/zipkin_json.h"

namespace sidecar::trace {

namespace http = boost::beast::http;

namespace {

constexpr std::string_view kTraceId = "X-B3-TraceId";
constexpr std::string_view kSpanId = "X-B3-SpanId";
constexpr std::string_view kParentSpanId = "X-B3-ParentSpanId";
constexpr std::string_view kSampled = "X-B3-Sampled";
constexpr std::string_view kFlags = "X-B3-Flags";
constexpr std::string_view kSingle = "b3";

// 1 to 16 hex digits of one id (either case); false on anything else or all zeros.
bool parseHex64(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 16) {
    return false;
  }
  std::uint64_t v = 0;
  for (const char c : s) {
    unsigned d;
    if (c >= '0' && c <= '9') {
      d = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<unsigned>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      d = static_cast<unsigned>(c - 'A' + 10);
    } else {
      return false;
    }
    v = (v << 4) | d;
  }
  out = v;
  return v != 0;
}

// A span id: exactly 16 digits.
bool parseSpanId(std::string_view s, std::uint64_t& out) {
  return s.size() == 16 && parseHex64(s, out);
}

// A trace id: 16 or 32 digits (the high half may be zero, not the whole).
bool parseTraceId(std::string_view s, Context& c) {
  if (s.size() == 16) {
    return parseHex64(s, c.traceId);
  }
  if (s.size() != 32) {
    return false;
  }
  std::uint64_t high = 0;
  const bool highOk = parseHex64(s.substr(0, 16), high) || s.substr(0, 16) == "0000000000000000";
  if (!highOk || !parseHex64(s.substr(16), c.traceId)) {
    return false;
  }
  c.traceIdHigh = high;
  return true;
}

// X-B3-Sampled: "1"/"0" (and the "true"/"false" of old tracers); the single form's "d" is debug.
bool parseSampled(std::string_view s, Context& c, bool single) {
  if (s == "1" || (!single && s == "true")) {
    c.sampled = true;
  } else if (s == "0" || (!single && s == "false")) {
    c.sampled = false;
  } else if (single && s == "d") {
    c.debug = true;
  } else {
    return false;
  }
  return true;
}

std::string_view value(const http::fields& f, std::string_view name, bool& present) {
  const auto it = f.find(name);
  if (it == f.end()) {
    return {};
  }
  present = true;
  return {it->value().data(), it->value().size()};
}

bool readSingle(std::string_view s, Context& c) {
  std::array<std::string_view, 4> parts{};
  std::size_t n = 0;
  while (n < parts.size()) {
    const auto dash = s.find('-');
    parts[n++] = s.substr(0, dash);
    if (dash == std::string_view::npos) {
      s = {};
      break;
    }
    s.remove_prefix(dash + 1);
  }
  if (!s.empty()) {
    return false;  // more than four parts
  }
  if (n == 1) {
    return parseSampled(parts[0], c, true);  // a sampling decision alone
  }
  if (!parseTraceId(parts[0], c) || !parseSpanId(parts[1], c.spanId)) {
    return false;
  }
  if (n >= 3 && !parseSampled(parts[2], c, true)) {
    return false;
  }
  return n < 4 || parseSpanId(parts[3], c.parentId);
}

bool readMulti(const http::fields& f, Context& c, bool& present) {
  const auto trace = value(f, kTraceId, present);
  const auto span = value(f, kSpanId, present);
  const auto parent = value(f, kParentSpanId, present);
  const auto sampled = value(f, kSampled, present);
  const auto flags = value(f, kFlags, present);
  if (!present) {
    return true;
  }
  if (!trace.empty() || !span.empty()) {
    if (!parseTraceId(trace, c) || !parseSpanId(span, c.spanId)) {
      return false;
    }
    if (!parent.empty() && !parseSpanId(parent, c.parentId)) {
      return false;
    }
  } else if (!parent.empty()) {
    return false;  // a parent of nothing
  }
  if (!sampled.empty() && !parseSampled(sampled, c, false)) {
    return false;
  }
  if (flags == "1") {
    c.debug = true;
  } else if (!flags.empty() && flags != "0") {
    return false;
  }
  return true;
}

}  // namespace

B3 readB3(const http::fields& fields) {
  B3 out;
  bool single = false;
  const auto b3 = value(fields, kSingle, single);
  bool ok;
  if (single) {
    out.present = true;
    ok = readSingle(b3, out.context);
  } else {
    ok = readMulti(fields, out.context, out.present);
  }
  if (!ok) {
    out.context = Context{};
    out.malformed = true;
  }
  return out;
}

void eraseB3(http::fields& fields) {
  for (const auto name : {kTraceId, kSpanId, kParentSpanId, kSampled, kFlags, kSingle}) {
    fields.erase(name);
  }
}

void writeB3(http::fields& fields, const Context& c) {
  if (c.valid()) {
    fields.set(kTraceId, hexTraceId(c));
    fields.set(kSpanId, hexId(c.spanId));
    if (c.parentId) {
      fields.set(kParentSpanId, hexId(c.parentId));
    }
  }
  if (c.debug) {
    fields.set(kFlags, "1");
  } else if (c.sampled) {
    fields.set(kSampled, *c.sampled ? "1" : "0");
  }
}

}  // namespace sidecar::trace
