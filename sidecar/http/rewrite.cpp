// Request head checks, hop-by-hop header removal and the X-Forwarded-* headers a sidecar adds.
#include "http/rewrite.h"

#include <array>
#include <cstring>
#include <string>
#include <vector>

namespace sidecar {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool iequals(std::string_view a, std::string_view b) { return boost::beast::iequals(a, b); }

bool allDigits(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

bool hexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// RFC 3986's unreserved and sub-delims: what a reg-name holds besides pct-encoded octets. A
// table: Host is checked on every request.
constexpr std::array<bool, 256> kRegNameChars = [] {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) {
    t[c] = t[c - 'a' + 'A'] = true;
  }
  for (int c = '0'; c <= '9'; ++c) {
    t[c] = true;
  }
  for (char c : std::string_view("-._~!$&'()*+,;=")) {
    t[static_cast<unsigned char>(c)] = true;
  }
  return t;
}();
bool regNameChar(char c) { return kRegNameChars[static_cast<unsigned char>(c)]; }

// RFC 9110 7.2: Host = uri-host [ ":" port ], uri-host being an IP-literal in brackets or a
// reg-name (an IPv4 address is one). Empty is refused too: an origin-form request names in Host
// the origin it wants, and the local service would otherwise see a Host the caller made up
// (`Host: u@evil`, `Host: a b`) that no URI could hold.
bool validHost(std::string_view v) {
  std::string_view host = v;
  std::string_view port;
  if (!v.empty() && v.front() == '[') {
    const auto close = v.find(']');
    if (close == std::string_view::npos || close == 1) {
      return false;
    }
    for (char c : v.substr(1, close - 1)) {  // IPv6address or IPvFuture
      if (!regNameChar(c) && c != ':') {
        return false;
      }
    }
    const auto rest = v.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') {
      return false;
    }
    port = rest.empty() ? rest : rest.substr(1);
  } else {
    const auto colon = v.find(':');
    if (colon != std::string_view::npos) {
      host = v.substr(0, colon);
      port = v.substr(colon + 1);
    }
    if (host.empty()) {
      return false;
    }
    for (std::size_t i = 0; i < host.size(); ++i) {
      if (host[i] == '%') {
        if (i + 2 >= host.size() || !hexDigit(host[i + 1]) || !hexDigit(host[i + 2])) {
          return false;
        }
        i += 2;
      } else if (!regNameChar(host[i])) {
        return false;
      }
    }
  }
  return port.size() <= 5 && (port.empty() || allDigits(port));
}

// http: or https: absolute-form -> origin form, with the authority as the only Host.
std::string_view absoluteToOrigin(http::request_header<>& head) {
  std::string_view target = head.target();
  std::size_t schemeLen = 0;
  if (target.size() > 7 && iequals(target.substr(0, 7), "http://")) {
    schemeLen = 7;
  } else if (target.size() > 8 && iequals(target.substr(0, 8), "https://")) {
    schemeLen = 8;
  } else {
    return "target is neither origin-form nor an http(s) absolute-form";
  }
  auto rest = target.substr(schemeLen);
  auto pathAt = rest.find_first_of("/?#");
  auto authority = rest.substr(0, pathAt);
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return "absolute-form target without a plain authority";
  }
  std::string host(authority);
  std::string path = "/";
  if (pathAt != std::string_view::npos) {
    auto tail = rest.substr(pathAt);
    if (tail.front() == '#') {
      return "fragment in target";
    }
    path.clear();
    if (tail.front() != '/') {  // "http://host?q" -> "/?q"
      path += '/';
    }
    path += tail;
  }
  head.target(path);
  head.set(http::field::host, host);
  return {};
}

}  // namespace

