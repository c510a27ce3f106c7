// Members' host names: the cache's refresh, retry and last-good rules, and the lookup threads.
#include "outbound/names.h"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

namespace sidecar {
namespace {

using Address = NameCache::Address;
using std::chrono::seconds;

const NameCache::Clock::time_point kStart = NameCache::Clock::time_point{} + std::chrono::hours(1);

Address ip(const char* text) { return boost::asio::ip::make_address(text); }

TEST_CASE("names: a new name is due at once, once, and again after the refresh") {
  NameCache cache(Duration(30'000));
  cache.want("db.example", kStart);
  CHECK(cache.due(kStart) == std::vector<std::string>{"db.example"});
  CHECK(cache.due(kStart + seconds(60)).empty());  // under way: never asked twice
  CHECK(cache.answered("db.example", {ip("::1"), ip("127.0.0.1"), ip("::1")}, "", kStart));
  const auto* e = cache.find("db.example");
  REQUIRE(e);
  CHECK(e->answered);
  CHECK_FALSE(e->failing);
  CHECK(e->addresses == std::vector<Address>{ip("127.0.0.1"), ip("::1")});  // sorted, distinct
  cache.want("db.example", kStart + seconds(1));  // wanted again: no earlier lookup
  CHECK(cache.due(kStart + seconds(29)).empty());
  CHECK(cache.due(kStart + seconds(30)) == std::vector<std::string>{"db.example"});
  // The same addresses in another order: nothing for the routes to do.
  CHECK_FALSE(cache.answered("db.example", {ip("::1"), ip("127.0.0.1")}, "", kStart + seconds(30)));
  CHECK(cache.due(kStart + seconds(31)).empty());
  CHECK(cache.due(kStart + seconds(60)).size() == 1);
  CHECK(cache.answered("db.example", {ip("127.0.0.2")}, "", kStart + seconds(60)));
  CHECK(cache.find("db.example")->addresses == std::vector<Address>{ip("127.0.0.2")});
}

TEST_CASE("names: a failed lookup keeps the last good addresses and is tried again in 5 s") {
  NameCache cache(Duration(30'000));
  cache.want("db.example", kStart);
  cache.due(kStart);
  cache.answered("db.example", {ip("10.0.0.1")}, "", kStart);
  cache.due(kStart + seconds(30));
  CHECK_FALSE(cache.answered("db.example", {}, "Temporary failure in name resolution",
                             kStart + seconds(30)));
  const auto* e = cache.find("db.example");
  CHECK(e->failing);
  CHECK(e->error == "Temporary failure in name resolution");
  CHECK(e->addresses == std::vector<Address>{ip("10.0.0.1")});
  CHECK(e->goodAt == kStart);
  CHECK(cache.due(kStart + seconds(34)).empty());
  CHECK(cache.due(kStart + seconds(35)).size() == 1);
  // An answer without an address is a failure too.
  CHECK_FALSE(cache.answered("db.example", {}, "", kStart + seconds(35)));
  CHECK(cache.find("db.example")->error == "no address");
  cache.due(kStart + seconds(40));
  CHECK_FALSE(cache.answered("db.example", {ip("10.0.0.1")}, "", kStart + seconds(40)));
  CHECK_FALSE(cache.find("db.example")->failing);
}

TEST_CASE("names: a name that never resolved has no address; its first answer still counts") {
  NameCache cache(Duration(2'000));
  cache.want("no-such-host.invalid", kStart);
  cache.due(kStart);
  CHECK(cache.answered("no-such-host.invalid", {}, "Name or service not known", kStart));
  CHECK(cache.find("no-such-host.invalid")->addresses.empty());
  CHECK_FALSE(cache.answered("no-such-host.invalid", {}, "Name or service not known", kStart));
  // The retry is never later than the refresh.
  CHECK(cache.find("no-such-host.invalid")->due == kStart + seconds(2));
}

TEST_CASE("names: names no route uses are forgotten, and their late answers dropped") {
  NameCache cache(Duration(30'000));
  cache.want("a.example", kStart);
  cache.want("b.example", kStart);
  CHECK(cache.due(kStart).size() == 2);
  cache.retain({"b.example"});
  CHECK(cache.find("a.example") == nullptr);
  CHECK_FALSE(cache.answered("a.example", {ip("10.0.0.1")}, "", kStart));
  CHECK(cache.find("a.example") == nullptr);
  cache.retain({});
  CHECK(cache.empty());
}

TEST_CASE("names: a name is one member per address, v4 and v6, an address a member once") {
  using boost::asio::ip::tcp;
  NameCache cache(Duration(30'000));
  const std::vector<registry::Endpoint> announced{
      {"dual.example", 8443}, {"10.0.0.1", 8443},     {"pending.example", 8443},
      {"dual.example", 9443}, {"lost.example", 8443}, {"alias.example", 8443}};
  for (const char* name : {"dual.example", "pending.example", "lost.example", "alias.example"}) {
    cache.want(name, kStart);
  }
  cache.due(kStart);
  cache.answered("dual.example", {ip("::1"), ip("127.0.0.1")}, "", kStart);
  cache.answered("lost.example", {}, "Name or service not known", kStart);
  cache.answered("alias.example", {ip("10.0.0.1"), ip("10.0.0.2")}, "", kStart);
  auto x = expandMembers(announced, cache);
  CHECK(x.members == std::vector<tcp::endpoint>{{ip("127.0.0.1"), 8443},
                                                {ip("::1"), 8443},
                                                {ip("10.0.0.1"), 8443},
                                                {ip("127.0.0.1"), 9443},
                                                {ip("::1"), 9443},
                                                {ip("10.0.0.2"), 8443}});
  CHECK(x.hostOf == std::map<std::string, std::string>{{"127.0.0.1:8443", "dual.example"},
                                                       {"[::1]:8443", "dual.example"},
                                                       {"127.0.0.1:9443", "dual.example"},
                                                       {"[::1]:9443", "dual.example"},
                                                       {"10.0.0.2:8443", "alias.example"}});
  CHECK(x.unresolved == 2);  // pending.example, lost.example
  CHECK(x.awaited);          // pending.example has not answered
  cache.answered("pending.example", {}, "Temporary failure in name resolution", kStart);
  x = expandMembers(announced, cache);
  CHECK(x.unresolved == 2);
  CHECK_FALSE(x.awaited);
  // A name that fails later keeps serving its last addresses.
  cache.due(kStart + seconds(30));
  cache.answered("dual.example", {}, "Temporary failure in name resolution", kStart + seconds(30));
  CHECK(expandMembers(announced, cache).members.size() == 6);
  CHECK(isHostName("dual.example"));
  CHECK_FALSE(isHostName("::1"));
  CHECK_FALSE(isHostName("10.0.0.1"));
}

TEST_CASE("names: lookups run on threads of their own and answer on the control thread") {
  boost::asio::io_context control;
  auto work = boost::asio::make_work_guard(control);  // answers come later: run must not stop
  const auto controlThread = std::this_thread::get_id();
  std::atomic<int> lookups{0};
  std::atomic<bool> offControl{true};
  std::vector<std::pair<std::string, LookupResult>> answers;
  bool onControl = true;
  {
    NameLookups n(
        control,
        [&](const std::string& name, LookupResult r) {
          onControl = onControl && std::this_thread::get_id() == controlThread;
          answers.emplace_back(name, std::move(r));
        },
        [&](const std::string& name) {
          offControl = offControl && std::this_thread::get_id() != controlThread;
          ++lookups;
          return name == "bad" ? LookupResult{{}, "no such name"}
                               : LookupResult{{ip("10.0.0.9")}, ""};
        });
    for (const char* name : {"a", "bad", "c", "d"}) {
      n.lookup(name);
    }
    while (answers.size() < 4) {
      control.run_one_for(std::chrono::seconds(5));
    }
  }
  CHECK(lookups == 4);
  CHECK(offControl);
  CHECK(onControl);
  std::sort(answers.begin(), answers.end(), [](auto& x, auto& y) { return x.first < y.first; });
  CHECK(answers[1].first == "bad");
  CHECK(answers[1].second.error == "no such name");
  CHECK(answers[3].second.addresses == std::vector<Address>{ip("10.0.0.9")});
}

TEST_CASE("names: no answer is handed over once the lookups are gone") {
  boost::asio::io_context control;
  std::atomic<bool> release{false};
  std::atomic<bool> started{false};
  int answers = 0;
  {
    NameLookups n(
        control, [&](const std::string&, LookupResult) { ++answers; },
        [&](const std::string&) {
          started = true;
          while (!release) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
          return LookupResult{{ip("10.0.0.1")}, ""};
        });
    n.lookup("slow");
    while (!started) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }  // gone while its lookup is stuck: the destructor does not wait for it
  release = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  control.run_for(std::chrono::milliseconds(50));
  CHECK(answers == 0);
}

TEST_CASE("names: getaddrinfo finds localhost and not a name under .invalid") {
  const auto local = lookupName("localhost");
  CHECK(local.error.empty());
  CHECK(std::any_of(local.addresses.begin(), local.addresses.end(),
                    [](const Address& a) { return a.is_loopback(); }));
  const auto none = lookupName("no-such-host.invalid");
  CHECK(none.addresses.empty());
  CHECK_FALSE(none.error.empty());
}

}  // namespace
}  // namespace sidecar
