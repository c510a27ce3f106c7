// B3 headers (trace/b3.h) and Zipkin's v2 JSON (trace/zipkin_json.h): what is read, what is
// refused as malformed, what is written.
#include "trace/b3.h"

#include <doctest/doctest.h>

#include <boost/beast/http/fields.hpp>
#include <boost/json/parse.hpp>
#include <string>
#include <vector>

#include "trace/tracer.h"
#include "trace/zipkin_json.h"

namespace sidecar::trace {
namespace {

namespace http = boost::beast::http;

http::fields fieldsOf(std::initializer_list<std::pair<const char*, const char*>> list) {
  http::fields f;
  for (const auto& [k, v] : list) {
    f.insert(k, v);
  }
  return f;
}

TEST_CASE("b3: the multi-header form, 64- and 128-bit trace ids, either case") {
  auto b = readB3(fieldsOf({{"X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"},
                            {"X-B3-SpanId", "A2FB4A1D1A96D312"},
                            {"X-B3-ParentSpanId", "0020000000000001"},
                            {"X-B3-Sampled", "1"}}));
  CHECK(b.present);
  CHECK_FALSE(b.malformed);
  CHECK(b.context.traceIdHigh == 0x463ac35c9f6413adull);
  CHECK(b.context.traceId == 0x48485a3953bb6124ull);
  CHECK(b.context.spanId == 0xa2fb4a1d1a96d312ull);
  CHECK(b.context.parentId == 0x0020000000000001ull);
  CHECK(b.context.isSampled());

  b = readB3(fieldsOf({{"x-b3-traceid", "48485a3953bb6124"},
                       {"x-b3-spanid", "48485a3953bb6124"},
                       {"X-B3-Flags", "1"}}));
  CHECK(b.context.valid());
  CHECK(b.context.debug);
  CHECK_FALSE(b.context.sampled);
}

TEST_CASE("b3: the single header, with or without sampling and parent, or sampling alone") {
  auto b = readB3(
      fieldsOf({{"b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"}}));
  CHECK_FALSE(b.malformed);
  CHECK(b.context.traceIdHigh == 0x80f198ee56343ba8ull);
  CHECK(b.context.spanId == 0xe457b5a2e4d86bd1ull);
  CHECK(b.context.parentId == 0x05e3ac9a4f6e3b90ull);
  CHECK(*b.context.sampled);

  b = readB3(fieldsOf({{"b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-d"}}));
  CHECK(b.context.debug);
  b = readB3(fieldsOf({{"b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1"}}));
  CHECK(b.context.valid());
  CHECK_FALSE(b.context.sampled);
  b = readB3(fieldsOf({{"b3", "0"}}));
  CHECK_FALSE(b.malformed);
  CHECK_FALSE(b.context.valid());
  CHECK(b.context.sampled == false);
  // The single header wins over the other form.
  b = readB3(fieldsOf({{"b3", "0"}, {"X-B3-Sampled", "1"}}));
  CHECK(b.context.sampled == false);
}

TEST_CASE("b3: anything the specification does not allow drops the whole context") {
  for (const auto& f : std::vector<http::fields>{
           fieldsOf({{"X-B3-TraceId", "48485a3953bb612"}, {"X-B3-SpanId", "48485a3953bb6124"}}),
           fieldsOf({{"X-B3-TraceId", "48485a3953bb6124"}, {"X-B3-SpanId", "48485a3953bb612g"}}),
           fieldsOf({{"X-B3-TraceId", "0000000000000000"}, {"X-B3-SpanId", "48485a3953bb6124"}}),
           fieldsOf({{"X-B3-SpanId", "48485a3953bb6124"}}),
           fieldsOf({{"X-B3-ParentSpanId", "48485a3953bb6124"}}),
           fieldsOf({{"X-B3-TraceId", "48485a3953bb6124"},
                     {"X-B3-SpanId", "48485a3953bb6124"},
                     {"X-B3-Sampled", "yes"}}),
           fieldsOf({{"X-B3-Flags", "2"}}),
           fieldsOf({{"b3", "48485a3953bb6124"}}),
           fieldsOf({{"b3", "48485a3953bb6124-48485a3953bb6124-1-48485a3953bb6124-x"}}),
           fieldsOf({{"b3", "48485a3953bb6124-48485a3953bb6124-true"}}),
           fieldsOf({{"b3", ""}}),
       }) {
    const auto b = readB3(f);
    CHECK(b.present);
    CHECK(b.malformed);
    CHECK_FALSE(b.context.valid());
    CHECK_FALSE(b.context.sampled);
  }
  CHECK_FALSE(readB3(fieldsOf({{"Host", "x"}})).present);
}

TEST_CASE("b3: written in the multi-header form, lower-case hex, erased in both forms") {
  http::fields f = fieldsOf({{"b3", "1"}, {"X-B3-SpanId", "1111111111111111"}, {"Host", "x"}});
  eraseB3(f);
  CHECK(f.find("b3") == f.end());
  CHECK(f.find("X-B3-SpanId") == f.end());
  Context c;
  c.traceIdHigh = 0xabc;
  c.traceId = 0x1234;
  c.spanId = 0xBEEF;
  c.parentId = 0x1;
  c.sampled = true;
  writeB3(f, c);
  CHECK(f["X-B3-TraceId"] == "0000000000000abc0000000000001234");
  CHECK(f["X-B3-SpanId"] == "000000000000beef");
  CHECK(f["X-B3-ParentSpanId"] == "0000000000000001");
  CHECK(f["X-B3-Sampled"] == "1");
  CHECK(f.find("X-B3-Flags") == f.end());
  const auto back = readB3(f);
  CHECK(back.context.traceIdHigh == c.traceIdHigh);
  CHECK(back.context.spanId == c.spanId);
}

TEST_CASE("zipkin json: a span in the v2 model, escaped, durations at least 1 µs") {
  Span s;
  s.context.traceId = 0x1;
  s.context.spanId = 0x2;
  s.context.parentId = 0x3;
  s.context.debug = true;
  s.kind = Kind::client;
  s.name = "get";
  s.timestampUs = 1'700'000'000'000'000;
  s.durationUs = 0;
  s.remoteIp = "::1";
  s.remotePort = 8443;
  s.tags = {{"http.path", "/a\"b\n"}};
  const auto text = encodeSpans({s, s}, "svc");
  const auto v = boost::json::parse(text).as_array();
  REQUIRE(v.size() == 2);
  const auto& o = v[0].as_object();
  CHECK(o.at("traceId").as_string() == "0000000000000001");
  CHECK(o.at("id").as_string() == "0000000000000002");
  CHECK(o.at("parentId").as_string() == "0000000000000003");
  CHECK(o.at("kind").as_string() == "CLIENT");
  CHECK(o.at("duration").as_int64() == 1);
  CHECK(o.at("timestamp").as_int64() == 1'700'000'000'000'000);
  CHECK(o.at("localEndpoint").at("serviceName").as_string() == "svc");
  CHECK(o.at("remoteEndpoint").at("ipv6").as_string() == "::1");
  CHECK(o.at("remoteEndpoint").at("port").as_int64() == 8443);
  CHECK(o.at("tags").at("http.path").as_string() == "/a\"b\n");
  CHECK(o.at("debug").as_bool());
}

TEST_CASE("zipkin json: bytes that are not UTF-8 become U+FFFD; tags are bounded") {
  Span s;
  s.context.traceId = 1;
  s.context.spanId = 2;
  s.name = "get";
  // A stray byte, a sequence cut short, an overlong '/', a surrogate; then valid two-, three-
  // and four-byte characters, which pass as they are.
  s.tags = {{"http.path", std::string("/a\xff\xfe\xc3") + "\xc0\xaf" + "\xed\xa0\x80" +
                              "\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82"}};
  const auto v = boost::json::parse(encodeSpans({s}, "svc"));  // Boost.JSON checks UTF-8
  const auto path = std::string(v.as_array()[0].at("tags").at("http.path").as_string());
  CHECK(path.rfind("/a\xef\xbf\xbd\xef\xbf\xbd", 0) == 0);
  CHECK(path.find("\xc3\xa9\xe2\x82\xac\xf0\x9f\x99\x82") != std::string::npos);
  CHECK(path.find("\xc0") == std::string::npos);

  const auto big =
      httpSpan(Kind::server, s.context, "GET", "/" + std::string(1 << 20, 'x') + "?q", 200, 1, 1);
  for (const auto& [k, value] : big.tags) {
    CHECK(value.size() <= kMaxTagBytes);
  }
}

TEST_CASE("tracing: a caller's decision wins, a context without one is decided by the rate") {
  prometheus::Registry r;
  TracerMetrics m(r);
  TracerConfig c;
  c.zipkinUrl = "http://127.0.0.1:1/";
  c.sampleRate = 0.0;
  Tracer never(c, m);
  c.sampleRate = 1.0;
  Tracer always(c, m);
  Context in;
  in.traceId = 7;
  in.spanId = 8;
  CHECK_FALSE(never.join(in).isSampled());
  CHECK(always.join(in).isSampled());
  CHECK(always.join(in).spanId == 8);  // joined, not a child
  in.sampled = true;
  CHECK(never.join(in).isSampled());
  in.sampled.reset();
  in.debug = true;
  CHECK(never.join(in).isSampled());
  Context none;
  none.sampled = false;
  const auto fresh = always.join(none);
  CHECK(fresh.valid());
  CHECK_FALSE(fresh.isSampled());
  const auto child = childOf(fresh);
  CHECK(child.traceId == fresh.traceId);
  CHECK(child.parentId == fresh.spanId);
  CHECK(child.spanId != fresh.spanId);
}

}  // namespace
}  // namespace sidecar::trace
