#pragma once
// Label values that callers choose (Thrift and gRPC method names, client ids), bounded: a table
// of the first names seen, a lock-free per-worker view of it, and the scrape-time labelling of
// series kept per slot.

#include <prometheus/metric_family.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace metrics {

// The names that have a series of their own (Thrift methods, TTwitter client ids, gRPC methods):
// the first kMaxMethods names seen, in that order; any later name, and any name that is not a
// plain name of its kind, is counted as `other`. Callers choose the names, so the set is capped
// (a caller cannot grow the scrape or the memory).
class NameTable {
 public:
  // What the names are: Thrift methods, TTwitter client ids (which may hold '-' too), or gRPC
  // methods ("package.Service/Method": one '/').
  enum class Names : std::uint8_t { methods, clientIds, grpcMethods };
  explicit NameTable(Names kind = Names::methods) : kind_(kind) {}

  static constexpr std::size_t kMaxMethods = 64;
  static constexpr std::size_t kOther = kMaxMethods;  // the slot of every other name
  static constexpr std::size_t kSlots = kMaxMethods + 1;
  static constexpr std::size_t kMaxNameLength = 128;
  static constexpr std::string_view kOtherName = "other";

  // Letters, digits, '_', '.', ':' (a multiplexed "Service:method"; '-' for client ids, one '/'
  // for gRPC methods), at most kMaxNameLength bytes, and not "other" itself.
  static bool nameable(std::string_view name, Names kind = Names::methods);
  bool accepts(std::string_view name) const { return nameable(name, kind_); }

  // name's slot: its own, a new one while the table is not full, else kOther. Takes the lock.
  std::size_t slotOf(std::string_view name);
  // True once every slot is named; the names never change after that.
  bool full() const { return full_.load(std::memory_order_acquire); }
  // The names so far, index = slot. Takes the lock.
  std::vector<std::string> names() const;
  // (slot, name) of the slots in use, `other` last: what labelledBySlot() takes.
  std::vector<std::pair<std::size_t, std::string>> named() const;

 private:
  Names kind_;
  mutable std::mutex mutex_;
  std::vector<std::string> names_;
  std::atomic<bool> full_{false};
};

// One worker's view of the table: a name seen before on this worker is found without a lock. A
// worker takes the table's lock for a name it has not seen while the table still has room, and
// once, to copy the table, when it finds it full; after that no call takes a lock.
class NameSlots {
 public:
  explicit NameSlots(NameTable& table) : table_(table) {}
  std::size_t slotOf(std::string_view name);

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  NameTable& table_;
  std::unordered_map<std::string, std::size_t, Hash, std::equal_to<>> known_;
  bool complete_ = false;  // known_ holds the whole (full) table
};

// family's series, one per slot times perSlot in slot order, kept only for the slots in use
// (named: slot and name) and labelled label="name".
prometheus::MetricFamily labelledBySlot(
    prometheus::MetricFamily family, const std::vector<std::pair<std::size_t, std::string>>& named,
    std::size_t perSlot, const std::string& label = "method");

}  // namespace metrics
