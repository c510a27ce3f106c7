// The retry budget and the sliding-window sum under it.
#include "upstream/retry_budget.h"

#include <algorithm>
#include <cassert>

namespace sidecar {

WindowedAdder::WindowedAdder(Duration range, int slices)
    : slice_(range / slices), closed_(static_cast<std::size_t>(slices - 1), 0) {
  assert(slices > 1 && slice_.count() > 0);
}

// Closes the current slice when its time is up, and as many empty ones as whole slices went by
// without a call. Slices stay aligned to the first call, so a value lives between
// (slices - 1) and slices slice lengths.
void WindowedAdder::advance(SteadyTime now) {
  if (!started_) {
    started_ = true;
    currentStart_ = now;
    return;
  }
  if (now < currentStart_ + slice_) {
    return;  // also a time before the current slice (a caller's stale `now`): count it here
  }
  const auto elapsed = (now - currentStart_) / slice_;
  closed_[head_] = current_;
  head_ = (head_ + 1) % closed_.size();
  current_ = 0;
  const auto empty = std::min<std::int64_t>(elapsed - 1, static_cast<std::int64_t>(closed_.size()));
  for (std::int64_t i = 0; i < empty; ++i) {
    closed_[head_] = 0;
    head_ = (head_ + 1) % closed_.size();
  }
  currentStart_ += elapsed * slice_;
}

void WindowedAdder::add(SteadyTime now, std::int64_t n) {
  advance(now);
  current_ += n;
}

std::int64_t WindowedAdder::sum(SteadyTime now) {
  advance(now);
  std::int64_t total = current_;
  for (auto v : closed_) {
    total += v;
  }
  return total;
}

void WindowedAdder::reset(SteadyTime now) {
  std::fill(closed_.begin(), closed_.end(), 0);
  current_ = 0;
  currentStart_ = now;
  started_ = true;
}

namespace {
// Finagle's TokenRetryBudget.ScaleFactor.
constexpr double kScale = 1000.0;
}  // namespace

RetryBudget::RetryBudget(RetryBudgetSettings settings)
    : depositAmount_(settings.percentCanRetry == 0.0 ? 0 : static_cast<std::int64_t>(kScale)),
      // With no percentage every retry costs one token and only the reserve pays for it.
      withdrawalAmount_(settings.percentCanRetry == 0.0
                            ? 1
                            : static_cast<std::int64_t>(kScale / settings.percentCanRetry)),
      reserve_(std::int64_t{settings.minRetriesPerSecond} *
               std::chrono::duration_cast<std::chrono::seconds>(settings.ttl).count() *
               withdrawalAmount_),
      empty_(settings.minRetriesPerSecond == 0 && settings.percentCanRetry == 0.0),
      // Finagle's leaky bucket: ten slices over the ttl.
      window_(settings.ttl, 10) {
  assert(settings.minRetriesPerSecond >= 0);
  assert(settings.percentCanRetry >= 0.0 && settings.percentCanRetry <= kScale);
}

void RetryBudget::deposit(SteadyTime now) {
  if (depositAmount_ != 0) {
    window_.add(now, depositAmount_);
  }
}

// A withdrawal is a negative deposit in the window: it expires with the window too, so the
// reserve comes back a ttl after it was spent.
bool RetryBudget::tryWithdraw(SteadyTime now) {
  if (empty_) {
    return false;
  }
  if (window_.sum(now) + reserve_ < withdrawalAmount_) {
    return false;
  }
  window_.add(now, -withdrawalAmount_);
  return true;
}

std::int64_t RetryBudget::balance(SteadyTime now) {
  if (empty_) {
    return 0;
  }
  return std::max<std::int64_t>(0, (window_.sum(now) + reserve_) / withdrawalAmount_);
}

}  // namespace sidecar
