// The route directory on its own, ZooKeeper faked (registry/fake_zk.h): what it publishes to the
// workers for static, serverset and prefix routes, when prefix routes go, and that a route whose
// members' names are still being looked up stays pending instead of answering with no member.
#include "outbound/directory.h"

#include <doctest/doctest.h>
#include <prometheus/registry.h>

#include "outbound/aperture.h"
#include "registry/fake_zk.h"

namespace sidecar {
namespace {

using registry::testing::FakeZk;
using registry::testing::settle;
using Clock = RouteDirectory::Clock;

constexpr auto kPrefix = "/discovery/prod";

tcp::endpoint at(const char* ip, unsigned short port) {
  return {boost::asio::ip::make_address(ip), port};
}

std::string memberData(const std::string& host, std::uint16_t port) {
  registry::ServiceInstance i;
  i.serviceEndpoint = {host, port};
  i.status = registry::Status::Alive;
  return registry::encodeServiceInstance(i);
}

RouteConfig serversetRoute(std::string name, std::string path, std::string endpoint = "") {
  RouteConfig c;
  c.name = std::move(name);
  c.kind = RouteConfig::Kind::serverset;
  c.zkConnect = "fake:2181";
  c.zkPath = std::move(path);
  c.endpoint = std::move(endpoint);
  c.dest = "zk2!fake:2181!" + c.zkPath;
  return c;
}

RouteConfig fixedRoute(std::string name, std::vector<HostPort> members) {
  RouteConfig c;
  c.name = std::move(name);
  c.kind = RouteConfig::Kind::fixed;
  c.fixed = std::move(members);
  c.dest = "static!";
  return c;
}

// Past the resolvers' coalescing window (100 ms), so that a change made within it is listed.
void settleWindow(boost::asio::io_context& ioc) {
  settle(ioc);
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(150));
  settle(ioc);
}

struct Published {
  std::shared_ptr<const RouteInfo> info;
  std::shared_ptr<const Addr> addr;
};

struct Fixture {
  boost::asio::io_context ioc;
  FakeZk zk{ioc};
  OutboundConfig config;
  prometheus::Registry registry;
  std::optional<OutboundMetrics> metrics;
  std::vector<Published> published;
  std::vector<std::string> retracted;
  std::optional<RouteDirectory> directory;

