#pragma once
// Counters and histograms for the request path: every worker writes its own shard (no lock, no
// shared cache line, no read-modify-write), a scrape sums the shards. Label values are fixed at
// start-up, so a series is an index resolved once, never a lookup per request.

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace metrics {

using Labels = std::map<std::string, std::string>;

namespace detail {
// One writer thread per shard: a relaxed load and store is enough, and cheaper than fetch_add.
struct alignas(64) Slots {
  explicit Slots(std::size_t n) : values(n) {}
  std::vector<std::atomic<uint64_t>> values;
  void add(std::size_t i, uint64_t n) {
    values[i].store(values[i].load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};
}  // namespace detail

class ShardedCounter {
 public:
  ShardedCounter(std::string name, std::string help, std::vector<Labels> series, unsigned shards,
                 bool gauge = false);
  // Only the thread that owns the shard may write it.
  void add(unsigned shard, std::size_t series, uint64_t n = 1) { shards_[shard]->add(series, n); }
  // Gauges: the writer may go down too (stored as two's complement; the sum is what counts).
  void sub(unsigned shard, std::size_t series, uint64_t n = 1) { shards_[shard]->add(series, -n); }
  uint64_t value(std::size_t series) const;
  prometheus::MetricFamily collect() const;
  // Series whose labels are known only later (a route created on first use): hidden from
  // scrapes until setLabels. Both on the thread that scrapes, never on the request path.
  void hideAll() { shown_.assign(series_.size(), false); }
  void setLabels(std::size_t series, Labels labels) {
    series_[series] = std::move(labels);
    shown_[series] = true;
  }
  // A series whose owner is gone (an expired route): hidden, and zero when it is given to the
  // next one. Control thread; a writer still holding the old owner (a call in flight) may add to
  // it meanwhile, which is counted under the next owner.
  void hide(std::size_t series) { shown_[series] = false; }
  void reset(std::size_t series) {
    for (auto& shard : shards_) {
      shard->values[series].store(0, std::memory_order_relaxed);
    }
  }

 private:
  std::string name_, help_;
  std::vector<Labels> series_;
  std::vector<bool> shown_;
  bool gauge_;
  std::vector<std::unique_ptr<detail::Slots>> shards_;
};

class ShardedHistogram {
 public:
  // bounds: upper bounds in seconds, ascending; a +Inf bucket is added.
  ShardedHistogram(std::string name, std::string help, std::vector<double> bounds,
                   std::vector<Labels> series, unsigned shards);
  void observe(unsigned shard, std::size_t series, double seconds);

  struct Snapshot {
    std::vector<uint64_t> counts;  // per bucket, not cumulative; last is +Inf
    uint64_t count = 0;
    double sum = 0;           // seconds
    double min = 0, max = 0;  // seconds; 0 when empty
    // Estimated by linear interpolation inside the bucket that holds the quantile.
    double quantile(const std::vector<double>& bounds, double q) const;
  };
  Snapshot snapshot(std::size_t series) const;
  const std::vector<double>& bounds() const { return bounds_; }
  prometheus::MetricFamily collect() const;
  // As ShardedCounter's.
  void hideAll() { shown_.assign(series_.size(), false); }
  void setLabels(std::size_t series, Labels labels) {
    series_[series] = std::move(labels);
    shown_[series] = true;
  }
  // As ShardedCounter's.
  void hide(std::size_t series) { shown_[series] = false; }
  void reset(std::size_t series);

 private:
  std::size_t stride() const { return bounds_.size() + 4; }  // buckets, +Inf, sum(ns), min, max
  std::string name_, help_;
  std::vector<double> bounds_;
  std::vector<Labels> series_;
  std::vector<bool> shown_;
  std::vector<std::unique_ptr<detail::Slots>> shards_;
};

// Latency buckets from 100 µs to 10 s.
std::vector<double> latencyBuckets();

// Exposes sharded metrics through a prometheus::Registry-compatible collector.
class ShardedCollector final : public prometheus::Collectable {
 public:
  void add(const ShardedCounter* c) { counters_.push_back(c); }
  void add(const ShardedHistogram* h) { histograms_.push_back(h); }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::vector<const ShardedCounter*> counters_;
  std::vector<const ShardedHistogram*> histograms_;
};

}  // namespace metrics
