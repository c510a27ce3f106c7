#pragma once
// A lean TLS stream, for the caller's side of the proxy (server role) and for the mTLS it
// originates to other sidecars (client role). OpenSSL reads and writes the non-blocking socket
// itself, and the stream waits for readiness only when OpenSSL asks to.
// asio::ssl::stream keeps two zero-filled 17 KiB buffers and a 2 x 17 KiB BIO pair per
// connection, and copies every byte through them; here an idle connection holds the SSL object
// alone (releaseBuffers() gives OpenSSL's record buffers back once the connection is idle). It is
// an AsyncReadStream and AsyncWriteStream for Beast, and its lowest layer offers the part of
// beast::tcp_stream the proxy uses: one deadline, cancel() and socket().

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <boost/asio/append.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/deadline_socket.h"
#include "net/identity.h"
#include "net/io.h"
#include "net/tls_context.h"

namespace sidecar {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

class TlsStream {
 public:
  using executor_type = DeadlineSocket::executor_type;
  using next_layer_type = DeadlineSocket;
  using lowest_layer_type = DeadlineSocket;

  // The server role, with a context from makeServerTlsContext.
  TlsStream(TcpSocket socket, asio::ssl::context& ctx)
      : lowest_(std::move(socket)), ssl_(SSL_new(ctx.native_handle())) {
    setUp();
    if (ssl_) {
      SSL_set_accept_state(ssl_.get());
    }
  }

  // The client role: what to ask for and what to accept.
  struct Client {
    // Sent as SNI, unless empty or an IP address (RFC 6066 allows host names only).
    std::string serverName;
    // The identity the server's certificate must carry (peerIdentityFromCert: SAN URI, else
    // DNS, else CN): exact, or a prefix written with a trailing '*'. Empty: any certificate that
    // chains to the context's CA. A mismatch ends the handshake with TlsError::wrong_peer_identity
    // before it completes, so nothing of a request is ever sent to the wrong server.
    std::string expectedIdentity;
  };

  // The client role, with a context from makeClientTlsContext. The server's certificate is
  // verified whatever the context says.
  TlsStream(TcpSocket socket, asio::ssl::context& ctx, const Client& client)
      : lowest_(std::move(socket)), ssl_(SSL_new(ctx.native_handle())) {
    setUp();
    if (ssl_) {
      client_ = std::make_unique<ClientCheck>(client);
      SSL_set_connect_state(ssl_.get());
      SSL_set_app_data(ssl_.get(), client_.get());  // for verifyPeer; stays put when we move
      SSL_set_verify(ssl_.get(), SSL_VERIFY_PEER, client_->expected ? &verifyPeer : nullptr);
      if (!client.serverName.empty()) {
        error_code notAnAddress;
        asio::ip::make_address(client.serverName, notAnAddress);
        if (notAnAddress && SSL_set_tlsext_host_name(ssl_.get(), client.serverName.c_str()) != 1) {
          client_->setUpError = asio::error::invalid_argument;  // longer than 255 bytes
        }
      }
    }
  }

  executor_type get_executor() { return lowest_.get_executor(); }
  DeadlineSocket& next_layer() { return lowest_; }
  DeadlineSocket& lowest_layer() { return lowest_; }
  SSL* native_handle() { return ssl_.get(); }

  // Session resumption for the client role: the pool keeps session() of a connection per
  // endpoint and gives it to setSession() of the next connection before its handshake. With TLS
  // 1.3 the session arrives after the handshake, with the server's first records, so take it
  // once something has been read. A resumed session is held to the expected identity as well.
  struct SessionFree {
    void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
  };
  using Session = std::unique_ptr<SSL_SESSION, SessionFree>;
  // Both ends copy: OpenSSL marks the session of a connection freed without close_notify as not
  // resumable, and a pool closes idle and broken connections that way. Sharing one session
  // object, that would take the pool's session down with any connection that used it.
  //
  // A copy of the session if it can be resumed, else none.
  Session session() {
    SSL_SESSION* current = ssl_ ? SSL_get0_session(ssl_.get()) : nullptr;
    if (!current || SSL_SESSION_is_resumable(current) != 1) {
      return nullptr;
    }
    return Session(SSL_SESSION_dup(current));
  }
  // Offers a copy of session in the handshake; false if it cannot be used.
  bool setSession(SSL_SESSION* session) {
    if (!ssl_ || !session) {
      return false;
    }
    Session copy(SSL_SESSION_dup(session));
    return copy && SSL_set_session(ssl_.get(), copy.get()) == 1;  // takes its own reference
  }
  bool sessionReused() { return ssl_ && SSL_session_reused(ssl_.get()) == 1; }

