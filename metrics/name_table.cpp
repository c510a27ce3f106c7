// The bounded tables of caller-chosen names (metrics/name_table.h).
#include "metrics/name_table.h"

#include <algorithm>

namespace metrics {

bool NameTable::nameable(std::string_view name, Names kind) {
  if (name.empty() || name.size() > kMaxNameLength || name == kOtherName) {
    return false;
  }
  const bool dash = kind == Names::clientIds;
  const bool grpc = kind == Names::grpcMethods;
  if (grpc && std::count(name.begin(), name.end(), '/') != 1) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [dash, grpc](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || (!grpc && c == ':') || (dash && c == '-') || (grpc && c == '/');
  });
}

std::size_t NameTable::slotOf(std::string_view name) {
  if (!accepts(name)) {
    return kOther;
  }
  std::lock_guard lock(mutex_);
  const auto it = std::find(names_.begin(), names_.end(), name);
  if (it != names_.end()) {
    return static_cast<std::size_t>(it - names_.begin());
  }
  if (names_.size() == kMaxMethods) {
    return kOther;
  }
  names_.emplace_back(name);
  if (names_.size() == kMaxMethods) {
    full_.store(true, std::memory_order_release);
  }
  return names_.size() - 1;
}

std::vector<std::string> NameTable::names() const {
  std::lock_guard lock(mutex_);
  return names_;
}

std::vector<std::pair<std::size_t, std::string>> NameTable::named() const {
  std::vector<std::pair<std::size_t, std::string>> out;
  auto all = names();
  for (std::size_t slot = 0; slot < all.size(); ++slot) {
    out.emplace_back(slot, std::move(all[slot]));
  }
  out.emplace_back(kOther, kOtherName);
  return out;
}

std::size_t NameSlots::slotOf(std::string_view name) {
  if (const auto it = known_.find(name); it != known_.end()) {
    return it->second;
  }
  if (complete_ || !table_.accepts(name)) {
    return NameTable::kOther;
  }
  if (table_.full()) {
    const auto names = table_.names();
    for (std::size_t slot = 0; slot < names.size(); ++slot) {
      known_.emplace(names[slot], slot);
    }
    complete_ = true;
    const auto it = known_.find(name);
    return it != known_.end() ? it->second : NameTable::kOther;
  }
  const auto slot = table_.slotOf(name);
  if (slot != NameTable::kOther) {
    known_.emplace(std::string(name), slot);
  }
  return slot;
}

prometheus::MetricFamily labelledBySlot(
    prometheus::MetricFamily family, const std::vector<std::pair<std::size_t, std::string>>& named,
    std::size_t perSlot, const std::string& label) {
  std::vector<prometheus::ClientMetric> kept;
  for (const auto& [slot, name] : named) {
    for (std::size_t i = 0; i < perSlot; ++i) {
      auto m = family.metric[slot * perSlot + i];
      m.label.insert(m.label.begin(), {label, name});
      kept.push_back(std::move(m));
    }
  }
  family.metric = std::move(kept);
  return family;
}

}  // namespace metrics
