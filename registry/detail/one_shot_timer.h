#pragma once
// A timer for one purpose: runs its action once after a delay, unless cancelled, re-armed or
// destroyed first. steady_timer::cancel() cannot recall a handler that has already been queued
// (it then runs with success), so each arming has a number, and a handler whose number is no
// longer current does nothing: nothing runs after cancel() or after the owner is gone.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

namespace registry::detail {

class OneShotTimer {
 public:
  explicit OneShotTimer(boost::asio::io_context& ioc) : timer_(ioc) {}
  ~OneShotTimer() { cancel(); }
  OneShotTimer(const OneShotTimer&) = delete;
  OneShotTimer& operator=(const OneShotTimer&) = delete;

  // Replaces any pending action.
  void schedule(std::chrono::milliseconds delay, std::function<void()> action) {
    const uint64_t armed = ++*current_;
    timer_.expires_after(delay);
    timer_.async_wait([current = current_, armed,
                       action = std::move(action)](const boost::system::error_code& ec) {
      if (!ec && *current == armed) {
        action();
      }
    });
  }

  void cancel() {
    ++*current_;
    timer_.cancel();
  }

 private:
  boost::asio::steady_timer timer_;
  std::shared_ptr<uint64_t> current_ = std::make_shared<uint64_t>(0);
};

}  // namespace registry::detail
