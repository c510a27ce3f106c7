"""ZooKeeper announcement in Finagle serverset format, against a real ZooKeeper server."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

from harness import SIDECAR, SLOW, SidecarTestCase, reserve_port, wait_for, wait_port, wait_serving

PATH = "/discovery/test/pinghelp"


class AnnounceTest(SidecarTestCase):

    def announced_sidecar(self, zk, upstream_port, *extra, path=PATH, wait=True):
        sc = self.start_sidecar(upstream_port, "--zk", f"127.0.0.1:{zk.port}" if not isinstance(zk, str) else zk,
                                "--zk-path", path, "--advertise-host", "127.0.0.1",
                                "--health-interval", "200ms", *extra)
        if wait:
            wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=20 * SLOW, what="announced")
        return sc

    def hold_port(self, port):
        """Keeps port refused and free_port() away from it while its server is down; returns
        the call that lets it go (right before the server starts again on it)."""
        hold = reserve_port(port)
        if hold:
            self.addCleanup(hold.close)
        return hold.close if hold else (lambda: None)

    def announcer(self, sc):
        return json.loads(self.admin_get(sc, "/admin/announcer")[1])

    def test_member_is_ephemeral_sequential_with_the_exact_bytes(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port)  # no --shard: 0 is written all the same
        names = self.members(zk.port, PATH)
        self.assertEqual(len(names), 1)
        self.assertRegex(names[0], r"^member_\d{10}$")
        data, owner = self.zkctl(zk.port, "get", f"{PATH}/{names[0]}").stdout.rsplit("\n", 2)[:2]
        self.assertEqual(
            data, '{"serviceEndpoint":{"host":"127.0.0.1","port":%d},"additionalEndpoints":'
                  '{"admin":{"host":"127.0.0.1","port":%d},"http":{"host":"127.0.0.1","port":%d}},'
                  '"status":"ALIVE","shard":0}' % (sc.port, sc.admin, sc.port))
        self.assertNotEqual(owner, "ephemeralOwner=0x0")  # ephemeral
        self.assertEqual(self.zkctl(zk.port, "get", "/discovery/test").returncode, 0)  # parents
        info = self.announcer(sc)
        self.assertEqual(info["member"], f"{PATH}/{names[0]}")
        self.assertEqual(info["session"], "connected")
        self.assertEqual(self.metric(sc, "sidecar_announced"), 1)

    def test_two_sidecars_two_members_resolve_and_watch(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        a = self.announced_sidecar(zk, ph.port)
        b = self.announced_sidecar(zk, ph.port)
        address = f"zk2!127.0.0.1:{zk.port}!{PATH}"
        r = subprocess.run([SIDECAR, "resolve", address], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual(sorted(l["port"] for l in lines), sorted([a.port, b.port]))
        admins = subprocess.run([SIDECAR, "resolve", address + "!admin"], capture_output=True,
                                text=True, timeout=30).stdout
        self.assertEqual(sorted(json.loads(l)["port"] for l in admins.splitlines()),
                         sorted([a.admin, b.admin]))

        watch = self.spawn("resolve-watch", [SIDECAR, "resolve", address, "--watch"])
        wait_for(lambda: watch.output().count("\n") >= 2, what="initial members")
        t0 = time.monotonic()
        a.send(signal.SIGTERM)
        wait_for(lambda: '"change":"removed"' in watch.output(), timeout=5, what="removal seen")
        self.assertLess(time.monotonic() - t0, 2.0)
        removed = [json.loads(l) for l in watch.output().splitlines() if "removed" in l]
        self.assertEqual([l["port"] for l in removed], [a.port])
        self.assertEqual(a.wait(15), 0)

    def test_sigterm_removes_the_member_before_the_listener_closes(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--deregister-grace", "3s")
        sc.send(signal.SIGTERM)
        t0 = time.monotonic()
        wait_for(lambda: self.members(zk.port, PATH) == [], timeout=5, what="member deleted")
        self.assertLess(time.monotonic() - t0, 1.5)
        # Still in the grace period: a request succeeds.
        rc, status, body, err = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual((status, body), (200, b"pong"), err)
        self.assertEqual(sc.wait(20), 0)

    def test_kill9_member_goes_after_the_session_timeout(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--zk-session-timeout", "2s")
        self.assertEqual(len(self.members(zk.port, PATH)), 1)
        sc.send(signal.SIGKILL)
        sc.wait()
        self.assertEqual(len(self.members(zk.port, PATH)), 1)  # not yet
        wait_for(lambda: self.members(zk.port, PATH) == [], timeout=15, what="ephemeral expired")

    def test_member_deleted_by_someone_else_is_reannounced(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port)
        [first] = self.members(zk.port, PATH)
        self.assertEqual(self.zkctl(zk.port, "delete", f"{PATH}/{first}").returncode, 0)
        wait_for(lambda: len(self.members(zk.port, PATH)) == 1 and self.members(zk.port, PATH) != [first],
                 timeout=10, what="re-announced")
        time.sleep(1)
        self.assertEqual(len(self.members(zk.port, PATH)), 1)
        self.assertEqual(self.metric(sc, "sidecar_reannouncements_total"), 1)

    def test_health_gates_the_member(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--rise", "2", "--fall", "2")
        ph.stop()
        # While it is down its port stays refused: bound here, so that no other process takes it.
        release = self.hold_port(ph.port)
        wait_for(lambda: self.members(zk.port, PATH) == [], timeout=10, what="withdrawn")
        self.assertEqual(self.admin_get(sc, "/ready")[0], 503)
        release()
        ph2 = self.spawn("pinghelp", [os.environ["PINGHELP_BIN"], "--listen", f"127.0.0.1:{ph.port}"])
        wait_serving(ph2, [ph.port])
        wait_for(lambda: len(self.members(zk.port, PATH)) == 1, timeout=10, what="announced again")
        self.assertEqual(self.metric(sc, "sidecar_withdrawals_total"), 1)

    def test_zookeeper_down_never_stops_the_data_path(self):
        # The port ZooKeeper will have is named now and served later: until then it is bound
        # here (connections to it are refused, as to a server that is down), so no other
        # process can take it in between.
        hold = reserve_port()
        self.addCleanup(hold.close)
        zk_port = hold.port
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(f"127.0.0.1:{zk_port}", ph.port, wait=False)
        wait_port(sc.port, proc=sc)
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual((status, body), (200, b"pong"))
        self.assertEqual(self.admin_get(sc, "/ready")[0], 503)
        self.assertEqual(self.announcer(sc)["session"], "connecting")
        hold.close()
        zk = self.start_zookeeper(port=zk_port)
        wait_for(lambda: len(self.members(zk.port, PATH)) == 1, timeout=30, what="announced late")

    def zk_lines(self, text):
        """The C client's own log lines (ZOO_ERROR@check_events…), which must not reach stderr."""
        return [l for l in text.splitlines() if "ZOO_" in l]

    def test_zookeeper_out_of_reach_is_one_line_of_ours_and_the_announcers_last_error(self):
        # A port nothing listens on: every connect is refused, about 7 a second.
        hold = reserve_port()
        self.addCleanup(hold.close)
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(f"127.0.0.1:{hold.port}", ph.port, wait=False)
        wait_port(sc.port, proc=sc)
        wait_for(lambda: self.announcer(sc)["last_error"] == "zookeeper unreachable: Connection refused",
                 timeout=10, what="last_error")
        time.sleep(3)  # some 20 refused connects
        out = sc.output()
        self.assertEqual(self.zk_lines(out), [])
        unreachable = [l for l in out.splitlines() if "event=zk_unreachable" in l]
        self.assertEqual(len(unreachable), 1, out[-3000:])  # then at most one per 30 s
        self.assertTrue(unreachable[0].endswith(
            f'warning event=zk_unreachable servers=127.0.0.1:{hold.port} error="Connection refused"'), unreachable)
        # sidecar resolve: one line that says why, not the client's retries.
        r = subprocess.run([SIDECAR, "resolve", f"zk2!127.0.0.1:{hold.port}!/nowhere", "--timeout", "2s"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertEqual(r.stderr, f"sidecar resolve: no answer from ZooKeeper at 127.0.0.1:{hold.port} "
                                   "within 2000 ms: Connection refused\n")

    def test_zookeeper_stopped_is_logged_once_and_cleared_when_it_is_back(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--zk-session-timeout", "20s")
        self.assertEqual(self.announcer(sc)["last_error"], "")
        before = len(sc.output())
        zk.stop()
        hold = self.hold_port(zk.port)
        wait_for(lambda: self.announcer(sc)["last_error"].startswith("zookeeper unreachable: "),
                 timeout=15, what="last_error while ZooKeeper is down")
        time.sleep(2)
        during = sc.output()[before:]
        self.assertEqual(self.zk_lines(during), [])
        self.assertEqual(during.count("event=zk_unreachable"), 1, during)
        self.assertIn(f"event=zk_unreachable servers=127.0.0.1:{zk.port} error=", during)
        hold()
        self.start_zookeeper(directory=zk.dir, port=zk.port)
        wait_for(lambda: self.announcer(sc)["session"] == "connected", timeout=30, what="reconnected")
        wait_for(lambda: self.announcer(sc)["last_error"] == "", timeout=10, what="last_error cleared")

    def test_short_zookeeper_outage_keeps_the_same_member(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--zk-session-timeout", "20s")
        [before] = self.members(zk.port, PATH)
        zk.stop()
        hold = self.hold_port(zk.port)
        time.sleep(1)  # the outage: the data path works through it
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual(body, b"pong")
        hold()
        zk2 = self.start_zookeeper(directory=zk.dir, port=zk.port)
        wait_for(lambda: self.announcer(sc)["session"] == "connected", timeout=30, what="reconnected")
        self.assertEqual(self.members(zk2.port, PATH), [before])
        self.assertEqual(self.announcer(sc)["member"], f"{PATH}/{before}")

    def test_long_zookeeper_outage_ends_with_exactly_one_member(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--zk-session-timeout", "2s")
        zk.stop()
        hold = self.hold_port(zk.port)
        time.sleep(5)  # longer than the session timeout
        rc, status, body, _ = self.curl(f"https://localhost:{sc.port}/ping")
        self.assertEqual(body, b"pong")
        hold()
        zk2 = self.start_zookeeper(directory=zk.dir, port=zk.port)
        wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=60, what="announced again")
        time.sleep(3)  # let any expiry of the old session play out
        self.assertEqual(len(self.members(zk2.port, PATH)), 1)
        self.assertEqual(self.announcer(sc)["member"], f"{PATH}/{self.members(zk2.port, PATH)[0]}")

    def digest_files(self):
        """Two --zk-auth-file files: the same user with the right and with another password."""
        good, bad = os.path.join(self.tmp, "zk-good"), os.path.join(self.tmp, "zk-bad")
        for path, password in ((good, "s3cret"), (bad, "wrong")):
            with open(path, "w") as f:
                f.write(f"sidecar:{password}\n")
        return good, bad

    def test_digest_auth_acl_and_a_wrong_password(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        good, bad = self.digest_files()
        sc = self.announced_sidecar(zk, ph.port, "--zk-auth-file", good)
        [member] = self.members(zk.port, PATH)
        acl = self.zkctl(zk.port, "getacl", f"{PATH}/{member}").stdout.split()
        self.assertIn("world:anyone:1", acl)  # read
        self.assertTrue(any(a.startswith("digest:sidecar:") and a.endswith(":31") for a in acl), acl)
        self.assertNotIn("s3cret", sc.output())

        # The parents it created are open (as Finagle's announcer leaves them): an announcer
        # with other credentials, or none (a Finagle server), adds its member beside ours.
        for parent in (PATH, "/discovery/test"):
            self.assertIn("world:anyone:31", self.zkctl(zk.port, "getacl", parent).stdout.split())
        self.announced_sidecar(zk, ph.port, "--zk-auth-file", bad)
        self.assertEqual(len(self.members(zk.port, PATH)), 2)

    def test_creator_all_parents_lock_out_other_credentials(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        good, bad = self.digest_files()
        self.announced_sidecar(zk, ph.port, "--zk-auth-file", good, "--zk-parent-acl", "creator-all")
        acl = self.zkctl(zk.port, "getacl", PATH).stdout.split()
        self.assertIn("world:anyone:1", acl)
        self.assertNotIn("world:anyone:31", acl)
        other = self.announced_sidecar(zk, ph.port, "--zk-auth-file", bad, wait=False)
        wait_port(other.port, proc=other)
        wait_for(lambda: "not authenticated" in self.announcer(other)["last_error"].lower()
                 or "noauth" in self.announcer(other)["last_error"].lower(),
                 timeout=15, what="auth error reported")
        rc, status, body, _ = self.curl(f"https://localhost:{other.port}/ping")
        self.assertEqual(body, b"pong")
        self.assertEqual(len(self.members(zk.port, PATH)), 1)

    def test_resolver_skips_what_it_cannot_use(self):
        zk = self.start_zookeeper()
        for p in ("/lenient",):
            self.zkctl(zk.port, "create", p, "")
        members = {
            "member_0000000001": ' { "status" : "ALIVE" , "serviceEndpoint" : { "port" : 1001 , "host" : "10.0.0.1" } } ',
            "member_0000000002": '{"serviceEndpoint":{"host":"10.0.0.2","port":1002},"additionalEndpoints":{},"status":"DEAD"}',
            "member_0000000003": '{"serviceEndpoint":{"host":"10.0.0.3",',
            "member_0000000004": '{"serviceEndpoint":{"host":"10.0.0.4","port":"1004"},"additionalEndpoints":{},"status":"ALIVE"}',
            "member_0000000005": '{"serviceEndpoint":{"host":"10.0.0.5","port":1005},"additionalEndpoints":{},"status":"ALIVE","shard":2}',
            "not_a_member": '{"serviceEndpoint":{"host":"10.0.0.6","port":1006},"status":"ALIVE"}',
        }
        for name, data in members.items():
            self.assertEqual(self.zkctl(zk.port, "create", f"/lenient/{name}", data).returncode, 0)
        r = subprocess.run([SIDECAR, "resolve", f"zk2!127.0.0.1:{zk.port}!/lenient"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual([(g["host"], g["port"]) for g in got], [("10.0.0.1", 1001), ("10.0.0.5", 1005)])
        self.assertIn("member_0000000003", r.stderr)
        self.assertIn("member_0000000004", r.stderr)
        self.assertNotIn("member_0000000002", r.stderr)  # DEAD is skipped quietly, not malformed

    def test_bad_announce_flags_exit_2(self):
        for args, mentions in [(["--zk", "127.0.0.1:2181"], "--zk-path"),
                               (["--announce", "zk!h!/p!0"], "--announce"),
                               (["--zk", "h:1", "--zk-path", "rel"], "--zk-path"),
                               (["--shard", "1"], "--shard"),
                               (["--zk", "h:1", "--zk-path", "/p", "--zk-auth-file", "/nope"], "/nope")]:
            with self.subTest(args=args):
                r = subprocess.run([SIDECAR, "--tls-cert", self.certs.path("server.pem"),
                                    "--tls-key", self.certs.path("server.key"),
                                    "--tls-client-ca", self.certs.path("ca.pem"), *args],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(mentions, r.stderr)
        # zk! is Finagle's older resolver form (one ensemble, then an endpoint name): it reads;
        # only zk2! joins ensembles with '#'.
        r = subprocess.run([SIDECAR, "resolve", "zk!h:1#h:2!/p"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)

    def test_announce_flag_in_finagle_form(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--announce", f"zk!127.0.0.1:{zk.port}!{PATH}!3!https",
                                "--advertise-host", "127.0.0.1", "--health-interval", "200ms")
        wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=20, what="announced")
        [member] = self.members(zk.port, PATH)
        data = json.loads(self.zkctl(zk.port, "get", f"{PATH}/{member}").stdout.split("\n")[0])
        self.assertEqual(data["shard"], 3)
        self.assertEqual(data["additionalEndpoints"]["https"], {"host": "127.0.0.1", "port": sc.port})

    def test_announce_endpoint_name_already_announced_is_written_once(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.start_sidecar(ph.port, "--announce", f"zk!127.0.0.1:{zk.port}!{PATH}!0!http",
                                "--advertise-host", "127.0.0.1", "--health-interval", "200ms")
        wait_for(lambda: self.admin_get(sc, "/ready")[0] == 200, timeout=20, what="announced")
        [member] = self.members(zk.port, PATH)
        raw = self.zkctl(zk.port, "get", f"{PATH}/{member}").stdout.split("\n")[0]
        self.assertEqual(raw.count('"http"'), 1, raw)
        self.assertEqual(list(json.loads(raw)["additionalEndpoints"]), ["admin", "http"])

    # --- --health-check grpc: grpc.health.v1.Health/Check over h2c --------------------------------

    def start_grpc_pinghelp(self, ports=None):
        """pinghelp with --grpc-listen (.grpc); ports: the same two again, for a restart."""
        def build(fresh):
            http, grpc_port = ports or fresh
            return [os.environ["PINGHELP_BIN"], "--listen", f"127.0.0.1:{http}",
                    "--grpc-listen", f"127.0.0.1:{grpc_port}"], None
        if ports:
            p = self.spawn("pinghelp", build(ports)[0])
            wait_serving(p, list(ports))
            p.ports = list(ports)
        else:
            p = self.spawn_serving("pinghelp", build, 2)
        p.port, p.grpc = p.ports
        return p

    def test_grpc_health_check_gates_the_member(self):
        zk = self.start_zookeeper()
        ph = self.start_grpc_pinghelp()
        sc = self.announced_sidecar(zk, ph.grpc, "--health-check", "grpc",
                                    "--upstream-protocol", "h2c", "--rise", "2", "--fall", "2")
        self.assertEqual(len(self.members(zk.port, PATH)), 1)
        self.assertGreater(self.metric(sc, "sidecar_health_checks_total", result="ok"), 0)
        ph.stop()
        release = self.hold_port(ph.grpc)
        wait_for(lambda: self.members(zk.port, PATH) == [], timeout=10, what="withdrawn")
        self.assertEqual(self.admin_get(sc, "/ready")[0], 503)
        release()
        self.start_grpc_pinghelp(ports=(ph.port, ph.grpc))
        wait_for(lambda: len(self.members(zk.port, PATH)) == 1, timeout=10, what="announced again")
        self.assertEqual(self.metric(sc, "sidecar_withdrawals_total"), 1)

    def test_grpc_health_check_reads_the_serving_status(self):
        """A grpcio health server (grpc_health is not packaged here: the answer's bytes by hand)
        whose status the test sets: NOT_SERVING withdraws, SERVING announces again, and
        --health-grpc-service names the service asked about."""
        sys.path.append("/usr/lib/python3/dist-packages")
        import grpc
        from concurrent import futures
        status = {"": 1, "svc.A": 1}
        asked = []

        def check(request, ctx):
            name = request[2:].decode() if request else ""  # field 1, a short string, or nothing
            asked.append(name)
            if name not in status:
                ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
            return b"\x08" + bytes([status[name]])  # HealthCheckResponse.status

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, 0)
        zk = self.start_zookeeper()
        sc = self.announced_sidecar(zk, port, "--health-check", "grpc", "--rise", "1",
                                    "--fall", "2")
        self.assertIn("", asked)
        status[""] = 2  # NOT_SERVING
        wait_for(lambda: self.members(zk.port, PATH) == [], timeout=10, what="withdrawn")
        status[""] = 1
        wait_for(lambda: len(self.members(zk.port, PATH)) == 1, timeout=10, what="announced again")
        other = self.announced_sidecar(zk, port, "--health-check", "grpc",
                                       "--health-grpc-service", "svc.A", path=PATH + "-a")
        self.assertIn("svc.A", asked)
        status["svc.A"] = 2
        wait_for(lambda: self.members(zk.port, PATH + "-a") == [], timeout=10, what="A withdrawn")
        self.assertEqual(len(self.members(zk.port, PATH)), 1)  # the server as a whole still serves
        # A service the server does not know (NOT_FOUND) is never announced.
        unknown = self.announced_sidecar(zk, port, "--health-check", "grpc",
                                         "--health-grpc-service", "svc.B", path=PATH + "-b",
                                         wait=False)
        wait_for(lambda: "svc.B" in asked, timeout=10, what="svc.B polled")
        time.sleep(1)
        self.assertEqual(self.admin_get(unknown, "/ready")[0], 503)
        self.assertEqual(self.members(zk.port, PATH + "-b"), [])
        self.assertGreater(self.metric(unknown, "sidecar_health_checks_total", result="failed"), 0)
        self.assertIsNone(sc.poll())
        self.assertIsNone(other.poll())

    def test_grpc_health_check_of_an_http1_service_is_never_healthy(self):
        zk = self.start_zookeeper()
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(zk, ph.port, "--health-check", "grpc", wait=False)
        wait_for(lambda: self.metric(sc, "sidecar_health_checks_total", result="failed") >= 3,
                 timeout=10, what="failed polls")
        self.assertEqual(self.admin_get(sc, "/ready")[0], 503)
        self.assertEqual(self.members(zk.port, PATH), [])
        self.assertEqual(self.metric(sc, "sidecar_health_checks_total", result="ok"), 0)

    def test_bad_health_check_flags_exit_2(self):
        for args, mentions in [(["--health-check", "tcp"], "--health-check"),
                               (["--health-grpc-service", "svc"], "--health-grpc-service")]:
            with self.subTest(args=args):
                r = subprocess.run([SIDECAR, "--tls-cert", self.certs.path("server.pem"),
                                    "--tls-key", self.certs.path("server.key"),
                                    "--tls-client-ca", self.certs.path("ca.pem"), *args],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(mentions, r.stderr)

    def test_three_server_ensemble_survives_losing_the_connected_server(self):
        servers = self.start_ensemble(3)
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
        ph = self.start_pinghelp()
        sc = self.announced_sidecar(hosts, ph.port, "--zk-session-timeout", "6s")
        info = self.announcer(sc)
        connected = int(info["server"].rsplit(":", 1)[1])
        member = info["member"]
        victim = next(s for s in servers if s.port == connected)
        victim.stop()
        survivor = next(s for s in servers if s.port != connected)
        wait_for(lambda: self.announcer(sc)["session"] == "connected"
                 and self.announcer(sc)["server"] != info["server"], timeout=30, what="failover")
        time.sleep(2)
        names = self.members(survivor.port, PATH)
        self.assertEqual(len(names), 1)
        self.assertEqual(f"{PATH}/{names[0]}", self.announcer(sc)["member"])
        self.assertEqual(self.announcer(sc)["member"], member)


if __name__ == "__main__":
    unittest.main()
