// The retry budget: 20 % of requests plus a reserve of 10 a second, over a 10 s window.
#include "upstream/retry_budget.h"

#include <doctest/doctest.h>

namespace sidecar {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const SteadyTime kStart = SteadyTime{} + std::chrono::hours(1);

int withdrawAll(RetryBudget& budget, SteadyTime now) {
  int n = 0;
  while (budget.tryWithdraw(now)) {
    ++n;
  }
  return n;
}

TEST_CASE("windowed adder: a value counts for the window, then no longer") {
  WindowedAdder w(Duration(10'000), 10);
  w.add(kStart, 5);
  CHECK(w.sum(kStart + milliseconds(999)) == 5);
  w.add(kStart + milliseconds(1'500), 2);
  CHECK(w.sum(kStart + milliseconds(9'999)) == 7);
  CHECK(w.sum(kStart + seconds(10)) == 2);  // the first slice has left the window
  CHECK(w.sum(kStart + seconds(11)) == 0);
  w.add(kStart + seconds(40), 3);  // after a long silence: nothing stale comes back
  CHECK(w.sum(kStart + seconds(40)) == 3);
  w.reset(kStart + seconds(41));
  CHECK(w.sum(kStart + seconds(41)) == 0);
}

TEST_CASE("retry budget: with no requests yet, the reserve allows 10 a second over the ttl") {
  RetryBudget budget;
  CHECK(budget.balance(kStart) == 100);
  CHECK(withdrawAll(budget, kStart) == 100);
  CHECK_FALSE(budget.tryWithdraw(kStart));
  CHECK(budget.balance(kStart) == 0);
}

TEST_CASE("retry budget: 20 % of the requests on top of the reserve, and not one more") {
  RetryBudget budget;
  for (int i = 0; i < 1'000; ++i) {
    budget.deposit(kStart);
  }
  CHECK(budget.balance(kStart) == 300);
  CHECK(withdrawAll(budget, kStart) == 300);

  // Once the reserve is spent, each five requests pay for one retry.
  for (int i = 0; i < 4; ++i) {
    budget.deposit(kStart + milliseconds(10));
  }
  CHECK_FALSE(budget.tryWithdraw(kStart + milliseconds(10)));
  budget.deposit(kStart + milliseconds(10));
  CHECK(budget.tryWithdraw(kStart + milliseconds(10)));
  CHECK_FALSE(budget.tryWithdraw(kStart + milliseconds(10)));
}

TEST_CASE("retry budget: a refused withdrawal leaves the balance as it was") {
  RetryBudget budget;
  withdrawAll(budget, kStart);
  for (int i = 0; i < 3; ++i) {
    budget.deposit(kStart);  // 3 × 0.2 retries: not yet one
  }
  CHECK_FALSE(budget.tryWithdraw(kStart));
  CHECK_FALSE(budget.tryWithdraw(kStart));
  budget.deposit(kStart);
  budget.deposit(kStart);
  CHECK(budget.tryWithdraw(kStart));
}

TEST_CASE("retry budget: spent retries and deposits expire after the ttl") {
  RetryBudget budget;
  for (int i = 0; i < 500; ++i) {
    budget.deposit(kStart);
  }
  CHECK(withdrawAll(budget, kStart) == 200);
  CHECK(budget.balance(kStart + seconds(9)) == 0);     // still inside the window
  CHECK(budget.balance(kStart + seconds(10)) == 100);  // the reserve is back, the deposits gone
  CHECK(withdrawAll(budget, kStart + seconds(10)) == 100);
}

TEST_CASE("retry budget: failing everything at a steady rate, retries hold at 10 a second") {
  RetryBudget budget;
  int retries = 0;
  // 100 requests a second for 60 s, each retried as long as the budget allows.
  for (int ms = 0; ms < 60'000; ms += 10) {
    const SteadyTime now = kStart + milliseconds(ms);
    budget.deposit(now);
    while (budget.tryWithdraw(now)) {
      ++retries;
    }
  }
  // 20 % of 6,000 requests plus 10 a second: 1,200 + 600, give or take one window's edge.
  CHECK(retries >= 1'700);
  CHECK(retries <= 1'900);
}

TEST_CASE("retry budget: no reserve and no percentage never retries; a reserve alone does") {
  RetryBudget never(RetryBudgetSettings{Duration(10'000), 0, 0.0});
  never.deposit(kStart);
  CHECK_FALSE(never.tryWithdraw(kStart));
  CHECK(never.balance(kStart) == 0);

  RetryBudget reserveOnly(RetryBudgetSettings{Duration(10'000), 2, 0.0});
  for (int i = 0; i < 100; ++i) {
    reserveOnly.deposit(kStart);  // requests earn nothing
  }
  CHECK(withdrawAll(reserveOnly, kStart) == 20);
}

}  // namespace
}  // namespace sidecar
