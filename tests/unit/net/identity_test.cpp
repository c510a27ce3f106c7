// Identity extraction (SAN URI, then SAN DNS, then CN), the XFCC value, and the allow-list.
#include "net/identity.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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

// A certificate with exactly the given subject entries and SANs, each value written byte for
// byte (UTF8String in the subject, IA5String in the SAN), so that names can hold anything.
struct Spec {
  std::vector<std::pair<int, std::string>> subject;  // NID, value; in DER order
  std::vector<std::pair<int, std::string>> sans;     // GEN_URI or GEN_DNS, value
  bool withSan = true;                               // false: no subjectAltName at all
  std::vector<std::string> extraSanDer;  // further subjectAltName extensions, raw DER content
};

CertPtr build(const Spec& spec) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  CertPtr cert(X509_new(), X509_free);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
  X509_NAME* name = X509_get_subject_name(cert.get());
  for (const auto& [nid, value] : spec.subject) {
    // A plain string type (not MBSTRING_*): the bytes are taken as they are, even empty.
    REQUIRE(X509_NAME_add_entry_by_NID(name, nid, V_ASN1_UTF8STRING,
                                       reinterpret_cast<const unsigned char*>(value.data()),
                                       static_cast<int>(value.size()), -1, 0) == 1);
  }
  X509_set_issuer_name(cert.get(), name);
  if (spec.withSan) {
    GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
    for (const auto& [type, value] : spec.sans) {
      GENERAL_NAME* n = GENERAL_NAME_new();
      ASN1_IA5STRING* s = ASN1_IA5STRING_new();
      ASN1_STRING_set(s, value.data(), static_cast<int>(value.size()));
      GENERAL_NAME_set0_value(n, type, s);
      sk_GENERAL_NAME_push(names, n);
    }
    REQUIRE(X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names, 0, X509V3_ADD_APPEND) == 1);
    GENERAL_NAMES_free(names);
  }
  for (const auto& der : spec.extraSanDer) {
    ASN1_OCTET_STRING* data = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(data, reinterpret_cast<const unsigned char*>(der.data()),
                          static_cast<int>(der.size()));
    X509_EXTENSION* ext = X509_EXTENSION_create_by_NID(nullptr, NID_subject_alt_name, 0, data);
    REQUIRE(ext);
    X509_add_ext(cert.get(), ext, -1);  // appended, even if one is there already
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(data);
  }
  X509_set_pubkey(cert.get(), key);
  X509_sign(cert.get(), key, EVP_sha256());
  EVP_PKEY_free(key);
  return cert;
}

