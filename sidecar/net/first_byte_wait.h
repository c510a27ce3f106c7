#pragma once
// The first step of every TLS listener (HTTP inbound, Thrift inbound): a connection accepted but
// silent. As nginx does, it gets no TLS state, no buffer and no coroutine frame until its first
// byte arrives: a socket, a deadline and a place in the worker's list (about 200 bytes, instead
// of the tens of KiB a TLS session costs), so a flood of connections that never send a
// ClientHello costs little. The oldest are evicted first at --max-connections, like idle
// keep-alive connections.

#include <chrono>
#include <memory>

#include "net/io.h"
#include "net/worker.h"

namespace sidecar {

// Handler (one per worker and listener) provides:
//   Worker& worker();
//   std::chrono::steady_clock::duration handshakeTimeout();  // from the accept
//   void waitStarted();                                // counted as a connection
//   void firstByte(TcpSocket, steady_clock::time_point handshakeDeadline);  // becomes a session
//   void neverSpoke(bool timedOut);  // closed before its first byte (timed out, evicted, drain)
// neverSpoke is called before the socket closes and Worker::connectionClosed() is called here.
// Handler::kBudget names the connection budget its listener counts in.
template <class Handler>
class FirstByteWait final : public TrackedSession {
 public:
  using Clock = std::chrono::steady_clock;

  ~FirstByteWait() { handler_.worker().sessionEnded(*this); }

  static void start(Handler& handler, TcpSocket socket) {
    std::unique_ptr<FirstByteWait> self(new FirstByteWait(handler, std::move(socket)));
    auto& s = self->socket_;
    // The pending wait owns the object: it goes when the wait completes, however it ends, or
    // with the worker's io_context if that is destroyed first.
    s.async_wait(TcpSocket::wait_read,
                 [self = std::move(self)](error_code ec) { self->onReadable(ec); });
  }

  bool closeIfIdle() override {
    if (closing_) {
      return false;
    }
    closing_ = true;
    error_code ignored;
    socket_.cancel(ignored);
    return true;
  }

  void expireIfDue(Clock::time_point now) override {
    if (!closing_ && now >= deadline_) {
      closing_ = timedOut_ = true;
      error_code ignored;
      socket_.cancel(ignored);
    }
  }

 private:
  FirstByteWait(Handler& handler, TcpSocket socket)
      : TrackedSession(Handler::kBudget),
        handler_(handler),
        socket_(std::move(socket)),
        deadline_(Clock::now() + handler.handshakeTimeout()) {
    handler_.waitStarted();
    handler_.worker().sessionStarted(*this);
  }

  void onReadable(error_code ec) {
    auto& w = handler_.worker();
    if (!ec && !closing_ && !w.draining()) {
      // The session takes the connection over, with what is left of the handshake deadline.
      handler_.firstByte(std::move(socket_), deadline_);
      return;
    }
    handler_.neverSpoke(timedOut_);
    error_code ignored;
    socket_.close(ignored);
    w.connectionClosed(budget());
  }

  Handler& handler_;
  TcpSocket socket_;
  Clock::time_point deadline_;
  bool closing_ = false;
  bool timedOut_ = false;
};

}  // namespace sidecar
