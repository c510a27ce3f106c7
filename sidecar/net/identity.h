#pragma once
// Who is calling: the identity in a verified client certificate, the allow-list, and the
// X-Forwarded-Client-Cert value that carries it to the local service.

#include <string>
#include <string_view>
#include <vector>

typedef struct x509_st X509;
typedef struct ssl_st SSL;

namespace sidecar {

struct PeerIdentity {
  // The first SAN URI if the certificate has one, else the first SAN DNS name if it has one,
  // else the subject CN; empty when unusable.
  std::string identity;
  std::string xfcc;  // Envoy format: Hash=...;Subject="...";URI=...;DNS=...
  // The name that would be the identity is empty, missing (no URI, DNS name or CN at all) or
  // holds a control or non-ASCII byte, or the subjectAltName extension cannot be read (it does
  // not decode, or appears twice). Such a caller has no identity at all and is refused (403):
  // falling back to the next name would hand it one that an allow-list may admit, meant for
  // someone else.
  bool unusable = false;
};

// Computed once per connection, after the handshake verified the certificate.
PeerIdentity peerIdentityFromCert(X509* cert);

// Server side, after a verified handshake: frees the parsed copies of the certificates a client
// sent beside its own (its CA, any intermediates), which OpenSSL keeps in the session for the
// life of the connection. Clients whose OpenSSL builds their chain from the CA they trust (curl,
// Python, OpenSSL's own tools) send that CA: its copy is about 5 KiB of every idle connection's
// 27. Nothing reads them after the handshake: the identity is the client's own certificate (kept),
// the verified chain holds its own references, and a TLS 1.3 ticket carries no chain. TLS 1.3
// full handshakes only: a TLS 1.2 session may be shared through the server's session cache.
void dropPeerChainCopies(SSL* ssl);

// Exact names, or prefixes written with a trailing '*'. An empty list allows everyone.
class IdentityAllowList {
 public:
  explicit IdentityAllowList(std::vector<std::string> patterns);
  bool allows(std::string_view identity) const;

 private:
  std::vector<std::string> patterns_;
};

}  // namespace sidecar
