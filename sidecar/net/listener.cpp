// The check that an address is not held by another process (see listener.h).
#include "net/listener.h"

namespace sidecar {

error_code probeUnshared(asio::io_context& ioc, const tcp::endpoint& endpoint) {
  error_code ec;
  if (endpoint.port() == 0) {
    return ec;  // the kernel picks a free port
  }
  tcp::acceptor probe(ioc);
  probe.open(endpoint.protocol(), ec);
  if (!ec) {
    probe.set_option(tcp::acceptor::reuse_address(true), ec);
  }
  if (!ec) {
    probe.bind(endpoint, ec);
  }
  return ec;
}

}  // namespace sidecar
