"""Every file in deploy/ is checked here: lint, the tools' own validators, the manifests' probes
and hooks, and the compose topology run as plain processes on loopback (no container engine)."""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import yaml

from harness import SIDECAR, SLOW, SOURCE, SidecarTestCase, wait_for

DEPLOY = os.path.join(SOURCE, "deploy")


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def load_all(path):
    with open(path) as f:
        return list(yaml.safe_load_all(f))


def text_of(path):
    with open(path) as f:
        return f.read()


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kw)


class DeployFilesTest(unittest.TestCase):

    def test_every_yaml_file_lints(self):
        files = sorted(glob.glob(f"{DEPLOY}/**/*.y*ml", recursive=True))
        self.assertGreaterEqual(len(files), 9)
        r = run("yamllint", "-f", "parsable", "-d",
                "{extends: default, rules: {line-length: {max: 140}, document-start: disable, "
                "truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}, "
                "braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}", *files)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_compose_file_is_accepted(self):
        r = run("docker-compose", "-f", f"{DEPLOY}/docker-compose.yml", "config", "-q")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        compose = load(f"{DEPLOY}/docker-compose.yml")
        for pair in ("1", "2"):
            self.assertEqual(compose["services"][f"sidecar-{pair}"]["network_mode"], f"service:pinghelp-{pair}")
        self.assertEqual({"zk1", "zk2", "zk3", "certs", "prometheus", "grafana"} - set(compose["services"]), set())

    def test_prometheus_configs_and_rules_are_accepted(self):
        r = run("promtool", "check", "config", f"{DEPLOY}/prometheus/prometheus.yml")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with tempfile.TemporaryDirectory() as d:  # compose mounts alerts.yml beside it
            shutil.copy(f"{DEPLOY}/compose/prometheus.yml", d)
            shutil.copy(f"{DEPLOY}/prometheus/alerts.yml", d)
            r = run("promtool", "check", "config", f"{d}/prometheus.yml")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r = run("promtool", "check", "rules", f"{DEPLOY}/prometheus/alerts.yml")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_grafana_provisioning_points_at_the_dashboard(self):
        dash = json.loads(text_of(f"{DEPLOY}/grafana/sidecar-dashboard.json"))
        self.assertTrue(dash["panels"])
        provider = load(f"{DEPLOY}/grafana/provisioning/dashboards/sidecar.yml")
        compose = load(f"{DEPLOY}/docker-compose.yml")
        mounts = compose["services"]["grafana"]["volumes"]
        path = provider["providers"][0]["options"]["path"]
        self.assertTrue(any(m.endswith(f"{path}/sidecar-dashboard.json:ro") for m in mounts), mounts)

    def test_kubernetes_manifests(self):
        for name, native in [("pinghelp-native-sidecar.yaml", True), ("pinghelp-two-containers.yaml", False)]:
            with self.subTest(name=name):
                [dep] = load_all(f"{DEPLOY}/k8s/{name}")
                spec = dep["spec"]["template"]["spec"]
                pool = spec["initContainers"] if native else spec["containers"]
                [sc] = [c for c in pool if c["name"] == "sidecar"]
                if native:
                    self.assertEqual(sc["restartPolicy"], "Always")
                # exec probes (the image has no curl): tests/container runs them in the image.
                self.assertEqual(sc["readinessProbe"]["exec"]["command"][-1], "http://127.0.0.1:9990/ready")
                self.assertEqual(sc["livenessProbe"]["exec"]["command"][-1], "http://127.0.0.1:9990/health")
                self.assertIn("http://127.0.0.1:9990/quitquitquit", " ".join(sc["lifecycle"]["preStop"]["exec"]["command"]))
                env = {e["name"]: e.get("value") for e in sc["env"]}
                drain = int(env.get("SIDECAR_DRAIN_TIMEOUT", "20s").rstrip("s"))
                grace = int(env.get("SIDECAR_DEREGISTER_GRACE", "22s").rstrip("s"))
                self.assertGreater(spec["terminationGracePeriodSeconds"], drain + grace)
                self.assertIn("memory", sc["resources"]["requests"])
                self.assertIn("secret", spec["volumes"][0])
        docs = load_all(f"{DEPLOY}/k8s/zookeeper.yaml")
        self.assertEqual([d["kind"] for d in docs], ["Service", "StatefulSet"])
        cert = load(f"{DEPLOY}/k8s/certificate.yaml")
        self.assertEqual(cert["spec"]["secretName"], "pinghelp-mtls")

    # The Dockerfile is built and its image run and inspected by tests/container (label container).


