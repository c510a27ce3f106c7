// The serverset resolver against an in-memory ZooKeeper: only complete listings are published,
// the last one keeps serving (marked stale) while ZooKeeper is away, and nothing runs after the
// resolver is destroyed.
#include <doctest/doctest.h>
#include <registry/resolver.h>

#include <algorithm>
#include <stdexcept>
#include <thread>

#include "fake_zk.h"

using namespace registry;
using registry::testing::FakeZk;
using registry::testing::runUntil;
using registry::testing::settle;

namespace {

constexpr auto kPath = "/discovery/prod/svc";

std::string memberData(const std::string& host, uint16_t port, Status status = Status::Alive) {
  ServiceInstance i;
  i.serviceEndpoint = {host, port};
  i.additionalEndpoints = {{"admin", {host, 9990}}};
  i.status = status;
  return encodeServiceInstance(i);
}

struct Fixture {
  boost::asio::io_context ioc;
  FakeZk zk{ioc};
  std::vector<ServersetSnapshot> updates;
  std::vector<bool> staleChanges;
  std::optional<ServersetResolver> resolver;

  // coalesce: ResolverOptions::coalesceWindow; 0 (every change listed at once) unless the test
  // is about it, so that settle() sees each change through.
  explicit Fixture(std::string endpoint = "",
                   std::chrono::milliseconds coalesce = std::chrono::milliseconds(0)) {
    zk.put("/discovery", "");
    zk.put("/discovery/prod", "");
    zk.put(kPath, "");
    make(std::move(endpoint), coalesce);
  }
  void make(std::string endpoint,
            std::chrono::milliseconds coalesce = std::chrono::milliseconds(0)) {
    ResolverOptions options;
    options.retryDelay = std::chrono::milliseconds(5);
    options.coalesceWindow = coalesce;
    options.connect = zk.factory();
    resolver.emplace(
        ioc, ServersetAddress{"fake:2181", kPath, std::nullopt, std::move(endpoint)}, options,
        [this](const ServersetSnapshot& s) { updates.push_back(s); },
        [this](bool stale) { staleChanges.push_back(stale); });
  }
  void add(const std::string& name, const std::string& data) {
    zk.put(std::string(kPath) + "/" + name, data);
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, m] : resolver->snapshot()->members) {
      out.push_back(name);
    }
    return out;
  }
  void startConnected() {
    resolver->start();
    zk.connect();
    settle(ioc);
  }
};

using Names = std::vector<std::string>;

}  // namespace

TEST_CASE("the first complete listing is published: ALIVE members, the malformed named") {
  Fixture f("admin");
  f.add("member_0000000001", memberData("10.0.0.1", 8443));
  f.add("member_0000000002", memberData("10.0.0.2", 8443, Status::Starting));
  f.add("member_0000000003", "{not json");
  f.add("lock_0000000004", memberData("10.0.0.4", 8443));  // not a member
  CHECK(f.resolver->stale());
  CHECK_FALSE(f.resolver->snapshot());
  f.startConnected();
  REQUIRE(f.updates.size() == 1);
  CHECK(f.names() == Names{"member_0000000001"});
  CHECK(f.resolver->snapshot()->members.at("member_0000000001").endpoint ==
        Endpoint{"10.0.0.1", 9990});
  CHECK(f.updates[0].malformed.count("member_0000000003") == 1);
  CHECK_FALSE(f.resolver->stale());
  CHECK(f.staleChanges == std::vector<bool>{false});
}

TEST_CASE("members coming and going are published; known members are not read again") {
  Fixture f;
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  f.startConnected();
  f.add("member_0000000002", memberData("10.0.0.2", 2));
  settle(f.ioc);
  CHECK(f.names() == Names{"member_0000000001", "member_0000000002"});
  CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(),
                   "get " + std::string(kPath) + "/member_0000000001") == 1);
  f.zk.erase(std::string(kPath) + "/member_0000000001");
  settle(f.ioc);
  CHECK(f.names() == Names{"member_0000000002"});
}