  Fixture() {
    config.prefixZk = "fake:2181";
    zk.put("/discovery", "");
    zk.put(kPrefix, "");
  }
  void start() {
    metrics.emplace(registry, config.routes.size() + config.maxRoutes, 1);
    directory.emplace(
        ioc, config, Duration(10'000), *metrics,
        [this](auto info, auto addr) {
          published.push_back({std::move(info), std::move(addr)});
        },
        [this](auto info) { retracted.push_back(info->name); }, zk.factory());
    directory->start();
  }
  // The newest address published for route name.
  const Addr& last(const std::string& name) const {
    for (auto it = published.rbegin(); it != published.rend(); ++it) {
      if (it->info->name == name) {
        return *it->addr;
      }
    }
    FAIL("nothing published for " << name);
    throw std::logic_error("unreachable");
  }
  void announce(const std::string& service, const std::string& member, const std::string& host,
                std::uint16_t port) {
    zk.put(std::string(kPrefix) + "/" + service, "");
    zk.put(std::string(kPrefix) + "/" + service + "/" + member, memberData(host, port));
  }
};

TEST_CASE("directory: a static route of addresses is published bound at start") {
  Fixture f;
  f.config.routes.push_back(
      fixedRoute("users", {HostPort{"10.0.0.1", 80}, HostPort{"10.0.0.2", 81}}));
  f.start();
  REQUIRE(f.published.size() == 1);
  const auto& a = *f.published[0].addr;
  CHECK(f.published[0].info->name == "users");
  CHECK(a.isBound());
  CHECK_FALSE(a.stale());
  CHECK(a.version() == 1);
  CHECK(a.endpoints() == std::vector<tcp::endpoint>{at("10.0.0.1", 80), at("10.0.0.2", 81)});
  CHECK(f.directory->clientsJson().find("\"resolved\":true") != std::string::npos);
}

TEST_CASE("directory: a static route of names not looked up yet is pending, not bound to none") {
  Fixture f;
  f.config.routes.push_back(fixedRoute("db", {HostPort{"db.invalid", 5432}}));
  f.start();
  REQUIRE(f.published.size() == 1);
  CHECK(f.published[0].addr->isPending());
  CHECK(f.directory->clientsJson().find("\"resolved\":false") != std::string::npos);
}

TEST_CASE("directory: a serverset route is pending and stale until ZooKeeper answers") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.start();
  f.announce("svc", "member_0000000001", "10.0.0.7", 8443);
  f.directory->ensure("svc");
  REQUIRE(f.published.size() == 1);
  CHECK(f.last("svc").isPending());
  CHECK(f.last("svc").stale());
  f.zk.connect();
  settle(f.ioc);
  CHECK(f.last("svc").isBound());
  CHECK_FALSE(f.last("svc").stale());
  CHECK(f.last("svc").endpoints() == std::vector<tcp::endpoint>{at("10.0.0.7", 8443)});
  const auto version = f.last("svc").version();
  // ZooKeeper away: the last members keep serving, marked stale, in the same version.
  f.zk.disconnect();
  settle(f.ioc);
  CHECK(f.last("svc").isBound());
  CHECK(f.last("svc").stale());
  CHECK(f.last("svc").endpoints().size() == 1);
  CHECK(f.last("svc").version() == version);
  // Asked for again by a worker: published again, as it is.
  const auto before = f.published.size();
  f.directory->ensure("svc");
  CHECK(f.published.size() == before + 1);
  CHECK(f.published.back().addr == f.published[before - 1].addr);
}

TEST_CASE("directory: at --max-routes a new prefix route replaces the least recently used") {
  // Nothing is refused here: a worker bounds the names it waits for itself (no route: 404).
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.config.maxRoutes = 2;
  f.start();
  f.announce("a", "member_0000000001", "10.0.0.1", 80);
  f.directory->ensure("a");
  f.zk.connect();
  settle(f.ioc);
  f.directory->ensure("nothing-here");  // no serverset: bound to no member once listed
  settle(f.ioc);
  CHECK(f.last("nothing-here").isBound());
  CHECK(f.last("nothing-here").endpoints().empty());
  f.directory->ensure("c");
  CHECK(f.retracted == std::vector<std::string>{"nothing-here"});  // without members first
  CHECK(f.last("c").isPending());
  settle(f.ioc);
  CHECK(f.last("c").isBound());
  CHECK(f.last("a").endpoints().size() == 1);
}

TEST_CASE("directory: prefix routes expire when empty past the negative life, or unused") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.config.routeIdleTimeout = Duration(60'000);
  f.start();
  f.announce("a", "member_0000000001", "10.0.0.1", 80);
  f.directory->ensure("a");
  f.directory->ensure("empty");
  f.zk.connect();
  settle(f.ioc);
  const auto now = Clock::now();
  f.directory->expire(now + std::chrono::seconds(1));
  CHECK(f.retracted.empty());
  f.directory->expire(now + RouteDirectory::kNegativeLife + std::chrono::seconds(1));
  CHECK(f.retracted == std::vector<std::string>{"empty"});
  CHECK(f.metrics->routesExpiredNegative->Value() == 1);
  f.directory->expire(now + std::chrono::seconds(61));
  CHECK(f.retracted == std::vector<std::string>{"empty", "a"});
  CHECK(f.metrics->routesExpiredIdle->Value() == 1);
  CHECK(f.directory->clientsJson() == "{\"clients\":[]}\n");
}

TEST_CASE("directory: a prefix route whose members' names are awaited stays pending, unexpired") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.start();
  f.announce("named", "member_0000000001", "svc.invalid", 80);
  f.directory->ensure("named");
  f.zk.connect();
  // One handler at a time, up to the listing's: the name's lookup (on a thread of its own) has
  // not been answered on this thread yet.
  f.ioc.restart();
  while (f.last("named").version() < 2 && f.ioc.poll_one() > 0) {
  }
  REQUIRE(f.last("named").version() == 2);  // the listing's
  CHECK(f.last("named").isPending());
  CHECK_FALSE(f.last("named").stale());
  CHECK(f.last("named").version() == 2);
  f.directory->expire(Clock::now() + RouteDirectory::kNegativeLife * 2);
  CHECK(f.retracted.empty());  // its negative life runs from the name's first answer
}

