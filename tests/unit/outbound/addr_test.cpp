// The address type's transitions: pending until a usable answer, bound for good after it, the
// stale mark beside either state, and a version that grows with each answer only.
#include "upstream/addr.h"

#include <doctest/doctest.h>

namespace sidecar {
namespace {

tcp::endpoint at(const char* ip, unsigned short port) {
  return {boost::asio::ip::make_address(ip), port};
}

using Endpoints = std::vector<tcp::endpoint>;

TEST_CASE("addr: pending has no endpoints; bound has its set, empty or not") {
  const auto p = Addr::pending();
  CHECK(p.isPending());
  CHECK_FALSE(p.isBound());
  CHECK(p.endpoints().empty());
  CHECK_FALSE(p.stale());
  CHECK(p.version() == 1);
  CHECK(Addr::pending(true).stale());  // a ZooKeeper route whose ensemble is away from the start

  const auto b = Addr::bound({at("10.0.0.1", 80)});
  CHECK(b.isBound());
  CHECK(b.state() == Addr::State::bound);
  CHECK(b.endpoints() == Endpoints{at("10.0.0.1", 80)});
  CHECK(Addr::bound({}).isBound());  // a serverset with no member is an answer: calls get 503
}

TEST_CASE("addr: an answer binds when it has an endpoint or awaits nothing") {
  const auto p = Addr::pending(true);
  const auto withOne = p.answered({at("10.0.0.1", 80)}, true, false);
  CHECK(withOne.isBound());  // a name still awaited does not hold up the member there is
  CHECK(withOne.version() == 2);
  CHECK_FALSE(withOne.stale());

  const auto empty = p.answered({}, false, false);
  CHECK(empty.isBound());  // listed, nothing awaited: bound to no member
  CHECK(empty.endpoints().empty());

  const auto waiting = p.answered({}, true, true);
  CHECK(waiting.isPending());  // only names, none looked up yet: calls keep waiting
  CHECK(waiting.stale());
  CHECK(waiting.version() == 2);
}

TEST_CASE("addr: bound stays bound, whatever a later answer holds") {
  const auto b = Addr::pending().answered({at("10.0.0.1", 80)}, false, false);
  const auto later = b.answered({}, true, false);  // its names looked up again, not answered yet
  CHECK(later.isBound());
  CHECK(later.endpoints().empty());
  CHECK(later.version() == b.version() + 1);
}

TEST_CASE("addr: the stale mark changes neither the state, the set nor the version") {
  const auto b = Addr::bound({at("10.0.0.1", 80), at("10.0.0.2", 80)}, false, 7);
  const auto s = b.withStale(true);
  CHECK(s.isBound());
  CHECK(s.stale());
  CHECK(s.endpoints() == b.endpoints());
  CHECK(s.version() == 7);
  CHECK_FALSE(s.withStale(false).stale());
  CHECK(Addr::pending(false).withStale(true).isPending());
  CHECK_FALSE(b.stale());  // the original is unchanged: values, never edited
}

TEST_CASE("addr: the next bound set carries what it added and removed from the one before") {
  const auto a = Addr::bound({at("10.0.0.1", 80), at("10.0.0.2", 80), at("10.0.0.3", 80)});
  auto b = a.answered({at("10.0.0.3", 80), at("10.0.0.4", 80), at("10.0.0.1", 80)}, false, false)
               .withDeltaFrom(a);
  REQUIRE(b.delta() != nullptr);
  CHECK(b.delta()->from == a.version());
  CHECK(b.delta()->added == Endpoints{at("10.0.0.4", 80)});
  CHECK(b.delta()->removed == Endpoints{at("10.0.0.2", 80)});
  // Staleness moves, the set does not: the same version and delta.
  const auto c = b.withStale(true);
  CHECK(c.version() == b.version());
  REQUIRE(c.delta() != nullptr);
  CHECK(c.delta()->added == b.delta()->added);
  // From a pending address, or from one that is not the version before: the whole set only.
  const auto p = Addr::pending();
  CHECK(p.answered({at("10.0.0.1", 80)}, false, false).withDeltaFrom(p).delta() == nullptr);
  CHECK(b.answered({}, false, false).withDeltaFrom(a).delta() == nullptr);
}

}  // namespace
}  // namespace sidecar
