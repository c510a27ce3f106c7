// The drain's order (control/drain.h): withdraw, wait --deregister-grace only when a member was
// withdrawn, drain the workers, finish once: when the last worker is drained or at the timeout.
#include "control/drain.h"

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <string>
#include <vector>

namespace sidecar {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Drain {
  boost::asio::io_context ioc;
  std::vector<std::string> steps;
  std::vector<std::function<void()>> workersDrained;  // one per worker told to drain
  std::size_t workers = 2;
  bool hadMember = true;
  bool announced = true;
  Clock::time_point drainStarted{};
  int finishedCalls = 0;

  DrainController make(Duration grace, Duration timeout) {
    DrainController::Steps s;
    if (announced) {
      s.withdraw = [this](std::function<void(bool)> done) {
        steps.push_back("withdraw");
        done(hadMember);
      };
    }
    s.drainWorkers = [this](std::function<void()> oneDrained) {
      steps.push_back("drain");
      drainStarted = Clock::now();
      for (std::size_t i = 0; i < workers; ++i) {
        workersDrained.push_back(oneDrained);
      }
      return workers;
    };
    s.finished = [this](const char* why) {
      steps.push_back(std::string("finished:") + why);
      ++finishedCalls;
    };
    return DrainController(ioc, grace, timeout, std::move(s));
  }
};

TEST_CASE("drain: a withdrawn member is given --deregister-grace before the workers drain") {
  Drain d;
  auto c = d.make(Duration(150), Duration(5'000));
  const auto start = Clock::now();
  c.begin("test", std::nullopt);
  CHECK(c.draining());
  CHECK(d.steps == std::vector<std::string>{"withdraw"});
  d.ioc.run_for(1s);
  REQUIRE(d.steps.size() == 2);
  CHECK(d.steps[1] == "drain");
  CHECK(d.drainStarted - start >= 150ms);
  for (auto& done : d.workersDrained) {
    done();
  }
  d.ioc.restart();
  d.ioc.run_for(200ms);
  CHECK(d.steps.back() == "finished:drained");
  CHECK(d.finishedCalls == 1);
}

TEST_CASE("drain: no member (none announced, or none written) means no grace") {
  for (const bool announced : {false, true}) {
    CAPTURE(announced);
    Drain d;
    d.announced = announced;
    d.hadMember = false;
    auto c = d.make(Duration(60'000), Duration(5'000));
    c.begin("test", std::nullopt);
    CHECK(d.steps.back() == "drain");
  }
}

TEST_CASE("drain: a worker that never drains ends the drain at the timeout, once") {
  Drain d;
  d.announced = false;
  auto c = d.make(Duration(0), Duration(100));
  c.begin("test", std::nullopt);
  d.workersDrained[0]();  // one of two drained
  d.ioc.run_for(1s);
  CHECK(d.steps.back() == "finished:drain_timeout");
  d.workersDrained[1]();  // the other, too late: nothing more happens
  d.ioc.restart();
  d.ioc.run_for(100ms);
  CHECK(d.finishedCalls == 1);
}

TEST_CASE("drain: a grace given with the signal replaces the drain timeout; begin works once") {
  Drain d;
  d.announced = false;
  auto c = d.make(Duration(0), Duration(60'000));
  c.begin("admin", Duration(50));
  c.begin("signal", std::nullopt);
  d.ioc.run_for(1s);
  CHECK(d.steps == std::vector<std::string>{"drain", "finished:drain_timeout"});
}

}  // namespace
}  // namespace sidecar
