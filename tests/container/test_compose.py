"""deploy/docker-compose.yml under podman, through its Docker-compatible API and Debian's
docker-compose: three ZooKeeper servers, two pinghelp + sidecar pairs, Prometheus (Grafana's image
is not in Debian, so it is left out). Both replicas answer /ping through mTLS and Prometheus finds
both through serverset_sd_configs; stopping one ZooKeeper server changes nothing for callers;
stopping a replica exits 0 and removes its member (Prometheus' target goes)."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from containers import DEPLOY, ENGINE, ENV, PREFIX, curl, free_port, image, run, script, wait_for


class ComposeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        tag = image()
        if ENGINE != "podman" or not shutil.which("docker-compose"):
            raise unittest.SkipTest("needs podman and docker-compose (deploy/install-deps.sh container)")
        script("service-images.sh")
        script("base-image.sh")
        run("tag", tag, "sidecar:dev")
        cls.tmp = tempfile.mkdtemp(prefix="sidecar-compose-")
        sock = os.path.join(cls.tmp, "podman.sock")
        # podman's Docker-compatible API for docker-compose, for this test only.
        with open(os.path.join(cls.tmp, "service.log"), "w") as log:
            cls.service = subprocess.Popen([ENGINE, "system", "service", "--time=0", f"unix://{sock}"], env=ENV,
                                           stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: os.path.exists(sock), 30, "podman's API socket")
        cls.ports = {"SIDECAR_1_PORT": free_port(), "SIDECAR_2_PORT": free_port(), "PROMETHEUS_PORT": free_port(),
                     "GRAFANA_PORT": free_port()}
        cls.env = {**ENV, "DOCKER_HOST": f"unix://{sock}", "COMPOSE_PROJECT_NAME": PREFIX.replace("-", ""),
                   **{k: str(v) for k, v in cls.ports.items()}}

    @classmethod
    def tearDownClass(cls):
        # podman may refuse to remove pinghelp while its sidecar (sharing its namespace) is still
        # going: a second pass finds it free.
        for _ in range(2):
            if cls.compose("down", "-v", "-t", "5", check=False).returncode == 0:
                break
        cls.service.terminate()
        cls.service.wait(30)
        shutil.rmtree(cls.tmp, True)

    @classmethod
    def compose(cls, *args, check=True, timeout=600):
        r = subprocess.run(["docker-compose", "-f", os.path.join(DEPLOY, "docker-compose.yml"), *args],
                           capture_output=True, text=True, env=cls.env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def prometheus(self, query):
        url = f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        except (OSError, ValueError, KeyError):
            return None

    def test_stack(self):
        services = ["zk1", "zk2", "zk3", "certs", "pinghelp-1", "sidecar-1", "pinghelp-2", "sidecar-2", "prometheus"]
        self.compose("up", "-d", "--no-build", *services)
        project = self.env["COMPOSE_PROJECT_NAME"]
        mount = run("volume", "inspect", "--format", "{{.Mountpoint}}", f"{project}_certs").stdout.strip()
        certs = os.path.join(self.tmp, "certs")
        wait_for(lambda: os.path.exists(os.path.join(mount, "client.key")), 120, "the certs service")
        shutil.copytree(mount, certs)

        def pongs():
            return [curl(certs, f"https://localhost:{self.ports[p]}/ping").stdout
                    for p in ("SIDECAR_1_PORT", "SIDECAR_2_PORT")]

        wait_for(lambda: pongs() == ["pong", "pong"], 120, "both replicas answering /ping")
        up = 'up{job="sidecar"} == 1'
        wait_for(lambda: len(self.prometheus(up) or []) == 2, 120, "both replicas up in Prometheus")

        self.compose("stop", "-t", "10", "zk1")
        for _ in range(5):
            self.assertEqual(pongs(), ["pong", "pong"])
            time.sleep(1)

        self.compose("stop", "-t", "60", "sidecar-2")  # past the grace (22 s) and drain
        ids = self.compose("ps", "-q", "sidecar-2").stdout.split()
        self.assertEqual(run("inspect", "--format", "{{.State.ExitCode}}", ids[0]).stdout.strip(), "0")
        # The member is gone: Prometheus' discovery drops its target (not merely marks it down).
        targets = 'count(up{job="sidecar"})'
        wait_for(lambda: (self.prometheus(targets) or [{"value": [0, "0"]}])[0]["value"][1] == "1", 90,
                 "the stopped replica's member leaving Prometheus' targets")
        self.assertEqual(pongs()[0], "pong")


if __name__ == "__main__":
    unittest.main()
