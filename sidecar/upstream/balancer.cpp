// Power of two choices over peak EWMA, with failure accrual and panic mode.
#include "upstream/balancer.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <string_view>
#include <utility>

namespace sidecar {

namespace {

// Finagle's PeakEwma penalty (Long.MaxValue >> 16 ns, about 39 hours): the cost of a member
// with no latency yet while a request to it is pending, so that it gets one request at a time
// until its first answer says how fast it is.
constexpr double kPenalty = static_cast<double>(std::numeric_limits<std::int64_t>::max() >> 16);

constexpr double kNanosPerMs = 1e6;

}  // namespace

void PeakEwmaLoad::observe(SteadyTime now, double rttNanos) {
  stamp_ = std::max(stamp_, now);
  // Peak-sensitive: a sample above the average replaces it at once.
  if (rttNanos > ewma_.last()) {
    ewma_.reset();
  }
  ewma_.update(stamp_, rttNanos);
}

double PeakEwmaLoad::cost(double ewmaNanos) const {
  if (ewmaNanos == 0.0 && pending_ != 0) {
    return kPenalty + pending_;
  }
  return ewmaNanos * (pending_ + 1);
}

double PeakEwmaLoad::load(SteadyTime now) {
  observe(now, 0.0);
  return cost(ewma_.last());
}

double PeakEwmaLoad::ewmaNanos(SteadyTime now) const {
  return ewma_.decayedTo(std::max(stamp_, now));
}

double PeakEwmaLoad::peek(SteadyTime now) const { return cost(ewmaNanos(now)); }

void PeakEwmaLoad::end(SteadyTime now, std::chrono::nanoseconds rtt) {
  if (pending_ > 0) {
    --pending_;
  }
  observe(now, static_cast<double>(std::max<std::int64_t>(rtt.count(), 0)));
}

void PeakEwmaLoad::seed(SteadyTime now, double ewmaNanos) {
  stamp_ = std::max(stamp_, now);
  ewma_.reset();
  ewma_.update(stamp_, ewmaNanos);
}

P2cPeakEwma::P2cPeakEwma(std::uint64_t seed, BalancerSettings settings)
    : settings_(settings), rng_(seed) {}

P2cPeakEwma::Member* P2cPeakEwma::find(const tcp::endpoint& e) {
  return const_cast<Member*>(std::as_const(*this).find(e));
}

const P2cPeakEwma::Member* P2cPeakEwma::find(const tcp::endpoint& e) const {
  if (members_.size() > kScanLimit) {
    const auto it = index_.find(e);
    return it == index_.end() ? nullptr : &members_[it->second];
  }
  for (const auto& m : members_) {
    if (m.endpoint == e) {
      return &m;
    }
  }
  return nullptr;
}

void P2cPeakEwma::update(const std::vector<tcp::endpoint>& endpoints, SteadyTime now) {
  // The new set's positions by endpoint; two serverset nodes for one address are one member.
  Index next;
  next.reserve(endpoints.size());
  std::vector<tcp::endpoint> order;
  order.reserve(endpoints.size());
  for (const auto& e : endpoints) {
    if (next.emplace(e, order.size()).second) {
      order.push_back(e);
    }
  }
  // What a new member is compared against: the kept members that have a latency. With none,
  // it starts as Finagle's do (no history: free while idle, the penalty while busy).
  double sum = 0;
  std::size_t known = 0;
  for (const auto& m : members_) {
    const double ewma = m.load.ewmaNanos(now);
    if (ewma > 0 && next.contains(m.endpoint)) {
      sum += ewma;
      ++known;
    }
  }
  std::vector<Member> kept;
  kept.reserve(order.size());
  for (const auto& e : order) {
    if (Member* old = find(e)) {
      kept.push_back(std::move(*old));
      continue;
    }
    kept.push_back(
        Member{e, PeakEwmaLoad(settings_.decay, now), FailureAccrual(settings_.accrual, now)});
    if (known > 0) {
      kept.back().load.seed(now, sum / static_cast<double>(known));
    }
  }
  members_ = std::move(kept);
  out_ = static_cast<std::size_t>(
      std::count_if(members_.begin(), members_.end(),
                    [&](const Member& m) { return m.accrual.state(now) != AccrualState::alive; }));
  if (members_.size() > kScanLimit) {
    index_ = std::move(next);
  } else {
    index_.clear();
  }
}

double P2cPeakEwma::meanEwma(SteadyTime now, std::size_t most) const {
  const std::size_t n = members_.size();
  const std::size_t step = most == 0 || n <= most ? 1 : n / most;
  double sum = 0;
  std::size_t known = 0;
  for (std::size_t i = 0; i < n; i += step) {
    const double ewma = members_[i].load.ewmaNanos(now);
    if (ewma > 0) {
      sum += ewma;
      ++known;
    }
  }
  return known > 0 ? sum / static_cast<double>(known) : 0.0;
}

void P2cPeakEwma::apply(std::span<const tcp::endpoint> added,
                        std::span<const tcp::endpoint> removed, SteadyTime now) {
  bool indexed = members_.size() > kScanLimit;  // index_ holds every member's position
  for (const auto& e : removed) {
    Member* m = find(e);
    if (m == nullptr) {
      continue;
    }
    if (m->accrual.state(now) != AccrualState::alive && out_ > 0) {
      --out_;
    }
    // The last member takes its place: the order of the array means nothing to a pick.
    const auto at = static_cast<std::size_t>(m - members_.data());
    if (indexed) {
      index_.erase(e);
    }
    if (at + 1 != members_.size()) {
      members_[at] = std::move(members_.back());
      if (indexed) {
        index_[members_[at].endpoint] = at;
      }
    }
    members_.pop_back();
  }
  if (!indexed && members_.size() + added.size() > kScanLimit) {
    // Crossing the scan limit upwards: the index first, so that finds above it work.
    index_.clear();
    index_.reserve(members_.size() + added.size());
    for (std::size_t i = 0; i < members_.size(); ++i) {
      index_.emplace(members_[i].endpoint, i);
    }
    indexed = true;
  }
  // New members start where the kept ones are (a sample of them: the set may be thousands).
  const double seed = added.empty() ? 0.0 : meanEwma(now, kSeedSample);
  for (const auto& e : added) {
    if (find(e) != nullptr) {
      continue;
    }
    members_.push_back(
        Member{e, PeakEwmaLoad(settings_.decay, now), FailureAccrual(settings_.accrual, now)});
    if (seed > 0) {
      members_.back().load.seed(now, seed);
    }
    if (indexed) {
      index_.emplace(e, members_.size() - 1);
    }
  }
  if (members_.size() <= kScanLimit) {
    index_.clear();  // a scan finds them
  }
}

std::optional<tcp::endpoint> P2cPeakEwma::pick(SteadyTime now,
                                               std::span<const tcp::endpoint> exclude) {
  if (members_.empty()) {
    return std::nullopt;
  }
  if (members_.size() == 1) {
    return members_.front().endpoint;
  }
  if (out_ == 0 && exclude.empty()) {
    // Every member alive and none to avoid (the common case): two draws, whatever the set's
    // size. The same draws as below would make, so picks do not depend on which path ran.
    const std::size_t a = rng_() % members_.size();
    std::size_t b = rng_() % (members_.size() - 1);
    if (b >= a) {
      ++b;
    }
    Member& first = members_[a];
    Member& second = members_[b];
    return first.load.load(now) <= second.load.load(now) ? first.endpoint : second.endpoint;
  }
  const auto excluded = [&](const Member& m) {
    return std::find(exclude.begin(), exclude.end(), m.endpoint) != exclude.end();
  };

  // A member back from its back-off is probed with the next request: its outcome decides.
  for (const auto& m : members_) {
    if (!excluded(m) && m.accrual.awaitingProbe(now)) {
      return m.endpoint;
    }
  }

  const std::size_t up = available(now);
  const bool panic = 2 * (members_.size() - up) >= members_.size();
  const auto candidate = [&](const Member& m) {
    return !excluded(m) && (panic || m.accrual.available(now));
  };
  std::size_t n = 0;
  for (const auto& m : members_) {
    n += candidate(m) ? 1 : 0;
  }
  if (n == 0) {
    return members_.front().endpoint;  // every member usable now is excluded
  }
  const auto nth = [&](std::size_t k) -> Member& {
    for (auto& m : members_) {
      if (candidate(m) && k-- == 0) {
        return m;
      }
    }
    return members_.front();  // unreachable: k < n
  };
  if (n == 1) {
    return nth(0).endpoint;
  }

  // Two distinct members, uniformly (Finagle's P2CPick): the second draw skips the first.
  const std::size_t a = rng_() % n;
  std::size_t b = rng_() % (n - 1);
  if (b >= a) {
    ++b;
  }
  Member& first = nth(a);
  Member& second = nth(b);
  const double firstLoad = first.load.load(now);
  const double secondLoad = second.load.load(now);
  // The healthier first (it only differs in panic mode), then the cheaper.
  const bool firstUp = first.accrual.available(now);
  const bool secondUp = second.accrual.available(now);
  if (firstUp != secondUp) {
    return firstUp ? first.endpoint : second.endpoint;
  }
  return firstLoad <= secondLoad ? first.endpoint : second.endpoint;
}

void P2cPeakEwma::started(const tcp::endpoint& member, SteadyTime now) {
  if (Member* m = find(member)) {
    m->load.start();
    m->accrual.started(now);
  }
}

void P2cPeakEwma::finished(const tcp::endpoint& member, SteadyTime now,
                           std::chrono::nanoseconds rtt, bool ok) {
  Member* m = find(member);
  if (m == nullptr) {
    return;
  }
  // A failure's round-trip time counts too, as in Finagle; accrual deals with fast failures.
  m->load.end(now, rtt);
  counted(ok ? m->accrual.succeeded(now) : m->accrual.failed(now, rng_));
}

void P2cPeakEwma::passedOver(const tcp::endpoint& member, SteadyTime now) {
  if (Member* m = find(member)) {
    m->load.abandon();
    counted(m->accrual.succeeded(now));
  }
}

void P2cPeakEwma::counted(FailureAccrual::Change change) {
  if (change == FailureAccrual::Change::ejected) {
    ++ejections_;
    ++out_;
  } else if (change == FailureAccrual::Change::revived) {
    --out_;
  }
}

std::size_t P2cPeakEwma::available(SteadyTime now) const {
  return static_cast<std::size_t>(std::count_if(
      members_.begin(), members_.end(), [&](const Member& m) { return m.accrual.available(now); }));
}

bool P2cPeakEwma::usable(const tcp::endpoint& member, SteadyTime now) const {
  const Member* m = find(member);
  return m && (m->accrual.available(now) || m->accrual.awaitingProbe(now));
}

std::vector<MemberView> P2cPeakEwma::members(SteadyTime now) const {
  std::vector<MemberView> views;
  views.reserve(members_.size());
  for (const auto& m : members_) {
    views.push_back(MemberView{m.endpoint, m.load.peek(now) / kNanosPerMs,
                               m.load.ewmaNanos(now) / kNanosPerMs, m.load.pending(),
                               stateName(m.accrual.state(now))});
  }
  return views;
}

}  // namespace sidecar