HeadScan scanHead(std::string_view bytes, std::size_t from) {
  // Every LF is looked at once: LF LF or LF CR LF ends the head, LF SP or LF HTAB is a fold.
  const char* data = bytes.data();
  std::size_t at = from;
  while (at < bytes.size()) {
    const void* lf = std::memchr(data + at, '\n', bytes.size() - at);
    if (!lf) {
      return {HeadScan::incomplete, bytes.size()};
    }
    std::size_t i = static_cast<const char*>(lf) - data;
    if (i + 1 >= bytes.size()) {
      return {HeadScan::incomplete, i};
    }
    char next = data[i + 1];
    if (next == '\n') {
      return {HeadScan::complete, i + 2};
    }
    if (next == '\r') {
      if (i + 2 >= bytes.size()) {
        return {HeadScan::incomplete, i};
      }
      if (data[i + 2] == '\n') {
        return {HeadScan::complete, i + 3};
      }
    }
    if (next == ' ' || next == '\t') {
      return {HeadScan::obsFold, i};
    }
    at = i + 1;
  }
  return {HeadScan::incomplete, at};
}

std::string_view checkRequestHead(http::request_header<>& head) {
  std::size_t hosts = 0, lengths = 0, codings = 0, expects = 0;
  std::string_view length, coding, host;
  for (const auto& f : head) {
    switch (f.name()) {
      case http::field::host:
        ++hosts;
        host = f.value();
        break;
      case http::field::content_length:
        ++lengths;
        length = f.value();
        break;
      case http::field::transfer_encoding:
        ++codings;
        coding = f.value();
        break;
      case http::field::expect:
        ++expects;
        break;
      default:
        break;
    }
  }
  if (lengths > 1 || (lengths == 1 && !allDigits(length))) {
    return "Content-Length repeated or not a plain number";
  }
  if (codings > 1 || (codings == 1 && !iequals(trim(coding), "chunked"))) {
    return "Transfer-Encoding other than exactly chunked";
  }
  if (codings && lengths) {
    return "both Content-Length and Transfer-Encoding";
  }
  if (codings && head.version() < 11) {
    return "Transfer-Encoding in HTTP/1.0";
  }
  if (expects > 1) {
    return "Expect repeated";  // only the first would be looked at, the second forwarded
  }
  if (hosts > 1 || (hosts == 0 && head.version() >= 11)) {
    return "Host missing or repeated";
  }
  if (hosts == 1 && !validHost(host)) {
    return "Host is not a valid host[:port]";
  }
  if (head.method() == http::verb::connect) {
    return "CONNECT is not proxied";
  }
  std::string_view target = head.target();
  if (target.empty()) {
    return "empty target";
  }
  if (target.front() == '/') {
    return {};
  }
  if (target == "*") {
    return head.method() == http::verb::options ? std::string_view{} : "asterisk-form not OPTIONS";
  }
  if (auto why = absoluteToOrigin(head); !why.empty()) {
    return why;
  }
  return validHost(head[http::field::host]) ? std::string_view{}
                                            : "absolute-form target's authority is not host[:port]";
}

std::size_t underscoreHeaders(http::fields& fields, bool erase) {
  std::size_t found = 0;
  for (auto it = fields.begin(); it != fields.end();) {
    // Every name Beast knows is spelled with '-' only: look at the others.
    if (it->name() == http::field::unknown &&
        it->name_string().find('_') != std::string_view::npos) {
      ++found;
      if (erase) {
        it = fields.erase(it);
        continue;
      }
    }
    ++it;
  }
  return found;
}

void eraseHopByHop(http::fields& fields) {
  // Headers the Connection header names are hop-by-hop too, unless they carry the framing we keep.
  // (fields::equal_range mixes set and list order, so walk the list.)
  std::vector<std::string> named;
  for (const auto& f : fields) {
    if (f.name() != http::field::connection) {
      continue;
    }
    std::string_view list = f.value();
    while (!list.empty()) {
      auto comma = list.find(',');
      auto token = trim(list.substr(0, comma));
      list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      if (token.empty() || iequals(token, "close") || iequals(token, "keep-alive") ||
          iequals(token, "transfer-encoding") || iequals(token, "content-length") ||
          iequals(token, "host") || iequals(token, "connection")) {
        continue;
      }
      named.emplace_back(token);
    }
  }
  for (const auto& name : named) {
    fields.erase(name);
  }
  // One walk over the list: most heads hold none of these, and a lookup per name cost more.
  for (auto it = fields.begin(); it != fields.end();) {
    switch (it->name()) {
      case http::field::connection:
      case http::field::keep_alive:
      case http::field::proxy_connection:
      case http::field::te:
      case http::field::trailer:
      case http::field::upgrade:
      case http::field::proxy_authenticate:
      case http::field::proxy_authorization:
        it = fields.erase(it);
        break;
      default:
        ++it;
    }
  }
}