std::string rfc2253(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

// A reader of Envoy's XFCC grammar, written from its description and nothing else: elements
// separated by ',', key=value pairs by ';', a value either bare (up to the next ';' or ',') or
// double-quoted, where '\' takes the next character literally. Anything else is no reading.
using Element = std::vector<std::pair<std::string, std::string>>;

std::optional<std::vector<Element>> parseXfcc(std::string_view h) {
  std::vector<Element> out(1);
  std::size_t i = 0;
  for (;;) {
    std::size_t eq = h.find('=', i);
    if (eq == std::string_view::npos) {
      return std::nullopt;
    }
    std::string key(h.substr(i, eq - i));
    if (key.empty() || key.find_first_of(",;\"\\") != std::string::npos) {
      return std::nullopt;
    }
    i = eq + 1;
    std::string value;
    if (i < h.size() && h[i] == '"') {
      ++i;
      for (;;) {
        if (i >= h.size()) {
          return std::nullopt;  // unterminated
        }
        char c = h[i++];
        if (c == '"') {
          break;
        }
        if (c == '\\') {
          if (i >= h.size()) {
            return std::nullopt;
          }
          c = h[i++];
        }
        value.push_back(c);
      }
      if (i < h.size() && h[i] != ';' && h[i] != ',') {
        return std::nullopt;  // text after the closing quote
      }
    } else {
      std::size_t end = h.find_first_of(",;", i);
      if (end == std::string_view::npos) {
        end = h.size();
      }
      value = std::string(h.substr(i, end - i));
      if (value.find_first_of("\"=\\") != std::string::npos) {
        return std::nullopt;  // a bare value may hold none of these
      }
      i = end;
    }
    out.back().emplace_back(std::move(key), std::move(value));
    if (i == h.size()) {
      return out;
    }
    if (h[i++] == ',') {
      out.emplace_back();
    }
  }
}

std::vector<std::string> valuesOf(const Element& e, std::string_view key) {
  std::vector<std::string> v;
  for (const auto& [k, value] : e) {
    if (k == key) {
      v.push_back(value);
    }
  }
  return v;
}

// The XFCC of cert reads back, with the parser above, as one element holding exactly the
// certificate's hash, RFC 2253 subject, first URI and DNS names.
void checkRoundTrip(X509* cert, const std::vector<std::string>& uris,
                    const std::vector<std::string>& dns) {
  auto id = peerIdentityFromCert(cert);
  INFO("xfcc: " << id.xfcc);
  auto parsed = parseXfcc(id.xfcc);
  REQUIRE(parsed);
  REQUIRE(parsed->size() == 1);
  const Element& e = parsed->front();
  for (const auto& [k, v] : e) {
    CHECK((k == "Hash" || k == "Subject" || k == "URI" || k == "DNS"));
  }
  auto hash = valuesOf(e, "Hash");
  REQUIRE(hash.size() == 1);
  CHECK(hash[0].size() == 64);
  CHECK(valuesOf(e, "Subject") == std::vector<std::string>{rfc2253(cert)});
  CHECK(valuesOf(e, "URI") ==
        (uris.empty() ? std::vector<std::string>{} : std::vector<std::string>{uris.front()}));
  CHECK(valuesOf(e, "DNS") == dns);
}

CertPtr withNames(std::string cn, std::vector<std::string> uris, std::vector<std::string> dns) {
  Spec spec;
  spec.subject = {{NID_organizationName, "Dev, Inc"}, {NID_commonName, std::move(cn)}};
  for (auto& u : uris) {
    spec.sans.emplace_back(GEN_URI, u);
  }
  for (auto& d : dns) {
    spec.sans.emplace_back(GEN_DNS, d);
  }
  spec.withSan = !spec.sans.empty();
  return build(spec);
}

}  // namespace

TEST_CASE("SAN URI wins over DNS and CN") {
  auto cert = makeCert("caller", "DNS:caller.dev.local,URI:spiffe://dev.local/caller");
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.identity == "spiffe://dev.local/caller");
  CHECK(id.xfcc.rfind("Hash=", 0) == 0);
  // The subject's RFC 2253 escape "\," is itself escaped inside the quoted value.
  CHECK(id.xfcc.find(";Subject=\"CN=caller,O=Dev\\\\, Inc\"") != std::string::npos);
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
  CHECK(id.unusable);
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

// --- X-Forwarded-Client-Cert quoting (issue 11, item 4) ---------------------------------------

TEST_CASE("XFCC: a SAN that carries a quote and a backslash stays one URI") {
  const std::string san = "spiffe://test/b\\\";URI=spiffe://prod/admin";
  auto cert = withNames("caller", {san}, {});
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.identity == san);
  // Quoted, with both '\' and '"' escaped: the reader finds the closing quote where it is.
  CHECK(id.xfcc.find(";URI=\"spiffe://test/b\\\\\\\";URI=spiffe://prod/admin\"") !=
        std::string::npos);
  checkRoundTrip(cert.get(), {san}, {});
}

TEST_CASE("XFCC: hostile URI and DNS names round-trip") {
  const std::vector<std::string> hostile = {
      "spiffe://test/b\\\";URI=spiffe://prod/admin",
      "spiffe://test/ends-in-a-backslash\\",
      "spiffe://test/\\\\\"\\",
      "\"",
      "\\",
      "\"quoted\"",
      "spiffe://t/a,URI=spiffe://prod/admin",
      "spiffe://t/a;DNS=evil",
      "spiffe://t/a=b",
      "spiffe://x/a status=200 path=/admin identity=spiffe://prod/admin",
      " leading and trailing ",
      "plain.name",
  };
  for (const auto& name : hostile) {
    CAPTURE(name);
    auto uri = withNames("caller", {name, "spiffe://test/second"}, {"a.dev.local"});
    checkRoundTrip(uri.get(), {name, "spiffe://test/second"}, {"a.dev.local"});
    auto dns = withNames("caller", {"spiffe://test/caller"}, {name, "b\\\";DNS=x", "ok.local"});
    checkRoundTrip(dns.get(), {"spiffe://test/caller"}, {name, "b\\\";DNS=x", "ok.local"});
  }
}

