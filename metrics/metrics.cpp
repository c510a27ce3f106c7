// The registry every binary starts from, and the process_* collector that Prometheus clients
// expect.
#include "metrics.h"

#include <dirent.h>
#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>

namespace metrics {

namespace {

prometheus::MetricFamily gaugeFamily(std::string name, std::string help, double value,
                                     prometheus::MetricType type = prometheus::MetricType::Gauge) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

// Reads /proc at scrape time only; nothing on the request path.
// Taken while static objects are built, before main().
const double kProcessStart =
    std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    std::ifstream stat("/proc/self/stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the command name, which is in parentheses and may hold spaces.
    auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::vector<std::string> f{std::istream_iterator<std::string>(rest), {}};
      // f[0] is field 3 (state); utime=14, stime=15, vsize=23, rss=24 (1-based in proc(5)).
      if (f.size() > 21) {
        double cpu = (std::stod(f[11]) + std::stod(f[12])) / tick;
        out.push_back(gaugeFamily("process_cpu_seconds_total",
                                  "Total user and system CPU time spent in seconds.", cpu,
                                  prometheus::MetricType::Counter));
        out.push_back(gaugeFamily("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                                  std::stod(f[20])));
        out.push_back(gaugeFamily("process_resident_memory_bytes", "Resident memory size in bytes.",
                                  std::stod(f[21]) * page));
      }
    }
    double fds = 0;
    if (DIR* d = opendir("/proc/self/fd")) {
      while (readdir(d)) {
        ++fds;
      }
      closedir(d);
      fds -= 3;  // ".", ".." and the directory's own descriptor
    }
    out.push_back(gaugeFamily("process_open_fds", "Number of open file descriptors.", fds));
    rlimit lim{};
    getrlimit(RLIMIT_NOFILE, &lim);
    out.push_back(gaugeFamily("process_max_fds", "Maximum number of open file descriptors.",
                              static_cast<double>(lim.rlim_cur)));
    out.push_back(gaugeFamily("process_start_time_seconds",
                              "Start time of the process since unix epoch in seconds.",
                              kProcessStart));
    return out;
  }
};

}  // namespace

std::shared_ptr<prometheus::Registry> makeRegistry() {
  return std::make_shared<prometheus::Registry>();
}

std::vector<prometheus::MetricFamily> processMetrics() { return ProcessCollector().Collect(); }

std::string serializeText(const std::vector<const prometheus::Collectable*>& sources) {
  std::vector<prometheus::MetricFamily> families;
  for (const auto* source : sources) {
    auto more = source->Collect();
    families.insert(families.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
  }
  auto process = processMetrics();
  families.insert(families.end(), std::make_move_iterator(process.begin()),
                  std::make_move_iterator(process.end()));
  return prometheus::TextSerializer().Serialize(families);
}

prometheus::Family<prometheus::Counter>& counterFamily(prometheus::Registry& registry,
                                                       const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry);
}

prometheus::Family<prometheus::Gauge>& gaugeFamily(prometheus::Registry& registry, const char* name,
                                                   const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

prometheus::Counter& counter(prometheus::Registry& registry, const char* name, const char* help) {
  return counterFamily(registry, name, help).Add({});
}

prometheus::Gauge& gauge(prometheus::Registry& registry, const char* name, const char* help) {
  return gaugeFamily(registry, name, help).Add({});
}

void addEach(prometheus::Family<prometheus::Counter>& family, const char* label,
             std::initializer_list<std::pair<prometheus::Counter**, const char*>> series) {
  for (const auto& [handle, value] : series) {
    *handle = &family.Add({{label, value}});
  }
}

}  // namespace metrics
