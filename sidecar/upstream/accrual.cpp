// Failure accrual per member, and the moving average and back-off it is made of.
#include "upstream/accrual.h"

#include <algorithm>
#include <cmath>

namespace sidecar {

double Ema::update(SteadyTime stamp, double x) {
  if (!started_) {
    started_ = true;
    stamp_ = stamp;
    value_ = x;
    return value_;
  }
  const auto td = std::max(stamp - stamp_, SteadyTime::duration::zero());
  stamp_ = stamp;
  const double w =
      window_.count() == 0
          ? 0.0
          : std::exp(-std::chrono::duration<double>(td) / std::chrono::duration<double>(window_));
  value_ = x * (1.0 - w) + value_ * w;
  return value_;
}

// Samples of 0 compose: decaying over a then b is decaying over a + b, so this is exactly what
// recording them would give.
double Ema::decayedTo(SteadyTime stamp) const {
  if (!started_ || window_.count() == 0) {
    return started_ ? value_ : 0.0;
  }
  const auto td = std::max(stamp - stamp_, SteadyTime::duration::zero());
  return value_ *
         std::exp(-std::chrono::duration<double>(td) / std::chrono::duration<double>(window_));
}

Duration EqualJitteredBackoff::take(std::mt19937_64& rng) {
  const Duration now = next_;
  if (capped_) {
    return maximum_;
  }
  // Finagle's EqualJittered.next: the lower half doubles, the jitter is up to as much again.
  const std::int64_t shift = std::int64_t{1} << std::min(attempt_ - 1, 62);
  const Duration halfExp = start_ >= maximum_ / shift ? maximum_ : start_ * shift;
  const Duration jitter{
      halfExp.count() > 0
          ? static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(halfExp.count()))
          : 0};
  if (halfExp == maximum_ || halfExp >= maximum_ - jitter) {
    next_ = maximum_;
    capped_ = true;
  } else {
    next_ = halfExp + jitter;
    ++attempt_;
  }
  return now;
}

std::string_view stateName(AccrualState s) {
  switch (s) {
    case AccrualState::alive:
      return "alive";
    case AccrualState::ejected:
      return "ejected";
    case AccrualState::probing:
      return "probing";
  }
  return "alive";
}

FailureAccrual::FailureAccrual(const AccrualSettings& settings, SteadyTime now)
    : settings_(settings),
      successRate_(settings.successRateWindow),
      requests_(settings.successRateWindow, 5),  // Finagle: five slices, chosen "arbitrarily"
      since_(now),
      lastStamp_(now),
      successRateBackoff_(settings.backoffStart, settings.backoffMax),
      consecutiveBackoff_(settings.backoffStart, settings.backoffMax) {
  // Unlike Finagle, the rate starts at 100 %: otherwise a first failure would be the whole
  // average, and on a quiet route a single later failure could eject a healthy member. After a
  // revival it starts at 100 % in Finagle too (the probe's success is its first sample).
  successRate_.update(now, 1.0);
  requests_.reset(now);
}

FailureAccrual::Phase FailureAccrual::phase(SteadyTime now) const {
  if (phase_ == Phase::dead && now >= deadUntil_) {
    return Phase::probeOpen;
  }
  return phase_;
}

void FailureAccrual::settle(SteadyTime now) { phase_ = phase(now); }

AccrualState FailureAccrual::state(SteadyTime now) const {
  switch (phase(now)) {
    case Phase::alive:
      return AccrualState::alive;
    case Phase::dead:
      return AccrualState::ejected;
    case Phase::probeOpen:
    case Phase::probeClosed:
      return AccrualState::probing;
  }
  return AccrualState::alive;
}

bool FailureAccrual::available(SteadyTime now) const {
  const Phase p = phase(now);
  return p == Phase::alive || p == Phase::probeOpen;
}

void FailureAccrual::started(SteadyTime now) {
  settle(now);
  if (phase_ == Phase::probeOpen) {
    phase_ = Phase::probeClosed;
  }
}

FailureAccrual::Change FailureAccrual::succeeded(SteadyTime now) {
  settle(now);
  Change change = Change::none;
  // Only the probe's success revives; a success of a request sent before the ejection does not.
  if (phase_ == Phase::probeClosed) {
    revived(now);
    phase_ = Phase::alive;
    change = Change::revived;
  }
  recordSuccess(now);
  return change;
}

FailureAccrual::Change FailureAccrual::failed(SteadyTime now, std::mt19937_64& rng) {
  settle(now);
  // Outcomes of requests sent before the ejection do not count while it lasts.
  if (phase_ != Phase::alive && phase_ != Phase::probeClosed) {
    return Change::none;
  }
  if (auto markDeadFor = markDeadOnFailure(now, rng)) {
    const bool wasAlive = phase_ == Phase::alive;
    phase_ = Phase::dead;
    deadUntil_ = now + *markDeadFor;
    return wasAlive ? Change::ejected : Change::reEjected;
  }
  if (phase_ == Phase::probeClosed) {
    // The probe failed but the policies do not eject (a success in between reset the run of
    // failures): probe again, as Finagle does.
    phase_ = Phase::probeOpen;
  }
  return Change::none;
}

std::optional<Duration> FailureAccrual::markDeadOnFailure(SteadyTime now, std::mt19937_64& rng) {
  lastStamp_ = std::max(lastStamp_, now);
  requests_.add(now, 1);
  const double rate = successRate_.update(lastStamp_, 0.0);
  std::optional<Duration> bySuccessRate;
  if (now - since_ >= settings_.successRateWindow && rate < settings_.requiredSuccessRate &&
      requests_.sum(now) >= settings_.minRequests) {
    bySuccessRate = successRateBackoff_.take(rng);
  }
  std::optional<Duration> byConsecutive;
  if (++consecutive_ >= settings_.consecutiveFailures) {
    byConsecutive = consecutiveBackoff_.take(rng);
  }
  if (bySuccessRate && byConsecutive) {
    return std::max(*bySuccessRate, *byConsecutive);
  }
  return bySuccessRate ? bySuccessRate : byConsecutive;
}

void FailureAccrual::recordSuccess(SteadyTime now) {
  lastStamp_ = std::max(lastStamp_, now);
  requests_.add(now, 1);
  successRate_.update(lastStamp_, 1.0);
  consecutive_ = 0;
}

void FailureAccrual::revived(SteadyTime now) {
  consecutive_ = 0;
  successRateBackoff_.reset();
  consecutiveBackoff_.reset();
  since_ = now;
  lastStamp_ = std::max(lastStamp_, now);
  requests_.reset(now);
  successRate_.reset();
}

}  // namespace sidecar
