// The drain's steps, each started by the one before it, all on the control thread.
#include "control/drain.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

namespace sidecar {

DrainController::DrainController(boost::asio::io_context& ioc, Duration deregisterGrace,
                                 Duration drainTimeout, Steps steps)
    : ioc_(ioc),
      deregisterGrace_(deregisterGrace),
      drainTimeout_(drainTimeout),
      steps_(std::move(steps)),
      graceTimer_(ioc),
      drainTimer_(ioc) {}

void DrainController::begin(const char* source, std::optional<Duration> grace) {
  if (draining_) {
    return;
  }
  draining_ = true;
  const Duration timeout = grace.value_or(drainTimeout_);
  spdlog::info("event=draining source={} drain_timeout_ms={}", source, timeout.count());
  if (!steps_.withdraw) {
    drainWorkers(timeout);
    return;
  }
  // The member goes first; the listener keeps accepting for --deregister-grace so that callers'
  // resolvers see it gone before connections are refused.
  steps_.withdraw([this, timeout](bool hadMember) {
    if (!hadMember) {
      drainWorkers(timeout);
      return;
    }
    spdlog::info("event=deregistered grace_ms={}", deregisterGrace_.count());
    graceTimer_.expires_after(deregisterGrace_);
    graceTimer_.async_wait([this, timeout](const boost::system::error_code& ec) {
      if (!ec) {
        drainWorkers(timeout);
      }
    });
  });
}

void DrainController::drainWorkers(Duration timeout) {
  pendingWorkers_ = steps_.drainWorkers([this] {
    boost::asio::post(ioc_, [this] {
      if (--pendingWorkers_ == 0) {
        finish("drained");
      }
    });
  });
  drainTimer_.expires_after(timeout);
  drainTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) {
      finish("drain_timeout");
    }
  });
}

void DrainController::finish(const char* why) {
  if (finished_) {
    return;
  }
  finished_ = true;
  spdlog::info("event=drain_done reason={}", why);
  drainTimer_.cancel();
  steps_.finished(why);
}

}  // namespace sidecar
