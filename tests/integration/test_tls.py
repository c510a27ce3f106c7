"""mTLS: who gets in, why the others do not, and certificate rotation without a restart."""
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import Certs, SidecarTestCase, wait_for


def served_fingerprint(port, ca):
    """SHA-256 fingerprint of the certificate the listener serves, read with openssl s_client."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts"],
                       input=b"", capture_output=True, timeout=20)
    pem = r.stdout.decode()
    start = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    r = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
                       input=pem[start:end].encode(), capture_output=True, check=True)
    return r.stdout.decode().strip()


def file_fingerprint(path):
    r = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", path],
                       capture_output=True, check=True)
    return r.stdout.decode().strip()


class TlsTest(SidecarTestCase):

    def sidecar_with_live_certs(self, ph, folder, reload_interval):
        """A sidecar serving copies of the certificates in a folder the test may overwrite."""
        live = os.path.join(self.tmp, folder)
        os.makedirs(live, exist_ok=True)
        for f in ("server.pem", "server.key"):
            shutil.copy(self.certs.path(f), os.path.join(live, f))
        sc = self.start_sidecar(ph.port, "--tls-cert", os.path.join(live, "server.pem"),
                                "--tls-key", os.path.join(live, "server.key"),
                                "--tls-reload-interval", reload_interval)
        return live, sc

    def test_callers_without_a_valid_certificate_are_refused(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        url = f"https://localhost:{sc.port}/ping"
        for cert, reason in [(None, "no_certificate"), ("stranger", "unknown_ca"),
                             ("expired", "expired")]:
            with self.subTest(cert=cert):
                rc, status, body, err = self.curl(url, cert=cert)
                self.assertNotEqual(rc, 0)
                self.assertNotEqual(body, b"pong")
                # Counted when the sidecar's handshake ends, after its alert went out to curl.
                self.assertSettles(lambda: self.metric(sc, "sidecar_tls_handshakes_total", result=reason), 1)
        # openssl s_client without a certificate is refused too, and the process carries on.
        out, _ = self.s_client(sc.port, b"GET /ping HTTP/1.0\r\n\r\n", cert=None)
        self.assertNotIn("pong", out)
        rc, status, body, _ = self.curl(url)
        self.assertEqual(body, b"pong")

    def test_only_tls12_and_13_are_offered(self):
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port)
        for flag, ok in [("-tls1_2", True), ("-tls1_3", True), ("-tls1_1", False)]:
            with self.subTest(flag=flag):
                extra = [flag] + (["-cipher", "DEFAULT@SECLEVEL=0"] if flag == "-tls1_1" else [])
                out, _ = self.s_client(sc.port, b"GET /ping HTTP/1.0\r\n\r\n", extra=extra)
                self.assertEqual("pong" in out, ok, out)

    def test_sighup_rotates_the_certificate_and_open_connections_keep_working(self):
        ph = self.start_pinghelp()
        live, sc = self.sidecar_with_live_certs(ph, "live", "1m")
        old = served_fingerprint(sc.port, self.certs.path("ca.pem"))
        self.assertEqual(old, file_fingerprint(self.certs.path("server.pem")))

        conn = self.tls_socket(sc.port)
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(self.read_response(conn), (200, b"pong"))

        fresh = Certs(os.path.join(self.tmp, "fresh"))
        for f in ("server.pem", "server.key"):
            shutil.copy(fresh.path(f), os.path.join(live, f))
        sc.send(signal.SIGHUP)
        new = file_fingerprint(fresh.path("server.pem"))
        wait_for(lambda: served_fingerprint(sc.port, None) == new, what="new certificate served")
        self.assertSettles(lambda: self.metric(sc, "sidecar_tls_reloads_total", result="ok"), 1)

        # The connection opened before the rotation still works.
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(self.read_response(conn), (200, b"pong"))
        conn.close()

    def test_changed_files_are_picked_up_and_a_broken_file_keeps_the_old_context(self):
        ph = self.start_pinghelp()
        live, sc = self.sidecar_with_live_certs(ph, "live2", "200ms")
        url = f"https://localhost:{sc.port}/ping"
        with open(os.path.join(live, "server.pem"), "w") as f:
            f.write("not a certificate\n")
        wait_for(lambda: self.metric(sc, "sidecar_tls_reloads_total", result="failed") >= 1,
                 what="failed reload counted")
        self.assertIn("tls_reload_failed", sc.output())
        rc, status, body, _ = self.curl(url)
        self.assertEqual(body, b"pong")  # still served with the previous context

        fresh = Certs(os.path.join(self.tmp, "fresh2"))
        shutil.copy(fresh.path("server.key"), os.path.join(live, "server.key"))
        shutil.copy(fresh.path("server.pem"), os.path.join(live, "server.pem"))
        new = file_fingerprint(fresh.path("server.pem"))
        wait_for(lambda: served_fingerprint(sc.port, None) == new, what="new certificate served")


if __name__ == "__main__":
    unittest.main()
