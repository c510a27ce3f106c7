#pragma once
// Certificates made at test time with OpenSSL's API (a CA, leaves with a SAN URI) and written to
// a temporary directory, so that unit tests can build real TLS contexts without committed keys.

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "net/tls_context.h"

namespace sidecar::test {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* c) const { X509_free(c); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using CertPtr = std::unique_ptr<X509, X509Free>;

// A P-256 key and its certificate.
struct TestCert {
  KeyPtr key;
  CertPtr cert;

  std::string certPem() const;
  std::string keyPem() const;
};

// A self-signed CA that issues leaves valid for both serverAuth and clientAuth (a sidecar
// presents one certificate in both roles).
class TestCa {
 public:
  explicit TestCa(std::string_view commonName);

  // san: OpenSSL's configuration syntax ("URI:spiffe://test/a,DNS:a.test"), or empty for none.
  // Valid from notBeforeSeconds to notAfterSeconds relative to now.
  TestCert issue(std::string_view commonName, std::string_view san, long notBeforeSeconds = -60,
                 long notAfterSeconds = 3600) const;
  const TestCert& self() const { return ca_; }

 private:
  TestCert ca_;
};

// A directory under the system's temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Writes name in the directory and returns its full path.
  std::string write(std::string_view name, std::string_view content) const;

 private:
  std::filesystem::path path_;
};

// <prefix>.pem, <prefix>.key and <prefix>-ca.pem in dir: what makeServerTlsContext and
// makeClientTlsContext read. trusted is the CA the peer's certificate must chain to.
TlsFiles writeTlsFiles(const TempDir& dir, std::string_view prefix, const TestCert& leaf,
                       const TestCa& trusted);

}  // namespace sidecar::test
