"""The image, run: certificates mounted, SIDECAR_* settings, a read-only root filesystem; /ping
through mTLS from the host, healthy by its own HEALTHCHECK, uid 10001, announced in a ZooKeeper
running in a container, and on `podman stop` the member withdrawn and exit 0."""
import json
import os
import subprocess
import unittest

from containers import (DEPLOY, PREFIX, SIDECAR, Cleanup, curl, free_port, image, make_certs, run, script,
                        wait_for)


class ImageTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.image = image()

    def test_image_is_small_and_holds_no_shell(self):
        size = int(run("image", "inspect", "--format", "{{.Size}}", self.image).stdout)
        self.assertLess(size, 40 * 1000 * 1000, f"{size / 1e6:.1f} MB")
        r = run("run", "--rm", "--entrypoint", "/bin/sh", self.image, "-c", "true", check=False)
        self.assertNotEqual(r.returncode, 0, "the runtime image has a shell")
        [inspect] = json.loads(run("image", "inspect", self.image).stdout)
        config = inspect["Config"]
        self.assertEqual(config["User"], "10001:10001")
        # podman shows the Docker-format health check beside Config; docker inside it.
        health = inspect.get("Healthcheck") or config.get("Healthcheck")
        self.assertIn("probe", health["Test"])
        self.assertEqual(sorted(config["ExposedPorts"]), ["8443/tcp", "9990/tcp"])

    def test_pair_serves_ping_through_mtls_and_leaves_zookeeper_on_stop(self):
        script("service-images.sh", "zookeeper")
        clean = Cleanup(self)
        certs = make_certs(self)
        net = clean.add("network", f"{PREFIX}-net")
        run("network", "create", net)
        zk_port, tls_port, admin_port = free_port(), free_port(), free_port()
        zk = clean.add("container", f"{PREFIX}-zk")
        run("run", "-d", "--name", zk, "--network", net, "--network-alias", "zk",
            "-p", f"127.0.0.1:{zk_port}:2181", "zookeeper:3.8")
        # pinghelp holds the network namespace and the published ports; the sidecar joins it, as
        # the two containers of a pod (and the compose file's network_mode: service:) do.
        app = clean.add("container", f"{PREFIX}-pinghelp")
        run("run", "-d", "--name", app, "--network", net, "--read-only",
            "-p", f"127.0.0.1:{tls_port}:8443", "-p", f"127.0.0.1:{admin_port}:9990",
            "--entrypoint", "/usr/local/bin/pinghelp", self.image, "--listen", "127.0.0.1:8080")
        sc = clean.add("container", f"{PREFIX}-sidecar")
        path = "/discovery/test/pinghelp"
        run("run", "-d", "--name", sc, "--network", f"container:{app}", "--read-only",
            "-v", f"{certs}:/certs:ro", "-e", "SIDECAR_ZK=zk:2181", "-e", f"SIDECAR_ZK_PATH={path}",
            "-e", "SIDECAR_ADVERTISE_HOST=127.0.0.1", "-e", "SIDECAR_HEALTH_INTERVAL=200ms",
            "-e", "SIDECAR_DEREGISTER_GRACE=1s", self.image)

        r = wait_for(lambda: (lambda r: r if r.stdout == "pong" else None)(
            curl(certs, f"https://localhost:{tls_port}/ping")), 30, "pong through mTLS")
        self.assertEqual(r.stdout, "pong")
        # Without a client certificate the handshake is refused.
        r = subprocess.run(["curl", "-sS", "-m", "5", "--cacert", f"{certs}/ca.pem", f"https://localhost:{tls_port}/ping"],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)

        r = run("healthcheck", "run", sc, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(run("inspect", "--format", "{{.State.Health.Status}}", sc).stdout.strip(), "healthy")
        pid = run("inspect", "--format", "{{.State.Pid}}", sc).stdout.strip()
        with open(f"/proc/{pid}/status") as f:
            uids = [l.split()[1:] for l in f if l.startswith("Uid:")][0]
        self.assertEqual(set(uids), {"10001"})

        def members():
            r = subprocess.run([SIDECAR, "resolve", "--timeout", "5s", f"zk2!127.0.0.1:{zk_port}!{path}"],
                               capture_output=True, text=True, timeout=30)
            return [json.loads(l) for l in r.stdout.splitlines()]

        wait_for(lambda: len(members()) == 1, 60, "the member in ZooKeeper")
        self.assertEqual(members()[0]["port"], 8443)

        run("stop", "-t", "30", sc, timeout=60)
        self.assertEqual(run("inspect", "--format", "{{.State.ExitCode}}", sc).stdout.strip(), "0")
        self.assertEqual(members(), [])
        logs = run("logs", sc).stderr + run("logs", sc).stdout
        self.assertIn("event=stopped", logs)


if __name__ == "__main__":
    unittest.main()
