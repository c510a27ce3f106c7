// Typed series: the flat index, the total and the labelling order agree.
#include <doctest/doctest.h>
#include <metrics/series.h>

#include <vector>

namespace {

enum class Side : std::size_t { left, right, count };
using Requests = metrics::Series<metrics::Bounded<3>, metrics::StatusClass>;
using PerSlot = metrics::Series<metrics::StatusClass, Side>;

}  // namespace

TEST_CASE("a series index is row-major over its dimensions, the last varying fastest") {
  static_assert(Requests::size == 15);
  static_assert(Requests::index(0, metrics::StatusClass::informational) == 0);
  static_assert(Requests::index(1, metrics::StatusClass::success) == 6);
  static_assert(Requests::index(2, metrics::StatusClass::serverError) == 14);
  static_assert(PerSlot::size == 10);
  static_assert(PerSlot::at(2, metrics::StatusClass::redirection, Side::right) == 25);
  static_assert(PerSlot::total(3) == 30);
}

TEST_CASE("a status outside 100..599 counts as 5xx") {
  static_assert(metrics::statusClass(204) == metrics::StatusClass::success);
  static_assert(metrics::statusClass(599) == metrics::StatusClass::serverError);
  static_assert(metrics::statusClass(99) == metrics::StatusClass::serverError);
  static_assert(metrics::statusClass(600) == metrics::StatusClass::serverError);
  CHECK(metrics::statusClassName(metrics::StatusClass::clientError) == "4xx");
}

TEST_CASE("forEach visits a slot's series in index order with their values") {
  std::vector<std::size_t> indexes;
  PerSlot::forEach(1, [&](std::size_t i, metrics::StatusClass c, Side s) {
    CHECK(i == PerSlot::at(1, c, s));
    indexes.push_back(i);
  });
  REQUIRE(indexes.size() == PerSlot::size);
  for (std::size_t i = 0; i < indexes.size(); ++i) {
    CHECK(indexes[i] == PerSlot::size + i);
  }
}
