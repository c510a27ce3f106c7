#pragma once
// A TCP socket with one deadline for whatever runs on it; the plain connection to the local
// service, and the lowest layer of TlsStream.

#include <boost/asio/append.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/error.hpp>
#include <chrono>
#include <cstddef>

#include "net/io.h"

namespace sidecar {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

// The socket and one deadline for whatever runs on it (beast::tcp_stream's contract: when the
// deadline passes, pending operations end with beast::error::timeout, and so do later ones until
// the next expires_after). Setting a deadline costs a clock read: no timer is armed per operation
// or per request. The worker's sweep calls expireIfDue() every Worker::kSweepPeriod, so a deadline
// fires up to one sweep period late.
class DeadlineSocket {
 public:
  using executor_type = TcpSocket::executor_type;
  using Clock = std::chrono::steady_clock;

  explicit DeadlineSocket(TcpSocket socket) : socket_(std::move(socket)) {}
  explicit DeadlineSocket(const executor_type& ex) : socket_(ex) {}

  TcpSocket& socket() { return socket_; }
  executor_type get_executor() { return socket_.get_executor(); }

  template <class Rep, class Period>
  void expires_after(std::chrono::duration<Rep, Period> d) {
    timedOut_ = false;
    deadline_ = Clock::now() + d;
  }
  void expires_at(Clock::time_point t) {
    timedOut_ = false;
    deadline_ = t;
  }
  void expires_never() {
    timedOut_ = false;
    deadline_ = Clock::time_point::max();
  }

  void cancel() {
    error_code ignored;
    socket_.cancel(ignored);
  }

  bool timedOut() const { return timedOut_; }

  // The sweep: past the deadline, what waits on the socket ends with a timeout.
  void expireIfDue(Clock::time_point now) {
    if (!timedOut_ && now >= deadline_ && socket_.is_open()) {
      timedOut_ = true;
      cancel();
    }
  }

  // AsyncReadStream and AsyncWriteStream, for the plain connection to the local service.
  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return asio::async_compose<Token, void(error_code, std::size_t)>(
        SocketOp<MutableBuffers, true>{*this, buffers, false}, token, socket_);
  }
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return asio::async_compose<Token, void(error_code, std::size_t)>(
        SocketOp<ConstBuffers, false>{*this, buffers, false}, token, socket_);
  }

 private:
  template <class Buffers, bool isRead>
  struct SocketOp {
    DeadlineSocket& s;
    Buffers buffers;
    bool started;

    template <class Self>
    void operator()(Self& self, error_code ec = {}, std::size_t n = 0) {
      if (!started) {
        started = true;
        if (s.timedOut_) {
          return asio::post(s.get_executor(),
                            asio::append(std::move(self), error_code(boost::beast::error::timeout),
                                         std::size_t{0}));
        }
        if constexpr (isRead) {
          return s.socket_.async_read_some(buffers, std::move(self));
        } else {
          return s.socket_.async_write_some(buffers, std::move(self));
        }
      }
      if (ec == asio::error::operation_aborted && s.timedOut_) {
        ec = boost::beast::error::timeout;
      }
      self.complete(ec, n);
    }
  };

  TcpSocket socket_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool timedOut_ = false;
};

// How long a closing connection waits for its peer's last bytes (lingeringClose).
inline constexpr std::chrono::milliseconds kLingerDeadline{500};

// Our side is done and the connection is to close, maybe with the peer's bytes unread (a body we
// answered without reading, a request after a refused handshake). Closing now would send a reset,
// which can overtake the answer we wrote: the peer would see "connection reset" instead. So:
// half-close, then read and discard until the peer closes, for at most `wait` and `maxBytes`
// (a peer that keeps sending does not hold us).
inline awaitable<void> lingeringClose(DeadlineSocket& s,
                                      std::chrono::milliseconds wait = kLingerDeadline,
                                      std::size_t maxBytes = 256 * 1024) {
  error_code ec;
  s.socket().shutdown(TcpSocket::shutdown_send, ec);
  s.expires_after(wait);
  char discard[2048];
  std::size_t total = 0;
  while (!ec && total < maxBytes) {
    auto [rec, n] = co_await s.async_read_some(asio::buffer(discard), useTuple);
    ec = rec;
    total += n;
  }
}

}  // namespace sidecar
