// Plain HTTP/1.1 serving loop shared by the admin interface and pinghelp.
#include "http/plain_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <list>

#include "net/listener.h"
#include "net/log_limiter.h"

namespace sidecar {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr auto useDefaultTuple = useTupleOn<asio::any_io_executor>;
constexpr std::uint32_t kMaxHead = 16 * 1024;
constexpr std::uint64_t kMaxBody = 64 * 1024;

}  // namespace

// Everything the connections touch lives here, not in the server: the io_context destroys
// suspended connections after the server is gone, and `alive` then keeps them from calling the
// observers (which point into the dead server's owner).
struct PlainHttpServer::State {
  struct Connection {
    beast::tcp_stream* stream;
    bool waiting = true;  // for a request, and so evictable
    SteadyClock::time_point since = SteadyClock::now();
    bool evicted = false;
  };

  State(PlainHandler h, Options o) : handler(std::move(h)), options(std::move(o)) {}

  PlainHandler handler;
  Options options;
  bool alive = true;
  std::list<Connection> connections;  // oldest first
  std::size_t open = 0;               // not evicted
  LogLimiter acceptLog;
  LogLimiter refusalLog;

  void openChanged() {
    if (alive && options.openChanged) {
      options.openChanged(open);
    }
  }

  // Closes the connection that has waited longest for a request; false if none waits.
  bool evictOne() {
    Connection* victim = nullptr;
    for (auto& c : connections) {
      if (c.waiting && !c.evicted && (!victim || c.since < victim->since)) {
        victim = &c;
      }
    }
    if (!victim) {
      return false;
    }
    victim->evicted = true;
    victim->stream->close();  // its read ends with operation_aborted; its descriptor is free now
    --open;
    openChanged();
    if (options.evicted) {
      options.evicted();
    }
    return true;
  }
};

namespace {

using State = PlainHttpServer::State;

asio::awaitable<void> serve(tcp::socket socket, std::shared_ptr<State> state) {
  beast::tcp_stream stream(std::move(socket));
  auto self = state->connections.insert(state->connections.end(), State::Connection{&stream});
  ++state->open;
  state->openChanged();
  struct Leave {
    State& state;
    std::list<State::Connection>::iterator self;
    ~Leave() {
      const bool evicted = self->evicted;
      state.connections.erase(self);
      if (!evicted) {
        --state.open;
        state.openChanged();
      }
    }
  } leave{*state, self};

  const Duration idle = state->options.idleTimeout;
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHead);
    parser.body_limit(kMaxBody);
    self->waiting = true;
    self->since = SteadyClock::now();
    stream.expires_after(idle);
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, useDefaultTuple);
    self->waiting = false;
    if (self->evicted) {
      co_return;
    }
    if (ec) {
      if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
          ec != asio::error::connection_reset && ec != asio::error::operation_aborted) {
        // Malformed request: answer 400 and close.
        http::response<http::string_body> bad{http::status::bad_request, 11, "bad request\n"};
        bad.set(http::field::content_type, "text/plain");
        bad.keep_alive(false);
        bad.prepare_payload();
        stream.expires_after(idle);
        co_await http::async_write(stream, bad, useDefaultTuple);
      }
      break;
    }
    auto req = parser.release();
    auto res = state->handler(req);
    res.prepare_payload();
    const bool keep = res.keep_alive();
    stream.expires_after(idle);  // a reader too slow for the response is closed, not waited for
    auto [wec, wn] = co_await http::async_write(stream, res, useDefaultTuple);
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
    : PlainHttpServer(ioc, std::move(handler), [&] {
        Options o;
        o.idleTimeout = idleTimeout;
        return o;
      }()) {}

PlainHttpServer::PlainHttpServer(asio::io_context& ioc, PlainHandler handler, Options options)
    : ioc_(ioc),
      state_(std::make_shared<State>(std::move(handler), std::move(options))),
      acceptor_(ioc) {}

PlainHttpServer::~PlainHttpServer() { state_->alive = false; }

void PlainHttpServer::listen(const tcp::endpoint& endpoint, bool reusePort) {
  bindAndListen(acceptor_, endpoint, reusePort);
}

tcp::endpoint PlainHttpServer::localEndpoint() const { return acceptor_.local_endpoint(); }

void PlainHttpServer::start() {
  auto admit = [this, state = state_](tcp::socket socket) {
    const auto& o = state->options;
    if (o.maxConnections != 0 && state->open >= o.maxConnections && !state->evictOne()) {
      if (o.refused) {
        o.refused();
      }
      logWithin(state->refusalLog, spdlog::level::warn,
                "event=connection_refused listener={} reason=max_connections limit={}", o.name,
                o.maxConnections);
      beast::error_code ignored;
      socket.set_option(asio::socket_base::linger(true, 0), ignored);  // RST, no TIME_WAIT
      socket.close(ignored);
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    asio::co_spawn(ioc_, serve(std::move(socket), state), asio::detached);
  };
  asio::co_spawn(ioc_,
                 acceptLoop(acceptor_, "listener=" + state_->options.name, state_->acceptLog,
                            std::move(admit)),
                 asio::detached);
}

void PlainHttpServer::stop() {
  beast::error_code ignored;
  acceptor_.close(ignored);
}

}  // namespace sidecar
