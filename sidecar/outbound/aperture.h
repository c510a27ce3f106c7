#pragma once
// Deterministic aperture (Finagle's, in our own terms): with --aperture each sidecar balances a
// serverset route over a window of its members instead of all of them, so that a thousand
// callers of a thousand members do not each hold a thousand connections. The members are put on
// a ring in one order every sidecar agrees on (by address and port); a sidecar's coordinate on the
// ring (0 to 1) is its own member's position when it announces in that serverset, else its
// position among the members of the serverset it announces in (RouteDirectory), else a stable
// hash of its own host:port; its window is the `size` members from there on. Callers at evenly
// spread coordinates (the members of one serverset) cover the members evenly; hashed coordinates
// cover them as evenly as the hash spreads them. Pure functions, control thread.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "net/io.h"

namespace sidecar {

// A stable coordinate in [0, 1) for a key (FNV-1a, 64 bits; the same in every process).
inline double apertureHash(std::string_view key) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : key) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  // A final mix: keys that differ in their last characters (ports) land far apart.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

// The ring's order: every sidecar sorts the same members the same way.
inline void apertureOrder(std::vector<tcp::endpoint>& members) {
  std::sort(members.begin(), members.end());
}

// Where a coordinate falls on a ring of n members.
inline std::size_t apertureStart(double coordinate, std::size_t n) {
  if (n == 0) {
    return 0;
  }
  return std::min(n - 1, static_cast<std::size_t>(std::floor(coordinate * static_cast<double>(n))));
}

// The members (in ring order) from start on, `size` of them (all when there are no more).
inline std::vector<tcp::endpoint> apertureWindow(const std::vector<tcp::endpoint>& ring,
                                                 std::size_t start, std::size_t size) {
  const std::size_t n = ring.size();
  if (size >= n) {
    return ring;
  }
  std::vector<tcp::endpoint> out;
  out.reserve(size);
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(ring[(start + i) % n]);
  }
  return out;
}

}  // namespace sidecar
