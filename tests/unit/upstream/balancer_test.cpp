// P2C over peak EWMA: spread, latency avoidance, new members, ejection and panic, member churn.
#include "upstream/balancer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

namespace sidecar {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const SteadyTime kStart = SteadyTime{} + std::chrono::hours(1);

tcp::endpoint member(int i) {
  return tcp::endpoint(
      asio::ip::make_address_v4(static_cast<asio::ip::address_v4::uint_type>(0x0a000000 + i)),
      8443);
}

std::vector<tcp::endpoint> members(int n) {
  std::vector<tcp::endpoint> all;
  for (int i = 1; i <= n; ++i) {
    all.push_back(member(i));
  }
  return all;
}

// Requests arriving at a steady rate, each taking its member's latency, several in flight.
struct Traffic {
  P2cPeakEwma lb{42};
  SteadyTime now = kStart;
  std::map<tcp::endpoint, Duration> latency;
  std::multimap<SteadyTime, std::pair<tcp::endpoint, Duration>> inFlight;  // by end time
  std::map<tcp::endpoint, int> picks;
  std::vector<tcp::endpoint> order;

  explicit Traffic(int n, Duration each = Duration(10)) {
    lb.update(members(n), now);
    for (const auto& m : members(n)) {
      latency[m] = each;
    }
  }
  void completeDue() {
    while (!inFlight.empty() && inFlight.begin()->first <= now) {
      const auto [end, what] = *inFlight.begin();
      inFlight.erase(inFlight.begin());
      lb.finished(what.first, end, what.second, true);
    }
  }
  void run(int requests, Duration gap = Duration(2)) {
    for (int i = 0; i < requests; ++i) {
      now += gap;
      completeDue();
      const auto m = lb.pick(now);
      REQUIRE(m);
      lb.started(*m, now);
      const Duration rtt = latency.at(*m);
      inFlight.emplace(now + rtt, std::make_pair(*m, rtt));
      ++picks[*m];
      order.push_back(*m);
    }
  }
};

// Five failed requests: the member is ejected.
void eject(P2cPeakEwma& lb, const tcp::endpoint& m, SteadyTime now) {
  for (int i = 0; i < 5; ++i) {
    lb.started(m, now);
    lb.finished(m, now, milliseconds(1), false);
  }
}

TEST_CASE("p2c: no member, no pick; one member is always the pick") {
  P2cPeakEwma lb(1);
  CHECK_FALSE(lb.pick(kStart));
  lb.update({member(1)}, kStart);
  CHECK(lb.pick(kStart) == member(1));
  const auto only = member(1);
  CHECK(lb.pick(kStart, &only) == member(1));  // a retry to the only member is still a retry
}

TEST_CASE("p2c: equal members share 3,000 requests evenly") {
  Traffic t(3);
  t.run(3'000);
  REQUIRE(t.picks.size() == 3);
  for (const auto& [m, n] : t.picks) {
    CHECK(n > 800);    // fair is 1,000
    CHECK(n < 1'200);  // and certainly none above half
  }
}

TEST_CASE("p2c: a member 50 ms slower gets under 10 % after warm-up") {
  Traffic t(3);
  t.latency[member(3)] = Duration(60);
  t.run(1'000);  // warm-up: every member gets measured
  t.picks.clear();
  t.run(3'000);
  CHECK(t.picks[member(3)] < 300);
  CHECK(t.picks[member(1)] + t.picks[member(2)] == 3'000 - t.picks[member(3)]);
}

TEST_CASE("p2c: a slow member's latency is forgiven over time, so it is tried again") {
  Traffic t(3);
  t.latency[member(3)] = Duration(60);
  t.run(1'000);
  t.picks.clear();
  t.run(30'000);  // a minute
  CHECK(t.picks[member(3)] > 0);
}

TEST_CASE("p2c: a new member starts at the average latency and is not flooded") {
  Traffic t(3);
  t.run(1'000);
  t.lb.update(members(4), t.now);
  t.latency[member(4)] = Duration(10);
  const auto views = t.lb.members(t.now);
  REQUIRE(views.size() == 4);
  CHECK(views[3].endpoint == member(4));
  CHECK(views[3].ewmaMs > 5.0);  // not zero: about the others' 10 ms
  CHECK(views[3].ewmaMs < 11.0);
  CHECK(std::string(views[3].state) == "alive");

  t.picks.clear();
  t.run(100);
  CHECK(t.picks[member(4)] > 0);   // it does get traffic at once
  CHECK(t.picks[member(4)] < 45);  // fair is 25
}

TEST_CASE("p2c: with no latency known anywhere, a member takes one request at a time") {
  P2cPeakEwma lb(5);
  lb.update(members(2), kStart);
  // Finagle's penalty: a member with no latency and a request pending costs more than any idle
  // member, so two picks in a row, none finished, go to both members.
  std::map<tcp::endpoint, int> picks;
  for (int i = 0; i < 2; ++i) {
    const auto m = lb.pick(kStart);
    REQUIRE(m);
    lb.started(*m, kStart);
    ++picks[*m];
  }
  CHECK(picks.size() == 2);
  for (const auto& view : lb.members(kStart)) {
    CHECK(view.cost > 1e8);  // the penalty, in ms
    CHECK(view.pending == 1);
    CHECK(view.ewmaMs == 0.0);
  }
}

TEST_CASE("p2c: an ejected member gets nothing until half are out, then panic mode uses all") {
  P2cPeakEwma lb(9);
  lb.update(members(4), kStart);
  eject(lb, member(1), kStart);
  CHECK(lb.ejections() == 1);
  CHECK(lb.available(kStart) == 3);
  std::map<tcp::endpoint, int> picks;
  for (int i = 0; i < 1'000; ++i) {
    ++picks[*lb.pick(kStart + milliseconds(i))];
  }
  CHECK(picks[member(1)] == 0);

  const SteadyTime t = kStart + seconds(1);
  eject(lb, member(2), t);
  CHECK(lb.ejections() == 2);
  CHECK(lb.available(t) == 2);
  picks.clear();
  for (int i = 0; i < 1'000; ++i) {
    ++picks[*lb.pick(t + milliseconds(i))];
  }
  // Panic: the ejected ones take the pairs they make together (one in six).
  CHECK(picks[member(1)] + picks[member(2)] > 80);
  CHECK(picks[member(1)] + picks[member(2)] < 300);
  const auto views = lb.members(t);
  CHECK(std::string(views[0].state) == "ejected");
  CHECK(std::string(views[2].state) == "alive");
}

TEST_CASE("p2c: after its back-off an ejected member gets the next request, and revives") {
  P2cPeakEwma lb(11);
  lb.update(members(3), kStart);
  eject(lb, member(2), kStart);
  const SteadyTime back = kStart + seconds(5);
  CHECK(lb.pick(back - milliseconds(1)) != member(2));
  CHECK(lb.pick(back) == member(2));
  CHECK(std::string(lb.members(back)[1].state) == "probing");
  lb.started(member(2), back);
  // While the probe is out, nothing else goes there.
  for (int i = 0; i < 100; ++i) {
    CHECK(lb.pick(back) != member(2));
  }
  CHECK(lb.available(back) == 2);
  lb.finished(member(2), back + milliseconds(3), milliseconds(3), true);
  CHECK(std::string(lb.members(back + milliseconds(3))[1].state) == "alive");
  CHECK(lb.available(back + milliseconds(3)) == 3);
  CHECK(lb.ejections() == 1);
}

TEST_CASE("p2c: a retry avoids the member it excludes") {
  P2cPeakEwma lb(13);
  lb.update(members(2), kStart);
  const auto first = member(1);
  for (int i = 0; i < 100; ++i) {
    CHECK(lb.pick(kStart, &first) == member(2));
  }
  lb.update(members(3), kStart);
  std::map<tcp::endpoint, int> picks;
  for (int i = 0; i < 300; ++i) {
    ++picks[*lb.pick(kStart, &first)];
  }
  CHECK(picks[member(1)] == 0);
  CHECK(picks[member(2)] > 0);
  CHECK(picks[member(3)] > 0);

  // Not even in panic mode, nor when it is the one awaiting its probe.
  eject(lb, member(2), kStart);
  eject(lb, member(3), kStart);
  for (int i = 0; i < 100; ++i) {
    CHECK(lb.pick(kStart + seconds(6), &first) != member(1));
  }
}

TEST_CASE("p2c: update keeps the state of members still there and drops the others") {
  P2cPeakEwma lb(17);
  lb.update(members(2), kStart);
  lb.started(member(1), kStart);
  lb.finished(member(1), kStart + milliseconds(20), milliseconds(20), true);
  lb.started(member(2), kStart);
  lb.finished(member(2), kStart + milliseconds(40), milliseconds(40), true);
  lb.started(member(2), kStart + milliseconds(50));  // still in flight across the update
  eject(lb, member(1), kStart + milliseconds(50));
  lb.started(member(1), kStart + milliseconds(50));  // sent before; finishes after removal

  const SteadyTime t = kStart + milliseconds(60);
  lb.update({member(2), member(3), member(3)}, t);  // a duplicate is one member
  CHECK(lb.size() == 2);
  auto views = lb.members(t);
  CHECK(views[0].endpoint == member(2));
  CHECK(views[0].pending == 1);
  CHECK(views[0].ewmaMs == doctest::Approx(40.0).epsilon(0.01));
  CHECK(views[1].endpoint == member(3));
  CHECK(views[1].ewmaMs == doctest::Approx(views[0].ewmaMs));  // the kept members' average

  // Ends for a member that is gone change nothing.
  lb.finished(member(1), t, milliseconds(5), false);
  lb.finished(member(1), t, milliseconds(5), true);
  lb.started(member(1), t);
  CHECK(lb.size() == 2);
  CHECK(lb.ejections() == 1);
  for (int i = 0; i < 50; ++i) {
    CHECK(lb.pick(t) != member(1));
  }

  // Back again, it starts afresh: alive, whatever it did before.
  lb.update(members(3), t);
  views = lb.members(t);
  CHECK(views[0].endpoint == member(1));
  CHECK(std::string(views[0].state) == "alive");
  CHECK(views[0].pending == 0);
  CHECK(lb.available(t) == 3);
}

TEST_CASE("p2c: a serverset of thousands: members found by their index, kept across updates") {
  P2cPeakEwma lb(5);
  auto all = members(5000);
  all.push_back(member(10));  // a duplicate is one member, at any size
  lb.update(all, kStart);
  CHECK(lb.size() == 5000);
  lb.started(member(4321), kStart);
  lb.finished(member(4321), kStart + milliseconds(30), milliseconds(30), true);
  lb.started(member(4321), kStart + milliseconds(30));
  eject(lb, member(77), kStart + milliseconds(30));
  CHECK_FALSE(lb.usable(member(77), kStart + milliseconds(30)));
  CHECK(lb.usable(member(78), kStart + milliseconds(30)));
  CHECK_FALSE(lb.usable(member(6000), kStart + milliseconds(30)));

  // One member replaced among thousands: the others keep their state, the new one is found.
  auto next = members(5000);
  next.erase(next.begin());  // member 1 gone
  next.push_back(member(5001));
  const SteadyTime t = kStart + milliseconds(40);
  lb.update(next, t);
  CHECK(lb.size() == 5000);
  CHECK_FALSE(lb.usable(member(1), t));
  CHECK(lb.usable(member(5001), t));
  CHECK_FALSE(lb.usable(member(77), t));  // still ejected
  const auto views = lb.members(t);
  const auto kept = std::find_if(views.begin(), views.end(),
                                 [](const MemberView& v) { return v.endpoint == member(4321); });
  REQUIRE(kept != views.end());
  CHECK(kept->pending == 1);
  CHECK(kept->ewmaMs == doctest::Approx(30.0).epsilon(0.01));
  // Shrunk below the index's threshold, lookups scan again.
  lb.update(members(3), t);
  CHECK(lb.usable(member(2), t));
  CHECK_FALSE(lb.usable(member(4321), t));
}

// The members as a set, whatever their order in the array.
std::set<tcp::endpoint> held(const P2cPeakEwma& lb, SteadyTime now) {
  std::set<tcp::endpoint> out;
  for (const auto& v : lb.members(now)) {
    out.insert(v.endpoint);
  }
  return out;
}

TEST_CASE("p2c: a delta changes what it names and keeps every other member's state") {
  P2cPeakEwma lb(9);
  auto all = members(5000);
  lb.update(all, kStart);
  lb.started(member(4321), kStart);
  lb.finished(member(4321), kStart + milliseconds(30), milliseconds(30), true);
  lb.started(member(4321), kStart + milliseconds(30));  // in flight across the delta
  eject(lb, member(77), kStart + milliseconds(30));
  eject(lb, member(5000), kStart + milliseconds(30));  // the last: another takes its place
  const SteadyTime t = kStart + milliseconds(40);
  CHECK(lb.available(t) == 4998);

  const std::vector<tcp::endpoint> added{member(5001), member(4321)};  // one there already
  const std::vector<tcp::endpoint> removed{member(1), member(5000), member(9999)};  // one unknown
  lb.apply(added, removed, t);
  CHECK(lb.size() == 4999);
  CHECK_FALSE(lb.usable(member(1), t));
  CHECK_FALSE(lb.usable(member(5000), t));
  CHECK(lb.usable(member(5001), t));
  CHECK(lb.usable(member(4999), t));
  CHECK_FALSE(lb.usable(member(77), t));  // still ejected
  CHECK(lb.available(t) == 4998);
  auto expected = std::set<tcp::endpoint>(all.begin() + 1, all.end() - 1);
  expected.insert(member(5001));
  CHECK(held(lb, t) == expected);
  const auto views = lb.members(t);
  const auto find = [&](const tcp::endpoint& e) {
    return *std::find_if(views.begin(), views.end(),
                         [&](const MemberView& v) { return v.endpoint == e; });
  };
  CHECK(find(member(4321)).pending == 1);
  CHECK(find(member(4321)).ewmaMs == doctest::Approx(30.0).epsilon(0.01));
  // The kept members' latency, as far as a sample of them knows it (one of 4,999 has one).
  CHECK(find(member(5001)).ewmaMs >= 0.0);
  // The ejected member going and coming back: it starts afresh, and the count of members out
  // follows (a pick is two draws again once none is out).
  lb.apply({}, std::vector<tcp::endpoint>{member(77)}, t);
  CHECK(lb.available(t) == lb.size());
  lb.apply(std::vector<tcp::endpoint>{member(77)}, {}, t);
  CHECK(lb.usable(member(77), t));
  CHECK(lb.available(t) == lb.size());
}

TEST_CASE("p2c: a delta across the index's threshold, both ways, finds every member") {
  P2cPeakEwma lb(3);
  lb.update(members(10), kStart);
  std::vector<tcp::endpoint> more;
  for (int i = 11; i <= 40; ++i) {
    more.push_back(member(i));
  }
  more.push_back(member(11));  // a duplicate in the delta is one member
  lb.apply(more, {}, kStart);
  CHECK(lb.size() == 40);
  for (int i = 1; i <= 40; ++i) {
    CHECK(lb.usable(member(i), kStart));
  }
  std::vector<tcp::endpoint> fewer;
  for (int i = 1; i <= 35; ++i) {
    fewer.push_back(member(i));
  }
  lb.apply({}, fewer, kStart);
  CHECK(lb.size() == 5);
  for (int i = 1; i <= 40; ++i) {
    CHECK(lb.usable(member(i), kStart) == (i > 35));
  }
  lb.apply(std::vector<tcp::endpoint>{member(1)}, {}, kStart);
  CHECK(lb.size() == 6);
  CHECK(lb.usable(member(1), kStart));
}

TEST_CASE("p2c: the same seed makes the same picks") {
  const auto sequence = [](std::uint64_t seed) {
    Traffic t(5);
    t.lb = P2cPeakEwma(seed);
    t.lb.update(members(5), t.now);
    t.run(200);
    return t.order;
  };
  CHECK(sequence(7) == sequence(7));
  CHECK(sequence(7) != sequence(8));
}

TEST_CASE("p2c: a request passed over records no latency, and a probe passed over revives") {
  P2cPeakEwma lb(23);
  lb.update(members(2), kStart);
  lb.started(member(1), kStart);
  lb.finished(member(1), kStart + milliseconds(10), milliseconds(10), true);
  // Started, then sent elsewhere 500 ms later (a handshake's time): pending back to 0, and the
  // average still the one real answer's.
  lb.started(member(1), kStart + milliseconds(20));
  lb.passedOver(member(1), kStart + milliseconds(520));
  auto views = lb.members(kStart + milliseconds(520));
  CHECK(views[0].pending == 0);
  CHECK(views[0].ewmaMs < 10.0 + 1e-6);

  // An ejected member's probe passed over: the member answered, so it is alive again.
  eject(lb, member(2), kStart + seconds(1));
  const auto probe = kStart + seconds(60);  // past any back-off
  CHECK(lb.members(probe)[1].state == "probing");
  lb.started(member(2), probe);
  lb.passedOver(member(2), probe + milliseconds(5));
  CHECK(lb.members(probe + milliseconds(5))[1].state == "alive");
  CHECK(lb.available(probe + milliseconds(5)) == 2);
  // Unknown members change nothing.
  lb.passedOver(member(9), probe);
  CHECK(lb.size() == 2);
}

}  // namespace
}  // namespace sidecar
