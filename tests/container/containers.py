"""Helpers for the container tests: the engine as deploy/container/engine.sh sets it up, the image
under test, certificates a container can read, and cleanup of everything a test started."""
import os
import shutil
import subprocess
import tempfile
import time
import unittest

SOURCE = os.environ.get("SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
SIDECAR = os.environ.get("SIDECAR_BIN", "")
DEPLOY = os.path.join(SOURCE, "deploy")
# The image under test. Unset: the tests assemble sidecar:test from the build tree that holds
# SIDECAR_BIN (deploy/container/build-image.sh --prebuilt, a few seconds); set it to test an image
# built otherwise (SIDECAR_IMAGE=sidecar:dev after build-image.sh without --prebuilt).
IMAGE = os.environ.get("SIDECAR_IMAGE", "")
PREFIX = f"sidecar-test-{os.getpid()}"


def _engine():
    out = subprocess.run(
        ["bash", "-c", f'source "{DEPLOY}/container/engine.sh"; printf "%s\\n%s\\n" "$engine_name" "${{CONTAINERS_CONF:-}}"'],
        capture_output=True, text=True, check=True).stdout.split("\n")
    env = dict(os.environ)
    if out[1]:
        env["CONTAINERS_CONF"] = out[1]
    return out[0], env


ENGINE, ENV = _engine()


def run(*args, timeout=120, check=True):
    """Runs the engine with args; raises with its output when check and it fails."""
    r = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and r.returncode != 0:
        raise AssertionError(f"{ENGINE} {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def script(name, *args, timeout=1200):
    r = subprocess.run([os.path.join(DEPLOY, "container", name), *args], capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    if r.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout


_image = None
_why_not = None


def image():
    """The image under test, built once per process; skips the test when containers cannot run
    here, with the engine's own words."""
    global _image, _why_not
    if _image is None and _why_not is None:
        _image, _why_not = _prepare()
    if _why_not:
        raise unittest.SkipTest(_why_not)
    return _image


def _prepare():
    if shutil.which(ENGINE) is None:
        return None, f"{ENGINE} cannot run containers here: not installed (deploy/install-deps.sh container)"
    tag = IMAGE
    if not tag:
        if not SIDECAR:
            return None, "neither SIDECAR_IMAGE nor SIDECAR_BIN is set"
        tag = "sidecar:test"
        build = os.path.dirname(os.path.dirname(os.path.abspath(SIDECAR)))
        script("build-image.sh", "--prebuilt", build, "--tag", tag)
    r = run("run", "--rm", tag, "--version", check=False, timeout=60)
    if r.returncode != 0:
        lines = [l for l in (r.stderr or r.stdout).splitlines() if "level=" not in l] or [""]
        return None, f"{ENGINE} cannot run containers here: {lines[-1].strip()}"
    return tag, None


class Cleanup:
    """Containers, pods and networks a test made, removed in reverse order."""

    def __init__(self, test):
        self.items = []
        test.addCleanup(self.close)

    def add(self, kind, name):
        self.items.append((kind, name))
        return name

    def close(self):
        for kind, name in reversed(self.items):
            if kind == "container":
                run("rm", "-f", "-t", "0", name, check=False)
            elif kind == "pod":
                run("pod", "rm", "-f", "-t", "0", name, check=False)
            elif kind == "network":
                run("network", "rm", "-f", name, check=False)
            elif kind == "kube":
                run("kube", "down", name, check=False, timeout=120)


def make_certs(test, uid=10001):
    """deploy/make-certs.sh into a temporary directory; the server key readable by the image's
    group (as fsGroup does in Kubernetes), not by the world."""
    d = tempfile.mkdtemp(prefix="sidecar-certs-")
    test.addCleanup(shutil.rmtree, d, True)
    subprocess.run([os.path.join(DEPLOY, "make-certs.sh"), d], check=True, capture_output=True)
    os.chmod(d, 0o755)
    os.chown(os.path.join(d, "server.key"), 0, uid)
    os.chmod(os.path.join(d, "server.key"), 0o640)
    return d


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def curl(certs, url, *extra):
    return subprocess.run(["curl", "-sS", "-m", "5", "--cacert", f"{certs}/ca.pem", "--cert", f"{certs}/client.pem",
                           "--key", f"{certs}/client.key", *extra, url], capture_output=True, text=True, timeout=30)