void rewriteRequestHead(http::request_header<>& head, const ForwardContext& ctx) {
  eraseHopByHop(head);
  head.erase("X-Forwarded-Client-Cert");
  if (!ctx.xfcc.empty()) {
    head.set("X-Forwarded-Client-Cert", ctx.xfcc);
  }
  auto xff = head.find("X-Forwarded-For");
  if (xff == head.end()) {
    head.set("X-Forwarded-For", ctx.clientAddress);
  } else {
    std::string joined(xff->value());
    joined += ", ";
    joined += ctx.clientAddress;
    head.set("X-Forwarded-For", joined);
  }
  head.set("X-Forwarded-Proto", "https");
  // The upstream leg is always HTTP/1.1 keep-alive, whatever the caller spoke; HTTP/1.1 needs a
  // Host (found by the fuzzer: HTTP/1.0 without one went out as an invalid HTTP/1.1 request).
  if (head.version() < 11 && head.find(http::field::host) == head.end() &&
      !ctx.defaultHost.empty()) {
    head.set(http::field::host, ctx.defaultHost);
  }
  head.version(11);
}

void rewriteOutboundRequestHead(http::request_header<>& head) {
  eraseHopByHop(head);
  // The callee's sidecar sets its own from our certificate; one the local service wrote would be
  // a claim nobody verified.
  head.erase("X-Forwarded-Client-Cert");
  head.version(11);
}

namespace {

void appendVersion(std::string& out, unsigned version) {
  out += "HTTP/";
  out += static_cast<char>('0' + version / 10);
  out += '.';
  out += static_cast<char>('0' + version % 10);
}

// The bytes of the fields' lines and of the blank line after them: the head is reserved whole,
// not grown line by line.
std::size_t fieldsSize(const http::fields& fields) {
  std::size_t n = 2;
  for (const auto& f : fields) {
    n += f.name_string().size() + f.value().size() + 4;
  }
  return n;
}

void appendFields(std::string& out, const http::fields& fields) {
  for (const auto& f : fields) {
    out += f.name_string();
    out += ": ";
    out += f.value();
    out += "\r\n";
  }
  out += "\r\n";
}

}  // namespace

void appendHead(std::string& out, const http::request_header<>& head) {
  out.reserve(out.size() + head.method_string().size() + head.target().size() + 12 +
              fieldsSize(head));
  out += head.method_string();
  out += ' ';
  out += head.target();
  out += ' ';
  appendVersion(out, head.version());
  out += "\r\n";
  appendFields(out, head);
}

void appendHead(std::string& out, const http::response_header<>& head) {
  out.reserve(out.size() + 48 + head.reason().size() + fieldsSize(head));
  appendVersion(out, head.version());
  const unsigned code = head.result_int();
  out += ' ';
  out += static_cast<char>('0' + code / 100 % 10);
  out += static_cast<char>('0' + code / 10 % 10);
  out += static_cast<char>('0' + code % 10);
  out += ' ';
  const auto reason = head.reason();
  out += reason.empty() ? http::obsolete_reason(static_cast<http::status>(code)) : reason;
  out += "\r\n";
  appendFields(out, head);
}

void rewriteResponseHead(http::response_header<>& head, unsigned clientVersion, bool keepAlive) {
  eraseHopByHop(head);
  // Beast accepts a Content-Length repeated with the same value, or listed ("2, 2"); the caller
  // gets it once, so that no reader downstream has two to choose from.
  std::size_t lengths = 0;
  std::string_view length;
  bool listed = false;
  for (const auto& f : head) {
    if (f.name() == http::field::content_length) {
      ++lengths;
      length = f.value();
      listed = listed || length.find(',') != std::string_view::npos;
    }
  }
  if (lengths > 1 || listed) {
    head.set(http::field::content_length, std::string(trim(length.substr(0, length.find(',')))));
  }
  head.version(clientVersion);
  if (clientVersion == 10) {
    if (keepAlive) {
      head.set(http::field::connection, "keep-alive");
    }
  } else if (!keepAlive) {
    head.set(http::field::connection, "close");
  }
}

}  // namespace sidecar
