#pragma once
// The data path's concrete I/O types. asio's default, any_io_executor, is type-erased: each
// asynchronous operation copies, moves and destroys it several times, which measured about 7k
// instructions of the 57k a keep-alive request cost. A worker owns one io_context, so its
// executor type is known.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <string>

namespace sidecar {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

using IoExecutor = asio::io_context::executor_type;
using TcpSocket = asio::basic_stream_socket<tcp, IoExecutor>;
using TcpAcceptor = asio::basic_socket_acceptor<tcp, IoExecutor>;
using SteadyTimer =
    asio::basic_waitable_timer<std::chrono::steady_clock,
                               asio::wait_traits<std::chrono::steady_clock>, IoExecutor>;

// Coroutines on a worker's executor.
template <class T>
using awaitable = asio::awaitable<T, IoExecutor>;

// The completion token of every co_await in the project: errors come back as values (a closed
// connection is an outcome, not an exception). useTupleOn<asio::any_io_executor> serves the
// control thread's coroutines, whose executor is the default one.
template <class Executor>
constexpr auto useTupleOn = asio::as_tuple(asio::use_awaitable_t<Executor>{});
constexpr auto useTuple = useTupleOn<IoExecutor>;

// "host:port", an IPv6 address in brackets: for log lines, the admin pages and metrics.
inline std::string endpointText(const tcp::endpoint& e) {
  const auto address = e.address().to_string();
  return (e.address().is_v6() ? "[" + address + "]" : address) + ":" + std::to_string(e.port());
}

}  // namespace sidecar
