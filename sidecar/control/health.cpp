// One GET per interval on a fresh connection: a 2xx within the interval is healthy.
#include "control/health.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "net/io.h"

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
          const bool ok = co_await pollOnce(options_);
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
