// Plain HTTP/1.1 serving loop shared by the admin interface and pinghelp.
#include "http_server.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

namespace sidecar {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

namespace {

constexpr auto useTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::uint32_t kMaxHead = 16 * 1024;
constexpr std::uint64_t kMaxBody = 64 * 1024;

asio::awaitable<void> serve(tcp::socket socket, const PlainHandler& handler, Duration idle) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHead);
    parser.body_limit(kMaxBody);
    stream.expires_after(idle);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, useTuple);
    if (ec) {
      if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
          ec != asio::error::connection_reset) {
        // Malformed request: answer 400 and close.
        http::response<http::string_body> bad{http::status::bad_request, 11, "bad request\n"};
        bad.set(http::field::content_type, "text/plain");
        bad.keep_alive(false);
        bad.prepare_payload();
        co_await http::async_write(stream, bad, useTuple);
      }
      break;
    }
    auto req = parser.release();
    auto res = handler(req);
    res.prepare_payload();
    const bool keep = res.keep_alive();
    auto [wec, wn] = co_await http::async_write(stream, res, useTuple);
    if (wec || !keep) {
      break;
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace

PlainResponse textResponse(const PlainRequest& req, http::status status, std::string body,
                           const char* contentType) {
  PlainResponse res{status, req.version(), std::move(body)};
  res.set(http::field::content_type, contentType);
  res.keep_alive(req.keep_alive());
  return res;
}

PlainHttpServer::PlainHttpServer(asio::io_context& ioc, PlainHandler handler, Duration idleTimeout)
    : ioc_(ioc), handler_(std::move(handler)), idleTimeout_(idleTimeout), acceptor_(ioc) {}

void PlainHttpServer::listen(const tcp::endpoint& endpoint, bool reusePort) {
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(tcp::acceptor::reuse_address(true));
  if (reusePort) {
    acceptor_.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
  }
  acceptor_.bind(endpoint);
  acceptor_.listen(asio::socket_base::max_listen_connections);
}

tcp::endpoint PlainHttpServer::localEndpoint() const { return acceptor_.local_endpoint(); }

void PlainHttpServer::start() {
  asio::co_spawn(
      ioc_,
      [this]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, socket] = co_await acceptor_.async_accept(useTuple);
          if (ec) {
            if (!acceptor_.is_open()) {
              co_return;
            }
            continue;
          }
          beast::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          asio::co_spawn(ioc_, serve(std::move(socket), handler_, idleTimeout_), asio::detached);
        }
      },
      asio::detached);
}

void PlainHttpServer::stop() {
  beast::error_code ignored;
  acceptor_.close(ignored);
}

}  // namespace sidecar
