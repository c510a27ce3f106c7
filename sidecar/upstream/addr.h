#pragma once
// What a name is bound to, as Finagle's Addr: the local service's endpoint (--upstream) and each
// outbound route's members are one type, so that the inbound path, outbound HTTP, outbound Thrift
// and the admin views read the same states the same way. A value never changes: the control
// thread makes a new one and hands workers a shared_ptr to it, read without a lock.
//
// Two states, the two anything sets today (docs/outbound.md, "Addresses", says why there is no
// negative or failed one): pending until the source's first usable answer, bound after that.
// stale is a mark beside the state, not a state: a caller treats a stale bound set as a bound one
// (the last known members keep serving while ZooKeeper cannot be read), and only operators see the
// difference.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "net/io.h"

namespace sidecar {

// Endpoints in hashed containers (the balancer's index, a set's delta).
struct EndpointHash {
  std::size_t operator()(const tcp::endpoint& e) const noexcept {
    const auto a = e.address();
    std::size_t h = a.is_v4()
                        ? std::hash<std::uint32_t>{}(a.to_v4().to_uint())
                        : std::hash<std::string_view>{}(std::string_view(
                              reinterpret_cast<const char*>(a.to_v6().to_bytes().data()), 16));
    return h ^ (std::size_t{e.port()} * 0x9e3779b97f4a7c15ull);
  }
};

class Addr {
 public:
  enum class State : std::uint8_t {
    pending,  // no usable answer yet: a call waits for one (--resolve-timeout), then 503
    bound,    // endpoints, possibly none: calls are balanced over them
  };

  // No answer yet; stale: the source cannot be read either (a ZooKeeper route from the start).
  static Addr pending(bool stale = false, std::uint64_t version = 1) {
    return Addr(State::pending, {}, stale, version);
  }
  static Addr bound(std::vector<tcp::endpoint> endpoints, bool stale = false,
                    std::uint64_t version = 1) {
    return Addr(State::bound, std::move(endpoints), stale, version);
  }

  // The source's next answer, one version on. awaited: some of its endpoints are not known yet
  // (host names without a first lookup). It binds once it has an endpoint or awaits nothing, and
  // stays bound: a call that found members once never waits again, it takes what there is.
  Addr answered(std::vector<tcp::endpoint> endpoints, bool awaited, bool stale) const {
    const bool bind = isBound() || !endpoints.empty() || !awaited;
    return Addr(bind ? State::bound : State::pending, std::move(endpoints), stale, version_ + 1);
  }
  // The same state and endpoints with the source readable again or not. The version stays: the
  // set did not change.
  Addr withStale(bool stale) const {
    Addr a(state_, endpoints_, stale, version_);
    a.delta_ = delta_;
    return a;
  }

  // What changed from the version before (from): a reader that holds that version (a worker's
  // balancer) applies the endpoints added and removed instead of taking in the whole set, so a
  // change costs it what changed. Sets, both: an endpoint is in endpoints() once.
  struct Delta {
    std::uint64_t from = 0;
    std::vector<tcp::endpoint> added;
    std::vector<tcp::endpoint> removed;
  };
  // This address with the delta from before, when both are bound (none otherwise: a reader takes
  // the whole set). O(N) once, on the thread that makes it, for all readers.
  Addr withDeltaFrom(const Addr& before) &&;
  // None: the whole set is the only way to it.
  const Delta* delta() const { return delta_.get(); }

  State state() const { return state_; }
  bool isPending() const { return state_ == State::pending; }
  bool isBound() const { return state_ == State::bound; }
  // Bound: the set (possibly empty); pending: empty.
  const std::vector<tcp::endpoint>& endpoints() const { return endpoints_; }
  // The source cannot be read now: these are the last endpoints it gave (or it never answered).
  bool stale() const { return stale_; }
  // Grows with every new answer.
  std::uint64_t version() const { return version_; }

 private:
  using Endpoints = std::vector<tcp::endpoint>;
  Addr(State state, Endpoints endpoints, bool stale, std::uint64_t version)
      : endpoints_(std::move(endpoints)), version_(version), state_(state), stale_(stale) {}

  Endpoints endpoints_;
  std::shared_ptr<const Delta> delta_;
  std::uint64_t version_;
  State state_;
  bool stale_;
};

inline Addr Addr::withDeltaFrom(const Addr& before) && {
  delta_.reset();
  if (!isBound() || !before.isBound() || version_ != before.version_ + 1) {
    return std::move(*this);
  }
  auto d = std::make_shared<Delta>();
  d->from = before.version_;
  // Hashing both sides: a set's order is the listing's, which need not follow the endpoints'.
  std::unordered_set<tcp::endpoint, EndpointHash> old(before.endpoints_.begin(),
                                                      before.endpoints_.end());
  for (const auto& e : endpoints_) {
    if (old.erase(e) == 0) {
      d->added.push_back(e);
    }
  }
  d->removed.assign(old.begin(), old.end());
  delta_ = std::move(d);
  return std::move(*this);
}

}  // namespace sidecar
