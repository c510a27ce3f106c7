#pragma once
// A small plain-HTTP/1.1 server for the admin interface and pinghelp: keep-alive, bounded heads
// and bodies, one io_context, handlers that are pure functions of the request.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/config.h"

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
  struct Options {
    // Deadline for each request (its head and body) and for each response; a connection waiting
    // for its next request longer than this is closed.
    Duration idleTimeout{30'000};
    // Connections open at once; 0: unbounded. At the bound the connection that has waited longest
    // for a request is closed to make room; if every one is busy writing, the new one is closed.
    std::size_t maxConnections = 0;
    // Names the listener in log lines (listener=...).
    std::string name = "http";
    // Observers, called on the server's io_context thread.
    std::function<void(std::size_t open)> openChanged;
    std::function<void()> refused;
    std::function<void()> evicted;
  };

  PlainHttpServer(boost::asio::io_context& ioc, PlainHandler handler, Duration idleTimeout);
  PlainHttpServer(boost::asio::io_context& ioc, PlainHandler handler, Options options);
  ~PlainHttpServer();
  PlainHttpServer(const PlainHttpServer&) = delete;
  PlainHttpServer& operator=(const PlainHttpServer&) = delete;

  // Binds and listens; throws boost::system::system_error. reusePort lets several servers share
  // one port, one per thread.
  void listen(const boost::asio::ip::tcp::endpoint& endpoint, bool reusePort = false);
  boost::asio::ip::tcp::endpoint localEndpoint() const;
  void start();
  void stop();

  struct State;  // shared with the connections, which may outlive the server in a dying io_context

 private:
  boost::asio::io_context& ioc_;
  std::shared_ptr<State> state_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace sidecar
