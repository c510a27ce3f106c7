// Makes test certificates with OpenSSL's API; a failure throws, naming the step.
#include "test_certs.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <atomic>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace sidecar::test {

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    throw std::runtime_error(std::string("test certificate: ") + what + " failed");
  }
}

KeyPtr newKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  check(key != nullptr, "EVP_EC_gen");
  return key;
}

void addExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(ext != nullptr, "X509V3_EXT_conf_nid");
  check(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
  X509_EXTENSION_free(ext);
}

// Distinct serial numbers: a verifier may treat two certificates of one issuer with the same
// serial as the same certificate.
long nextSerial() {
  static std::atomic<long> serial{1};
  return serial++;
}

CertPtr newCert(std::string_view commonName, EVP_PKEY* key, long notBefore, long notAfter) {
  CertPtr cert(X509_new());
  check(cert != nullptr, "X509_new");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), nextSerial());
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), notBefore);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), notAfter);
  const std::string cn(commonName);
  check(X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                   0) == 1,
        "X509_NAME_add_entry_by_txt");
  check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
  return cert;
}

std::string bioString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

}  // namespace

std::string TestCert::certPem() const {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  check(bio && PEM_write_bio_X509(bio.get(), cert.get()) == 1, "PEM_write_bio_X509");
  return bioString(bio.get());
}

std::string TestCert::keyPem() const {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  check(bio && PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                        nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  return bioString(bio.get());
}

TestCa::TestCa(std::string_view commonName) {
  ca_.key = newKey();
  ca_.cert = newCert(commonName, ca_.key.get(), -3600, 86400);
  X509* c = ca_.cert.get();
  check(X509_set_issuer_name(c, X509_get_subject_name(c)) == 1, "X509_set_issuer_name");
  addExtension(c, c, NID_basic_constraints, "critical,CA:TRUE");
  addExtension(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
  addExtension(c, c, NID_subject_key_identifier, "hash");
  check(X509_sign(c, ca_.key.get(), EVP_sha256()) > 0, "X509_sign");
}

TestCert TestCa::issue(std::string_view commonName, std::string_view san, long notBeforeSeconds,
                       long notAfterSeconds) const {
  TestCert leaf;
  leaf.key = newKey();
  leaf.cert = newCert(commonName, leaf.key.get(), notBeforeSeconds, notAfterSeconds);
  X509* c = leaf.cert.get();
  X509* issuer = ca_.cert.get();
  check(X509_set_issuer_name(c, X509_get_subject_name(issuer)) == 1, "X509_set_issuer_name");
  addExtension(c, issuer, NID_basic_constraints, "CA:FALSE");
  addExtension(c, issuer, NID_key_usage, "critical,digitalSignature");
  addExtension(c, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
  addExtension(c, issuer, NID_authority_key_identifier, "keyid");
  if (!san.empty()) {
    addExtension(c, issuer, NID_subject_alt_name, std::string(san));
  }
  check(X509_sign(c, ca_.key.get(), EVP_sha256()) > 0, "X509_sign");
  return leaf;
}

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "sidecar-unit-XXXXXX").string();
  check(mkdtemp(pattern.data()) != nullptr, "mkdtemp");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::write(std::string_view name, std::string_view content) const {
  auto file = path_ / std::string(name);
  std::ofstream out(file, std::ios::binary);
  out << content;
  check(out.good(), "writing a temporary file");
  return file.string();
}

TlsFiles writeTlsFiles(const TempDir& dir, std::string_view prefix, const TestCert& leaf,
                       const TestCa& trusted) {
  const std::string p(prefix);
  return TlsFiles{dir.write(p + ".pem", leaf.certPem()), dir.write(p + ".key", leaf.keyPem()),
                  dir.write(p + "-ca.pem", trusted.self().certPem())};
}

}  // namespace sidecar::test
