"""The documentation against the binary: every flag `sidecar --help` prints is in
docs/configuration.md with the same default and its SIDECAR_ variable, and every metric the sidecar
and pinghelp expose on /metrics is in docs/metrics.md. A flag or metric added without its line
in the docs fails here."""
import os
import re
import subprocess
import urllib.request

from harness import PINGHELP, SIDECAR, SOURCE, SidecarTestCase

DOCS = os.path.join(SOURCE, "docs")

# "  --listen arg (=0.0.0.0:8443)   mTLS listener…", "  -h [ --help ]   print…"; Boost wraps a
# long flag's description onto the next lines, which start with spaces and no dash.
HELP_FLAG = re.compile(r"^\s{2}(?:-\w \[ )?--([a-z][a-z0-9-]*)(?: \])?(?: arg)?(?: \(=([^)]*)\))?(?:\s|$)")


def help_flags(text):
    """{flag: default or None} from --help output."""
    flags = {}
    for line in text.splitlines():
        m = HELP_FLAG.match(line)
        if m:
            flags[m.group(1)] = m.group(2)
    return flags


def table_rows(markdown, first_column):
    """The header cells and the rows of the first table whose header starts with first_column."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0] == first_column:
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip().strip("|").split("|")])
            return cells, rows
    return None, []


def documented_flags(markdown):
    """{flag: (default cell, environment cell)} from the flag table of configuration.md."""
    header, rows = table_rows(markdown, "flag")
    if header is None:
        return {}
    default_col, env_col = header.index("default"), header.index("environment")
    out = {}
    for row in rows:
        for flag in re.findall(r"`--([a-z][a-z0-9-]*)`", row[0]):
            out[flag] = (row[default_col], row[env_col])
    return out


def code_spans(cell):
    return re.findall(r"`([^`]+)`", cell)


class DocsTest(SidecarTestCase):

    def read_doc(self, name):
        with open(os.path.join(DOCS, name), encoding="utf-8") as f:
            return f.read()

    def test_every_flag_in_help_is_documented_with_the_same_default(self):
        r = subprocess.run([SIDECAR, "--help"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        flags = help_flags(r.stdout)
        # The parser itself must see the flags, or this test proves nothing.
        self.assertGreater(len(flags), 30, r.stdout)
        self.assertEqual(flags.get("listen"), "0.0.0.0:8443")
        self.assertIsNone(flags.get("tls-cert", "missing"))
        documented = documented_flags(self.read_doc("configuration.md"))
        problems = []
        for flag, default in flags.items():
            if flag not in documented:
                problems.append(f"--{flag} is printed by --help but has no row in docs/configuration.md")
                continue
            cell, env = documented[flag]
            spans = code_spans(cell)
            if default is not None and (not spans or spans[0] != default):
                problems.append(f"--{flag}: --help says default {default!r}, the doc says {cell!r}")
            if default is None and spans:
                problems.append(f"--{flag}: --help gives no default, the doc says {cell!r}")
            if flag not in ("help", "version"):
                variable = "SIDECAR_" + flag.upper().replace("-", "_")
                if f"`{variable}`" not in env:
                    problems.append(f"--{flag}: the doc's environment column is {env!r}, not `{variable}`")
        for flag in documented:
            if flag not in flags:
                problems.append(f"--{flag} is in docs/configuration.md but not in --help")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_every_exposed_metric_is_documented(self):
        # pinghelp with its gRPC port too: its gRPC family is registered only then.
        ph = self.spawn_serving("pinghelp", lambda ports: (
            [PINGHELP, "--listen", f"127.0.0.1:{ports[0]}", "--grpc-listen",
             f"127.0.0.1:{ports[1]}"], None), 2)
        ph.port = ph.ports[0]
        # One gRPC Ping (an empty message, over h2c): its family has a series, so a HELP line.
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge",
                        "-H", "content-type: application/grpc", "-H", "te: trailers",
                        "--data-binary", "@-", f"http://127.0.0.1:{ph.ports[1]}/pinghelp.PingHelp/Ping"],
                       input=b"\0\0\0\0\0", check=True, timeout=10)
        sc = self.start_sidecar(ph.port)
        self.curl(f"https://localhost:{sc.port}/ping")
        status, text = self.admin_get(sc, "/metrics")
        self.assertEqual(status, 200)
        names = set(re.findall(r"^# HELP (\S+) ", text, re.M))
        with urllib.request.urlopen(f"http://127.0.0.1:{ph.port}/metrics", timeout=10) as resp:
            names |= set(re.findall(r"^# HELP (\S+) ", resp.read().decode(), re.M))
        # A caller with an outbound route (to the sidecar above), called once: the outbound
        # metrics appear with their route.
        caller = self.start_outbound_sidecar("--route", f"pinghelp=static!127.0.0.1:{sc.port}")
        status, body, _ = self.outbound_call(caller.outbound, "pinghelp", "/ping")
        self.assertEqual((status, body), (200, b"pong"))
        status, text = self.admin_get(caller, "/metrics")
        self.assertEqual(status, 200)
        names |= set(re.findall(r"^# HELP (\S+) ", text, re.M))
        self.assertIn("sidecar_requests_total", names)
        self.assertIn("sidecar_outbound_requests_total", names)
        self.assertIn("pinghelp_requests_total", names)
        self.assertIn("pinghelp_grpc_requests_total", names)
        doc = self.read_doc("metrics.md")
        missing = sorted(n for n in names if f"`{n}`" not in doc)
        self.assertEqual(missing, [], "exposed on /metrics but not in docs/metrics.md: " + ", ".join(missing))

    def test_the_readme_shows_the_two_commands_and_links_every_page(self):
        with open(os.path.join(SOURCE, "README.md"), encoding="utf-8") as f:
            readme = f.read()
        for command in ("deploy/quickstart.sh", "tests/run.sh"):
            self.assertIn(command, readme)
        for page in sorted(os.listdir(DOCS)):
            if page.endswith(".md"):
                self.assertIn(f"(docs/{page})", readme, f"README.md does not link docs/{page}")

    # --- What the README and docs/testing.md say about tests/run.sh, against the script itself.

    def read_readme(self):
        with open(os.path.join(SOURCE, "README.md"), encoding="utf-8") as f:
            return f.read()

    def run_sh(self):
        with open(os.path.join(SOURCE, "tests", "run.sh"), encoding="utf-8") as f:
            return f.read()

    def run_sh_stages(self):
        """(the default SIDECAR_STAGES, the stages in the order the script runs them)."""
        script = self.run_sh()
        default = re.search(r'stages=\$\{SIDECAR_STAGES:-([a-z ]+)\}', script).group(1).split()
        blocks = re.findall(r"^if has ([a-z]+); then", script, re.M)
        return default, blocks

    def test_the_stages_the_docs_name_are_the_stages_run_sh_runs(self):
        default, blocks = self.run_sh_stages()
        self.assertEqual(default, blocks, "tests/run.sh runs its stages in another order than its default list")
        readme = self.read_readme()
        start = readme.index("`tests/run.sh` takes ctest arguments")
        paragraph = readme[start:readme.index("\n\n", start)]
        named = [w for w in re.findall(r"`([a-z]+)`", paragraph)]
        self.assertEqual(named, default, "the stages README.md names")
        words = ["one", "two", "three", "four", "five", "six", "seven"]
        m = re.search(r"runs (\w+) stages.*then a fifth, `", paragraph, re.S)
        self.assertIsNotNone(m, paragraph)
        self.assertEqual(words.index(m.group(1)) + 1, len(default) - 1, "README.md's count of stages")
        testing = self.read_doc("testing.md")
        m = re.search(r"`tests/run.sh` runs (\w+) stages \(`SIDECAR_STAGES`, default `([a-z ]+)`\)", testing)
        self.assertIsNotNone(m, "docs/testing.md no longer says which stages run")
        self.assertEqual(words.index(m.group(1)) + 1, len(default))
        self.assertEqual(m.group(2).split(), default, "docs/testing.md's default SIDECAR_STAGES")
        listed = re.findall(r"^\d+\. `([a-z]+)`:", testing, re.M)
        self.assertEqual(listed, default, "docs/testing.md's numbered list of stages")

    def test_the_suite_times_agree_between_readme_and_testing_md(self):
        readme = self.read_readme()
        testing = self.read_doc("testing.md")
        times = {}
        for name, text in (("README.md", readme), ("docs/testing.md", testing)):
            four = re.search(r"first four stages take about (\d+)(?:-| to )(\d+) minutes", text)
            five = re.search(r"all five about (\d+)", text)
            container = re.search(r"adds about (\d+)", text)
            self.assertTrue(four and five and container, f"{name} no longer states the suite's time")
            times[name] = (int(four.group(1)), int(four.group(2)), int(five.group(1)), int(container.group(1)))
        self.assertEqual(times["README.md"], times["docs/testing.md"])
        low, high, all_five, container = times["README.md"]
        self.assertTrue(low <= all_five - container <= high,
                        f"all five ({all_five}) minus the container stage ({container}) is not the first four ({low}-{high})")

    def test_the_quick_start_builds_with_the_plain_stage_flags(self):
        """So that tests/run.sh after the quick start reuses its build/ instead of rebuilding it."""
        def configure_flags(text, where):
            m = re.search(r'cmake -S "\$root" -B "\$build" ((?:-D\S+ ?)+)', text)
            self.assertIsNotNone(m, f"no configure line in {where}")
            return sorted(m.group(1).split())
        with open(os.path.join(SOURCE, "deploy", "quickstart.sh"), encoding="utf-8") as f:
            quickstart = f.read()
        script = self.run_sh()
        plain = script[script.index("if has plain; then"):]
        self.assertEqual(configure_flags(quickstart, "deploy/quickstart.sh"), configure_flags(plain, "tests/run.sh"))
        self.assertIn('QUICKSTART_BUILD:-$root/build', quickstart)
        self.assertIn('build=${BUILD_DIR:-$root/build}', script)

    # --- sidecar(1) and the bash completion, generated from --help at build time.

    def test_the_man_page_and_completion_are_the_flag_table(self):
        import shutil
        import tempfile
        out = tempfile.mkdtemp(prefix="sidecar-doc-")
        self.addCleanup(shutil.rmtree, out, True)
        generator = os.path.join(SOURCE, "deploy", "docs-from-help.py")
        r = subprocess.run(["python3", generator, SIDECAR, out], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "sidecar.1"), encoding="utf-8") as f:
            man = f.read()
        with open(os.path.join(out, "sidecar.bash"), encoding="utf-8") as f:
            bash = f.read()
        # The build made the same files next to the binary: they are current, not a stale copy.
        built = os.path.join(os.path.dirname(SIDECAR), "doc")
        for name, fresh in (("sidecar.1", man), ("sidecar.bash", bash)):
            with self.subTest(built=name), open(os.path.join(built, name), encoding="utf-8") as f:
                self.assertEqual(f.read(), fresh, f"{built}/{name} differs from what --help gives now")
        flags = help_flags(subprocess.run([SIDECAR, "--help"], capture_output=True, text=True, timeout=30).stdout)
        self.assertGreater(len(flags), 30)
        for flag, default in flags.items():
            with self.subTest(flag=flag):
                self.assertTrue("\\fB\\-\\-" + flag.replace("-", "\\-") + "\\fR" in man, "not in the man page")
                self.assertRegex(bash, rf'\*\) opts="[^"]*--{flag}\b')
                if default is not None:
                    self.assertTrue(f"(default: {default.replace('-', chr(92) + '-')})" in man, "default not in the man page")
        for sub in ("resolve", "probe"):
            self.assertIn(f".SH SIDECAR {sub.upper()}", man)
        if shutil.which("man"):
            r = subprocess.run(["man", "--warnings", "-l", os.path.join(out, "sidecar.1")], capture_output=True,
                               text=True, timeout=60, env=dict(os.environ, MANWIDTH="100", MANPAGER="cat"))
            self.assertEqual((r.returncode, r.stderr.strip()), (0, ""))
            self.assertIn("--thrift-route", r.stdout)
        # The completion itself, as bash runs it.
        script = (f"source {os.path.join(out, 'sidecar.bash')}; COMP_WORDS=(sidecar --tls-c); COMP_CWORD=1; "
                  "_sidecar; echo \"${COMPREPLY[*]}\"; COMP_WORDS=(sidecar pro); _sidecar; echo \"${COMPREPLY[*]}\"")
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.stdout.splitlines(), ["--tls-cert --tls-client-ca", "probe"], r.stderr)
