// The announcer's state machine against an in-memory ZooKeeper: health-gated, one member of ours
// at most, re-announced after deletion or expiry, and retries of one kind never cancelling
// retries of another.
#include <doctest/doctest.h>
#include <registry/announcer.h>

#include <boost/json/parse.hpp>

#include "fake_zk.h"

using namespace registry;
using registry::testing::FakeZk;
using registry::testing::runUntil;
using registry::testing::settle;

namespace {

constexpr auto kPath = "/discovery/test/svc";

struct Fixture {
  boost::asio::io_context ioc;
  FakeZk zk{ioc};
  int announcedCount = 0, reannouncedCount = 0, withdrawnCount = 0;
  Announcer announcer{ioc, config(), events(), zk.factory()};

  static AnnouncerConfig config() {
    AnnouncerConfig c;
    c.connect = "fake:2181";
    c.path = kPath;
    c.instance.serviceEndpoint = {"10.0.0.5", 8443};
    c.firstRetryDelay = std::chrono::milliseconds(5);
    c.maxRetryDelay = std::chrono::milliseconds(20);
    return c;
  }
  AnnouncerEvents events() {
    return {.announced = [this] { ++announcedCount; },
            .reannounced = [this] { ++reannouncedCount; },
            .withdrawn = [this] { ++withdrawnCount; },
            .sessionState = {}};
  }
  std::vector<std::string> members() { return zk.childrenOf(kPath); }
  // One string field of /admin/announcer's JSON ("" for null).
  std::string status(const char* key) {
    auto v = boost::json::parse(announcer.statusJson()).as_object().at(key);
    return v.is_string() ? std::string(v.as_string()) : "";
  }

  // Started, connected and healthy: one member.
  void announce() {
    announcer.start();
    zk.connect();
    announcer.setHealthy(true);
    settle(ioc);
    REQUIRE(announcer.announced());
  }
};

}  // namespace

TEST_CASE("a healthy instance gets one ephemeral member with its data; unhealthy, none") {
  Fixture f;
  f.announcer.start();
  f.zk.connect();
  settle(f.ioc);
  CHECK(f.members().empty());  // not healthy yet
  CHECK(f.status("status") == "waiting_for_health");

  f.announcer.setHealthy(true);
  settle(f.ioc);
  REQUIRE(f.members().size() == 1);
  const std::string member = std::string(kPath) + "/" + f.members()[0];
  CHECK(f.members()[0].starts_with("member_"));
  CHECK(f.zk.node(member).owner == f.zk.newestId());
  CHECK(
      f.zk.node(member).data ==
      R"({"serviceEndpoint":{"host":"10.0.0.5","port":8443},"additionalEndpoints":{},"status":"ALIVE"})");
  CHECK(f.zk.node("/discovery/test").owner == 0);  // parents are persistent
  CHECK(f.status("member") == member);
  CHECK(f.announcedCount == 1);

  f.announcer.setHealthy(false);
  settle(f.ioc);
  CHECK(f.members().empty());
  CHECK_FALSE(f.announcer.announced());
  CHECK(f.withdrawnCount == 1);
}

TEST_CASE("a member deleted by someone else is announced again") {
  Fixture f;
  f.announce();
  const auto first = f.members().at(0);
  f.zk.erase(std::string(kPath) + "/" + first);
  settle(f.ioc);
  REQUIRE(f.members().size() == 1);
  CHECK(f.members()[0] != first);
  CHECK(f.reannouncedCount == 1);
}

TEST_CASE("a member this session already owns is adopted, not doubled") {
  Fixture f;
  f.announcer.start();
  f.zk.connect();
  settle(f.ioc);
  // A create whose answer was lost: the node exists, owned by our session.
  f.zk.put("/discovery", "");
  f.zk.put("/discovery/test", "");
  f.zk.put(kPath, "");
  f.zk.put(std::string(kPath) + "/member_0000000041", "{}", f.zk.newestId());
  f.zk.put(std::string(kPath) + "/member_0000000042", "{}", 7);  // someone else's
  f.announcer.setHealthy(true);
  settle(f.ioc);
  CHECK(f.members().size() == 2);
  CHECK(f.status("member") == std::string(kPath) + "/member_0000000041");
}

TEST_CASE("a member that could not be checked is not created over") {
  Fixture f;
  f.announcer.start();
  f.zk.connect();
  settle(f.ioc);
  f.zk.put("/discovery", "");
  f.zk.put("/discovery/test", "");
  f.zk.put(kPath, "");
  f.zk.put(std::string(kPath) + "/member_0000000041", "{}", f.zk.newestId());
  f.zk.failNext("exists", ZkError::OperationTimeout, std::string(kPath) + "/member_");
  f.announcer.setHealthy(true);
  settle(f.ioc);
  CHECK(f.members().size() == 1);
  CHECK(f.status("last_error") == "check_members: operation timeout");
  // The retry reads it and adopts it.
  REQUIRE(runUntil(f.ioc, [&] { return f.announcer.announced(); }));
  CHECK(f.members().size() == 1);
}

