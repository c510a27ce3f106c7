// Zipkin v2 JSON, written directly: the model is small and fixed, and the reporter thread writes
// thousands of spans a second at 100 % sampling.
#include "trace/zipkin_json.h"

#include <fmt/format.h>

#include <boost/asio/ip/address.hpp>

namespace sidecar::trace {

std::string hexId(std::uint64_t id) { return fmt::format("{:016x}", id); }

std::string hexTraceId(const Context& c) {
  return c.traceIdHigh ? fmt::format("{:016x}{:016x}", c.traceIdHigh, c.traceId) : hexId(c.traceId);
}

namespace {

void appendString(std::string& out, std::string_view s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += ch;  // UTF-8 passes as it is; a stray byte is the collector's to judge
        }
    }
  }
  out += '"';
}

void appendRemote(std::string& out, const Span& s) {
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(s.remoteIp, ec);
  if (ec) {
    return;
  }
  out += R"(,"remoteEndpoint":{)";
  out += ip.is_v4() ? R"("ipv4":)" : R"("ipv6":)";
  appendString(out, s.remoteIp);
  if (s.remotePort) {
    out += fmt::format(R"(,"port":{})", s.remotePort);
  }
  out += '}';
}

void appendSpan(std::string& out, const Span& s, std::string_view serviceName) {
  out += R"({"traceId":")";
  out += hexTraceId(s.context);
  out += R"(","id":")";
  out += hexId(s.context.spanId);
  out += '"';
  if (s.context.parentId) {
    out += R"(,"parentId":")";
    out += hexId(s.context.parentId);
    out += '"';
  }
  out += R"(,"kind":)";
  out += s.kind == Kind::server ? R"("SERVER")" : R"("CLIENT")";
  out += R"(,"name":)";
  appendString(out, s.name);
  // Zipkin reads a duration of 0 as "unknown": a span always lasted at least 1 µs.
  out += fmt::format(R"(,"timestamp":{},"duration":{})", s.timestampUs,
                     std::max<std::int64_t>(1, s.durationUs));
  out += R"(,"localEndpoint":{"serviceName":)";
  appendString(out, serviceName);
  out += '}';
  appendRemote(out, s);
  if (s.context.debug) {
    out += R"(,"debug":true)";
  }
  if (s.shared) {
    out += R"(,"shared":true)";
  }
  if (!s.tags.empty()) {
    out += R"(,"tags":{)";
    bool first = true;
    for (const auto& [k, v] : s.tags) {
      if (!first) {
        out += ',';
      }
      first = false;
      appendString(out, k);
      out += ':';
      appendString(out, v);
    }
    out += '}';
  }
  out += '}';
}

}  // namespace

std::string encodeSpans(const std::vector<Span>& spans, std::string_view serviceName) {
  std::string out = "[";
  out.reserve(spans.size() * 400);
  for (std::size_t i = 0; i < spans.size(); ++i) {
    if (i) {
      out += ',';
    }
    appendSpan(out, spans[i], serviceName);
  }
  out += ']';
  return out;
}

}  // namespace sidecar::trace