TEST_CASE("XFCC: the subject's own RFC 2253 escapes survive") {
  const std::vector<std::string> hostile = {
      "a\"b",
      "a\\b",
      "a+b",
      "a,b",
      "a;b",
      "a=b",
      "\\\"",
      "ends\\",
      "#lead",
      " lead",
      "trail ",
      "x\";URI=spiffe://prod/admin",
      "a\"b\\c+d,e=f;g <h>",
  };
  for (const auto& cn : hostile) {
    CAPTURE(cn);
    auto cert = withNames(cn, {"spiffe://test/caller"}, {});
    checkRoundTrip(cert.get(), {"spiffe://test/caller"}, {});
  }
  // The exact value, for one of them: RFC 2253 escapes '"', '\', '+' and ',' once, XFCC
  // quoting escapes the '\' and '"' of that once more.
  auto cert = withNames("a\"b\\c+d,e", {"spiffe://test/caller"}, {});
  CHECK(rfc2253(cert.get()) == "CN=a\\\"b\\\\c\\+d\\,e,O=Dev\\, Inc");
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.xfcc.find(";Subject=\"CN=a\\\\\\\"b\\\\\\\\c\\\\+d\\\\,e,O=Dev\\\\, Inc\";") !=
        std::string::npos);
}

TEST_CASE("XFCC: plain names stay bare, as Envoy writes them") {
  auto cert = withNames("caller", {"spiffe://dev.local/ns/x/sa/y"}, {"a-b.dev.local"});
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.xfcc.find(";URI=spiffe://dev.local/ns/x/sa/y;DNS=a-b.dev.local") != std::string::npos);
}

TEST_CASE("XFCC: a name with a control byte is left out, never sent raw") {
  auto cert = withNames("caller", {"spiffe://test/caller"}, {"a\r\nX-Evil: 1", "ok.local"});
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.identity == "spiffe://test/caller");
  CHECK(id.xfcc.find_first_of("\r\n") == std::string::npos);
  auto parsed = parseXfcc(id.xfcc);
  REQUIRE(parsed);
  CHECK(valuesOf(parsed->front(), "DNS") == std::vector<std::string>{"ok.local"});
}

// --- Which name is the identity, and when there is none (issue 11, item 5) --------------------

