// The bounded per-method table of the Thrift metrics, its per-worker cache and its scrape.
#include "thrift/metrics.h"

#include <doctest/doctest.h>
#include <prometheus/text_serializer.h>

#include <string>

namespace sidecar {
namespace {

TEST_CASE("method names get slots in the order first seen, up to the cap, then other") {
  ThriftMethodTable table;
  CHECK(table.slotOf("ping") == 0);
  CHECK(table.slotOf("help") == 1);
  CHECK(table.slotOf("ping") == 0);
  for (std::size_t i = 2; i < ThriftMethodTable::kMaxMethods; ++i) {
    CHECK(!table.full());
    CHECK(table.slotOf("m" + std::to_string(i)) == i);
  }
  CHECK(table.full());
  CHECK(table.slotOf("late") == ThriftMethodTable::kOther);
  CHECK(table.slotOf("help") == 1);
  CHECK(table.names().size() == ThriftMethodTable::kMaxMethods);
}

TEST_CASE("names that are not plain method names are other and take no slot") {
  ThriftMethodTable table;
  for (const std::string& bad :
       {std::string(), std::string("other"), std::string("a b"), std::string("a\"b"),
        std::string("x\n"), std::string(129, 'a'), std::string("caf\xc3\xa9")}) {
    CHECK(table.slotOf(bad) == ThriftMethodTable::kOther);
  }
  CHECK(table.names().empty());
  CHECK(table.slotOf("Calculator:add") == 0);
  CHECK(table.slotOf("a.b_C9") == 1);
  CHECK(table.slotOf(std::string(128, 'a')) == 2);
}

TEST_CASE("a worker's cache agrees with the table, before and after the table is full") {
  ThriftMethodTable table;
  ThriftMethodSlots one(table), two(table);
  CHECK(one.slotOf("ping") == 0);
  CHECK(two.slotOf("help") == 1);
  CHECK(two.slotOf("ping") == 0);
  for (std::size_t i = 2; i < ThriftMethodTable::kMaxMethods; ++i) {
    two.slotOf("m" + std::to_string(i));
  }
  CHECK(table.full());
  // one saw only ping: it copies the full table once and finds the others' names.
  CHECK(one.slotOf("help") == 1);
  CHECK(one.slotOf("m63") == 63);
  CHECK(one.slotOf("late") == ThriftMethodTable::kOther);
  CHECK(one.slotOf("ping") == 0);
  CHECK(two.slotOf("late") == ThriftMethodTable::kOther);
}

TEST_CASE("the scrape shows the named methods and other, labelled, and nothing else") {
  ThriftMethodMetrics m(2);
  const auto ping = m.table.slotOf("ping");
  m.calls.add(0, ping, 2);
  m.calls.add(1, ping);
  m.exceptions.add(1, ThriftMethodMetrics::exceptionSeries(ping, ThriftMethodMetrics::fromSidecar));
  m.calls.add(0, ThriftMethodTable::kOther);
  m.duration.observe(0, ping, 0.002);
  const auto text = prometheus::TextSerializer().Serialize(m.Collect());
  CHECK(text.find("sidecar_thrift_method_calls_total{method=\"ping\"} 3") != std::string::npos);
  CHECK(text.find("sidecar_thrift_method_calls_total{method=\"other\"} 1") != std::string::npos);
  CHECK(text.find("sidecar_thrift_method_exceptions_total{method=\"ping\",source=\"sidecar\"} 1") !=
        std::string::npos);
  CHECK(text.find("sidecar_thrift_method_exceptions_total{method=\"ping\",source=\"service\"} 0") !=
        std::string::npos);
  CHECK(text.find("sidecar_thrift_method_duration_seconds_count{method=\"ping\"} 1") !=
        std::string::npos);
  CHECK(text.find("method=\"\"") == std::string::npos);
  CHECK(text.find("calls_total{}") == std::string::npos);
}

}  // namespace
}  // namespace sidecar
