#pragma once
// The admin interface's JSON views of the process: TwitterServer's /admin/metrics.json with
// Finagle's names, and /admin/server_info.

#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "control/metrics.h"
#include "inbound/metrics.h"
#include "thrift/metrics.h"

namespace sidecar {

// TwitterServer's flat /admin/metrics.json, with Finagle's names where one exists.
// extra adds what other parts name (the outbound routes' clnt/<route>/...).
boost::json::object finagleMetrics(const InboundMetrics& m, const ControlMetrics& c,
                                   const AnnouncerMetrics& a, bool draining,
                                   const std::function<void(boost::json::object&)>& extra = {});

// The object as TwitterServer writes it: integral values as integers (counters are doubles in
// prometheus-cpp, which Boost.JSON would write as 1E0), only the names filter matches whole
// (ECMAScript), and with pretty, sorted by name and indented. None when filter is not a regex
// (or longer than 256 bytes).
std::optional<std::string> renderMetricsJson(boost::json::object o, bool pretty,
                                             const std::optional<std::string>& filter);

// The Thrift listener's Finagle names: srv/thrift/<method>/requests, success (REPLY messages),
// failures (EXCEPTION replies, the local service's and ours), request_latency_ms.*, for each
// method with a series of its own and `other`; and their sums as srv/thrift/requests ...
void addThriftFinagleMetrics(boost::json::object& o, const ThriftMetrics& t);

// TwitterServer's server_info: name, version, build, start_time as Java's Date.toString writes it
// ("Fri Dec 04 18:15:07 UTC 2026") and uptime in milliseconds.
std::string serverInfoJson(std::chrono::system_clock::time_point started);

}  // namespace sidecar
