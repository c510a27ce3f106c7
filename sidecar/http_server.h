#pragma once
// A small plain-HTTP/1.1 server for the admin interface and pinghelp: keep-alive, bounded heads
// and bodies, one io_context, handlers that are pure functions of the request.

#include "config.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <functional>
#include <optional>
#include <string>

namespace sidecar {

namespace http = boost::beast::http;

using PlainRequest = http::request<http::string_body>;
using PlainResponse = http::response<http::string_body>;
using PlainHandler = std::function<PlainResponse(const PlainRequest&)>;

// A response that mirrors the request's version and keep-alive.
PlainResponse textResponse(const PlainRequest& req, http::status status, std::string body,
                           const char* contentType = "text/plain; charset=utf-8");

class PlainHttpServer {
 public:
  PlainHttpServer(boost::asio::io_context& ioc, PlainHandler handler, Duration idleTimeout);
  // Binds and listens; throws boost::system::system_error. reusePort lets several servers share
  // one port, one per thread.
  void listen(const boost::asio::ip::tcp::endpoint& endpoint, bool reusePort = false);
  boost::asio::ip::tcp::endpoint localEndpoint() const;
  void start();
  void stop();

 private:
  boost::asio::io_context& ioc_;
  PlainHandler handler_;
  Duration idleTimeout_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace sidecar
