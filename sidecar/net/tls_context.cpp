// Builds the mTLS server and client contexts; every failure names the file it came from.
#include "net/tls_context.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/beast/core/error.hpp>
#include <cstdio>

namespace sidecar {

namespace ssl = boost::asio::ssl;

namespace {

std::string opensslReason() {
  unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) {
    return "unknown error";
  }
  const char* reason = ERR_reason_error_string(e);
  return reason ? reason : "error " + std::to_string(e);
}

// What a TLS file must hold, for the line that says it does not.
enum class PemKind { certificate, privateKey, caBundle };

// Why OpenSSL could not load `path` for `flag`. Its last error is "PEM lib", which says nothing;
// the first says why: no PEM block of the kind wanted ("no start line": a DER file, a key where a
// certificate belongs, an empty file; the key decoder's "unsupported"; the CA store's "no
// certificate or crl found"), or a block that is broken ("bad end line", "bad base64 decode").
std::string loadError(std::string_view flag, const std::string& path, PemKind kind) {
  unsigned long first = 0;
  unsigned long last = 0;
  for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    if (first == 0) {
      first = e;
    }
    last = e;
  }
  const std::string head = std::string(flag) + " '" + path + "': ";
  const int lib = ERR_GET_LIB(first);
  const int reason = ERR_GET_REASON(first);
  const bool nothingOfItsKind =
      (lib == ERR_LIB_PEM && reason == PEM_R_NO_START_LINE) ||
      (lib == ERR_LIB_OSSL_DECODER && reason == ERR_R_UNSUPPORTED) ||
      (lib == ERR_LIB_X509 && reason == X509_R_NO_CERTIFICATE_OR_CRL_FOUND);
  if (nothingOfItsKind) {
    switch (kind) {
      case PemKind::certificate:
      case PemKind::caBundle:
        return head + "not a PEM certificate" + (kind == PemKind::caBundle ? " bundle" : "") +
               " (expected a '-----BEGIN CERTIFICATE-----' block; from DER: openssl x509 "
               "-inform DER -in FILE -out FILE.pem)";
      case PemKind::privateKey:
        return head +
               "not a PEM private key (expected a '-----BEGIN PRIVATE KEY-----' block, or RSA/EC "
               "PRIVATE KEY; from DER: openssl pkey -inform DER -in FILE -out FILE.pem)";
    }
  }
  if (lib == ERR_LIB_PEM) {
    const char* why = ERR_reason_error_string(first);
    return head + "broken PEM (" + (why ? why : "error " + std::to_string(first)) + ")";
  }
  const unsigned long e = last ? last : first;
  const char* why = e ? ERR_reason_error_string(e) : nullptr;
  return head + (why ? why : e ? "error " + std::to_string(e) : "unknown error");
}

long notAfterOf(SSL_CTX* ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (!cert) {
    return 0;
  }
  struct tm t {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &t) != 1) {
    return 0;
  }
  return static_cast<long>(timegm(&t));
}

// TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are all acceptable.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// What both roles share: protocol versions, cipher policy, our certificate and key, and the CA
// file the peer's certificate must chain to. Empty on success, else the one-line error.
std::string configureCommon(SSL_CTX* native, const TlsFiles& files, std::string_view caFlag) {
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION);
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // Not SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the 17 KiB record buffers around
  // every read and write. The proxy frees them itself once a connection has been idle for a
  // sweep (TlsStream::releaseBuffers), so busy connections keep theirs.
  if (SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    return "TLS: cannot set cipher list: " + opensslReason();
  }
  if (SSL_CTX_use_certificate_chain_file(native, files.cert.c_str()) != 1) {
    return loadError("--tls-cert", files.cert, PemKind::certificate);
  }
  if (SSL_CTX_use_PrivateKey_file(native, files.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      return "--tls-key '" + files.key + "' does not match --tls-cert '" + files.cert + "'";
    }
    return loadError("--tls-key", files.key, PemKind::privateKey);
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    return "--tls-key '" + files.key + "' does not match --tls-cert '" + files.cert + "'";
  }
  if (SSL_CTX_load_verify_locations(native, files.clientCa.c_str(), nullptr) != 1) {
    return loadError(caFlag, files.clientCa, PemKind::caBundle);
  }
  // OpenSSL 3.0 fills a certificate's cache of decoded extensions on first use, and two workers
  // verifying their first peers at once race on it (ThreadSanitizer: ASN1_STRING_cmp against
  // ASN1_STRING_set on the CA's key identifier). Filled here, before any worker runs, it is only
  // read afterwards.
  STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(SSL_CTX_get_cert_store(native));
  for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
    if (X509* x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i))) {
      X509_check_purpose(x, -1, 0);
    }
  }
  if (X509* own = SSL_CTX_get0_certificate(native)) {
    X509_check_purpose(own, -1, 0);
  }
  STACK_OF(X509)* chain = nullptr;
  if (SSL_CTX_get0_chain_certs(native, &chain) == 1 && chain) {
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      X509_check_purpose(sk_X509_value(chain, i), -1, 0);
    }
  }
  return {};
}

// ALPN, the server's choice: its own order of preference among what the caller offers; no
// common protocol is no ALPN (HTTP/1.1), not a failed handshake, as curl and browsers expect.
constexpr unsigned char kH2AndHttp11[] = "\x02h2\x08http/1.1";
constexpr unsigned char kHttp11[] = "\x08http/1.1";

