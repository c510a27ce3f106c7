#pragma once
// The TwitterServer-style admin interface: routes as a pure function of the request and hooks.

#include <boost/json/object.hpp>
#include <functional>
#include <optional>
#include <string>

#include "http/plain_server.h"

namespace sidecar {

struct AdminHooks {
  std::function<bool()> ready;
  std::function<bool()> draining;
  std::function<void(std::optional<Duration> grace)> quit;
  std::function<void()> abort;
  std::function<std::string()> metricsText;
  std::function<boost::json::object()> metricsJson;  // rendered by renderMetricsJson
  std::function<std::string()> serverInfoJson;
  std::function<std::string()> announcerJson;
  std::function<std::string()> clientsJson;  // the outbound routes (none: an empty list)
};

PlainResponse handleAdminRequest(const PlainRequest& req, const AdminHooks& hooks);

}  // namespace sidecar
