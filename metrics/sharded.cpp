// Sums the per-worker shards when Prometheus or /admin/metrics.json asks.
#include "sharded.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace metrics {

namespace {

std::vector<prometheus::ClientMetric::Label> labelsOf(const Labels& labels) {
  std::vector<prometheus::ClientMetric::Label> out;
  for (const auto& [k, v] : labels) {
    out.push_back({k, v});
  }
  return out;
}

uint64_t load(const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); }

}  // namespace

ShardedCounter::ShardedCounter(std::string name, std::string help, std::vector<Labels> series,
                               unsigned shards, bool gauge)
    : name_(std::move(name)),
      help_(std::move(help)),
      series_(std::move(series)),
      shown_(series_.size(), true),
      gauge_(gauge) {
  for (unsigned i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<detail::Slots>(series_.size()));
  }
}

uint64_t ShardedCounter::value(std::size_t series) const {
  uint64_t sum = 0;
  for (const auto& s : shards_) {
    sum += load(s->values[series]);
  }
  return sum;
}

prometheus::MetricFamily ShardedCounter::collect() const {
  prometheus::MetricFamily f{
      name_, help_, gauge_ ? prometheus::MetricType::Gauge : prometheus::MetricType::Counter, {}};
  for (std::size_t i = 0; i < series_.size(); ++i) {
    if (!shown_[i]) {
      continue;
    }
    prometheus::ClientMetric m;
    m.label = labelsOf(series_[i]);
    if (gauge_) {
      m.gauge.value = static_cast<double>(static_cast<int64_t>(value(i)));
    } else {
      m.counter.value = static_cast<double>(value(i));
    }
    f.metric.push_back(std::move(m));
  }
  return f;
}

ShardedHistogram::ShardedHistogram(std::string name, std::string help, std::vector<double> bounds,
                                   std::vector<Labels> series, unsigned shards)
    : name_(std::move(name)),
      help_(std::move(help)),
      bounds_(std::move(bounds)),
      series_(std::move(series)),
      shown_(series_.size(), true) {
  for (unsigned i = 0; i < shards; ++i) {
    auto slots = std::make_unique<detail::Slots>(series_.size() * stride());
    for (std::size_t s = 0; s < series_.size(); ++s) {
      slots->values[s * stride() + bounds_.size() + 2].store(std::numeric_limits<uint64_t>::max());
    }
    shards_.push_back(std::move(slots));
  }
}

void ShardedHistogram::reset(std::size_t series) {
  const std::size_t base = series * stride();
  for (auto& shard : shards_) {
    for (std::size_t k = 0; k < stride(); ++k) {
      const bool min = k == bounds_.size() + 2;
      shard->values[base + k].store(min ? std::numeric_limits<uint64_t>::max() : 0,
                                    std::memory_order_relaxed);
    }
  }
}

void ShardedHistogram::observe(unsigned shard, std::size_t series, double seconds) {
  auto& slots = *shards_[shard];
  const std::size_t base = series * stride();
  const std::size_t bucket = static_cast<std::size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin());
  slots.add(base + bucket, 1);
  const auto ns = static_cast<uint64_t>(std::max(0.0, seconds) * 1e9);
  slots.add(base + bounds_.size() + 1, ns);
  auto& min = slots.values[base + bounds_.size() + 2];
  auto& max = slots.values[base + bounds_.size() + 3];
  if (ns < load(min)) {
    min.store(ns, std::memory_order_relaxed);
  }
  if (ns > load(max)) {
    max.store(ns, std::memory_order_relaxed);
  }
}

ShardedHistogram::Snapshot ShardedHistogram::snapshot(std::size_t series) const {
  Snapshot s;
  s.counts.assign(bounds_.size() + 1, 0);
  uint64_t sumNs = 0, minNs = std::numeric_limits<uint64_t>::max(), maxNs = 0;
  const std::size_t base = series * stride();
  for (const auto& shard : shards_) {
    for (std::size_t b = 0; b <= bounds_.size(); ++b) {
      s.counts[b] += load(shard->values[base + b]);
    }
    sumNs += load(shard->values[base + bounds_.size() + 1]);
    minNs = std::min(minNs, load(shard->values[base + bounds_.size() + 2]));
    maxNs = std::max(maxNs, load(shard->values[base + bounds_.size() + 3]));
  }
  for (auto c : s.counts) {
    s.count += c;
  }
  s.sum = static_cast<double>(sumNs) / 1e9;
  s.min = s.count ? static_cast<double>(minNs) / 1e9 : 0;
  s.max = s.count ? static_cast<double>(maxNs) / 1e9 : 0;
  return s;
}

double ShardedHistogram::Snapshot::quantile(const std::vector<double>& bounds, double q) const {
  if (count == 0) {
    return 0;
  }
  const double rank = q * static_cast<double>(count);
  double seen = 0;
  for (std::size_t b = 0; b < counts.size(); ++b) {
    if (counts[b] == 0) {
      continue;
    }
    if (seen + static_cast<double>(counts[b]) >= rank) {
      double lo = b == 0 ? 0 : bounds[b - 1];
      double hi = b < bounds.size() ? bounds[b] : max;
      lo = std::max(lo, min);
      hi = std::min(hi, max);
      double within = (rank - seen) / static_cast<double>(counts[b]);
      return lo + (hi - lo) * std::clamp(within, 0.0, 1.0);
    }
    seen += static_cast<double>(counts[b]);
  }
  return max;
}

prometheus::MetricFamily ShardedHistogram::collect() const {
  prometheus::MetricFamily f{name_, help_, prometheus::MetricType::Histogram, {}};
  for (std::size_t i = 0; i < series_.size(); ++i) {
    if (!shown_[i]) {
      continue;
    }
    auto s = snapshot(i);
    prometheus::ClientMetric m;
    m.label = labelsOf(series_[i]);
    m.histogram.sample_count = s.count;
    m.histogram.sample_sum = s.sum;
    uint64_t cumulative = 0;
    for (std::size_t b = 0; b <= bounds_.size(); ++b) {
      cumulative += s.counts[b];
      m.histogram.bucket.push_back(
          {cumulative, b < bounds_.size() ? bounds_[b] : std::numeric_limits<double>::infinity()});
    }
    f.metric.push_back(std::move(m));
  }
  return f;
}

std::vector<double> latencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

std::vector<prometheus::MetricFamily> ShardedCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  for (const auto* c : counters_) {
    out.push_back(c->collect());
  }
  for (const auto* h : histograms_) {
    out.push_back(h->collect());
  }
  return out;
}

}  // namespace metrics
