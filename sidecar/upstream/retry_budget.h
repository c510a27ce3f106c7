#pragma once
// How many retries a route may make now: Finagle's RetryBudget (a leaky token bucket over a
// sliding window), so that retries cannot multiply the load on members that are already failing.
// One per route per worker; the caller passes the time, so tests need no clock.

#include <chrono>
#include <cstdint>
#include <vector>

#include "core/config.h"

namespace sidecar {

using SteadyTime = std::chrono::steady_clock::time_point;

// A sum over a sliding window of `slices` slices (twitter/util's WindowedAdder): what was added
// more than `range` ago no longer counts. The retry budget's deposits and failure accrual's
// request count both use it. The window starts at the first call.
class WindowedAdder {
 public:
  WindowedAdder(Duration range, int slices);
  void add(SteadyTime now, std::int64_t n);
  std::int64_t sum(SteadyTime now);
  void reset(SteadyTime now);

 private:
  void advance(SteadyTime now);

  Duration slice_;
  std::vector<std::int64_t> closed_;  // the slices before the current one, a ring
  std::size_t head_ = 0;              // where the next closed slice goes (the oldest)
  std::int64_t current_ = 0;
  SteadyTime currentStart_{};
  bool started_ = false;
};

struct RetryBudgetSettings {
  Duration ttl{10'000};          // a deposit counts for this long (Finagle: 1 s .. 60 s)
  int minRetriesPerSecond = 10;  // reserve for callers that have just started or send little
  double percentCanRetry = 0.2;  // retries allowed per request deposited
};

class RetryBudget {
 public:
  explicit RetryBudget(RetryBudgetSettings settings = {});

  // One per request (not per retry).
  void deposit(SteadyTime now);
  // One per retry: true takes a token, false leaves the balance untouched.
  bool tryWithdraw(SteadyTime now);
  // Retries that would be allowed now.
  std::int64_t balance(SteadyTime now);

 private:
  // Whole tokens, scaled as Finagle does so that 20 % needs no floating point: a request
  // deposits 1000, a retry costs 1000 / percentCanRetry.
  std::int64_t depositAmount_;
  std::int64_t withdrawalAmount_;
  std::int64_t reserve_;  // minRetriesPerSecond × ttl in seconds, in tokens; never expires
  bool empty_;            // neither a reserve nor a percentage: never retry
  WindowedAdder window_;
};

}  // namespace sidecar
