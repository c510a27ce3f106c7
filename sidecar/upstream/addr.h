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
#include <utility>
#include <vector>

#include "net/io.h"

namespace sidecar {

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
  Addr withStale(bool stale) const { return Addr(state_, endpoints_, stale, version_); }

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
  std::uint64_t version_;
  State state_;
  bool stale_;
};

}  // namespace sidecar
