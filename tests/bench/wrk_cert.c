/* wrk_cert: an LD_PRELOAD shim that gives wrk (which has no flag for it) a client certificate.
 * It wraps SSL_CTX_new: each new context gets the certificate chain in WRK_CERT and the key in
 * WRK_KEY (PEM files). Without WRK_CERT it changes nothing. A certificate or key that does not
 * load fails the context, so wrk stops with its own "unable to initialize SSL" instead of
 * measuring refused handshakes. Built and preloaded by tests/bench/run.py; not part of the product.
 *   cc -shared -fPIC -O2 -o wrk_cert.so wrk_cert.c -lssl -lcrypto -ldl
 *   WRK_CERT=client.pem WRK_KEY=client.key LD_PRELOAD=./wrk_cert.so wrk https://... */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

typedef SSL_CTX *(*SslCtxNew)(const SSL_METHOD *);

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
  static SslCtxNew real = NULL;
  if (!real) {
    real = (SslCtxNew)dlsym(RTLD_NEXT, "SSL_CTX_new");
    if (!real) {
      fprintf(stderr, "wrk_cert: SSL_CTX_new not found: %s\n", dlerror());
      return NULL;
    }
  }
  SSL_CTX *ctx = real(method);
  const char *cert = getenv("WRK_CERT");
  if (!ctx || !cert || !*cert) {
    return ctx;
  }
  const char *key = getenv("WRK_KEY");
  if (!key || !*key) {
    key = cert; /* a combined PEM file */
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    fprintf(stderr, "wrk_cert: cannot load certificate %s with key %s:\n", cert, key);
    ERR_print_errors_fp(stderr);
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}
