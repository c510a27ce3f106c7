#pragma once
// Small text helpers shared by the flag parsers.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>

namespace sidecar {

// The whole of text as a number of type T, or none (empty, trailing bytes, out of range).
template <class T>
std::optional<T> parseNumber(std::string_view text) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

inline std::string lower(std::string_view s) {
  std::string out(s);
  // ASCII only, as the "C" locale's tolower (field names are tokens), without a call per byte.
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c | 0x20);
    }
  }
  return out;
}

}  // namespace sidecar