TEST_CASE("directory: routes naming one serverset share its listing, each publishing its own set") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  const std::string path = std::string(kPrefix) + "/svc";
  f.config.routes.push_back(serversetRoute("a", path));
  f.config.routes.push_back(serversetRoute("b", path));
  f.config.routes.push_back(serversetRoute("admin", path, "admin"));  // another endpoint
  f.announce("svc", "member_0000000001", "10.0.0.1", 80);
  f.start();
  f.zk.connect();
  settle(f.ioc);
  const auto count = [&](const std::string& call) {
    return std::count(f.zk.calls.begin(), f.zk.calls.end(), call);
  };
  // One listing and one read for a and b together; the admin endpoint is a serverset of its own.
  CHECK(count("children " + path) == 2);
  CHECK(count("get " + path + "/member_0000000001") == 2);
  CHECK(f.last("a").endpoints() == std::vector<tcp::endpoint>{at("10.0.0.1", 80)});
  CHECK(f.last("b").endpoints() == std::vector<tcp::endpoint>{at("10.0.0.1", 80)});
  CHECK(f.last("admin").endpoints().empty());
  CHECK_FALSE(f.last("a").stale());
  CHECK_FALSE(f.last("b").stale());
  f.announce("svc", "member_0000000002", "10.0.0.2", 80);
  settleWindow(f.ioc);
  CHECK(count("children " + path) == 4);
  CHECK(count("get " + path + "/member_0000000002") == 2);
  // Published with what changed, for the workers to apply.
  REQUIRE(f.last("a").delta() != nullptr);
  CHECK(f.last("a").delta()->added == std::vector<tcp::endpoint>{at("10.0.0.2", 80)});
  CHECK(f.last("a").delta()->removed.empty());
  CHECK(f.last("a").endpoints().size() == 2);
  CHECK(f.last("b").endpoints().size() == 2);
  // A prefix route to the same serverset joins it and is bound at once, without a listing.
  const auto listings = count("children " + path);
  f.directory->ensure("svc");
  CHECK(f.last("svc").isBound());
  CHECK_FALSE(f.last("svc").stale());
  CHECK(f.last("svc").endpoints().size() == 2);
  settle(f.ioc);
  CHECK(count("children " + path) == listings);
  // Staleness reaches every route of the source.
  f.zk.disconnect();
  settle(f.ioc);
  CHECK(f.last("a").stale());
  CHECK(f.last("b").stale());
  CHECK(f.last("svc").stale());
  f.zk.connect();
  settle(f.ioc);
  CHECK_FALSE(f.last("svc").stale());
  // The shared resolver goes with its last route: the prefix route expiring leaves it to a and b.
  f.directory->expire(Clock::now() + f.config.routeIdleTimeout + std::chrono::seconds(1));
  CHECK(f.retracted == std::vector<std::string>{"svc"});
  f.announce("svc", "member_0000000003", "10.0.0.3", 80);
  settleWindow(f.ioc);
  CHECK(f.last("a").endpoints().size() == 3);
  CHECK(f.last("b").endpoints().size() == 3);
}

TEST_CASE("directory: a shared serverset's sudden loss is held per route") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.config.dropLimit = 0.5;
  f.config.dropHold = Duration(60'000);
  const std::string path = std::string(kPrefix) + "/svc";
  f.config.routes.push_back(serversetRoute("a", path));
  for (int i = 1; i <= 4; ++i) {
    f.announce("svc", "member_000000000" + std::to_string(i), "10.0.0." + std::to_string(i), 80);
  }
  f.start();
  f.zk.connect();
  settle(f.ioc);
  REQUIRE(f.last("a").endpoints().size() == 4);
  for (int i = 1; i <= 3; ++i) {
    f.zk.erase(path + "/member_000000000" + std::to_string(i));
  }
  settleWindow(f.ioc);
  CHECK(f.last("a").endpoints().size() == 4);  // held
  // A route that joins now never saw the four: the one member is all it knows, nothing to hold.
  f.directory->ensure("svc");
  CHECK(f.last("svc").endpoints().size() == 1);
  CHECK(f.last("a").endpoints().size() == 4);
  CHECK(f.directory->clientsJson().find("drop_held") != std::string::npos);
}

