// The call policy: decide()'s table, then CallAttempts over a real balancer and budget.
#include "upstream/call_policy.h"

#include <doctest/doctest.h>

#include <string>

namespace sidecar {
namespace {

const SteadyTime kStart = SteadyTime{} + std::chrono::hours(1);

tcp::endpoint member(unsigned short port) { return {asio::ip::make_address("127.0.0.1"), port}; }

struct Case {
  AttemptEnd end;
  std::size_t tried;
  std::size_t members;
  bool timeLeft;
  Verdict expected;
  const char* why;
};

// Every row is one rule; a change to the policy changes a row here.
constexpr Case kTable[] = {
    {AttemptEnd::answered, 1, 3, true, Verdict::done, "an answer stands, whatever its status"},
    {AttemptEnd::answered, 1, 3, false, Verdict::done, "an answer after the deadline stands"},
    {AttemptEnd::failed, 1, 3, true, Verdict::done, "a call that went out is never sent again"},
    {AttemptEnd::timedOut, 1, 3, true, Verdict::done, "a timeout ends the call"},
    {AttemptEnd::notSent, 1, 3, true, Verdict::retry, "nothing reached the member: another may"},
    {AttemptEnd::notSent, 1, 3, false, Verdict::outOfTime, "slow connects used the call's time"},
    {AttemptEnd::notSent, 3, 3, true, Verdict::done, "every member tried once"},
    {AttemptEnd::notSent, 2, 1, true, Verdict::done, "the set shrank below the tries"},
    {AttemptEnd::notSent, 5, 9, true, Verdict::done, "at most kMaxAttempts members"},
    {AttemptEnd::notSent, 4, 9, true, Verdict::retry, "the fifth attempt is allowed"},
    {AttemptEnd::closedEarly, 1, 2, true, Verdict::retry, "an idempotent call held whole"},
    {AttemptEnd::closedEarly, 1, 2, false, Verdict::outOfTime, "no time for another member"},
    {AttemptEnd::closedEarly, 2, 2, true, Verdict::done, "no member left to try"},
    {AttemptEnd::refused, 1, 3, true, Verdict::retryDrawn, "refusal picked and drew already"},
    {AttemptEnd::refused, 4, 9, false, Verdict::retryDrawn, "refusal checked time itself"},
    {AttemptEnd::refused, 5, 9, true, Verdict::done, "never a sixth attempt, even refused"},
};

TEST_CASE("call policy: decide() follows its table") {
  for (const auto& c : kTable) {
    CAPTURE(c.why);
    CHECK(decide({c.end, c.tried, c.members, c.timeLeft}) == c.expected);
  }
}

TEST_CASE("call policy: a member that failed a call is not picked for it again") {
  P2cPeakEwma balancer(7);
  balancer.update({member(1), member(2), member(3)}, kStart);
  RetryBudget budget;
  CallAttempts call(budget, kStart, Duration(1'000));
  std::vector<tcp::endpoint> seen;
  for (int i = 0; i < 3; ++i) {
    auto m = call.pick(balancer, kStart);
    REQUIRE(m);
    CHECK(std::ranges::find(seen, *m) == seen.end());
    seen.push_back(*m);
    call.begin(*m);
    REQUIRE(call.after(AttemptEnd::notSent, balancer.size(), kStart) ==
            (i < 2 ? CallStep::next : CallStep::done));
  }
  CHECK(call.attempts() == 3);
}

TEST_CASE("call policy: members passed over are never picked, and count as no attempt") {
  P2cPeakEwma balancer(7);
  std::vector<tcp::endpoint> all;
  for (unsigned short p = 1; p <= 10; ++p) {
    all.push_back(member(p));
  }
  balancer.update(all, kStart);
  const std::vector<tcp::endpoint> passOver(all.begin(), all.begin() + 8);
  for (int run = 0; run < 50; ++run) {
    RetryBudget budget;
    CallAttempts call(budget, kStart, Duration(1'000));
    auto m = call.pick(balancer, kStart, passOver);
    REQUIRE(m);
    CHECK(std::ranges::find(passOver, *m) == passOver.end());
    call.begin(*m);
    // Found unusable only once begun: it is passed over without using up an attempt.
    call.unbegin();
    CHECK(call.attempts() == 0);
  }
  RetryBudget budget;
  CallAttempts call(budget, kStart, Duration(1'000));
  CHECK_FALSE(call.pick(balancer, kStart, all));  // every member passed over: none
}

TEST_CASE("call policy: a retry draws on the budget; an empty budget ends the call") {
  P2cPeakEwma balancer(7);
  balancer.update({member(1), member(2), member(3)}, kStart);
  RetryBudget budget({.ttl = Duration(10'000), .minRetriesPerSecond = 0, .percentCanRetry = 0.0});
  CallAttempts call(budget, kStart, Duration(1'000));
  call.begin(*call.pick(balancer, kStart));
  CHECK(call.after(AttemptEnd::notSent, balancer.size(), kStart) == CallStep::outOfBudget);
}

TEST_CASE("call policy: a refused answer's pick is the next member, without the budget") {
  P2cPeakEwma balancer(7);
  balancer.update({member(1), member(2), member(3)}, kStart);
  RetryBudget budget({.ttl = Duration(10'000), .minRetriesPerSecond = 0, .percentCanRetry = 0.0});
  CallAttempts call(budget, kStart, Duration(1'000));
  const auto first = *call.pick(balancer, kStart);
  call.begin(first);
  const auto drawn = first == member(3) ? member(2) : member(3);
  CHECK(call.after(AttemptEnd::refused, balancer.size(), kStart, drawn) == CallStep::next);
  CHECK(call.pick(balancer, kStart) == drawn);
}

TEST_CASE("call policy: the deadline is shared by the attempts; left() never reaches zero") {
  RetryBudget budget;
  CallAttempts call(budget, kStart, Duration(1'000));
  CHECK(call.left(kStart + std::chrono::milliseconds(400)) == Duration(600));
  CHECK(call.left(kStart + std::chrono::seconds(5)) == Duration(1));
  P2cPeakEwma balancer(7);
  balancer.update({member(1), member(2)}, kStart);
  call.begin(*call.pick(balancer, kStart));
  CHECK(call.after(AttemptEnd::notSent, 2, kStart + std::chrono::seconds(1)) ==
        CallStep::outOfTime);
}

TEST_CASE("call policy: with no member at all the pick is none, not exhausted") {
  P2cPeakEwma balancer(7);
  RetryBudget budget;
  CallAttempts call(budget, kStart, Duration(1'000));
  CHECK_FALSE(call.pick(balancer, kStart));
  CHECK_FALSE(call.exhausted());
}

}  // namespace
}  // namespace sidecar
