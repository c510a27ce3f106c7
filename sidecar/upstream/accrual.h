#pragma once
// Whether a member should get requests, from the outcomes of the requests it got: Finagle's
// FailureAccrualFactory with its default policy (a success rate over a time window, or else
// consecutive failures), as Linkerd 1 uses it. An ejected member comes back after a jittered
// back-off as "probing": the next request goes to it, and its outcome revives or ejects it again.
// Pure logic: the caller passes the time and the random source.

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string_view>

#include "core/config.h"
#include "upstream/retry_budget.h"

namespace sidecar {

// An exponential moving average over unevenly spaced samples (Finagle's util.Ema): a sample's
// weight grows with the time since the previous one, `window` being the mean lifetime. The first
// sample after construction or reset() is taken as the average.
class Ema {
 public:
  explicit Ema(std::chrono::nanoseconds window) : window_(window) {}
  // Stamps must not go back in time (the caller keeps them monotonic).
  double update(SteadyTime stamp, double x);
  double last() const { return value_; }
  // The average `stamp` would leave after samples of 0 only (the decay of an idle average),
  // without recording them.
  double decayedTo(SteadyTime stamp) const;
  void reset() {
    value_ = 0.0;
    started_ = false;
  }

 private:
  std::chrono::nanoseconds window_;
  SteadyTime stamp_{};
  double value_ = 0.0;
  bool started_ = false;
};

// Finagle's Backoff.equalJittered: `start` exactly, then for the n-th next one a random value in
// [start × 2^(n-1), start × 2^n), and `maximum` for good once that would reach it.
class EqualJitteredBackoff {
 public:
  EqualJitteredBackoff(Duration start, Duration maximum)
      : start_(start), maximum_(maximum), next_(start) {}
  // The back-off to use now; the following one is drawn from rng.
  Duration take(std::mt19937_64& rng);
  void reset() {
    next_ = start_;
    attempt_ = 1;
    capped_ = start_ >= maximum_;
  }

 private:
  Duration start_;
  Duration maximum_;
  Duration next_;
  int attempt_ = 1;
  bool capped_ = start_ >= maximum_;
};

struct AccrualSettings {
  int consecutiveFailures = 5;
  double requiredSuccessRate = 0.8;
  Duration successRateWindow{30'000};
  int minRequests = 5;  // in the window, for the success rate to count
  Duration backoffStart{5'000};
  Duration backoffMax{300'000};
};

// What a member looks like to the balancer and the admin page.
enum class AccrualState { alive, ejected, probing };
// Named so, not toString: doctest finds a toString by argument lookup and would use it.
std::string_view stateName(AccrualState s);

class FailureAccrual {
 public:
  FailureAccrual(const AccrualSettings& settings, SteadyTime now);

  // What one outcome did to the member.
  enum class Change { none, ejected, reEjected, revived };

  AccrualState state(SteadyTime now) const;
  // Whether the balancer may choose it: alive, or probing with no probe in flight yet.
  bool available(SteadyTime now) const;
  // Back from its back-off, with no probe sent yet: the balancer sends it the next request.
  bool awaitingProbe(SteadyTime now) const { return phase(now) == Phase::probeOpen; }
  // A request was sent to the member. The first one after the back-off is the probe: until its
  // outcome, the member takes no other request.
  void started(SteadyTime now);
  // The outcome of a request sent to the member (rng draws the jitter of a new back-off).
  Change succeeded(SteadyTime now);
  Change failed(SteadyTime now, std::mt19937_64& rng);
  // When an ejected member becomes probing (meaningful while ejected).
  SteadyTime ejectedUntil() const { return deadUntil_; }

 private:
  // Finagle's states: dead turns into probeOpen when its back-off ends (here: when looked at).
  enum class Phase { alive, dead, probeOpen, probeClosed };
  Phase phase(SteadyTime now) const;
  void settle(SteadyTime now);
  // The two policies of Finagle's default, combined with orElse: both see every failure, and
  // when both call for an ejection the longer back-off wins. Each has its own back-off series.
  std::optional<Duration> markDeadOnFailure(SteadyTime now, std::mt19937_64& rng);
  void recordSuccess(SteadyTime now);
  void revived(SteadyTime now);

  AccrualSettings settings_;
  Phase phase_ = Phase::alive;
  SteadyTime deadUntil_{};

  // Success rate within a duration.
  Ema successRate_;
  WindowedAdder requests_;  // requests in the window: fewer than minRequests never eject
  SteadyTime since_;        // construction or last revival: the rate counts once a window old
  SteadyTime lastStamp_;    // keeps the Ema's stamps monotonic
  EqualJitteredBackoff successRateBackoff_;

  // Consecutive failures.
  int consecutive_ = 0;
  EqualJitteredBackoff consecutiveBackoff_;
};

}  // namespace sidecar
