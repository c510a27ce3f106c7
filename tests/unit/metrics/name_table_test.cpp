// The bounded tables of caller-chosen label values (metrics/name_table.h): what each kind of name
// accepts, and the labelling of series kept per slot.
#include "metrics/name_table.h"

#include <doctest/doctest.h>

namespace metrics {
namespace {

using Names = NameTable::Names;

TEST_CASE("gRPC method names are package.Service/Method: one slash, no colon") {
  CHECK(NameTable::nameable("pinghelp.PingHelp/Ping", Names::grpcMethods));
  CHECK(NameTable::nameable("grpc.health.v1.Health/Check", Names::grpcMethods));
  CHECK_FALSE(NameTable::nameable("pinghelp.PingHelp", Names::grpcMethods));
  CHECK_FALSE(NameTable::nameable("no/such/method", Names::grpcMethods));
  CHECK_FALSE(NameTable::nameable("a:b/c", Names::grpcMethods));
  CHECK_FALSE(NameTable::nameable("a/b c", Names::grpcMethods));
  CHECK_FALSE(NameTable::nameable("other", Names::grpcMethods));
  // Thrift names keep their own rule: no slash.
  CHECK_FALSE(NameTable::nameable("a/b", Names::methods));
  CHECK(NameTable::nameable("Service:method", Names::methods));
}

TEST_CASE("a table of gRPC methods gives slots to good names and other to the rest") {
  NameTable table(Names::grpcMethods);
  NameSlots worker(table);
  CHECK(worker.slotOf("a.B/C") == 0);
  CHECK(worker.slotOf("a.B/D") == 1);
  CHECK(worker.slotOf("a.B/C") == 0);
  CHECK(worker.slotOf("/a.B/C") == NameTable::kOther);
  const auto named = table.named();
  REQUIRE(named.size() == 3);
  CHECK(named[1].second == "a.B/D");
  CHECK(named.back() == std::pair<std::size_t, std::string>{NameTable::kOther, "other"});
}

TEST_CASE("labelledBySlot keeps the slots in use, each perSlot series, under the label asked") {
  prometheus::MetricFamily family;
  family.metric.resize(NameTable::kSlots * 2);
  for (std::size_t i = 0; i < family.metric.size(); ++i) {
    family.metric[i].counter.value = static_cast<double>(i);
  }
  const auto out = labelledBySlot(family, {{1, "x/y"}, {NameTable::kOther, "other"}}, 2, "rpc");
  REQUIRE(out.metric.size() == 4);
  CHECK(out.metric[0].label.front().name == "rpc");
  CHECK(out.metric[0].label.front().value == "x/y");
  CHECK(out.metric[1].counter.value == 3);
  CHECK(out.metric[2].counter.value == static_cast<double>(NameTable::kOther * 2));
}

}  // namespace
}  // namespace metrics
