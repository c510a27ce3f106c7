#pragma once
// The admin interface's JSON views of the process: TwitterServer's /admin/metrics.json with
// Finagle's names, and /admin/server_info.

#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <string>

#include "core/metrics.h"
#include "thrift/metrics.h"

namespace sidecar {

// TwitterServer's flat /admin/metrics.json, with Finagle's names where one exists.
// extra adds what other parts name (the outbound routes' clnt/<route>/...).
std::string finagleMetricsJson(const ProxyMetrics& m, const AnnouncerMetrics& a, bool draining,
                               const std::function<void(boost::json::object&)>& extra = {});

// The Thrift listener's Finagle names: srv/thrift/<method>/requests, success (REPLY messages),
// failures (EXCEPTION replies, the local service's and ours), request_latency_ms.*, for each
// method with a series of its own and `other`; and their sums as srv/thrift/requests ...
void addThriftFinagleMetrics(boost::json::object& o, const ThriftMetrics& t);

// version, build, start_time and uptime (seconds).
std::string serverInfoJson(std::chrono::system_clock::time_point started);

}  // namespace sidecar
