// Admin routes: /admin/ping, /health, /ready, /metrics, /admin/server_info, /quitquitquit,
// /abortabortabort.
#include "control/admin.h"

#include <metrics/metrics.h>

#include "control/admin_views.h"

namespace sidecar {

namespace {

std::string_view pathOf(std::string_view target) { return target.substr(0, target.find('?')); }

std::optional<std::string_view> queryParam(std::string_view target, std::string_view name) {
  auto q = target.find('?');
  if (q == std::string_view::npos) {
    return std::nullopt;
  }
  auto rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    auto pair = rest.substr(0, amp);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) == name && eq != std::string_view::npos) {
      return pair.substr(eq + 1);
    }
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
  }
  return std::nullopt;
}

// A query value as written in a URL: %XX and '+' decoded (a filter's regex is full of both).
std::string percentDecode(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size() && hex(v[i + 1]) >= 0 && hex(v[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(v[i + 1]) * 16 + hex(v[i + 2])));
      i += 2;
    } else {
      out.push_back(v[i] == '+' ? ' ' : v[i]);
    }
  }
  return out;
}

PlainResponse methodNotAllowed(const PlainRequest& req, const char* allow) {
  auto res = textResponse(req, http::status::method_not_allowed, "method not allowed\n");
  res.set(http::field::allow, allow);
  return res;
}

}  // namespace

PlainResponse handleAdminRequest(const PlainRequest& req, const AdminHooks& hooks) {
  const auto path = pathOf(req.target());
  const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
  if (path == "/quitquitquit" || path == "/abortabortabort") {
    if (req.method() != http::verb::post) {
      return methodNotAllowed(req, "POST");
    }
    if (path == "/abortabortabort") {
      hooks.abort();
      return textResponse(req, http::status::ok, "aborting\n");
    }
    std::optional<Duration> grace;
    if (auto g = queryParam(req.target(), "grace")) {
      grace = parseDuration(*g);
      if (!grace) {
        return textResponse(req, http::status::bad_request,
                            "grace: not a duration (use e.g. 500ms, 5s, 1m)\n");
      }
    }
    hooks.quit(grace);
    return textResponse(req, http::status::ok, "quitting\n");
  }
  if (!get) {
    return methodNotAllowed(req, "GET, HEAD");
  }
  if (path == "/admin/ping") {
    return textResponse(req, http::status::ok, "pong");
  }
  if (path == "/health") {
    return hooks.draining() ? textResponse(req, http::status::service_unavailable, "draining\n")
                            : textResponse(req, http::status::ok, "OK\n");
  }
  if (path == "/ready") {
    return hooks.ready() ? textResponse(req, http::status::ok, "ready\n")
                         : textResponse(req, http::status::service_unavailable, "not ready\n");
  }
  if (path == "/metrics") {
    return textResponse(req, http::status::ok, hooks.metricsText(), metrics::kTextContentType);
  }
  if (path == "/admin/metrics.json") {
    // TwitterServer's parameters: pretty=true (sorted, indented) and filter=REGEX (the names
    // that match it whole).
    const auto pretty = queryParam(req.target(), "pretty");
    const auto filter = queryParam(req.target(), "filter");
    auto body = renderMetricsJson(
        hooks.metricsJson(), pretty && (*pretty == "true" || *pretty == "1"),
        filter ? std::optional<std::string>(percentDecode(*filter)) : std::nullopt);
    if (!body) {
      return textResponse(req, http::status::bad_request,
                          "filter: not a regular expression (ECMAScript, at most 256 bytes)\n");
    }
    return textResponse(req, http::status::ok, *body, "application/json");
  }
  if (path == "/admin/announcer") {
    return textResponse(req, http::status::ok, hooks.announcerJson(), "application/json");
  }
  if (path == "/admin/clients") {
    return textResponse(req, http::status::ok,
                        hooks.clientsJson ? hooks.clientsJson() : "{\"clients\":[]}\n",
                        "application/json");
  }
  if (path == "/admin/server_info") {
    return textResponse(req, http::status::ok, hooks.serverInfoJson(), "application/json");
  }
  return textResponse(req, http::status::not_found, "not found\n");
}

}  // namespace sidecar