TEST_CASE("identity: the first name of the strongest kind, or none") {
  struct Case {
    const char* what;
    std::string cn;
    std::vector<std::string> uris, dns;
    std::string identity;  // empty: unusable
  };
  const std::vector<Case> cases = {
      {"first URI", "cn", {"spiffe://a/1", "spiffe://a/2"}, {"d.local"}, "spiffe://a/1"},
      {"first DNS without URI", "cn", {}, {"d1.local", "d2.local"}, "d1.local"},
      {"CN without SAN", "cn", {}, {}, "cn"},
      {"first URI with a control byte",
       "spiffe://prod/admin",
       {"spiffe://prod/admin\x01", "spiffe://prod/admin"},
       {"prod-admin.local"},
       ""},
      {"first URI with a NUL", "cn", {std::string("spiffe://prod/admin\0x", 21)}, {}, ""},
      {"first URI with DEL", "cn", {"spiffe://prod/admin\x7f"}, {}, ""},
      {"first URI with a newline", "cn", {"spiffe://prod/admin\n"}, {}, ""},
      {"first URI non-ASCII", "cn", {"spiffe://prod/adm\xc3\xafn"}, {}, ""},
      {"empty first URI, good second URI", "cn", {"", "spiffe://prod/admin"}, {}, ""},
      {"empty first URI, good DNS", "cn", {""}, {"prod-admin.local"}, ""},
      {"empty first URI, good CN", "spiffe://prod/admin", {""}, {}, ""},
      {"bad first URI, good first DNS", "cn", {"\x1b[2J"}, {"prod-admin.local"}, ""},
      {"good first URI, bad second URI", "cn", {"spiffe://a/1", "x\x01"}, {}, "spiffe://a/1"},
      {"good first URI, bad DNS", "cn", {"spiffe://a/1"}, {"", "x\x01"}, "spiffe://a/1"},
      {"empty first DNS, good second DNS", "cn", {}, {"", "prod-admin.local"}, ""},
      {"control byte in first DNS, good CN", "prod-admin.local", {}, {"a\tb"}, ""},
      {"good first DNS, bad second DNS", "cn", {}, {"d.local", "\x01"}, "d.local"},
      {"empty CN", "", {}, {}, ""},
      {"CN with a control byte", "spiffe://prod/admin\x01", {}, {}, ""},
      {"CN non-ASCII", "caf\xc3\xa9", {}, {}, ""},
      {"bad CN does not matter under a URI", "x\x01", {"spiffe://a/1"}, {}, "spiffe://a/1"},
      {"printable oddities are names too",
       "cn",
       {"spiffe://x/a status=200 \"q\" \\"},
       {},
       "spiffe://x/a status=200 \"q\" \\"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.what));
    auto cert = withNames(c.cn, c.uris, c.dns);
    auto id = peerIdentityFromCert(cert.get());
    CHECK(id.identity == c.identity);
    CHECK(id.unusable == c.identity.empty());
    // An allow-list that would admit every name in the certificate admits no unusable caller:
    // the proxy checks `unusable` first, and the empty identity matches no pattern.
    IdentityAllowList all(
        {"spiffe://prod/admin", "prod-admin.local", "spiffe://a/*", "cn", "d1.local", "d.local"});
    if (id.unusable) {
      CHECK_FALSE(all.allows(id.identity));
    }
  }
}

TEST_CASE("identity: a subjectAltName that cannot be read leaves no fallback to the CN") {
  // Two subjectAltName extensions: OpenSSL's lookup returns neither.
  Spec twice;
  twice.subject = {{NID_commonName, "spiffe://prod/admin"}};
  twice.sans = {{GEN_URI, "spiffe://test/caller"}};
  twice.extraSanDer = {std::string("\x30\x15\x86\x13spiffe://prod/admin", 23)};
  auto cert = build(twice);
  REQUIRE(X509_get_ext_count(cert.get()) == 2);
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.unusable);
  CHECK(id.identity.empty());

  // One that does not decode (a URI whose length runs past the end).
  Spec broken;
  broken.subject = {{NID_commonName, "spiffe://prod/admin"}};
  broken.withSan = false;
  broken.extraSanDer = {std::string("\x30\x03\x86\x05x", 5)};
  auto bad = build(broken);
  id = peerIdentityFromCert(bad.get());
  CHECK(id.unusable);
  CHECK(id.identity.empty());

  // An empty one (no names at all) is readable: the CN is the identity.
  Spec empty;
  empty.subject = {{NID_commonName, "caller"}};
  auto none = build(empty);
  id = peerIdentityFromCert(none.get());
  CHECK_FALSE(id.unusable);
  CHECK(id.identity == "caller");
}

TEST_CASE("identity: a certificate that names no one has no identity") {
  // No SAN and no CN: a CA signed it, but there is nobody to admit or to tell the local service
  // about, with or without an allow-list.
  Spec nameless;
  nameless.subject = {{NID_organizationName, "Dev, Inc"}};
  nameless.withSan = false;
  auto cert = build(nameless);
  auto id = peerIdentityFromCert(cert.get());
  CHECK(id.unusable);
  CHECK(id.identity.empty());
  // Only names of other kinds (an e-mail address) count as none.
  Spec email = nameless;
  email.withSan = true;
  email.sans = {{GEN_EMAIL, "admin@prod"}};
  cert = build(email);
  CHECK(peerIdentityFromCert(cert.get()).unusable);
}
