// bench-upstream: a fixed-answer local service for the benchmark, so that the upstream is never
// the bottleneck. GET /ping -> "pong"; GET /bytes/N -> N bytes; any other request: its body is
// read and dropped, answer "ok". Keep-alive, one thread. Not part of the product.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <string>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto useTuple = asio::as_tuple(asio::use_awaitable);

static const std::string kPong =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\npong";
static const std::string kOk =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
static const std::string kZeros(1 << 20, 'z');

asio::awaitable<void> serve(tcp::socket socket) {
  socket.set_option(tcp::no_delay(true));
  beast::flat_buffer buffer;
  std::vector<char> scratch(64 * 1024);
  for (;;) {
    http::request_parser<http::buffer_body> p;
    p.body_limit(boost::none);
    auto [ec, n] = co_await http::async_read_header(socket, buffer, p, useTuple);
    if (ec) {
      co_return;
    }
    while (!p.is_done()) {
      p.get().body().data = scratch.data();
      p.get().body().size = scratch.size();
      auto [rec, rn] = co_await http::async_read_some(socket, buffer, p, useTuple);
      if (rec && rec != http::error::need_buffer) {
        co_return;
      }
    }
    std::string_view target = p.get().target();
    if (target.starts_with("/bytes/")) {
      std::size_t left = std::stoul(std::string(target.substr(7)));
      std::string head =
          "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
          std::to_string(left) + "\r\n\r\n";
      auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(head), useTuple);
      while (!wec && left) {
        std::size_t part = std::min(left, kZeros.size());
        std::tie(wec, wn) =
            co_await asio::async_write(socket, asio::buffer(kZeros.data(), part), useTuple);
        left -= part;
      }
      if (wec) {
        co_return;
      }
      continue;
    }
    const std::string& answer = target == "/ping" ? kPong : kOk;
    auto [wec, wn] = co_await asio::async_write(socket, asio::buffer(answer), useTuple);
    if (wec) {
      co_return;
    }
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bench-upstream PORT\n");
    return 2;
  }
  asio::io_context ioc{1};
  tcp::acceptor acceptor(
      ioc, {asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(std::atoi(argv[1]))});
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, socket] = co_await acceptor.async_accept(useTuple);
          if (!ec) {
            asio::co_spawn(ioc, serve(std::move(socket)), asio::detached);
          }
        }
      },
      asio::detached);
  ioc.run();
}
