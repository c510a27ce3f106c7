#pragma once
// The admin interface's JSON views of the process: TwitterServer's /admin/metrics.json with
// Finagle's names, and /admin/server_info.

#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <string>

#include "core/metrics.h"

namespace sidecar {

// TwitterServer's flat /admin/metrics.json, with Finagle's names where one exists.
// extra adds what other parts name (the outbound routes' clnt/<route>/...).
std::string finagleMetricsJson(const ProxyMetrics& m, const AnnouncerMetrics& a, bool draining,
                               const std::function<void(boost::json::object&)>& extra = {});

// version, build, start_time and uptime (seconds).
std::string serverInfoJson(std::chrono::system_clock::time_point started);

}  // namespace sidecar