TEST_CASE("a listing with a member that could not be read is not published; the last one stays") {
  Fixture f;
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  f.startConnected();
  auto before = f.resolver->snapshot();
  f.zk.failNext("get", ZkError::OperationTimeout);
  f.add("member_0000000002", memberData("10.0.0.2", 2));
  settle(f.ioc);
  CHECK(f.updates.size() == 1);
  CHECK(f.resolver->snapshot() == before);  // the same immutable snapshot
  CHECK(f.resolver->stale());
  // Listed again after the retry delay: complete this time.
  REQUIRE(runUntil(f.ioc, [&] { return f.updates.size() == 2; }));
  CHECK(f.names() == Names{"member_0000000001", "member_0000000002"});
  CHECK_FALSE(f.resolver->stale());
  CHECK(f.staleChanges == std::vector<bool>{false, true, false});
  CHECK(before->members.size() == 1);  // what a worker held did not change under it
}

TEST_CASE("a lost connection marks the set stale and keeps it; the reconnect lists again") {
  Fixture f;
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  f.startConnected();
  f.zk.disconnect();
  settle(f.ioc);
  CHECK(f.resolver->stale());
  CHECK(f.names() == Names{"member_0000000001"});
  f.add("member_0000000002", memberData("10.0.0.2", 2));  // written by someone else meanwhile
  f.zk.connect();
  settle(f.ioc);
  CHECK_FALSE(f.resolver->stale());
  CHECK(f.names() == Names{"member_0000000001", "member_0000000002"});
}

TEST_CASE("an expired session is replaced; the set keeps serving meanwhile") {
  Fixture f;
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  f.startConnected();
  f.zk.expire();
  settle(f.ioc);
  CHECK(f.resolver->stale());
  CHECK(f.names() == Names{"member_0000000001"});
  REQUIRE(runUntil(f.ioc, [&] { return f.zk.opened() == 2; }));
  f.zk.connect();
  settle(f.ioc);
  CHECK_FALSE(f.resolver->stale());
  // The new session's list is the one published (same cversion and pzxid): not published again.
  CHECK(f.updates.size() == 1);
}

TEST_CASE("a serverset that does not exist yet is empty, and is read when it appears") {
  Fixture f;
  f.zk.erase(kPath);
  f.startConnected();
  REQUIRE(f.updates.size() == 1);
  CHECK(f.updates[0].members.empty());
  f.zk.put(kPath, "");
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  settle(f.ioc);
  CHECK(f.names() == Names{"member_0000000001"});
}

TEST_CASE("a listing that fails is retried; a lost connection waits for the reconnect") {
  Fixture f;
  f.zk.failNext("children", ZkError::Other);
  f.startConnected();
  CHECK(f.updates.empty());
  REQUIRE(runUntil(f.ioc, [&] { return f.updates.size() == 1; }));

  Fixture g;
  g.zk.failNext("children", ZkError::ConnectionLoss);
  g.startConnected();
  const auto calls = g.zk.calls.size();
  runUntil(
      g.ioc, [] { return false; }, std::chrono::milliseconds(30));
  CHECK(g.zk.calls.size() == calls);
  CHECK(g.updates.empty());
}

TEST_CASE("a destroyed resolver closes its session and calls nothing back") {
  Fixture f;
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  f.zk.holding = true;
  f.startConnected();  // the connect event is held
  f.zk.release();
  settle(f.ioc);  // the listing is sent; its answer is held
  REQUIRE(f.zk.held() == 1);
  f.zk.failNext("get", ZkError::OperationTimeout);
  f.resolver.reset();
  f.zk.release();
  runUntil(
      f.ioc, [] { return false; }, std::chrono::milliseconds(20));
  CHECK(f.updates.empty());
  CHECK(f.staleChanges.empty());

  Fixture g;
  g.add("member_0000000001", memberData("10.0.0.1", 1));
  g.zk.failNext("get", ZkError::OperationTimeout);
  g.startConnected();  // a re-listing is now pending on a timer
  const auto calls = g.zk.calls.size();
  g.resolver.reset();
  runUntil(
      g.ioc, [] { return false; }, std::chrono::milliseconds(20));
  CHECK(g.zk.calls.size() == calls);
}

