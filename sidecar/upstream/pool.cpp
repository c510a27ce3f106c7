// The look at an idle pooled connection (see pool.h).
#include "upstream/pool.h"

#include <sys/socket.h>

#include <cerrno>

namespace sidecar {

PooledState pooledState(TcpSocket& s) {
  char c = 0;
  ssize_t n = ::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) {
    return PooledState::unsolicited;
  }
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? PooledState::clean
                                                            : PooledState::closed;
}

}  // namespace sidecar
