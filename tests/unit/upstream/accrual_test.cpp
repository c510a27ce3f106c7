// Failure accrual per member: when it ejects, for how long, and how a member comes back.
#include "upstream/accrual.h"

#include <doctest/doctest.h>

#include <cmath>
#include <string>

namespace sidecar {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const SteadyTime kStart = SteadyTime{} + std::chrono::hours(1);

// One request's whole life, as the balancer reports it.
FailureAccrual::Change request(FailureAccrual& a, SteadyTime now, bool ok, std::mt19937_64& rng) {
  a.started(now);
  return ok ? a.succeeded(now) : a.failed(now, rng);
}

TEST_CASE("ema: the first sample is the average; later ones weigh by the time since the last") {
  Ema ema(seconds(10));
  CHECK(ema.update(kStart, 4.0) == 4.0);
  CHECK(ema.update(kStart, 0.0) == 4.0);  // no time passed: no weight
  const double after = ema.update(kStart + seconds(10), 0.0);
  CHECK(after == doctest::Approx(4.0 * std::exp(-1.0)));
  CHECK(ema.decayedTo(kStart + seconds(20)) == doctest::Approx(4.0 * std::exp(-2.0)));
  ema.reset();
  CHECK(ema.update(kStart + seconds(30), 7.0) == 7.0);
}

TEST_CASE("back-off: 5 s, then doubling ranges with equal jitter, capped at 300 s for good") {
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    std::mt19937_64 rng(seed);
    EqualJitteredBackoff backoff(Duration(5'000), Duration(300'000));
    CHECK(backoff.take(rng) == seconds(5));
    bool capped = false;
    for (int n = 1; n <= 12; ++n) {
      const Duration d = backoff.take(rng);
      const Duration low = std::min<Duration>(seconds(5) * (1 << (n - 1)), seconds(300));
      const Duration high = std::min<Duration>(seconds(5) * (1 << n), seconds(300));
      CHECK(d <= seconds(300));
      if (d == seconds(300)) {
        capped = true;
      } else {
        CHECK_FALSE(capped);  // once at the cap, it stays there
        CHECK(d >= low);
        CHECK(d < high);
      }
    }
    CHECK(capped);
    backoff.reset();
    CHECK(backoff.take(rng) == seconds(5));
  }
}

TEST_CASE("accrual: five consecutive failures eject, four do not") {
  std::mt19937_64 rng(1);
  AccrualSettings settings;
  FailureAccrual a(settings, kStart);
  for (int i = 0; i < 4; ++i) {
    CHECK(request(a, kStart + milliseconds(i), false, rng) == FailureAccrual::Change::none);
  }
  CHECK(a.state(kStart) == AccrualState::alive);
  CHECK(request(a, kStart + milliseconds(5), true, rng) == FailureAccrual::Change::none);
  for (int i = 0; i < 4; ++i) {
    request(a, kStart + milliseconds(10 + i), false, rng);
  }
  CHECK(a.available(kStart + milliseconds(20)));  // the success broke the run
  CHECK(request(a, kStart + milliseconds(20), false, rng) == FailureAccrual::Change::ejected);
  CHECK(a.state(kStart + milliseconds(20)) == AccrualState::ejected);
  CHECK_FALSE(a.available(kStart + milliseconds(20)));
  CHECK(a.ejectedUntil() == kStart + milliseconds(20) + seconds(5));
}

TEST_CASE("accrual: a success rate under 80 % over 30 s ejects without five failures in a row") {
  std::mt19937_64 rng(1);
  AccrualSettings settings;
  FailureAccrual a(settings, kStart);
  // One request a second, every other one failing: never two failures in a row. The rate is
  // judged once the member has been known for the window (Finagle).
  SteadyTime now = kStart;
  int ejectedAt = -1;
  for (int i = 0; i < 60 && ejectedAt < 0; ++i) {
    now = kStart + seconds(i);
    if (request(a, now, i % 2 == 0, rng) == FailureAccrual::Change::ejected) {
      ejectedAt = i;
    }
  }
  CHECK(ejectedAt >= 30);
  CHECK(ejectedAt <= 32);
  CHECK(a.state(now) == AccrualState::ejected);
}

