// Extracts the caller's identity from its certificate and formats it for the local service.
#include "net/identity.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace sidecar {

namespace {

std::string asn1String(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

std::string subjectRfc2253(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return {};
  }
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

std::string commonName(X509* cert) {
  X509_NAME* name = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) {
    return {};
  }
  return asn1String(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
}

std::string sha256Hex(X509* cert) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &len) != 1) {
    return {};
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 0xf]);
  }
  return out;
}

// One XFCC value, as Envoy's grammar has it (docs: configuration/http/http_conn_man/headers,
// "x-forwarded-client-cert"): elements are separated by ',', key=value pairs by ';', and a value
// holding ',', ';' or '=' is double-quoted with each '"' written as '\"'. A '\' must then be
// written as '\\' as well, or a value ending in '\' (or an RFC 2253 subject's own '\"') would
// swallow the closing quote; Envoy's reader (XFCC_VALUE formatter) unescapes both '\"' and '\\'
// and decides whether a '"' closes a value by the parity of the backslashes before it. The reader
// also unescapes a bare value and trims its white space, so a value holding '\' or white space
// is quoted too. Plain names (spiffe://domain/path, host names) stay bare, as Envoy writes them.
std::string xfccValue(std::string_view v, bool alwaysQuote) {
  bool quote = alwaysQuote || v.find_first_of(",;=\"\\ \t") != std::string_view::npos;
  if (!quote) {
    return std::string(v);
  }
  std::string out;
  out.reserve(v.size() + 2);
  out.push_back('"');
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

// Header values may not carry control bytes; a certificate could.
bool printable(std::string_view v) {
  for (unsigned char c : v) {
    if (c < 0x20 || c == 0x7f) {
      return false;
    }
  }
  return true;
}

// What may serve as an identity: not empty, printable ASCII only (URI and DNS SANs are IA5
// strings; a byte outside it is a forgery attempt or a broken issuer).
bool usableName(std::string_view v) {
  if (v.empty()) {
    return false;
  }
  for (unsigned char c : v) {
    if (c < 0x20 || c >= 0x7f) {
      return false;
    }
  }
  return true;
}

}  // namespace

void dropPeerChainCopies(SSL* ssl) {
  // TLS 1.3 full handshakes only: their session is this connection's own (with stateless
  // tickets nothing is put in the server's session cache, and the ticket is made from a copy).
  // A TLS 1.2 session without a ticket goes into that cache, and another worker's connection may
  // resume the very same object while this one would be changing it.
  if (SSL_version(ssl) != TLS1_3_VERSION || SSL_session_reused(ssl) != 0) {
    return;
  }
  // On the server side the stack does not hold the client's own certificate (OpenSSL keeps that
  // apart, as the session's peer); on the client side it would, so this is for servers only.
  if (STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl)) {
    while (sk_X509_num(chain) > 0) {
      X509_free(sk_X509_pop(chain));
    }
  }
}

PeerIdentity peerIdentityFromCert(X509* cert) {
  PeerIdentity out;
  if (!cert) {
    out.unusable = true;
    return out;
  }
  std::vector<std::string> uris;
  std::vector<std::string> dns;
  // crit: -1 when there is no subjectAltName, -2 when there are several (OpenSSL then returns
  // none of them), else the extension's critical flag. Several, or one that does not decode, is
  // a certificate whose names we cannot read: it must not fall back to its CN.
  int crit = -1;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, nullptr));
  const bool sanUnreadable = !names && crit != -1;
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type == GEN_URI) {
        uris.push_back(asn1String(n->d.uniformResourceIdentifier));
      } else if (n->type == GEN_DNS) {
        dns.push_back(asn1String(n->d.dNSName));
      }
    }
    GENERAL_NAMES_free(names);
  }
  // The identity comes from the first name of the strongest kind present, or from none: a
  // certificate whose first URI SAN is unusable is not given its DNS name, CN or second URI. A
  // certificate with no name at all has no identity either, and is refused like the others.
  const X509_NAME* subjectName = X509_get_subject_name(cert);
  const bool hasCn = X509_NAME_get_index_by_NID(subjectName, NID_commonName, -1) >= 0;
  std::string first = !uris.empty()  ? uris.front()
                      : !dns.empty() ? dns.front()
                      : hasCn        ? commonName(cert)
                                     : std::string();
  if (!sanUnreadable && usableName(first)) {
    out.identity = std::move(first);
  } else {
    out.unusable = true;
  }

  std::string subject = subjectRfc2253(cert);
  out.xfcc = "Hash=" + sha256Hex(cert);
  if (printable(subject)) {
    out.xfcc += ";Subject=" + xfccValue(subject, true);
  }
  if (!uris.empty() && printable(uris.front())) {  // Envoy carries the first URI only
    out.xfcc += ";URI=" + xfccValue(uris.front(), false);
  }
  for (auto& d : dns) {
    if (printable(d)) {
      out.xfcc += ";DNS=" + xfccValue(d, false);
    }
  }
  return out;
}

IdentityAllowList::IdentityAllowList(std::vector<std::string> patterns)
    : patterns_(std::move(patterns)) {}

bool IdentityAllowList::allows(std::string_view identity) const {
  if (patterns_.empty()) {
    return true;
  }
  if (identity.empty()) {
    return false;
  }
  for (const auto& p : patterns_) {
    if (!p.empty() && p.back() == '*') {
      if (identity.starts_with(std::string_view(p).substr(0, p.size() - 1))) {
        return true;
      }
    } else if (identity == p) {
      return true;
    }
  }
  return false;
}

}  // namespace sidecar
