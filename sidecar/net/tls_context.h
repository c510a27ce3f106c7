#pragma once
// Server-side TLS: building the mTLS context from files, and naming why a handshake failed.

#include <boost/asio/ssl/context.hpp>
#include <boost/system/error_code.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <variant>

namespace sidecar {

struct TlsFiles {
  std::string cert;
  std::string key;
  std::string clientCa;
};

struct TlsContext {
  std::shared_ptr<boost::asio::ssl::context> ssl;
  long certNotAfter = 0;  // the server certificate's expiry, seconds since the epoch
};

// TLS 1.2 and 1.3 only, client certificate required and verified against clientCa, session
// resumption on. On failure: one line naming the file and what is wrong with it.
std::variant<TlsContext, std::string> makeServerTlsContext(const TlsFiles& files);

// Why a handshake failed, as a bounded label.
enum class HandshakeFailure { NoCertificate, UnknownCa, Expired, BadCertificate, Protocol, Timeout };
std::string_view handshakeFailureName(HandshakeFailure f);
HandshakeFailure classifyHandshakeFailure(const boost::system::error_code& ec, long verifyResult);

}  // namespace sidecar
