"""The documentation against the binary: every flag `sidecar --help` prints is in
docs/configuration.md with the same default and its SIDECAR_ variable, and every metric the sidecar
and pinghelp expose on /metrics is in docs/metrics.md. A flag or metric added without its line
in the docs fails here."""
import os
import re
import subprocess
import urllib.request

from harness import SIDECAR, SOURCE, SidecarTestCase

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
        ph = self.start_pinghelp()
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
