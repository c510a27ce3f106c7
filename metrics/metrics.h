#pragma once
// Metrics plumbing shared by every binary: a prometheus-cpp registry with the standard process_*
// metrics, and its text exposition for our own admin servers.

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <vector>

namespace metrics {

std::shared_ptr<prometheus::Registry> makeRegistry();

// Prometheus text format 0.0.4 of everything the sources hold, plus process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds, process_max_fds
// and process_start_time_seconds read from /proc at scrape time.
std::string serializeText(const std::vector<const prometheus::Collectable*>& sources);

// The process metrics alone (name -> value), for JSON views.
std::vector<prometheus::MetricFamily> processMetrics();

inline constexpr const char* kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace metrics
