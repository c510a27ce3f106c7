// Resolvers of one ensemble share one ZooKeeper session: each sees its own watches only, all
// replace the session together when it expires, and it closes with the last of them.
#include <doctest/doctest.h>
#include <registry/resolver.h>
#include <registry/shared_session.h>

#include <algorithm>
#include <map>
#include <optional>

#include "fake_zk.h"

using namespace registry;
using registry::testing::FakeZk;
using registry::testing::runUntil;
using registry::testing::settle;

namespace {

std::string memberData(const std::string& host, uint16_t port) {
  ServiceInstance i;
  i.serviceEndpoint = {host, port};
  return encodeServiceInstance(i);
}

struct Fixture {
  boost::asio::io_context ioc;
  FakeZk zk{ioc};
  SharedZkSessions sessions{ioc, zk.factory()};
  std::map<std::string, std::optional<ServersetResolver>> resolvers;
  std::map<std::string, int> updates;

  Fixture() {
    zk.put("/d", "");
    for (const char* s : {"/d/a", "/d/b", "/d/c"}) {
      zk.put(s, "");
    }
  }
  ServersetResolver& make(const std::string& path, const std::string& connect = "zk1:2181") {
    ResolverOptions options;
    options.coalesceWindow = std::chrono::milliseconds(0);  // settle() runs no timer
    options.retryDelay = std::chrono::milliseconds(5);
    options.connect = sessions.factory();
    auto& r = resolvers[path];
    r.emplace(ioc, ServersetAddress{connect, path, std::nullopt, ""}, options,
              [this, path](const ServersetSnapshot&) { ++updates[path]; });
    r->start();
    return *r;
  }
  std::size_t members(const std::string& path) {
    auto s = resolvers[path]->snapshot();
    return s ? s->members.size() : 0;
  }
};

}  // namespace

TEST_CASE("resolvers of one ensemble share one session, each woken by its own watches only") {
  Fixture f;
  f.zk.put("/d/a/member_0000000001", memberData("10.0.0.1", 1));
  f.make("/d/a");
  f.make("/d/b");
  f.zk.connect();
  settle(f.ioc);
  CHECK(f.zk.opened() == 1);
  CHECK(f.sessions.open() == 1);
  CHECK(f.members("/d/a") == 1);
  CHECK(f.members("/d/b") == 0);
  const int bBefore = f.updates["/d/b"];
  f.zk.put("/d/a/member_0000000002", memberData("10.0.0.2", 2));
  settle(f.ioc);
  CHECK(f.members("/d/a") == 2);
  CHECK(f.updates["/d/b"] == bBefore);  // /d/a's watch did not make /d/b list again
  f.zk.put("/d/b/member_0000000003", memberData("10.0.0.3", 3));
  settle(f.ioc);
  CHECK(f.members("/d/b") == 1);

  // A resolver made later joins the connected session and lists at once.
  f.zk.put("/d/c/member_0000000004", memberData("10.0.0.4", 4));
  f.make("/d/c");
  settle(f.ioc);
  CHECK(f.zk.opened() == 1);
  CHECK(f.members("/d/c") == 1);
  CHECK_FALSE(f.resolvers["/d/c"]->stale());

  // Another ensemble has its own session.
  f.make("/d/a", "zk2:2181");
  CHECK(f.zk.opened() == 2);
}

TEST_CASE("an expired shared session is replaced once, for all its resolvers") {
  Fixture f;
  f.zk.put("/d/a/member_0000000001", memberData("10.0.0.1", 1));
  f.make("/d/a");
  f.make("/d/b");
  f.zk.connect();
  settle(f.ioc);
  f.zk.expire();
  settle(f.ioc);
  REQUIRE(runUntil(f.ioc, [&] { return f.zk.opened() == 2; }));
  settle(f.ioc);
  CHECK(f.zk.opened() == 2);  // one new session, not one per resolver
  CHECK(f.resolvers["/d/a"]->stale());
  f.zk.connect();
  settle(f.ioc);
  CHECK_FALSE(f.resolvers["/d/a"]->stale());
  CHECK_FALSE(f.resolvers["/d/b"]->stale());
  CHECK(f.members("/d/a") == 1);
  f.zk.put("/d/b/member_0000000002", memberData("10.0.0.2", 2));
  settle(f.ioc);
  CHECK(f.members("/d/b") == 1);  // watches set again on the new session
}

TEST_CASE("the shared session closes with its last resolver; nothing is called back after") {
  Fixture f;
  f.make("/d/a");
  f.make("/d/b");
  f.zk.connect();
  settle(f.ioc);
  const int aBefore = f.updates["/d/a"];
  f.resolvers["/d/a"].reset();
  f.zk.put("/d/a/member_0000000001", memberData("10.0.0.1", 1));
  f.zk.put("/d/b/member_0000000002", memberData("10.0.0.2", 2));
  settle(f.ioc);
  CHECK(f.updates["/d/a"] == aBefore);
  CHECK(f.members("/d/b") == 1);
  CHECK(f.sessions.open() == 1);
  f.resolvers["/d/b"].reset();
  settle(f.ioc);
  CHECK(f.sessions.open() == 0);
}

// Issue 25, item 6: a route that expires takes its watches with it; they were left on the shared
// session (111 watches held for 100 names that did not exist).
TEST_CASE("a resolver that goes removes its watches from the shared session, not another's") {
  Fixture f;
  f.make("/d/a");
  f.make("/d/nowhere");  // no such serverset: an exists watch waits for it
  auto& twin = f.resolvers["/d/b"];
  f.make("/d/b");
  f.zk.connect();
  settle(f.ioc);
  const auto before = f.zk.watchCount();
  CHECK(before == 3);
  f.resolvers["/d/nowhere"].reset();
  settle(f.ioc);
  CHECK(f.zk.watchCount() == before - 1);
  CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(), "removeWatches /d/nowhere") == 1);
  // Two readers of one path: the first to go leaves the watch to the other.
  ResolverOptions options;
  options.coalesceWindow = std::chrono::milliseconds(0);  // settle() runs no timer
  options.connect = f.sessions.factory();
  int updates = 0;
  std::optional<ServersetResolver> second;
  second.emplace(f.ioc, ServersetAddress{"zk1:2181", "/d/b", std::nullopt, ""}, options,
                 [&](const ServersetSnapshot&) { ++updates; });
  second->start();
  settle(f.ioc);
  twin.reset();
  settle(f.ioc);
  CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(), "removeWatches /d/b") == 0);
  const int seen = updates;
  f.zk.put("/d/b/member_0000000003", memberData("10.0.0.3", 3));
  settle(f.ioc);
  CHECK(updates == seen + 1);
  second.reset();
  settle(f.ioc);
  CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(), "removeWatches /d/b") == 1);
}
