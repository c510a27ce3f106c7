#pragma once
// Who is calling: the identity in a verified client certificate, the allow-list, and the
// X-Forwarded-Client-Cert value that carries it to the local service.

#include <string>
#include <string_view>
#include <vector>

typedef struct x509_st X509;

namespace sidecar {

struct PeerIdentity {
  std::string identity;  // SAN URI, else SAN DNS, else subject CN; empty if none
  std::string xfcc;      // Envoy format: Hash=...;Subject="...";URI=...;DNS=...
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
