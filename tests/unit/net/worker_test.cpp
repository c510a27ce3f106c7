// The worker's admission at --max-connections: an idle connection makes room, a busy one does not.
#include "net/worker.h"

#include <doctest/doctest.h>
#include <metrics/metrics.h>

#include <atomic>
#include <thread>

namespace sidecar {
namespace {

// A connection that is idle (evictable) until told it is busy.
class TestSession final : public TrackedSession {
 public:
  TestSession(Worker& w, TcpSocket s, bool idle, Budget b)
      : TrackedSession(b), worker_(w), socket_(std::move(s)), idle_(idle) {
    worker_.sessionStarted(*this);
  }
  ~TestSession() { worker_.sessionEnded(*this); }
  bool closeIfIdle() override {
    if (!idle_ || !socket_.is_open()) {
      return false;
    }
    error_code ignored;
    socket_.close(ignored);
    worker_.connectionClosed(budget());
    return true;
  }
  void expireIfDue(std::chrono::steady_clock::time_point) override {}

 private:
  Worker& worker_;
  TcpSocket socket_;
  bool idle_;
};

class TestHandler final : public ConnectionHandler {
 public:
  TestHandler(Worker& w, std::atomic<bool>& nextIdle, std::atomic<int>& accepted,
              Budget b = Budget::listen)
      : worker_(w), nextIdle_(nextIdle), accepted_(accepted), budget_(b) {}
  void accepted(TcpSocket socket) override {
    sessions_.push_back(
        std::make_unique<TestSession>(worker_, std::move(socket), nextIdle_.load(), budget_));
    ++accepted_;
  }
  void clear() override { sessions_.clear(); }

 private:
  Worker& worker_;
  std::atomic<bool>& nextIdle_;
  std::atomic<int>& accepted_;
  Budget budget_;
  std::vector<std::unique_ptr<TestSession>> sessions_;
};

// True once the peer closed or reset the connection (read returns 0 or an error).
bool closedByPeer(tcp::socket& s) {
  s.non_blocking(false);
  timeval tv{2, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char c;
  const auto n = ::recv(s.native_handle(), &c, 1, 0);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

template <class Pred>
bool eventually(Pred p) {
  for (int i = 0; i < 200 && !p(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return p();
}

TEST_CASE(
    "worker: at --max-connections an idle connection makes room; with none idle, the new one is "
    "refused") {
  auto registry = metrics::makeRegistry();
  WorkerShared shared;
  (*shared.connections)[Budget::listen].limit = 1;
  (*shared.connections)[Budget::outbound].limit = 1;
  shared.metrics = WorkerMetrics(*registry);
  std::atomic<bool> nextIdle{true};
  std::atomic<int> accepted{0};
  std::atomic<bool> outboundIdle{true};
  std::atomic<int> outboundAccepted{0};
  Worker w(shared, 0);
  const auto loopback = tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0);
  w.addListener(loopback, std::make_unique<TestHandler>(w, nextIdle, accepted), Budget::listen);
  const auto outboundIndex = w.addListener(
      loopback, std::make_unique<TestHandler>(w, outboundIdle, outboundAccepted, Budget::outbound),
      Budget::outbound);
  const auto at = w.localEndpoint();
  const auto outboundAt = w.localEndpoint(outboundIndex);
  w.start();

  asio::io_context client;
  tcp::socket first(client), second(client), third(client);
  first.connect(at);
  REQUIRE(eventually([&] { return accepted == 1; }));
  nextIdle = false;  // the second connection will be busy
  second.connect(at);
  REQUIRE(eventually([&] { return accepted == 2; }));
  CHECK(closedByPeer(first));  // evicted to make room
  CHECK(shared.metrics.connectionsEvicted[0]->Value() == 1);

  third.connect(at);
  CHECK(closedByPeer(third));  // refused: the only connection is busy
  CHECK(eventually([&] { return shared.metrics.connectionsRefused[0]->Value() == 1; }));
  CHECK(accepted == 2);

  // Another listener's budget is its own: the full one neither refuses it nor is evicted for it.
  tcp::socket out1(client), out2(client);
  out1.connect(outboundAt);
  REQUIRE(eventually([&] { return outboundAccepted == 1; }));
  outboundIdle = false;
  out2.connect(outboundAt);
  REQUIRE(eventually([&] { return outboundAccepted == 2; }));
  CHECK(closedByPeer(out1));  // its own idle one made room
  CHECK(shared.metrics.connectionsEvicted[2]->Value() == 1);
  CHECK(shared.metrics.connectionsEvicted[0]->Value() == 1);
  CHECK(shared.metrics.connectionsRefused[2]->Value() == 0);
  w.stop();
}

// With --busy-poll-us the loop polls while events come, sleeps once a window passes without any,
// and is woken from that sleep by the next connection; stop() ends either state.
TEST_CASE("worker: a busy-poll window serves connections after it fell asleep, and stops") {
  auto registry = metrics::makeRegistry();
  WorkerShared shared;
  (*shared.connections)[Budget::listen].limit = 100;
  shared.metrics = WorkerMetrics(*registry);
  shared.busyPoll = std::chrono::microseconds(200);
  std::atomic<bool> nextIdle{true};
  std::atomic<int> accepted{0};
  Worker w(shared, 0);
  w.addListener(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
                std::make_unique<TestHandler>(w, nextIdle, accepted), Budget::listen);
  const auto at = w.localEndpoint();
  w.start();
  asio::io_context client;
  std::vector<tcp::socket> sockets;
  for (int i = 1; i <= 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the window: asleep
    sockets.emplace_back(client).connect(at);
    CHECK(eventually([&] { return accepted == i; }));
  }
  const auto before = std::chrono::steady_clock::now();
  w.stop();
  CHECK(std::chrono::steady_clock::now() - before < std::chrono::seconds(1));
}

}  // namespace
}  // namespace sidecar
