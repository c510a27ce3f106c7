// The serverset JSON codec (exact bytes out, lenient in) and the zk!/zk2! address parsers.
#include <doctest/doctest.h>
#include <registry/resolver.h>
#include <registry/serverset.h>

using namespace registry;

TEST_CASE("encoding matches Finagle's bytes") {
  ServiceInstance i;
  i.serviceEndpoint = {"10.0.0.5", 8443};
  i.additionalEndpoints = {{"admin", {"10.0.0.5", 9990}}};
  i.shard = 0;
  CHECK(
      encodeServiceInstance(i) ==
      R"({"serviceEndpoint":{"host":"10.0.0.5","port":8443},"additionalEndpoints":{"admin":{"host":"10.0.0.5","port":9990}},"status":"ALIVE","shard":0})");
  ServiceInstance bare;
  bare.serviceEndpoint = {"h", 1};
  CHECK(encodeServiceInstance(bare) ==
        R"({"serviceEndpoint":{"host":"h","port":1},"additionalEndpoints":{},"status":"ALIVE"})");
  bare.metadata = {{"zone", "a\"b"}};
  CHECK(encodeServiceInstance(bare).ends_with(R"("status":"ALIVE","metadata":{"zone":"a\"b"}})"));
}

TEST_CASE("decoding is lenient about spacing and order, strict about types") {
  auto d = decodeServiceInstance(
      R"( { "status" : "ALIVE", "shard": 3, "additionalEndpoints": { "http": {"port": 80, "host": "b"} },
            "serviceEndpoint": { "port": 8443, "host": "a" }, "extra": [1] } )");
  REQUIRE(d.instance);
  CHECK(d.instance->serviceEndpoint == Endpoint{"a", 8443});
  CHECK(d.instance->shard == 3);
  REQUIRE(d.instance->additionalEndpoints.size() == 1);
  CHECK(d.instance->additionalEndpoints[0].second == Endpoint{"b", 80});

  auto roundTrip = decodeServiceInstance(encodeServiceInstance(*d.instance));
  REQUIRE(roundTrip.instance);
  CHECK(roundTrip.instance->serviceEndpoint == d.instance->serviceEndpoint);

  CHECK_FALSE(
      decodeServiceInstance(R"({"serviceEndpoint":{"host":"a","port":"80"},"status":"ALIVE"})")
          .instance);
  CHECK_FALSE(decodeServiceInstance(R"({"serviceEndpoint":{"host":1,"port":80},"status":"ALIVE"})")
                  .instance);
  CHECK_FALSE(decodeServiceInstance(R"({"serviceEndpoint":{"host":"a","port":80}})").instance);
  CHECK_FALSE(
      decodeServiceInstance(R"({"serviceEndpoint":{"host":"a","port":70000},"status":"ALIVE"})")
          .instance);
  CHECK_FALSE(decodeServiceInstance(R"({"serviceEndpoint":)").instance);
  // Port 0 is no one's (issue 25, item 9): malformed, counted as such, never shown alive.
  auto zero =
      decodeServiceInstance(R"({"serviceEndpoint":{"host":"a","port":0},"status":"ALIVE"})");
  CHECK_FALSE(zero.instance);
  CHECK(zero.error.find("port from 1 to 65535") != std::string::npos);
  CHECK_FALSE(decodeServiceInstance("[]").instance);
  auto dead =
      decodeServiceInstance(R"({"serviceEndpoint":{"host":"a","port":80},"status":"DEAD"})");
  REQUIRE(dead.instance);
  CHECK(dead.instance->status == Status::Dead);
}

TEST_CASE("readers keep ALIVE members of the wanted shard and endpoint") {
  ServiceInstance i;
  i.serviceEndpoint = {"a", 1};
  i.additionalEndpoints = {{"admin", {"a", 2}}};
  i.shard = 1;
  ServersetAddress any{"h:1", "/p", std::nullopt, ""};
  CHECK(selectMember("member_1", i, any)->endpoint == Endpoint{"a", 1});
  ServersetAddress admin{"h:1", "/p", std::nullopt, "admin"};
  CHECK(selectMember("member_1", i, admin)->endpoint == Endpoint{"a", 2});
  ServersetAddress other{"h:1", "/p", std::nullopt, "http"};
  CHECK_FALSE(selectMember("member_1", i, other));
  ServersetAddress shard2{"h:1", "/p", 2, ""};
  CHECK_FALSE(selectMember("member_1", i, shard2));
  i.status = Status::Starting;
  CHECK_FALSE(selectMember("member_1", i, any));
}

