#pragma once
// Listening sockets, for the data path's workers and the admin server alike: binding, the check
// that nobody else holds an address, and the accept loop with its back-off.

#include <spdlog/spdlog.h>

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <string>

#include "net/io.h"
#include "net/log_limiter.h"

namespace sidecar {

// Binds and listens; throws boost::system::system_error. reusePort lets several acceptors share
// one port, one per thread (the kernel spreads connections over them).
template <class Acceptor>
void bindAndListen(Acceptor& acceptor, const tcp::endpoint& endpoint, bool reusePort) {
  acceptor.open(endpoint.protocol());
  acceptor.set_option(tcp::acceptor::reuse_address(true));
  if (reusePort) {
    acceptor.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
  }
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
}

// SO_REUSEPORT is granted just as well to another process of the same user: a second sidecar
// started by mistake would silently take a share of the traffic. A socket bound without
// SO_REUSEPORT conflicts with any socket bound there, so binding one first tells whether someone
// else holds the address (it is closed before the workers bind; SO_REUSEADDR keeps a
// predecessor's TIME_WAIT connections from counting). Port 0 is never shared.
error_code probeUnshared(asio::io_context& ioc, const tcp::endpoint& endpoint);

// How long an accept loop pauses after a failed accept (out of descriptors or memory): the
// pending connection stays queued and the acceptor stays readable, so retrying at once would spin.
inline constexpr std::chrono::milliseconds kAcceptBackoff{50};

// Accepts until the acceptor closes, handing each connection to admit(socket). A failed accept
// is logged within `log`'s budget as `event=accept_failed <who> reason="..."` and followed by a
// pause. The coroutine runs on the acceptor's executor.
template <class Acceptor, class Admit>
asio::awaitable<void, typename Acceptor::executor_type> acceptLoop(Acceptor& acceptor,
                                                                   std::string who, LogLimiter& log,
                                                                   Admit admit) {
  using Executor = typename Acceptor::executor_type;
  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, Executor>
      backoff(acceptor.get_executor());
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(useTupleOn<Executor>);
    if (ec) {
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) {
        co_return;
      }
      logWithin(log, spdlog::level::warn, "event=accept_failed {} reason=\"{}\"", who,
                ec.message());
      backoff.expires_after(kAcceptBackoff);
      co_await backoff.async_wait(useTupleOn<Executor>);
      continue;
    }
    admit(std::move(socket));
  }
}

}  // namespace sidecar