TEST_CASE("no auth is reported and not retried; a transient failure is retried") {
  Fixture f;
  f.announcer.start();
  f.zk.connect();
  f.zk.failNext("create", ZkError::NoAuth);
  f.announcer.setHealthy(true);
  settle(f.ioc);
  CHECK(f.status("last_error") == "create_parent: not authenticated");
  const auto calls = f.zk.calls.size();
  runUntil(
      f.ioc, [] { return false; }, std::chrono::milliseconds(50));  // several retry delays
  CHECK(f.zk.calls.size() == calls);
  CHECK(f.members().empty());

  Fixture g;
  g.announcer.start();
  g.zk.connect();
  g.zk.failNext("create", ZkError::ConnectionLoss, std::string(kPath) + "/member_");
  g.announcer.setHealthy(true);
  REQUIRE(runUntil(g.ioc, [&] { return g.announcer.announced(); }));
  CHECK(g.members().size() == 1);
  CHECK(g.status("last_error").empty());
}

TEST_CASE("after expiry a new session announces again") {
  Fixture f;
  f.announce();
  f.zk.expire();
  settle(f.ioc);
  CHECK(f.members().empty());  // the ephemeral went with the session
  CHECK_FALSE(f.announcer.announced());
  REQUIRE(runUntil(f.ioc, [&] { return f.zk.opened() == 2; }));
  f.zk.connect();
  settle(f.ioc);
  CHECK(f.members().size() == 1);
  CHECK(f.zk.node(std::string(kPath) + "/" + f.members()[0]).owner == f.zk.newestId());
  CHECK(f.reannouncedCount == 1);
}

// With one timer for both, the reconcile retry re-armed the timer that was to re-open the
// session, and the announcer stayed on its expired session for good.
TEST_CASE("a failed step retried while a new session is pending does not cancel the new session") {
  Fixture f;
  f.announcer.start();
  f.zk.connect();
  settle(f.ioc);
  f.zk.holding = true;
  f.announcer.setHealthy(true);  // create_parent is in flight...
  settle(f.ioc);
  REQUIRE(f.zk.held() == 1);
  f.zk.holding = false;
  f.zk.expire();  // ...the session expires: a new one is due after the retry delay...
  settle(f.ioc);
  f.zk.release(ZkError::ConnectionLoss);  // ...and then the create's answer arrives, failed
  settle(f.ioc);
  CHECK(f.status("last_error") == "create_parent: connection loss");
  REQUIRE(runUntil(f.ioc, [&] { return f.zk.opened() == 2; }));
  f.zk.connect();
  settle(f.ioc);
  CHECK(f.members().size() == 1);
}

TEST_CASE("a session due while a step retry is pending still gets made, and announces") {
  Fixture f;
  f.announcer.start();
  f.zk.connect();
  f.zk.failNext("create", ZkError::OperationTimeout);
  f.announcer.setHealthy(true);
  settle(f.ioc);  // a reconcile retry is pending
  f.zk.expire();
  REQUIRE(runUntil(f.ioc, [&] { return f.zk.opened() == 2; }));
  f.zk.connect();
  REQUIRE(runUntil(f.ioc, [&] { return f.announcer.announced(); }));
  CHECK(f.members().size() == 1);
}

TEST_CASE("shutdown deletes the member, then calls back; nothing is announced afterwards") {
  Fixture f;
  f.announce();
  bool done = false;
  f.announcer.shutdown(std::chrono::seconds(5), [&] { done = true; });
  settle(f.ioc);
  CHECK(done);
  CHECK(f.members().empty());
  CHECK(f.status("status") == "stopping");
  f.announcer.setHealthy(false);
  f.announcer.setHealthy(true);
  settle(f.ioc);
  CHECK(f.members().empty());
}

TEST_CASE("shutdown while disconnected gives up after its timeout; an expiry ends it at once") {
  Fixture f;
  f.announce();
  f.zk.disconnect();
  settle(f.ioc);
  bool done = false;
  f.announcer.shutdown(std::chrono::milliseconds(20), [&] { done = true; });
  settle(f.ioc);
  CHECK_FALSE(done);
  CHECK(runUntil(f.ioc, [&] { return done; }));

  Fixture g;
  g.announce();
  g.zk.disconnect();
  settle(g.ioc);
  bool gDone = false;
  g.announcer.shutdown(std::chrono::seconds(5), [&] { gDone = true; });
  g.zk.expire();
  settle(g.ioc);
  CHECK(gDone);
  CHECK(g.zk.opened() == 1);
}

TEST_CASE("destroying the announcer closes its session: the member goes, no callback runs") {
  boost::asio::io_context ioc;
  FakeZk zk{ioc};
  int announced = 0;
  {
    AnnouncerEvents events{[&] { ++announced; }, {}, {}, {}};
    Announcer a{ioc, Fixture::config(), events, zk.factory()};
    a.start();
    zk.connect();
    a.setHealthy(true);
    settle(ioc);
    REQUIRE(announced == 1);
    zk.expire();  // a re-open is now pending on a timer
    settle(ioc);
  }
  CHECK(zk.childrenOf(kPath).empty());
  runUntil(
      ioc, [] { return false; }, std::chrono::milliseconds(30));
  CHECK(zk.opened() == 1);
}