  // Frees OpenSSL's read and write buffers (about 17 KiB each) unless they hold data; the next
  // read or write allocates them again. For connections that wait for their next request.
  void releaseBuffers() {
    if (ssl_) {
      SSL_free_buffers(ssl_.get());
    }
  }

  template <class Token>
  auto async_handshake(Token&& token) {
    return asio::async_compose<Token, void(error_code)>(
        Op<Handshake, void(error_code)>{*this, {}, false, std::nullopt}, token, lowest_.socket());
  }

  // Sends close_notify without waiting for the caller's (as nginx does): the connection closes
  // right after, so there is nothing left to read.
  template <class Token>
  auto async_shutdown(Token&& token) {
    return asio::async_compose<Token, void(error_code)>(
        Op<Shutdown, void(error_code)>{*this, {}, false, std::nullopt}, token, lowest_.socket());
  }

  // Completes when a read would make progress: OpenSSL holds bytes, or the socket is readable. A
  // connection waiting for its next request lends no buffer to the wait. afterWouldBlock: the
  // last read_some_now() said wouldBlock, so what OpenSSL holds is part of a record that needs
  // more from the socket (with read-ahead, SSL_has_pending() says yes for it): wait for the
  // socket alone, or the wait would complete at once, again and again.
  template <class Token>
  auto async_wait_readable(Token&& token, bool afterWouldBlock = false) {
    return asio::async_compose<Token, void(error_code)>(
        Op<WaitReadable, void(error_code)>{*this, {afterWouldBlock}, false, std::nullopt}, token,
        lowest_.socket());
  }

  // One read attempt, now. A connection waiting for its next request reads this way once the
  // socket is readable, and borrows no buffer while it waits.
  enum class ReadNow { data, wouldBlock, useAsync };
  ReadNow read_some_now(asio::mutable_buffer buffer, std::size_t& n) {
    n = 0;
    if (!ssl_ || lowest_.timedOut()) {
      return ReadNow::useAsync;  // the asynchronous read reports what is wrong
    }
    if (ERR_peek_error() != 0) {
      ERR_clear_error();
    }
    int r = SSL_read_ex(ssl_.get(), buffer.data(), buffer.size(), &n);
    if (r > 0) {
      return ReadNow::data;
    }
    // Wanting more from the socket is the only outcome handled here; writing first (a key
    // update), end of stream and errors are left to async_read_some.
    return SSL_get_error(ssl_.get(), r) == SSL_ERROR_WANT_READ ? ReadNow::wouldBlock
                                                               : ReadNow::useAsync;
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    asio::mutable_buffer first;
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      if (asio::mutable_buffer b(*it); b.size() > 0) {
        first = b;
        break;
      }
    }
    return asio::async_compose<Token, void(error_code, std::size_t)>(
        Op<Read, void(error_code, std::size_t)>{*this, {first}, false, std::nullopt}, token,
        lowest_.socket());
  }

