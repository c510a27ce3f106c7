#pragma once
// The admin interface's JSON views of the process: TwitterServer's /admin/metrics.json with
// Finagle's names, and /admin/server_info.

#include <chrono>
#include <string>

#include "core/metrics.h"

namespace sidecar {

// TwitterServer's flat /admin/metrics.json, with Finagle's names where one exists.
std::string finagleMetricsJson(const ProxyMetrics& m, const AnnouncerMetrics& a, bool draining);

// version, build, start_time and uptime (seconds).
std::string serverInfoJson(std::chrono::system_clock::time_point started);

}  // namespace sidecar
