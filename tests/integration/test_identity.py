"""Hostile names in client certificates: what reaches the local service, who is refused, and what
the logs say. The certificates are signed by the test CA, so every one of them passes the
handshake; only the sidecar's reading of their names stands between them and the local service.
"""
import hashlib
import os
import subprocess
import unittest

from harness import SidecarTestCase, wait_for
from hostile_certs import make_client, rfc2253_subject
from identity_parsers import parse_logfmt, parse_xfcc, values
from recorder import Recorder

# Issue 11, item 4: a quote and a backslash that a naive quoter turns into a second URI.
SMUGGLING_URI = 'spiffe://test/b\\";URI=spiffe://prod/admin'
SMUGGLING_DNS = 'b\\";DNS=prod-admin.local'
HOSTILE_CN = 'ev"il\\cn+x,y;URI=spiffe://prod/admin'
# Issue 11, item 8: a name that reads as extra log fields when written bare.
LOG_INJECTING_URI = 'spiffe://x/a\\ b" status=200 path=/admin identity=spiffe://prod/admin'
# Names an allow-list admits; the unusable certificates below carry them as fallbacks.
ADMIN_URI, ADMIN_DNS, ADMIN_CN = "spiffe://prod/admin", "prod-admin.local", "prod-admin"


class IdentityTest(SidecarTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        c = cls.certs
        make_client(c, "smuggler", [("O", "Sidecar Dev"), ("CN", HOSTILE_CN)],
                    [("URI", SMUGGLING_URI), ("DNS", SMUGGLING_DNS), ("DNS", "ok.dev.local")])
        make_client(c, "admin", [("O", "Sidecar Dev"), ("CN", ADMIN_CN)], [("URI", ADMIN_URI)])
        fallbacks = [("URI", ADMIN_URI), ("DNS", ADMIN_DNS)]
        make_client(c, "ctl-uri", [("CN", ADMIN_CN)], [("URI", ADMIN_URI + "\x01")] + fallbacks)
        make_client(c, "nul-uri", [("CN", ADMIN_CN)], [("URI", ADMIN_URI + "\x00x")] + fallbacks)
        make_client(c, "empty-uri", [("CN", ADMIN_CN)], [("URI", "")] + fallbacks)
        make_client(c, "empty-uri-cn", [("CN", ADMIN_CN)], [("URI", "")])
        make_client(c, "ctl-dns", [("CN", ADMIN_CN)], [("DNS", "x\x1b[2J"), ("DNS", ADMIN_DNS)])
        make_client(c, "nameless", [("O", "Sidecar Dev")], None)
        make_client(c, "log-injector", [("O", "Sidecar Dev"), ("CN", "injector")],
                    [("URI", LOG_INJECTING_URI)])

    def setUp(self):
        super().setUp()
        self.recorder = Recorder()
        self.addCleanup(self.recorder.close)

    def get(self, sc, cert, path="/probe"):
        """One request on a fresh connection with cert; returns (status, body)."""
        with self.tls_socket(sc.port, cert=cert) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            return self.read_response(conn)

    def xfcc_of_last_request(self):
        requests, errors = self.recorder.snapshot()
        self.assertEqual(errors, [])
        self.assertEqual(len(requests), 1)
        xfcc = [v for k, v in requests[0]["headers"] if k.lower() == "x-forwarded-client-cert"]
        self.assertEqual(len(xfcc), 1, requests[0]["headers"])
        return xfcc[0]

    # --- item 4: X-Forwarded-Client-Cert -----------------------------------------------------

    def test_xfcc_reads_back_as_exactly_the_certificates_names(self):
        sc = self.start_sidecar(self.recorder.port)
        self.assertEqual(self.get(sc, "smuggler")[0], 200)
        header = self.xfcc_of_last_request()
        try:
            elements = parse_xfcc(header)
        except ValueError as e:
            self.fail(f"X-Forwarded-Client-Cert has no single reading: {e}")
        self.assertEqual(len(elements), 1, header)
        pairs = elements[0]
        pem = self.certs.path("smuggler.pem")
        subject = rfc2253_subject(pem)
        # The RFC 2253 form of the subject, its own escapes included, as openssl prints it.
        self.assertEqual(subject, 'CN=ev\\"il\\\\cn\\+x\\,y\\;URI=spiffe://prod/admin,O=Sidecar Dev')
        der = subprocess.run(["openssl", "x509", "-in", pem, "-outform", "DER"],
                             capture_output=True, check=True).stdout
        self.assertEqual(values(pairs, "Hash"), [hashlib.sha256(der).hexdigest()], header)
        self.assertEqual(values(pairs, "Subject"), [subject], header)
        self.assertEqual(values(pairs, "URI"), [SMUGGLING_URI], header)
        self.assertEqual(values(pairs, "DNS"), [SMUGGLING_DNS, "ok.dev.local"], header)
        self.assertEqual(sorted({k for k, _ in pairs}), ["DNS", "Hash", "Subject", "URI"], header)

    # --- item 5: an unusable identity is no identity -----------------------------------------

    def test_an_unusable_first_name_is_refused_even_when_a_fallback_is_allowed(self):
        sc = self.start_sidecar(self.recorder.port, "--allow-identity", ADMIN_URI,
                                "--allow-identity", ADMIN_DNS, "--allow-identity", ADMIN_CN)
        # The allow-list does admit these names: a certificate whose first name is one gets in.
        self.assertEqual(self.get(sc, "admin"), (200, b"seen 1"))
        self.recorder.clear()
        unusable = ["ctl-uri", "nul-uri", "empty-uri", "empty-uri-cn", "ctl-dns"]
        for n, cert in enumerate(unusable, 1):
            with self.subTest(cert=cert):
                self.assertEqual(self.get(sc, cert), (403, b"caller identity not allowed\n"))
                self.assertEqual(self.metric(sc, "sidecar_identity_unusable_total"), n)
                self.assertEqual(self.metric(sc, "sidecar_identity_refused_total"), n)
        self.assertEqual(self.recorder.snapshot(), ([], []))
        self.assertEqual(self.recorder.truncated, 0)

    def test_a_certificate_that_names_no_one_is_refused_without_an_allow_list(self):
        sc = self.start_sidecar(self.recorder.port)
        self.assertEqual(self.get(sc, "ctl-uri")[0], 403)
        self.assertEqual(self.get(sc, "nameless")[0], 403)
        self.assertEqual(self.metric(sc, "sidecar_identity_unusable_total"), 2)
        self.assertEqual(self.recorder.snapshot(), ([], []))
        # Any usable name still gets in: there is no allow-list.
        self.assertEqual(self.get(sc, "smuggler")[0], 200)

    # --- item 8: log values from the certificate are quoted ----------------------------------
    # Expects the logfmt quoting of caller-supplied values (identity="..." with '"' and '\'
    # escaped) in proxy.cpp; with bare identities this test fails, as it should.

    def parse_log_line(self, line):
        try:
            return parse_logfmt(line)
        except ValueError as e:
            self.fail(f"log line has no single logfmt reading: {e}\n{line}")

    def check_fields(self, pairs, line, status, path, exact):
        self.assertEqual(values(pairs, "identity"), [LOG_INJECTING_URI], line)
        for key, want in (("status", status), ("path", path)):
            got = values(pairs, key)
            if exact:
                self.assertEqual(got, [want], f"{key} in {line}")
            else:  # a field the line may leave out, but never carry twice or from the name
                self.assertIn(got, ([], [want]), f"{key} in {line}")
        keys = [k for k, _ in pairs]
        self.assertEqual(len(keys), len(set(keys)), f"a repeated key in {line}")

    def test_log_lines_carry_a_hostile_identity_as_one_value(self):
        refused_log = os.path.join(self.tmp, "refused-access.log")
        admitted_log = os.path.join(self.tmp, "admitted-access.log")
        refusing = self.start_sidecar(self.recorder.port, "--access-log", refused_log,
                                      "--allow-identity", "spiffe://dev.local/caller")
        admitting = self.start_sidecar(self.recorder.port, "--access-log", admitted_log,
                                       "--allow-identity", "spiffe://x/*")
        self.assertEqual(self.get(refusing, "log-injector", "/probe")[0], 403)
        self.assertEqual(self.get(admitting, "log-injector", "/probe")[0], 200)

        def lines(path):
            if not os.path.exists(path):
                return None
            with open(path, encoding="utf-8", errors="replace") as f:
                got = f.read().splitlines()
            return got or None

        for path, status in ((refused_log, "403"), (admitted_log, "200")):
            with self.subTest(access_log=os.path.basename(path)):
                got = wait_for(lambda: lines(path), what=f"a line in {path}")
                self.assertEqual(len(got), 1, got)
                pairs = self.parse_log_line(got[0])
                self.check_fields(pairs, got[0], status, "/probe", exact=True)

        event = "event=identity_refused"
        found = wait_for(lambda: [l for l in refusing.output().splitlines() if event in l],
                         what=f"an {event} line")
        self.assertEqual(len(found), 1, found)
        pairs = self.parse_log_line(found[0][found[0].index(event):])
        self.assertEqual(values(pairs, "event"), ["identity_refused"], found[0])
        self.check_fields(pairs, found[0], "403", "/probe", exact=False)
        self.assertNotIn(event, admitting.output())


if __name__ == "__main__":
    unittest.main()
