#pragma once
// Polls the local service (GET --health-path, or gRPC's grpc.health.v1.Health/Check over h2c) and
// reports rise/fall transitions, as Nerve does.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>

#include "core/config.h"

namespace sidecar {

class HealthChecker {
 public:
  struct Options {
    boost::asio::ip::tcp::endpoint upstream;
    std::string path;
    Duration interval;
    unsigned rise;
    unsigned fall;
    bool grpc = false;        // --health-check grpc
    std::string grpcService;  // the Check's HealthCheckRequest.service
  };
  // onChange(healthy) runs on ioc after `rise` successes in a row or `fall` failures in a row;
  // onResult(ok) after every poll.
  HealthChecker(boost::asio::io_context& ioc, Options options, std::function<void(bool)> onChange,
                std::function<void(bool)> onResult);
  void start();
  void stop() { stopped_ = true; }
  bool healthy() const { return healthy_; }

 private:
  boost::asio::io_context& ioc_;
  Options options_;
  std::function<void(bool)> onChange_;
  std::function<void(bool)> onResult_;
  unsigned streak_ = 0;
  bool healthy_ = false;
  bool stopped_ = false;
};

}  // namespace sidecar