int selectAlpn(SSL*, const unsigned char** out, unsigned char* outLen, const unsigned char* in,
               unsigned inLen, void* offerH2) {
  const unsigned char* ours = offerH2 ? kH2AndHttp11 : kHttp11;
  const unsigned oursLen = offerH2 ? sizeof(kH2AndHttp11) - 1 : sizeof(kHttp11) - 1;
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outLen, ours, oursLen, in, inLen) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

std::variant<TlsContext, std::string> makeServerTlsContext(const TlsFiles& files) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  if (auto error = configureCommon(native, files, "--tls-client-ca"); !error.empty()) {
    return error;
  }
  SSL_CTX_set_options(native, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_SINGLE_ECDH_USE);
  STACK_OF(X509_NAME)* caNames = SSL_load_client_CA_file(files.clientCa.c_str());
  if (!caNames) {
    return "--tls-client-ca '" + files.clientCa + "': no CA certificate in it";
  }
  SSL_CTX_set_client_CA_list(native, caNames);
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  // Resumption with client certificates needs a session id context.
  static constexpr unsigned char sid[] = "sidecar";
  SSL_CTX_set_session_id_context(native, sid, sizeof(sid) - 1);
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_SERVER);
  // One TLS 1.3 ticket per full handshake, not OpenSSL's two: a caller resumes one connection
  // with it, and each ticket costs a copy of the session, peer certificate included, which
  // OpenSSL 3.0 makes by encoding and decoding it (about 1.6M instructions, 15% of a full
  // handshake, measured with callgrind).
  SSL_CTX_set_num_tickets(native, 1);
  static int offerH2 = 1;
  SSL_CTX_set_alpn_select_cb(native, &selectAlpn, files.offerH2 ? &offerH2 : nullptr);
  ERR_clear_error();
  return TlsContext{std::move(ctx), notAfterOf(native)};
}

std::variant<TlsContext, std::string> makeClientTlsContext(const TlsFiles& files,
                                                           std::string_view caFlag) {
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  if (auto error = configureCommon(native, files, caFlag); !error.empty()) {
    return error;
  }
  // load_verify_locations accepts a file with CRLs only; trusting nothing would fail every
  // handshake later, so say it now.
  STACK_OF(X509_NAME)* caNames = SSL_load_client_CA_file(files.clientCa.c_str());
  if (!caNames) {
    return std::string(caFlag) + " '" + files.clientCa + "': no CA certificate in it";
  }
  sk_X509_NAME_pop_free(caNames, X509_NAME_free);
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
  // The pool keeps one session per endpoint (TlsStream::session()); OpenSSL's internal client
  // cache is never looked up, so storing sessions there would only hold memory.
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  ERR_clear_error();
  return TlsContext{std::move(ctx), notAfterOf(native)};
}

namespace {

class TlsErrorCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "sidecar.tls"; }
  std::string message(int ev) const override {
    switch (static_cast<TlsError>(ev)) {
      case TlsError::wrong_peer_identity:
        return "peer certificate does not carry the expected identity";
    }
    return "unknown sidecar.tls error";
  }
};

}  // namespace

const boost::system::error_category& tlsErrorCategory() {
  static const TlsErrorCategory category;
  return category;
}

std::string_view handshakeFailureName(HandshakeFailure f) {
  switch (f) {
    case HandshakeFailure::NoCertificate:
      return "no_certificate";
    case HandshakeFailure::UnknownCa:
      return "unknown_ca";
    case HandshakeFailure::Expired:
      return "expired";
    case HandshakeFailure::BadCertificate:
      return "bad_certificate";
    case HandshakeFailure::Protocol:
      return "protocol";
    case HandshakeFailure::Timeout:
      return "timeout";
  }
  return "protocol";
}

std::string_view alpnSelected(const SSL* ssl) {
  const unsigned char* p = nullptr;
  unsigned n = 0;
  SSL_get0_alpn_selected(ssl, &p, &n);
  return p ? std::string_view(reinterpret_cast<const char*>(p), n) : std::string_view();
}

std::string_view handshakeResultName(HandshakeResult r) {
  return r == HandshakeResult::ok
             ? "ok"
             : handshakeFailureName(static_cast<HandshakeFailure>(static_cast<std::size_t>(r) - 1));
}

HandshakeFailure classifyHandshakeFailure(const boost::system::error_code& ec, long verifyResult) {
  if (ec == boost::beast::error::timeout) {
    return HandshakeFailure::Timeout;
  }
  if (ec == TlsError::wrong_peer_identity) {
    return HandshakeFailure::BadCertificate;  // a verified certificate, for someone else
  }
  switch (verifyResult) {
    case X509_V_OK:
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return HandshakeFailure::Expired;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      return HandshakeFailure::UnknownCa;
    default:
      return HandshakeFailure::BadCertificate;
  }
  if (ec.category() == boost::asio::error::get_ssl_category()) {
    auto reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
      return HandshakeFailure::NoCertificate;
    }
    if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      return HandshakeFailure::BadCertificate;
    }
  }
  return HandshakeFailure::Protocol;
}

}  // namespace sidecar