TEST_CASE("a session that cannot be made is tried again after the delay") {
  boost::asio::io_context ioc;
  FakeZk zk{ioc};
  zk.put("/discovery", "");
  zk.put("/discovery/prod", "");
  zk.put(kPath, "");
  int refusals = 2;
  ResolverOptions options;
  options.coalesceWindow = std::chrono::milliseconds(0);  // settle() runs no timer
  options.retryDelay = std::chrono::milliseconds(5);
  options.connect = [&, real = zk.factory()](const ZkSessionOptions& o, ZkSession::EventHandler h) {
    if (refusals-- > 0) {
      throw std::runtime_error("cannot start a ZooKeeper client");
    }
    return real(o, std::move(h));
  };
  int updates = 0;
  ServersetResolver resolver(ioc, ServersetAddress{"fake:2181", kPath, std::nullopt, ""}, options,
                             [&](const ServersetSnapshot&) { ++updates; });
  resolver.start();
  REQUIRE(runUntil(ioc, [&] { return zk.opened() == 1; }));
  zk.connect();
  settle(ioc);
  CHECK(updates == 1);
  CHECK(refusals == -1);
}

TEST_CASE("zk2!a#b: the union of both ensembles' members, each host:port once") {
  boost::asio::io_context ioc;
  FakeZk a{ioc};
  FakeZk b{ioc};
  for (auto* zk : {&a, &b}) {
    zk->put("/discovery", "");
    zk->put("/discovery/prod", "");
    zk->put(kPath, "");
  }
  const std::string p = kPath;
  a.put(p + "/member_0000000001", memberData("10.0.0.1", 1));
  a.put(p + "/member_0000000002", memberData("10.0.0.9", 9));
  b.put(p + "/member_0000000001", memberData("10.0.0.2", 2));
  b.put(p + "/member_0000000002", memberData("10.0.0.9", 9));  // in both: once
  b.put(p + "/member_0000000003", "{not json");
  std::vector<std::string> opened;
  ResolverOptions options;
  options.coalesceWindow = std::chrono::milliseconds(0);  // settle() runs no timer
  options.retryDelay = std::chrono::milliseconds(5);
  options.connect = [&, fa = a.factory(), fb = b.factory()](const ZkSessionOptions& o,
                                                            ZkSession::EventHandler h) {
    opened.push_back(o.connect);
    return o.connect == "za:2181" ? fa(o, std::move(h)) : fb(o, std::move(h));
  };
  std::vector<ServersetSnapshot> updates;
  std::vector<bool> staleChanges;
  auto address = parseResolveAddress("zk2!za:2181#zb:2181!" + p);
  REQUIRE(address);
  ServersetResolver resolver(
      ioc, *address, options, [&](const ServersetSnapshot& s) { updates.push_back(s); },
      [&](bool stale) { staleChanges.push_back(stale); });
  resolver.start();
  CHECK(opened == std::vector<std::string>{"za:2181", "zb:2181"});  // a session per ensemble
  const auto names = [&] {
    Names out;
    for (const auto& [name, m] : resolver.snapshot()->members) {
      out.push_back(name + "=" + m.endpoint.host);
    }
    return out;
  };

  // One ensemble answers: its members serve already, the set is stale until the other answers.
  a.connect();
  settle(ioc);
  REQUIRE(updates.size() == 1);
  CHECK(updates[0].unlisted == 1);
  CHECK(names() ==
        Names{"member_0000000001@za:2181=10.0.0.1", "member_0000000002@za:2181=10.0.0.9"});
  CHECK(resolver.stale());
  CHECK(resolver.unlisted() == "zb:2181");

  b.connect();
  settle(ioc);
  REQUIRE(updates.size() == 2);
  CHECK(updates[1].unlisted == 0);
  CHECK(names() == Names{"member_0000000001@za:2181=10.0.0.1", "member_0000000001@zb:2181=10.0.0.2",
                         "member_0000000002@za:2181=10.0.0.9"});
  CHECK(updates[1].malformed.count("member_0000000003@zb:2181") == 1);
  CHECK_FALSE(resolver.stale());
  CHECK(resolver.unlisted().empty());
  CHECK(staleChanges == std::vector<bool>{false});

  // A change in one ensemble; the other's members stay. The duplicate now comes from b alone.
  a.erase(p + "/member_0000000002");
  settle(ioc);
  CHECK(names() == Names{"member_0000000001@za:2181=10.0.0.1", "member_0000000001@zb:2181=10.0.0.2",
                         "member_0000000002@zb:2181=10.0.0.9"});

  // One ensemble out of reach: the set is stale, and keeps both ensembles' members.
  b.disconnect();
  settle(ioc);
  CHECK(resolver.stale());
  CHECK(resolver.snapshot()->members.size() == 3);
  b.connect();
  settle(ioc);
  CHECK_FALSE(resolver.stale());
  CHECK(staleChanges == std::vector<bool>{false, true, false});
}