class ComposeTopologyTest(SidecarTestCase):
    """deploy/docker-compose.yml's topology without containers: 3 ZooKeeper servers, 2 pinghelp +
    sidecar pairs with the compose file's own SIDECAR_* settings, and Prometheus with
    deploy/compose/prometheus.yml, addresses substituted for loopback ports."""

    def test_two_pairs_discovered_then_one(self):
        compose = load(f"{DEPLOY}/docker-compose.yml")
        servers = self.start_ensemble(3)
        local = {f"zk{i + 1}:2181": f"127.0.0.1:{s.port}" for i, s in enumerate(servers)}

        def localize(text):
            for name, addr in local.items():
                text = text.replace(name, addr)
            return text

        pairs = []
        for n in ("1", "2"):
            env = {k: str(v) for k, v in compose["services"][f"sidecar-{n}"]["environment"].items()}
            ph = self.start_pinghelp()
            env.update({
                "SIDECAR_UPSTREAM": f"127.0.0.1:{ph.port}", "SIDECAR_ZK": localize(env["SIDECAR_ZK"]),
                "SIDECAR_TLS_CERT": self.certs.path("server.pem"), "SIDECAR_TLS_KEY": self.certs.path("server.key"),
                "SIDECAR_TLS_CLIENT_CA": self.certs.path("ca.pem"), "SIDECAR_ADVERTISE_HOST": "127.0.0.1",
                "SIDECAR_HEALTH_INTERVAL": "200ms",
                # No Finagle caller here: the compose file's grace (22 s) would only slow the stop.
                "SIDECAR_DEREGISTER_GRACE": "2s"})
            sc = self.spawn_serving(f"sidecar-{n}", lambda ports, env=env: ([SIDECAR], {
                **env, "SIDECAR_LISTEN": f"127.0.0.1:{ports[0]}",
                "SIDECAR_ADMIN_LISTEN": f"127.0.0.1:{ports[1]}"}), 2)
            sc.port, sc.admin = sc.ports
            sc.pinghelp = ph
            pairs.append(sc)
        path = pairs[0] and compose["services"]["sidecar-1"]["environment"]["SIDECAR_ZK_PATH"]
        for sc in pairs:
            wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=30 * SLOW, what="announced")

        cfg_dir = os.path.join(self.tmp, "prom")
        os.makedirs(cfg_dir, exist_ok=True)
        text = text_of(f"{DEPLOY}/compose/prometheus.yml")
        with open(os.path.join(cfg_dir, "prometheus.yml"), "w") as f:
            f.write(localize(text).replace("scrape_interval: 15s", "scrape_interval: 1s"))
        shutil.copy(f"{DEPLOY}/prometheus/alerts.yml", cfg_dir)
        prom = self.spawn_serving("prometheus", lambda ports: (
            ["prometheus", f"--config.file={cfg_dir}/prometheus.yml",
             f"--storage.tsdb.path={cfg_dir}/tsdb-{ports[0]}",
             f"--web.listen-address=127.0.0.1:{ports[0]}"], None), 1, timeout=60 * SLOW)
        pport = prom.ports[0]

        def up():
            url = f"http://127.0.0.1:{pport}/api/v1/query?" + urllib.parse.urlencode({"query": 'up{job="sidecar"} == 1'})
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return len(json.loads(r.read())["data"]["result"])
            except OSError:
                return 0

        wait_for(lambda: up() == 2, timeout=60, interval=0.5, what="both sidecars up in Prometheus")
        hosts = ",".join(local.values())

        def members():
            r = run(SIDECAR, "resolve", f"zk2!{hosts}!{path}")
            return [json.loads(l)["port"] for l in r.stdout.splitlines()]

        self.assertEqual(sorted(members()), sorted(sc.port for sc in pairs))
        pairs[0].send(signal.SIGTERM)
        self.assertEqual(pairs[0].wait(30), 0)
        pairs[0].pinghelp.stop()
        self.assertEqual(members(), [pairs[1].port])


if __name__ == "__main__":
    unittest.main()
