"""TLS audit: Debian's testssl.sh against the mTLS listener. Fails on any protocol below TLS 1.2,
a weak cipher category, TLS compression, insecure renegotiation, or a listener that does not
demand a client certificate."""
import json
import os
import shutil
import subprocess
import unittest

from harness import SidecarTestCase

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")


@unittest.skipUnless(TESTSSL, "testssl.sh is not installed (deploy/install-deps.sh test)")
class TlsAuditTest(SidecarTestCase):
    def test_testssl_finds_nothing_weak(self):
        app = self.start_pinghelp()
        sc = self.start_sidecar(app.port)
        out = os.path.join(self.tmp, "testssl.json")
        r = subprocess.run([TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", out,
                            "-p", "-s", "-C", "-R", "-S", f"127.0.0.1:{sc.port}"],
                           capture_output=True, text=True, timeout=600)
        with open(out) as f:
            findings = {x["id"]: x["finding"] for x in json.load(f)}
        report = r.stdout[-3000:]
        for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            self.assertEqual(findings.get(old), "not offered", f"{old}\n{report}")
        self.assertEqual(findings.get("TLS1_2"), "offered")
        self.assertTrue(findings.get("TLS1_3", "").startswith("offered"))
        for weak in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"):
            self.assertEqual(findings.get(f"cipherlist_{weak}"), "not offered", f"{weak} ciphers\n{report}")
        self.assertTrue(findings.get("CRIME_TLS", "").startswith("not vulnerable"), "TLS compression")
        self.assertEqual(findings.get("secure_renego"), "supported", "insecure renegotiation")
        # testssl.sh could not finish a handshake without a client certificate.
        self.assertIn("certificate-based authentication", findings.get("service", ""))
        self.assertIsNone(sc.poll())


if __name__ == "__main__":
    unittest.main()
