#pragma once
// The graceful shutdown, in the order docs/configuration.md ("Signals and shutdown") gives:
// report not ready, delete the member,
// wait --deregister-grace so that callers' resolvers see it gone, stop accepting, let in-flight
// requests finish until the drain timeout, then stop.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <functional>
#include <optional>

#include "core/config.h"

namespace sidecar {

class DrainController {
 public:
  struct Steps {
    // Deletes the member and calls done, saying whether there was one (null when nothing is
    // announced). Without a member there is nothing for callers' resolvers to catch up with:
    // no --deregister-grace.
    std::function<void(std::function<void(bool hadMember)> done)> withdraw;
    // Tells every worker to drain; each calls oneDrained (on the control thread) when it has no
    // connection left. Returns how many workers were told.
    std::function<std::size_t(std::function<void()> oneDrained)> drainWorkers;
    // The drain is over (drained, or the timeout passed): why is "drained" or "drain_timeout".
    std::function<void(const char* why)> finished;
  };

  DrainController(boost::asio::io_context& ioc, Duration deregisterGrace, Duration drainTimeout,
                  Steps steps);
  // Starts the drain (once; later calls do nothing). grace overrides the drain timeout.
  void begin(const char* source, std::optional<Duration> grace);
  bool draining() const { return draining_; }

 private:
  void drainWorkers(Duration timeout);
  void finish(const char* why);

  boost::asio::io_context& ioc_;
  Duration deregisterGrace_;
  Duration drainTimeout_;
  Steps steps_;
  boost::asio::steady_timer graceTimer_;
  boost::asio::steady_timer drainTimer_;
  std::size_t pendingWorkers_ = 0;
  bool draining_ = false;
  bool finished_ = false;
};

}  // namespace sidecar
