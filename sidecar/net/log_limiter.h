#pragma once
// A budget of log lines per second, so that a flood of bad callers or an outage of the local
// service under load cannot flood the log (or slow the data path down writing it).

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <utility>

namespace sidecar {

// At most kPerSecond lines each second. The next line written carries how many were left out;
// counters count them all. One per event and thread: no lock.
class LogLimiter {
 public:
  static constexpr unsigned kPerSecond = 10;
  // True if a line may be written now; then `suppressed` is how many were left out before it.
  bool allow(std::chrono::steady_clock::time_point now, std::uint64_t& suppressed) {
    if (now - windowStart_ >= std::chrono::seconds(1)) {
      windowStart_ = now;
      written_ = 0;
    }
    if (written_ >= kPerSecond) {
      ++dropped_;
      return false;
    }
    ++written_;
    suppressed = dropped_;
    dropped_ = 0;
    return true;
  }

 private:
  std::chrono::steady_clock::time_point windowStart_{};
  unsigned written_ = 0;
  std::uint64_t dropped_ = 0;
};

// Writes one line at level within limiter's budget; the line after a gap says how many were left
// out (`suppressed=N`).
template <class... Args>
void logWithin(LogLimiter& limiter, spdlog::level::level_enum level,
               fmt::format_string<Args...> format, Args&&... args) {
  std::uint64_t suppressed = 0;
  if (!spdlog::should_log(level) || !limiter.allow(std::chrono::steady_clock::now(), suppressed)) {
    return;
  }
  if (suppressed == 0) {
    spdlog::log(level, format, std::forward<Args>(args)...);
  } else {
    spdlog::log(level, "{} suppressed={}", fmt::format(format, std::forward<Args>(args)...),
                suppressed);
  }
}

}  // namespace sidecar