  // Several buffers (a head and the first piece of a body) go out as one TLS record when they
  // fit in one: one system call, not one per buffer.
  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    WriteData data;
    std::size_t total = 0, count = 0;
    for (auto it = asio::buffer_sequence_begin(buffers); it != asio::buffer_sequence_end(buffers);
         ++it) {
      asio::const_buffer b(*it);
      if (b.size() == 0) {
        continue;
      }
      if (count++ == 0) {
        data.buffer = b;
      }
      total += b.size();
    }
    if (count > 1) {
      const std::size_t n = std::min<std::size_t>(total, kRecord);
      data.copy.reset(new char[n]);
      std::size_t at = 0;
      for (auto it = asio::buffer_sequence_begin(buffers);
           it != asio::buffer_sequence_end(buffers) && at < n; ++it) {
        asio::const_buffer b(*it);
        const std::size_t take = std::min(b.size(), n - at);
        std::memcpy(data.copy.get() + at, b.data(), take);
        at += take;
      }
      data.buffer = asio::const_buffer(data.copy.get(), n);
    }
    return asio::async_compose<Token, void(error_code, std::size_t)>(
        Op<Write, void(error_code, std::size_t)>{*this, std::move(data), false, std::nullopt},
        token, lowest_.socket());
  }

 private:
  static constexpr std::size_t kRecord = 16 * 1024;

  struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
  };

  // What the client role checks. On the heap: the server role carries one null pointer for it.
  struct ClientCheck {
    explicit ClientCheck(const Client& c) {
      if (!c.expectedIdentity.empty()) {
        expected.emplace(std::vector<std::string>{c.expectedIdentity});
      }
    }
    bool accepts(X509* cert) const {
      if (!expected) {
        return true;
      }
      PeerIdentity peer = peerIdentityFromCert(cert);
      return !peer.unusable && expected->allows(peer.identity);
    }
    // After a full handshake verifyPeer has checked; a resumed one brings the certificate of
    // the session, which may have been made under another expectation.
    error_code afterHandshake(SSL* ssl) const {
      if (expected && SSL_session_reused(ssl) == 1 && !accepts(SSL_get0_peer_certificate(ssl))) {
        return TlsError::wrong_peer_identity;
      }
      return {};
    }

    std::optional<IdentityAllowList> expected;  // none: any verified certificate
    bool rejected = false;                      // verifyPeer refused the identity
    error_code setUpError;
  };

  void setUp() {
    error_code ignored;
    lowest_.socket().non_blocking(true, ignored);
    if (ssl_) {
      SSL_set_fd(ssl_.get(), static_cast<int>(lowest_.socket().native_handle()));
      SSL_set_mode(ssl_.get(), SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
      // One read(2) takes whatever has arrived, not a record header and then its body.
      SSL_set_read_ahead(ssl_.get(), 1);
    }
  }

  // OpenSSL calls this for each certificate of the chain, the server's own (depth 0) last, once
  // the chain is built and its signatures check out. Refusing there fails the handshake as an
  // unknown CA would (an alert to the server, before our Finished), so no request is ever sent.
  static int verifyPeer(int preverifyOk, X509_STORE_CTX* store) {
    if (preverifyOk != 1 || X509_STORE_CTX_get_error_depth(store) != 0) {
      return preverifyOk;
    }
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* check = ssl ? static_cast<ClientCheck*>(SSL_get_app_data(ssl)) : nullptr;
    if (!check || check->accepts(X509_STORE_CTX_get_current_cert(store))) {
      return 1;
    }
    check->rejected = true;
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }

  struct Handshake {};
  struct Shutdown {};
  struct WaitReadable {
    bool socketOnly = false;
  };
  struct Read {
    asio::mutable_buffer buffer;
  };
  struct WriteData {
    asio::const_buffer buffer;
    std::unique_ptr<char[]> copy;  // several buffers gathered into one record
  };
  using Write = WriteData;

  // One OpenSSL call, retried whenever the socket is ready as OpenSSL asked; the result of a call
  // that succeeds at once is delivered through post, never from inside the initiating function.
  template <class Kind, class Signature>
  struct Op {
    TlsStream& s;
    Kind kind;
    bool waited = false;
    std::optional<std::pair<error_code, std::size_t>> result;

    template <class Self>
    void operator()(Self& self, error_code waitError = {}) {
      if (result) {
        return deliver(self);
      }
      if (waitError || s.lowest_.timedOut()) {
        return finish(
            self, s.lowest_.timedOut() ? error_code(boost::beast::error::timeout) : waitError, 0);
      }
      if (!s.ssl_) {
        return finish(self, asio::error::no_memory, 0);
      }
      if constexpr (std::is_same_v<Kind, Handshake>) {
        if (s.client_ && s.client_->setUpError) {
          return finish(self, s.client_->setUpError, 0);
        }
      }
      if constexpr (std::is_same_v<Kind, WaitReadable>) {
        if (waited || (!kind.socketOnly && SSL_has_pending(s.ssl_.get()))) {
          return finish(self, {}, 0);
        }
        waited = true;
        return s.lowest_.socket().async_wait(TcpSocket::wait_read, std::move(self));
      }
      // SSL_get_error reads the thread's error queue, which must hold nothing stale. Peeking is
      // cheap; clearing walks all 16 slots, and did so three times per request.
      if (ERR_peek_error() != 0) {
        ERR_clear_error();
      }
      errno = 0;
      std::size_t n = 0;
      int r = call(n);
      if (r > 0) {
        if constexpr (std::is_same_v<Kind, Handshake>) {
          if (s.client_) {
            return finish(self, s.client_->afterHandshake(s.ssl_.get()), 0);
          }
        }
        return finish(self, {}, n);
      }
      switch (SSL_get_error(s.ssl_.get(), r)) {
        case SSL_ERROR_WANT_READ:
          waited = true;
          return s.lowest_.socket().async_wait(TcpSocket::wait_read, std::move(self));
        case SSL_ERROR_WANT_WRITE:
          waited = true;
          return s.lowest_.socket().async_wait(TcpSocket::wait_write, std::move(self));
        case SSL_ERROR_ZERO_RETURN:
          return finish(self, asio::error::eof, 0);
        case SSL_ERROR_SYSCALL: {
          unsigned long e = ERR_get_error();
          if (e) {
            return finish(self, error_code(static_cast<int>(e), asio::error::get_ssl_category()),
                          0);
          }
          // End of file without close_notify, or a socket error.
          return finish(self,
                        errno ? error_code(errno, boost::system::system_category())
                              : error_code(asio::ssl::error::stream_truncated),
                        0);
        }
        default: {
          unsigned long e = ERR_get_error();
          return finish(self,
                        e ? error_code(static_cast<int>(e), asio::error::get_ssl_category())
                          : error_code(asio::ssl::error::unspecified_system_error),
                        0);
        }
      }
    }

    int call(std::size_t& n) {
      SSL* ssl = s.ssl_.get();
      if constexpr (std::is_same_v<Kind, WaitReadable>) {
        return 1;  // handled in operator()
      } else if constexpr (std::is_same_v<Kind, Handshake>) {
        return SSL_do_handshake(ssl);
      } else if constexpr (std::is_same_v<Kind, Shutdown>) {
        int r = SSL_shutdown(ssl);
        return r >= 0 ? 1 : r;  // 0: our close_notify is out; we do not wait for theirs
      } else if constexpr (std::is_same_v<Kind, Read>) {
        if (kind.buffer.size() == 0) {
          return 1;
        }
        return SSL_read_ex(ssl, kind.buffer.data(), kind.buffer.size(), &n);
      } else {
        if (kind.buffer.size() == 0) {
          return 1;
        }
        return SSL_write_ex(ssl, kind.buffer.data(), kind.buffer.size(), &n);
      }
    }

    template <class Self>
    void finish(Self& self, error_code ec, std::size_t n) {
      if constexpr (std::is_same_v<Kind, Handshake>) {
        if (ec && s.client_ && s.client_->rejected) {
          ec = TlsError::wrong_peer_identity;  // OpenSSL says only "certificate verify failed"
        }
      }
      result.emplace(ec, n);
      if (!waited) {
        waited = true;
        return asio::post(s.get_executor(), std::move(self));  // re-enters, then deliver()
      }
      deliver(self);
    }

    template <class Self>
    void deliver(Self& self) {
      auto [ec, n] = *result;
      if constexpr (std::is_same_v<Signature, void(error_code)>) {
        self.complete(ec);
      } else {
        self.complete(ec, n);
      }
    }
  };

  DeadlineSocket lowest_;
  std::unique_ptr<SSL, SslFree> ssl_;
  std::unique_ptr<ClientCheck> client_;  // the client role's; none in the server role
};

}  // namespace sidecar