TEST_CASE("directory: a worker's route applies a delta from the set it holds, else the whole") {
  const auto info = std::make_shared<const RouteInfo>(RouteInfo{"r", {}, 0});
  auto a = std::make_shared<const Addr>(Addr::bound({at("10.0.0.1", 80), at("10.0.0.2", 80)}));
  OutboundHandler::Route route(info, a, 1, PoolSettings{});
  route.update(info, a);
  const auto now = std::chrono::steady_clock::now();
  route.balancer.started(at("10.0.0.1", 80), now);  // state a delta keeps
  auto b = std::make_shared<const Addr>(
      a->answered({at("10.0.0.1", 80), at("10.0.0.3", 80)}, false, false).withDeltaFrom(*a));
  route.update(info, b);
  auto views = route.balancer.members(now);
  REQUIRE(views.size() == 2);
  std::sort(views.begin(), views.end(),
            [](const auto& x, const auto& y) { return x.endpoint < y.endpoint; });
  CHECK(views[0].endpoint == at("10.0.0.1", 80));
  CHECK(views[0].pending == 1);
  CHECK(views[1].endpoint == at("10.0.0.3", 80));
  // A delta from a version this worker never held (one it missed cannot happen: each is posted
  // in order; another route of the same name starts its versions again): the whole set.
  const auto other = std::make_shared<const RouteInfo>(RouteInfo{"r", {}, 0});
  auto c = std::make_shared<const Addr>(
      b->answered({at("10.0.0.4", 80)}, false, false).withDeltaFrom(*b));
  route.update(other, c);
  views = route.balancer.members(now);
  REQUIRE(views.size() == 1);
  CHECK(views[0].endpoint == at("10.0.0.4", 80));
}

TEST_CASE("aperture: windows from evenly spread coordinates cover every member evenly") {
  std::vector<tcp::endpoint> ring;
  for (int i = 0; i < 1000; ++i) {
    ring.push_back(at("10.0.0.1", static_cast<unsigned short>(1000 + i)));
  }
  std::reverse(ring.begin(), ring.end());
  apertureOrder(ring);
  CHECK(std::is_sorted(ring.begin(), ring.end()));
  // Wrapping around the ring's end; a window as large as the ring is the ring.
  CHECK(apertureWindow(ring, 999, 2) == std::vector<tcp::endpoint>{ring[999], ring[0]});
  CHECK(apertureWindow(ring, 5, 1000) == ring);
  CHECK(apertureStart(0.0, 1000) == 0);
  CHECK(apertureStart(0.9999999, 1000) == 999);
  CHECK(apertureStart(0.5, 0) == 0);
  // Each member a caller at its own position: every member in exactly `size` windows.
  std::map<tcp::endpoint, int> covered;
  for (std::size_t i = 0; i < ring.size(); ++i) {
    for (const auto& e : apertureWindow(ring, i, 12)) {
      ++covered[e];
    }
  }
  CHECK(covered.size() == ring.size());
  for (const auto& [e, n] : covered) {
    CHECK(n == 12);
  }
  // The hash: stable, in [0, 1), and ports on one host land apart.
  CHECK(apertureHash("10.0.0.1:4140") == apertureHash("10.0.0.1:4140"));
  CHECK(apertureHash("10.0.0.1:4140") >= 0.0);
  CHECK(apertureHash("10.0.0.1:4140") < 1.0);
  CHECK(std::abs(apertureHash("10.0.0.1:4140") - apertureHash("10.0.0.1:4141")) > 1e-6);
}

