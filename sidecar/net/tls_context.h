#pragma once
// TLS contexts for both roles built from files, naming why a handshake failed, and the errors
// of our own that a handshake can end with.

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

namespace sidecar {

struct TlsFiles {
  std::string cert;
  std::string key;
  std::string clientCa;
  // The server role: ALPN offers h2 before http/1.1 (a caller that names neither, or offers no
  // ALPN, speaks HTTP/1.1).
  bool offerH2 = false;
};

struct TlsContext {
  std::shared_ptr<boost::asio::ssl::context> ssl;
  long certNotAfter = 0;  // the server certificate's expiry, seconds since the epoch
};

// TLS 1.2 and 1.3 only, client certificate required and verified against clientCa, session
// resumption on. On failure: one line naming the file and what is wrong with it.
std::variant<TlsContext, std::string> makeServerTlsContext(const TlsFiles& files);

// For originating mTLS (TlsStream's client role): cert and key are what we present to the
// server, clientCa holds the trust anchors for the server's certificate (named caFlag in
// errors). The same protocol versions and cipher policy as the server context; the server's
// certificate is always verified. Sessions are not cached inside the context: a caller that
// resumes keeps them per endpoint (TlsStream::session() and setSession()).
std::variant<TlsContext, std::string> makeClientTlsContext(
    const TlsFiles& files, std::string_view caFlag = "--tls-client-ca");

// Handshake failures of our own making, beside OpenSSL's and the socket's.
enum class TlsError {
  // The server's certificate verified, but its identity (peerIdentityFromCert) is not the one
  // the client role expected.
  wrong_peer_identity = 1,
};
const boost::system::error_category& tlsErrorCategory();
inline boost::system::error_code make_error_code(TlsError e) {
  return {static_cast<int>(e), tlsErrorCategory()};
}

// Why a handshake failed, as a bounded label.
enum class HandshakeFailure {
  NoCertificate,
  UnknownCa,
  Expired,
  BadCertificate,
  Protocol,
  Timeout
};
inline constexpr std::size_t kHandshakeFailures =
    static_cast<std::size_t>(HandshakeFailure::Timeout) + 1;  // Timeout is last
std::string_view handshakeFailureName(HandshakeFailure f);
// A TLS listener's handshake as its metrics label it (`result`): ok, or why it failed, one value
// per HandshakeFailure in its order.
enum class HandshakeResult : std::size_t { ok, count = 1 + kHandshakeFailures };
constexpr HandshakeResult handshakeResult(std::optional<HandshakeFailure> failure) {
  return failure ? static_cast<HandshakeResult>(1 + static_cast<std::size_t>(*failure))
                 : HandshakeResult::ok;
}
// "ok", or the failure's name.
std::string_view handshakeResultName(HandshakeResult r);
HandshakeFailure classifyHandshakeFailure(const boost::system::error_code& ec, long verifyResult);

// The protocol ALPN settled on for a server-role connection: "h2", "http/1.1", or empty (none).
std::string_view alpnSelected(const SSL* ssl);

}  // namespace sidecar

template <>
struct boost::system::is_error_code_enum<sidecar::TlsError> : std::true_type {};