TEST_CASE(
    "a member with named endpoints only is found by name, never by default (Finagle's Entry)") {
  // As Finagle's announcer writes it with Gson, which leaves out a null serviceEndpoint.
  auto d = decodeServiceInstance(
      R"({"additionalEndpoints":{"thrift":{"host":"10.0.0.7","port":9443}},"status":"ALIVE","shard":2})");
  REQUIRE(d.instance);
  CHECK_FALSE(d.instance->serviceEndpoint);
  ServersetAddress thrift{"h:1", "/p", std::nullopt, "thrift"};
  auto picked = selectMember("member_3", *d.instance, thrift);
  REQUIRE(picked);
  CHECK(picked->endpoint == Endpoint{"10.0.0.7", 9443});
  CHECK(picked->shard == 2);
  ServersetAddress byDefault{"h:1", "/p", std::nullopt, ""};
  CHECK_FALSE(selectMember("member_3", *d.instance, byDefault));
  ServersetAddress other{"h:1", "/p", std::nullopt, "admin"};
  CHECK_FALSE(selectMember("member_3", *d.instance, other));
  // Written back the same way: no serviceEndpoint key at all.
  CHECK(
      encodeServiceInstance(*d.instance) ==
      R"({"additionalEndpoints":{"thrift":{"host":"10.0.0.7","port":9443}},"status":"ALIVE","shard":2})");
  // A null serviceEndpoint reads as an absent one.
  auto null = decodeServiceInstance(
      R"({"serviceEndpoint":null,"additionalEndpoints":{"thrift":{"host":"a","port":1}},"status":"ALIVE"})");
  REQUIRE(null.instance);
  CHECK_FALSE(null.instance->serviceEndpoint);
  // Still malformed: a serviceEndpoint that is there but unusable, and a member with no endpoint.
  CHECK_FALSE(
      decodeServiceInstance(
          R"({"serviceEndpoint":{"host":"a"},"additionalEndpoints":{"thrift":{"host":"a","port":1}},"status":"ALIVE"})")
          .instance);
  auto none = decodeServiceInstance(R"({"additionalEndpoints":{},"status":"ALIVE"})");
  CHECK_FALSE(none.instance);
  CHECK(none.error.find("no serviceEndpoint") != std::string::npos);
  CHECK_FALSE(decodeServiceInstance(
                  R"({"additionalEndpoints":{"thrift":{"host":"a","port":0}},"status":"ALIVE"})")
                  .instance);
  // Aurora's announcer writes port 0 for a task without a primary port: no serviceEndpoint, the
  // named ones still usable.
  auto aurora = decodeServiceInstance(
      R"({"serviceEndpoint":{"host":"h.example","port":0},"additionalEndpoints":{"http":{"host":"h.example","port":31001}},"status":"ALIVE","shard":4})");
  REQUIRE(aurora.instance);
  CHECK_FALSE(aurora.instance->serviceEndpoint);
  ServersetAddress http{"h:1", "/p", std::nullopt, "http"};
  CHECK(selectMember("member_4", *aurora.instance, http)->endpoint == Endpoint{"h.example", 31001});
  CHECK_FALSE(selectMember("member_4", *aurora.instance, byDefault));
  // Port 0 without a string host is no Aurora member but a writer's mistake: malformed.
  auto numericHost = decodeServiceInstance(
      R"({"serviceEndpoint":{"host":42,"port":0},"additionalEndpoints":{"http":{"host":"h","port":1}},"status":"ALIVE"})");
  CHECK_FALSE(numericHost.instance);
  CHECK(numericHost.error.find("serviceEndpoint") != std::string::npos);
}

