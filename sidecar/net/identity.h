#pragma once
// Who is calling: the identity in a verified client certificate, the allow-list, and the
// X-Forwarded-Client-Cert value that carries it to the local service.

#include <string>
#include <string_view>
#include <vector>

typedef struct x509_st X509;

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

// Exact names, or prefixes written with a trailing '*'. An empty list allows everyone.
class IdentityAllowList {
 public:
  explicit IdentityAllowList(std::vector<std::string> patterns);
  bool allows(std::string_view identity) const;

 private:
  std::vector<std::string> patterns_;
};

}  // namespace sidecar
