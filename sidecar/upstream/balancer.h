#pragma once
// Which member of a route gets the next request: Finagle's p2cPeakEwma. Each member carries a
// peak-sensitive moving average of its round-trip time; the cost of sending it one more request
// is that average × (pending + 1); of two members drawn at random the cheaper one wins (the
// power of two choices). Failure accrual takes failing members out; when half or more are out
// the balancer uses all of them (panic mode), since a mass ejection is more likely our fault.
//
// One balancer per route per worker thread, so no locks. Pure logic: the caller passes the time
// and reports each request's start and end; members are addressed by endpoint because the set
// changes while requests are in flight.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.h"
#include "net/io.h"
#include "upstream/accrual.h"
#include "upstream/addr.h"

namespace sidecar {

struct BalancerSettings {
  Duration decay{10'000};  // mean lifetime of a latency sample in the average
  AccrualSettings accrual;
};

// One member's load as Finagle's PeakEwma.Metric computes it, in nanoseconds.
class PeakEwmaLoad {
 public:
  PeakEwmaLoad(std::chrono::nanoseconds decay, SteadyTime now) : ewma_(decay), stamp_(now) {}

  // The cost of one more request. Reading decays the average to now (an idle member's latency
  // is forgotten over `decay`), as Finagle's does: this is what makes a slow member that got
  // no traffic for a while worth trying again.
  double load(SteadyTime now);
  // The same value without recording the decay (for views).
  double peek(SteadyTime now) const;
  double ewmaNanos(SteadyTime now) const;
  std::uint32_t pending() const { return pending_; }

  void start() { ++pending_; }
  void end(SteadyTime now, std::chrono::nanoseconds rtt);
  void abandon() { pending_ -= pending_ > 0 ? 1 : 0; }  // ended without a latency to record
  // A new member's starting average (instead of no history at all).
  void seed(SteadyTime now, double ewmaNanos);

 private:
  void observe(SteadyTime now, double rttNanos);
  double cost(double ewmaNanos) const;

  Ema ewma_;
  SteadyTime stamp_;  // latest time seen: the average's stamps never go back
  std::uint32_t pending_ = 0;
};

struct MemberView {
  tcp::endpoint endpoint;
  double cost = 0;  // ms: ewma × (pending + 1), or Finagle's penalty (about 1.4e8) while
                    // the first requests to a member with no latency yet are pending
  double ewmaMs = 0;
  std::uint32_t pending = 0;
  std::string_view state;  // "alive", "ejected", "probing"
};

class P2cPeakEwma {
 public:
  explicit P2cPeakEwma(std::uint64_t seed, BalancerSettings settings = {});

  // The route's members now. Those still present keep their latency, load and accrual state;
  // new ones start at the average latency of the kept ones (not zero, so they are not flooded);
  // the others are dropped, and what is still in flight to them finishes harmlessly.
  void update(const std::vector<tcp::endpoint>& endpoints, SteadyTime now);
  // The same change given as what it adds and removes to the set this balancer holds (an
  // Addr::Delta): costs what changed, not the set's size. The members kept keep their state; a
  // new one starts at the average latency of a sample of at most kSeedSample kept members. An
  // endpoint added that is there already, or removed that is not, is ignored.
  void apply(std::span<const tcp::endpoint> added, std::span<const tcp::endpoint> removed,
             SteadyTime now);

  // The member for the next request, none when the route has none. `exclude` lists the members
  // a retry must avoid (those the request has already failed on); one of them is returned only
  // when every member is excluded (then the caller knows it has tried them all). A member whose
  // back-off has just ended takes the next request (its probe). Does not allocate. Call
  // started() with the member right away: the pending count is part of the cost.
  std::optional<tcp::endpoint> pick(SteadyTime now, std::span<const tcp::endpoint> exclude = {});
  // The same with at most one member to avoid.
  std::optional<tcp::endpoint> pick(SteadyTime now, const tcp::endpoint* exclude) {
    return pick(now, exclude ? std::span<const tcp::endpoint>(exclude, 1)
                             : std::span<const tcp::endpoint>());
  }

  // A request was sent (pending + 1), and it ended: `rtt` from start to end, `ok` as the
  // caller classifies it (a refused or reset connection, a 5xx: not ok). Unknown endpoints (a
  // member dropped meanwhile) are ignored.
  void started(const tcp::endpoint& member, SteadyTime now);
  void finished(const tcp::endpoint& member, SteadyTime now, std::chrono::nanoseconds rtt, bool ok);
  // A request started on member went elsewhere before it was sent (a gRPC call finding the
  // member speaks only HTTP/1.1): pending - 1 and no latency sample; the member answered (its
  // handshake), so a probe it was waiting for counts as a success.
  void passedOver(const tcp::endpoint& member, SteadyTime now);

  // For the admin page and metrics.
  std::size_t size() const { return members_.size(); }
  std::size_t available(SteadyTime now) const;  // neither ejected nor waiting on a probe
  // A member of the set that is not ejected now (alive, or due its probe).
  bool usable(const tcp::endpoint& member, SteadyTime now) const;
  std::uint64_t ejections() const { return ejections_; }  // alive members ejected, in total
  std::vector<MemberView> members(SteadyTime now) const;

 private:
  struct Member {
    tcp::endpoint endpoint;
    PeakEwmaLoad load;
    FailureAccrual accrual;
  };
  // Up to this many members a lookup scans them (faster than hashing for a handful); above it
  // an index by endpoint finds one at once, so that a request's cost and an update's (O(N))
  // stay flat in a serverset of thousands.
  static constexpr std::size_t kScanLimit = 16;
  // A delta's new members are seeded from this many kept members at most, spread over the set.
  static constexpr std::size_t kSeedSample = 64;
  using Index = std::unordered_map<tcp::endpoint, std::size_t, EndpointHash>;
  // The average latency of the members with one, over at most `most` of them spread over the set
  // (0: all); 0 when none has one.
  double meanEwma(SteadyTime now, std::size_t most) const;
  Member* find(const tcp::endpoint& e);
  const Member* find(const tcp::endpoint& e) const;
  void counted(FailureAccrual::Change change);  // an ejection or a revival, in out_

  BalancerSettings settings_;
  std::mt19937_64 rng_;
  std::vector<Member> members_;
  Index index_;          // members_' positions by endpoint, when more than kScanLimit
  std::size_t out_ = 0;  // members ejected or probing: while none is, a pick is two draws
  std::uint64_t ejections_ = 0;
};

}  // namespace sidecar