TEST_CASE("accrual: the rate needs five requests in the window") {
  std::mt19937_64 rng(1);
  AccrualSettings settings;
  FailureAccrual a(settings, kStart);
  // Known for a minute, then four requests in the window, three of them failing.
  const SteadyTime t = kStart + seconds(60);
  request(a, t, false, rng);
  request(a, t + seconds(1), true, rng);
  request(a, t + seconds(2), false, rng);
  CHECK(request(a, t + seconds(3), false, rng) == FailureAccrual::Change::none);
  CHECK(a.state(t + seconds(3)) == AccrualState::alive);
  // The fifth request in the window, failing, with the rate far below 80 %.
  CHECK(request(a, t + seconds(4), false, rng) == FailureAccrual::Change::ejected);
}

TEST_CASE("accrual: four failures in a hundred requests do not eject") {
  std::mt19937_64 rng(1);
  AccrualSettings settings;
  for (bool together : {false, true}) {
    FailureAccrual a(settings, kStart);
    // 100 requests over 30 s, a minute after the member appeared.
    for (int i = 0; i < 100; ++i) {
      const SteadyTime now = kStart + seconds(60) + milliseconds(300 * i);
      const bool fails = together ? (i >= 50 && i < 54) : (i % 25 == 10);
      CHECK(request(a, now, !fails, rng) == FailureAccrual::Change::none);
    }
    CHECK(a.state(kStart + seconds(90)) == AccrualState::alive);
  }
}

TEST_CASE("accrual: after the back-off the member is probed; a success revives it") {
  std::mt19937_64 rng(3);
  AccrualSettings settings;
  FailureAccrual a(settings, kStart);
  for (int i = 0; i < 5; ++i) {
    request(a, kStart, false, rng);
  }
  const SteadyTime back = kStart + seconds(5);
  CHECK(a.state(back - milliseconds(1)) == AccrualState::ejected);
  CHECK(a.state(back) == AccrualState::probing);
  CHECK(a.available(back));
  CHECK(a.awaitingProbe(back));

  a.started(back);  // the probe: nothing else until its outcome
  CHECK(a.state(back) == AccrualState::probing);
  CHECK_FALSE(a.available(back));
  CHECK_FALSE(a.awaitingProbe(back));
  CHECK(a.succeeded(back + milliseconds(10)) == FailureAccrual::Change::revived);
  CHECK(a.state(back + milliseconds(10)) == AccrualState::alive);

  // Revived means forgiven: the next ejection starts again at 5 s.
  const SteadyTime later = back + seconds(1);
  for (int i = 0; i < 5; ++i) {
    request(a, later, false, rng);
  }
  CHECK(a.ejectedUntil() == later + seconds(5));
}

TEST_CASE("accrual: a failed probe ejects again for the next back-off, up to 300 s") {
  std::mt19937_64 rng(7);
  AccrualSettings settings;
  FailureAccrual a(settings, kStart);
  for (int i = 0; i < 5; ++i) {
    request(a, kStart, false, rng);
  }
  SteadyTime now = kStart;
  for (int n = 1; n <= 12; ++n) {
    now = a.ejectedUntil();
    CHECK(a.state(now) == AccrualState::probing);
    CHECK(request(a, now, false, rng) == FailureAccrual::Change::reEjected);
    // The n-th failed probe: [5 s × 2^(n-1), 5 s × 2^n), or the cap.
    const Duration d = std::chrono::duration_cast<Duration>(a.ejectedUntil() - now);
    CHECK(d >= std::min<Duration>(seconds(5) * (1 << (n - 1)), seconds(300)));
    CHECK((d < seconds(5) * (1 << n) || d == seconds(300)));
    CHECK(d <= seconds(300));
  }
  CHECK(a.ejectedUntil() - now == seconds(300));
}

TEST_CASE("accrual: outcomes of requests sent before the ejection do not count during it") {
  std::mt19937_64 rng(1);
  AccrualSettings settings;
  FailureAccrual a(settings, kStart);
  for (int i = 0; i < 5; ++i) {
    request(a, kStart, false, rng);
  }
  const SteadyTime until = a.ejectedUntil();
  CHECK(a.failed(kStart + seconds(1), rng) == FailureAccrual::Change::none);
  CHECK(a.succeeded(kStart + seconds(2)) == FailureAccrual::Change::none);
  CHECK(a.ejectedUntil() == until);
  CHECK(a.state(kStart + seconds(2)) == AccrualState::ejected);
}

TEST_CASE("accrual: states have the admin page's names") {
  CHECK(std::string(stateName(AccrualState::alive)) == "alive");
  CHECK(std::string(stateName(AccrualState::ejected)) == "ejected");
  CHECK(std::string(stateName(AccrualState::probing)) == "probing");
}

}  // namespace
}  // namespace sidecar
