// One poll per interval on a fresh connection: a GET answered 2xx, or a gRPC Health/Check
// answered SERVING, within the interval is healthy.
#include "control/health.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <memory>

#include "h2/grpc.h"
#include "h2/grpc_frame.h"
#include "h2/session.h"
#include "net/deadline_socket.h"
#include "net/io.h"
#include "upstream/connector.h"

namespace sidecar {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr auto useDefaultTuple = useTupleOn<asio::any_io_executor>;

asio::awaitable<bool> pollOnce(const HealthChecker::Options& o) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(o.interval);
  auto [cec] = co_await stream.async_connect(o.upstream, useDefaultTuple);
  if (cec) {
    co_return false;
  }
  http::request<http::empty_body> req{http::verb::get, o.path, 11};
  req.set(http::field::host, o.upstream.address().to_string());
  req.set(http::field::user_agent, "sidecar-health");
  req.keep_alive(false);
  auto [wec, wn] = co_await http::async_write(stream, req, useDefaultTuple);
  if (wec) {
    co_return false;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> res;
  res.body_limit(64 * 1024);
  auto [rec, rn] = co_await http::async_read(stream, buffer, res, useDefaultTuple);
  if (rec) {
    co_return false;
  }
  co_return res.get().result_int() / 100 == 2;
}

// One grpc.health.v1.Health/Check on an h2c connection of its own: the session in the client
// role, the call its one stream. Shared with the timer that ends the poll at its deadline, which
// may fire after the poll's coroutine is gone.
class GrpcHealthCall final : public h2::Session,
                             public h2::StreamEnd,
                             public std::enable_shared_from_this<GrpcHealthCall> {
 public:
  GrpcHealthCall(asio::io_context& ioc, const HealthChecker::Options& o)
      : h2::Session(Role::client, ioc.get_executor(), h2::Settings{}),
        o_(o),
        socket_(ioc.get_executor()),
        deadline_(ioc.get_executor()) {
    std::string request;
    if (!o.grpcService.empty()) {
      h2::protoString(request, 1, o.grpcService);  // HealthCheckRequest.service
    }
    body_ = h2::grpcMessage(request);
  }
  ~GrpcHealthCall() override { closeAll(); }

  awaitable<bool> poll() {
    auto self = shared_from_this();
    deadline_.expires_after(o_.interval);
    deadline_.async_wait([self](error_code ec) {
      if (!ec) {
        self->socket_.socket().close(ec);  // whatever waits ends: not healthy
      }
    });
    if (co_await connectPlain(socket_, o_.upstream, o_.interval)) {
      co_return false;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(o_.interval).count();
    const h2::Fields head{{":method", "POST"},
                          {":scheme", "http"},
                          {":path", "/grpc.health.v1.Health/Check"},
                          {":authority", endpointText(o_.upstream)},
                          {"content-type", "application/grpc"},
                          {"te", "trailers"},
                          {"grpc-timeout", std::to_string(std::max<long long>(ms, 1)) + "m"},
                          {"user-agent", "sidecar-health"}};
    id_ = request(head, true, *this);
    if (id_ < 0) {
      co_return false;
    }
    co_await Session::run(socket_, o_.interval, o_.interval);
    deadline_.cancel();
    co_return healthy_;
  }

  // h2::StreamEnd: the answer, gathered; judged when the stream closes.
  void header(std::string_view name, std::string_view value) override {
    fields_.push_back({std::string(name), std::string(value)});
  }
  void headersEnd(bool) override {}
  void data(const std::uint8_t* p, std::size_t n) override {
    consume(id_, n);
    if (reply_.size() + n <= 64 * 1024) {
      reply_.append(reinterpret_cast<const char*>(p), n);
    }
  }
  void dataEnd() override {}
  void closed(std::uint32_t error) override {
    healthy_ = error == NGHTTP2_NO_ERROR && judge();
    if (alive()) {
      goAway();  // the one call is over: the connection ends
    }
  }
  ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) override {
    const std::size_t n = std::min(length, body_.size() - sent_);
    std::memcpy(buf, body_.data() + sent_, n);
    sent_ += n;
    if (sent_ == body_.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
  }

 private:
  // HTTP 200, grpc-status 0 (in the trailers, or a trailers-only head), and one message whose
  // HealthCheckResponse.status (field 1) is SERVING (1).
  bool judge() const {
    if (fields_.empty() || fields_.front().name != ":status" || fields_.front().value != "200" ||
        h2::grpcStatusOf(fields_) != 0u) {
      return false;
    }
    const auto message = h2::unaryMessage(reply_);
    if (message.error != h2::MessageError::none) {
      return false;
    }
    h2::ProtoReader reader(message.payload);
    h2::ProtoReader::Field f;
    std::uint64_t status = 0;  // UNKNOWN when absent
    while (reader.next(f)) {
      if (f.number == 1 && f.wireType == 0) {
        status = f.varint;
      }
    }
    return !reader.failed() && status == 1;
  }

  HealthChecker::Options o_;
  DeadlineSocket socket_;
  SteadyTimer deadline_;
  std::string body_;
  std::size_t sent_ = 0;
  std::int32_t id_ = 0;
  h2::Fields fields_;  // the head's and the trailers' fields
  std::string reply_;
  bool healthy_ = false;
};

asio::awaitable<bool> pollGrpc(asio::io_context& ioc, const HealthChecker::Options& o) {
  auto call = std::make_shared<GrpcHealthCall>(ioc, o);
  auto [error, healthy] = co_await asio::co_spawn(ioc, call->poll(), useDefaultTuple);
  co_return !error && healthy;
}

}  // namespace

HealthChecker::HealthChecker(asio::io_context& ioc, Options options,
                             std::function<void(bool)> onChange, std::function<void(bool)> onResult)
    : ioc_(ioc),
      options_(std::move(options)),
      onChange_(std::move(onChange)),
      onResult_(std::move(onResult)) {}

void HealthChecker::start() {
  asio::co_spawn(
      ioc_,
      [this]() -> asio::awaitable<void> {
        asio::steady_timer timer(ioc_);
        while (!stopped_) {
          const auto next = std::chrono::steady_clock::now() + options_.interval;
          const bool ok =
              options_.grpc ? co_await pollGrpc(ioc_, options_) : co_await pollOnce(options_);
          if (stopped_) {
            co_return;
          }
          onResult_(ok);
          // Counts successes while unhealthy, failures while healthy.
          streak_ = ok != healthy_ ? streak_ + 1 : 0;
          if (streak_ >= (healthy_ ? options_.fall : options_.rise)) {
            healthy_ = !healthy_;
            streak_ = 0;
            onChange_(healthy_);
          }
          timer.expires_at(next);
          co_await timer.async_wait(useDefaultTuple);
        }
      },
      asio::detached);
}

}  // namespace sidecar
