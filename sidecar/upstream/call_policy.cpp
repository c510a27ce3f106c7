#include "upstream/call_policy.h"

#include <algorithm>
#include <vector>

namespace sidecar {

std::optional<tcp::endpoint> CallAttempts::pick(P2cPeakEwma& balancer, SteadyTime now) {
  auto picked = next_ ? next_ : balancer.pick(now, tried());
  next_.reset();
  // Never a member this call has failed on: with three members of which two are dead, the third
  // is the one to try, not the first again.
  if (picked && std::ranges::find(tried(), *picked) != tried().end()) {
    exhausted_ = true;
    return std::nullopt;
  }
  return picked;
}

std::optional<tcp::endpoint> CallAttempts::pick(P2cPeakEwma& balancer, SteadyTime now,
                                                std::span<const tcp::endpoint> passOver) {
  if (passOver.empty()) {
    return pick(balancer, now);
  }
  std::vector<tcp::endpoint> exclude(tried().begin(), tried().end());
  exclude.insert(exclude.end(), passOver.begin(), passOver.end());
  auto picked = next_ ? next_ : balancer.pick(now, exclude);
  next_.reset();
  if (picked && std::ranges::find(exclude, *picked) != exclude.end()) {
    exhausted_ = true;
    return std::nullopt;
  }
  return picked;
}

CallStep CallAttempts::after(AttemptEnd end, std::size_t members, SteadyTime now,
                             std::optional<tcp::endpoint> drawn) {
  switch (decide({.end = end, .tried = count_, .members = members, .timeLeft = now < deadline_})) {
    case Verdict::done:
      return CallStep::done;
    case Verdict::outOfTime:
      return CallStep::outOfTime;
    case Verdict::retryDrawn:
      next_ = drawn;
      return CallStep::next;
    case Verdict::retry:
      return budget_.tryWithdraw(now) ? CallStep::next : CallStep::outOfBudget;
  }
  return CallStep::done;
}

Duration CallAttempts::left(SteadyTime now) const {
  return std::max<Duration>(std::chrono::duration_cast<Duration>(deadline_ - now), Duration(1));
}

}  // namespace sidecar