TEST_CASE("the older zk! form resolves as zk2! does, on one ensemble") {
  Fixture f;
  auto address = parseResolveAddress(std::string("zk!fake:2181!") + kPath + "!admin");
  REQUIRE(address);
  ResolverOptions options;
  options.coalesceWindow = std::chrono::milliseconds(0);  // settle() runs no timer
  options.connect = f.zk.factory();
  std::vector<ServersetSnapshot> updates;
  ServersetResolver resolver(f.ioc, *address, options,
                             [&](const ServersetSnapshot& s) { updates.push_back(s); });
  f.add("member_0000000001", memberData("10.0.0.1", 1));
  resolver.start();
  f.zk.connect();
  settle(f.ioc);
  REQUIRE(updates.size() == 1);
  CHECK(updates[0].members.at("member_0000000001").endpoint == Endpoint{"10.0.0.1", 9990});
}

TEST_CASE("a member is read once, even when a new listing comes while it is being read") {
  Fixture f;
  f.startConnected();
  f.zk.holding = true;
  f.add("member_0000000001", memberData("10.0.0.1", 8443));
  f.zk.release();  // the watch fires; its listing is held
  settle(f.ioc);
  f.zk.release();  // the listing answers; member 1's read is held
  settle(f.ioc);
  REQUIRE(f.zk.held() == 1);
  f.zk.holding = false;
  f.add("member_0000000002", memberData("10.0.0.2", 8443));  // listed while 1 is being read
  settle(f.ioc);
  CHECK(f.names().empty());  // 1 is not read yet: nothing is published
  f.zk.release();
  settle(f.ioc);
  CHECK(f.names() == Names{"member_0000000001", "member_0000000002"});
  for (const char* n : {"member_0000000001", "member_0000000002"}) {
    CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(), "get " + std::string(kPath) + "/" + n) ==
          1);
  }
}

TEST_CASE("a burst of changes within the coalescing window is one listing, at its end") {
  Fixture f("", std::chrono::milliseconds(100));
  f.startConnected();  // the first listing opens the window
  const auto listings = [&] {
    return std::count(f.zk.calls.begin(), f.zk.calls.end(), "children " + std::string(kPath));
  };
  REQUIRE(listings() == 1);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1; i <= 5; ++i) {
    f.add("member_000000000" + std::to_string(i), memberData("10.0.0." + std::to_string(i), 8443));
  }
  settle(f.ioc);
  CHECK(f.names().empty());  // waits for the window's end
  REQUIRE(runUntil(f.ioc, [&] { return f.names().size() == 5; }));
  CHECK(listings() == 2);
  CHECK(f.updates.size() == 2);
  // The window bounds the wait: the changes came right after the first listing.
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1'000));
}

TEST_CASE("a change after a quiet window is listed at once") {
  Fixture f("", std::chrono::milliseconds(30));
  f.startConnected();
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  f.add("member_0000000001", memberData("10.0.0.1", 8443));
  settle(f.ioc);  // no timer runs here
  CHECK(f.names() == Names{"member_0000000001"});
}

TEST_CASE("an unchanged list (same cversion and pzxid) is recognised: nothing read or published") {
  Fixture f;
  f.add("member_0000000001", memberData("10.0.0.1", 8443));
  f.startConnected();
  REQUIRE(f.updates.size() == 1);
  f.zk.disconnect();
  settle(f.ioc);
  CHECK(f.resolver->stale());
  f.zk.connect();
  settle(f.ioc);
  CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(), "children " + std::string(kPath)) == 2);
  CHECK(f.updates.size() == 1);  // the same set: not published again
  CHECK_FALSE(f.resolver->stale());
  CHECK(std::count(f.zk.calls.begin(), f.zk.calls.end(),
                   "get " + std::string(kPath) + "/member_0000000001") == 1);
  // A real change still is: a member added and removed counts (cversion moved).
  f.add("member_0000000002", memberData("10.0.0.2", 8443));
  f.zk.erase(std::string(kPath) + "/member_0000000002");
  settle(f.ioc);
  CHECK(f.updates.size() == 2);
  CHECK(f.names() == Names{"member_0000000001"});
}
