#pragma once
// The call policy every outbound protocol shares (HTTP routes, Thrift routes, and those to come):
// after each attempt on a member, whether the call goes to another member or ends, and how.
//
// decide() is the rule, a pure function of what the attempt's end and the call's state are; its
// table of cases is tests/unit/upstream/call_policy_test.cpp. CallAttempts is the state one call
// carries (the members it went to, its deadline) and applies decide() with the route's balancer
// and retry budget. Each protocol's session maps its own outcomes onto AttemptEnd and its answers
// onto CallEnd; neither holds a retry rule of its own.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "core/config.h"
#include "net/io.h"
#include "upstream/balancer.h"
#include "upstream/retry_budget.h"

namespace sidecar {

// Each member is tried at most once per call, and at most this many members.
inline constexpr std::size_t kMaxAttempts = 5;

// How one attempt on one member ended, in terms every protocol has.
enum class AttemptEnd : std::uint8_t {
  answered,     // the member's answer stands, whatever it says
  notSent,      // nothing of the call reached the member (connect or handshake failed)
  refused,      // the member's 502/503 was dropped unsent, another member already picked and the
                // budget drawn (HTTP: MemberLink::refuseAnswer)
  closedEarly,  // the member closed before answering a call safe to send again (idempotent, with
                // the whole request still held)
  failed,       // the call (or some of it) went out and no answer of its own came back
  timedOut,     // the call's time ran out on this member
};

// What the call does next, by decide().
enum class Verdict : std::uint8_t {
  done,        // this attempt's end is the call's
  retry,       // another member, if the retry budget allows
  retryDrawn,  // another member, picked already with the budget drawn (a refused answer)
  outOfTime,   // nothing was answered and the call's time is up: the call timed out
};

struct AttemptFacts {
  AttemptEnd end;
  std::size_t tried;    // attempts made, this one included
  std::size_t members;  // the route's members now
  bool timeLeft;        // the call's deadline is still ahead
};

constexpr Verdict decide(const AttemptFacts& f) {
  switch (f.end) {
    case AttemptEnd::refused:
      // Its link picked the next member only while an attempt was left; the bound is kept here
      // too, so that no protocol can make a sixth attempt.
      return f.tried >= kMaxAttempts ? Verdict::done : Verdict::retryDrawn;
    case AttemptEnd::notSent:
    case AttemptEnd::closedEarly:
      if (f.tried >= kMaxAttempts || f.tried >= f.members) {
        return Verdict::done;
      }
      return f.timeLeft ? Verdict::retry : Verdict::outOfTime;
    case AttemptEnd::answered:
    case AttemptEnd::failed:
    case AttemptEnd::timedOut:
      return Verdict::done;
  }
  return Verdict::done;
}

// How CallAttempts::after ends a call, or sends it on.
enum class CallStep : std::uint8_t {
  next,         // pick again and try
  done,         // the last attempt's end is the call's answer
  outOfTime,    // answer a timeout
  outOfBudget,  // the retry budget is spent: the last attempt's end is the call's answer
};

// One call's attempts: no allocation, the members it went to on the stack.
class CallAttempts {
 public:
  // Deposits the call in the route's budget; its deadline is now + timeout.
  CallAttempts(RetryBudget& budget, SteadyTime now, Duration timeout)
      : budget_(budget), deadline_(now + timeout) {
    budget_.deposit(now);
  }

  // The member for the next attempt: a refused answer's pick, else the balancer's among the
  // members this call has not tried. None: no usable member, or (exhausted()) every member the
  // balancer would pick failed this call already.
  std::optional<tcp::endpoint> pick(P2cPeakEwma& balancer, SteadyTime now);
  // The same, passing over also members this call cannot use (none of them counts as tried).
  std::optional<tcp::endpoint> pick(P2cPeakEwma& balancer, SteadyTime now,
                                    std::span<const tcp::endpoint> passOver);
  bool exhausted() const { return exhausted_; }

  // Records the member an attempt goes to; it is excluded from every later pick. At most
  // kMaxAttempts: after() never sends a call on past that.
  void begin(const tcp::endpoint& member) {
    if (count_ < kMaxAttempts) {
      tried_[count_++] = member;
    }
  }

  // The attempt begin() recorded last did not happen after all (its member could not take this
  // kind of call, and is passed over from now on): it counts for nothing.
  void unbegin() {
    if (count_ > 0) {
      --count_;
    }
  }

  // After the attempt begin() recorded. drawn: the next member a refused answer picked.
  CallStep after(AttemptEnd end, std::size_t members, SteadyTime now,
                 std::optional<tcp::endpoint> drawn = std::nullopt);

  // The members tried, the current one last.
  std::span<const tcp::endpoint> tried() const { return {tried_.data(), count_}; }
  std::size_t attempts() const { return count_; }
  bool attemptLeft() const { return count_ < kMaxAttempts; }
  SteadyTime deadline() const { return deadline_; }
  // What is left of the call's time, at least 1 ms so that a timer still fires.
  Duration left(SteadyTime now) const;

 private:
  RetryBudget& budget_;
  SteadyTime deadline_;
  std::array<tcp::endpoint, kMaxAttempts> tried_;
  std::size_t count_ = 0;
  std::optional<tcp::endpoint> next_;
  bool exhausted_ = false;
};

}  // namespace sidecar
