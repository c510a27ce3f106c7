// What one serverset change costs a sidecar at N members, piece by piece, without ZooKeeper: on
// the control thread, the route directory's expansion of the announced members into addresses
// (outbound/names.h) and the delta beside the new set (Addr::withDeltaFrom); on each worker, the
// balancer taking in the whole set (P2cPeakEwma::update) or only the delta (apply). Also the
// balancer's heap per member. One member replaced per change, as in the fleet simulation's churn.
// With --aperture P N SIZE: the connections each of N members gets from P callers, each holding
// one to every member of its window (outbound/aperture.h), against the even spread of the same
// connections, for callers at hashed coordinates, at their positions among P peers, and, when
// P = N, for callers that are the members themselves (at their own positions).
// Usage: fleet-worker [N ...] (default 100 1000 10000), fleet-worker --aperture P N SIZE.
// See tests/bench/README.md.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "outbound/aperture.h"
#include "outbound/names.h"
#include "upstream/addr.h"
#include "upstream/balancer.h"

using namespace sidecar;
using Clock = std::chrono::steady_clock;

namespace {

tcp::endpoint member(std::size_t i) {
  return {asio::ip::make_address_v4(static_cast<asio::ip::address_v4::uint_type>(0x0a000000 + i)),
          8080};
}

registry::Endpoint announced(std::size_t i) { return {member(i).address().to_string(), 8080}; }

template <class F>
double microsPer(int rounds, F&& f) {
  const auto t0 = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    f(i);
  }
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / rounds;
}

void run(std::size_t n) {
  const int rounds = n >= 10'000 ? 50 : 500;
  const auto now = Clock::now();
  NameCache names{Duration(30'000)};

  // Control thread: announced members to addresses, then the delta from the set before.
  std::vector<registry::Endpoint> wanted;
  for (std::size_t i = 0; i < n; ++i) {
    wanted.push_back(announced(i));
  }
  std::size_t next = n;
  auto addr = Addr::bound(expandMembers(wanted, names).members);
  const double expand = microsPer(rounds, [&](int) {
    wanted[next % n] = announced(next);
    ++next;
    auto expanded = expandMembers(wanted, names);
    addr = addr.answered(std::move(expanded.members), false, false);
  });
  const double delta = microsPer(rounds, [&](int) {
    auto endpoints = addr.endpoints();
    endpoints[next % n] = member(next);
    ++next;
    addr = addr.answered(std::move(endpoints), false, false).withDeltaFrom(addr);
  });

  // A worker: the whole set, or the delta.
  std::vector<tcp::endpoint> set;
  for (std::size_t i = 0; i < n; ++i) {
    set.push_back(member(i));
  }
  const auto heap0 = mallinfo2().uordblks;
  P2cPeakEwma lb(1);
  lb.update(set, now);
  const auto heap1 = mallinfo2().uordblks;
  next = n;
  const double whole = microsPer(rounds, [&](int) {
    set[next % n] = member(next);
    ++next;
    lb.update(set, now);
  });
  const double applied = microsPer(rounds * 10, [&](int) {
    const tcp::endpoint gone = set[next % n];
    set[next % n] = member(next);
    const tcp::endpoint added[] = {set[next % n]};
    const tcp::endpoint removed[] = {gone};
    ++next;
    lb.apply(added, removed, now);
  });
  if (lb.size() != n) {
    std::fprintf(stderr, "balancer holds %zu members, not %zu\n", lb.size(), n);
    std::exit(1);
  }
  std::printf("| %zu | %.1f | %.1f | %.1f | %.2f | %.0f |\n", n, expand, delta, whole, applied,
              static_cast<double>(heap1 - heap0) / static_cast<double>(n));
}

void spread(const char* how, const std::vector<std::size_t>& per) {
  const auto [lo, hi] = std::minmax_element(per.begin(), per.end());
  std::size_t total = 0;
  for (auto n : per) {
    total += n;
  }
  // Against the even spread of the same connections (the ideal, unless a window was widened).
  const double even = static_cast<double>(total) / static_cast<double>(per.size());
  std::printf("| %s | %zu | %.2f | %zu | %zu | %.2f |\n", how, total, even, *lo, *hi,
              static_cast<double>(*hi) / even);
}

void aperture(std::size_t callers, std::size_t n, std::size_t size) {
  std::vector<tcp::endpoint> ring;
  for (std::size_t i = 0; i < n; ++i) {
    ring.push_back(member(i));
  }
  apertureOrder(ring);
  const double ideal = static_cast<double>(callers) * static_cast<double>(std::min(size, n)) /
                       static_cast<double>(n);
  std::printf(
      "P = %zu callers, N = %zu members, window %zu: ideal %.2f connections per member\n\n"
      "| callers' coordinates | connections | per member, mean | min | max | max / mean |\n"
      "| --- | ---: | ---: | ---: | ---: | ---: |\n",
      callers, n, size, ideal);
  std::printf("| no aperture | %zu | %zu | %zu | %zu | %.2f |\n", callers * n, callers, callers,
              callers, static_cast<double>(callers) / static_cast<double>(callers));
  std::map<tcp::endpoint, std::size_t> at;
  for (std::size_t i = 0; i < n; ++i) {
    at[ring[i]] = i;
  }
  std::vector<std::size_t> hashed(n, 0);
  for (std::size_t c = 0; c < callers; ++c) {
    // Each caller's own host:port, as a sidecar hashes it.
    const std::string key =
        "10.1." + std::to_string(c / 256) + "." + std::to_string(c % 256) + ":4140";
    for (const auto& e : apertureWindow(ring, apertureStart(apertureHash(key), n), size)) {
      ++hashed[at[e]];
    }
  }
  spread("hashed host:port", hashed);
  // Callers that announce in a serverset of their own: each at its position among its peers,
  // its window at least the ring over the callers.
  std::vector<std::size_t> peers(n, 0);
  const std::size_t wide = std::max(size, (n + callers - 1) / callers);
  for (std::size_t c = 0; c < callers; ++c) {
    for (const auto& e : apertureWindow(ring, c * n / callers, wide)) {
      ++peers[at[e]];
    }
  }
  spread("position among its peers", peers);
  if (callers == n) {
    std::vector<std::size_t> own(n, 0);
    for (std::size_t c = 0; c < callers; ++c) {
      for (const auto& e : apertureWindow(ring, c, size)) {
        ++own[at[e]];
      }
    }
    spread("own member's position", own);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--aperture") {
    aperture(std::strtoul(argv[2], nullptr, 10), std::strtoul(argv[3], nullptr, 10),
             std::strtoul(argv[4], nullptr, 10));
    return 0;
  }
  std::printf(
      "| members | control: expand + Addr (us) | control: delta (us) | worker: whole set (us) | "
      "worker: delta (us) | balancer heap per member (bytes) |\n| ---: | ---: | ---: | ---: | "
      "---: | ---: |\n");
  if (argc < 2) {
    for (std::size_t n : {100, 1000, 10'000}) {
      run(n);
    }
  }
  for (int i = 1; i < argc; ++i) {
    run(std::strtoul(argv[i], nullptr, 10));
  }
}