TEST_CASE("zk! and zk2! addresses") {
  auto a = parseAnnounceAddress("zk!zk1:2181,zk2:2181!/discovery/prod/pinghelp!0");
  REQUIRE(a);
  CHECK(a->connect == "zk1:2181,zk2:2181");
  CHECK(a->path == "/discovery/prod/pinghelp");
  CHECK(a->shard == 0);
  CHECK(a->endpoint.empty());
  auto named = parseAnnounceAddress("zk!zk1:2181!/p!7!http");
  REQUIRE(named);
  CHECK(named->shard == 7);
  CHECK(named->endpoint == "http");
  CHECK_FALSE(parseAnnounceAddress("zk!zk1:2181!/p"));     // no shard
  CHECK_FALSE(parseAnnounceAddress("zk!zk1!/p!0"));        // no port
  CHECK_FALSE(parseAnnounceAddress("zk!zk1:2181!p!0"));    // relative path
  CHECK_FALSE(parseAnnounceAddress("zk!zk1:2181!/p!x"));   // shard not a number
  CHECK_FALSE(parseAnnounceAddress("zk2!zk1:2181!/p!0"));  // wrong scheme

  auto r = parseResolveAddress("zk2!127.0.0.1:2181!/discovery/prod/pinghelp!admin");
  REQUIRE(r);
  CHECK(r->endpoint == "admin");
  CHECK_FALSE(r->shard);
  CHECK(parseResolveAddress("zk2!a:1,b:2!/p"));
  CHECK_FALSE(parseResolveAddress("zk2!a:1!/p/"));
  CHECK_FALSE(parseResolveAddress("zk2!a:1!//p"));

  // Finagle's older resolver form: one ensemble, the third part an endpoint name (never a shard).
  auto old = parseResolveAddress("zk!zk1:2181,zk2:2181!/discovery/prod/pinghelp!thrift");
  REQUIRE(old);
  CHECK(old->connect == "zk1:2181,zk2:2181");
  CHECK(old->path == "/discovery/prod/pinghelp");
  CHECK(old->endpoint == "thrift");
  CHECK_FALSE(old->shard);
  CHECK(parseResolveAddress("zk!a:1!/p")->endpoint.empty());
  CHECK(parseResolveAddress("zk!a:1!/p!0")->endpoint == "0");
  CHECK_FALSE(parseResolveAddress("zk!a:1#b:2!/p"));  // only zk2! joins ensembles
  CHECK_FALSE(parseResolveAddress("zk!a:1!/p!"));
  CHECK_FALSE(parseResolveAddress("zk3!a:1!/p"));

  // Zk2Resolver's ensembles joined by '#': one connect string each, read as one serverset.
  auto several = parseResolveAddress("zk2!a1:2181,a2:2181#b1:2181!/discovery/prod/pinghelp!admin");
  REQUIRE(several);
  CHECK(several->connect == "a1:2181,a2:2181#b1:2181");
  CHECK(several->endpoint == "admin");
  CHECK(ensembles(several->connect) == std::vector<std::string>{"a1:2181,a2:2181", "b1:2181"});
  CHECK(ensembles("a:1") == std::vector<std::string>{"a:1"});
  // The same ensemble once, whatever the order of its hosts.
  CHECK(ensembles("a:1,b:2#b:2,a:1#c:3") == std::vector<std::string>{"a:1,b:2", "c:3"});
  CHECK(ensembles("a:1/x#a:1/y") == std::vector<std::string>{"a:1/x", "a:1/y"});  // chroots differ
  CHECK_FALSE(parseResolveAddress("zk2!a:1#!/p"));
  CHECK_FALSE(parseResolveAddress("zk2!#a:1!/p"));
  CHECK_FALSE(parseResolveAddress("zk2!a:1##b:2!/p"));
  CHECK_FALSE(parseResolveAddress("zk2!a:1#b!/p"));  // no port

  CHECK(validConnectString("a:1,b:2/chroot/x"));
  CHECK_FALSE(validConnectString("a:1/"));
  CHECK_FALSE(validConnectString("a"));
}

TEST_CASE(
    "hosts in an address are names or addresses, never a chroot in disguise (found by fuzzing)") {
  CHECK_FALSE(registry::parseAnnounceAddress("zk!z/dk1:2180,zk2:2181!/a!5"));
  CHECK_FALSE(registry::parseResolveAddress("zk2!zk 1:2181!/a"));
  CHECK(registry::parseResolveAddress("zk2![::1]:2181,zk-2.example_x:2181!/a"));
}
