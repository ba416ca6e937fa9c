"""Running sluicectl in tests (test_sluicectl*.py): a clean environment, the
broker's URL, exit-code and one-line-error checks, and a parser for its
aligned tables.

The binary comes from env SLUICECTL (ctest sets it), else
build/release/cli/sluicectl.
"""

import json
import os
import re
import subprocess
import tempfile

import pytest

from conftest import REPO


def _ctl_path():
    exe = os.environ.get("SLUICECTL") or os.path.join(REPO, "build", "release", "cli", "sluicectl")
    if not os.access(exe, os.X_OK):
        pytest.fail("set SLUICECTL to the sluicectl binary (not found: %s)" % exe)
    return exe


# An empty HOME, so no developer's config file leaks in; removed at exit.
_home = tempfile.TemporaryDirectory(prefix="sluicectl-home-")
HOME = _home.name


class Run:
    def __init__(self, p):
        self.code = p.returncode
        self.raw = p.stdout
        self.out = p.stdout.decode("utf-8", "replace")
        self.err = p.stderr.decode("utf-8", "replace")

    @property
    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "<exit %d\nstdout: %s\nstderr: %s>" % (self.code, self.out[:2000], self.err[:2000])


def run(*args, input=None, env=None, timeout=20):
    """sluicectl with a clean environment: no SLUICECTL_* variables and an
    empty HOME, plus `env`."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLUICECTL_") and k != "XDG_CONFIG_HOME"}
    e["HOME"] = HOME
    e.update(env or {})
    p = subprocess.run([_ctl_path()] + [str(a) for a in args], input=input, capture_output=True, env=e,
                       timeout=timeout)
    return Run(p)


def url_of(broker):
    if broker.http_port is None:
        pytest.skip("the external broker's HTTP port is unknown (SLUICE_TEST_HTTP_PORT)")
    return "http://127.0.0.1:%d" % broker.http_port


def ctl(broker, *args, **kw):
    return run("--url", url_of(broker), *args, **kw)


def ok(broker, *args, **kw):
    r = ctl(broker, *args, **kw)
    assert r.code == 0 and r.err == "", r
    return r


def fails(r, code, pattern):
    """Exit `code`, nothing on stdout, exactly one line on stderr matching pattern."""
    assert r.code == code, r
    lines = r.err.splitlines()
    assert len(lines) == 1 and r.err.endswith("\n"), r
    assert re.match(r"sluicectl: " + pattern, lines[0]), r
    return lines[0]


def queue_info(broker, name):
    rows = ok(broker, "list", "queues", "--json").json
    found = [q for q in rows if q["name"] == name]
    return found[0] if found else None


def column_cells(table):
    """Splits an aligned table by the header's column starts; checks every
    row has each cell starting exactly there."""
    lines = table.rstrip("\n").split("\n")
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    rows = []
    for line in lines[1:]:
        cells = []
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            cell = line[s:end]
            if cell.strip():
                assert s == 0 or line[s - 1] == " ", (line, s)
                assert not cell[0].isspace(), ("cell does not start at its column", line, s)
            cells.append(cell.rstrip())
        rows.append(cells)
    return header.split(), rows
