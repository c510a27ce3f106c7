"""Every Kubernetes manifest in deploy/k8s against the Kubernetes API schema (npm's kubernetes-models,
whose validators are compiled from Kubernetes' OpenAPI spec and ship in the package, and
@kubernetes-models/cert-manager for the Certificate): types, required fields, enums, including the
native-sidecar form (initContainers[].restartPolicy). `npm ci` needs the npm registry once; the
validation itself runs offline. The exec probes and hooks must be commands the image can run."""
import glob
import json
import os
import shutil
import subprocess
import unittest

import yaml

from containers import DEPLOY, SIDECAR

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "k8s-schema")
# Where node_modules goes: the build tree, not the sources.
NODE_DIR = os.environ.get("K8S_SCHEMA_DIR", os.path.join(os.getcwd(), "k8s-schema"))


def install():
    """Copies the validator beside its node_modules; npm ci when the lock file changed."""
    if not shutil.which("node") or not shutil.which("npm"):
        raise unittest.SkipTest("node and npm are needed for the schema validation (deploy/install-deps.sh container)")
    os.makedirs(NODE_DIR, exist_ok=True)
    for name in ("package.json", "package-lock.json", "validate.mjs"):
        shutil.copy(os.path.join(SCHEMA, name), NODE_DIR)
    stamp = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
    with open(os.path.join(SCHEMA, "package-lock.json")) as f:
        wanted = json.load(f)["packages"]
    try:
        with open(stamp) as f:
            have = json.load(f)["packages"]
    except (OSError, ValueError, KeyError):
        have = None
    if have is None or any(have.get(k, {}).get("version") != v.get("version") for k, v in wanted.items() if k):
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise AssertionError(f"npm ci in {NODE_DIR}: {r.stdout}{r.stderr}")


def validate(docs):
    r = subprocess.run(["node", os.path.join(NODE_DIR, "validate.mjs")], input=json.dumps(docs),
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def manifests():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "k8s", "*.yaml"))):
        with open(path) as f:
            docs += [{"file": os.path.basename(path), "object": d} for d in yaml.safe_load_all(f) if d]
    return docs


class ManifestSchemaTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        install()

    def test_every_manifest_is_valid(self):
        docs = manifests()
        kinds = sorted({d["object"]["kind"] for d in docs})
        self.assertEqual(kinds, ["Certificate", "Deployment", "Service", "StatefulSet"])
        code, out = validate(docs)
        self.assertEqual(code, 0, out)
        self.assertEqual(out.count("\nok ") + out.startswith("ok "), len(docs), out)

    def test_the_validator_rejects_what_the_api_server_would(self):
        [dep] = [d for d in manifests() if d["file"] == "pinghelp-native-sidecar.yaml"]
        spec = dep["object"]["spec"]["template"]["spec"]
        bad = [
            ("port as text", lambda s: s["initContainers"][0]["ports"][0].update(containerPort="8443")),
            ("no container name", lambda s: s["containers"][0].pop("name")),
            ("exec command as a string", lambda s: s["initContainers"][0]["livenessProbe"]["exec"].update(
                command="sidecar probe")),
            ("resources as a list", lambda s: s["containers"][0].update(resources=[])),
        ]
        for what, breaks in bad:
            with self.subTest(what=what):
                broken = json.loads(json.dumps(dep))
                breaks(broken["object"]["spec"]["template"]["spec"])
                code, out = validate([broken])
                self.assertEqual(code, 1, out)
                self.assertIn("invalid", out)
        self.assertEqual(spec["initContainers"][0]["restartPolicy"], "Always")

    def test_probes_and_hooks_are_commands_the_image_has(self):
        """The image has /usr/local/bin/{sidecar,pinghelp} and nothing else to exec: each exec
        command is `sidecar probe` with arguments it accepts (checked with --help's parser)."""
        seen = 0
        for d in manifests():
            pod = d["object"].get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                if not c["image"].startswith("sidecar:"):
                    continue
                hooks = [c.get("readinessProbe"), c.get("livenessProbe"), c.get("startupProbe"),
                         (c.get("lifecycle") or {}).get("preStop")]
                for h in filter(None, hooks):
                    if "exec" not in h:
                        continue
                    cmd = h["exec"]["command"]
                    self.assertEqual(cmd[:2], ["/usr/local/bin/sidecar", "probe"], cmd)
                    # A port nobody listens on: the arguments parse (exit 1, not 2).
                    args = [a.replace(":9990", ":1") for a in cmd[2:]]
                    r = subprocess.run([SIDECAR, "probe", *args], capture_output=True, text=True, timeout=30)
                    self.assertEqual(r.returncode, 1, f"{cmd}: {r.stderr}")
                    seen += 1
        self.assertGreaterEqual(seen, 6)


if __name__ == "__main__":
    unittest.main()
