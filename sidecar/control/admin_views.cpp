// The admin interface's JSON views (see admin_views.h).
#include "control/admin_views.h"

#include <fmt/format.h>
#include <metrics/metrics.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <regex>
#include <utility>
#include <vector>

namespace sidecar {

using Clock = std::chrono::system_clock;

namespace {

// TwitterServer's stat of a histogram's series, in milliseconds: prefix.count, .sum, .min, .max,
// .avg, .p50 ... .p9999.
void addLatency(boost::json::object& o, const std::string& prefix,
                const metrics::ShardedHistogram& h, std::size_t series = 0) {
  auto s = h.snapshot(series);
  auto ms = [](double seconds) { return seconds * 1000.0; };
  o[prefix + ".count"] = s.count;
  o[prefix + ".sum"] = ms(s.sum);
  o[prefix + ".min"] = ms(s.min);
  o[prefix + ".max"] = ms(s.max);
  o[prefix + ".avg"] = s.count ? ms(s.sum) / static_cast<double>(s.count) : 0.0;
  for (auto [suffix, q] : {std::pair{".p50", 0.5},
                           {".p90", 0.9},
                           {".p95", 0.95},
                           {".p99", 0.99},
                           {".p9990", 0.999},
                           {".p9999", 0.9999}}) {
    o[prefix + suffix] = ms(s.quantile(h.bounds(), q));
  }
}

}  // namespace

// TwitterServer's flat /admin/metrics.json, with Finagle's names where one exists.
boost::json::object finagleMetrics(const InboundMetrics& m, const ControlMetrics& c,
                                   const AnnouncerMetrics& a, bool draining,
                                   const std::function<void(boost::json::object&)>& extra) {
  boost::json::object o;
  uint64_t requests = 0, failures = 0;
  InboundMetrics::RequestSeries::forEach([&](std::size_t series, std::size_t, auto cls) {
    const auto n = m.requests.value(series);
    requests += n;
    failures += cls == metrics::StatusClass::serverError ? n : 0;
  });
  o["srv/http/requests"] = requests;
  o["srv/http/success"] = requests - failures;
  o["srv/http/failures"] = failures;
  o["srv/http/pending"] = static_cast<int64_t>(m.pending.value(0));
  o["srv/http/connections"] = static_cast<int64_t>(m.connectionsOpen.value(0));
  o["srv/http/connects"] = m.connectionsTotal.value(0);
  o["srv/http/received_bytes"] = m.receivedBytes.value(0);
  o["srv/http/sent_bytes"] = m.sentBytes.value(0);
  o["srv/http/handshakes"] = m.handshakes.value(InboundMetrics::handshakeSeries(std::nullopt));
  uint64_t failedHandshakes = 0;
  for (std::size_t i = 0; i < kHandshakeFailures; ++i) {
    failedHandshakes +=
        m.handshakes.value(InboundMetrics::handshakeSeries(static_cast<HandshakeFailure>(i)));
  }
  o["srv/http/handshake_failures"] = failedHandshakes;
  addLatency(o, "srv/http/request_latency_ms", m.requestDuration);
  addLatency(o, "srv/http/handshake_latency_ms", m.handshakeDuration);
  addLatency(o, "clnt/local/request_latency_ms", m.upstreamDuration);
  o["clnt/local/connects"] = m.upstreamConnectsTotal->Value();
  o["clnt/local/connect_failures"] = m.upstreamConnectErrors->Value();
  o["clnt/local/timeouts"] = m.upstreamTimeouts->Value();
  o["clnt/local/stale_retries"] = m.upstreamStaleRetries->Value();
  o["clnt/local/pool_idle"] = m.upstreamPoolIdle->Value();
  o["tls/reloads"] = c.certReloadOk->Value();
  o["tls/reload_failures"] = c.certReloadFailed->Value();
  o["tls/certificate_expiry_seconds"] = c.certNotAfter->Value();
  o["announcer/announced"] = a.announced->Value();
  o["announcer/zk_connected"] = a.sessionConnected->Value();
  o["announcer/announcements"] = a.announcements->Value();
  o["announcer/withdrawals"] = a.withdrawals->Value();
  o["draining"] = draining ? 1 : 0;
  for (const auto& family : metrics::processMetrics()) {
    for (const auto& metric : family.metric) {
      o[family.name] = family.type == prometheus::MetricType::Counter ? metric.counter.value
                                                                      : metric.gauge.value;
    }
  }
  if (extra) {
    extra(o);
  }
  return o;
}

std::optional<std::string> renderMetricsJson(boost::json::object o, bool pretty,
                                             const std::optional<std::string>& filter) {
  std::optional<std::regex> match;
  if (filter) {
    if (filter->size() > 256) {
      return std::nullopt;
    }
    try {
      match.emplace(*filter, std::regex::ECMAScript | std::regex::optimize);
    } catch (const std::regex_error&) {
      return std::nullopt;
    }
  }
  std::vector<std::pair<std::string_view, boost::json::value*>> kept;
  kept.reserve(o.size());
  for (auto& kv : o) {
    if (match && !std::regex_match(kv.key().begin(), kv.key().end(), *match)) {
      continue;
    }
    auto& v = kv.value();
    // 2^53: every integer up to it is exact in a double, and a JSON reader's too.
    if (v.is_double() && std::isfinite(v.get_double()) &&
        std::trunc(v.get_double()) == v.get_double() &&
        std::fabs(v.get_double()) <= 9007199254740992.0) {
      v = static_cast<std::int64_t>(v.get_double());
    }
    kept.emplace_back(kv.key(), &v);
  }
  if (pretty) {
    std::sort(kept.begin(), kept.end());
  }
  std::string out = pretty ? "{\n" : "{";
  for (std::size_t i = 0; i < kept.size(); ++i) {
    out += pretty ? "  " : "";
    out += boost::json::serialize(boost::json::value(kept[i].first));
    out += pretty ? " : " : ":";
    const auto& v = *kept[i].second;
    if (v.is_double()) {  // shortest exact form, as Jackson writes it (Boost.JSON: 1.5E0)
      out += std::isfinite(v.get_double()) ? fmt::format("{}", v.get_double()) : "null";
    } else {
      out += boost::json::serialize(v);
    }
    out += i + 1 < kept.size() ? (pretty ? ",\n" : ",") : (pretty ? "\n" : "");
  }
  out += "}\n";
  return out;
}

void addThriftFinagleMetrics(boost::json::object& o, const ThriftMetrics& t) {
  const auto& m = t.methods;
  uint64_t requests = 0, success = 0, failures = 0;
  for (const auto& [slot, name] : m.named()) {
    const std::string prefix = "srv/thrift/" + name + "/";
    const auto calls = m.calls.value(slot);
    const auto replies = m.replies.value(slot);
    const auto exceptions = m.exceptions.value(ThriftMethodMetrics::exceptionSeries(
                                slot, ThriftMethodMetrics::fromService)) +
                            m.exceptions.value(ThriftMethodMetrics::exceptionSeries(
                                slot, ThriftMethodMetrics::fromSidecar));
    o[prefix + "requests"] = calls;
    o[prefix + "success"] = replies;
    o[prefix + "failures"] = exceptions;
    addLatency(o, prefix + "request_latency_ms", m.duration, slot);
    requests += calls;
    success += replies;
    failures += exceptions;
  }
  o["srv/thrift/requests"] = requests;
  o["srv/thrift/success"] = success;
  o["srv/thrift/failures"] = failures;
  o["srv/thrift/connects"] = t.connections->Value();
}

std::string serverInfoJson(Clock::time_point started) {
  const auto uptime = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  const std::time_t t = Clock::to_time_t(started);
  std::tm utc{};
  ::gmtime_r(&t, &utc);
  char when[64];
  std::strftime(when, sizeof when, "%a %b %d %H:%M:%S UTC %Y", &utc);
  boost::json::value v = {{"name", "sidecar"},
                          {"version", SIDECAR_VERSION},
                          {"build", SIDECAR_BUILD},
                          {"start_time", when},
                          {"uptime", uptime.count()}};
  return boost::json::serialize(v) + "\n";
}

}  // namespace sidecar
