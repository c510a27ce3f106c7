// Hop-by-hop header removal and the X-Forwarded-* headers a sidecar adds.
#include "rewrite.h"

#include <array>
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

}  // namespace

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
  static constexpr std::array hopByHop{http::field::connection,          http::field::keep_alive,
                                       http::field::proxy_connection,    http::field::te,
                                       http::field::trailer,             http::field::upgrade,
                                       http::field::proxy_authenticate,  http::field::proxy_authorization};
  for (auto f : hopByHop) {
    fields.erase(f);
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
  // The upstream leg is always HTTP/1.1 keep-alive, whatever the caller spoke.
  head.version(11);
}

void rewriteResponseHead(http::response_header<>& head, unsigned clientVersion, bool keepAlive) {
  eraseHopByHop(head);
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
