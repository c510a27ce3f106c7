#pragma once
// The series of a sharded family (sharded.h) as a type: its label dimensions, each an enum whose
// last enumerator is `count` or an index below a bound known at compile time, flattened into the
// series index the request path adds to. The index and the number of series follow from the
// types, so no use site multiplies by hand and a new label value cannot shift another's series.
// A family whose series repeat per slot known only at start-up (a route) puts the slot first:
// at(slot, ...) and total(slots).

#include <array>
#include <cassert>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace metrics {

// A dimension that is an index below N (a method's slot in a table of N).
template <std::size_t N>
struct Bounded {};

template <class D>
struct Dimension;

template <class E>
requires std::is_enum_v<E>
struct Dimension<E> {
  using Value = E;
  static constexpr std::size_t count = static_cast<std::size_t>(E::count);
  static constexpr std::size_t index(E e) { return static_cast<std::size_t>(e); }
  static constexpr E value(std::size_t i) { return static_cast<E>(i); }
};

template <std::size_t N>
struct Dimension<Bounded<N>> {
  using Value = std::size_t;
  static constexpr std::size_t count = N;
  static constexpr std::size_t index(std::size_t i) { return i; }
  static constexpr std::size_t value(std::size_t i) { return i; }
};

template <class... Dims>
class Series {
 public:
  // Series per slot (the whole family when it has no slots).
  static constexpr std::size_t size = (Dimension<Dims>::count * ...);

  // Row-major: the last dimension varies fastest, as the label lists are built.
  static constexpr std::size_t index(typename Dimension<Dims>::Value... values) {
    std::size_t flat = 0;
    ((assert(Dimension<Dims>::index(values) < Dimension<Dims>::count),
      flat = flat * Dimension<Dims>::count + Dimension<Dims>::index(values)),
     ...);
    return flat;
  }
  static constexpr std::size_t at(std::size_t slot, typename Dimension<Dims>::Value... values) {
    return slot * size + index(values...);
  }
  static constexpr std::size_t total(std::size_t slots) { return slots * size; }

  // Calls f(index, values...) for each series of slot, in index order: for labelling them at
  // start-up or when a slot changes hands (never on the request path).
  template <class F>
  static void forEach(std::size_t slot, F&& f) {
    for (std::size_t flat = 0; flat < size; ++flat) {
      std::apply([&](auto... values) { f(slot * size + flat, values...); },
                 valuesOf(flat, std::index_sequence_for<Dims...>{}));
    }
  }
  template <class F>
  static void forEach(F&& f) {
    forEach(0, std::forward<F>(f));
  }

 private:
  template <std::size_t... I>
  static std::tuple<typename Dimension<Dims>::Value...> valuesOf(std::size_t flat,
                                                                 std::index_sequence<I...>) {
    constexpr std::array<std::size_t, sizeof...(Dims)> counts{Dimension<Dims>::count...};
    std::array<std::size_t, sizeof...(Dims)> indexes{};
    for (std::size_t d = sizeof...(Dims); d-- > 0;) {
      indexes[d] = flat % counts[d];
      flat /= counts[d];
    }
    return {Dimension<Dims>::value(indexes[I])...};
  }
};

// An HTTP status's class, the `code` label of every request family ("1xx" .. "5xx"); a status
// outside 100..599 counts as 5xx.
enum class StatusClass : std::size_t {
  informational,
  success,
  redirection,
  clientError,
  serverError,
  count
};
constexpr StatusClass statusClass(unsigned status) {
  const unsigned cls = status / 100;
  return cls >= 1 && cls <= 5 ? static_cast<StatusClass>(cls - 1) : StatusClass::serverError;
}
inline std::string statusClassName(StatusClass c) {
  return std::to_string(static_cast<std::size_t>(c) + 1) + "xx";
}

}  // namespace metrics