TEST_CASE("directory: with --aperture a serverset route is balanced over its window") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.config.aperture = true;
  f.config.apertureSize = 2;
  f.config.apertureSelf = HostPort{"10.0.0.3", 80};  // a member of svc, not of other
  for (int i = 1; i <= 5; ++i) {
    f.announce("svc", "member_000000000" + std::to_string(i), "10.0.0." + std::to_string(i), 80);
    f.announce("other", "member_000000000" + std::to_string(i), "10.0.1." + std::to_string(i), 80);
  }
  f.config.routes.push_back(fixedRoute(
      "static", {HostPort{"10.0.2.1", 80}, HostPort{"10.0.2.2", 80}, HostPort{"10.0.2.3", 80}}));
  f.start();
  f.directory->ensure("svc");
  f.directory->ensure("other");
  f.zk.connect();
  settle(f.ioc);
  // Its own member's position: itself and the next on the ring.
  CHECK(f.last("svc").endpoints() ==
        std::vector<tcp::endpoint>{at("10.0.0.3", 80), at("10.0.0.4", 80)});
  // Not a member: two consecutive members from its hashed coordinate.
  const auto& other = f.last("other").endpoints();
  REQUIRE(other.size() == 2);
  const auto first = other[0].address().to_v4().to_bytes()[3];
  CHECK(other[1] == at(("10.0.1." + std::to_string(first % 5 + 1)).c_str(), 80));
  CHECK(f.last("static").endpoints().size() == 3);  // static routes: all their members
  const auto json = f.directory->clientsJson();
  CHECK(json.find(R"("aperture":{"size":2,"members":5,"coordinate":4E-1,"from":"position"})") !=
        std::string::npos);
  // Loaded (more than 2 requests outstanding per member of the window): one more member a
  // second, up to the whole set; idle again: back to its least.
  const auto loaded = [&](std::uint32_t pending) {
    std::vector<MemberView> views;
    for (const auto& e : f.last("svc").endpoints()) {
      views.push_back(MemberView{e, 1.0, 1.0, pending, "alive"});
    }
    f.directory->report(0, "svc", std::move(views), 0, true);
  };
  loaded(5);
  f.directory->expire(Clock::now());
  CHECK(f.last("svc").endpoints().size() == 3);
  CHECK(f.last("svc").endpoints()[2] == at("10.0.0.5", 80));
  for (int i = 0; i < 5; ++i) {
    loaded(5);
    f.directory->expire(Clock::now());
  }
  CHECK(f.last("svc").endpoints().size() == 5);
  loaded(0);
  f.directory->expire(Clock::now());
  CHECK(f.last("svc").endpoints().size() == 4);
  // A member joining moves the window by what changed, published as a delta.
  f.announce("svc", "member_0000000006", "10.0.0.6", 80);
  settleWindow(f.ioc);
  REQUIRE(f.last("svc").delta() != nullptr);
  CHECK(f.last("svc").endpoints().size() == 4);
  // Back to its least, then its members ejected (they fail, with little load): the window takes
  // in as many more at once, and does not shrink while any is out.
  loaded(0);
  f.directory->expire(Clock::now());
  loaded(0);
  f.directory->expire(Clock::now());
  REQUIRE(f.last("svc").endpoints().size() == 2);
  const auto ejectedAll = [&] {
    std::vector<MemberView> views;
    for (const auto& e : f.last("svc").endpoints()) {
      views.push_back(MemberView{e, 1.0, 1.0, 0, "ejected"});
    }
    f.directory->report(0, "svc", std::move(views), 2, true);
  };
  ejectedAll();
  f.directory->expire(Clock::now());
  CHECK(f.last("svc").endpoints().size() == 4);
  ejectedAll();  // the two new ones failed too
  f.directory->expire(Clock::now());
  CHECK(f.last("svc").endpoints().size() == 6);
  std::vector<MemberView> views;
  for (const auto& e : f.last("svc").endpoints()) {
    views.push_back(MemberView{e, 1.0, 1.0, 0, views.size() < 4 ? "ejected" : "alive"});
  }
  f.directory->report(0, "svc", std::move(views), 0, true);
  f.directory->expire(Clock::now());
  CHECK(f.last("svc").endpoints().size() == 6);  // two serve, four out: kept
}

TEST_CASE("directory: with --aperture a sidecar not among a route's members goes by its peers") {
  Fixture f;
  f.config.routePrefix = kPrefix;
  f.config.aperture = true;
  f.config.apertureSize = 1;
  f.config.apertureSelf = HostPort{"10.0.9.3", 80};
  f.config.apertureZk = "fake:2181";
  f.config.aperturePath = std::string(kPrefix) + "/me";
  // Four peers (itself the third, in address order) calling a serverset of eight.
  for (int i = 1; i <= 4; ++i) {
    f.announce("me", "member_000000000" + std::to_string(i), "10.0.9." + std::to_string(i), 80);
  }
  for (int i = 1; i <= 8; ++i) {
    f.announce("svc", "member_000000000" + std::to_string(i), "10.0.0." + std::to_string(i), 80);
  }
  f.start();
  f.directory->ensure("svc");
  f.zk.connect();
  settle(f.ioc);
  // Peer 2 of 4 on a ring of 8: from member 4 on, two of them (8 / 4, more than the least of 1),
  // so that the four windows cover the eight members once each.
  CHECK(f.last("svc").endpoints() ==
        std::vector<tcp::endpoint>{at("10.0.0.5", 80), at("10.0.0.6", 80)});
  CHECK(f.directory->clientsJson().find(R"("from":"peers")") != std::string::npos);
  // A peer going: it stands at 1 of 3 now, the window moves and widens (8 / 3, rounded up).
  f.zk.erase(std::string(kPrefix) + "/me/member_0000000001");
  settleWindow(f.ioc);
  CHECK(f.last("svc").endpoints() ==
        std::vector<tcp::endpoint>{at("10.0.0.3", 80), at("10.0.0.4", 80), at("10.0.0.5", 80)});
}

}  // namespace
}  // namespace sidecar
