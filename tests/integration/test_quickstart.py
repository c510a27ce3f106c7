"""The quick start stopped as people stop it: Ctrl-C in a terminal (a pseudo-terminal here), and
SIGTERM to a quick start running in the background. Either way every sidecar drains on one signal
(no `event=forced_exit`), the members are withdrawn while ZooKeeper still runs, and the script
exits 0 with nothing left behind. Run by ctest as `quickstart.interrupt` on an already built tree
(QUICKSTART_BUILD), in QUICKSTART_DIR, on the ports its environment names."""
import glob
import os
import pty
import select
import signal
import socket
import subprocess
import time
import unittest

SOURCE = os.environ.get("SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
SCRIPT = os.path.join(SOURCE, "deploy", "quickstart.sh")
STATE = os.environ.get("QUICKSTART_DIR", os.path.join(SOURCE, ".quickstart-test"))
# Printed once both members are announced: the outbound curl line.
READY = b"curl -H 'Host: pinghelp'"
START_TIMEOUT = 240  # ZooKeeper's JVM, two members announced (longer on a sanitized build)
STOP_TIMEOUT = 60    # the members' --deregister-grace (2 s) and drain, then pinghelp, then ZooKeeper


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class QuickstartStopTest(unittest.TestCase):

    def setUp(self):
        self.env = dict(os.environ, QUICKSTART_DIR=STATE)
        for log in glob.glob(os.path.join(STATE, "*.log")):
            os.remove(log)

    def logs(self):
        out = {}
        for path in sorted(glob.glob(os.path.join(STATE, "*sidecar*.log"))):
            with open(path, errors="replace") as f:
                out[os.path.basename(path)] = f.read()
        return out

    def ports(self):
        return [int(self.env[v]) for v in ("ZK_PORT", "APP_PORT", "TLS_PORT", "ADMIN_PORT", "OUTBOUND_PORT")
                if v in self.env]

    def assert_stopped_gracefully(self, output):
        logs = self.logs()
        self.assertEqual(sorted(logs), ["caller-sidecar.log", "sidecar-1.log", "sidecar-2.log"], output)
        for name, text in logs.items():
            with self.subTest(log=name):
                self.assertNotIn("event=forced_exit", text)
                self.assertEqual(text.count("event=draining"), 1, text)
                self.assertIn("event=drain_done reason=drained", text)
                self.assertIn("event=stopped", text)
        for name in ("sidecar-1.log", "sidecar-2.log"):
            with self.subTest(member=name):
                # The member deleted while ZooKeeper still answered, then the grace.
                self.assertIn("event=withdrawn member=/discovery/dev/pinghelp/member_", logs[name])
                self.assertIn("event=deregistered", logs[name])
                self.assertNotIn("withdraw_timeout", logs[name])
        # The caller announces nothing: no grace to wait.
        self.assertNotIn("event=deregistered", logs["caller-sidecar.log"])
        self.assertFalse(os.path.exists(os.path.join(STATE, "pids")), "pids file left behind")
        for port in self.ports():
            self.assertTrue(port_free(port), f"port {port} still served after the quick start exited")

    def test_ctrl_c_in_a_terminal_drains_every_sidecar_on_one_signal(self):
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session of its own with the pty as its terminal, as in a shell
            os.execve(SCRIPT, [SCRIPT], self.env)
        output = b""
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while READY not in output:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, f"no curl line within {START_TIMEOUT} s:\n{output.decode(errors='replace')}")
                ready, _, _ = select.select([fd], [], [], min(left, 1))
                if ready:
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:  # EIO: the script exited
                        chunk = b""
                    self.assertTrue(chunk, f"the quick start exited early:\n{output.decode(errors='replace')}")
                    output += chunk
            time.sleep(1)  # the rest of the message, and the script into its wait
            os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground group
            deadline = time.monotonic() + STOP_TIMEOUT
            status = None
            while status is None:
                self.assertLess(time.monotonic(), deadline, f"still running {STOP_TIMEOUT} s after Ctrl-C")
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        output += os.read(fd, 65536)
                    except OSError:
                        pass
                done, raw = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = os.waitstatus_to_exitcode(raw)
            pid = 0
        finally:
            if pid:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(fd)
        text = output.decode(errors="replace")
        self.assertEqual(status, 0, text)
        self.assertIn("stopping", text)
        self.assert_stopped_gracefully(text)

    def test_sigterm_stops_a_quick_start_in_the_background(self):
        """Started with `setsid ... &` from a script, bash ignores SIGINT: the documented way to
        stop it is kill -TERM, which must drain the same way."""
        p = subprocess.Popen(["setsid", SCRIPT], env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output = b""
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while READY not in output:
                self.assertLess(time.monotonic(), deadline, output.decode(errors="replace"))
                line = p.stdout.readline()
                self.assertTrue(line, f"the quick start exited early:\n{output.decode(errors='replace')}")
                output += line
            time.sleep(1)
            p.send_signal(signal.SIGTERM)
            rest, _ = p.communicate(timeout=STOP_TIMEOUT)
            output += rest
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        text = output.decode(errors="replace")
        self.assertEqual(p.returncode, 0, text)
        self.assert_stopped_gracefully(text)


if __name__ == "__main__":
    unittest.main()
