// Identity extraction (SAN URI, then SAN DNS, then CN), the XFCC value, and the allow-list.
#include "identity.h"

#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

using namespace sidecar;

namespace {

using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

// A self-signed certificate built in memory with the given CN and subjectAltName.
CertPtr makeCert(const char* cn, const char* san) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  CertPtr cert(X509_new(), X509_free);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("Dev, Inc"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  if (san) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san);
    REQUIRE(ext);
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  X509_set_pubkey(cert.get(), key);
  X509_sign(cert.get(), key, EVP_sha256());
  EVP_PKEY_free(key);
  return cert;
}

}  // namespace

TEST_CASE("SAN URI wins over DNS and CN") {
  auto cert = makeCert("caller", "DNS:caller.dev.local,URI:spiffe://dev.local/caller");
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.identity == "spiffe://dev.local/caller");
  CHECK(id.xfcc.rfind("Hash=", 0) == 0);
  CHECK(id.xfcc.find(";Subject=\"CN=caller,O=Dev\\, Inc\"") != std::string::npos);
  CHECK(id.xfcc.find(";URI=spiffe://dev.local/caller") != std::string::npos);
  CHECK(id.xfcc.find(";DNS=caller.dev.local") != std::string::npos);
  // The hash is the SHA-256 of the DER certificate: 64 hex digits.
  CHECK(id.xfcc.find(';') == 5 + 64);
}

TEST_CASE("SAN DNS when no URI, CN when no SAN") {
  auto dns = makeCert("caller", "DNS:a.dev.local,DNS:b.dev.local");
  CHECK(peerIdentityFromCert(dns.get()).identity == "a.dev.local");
  auto cn = makeCert("plain-cn", nullptr);
  auto id = peerIdentityFromCert(cn.get());
  CHECK(id.identity == "plain-cn");
  CHECK(id.xfcc.find("URI=") == std::string::npos);
}

TEST_CASE("no certificate, no identity") {
  auto id = peerIdentityFromCert(nullptr);
  CHECK(id.identity.empty());
  CHECK(id.xfcc.empty());
}

TEST_CASE("allow-list: exact names and trailing wildcards") {
  IdentityAllowList any({});
  CHECK(any.allows("anything"));
  IdentityAllowList list({"spiffe://dev.local/caller", "spiffe://dev.local/team/*"});
  CHECK(list.allows("spiffe://dev.local/caller"));
  CHECK_FALSE(list.allows("spiffe://dev.local/caller2"));
  CHECK(list.allows("spiffe://dev.local/team/x"));
  CHECK(list.allows("spiffe://dev.local/team/"));
  CHECK_FALSE(list.allows("spiffe://dev.local/tea"));
  CHECK_FALSE(list.allows(""));
}
