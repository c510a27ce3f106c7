#pragma once
// Metrics plumbing shared by every binary: a prometheus-cpp registry with the standard process_*
// metrics, and its text exposition for our own admin servers.

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace metrics {

std::shared_ptr<prometheus::Registry> makeRegistry();

// Prometheus text format 0.0.4 of everything the sources hold, plus process_cpu_seconds_total,
// process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds, process_max_fds
// and process_start_time_seconds read from /proc at scrape time.
std::string serializeText(const std::vector<const prometheus::Collectable*>& sources);

// The process metrics alone (name -> value), for JSON views.
std::vector<prometheus::MetricFamily> processMetrics();

// Registering a family where its handles are kept: its name and help in one place, the handle
// resolved once. counter() and gauge() are families of one series without labels.
prometheus::Family<prometheus::Counter>& counterFamily(prometheus::Registry& registry,
                                                       const char* name, const char* help);
prometheus::Family<prometheus::Gauge>& gaugeFamily(prometheus::Registry& registry, const char* name,
                                                   const char* help);
prometheus::Counter& counter(prometheus::Registry& registry, const char* name, const char* help);
prometheus::Gauge& gauge(prometheus::Registry& registry, const char* name, const char* help);

// One series per value of one label, each handle kept where given: {{&handle, "value"}, ...}.
void addEach(prometheus::Family<prometheus::Counter>& family, const char* label,
             std::initializer_list<std::pair<prometheus::Counter**, const char*>> series);

// Families declared as a table of the members that keep their handles, {&Owner::member, name,
// help}: the family itself (to add labelled series to), or its one unlabelled series.
template <class Owner, class Handle>
struct Registered {
  Handle* Owner::*member;
  const char* name;
  const char* help;
};
template <class Owner, class Handle, std::size_t N>
void registerAll(prometheus::Registry& registry, Owner& owner,
                 const Registered<Owner, Handle> (&table)[N]) {
  for (const auto& m : table) {
    if constexpr (std::is_same_v<Handle, prometheus::Counter>) {
      owner.*m.member = &counter(registry, m.name, m.help);
    } else if constexpr (std::is_same_v<Handle, prometheus::Gauge>) {
      owner.*m.member = &gauge(registry, m.name, m.help);
    } else if constexpr (std::is_same_v<Handle, prometheus::Family<prometheus::Counter>>) {
      owner.*m.member = &counterFamily(registry, m.name, m.help);
    } else {
      static_assert(std::is_same_v<Handle, prometheus::Family<prometheus::Gauge>>);
      owner.*m.member = &gaugeFamily(registry, m.name, m.help);
    }
  }
}

inline constexpr const char* kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace metrics
