"""deploy/k8s/pinghelp-two-containers.yaml under `podman kube play`: the pod starts, answers /ping
through mTLS, the manifest's own exec probes pass when run in the container as the kubelet runs
them, the member is announced in ZooKeeper, and stopping the pod exits the sidecar 0 with the
member withdrawn.

What podman 4.3 (Debian 12) cannot take from the manifest, and this test changes in its copy:
- Secret volumes crash it (podman issue 16636: nil `optional` dereferenced in VolumeFromSecret):
  the three files come from a hostPath holding the same names instead;
- `fieldRef: status.podIP` is refused ("fieldPath status.podIP is either not valid or not
  supported"): SIDECAR_ADVERTISE_HOST is dropped, and the sidecar advertises its primary address,
  which is the pod's IP anyway;
- no StatefulSet: ZooKeeper runs as a plain container on the pod's network (SIDECAR_ZK=zk:2181);
- no Service ports: hostPort on the mTLS port; replicas 1 (two would ask for the same hostPort);
- podman runs exec probes through /bin/sh (CMD-SHELL), which the image does not have, so its own
  health status says unhealthy; the test runs the probe commands with `podman exec` instead.
The native-sidecar form (initContainers with restartPolicy: Always) is not run: podman runs init
containers to completion first. test_manifests.py validates it against the schema."""
import copy
import json
import os
import subprocess
import tempfile
import unittest

import yaml

from containers import (DEPLOY, PREFIX, SIDECAR, Cleanup, curl, free_port, image, make_certs, run, script,
                        wait_for)


def podman_copy(dep, certs, tls_port):
    dep = copy.deepcopy(dep)
    dep["metadata"]["name"] = f"{PREFIX}-pinghelp"
    dep["spec"]["replicas"] = 1
    spec = dep["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "certs", "hostPath": {"path": certs, "type": "Directory"}}]
    [sc] = [c for c in spec["containers"] if c["name"] == "sidecar"]
    sc["ports"][0].update(hostPort=tls_port, hostIP="127.0.0.1")
    sc["env"] = [e for e in sc["env"] if "valueFrom" not in e]
    for e in sc["env"]:
        if e["name"] == "SIDECAR_ZK":
            e["value"] = "zk:2181"
        if e["name"] == "SIDECAR_DRAIN_TIMEOUT":
            e["value"] = "5s"
    return dep


class KubePlayTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        tag = image()
        script("service-images.sh", "zookeeper")
        with open(os.path.join(DEPLOY, "k8s", "pinghelp-two-containers.yaml")) as f:
            [cls.dep] = yaml.safe_load_all(f)
        images = {c["image"] for c in cls.dep["spec"]["template"]["spec"]["containers"]}
        for name in images:
            run("tag", tag, name)

    def test_pod_runs_and_leaves_zookeeper_when_stopped(self):
        clean = Cleanup(self)
        certs = make_certs(self)
        net = clean.add("network", f"{PREFIX}-kube")
        run("network", "create", net)
        zk_port, tls_port = free_port(), free_port()
        zk = clean.add("container", f"{PREFIX}-kzk")
        run("run", "-d", "--name", zk, "--network", net, "--network-alias", "zk",
            "-p", f"127.0.0.1:{zk_port}:2181", "zookeeper:3.8")
        manifest = os.path.join(tempfile.mkdtemp(prefix="sidecar-kube-"), "pod.yaml")
        with open(manifest, "w") as f:
            yaml.safe_dump(podman_copy(self.dep, certs, tls_port), f)
        clean.add("kube", manifest)
        run("kube", "play", "--network", net, manifest, timeout=180)
        pod = f"{PREFIX}-pinghelp-pod-0"
        sidecar, app = f"{pod}-sidecar", f"{pod}-pinghelp"

        wait_for(lambda: curl(certs, f"https://127.0.0.1:{tls_port}/ping").stdout == "pong", 60, "pong from the pod")
        [sc] = [c for c in self.dep["spec"]["template"]["spec"]["containers"] if c["name"] == "sidecar"]
        ready, live = sc["readinessProbe"]["exec"]["command"], sc["livenessProbe"]["exec"]["command"]
        wait_for(lambda: run("exec", sidecar, *ready, check=False).returncode == 0, 60, "the readiness probe")
        r = run("exec", sidecar, *live, check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        inspect = json.loads(run("inspect", sidecar).stdout)[0]
        self.assertTrue(inspect["HostConfig"]["ReadonlyRootfs"])
        self.assertEqual(inspect["Config"]["User"].split(":")[0], "10001")

        path = next(e["value"] for e in sc["env"] if e["name"] == "SIDECAR_ZK_PATH")

        def members():
            r = subprocess.run([SIDECAR, "resolve", "--timeout", "5s", f"zk2!127.0.0.1:{zk_port}!{path}"],
                               capture_output=True, text=True, timeout=30)
            return [json.loads(l) for l in r.stdout.splitlines()]

        wait_for(lambda: len(members()) == 1, 30, "the pod's member in ZooKeeper")
        run("pod", "stop", "-t", "60", pod, timeout=120)  # past the grace (22 s) and drain
        self.assertEqual(run("inspect", "--format", "{{.State.ExitCode}}", sidecar).stdout.strip(), "0")
        self.assertEqual(members(), [])


if __name__ == "__main__":
    unittest.main()
