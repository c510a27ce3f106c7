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

// The length of the valid UTF-8 sequence at s[i], or 0 (a stray byte, an overlong form, a
// surrogate, a sequence cut short: JSON must be UTF-8, and one bad byte would lose a batch).
std::size_t utf8Sequence(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n;
  unsigned cp;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) {
    return 0;
  }
  for (std::size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  const bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
  if (overlong || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
    return 0;
  }
  return n;
}

void appendString(std::string& out, std::string_view s) {
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x80) {
      if (const auto n = utf8Sequence(s, i)) {
        out.append(s.substr(i, n));
        i += n - 1;
      } else {
        out += "\ufffd";  // the replacement character for a byte that is not UTF-8
      }
      continue;
    }
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
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += ch;
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
