"""Nothing of the host is visible to a candidate (issue 20, part 3).

The test plants secret files on the host (in /tmp, /var/tmp, /dev/shm, the pool's own
directory, the user's home and, as root, /etc); candidates then try every route we know
to read them (plain paths, listings, ``/proc/self/root``, ``/proc/<pid>/root`` and
``/cwd``, ``../`` traversal from the cwd, symlinks and descriptors). Each attack is the
candidate's solution; the task's test asserts that the attack found nothing, so a
candidate passes only where every read failed. A control candidate shows that what
Python and pytest need still works (stdlib extension modules, re-running the
interpreter, tracebacks with library source lines).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from srscode.core.types import Candidate, Task
from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

ROOT = Path(__file__).resolve().parents[1]
SECRET = f"srscode-secret-{uuid.uuid4().hex}"
NAME = f"srscode-planted-{uuid.uuid4().hex[:12]}"
LIMIT_S = 20.0

REF = "def leaked():\n    return []\n"
TEST = """
def test_nothing_leaked():
    assert leaked() == []
"""
TASK = Task("view", "view", REF, TEST)

# Shared by every attack: ``_read`` reports a path whose content reveals the secret (or,
# for ``must_not_read``, any content at all); ``_names`` reports a listing that shows
# the planted name.
PRELUDE = '''
import os

SECRET = %(secret)r
NAME = %(name)r
found = []


def _read(path, must_not_read=False):
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)
    except OSError:
        return
    if must_not_read or SECRET.encode() in data:
        found.append("read " + path)


def _names(path):
    for lister in (os.listdir, lambda p: [e.name for e in os.scandir(p)]):
        try:
            names = lister(path)
        except OSError:
            continue
        if NAME in names:
            found.append("listed " + path)


def leaked():
    return found
'''


def _attack(body: str, planted: list[str]) -> str:
    return PRELUDE % {"secret": SECRET, "name": NAME} + f"PLANTED = {planted!r}\n" + body


DIRECT = """
for p in PLANTED:
    _read(p)
    _names(os.path.dirname(p))
    _read("/proc/self/root" + p)
    _read("/proc/1/root" + p)
    _read("/proc/thread-self/root" + p)
    _read("../" * 40 + p.lstrip("/"))
"""

PROC_ROUTES = """
for pid in [n for n in os.listdir("/proc") if n.isdigit()] + ["self", str(os.getppid())]:
    for how in ("root", "cwd"):
        base = "/proc/%s/%s" % (pid, how)
        for p in PLANTED:
            _read(base + p)
            _read(base + "/" + "../" * 40 + p.lstrip("/"))
        _names(base + "/tmp")
        _names(base + "/etc")
"""

SYMLINKS = """
tmp = os.environ.get("TMPDIR") or "."
for i, p in enumerate(PLANTED):
    link = os.path.join(tmp, "l%d" % i)
    try:
        os.symlink(p, link)
    except OSError:
        continue
    _read(link)
    _read(os.path.join(tmp, "..", "..", *([".."] * 40), p.lstrip("/")))
try:
    os.symlink("/", os.path.join(tmp, "root"))
    for p in PLANTED:
        _read(os.path.join(tmp, "root", p.lstrip("/")))
except OSError:
    pass
"""

DESCRIPTORS = """
for fd in os.listdir("/proc/self/fd"):
    fd = int(fd)
    try:
        if not os.path.isdir("/proc/self/fd/%d" % fd):
            continue
    except OSError:
        continue
    for p in PLANTED:
        rel = "../" * 40 + p.lstrip("/")
        try:
            f = os.open(rel, os.O_RDONLY, dir_fd=fd)
        except OSError:
            continue
        data = os.read(f, 1 << 16)
        os.close(f)
        if SECRET.encode() in data:
            found.append("fd %d" % fd)
"""

# Host paths with content that are not ours to plant in: the project checkout (the
# sandbox's own package directory is the only part a worker needs), another worker's
# directory, /var.
CHECKOUT = """
for p in %(paths)r:
    _read(p, must_not_read=True)
for d, forbidden in %(dirs)r:
    try:
        names = set(os.listdir(d))
    except OSError:
        continue
    if names & set(forbidden):
        found.append("listed %%s: %%s" %% (d, sorted(names & set(forbidden))))
cwd = os.getcwd()
base = os.path.dirname(os.path.dirname(cwd))
own = os.path.basename(os.path.dirname(cwd))
try:
    others = [n for n in os.listdir(base) if n != own]
except OSError:
    others = []
if others:
    found.append("pool dir shows %%s" %% others)
for other in ("w0", "w1", "w2", "w3"):
    if other != own and os.path.exists(os.path.join(base, other)):
        found.append("sees worker " + other)
for d in ("/var", "/var/log", "/srv", "/opt", "/mnt", "/home", "/boot", "/sys"):
    try:
        if os.listdir(d):
            found.append("listed " + d)
    except OSError:
        pass
"""

CONTROL = '''
import decimal
import fractions
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import unicodedata


def works():
    db = sqlite3.connect(":memory:")
    db.execute("create table t (x)")
    db.execute("insert into t values (?)", (str(decimal.Decimal("1.5") * 2),))
    out = {
        "sqlite": db.execute("select x from t").fetchone()[0],
        "fraction": str(fractions.Fraction(1, 3) * 3),
        "sha": hashlib.sha256(b"x").hexdigest()[:8],
        "unicode": unicodedata.name("a"),
        "json": json.dumps({"a": [1, 2]}),
        "pid": os.getpid() > 1,
        "null": open(os.devnull, "w").write("x"),
        "urandom": len(os.urandom(8)),
        "child": subprocess.run([sys.executable, "-c", "import json; print(json.dumps(1))"], capture_output=True, text=True).stdout.strip(),
    }
    return out


def broken():
    return json.loads("{")
'''

CONTROL_TEST = """
def test_works():
    assert works() == {"sqlite": "3.0", "fraction": "1", "sha": "2d711642", "unicode": "LATIN SMALL LETTER A",
                       "json": '{"a": [1, 2]}', "pid": True, "null": 1, "urandom": 8, "child": "1"}
"""
CONTROL_TASK = Task("control", "control", CONTROL, CONTROL_TEST)
# the reference fails here too: no expected ids, the outcome and the excerpt are checked
TRACEBACK_TEST = """
def test_traceback_shows_library_source():
    broken()
"""
TRACEBACK_TASK = Task("traceback", "traceback", CONTROL, TRACEBACK_TEST)


def _plant(paths: list[Path]) -> list[Path]:
    made = []
    for p in paths:
        try:
            p.write_text(SECRET)
            p.chmod(0o644)  # only the sandbox, not file permissions, may stop the reads
        except OSError:
            continue
        made.append(p)
    return made


def _open(as_user: bool) -> tuple[Any, Any, Any]:
    """An evaluation service, its pool, and how to close them. ``as_user``: the
    unprivileged path (user namespaces, same uid) even when the tests run as root."""
    if not as_user:
        ev = PytestXdistEvaluator(XdistParams(workers=2, cache_path="none", min_timeout_s=LIMIT_S, timeout_s=LIMIT_S,
                                              max_timeout_s=LIMIT_S, dedupe=False))
        return ev.service, ev.service.pool, ev.close
    from srscode.plugins.evaluate.sandbox.expected import ReferenceCache
    from srscode.plugins.evaluate.sandbox.limits import Limits
    from srscode.plugins.evaluate.sandbox.pool import WorkerPool
    from srscode.plugins.evaluate.sandbox.service import EvaluationService, TimeoutSettings

    pool = WorkerPool(2, Limits(), as_user=True)
    pool.start()
    svc = EvaluationService(pool, TimeoutSettings(timeout_s=LIMIT_S, max_timeout_s=LIMIT_S, min_timeout_s=LIMIT_S),
                            ReferenceCache(None), dedupe=False)
    return svc, pool, svc.close


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the filesystem view needs Linux namespaces")
@pytest.mark.parametrize("as_user", [False, True], ids=["evaluator-user", "user-namespace"])
def test_host_files_are_not_visible_to_candidates(as_user: bool) -> None:
    if as_user and os.geteuid() != 0:
        pytest.skip("as a normal user the first case already runs the user-namespace path")
    svc, pool, close = _open(as_user)
    planted: list[Path] = []
    try:
        iso = pool.info
        if "PID namespace" not in iso.get("processes", "") or not iso.get("network", "").startswith("cut"):
            pytest.skip(f"namespaces are not available here: {iso.get('refused')}")
        base = Path(pool.base)
        home = Path(os.path.expanduser("~"))
        spots = [Path("/tmp") / NAME, Path("/var/tmp") / NAME, Path("/dev/shm") / NAME, base / NAME, home / NAME]
        if os.geteuid() == 0:
            spots.append(Path("/etc") / NAME)
        planted = _plant(spots)
        assert Path("/tmp") / NAME in planted
        names = [str(p) for p in planted]
        checkout = {
            "paths": [str(ROOT / "setup.py"), str(ROOT / "docs" / "security.md"), str(Path(__file__).resolve()),
                      str(ROOT / "core" / "types.py"), "/etc/hostname", "/etc/shadow", "/etc/os-release",
                      "/proc/1/environ", str(home / ".bashrc")],
            "dirs": [(str(ROOT), ["tests", "docs", "setup.py", "core", ".git"]), ("/", ["var", "home", "srv", "boot", "sys"]),
                     ("/etc", ["hostname", "os-release", "shadow", "ssl"]), (str(home), [".bashrc", ".cache", ".ssh"])],
        }
        attacks = {
            "direct": _attack(DIRECT, names),
            "proc": _attack(PROC_ROUTES, names),
            "symlinks": _attack(SYMLINKS, names),
            "descriptors": _attack(DESCRIPTORS, names),
            "checkout": _attack(CHECKOUT % checkout, names),
        }
        # the same reads outside the sandbox find the secret: a pass is the sandbox's doing
        for p in planted:
            assert p.read_text() == SECRET
        cands = [Candidate("view", i, code, code) for i, code in enumerate(attacks.values())]
        cands.append(Candidate("control", len(cands), CONTROL, CONTROL))
        cands.append(Candidate("traceback", len(cands), CONTROL, CONTROL))
        verdicts = svc.evaluate({"view": TASK, "control": CONTROL_TASK, "traceback": TRACEBACK_TASK}, cands)
    finally:
        for p in planted:
            try:
                p.unlink()
            except OSError:
                pass
        close()
    got = dict(zip([*attacks, "control", "traceback"], verdicts))
    for name in attacks:
        v = got[name]
        assert v.status == "passed", (name, v.status, v.excerpt)
    control = got["control"]
    assert control.status == "passed", control.excerpt
    # a failing test's traceback still renders the standard library's source lines
    tb = got["traceback"]
    assert tb.status == "failed", (tb.status, tb.excerpt)
    assert "raise JSONDecodeError" in tb.excerpt or "self.scan_once" in tb.excerpt, tb.excerpt


def test_env_reports_the_filesystem_view() -> None:
    from srscode.plugins.evaluate.sandbox import isolation_status

    st = isolation_status(refresh=True)
    assert "filesystem_view" in st, st
    view = st["filesystem_view"]
    if st.get("plan") and "PID namespace" in st.get("processes", ""):
        assert view.startswith("private root"), st
        assert st.get("filesystem_binds"), st
    else:
        assert "host filesystem visible" in view, st


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the filesystem view needs Linux namespaces")
def test_a_refused_private_root_falls_back_and_says_why(monkeypatch) -> None:
    """Where pivot_root is refused the worker keeps the read-only host view of before,
    and the report names the step and the reason (the probe forks this process, so the
    patched call is what its children meet)."""
    import shutil
    import tempfile

    from srscode.plugins.evaluate.sandbox import isolation

    def refuse(new_root: str, put_old: str) -> None:
        raise OSError(1, "pivot_root: Operation not permitted (test)")

    monkeypatch.setattr(isolation, "pivot_root", refuse)
    tmp = tempfile.mkdtemp(prefix="srscode-view-test-")
    try:
        os.chmod(tmp, 0o755)
        work = os.path.join(tmp, "w0")
        os.makedirs(work)
        plan, report = isolation.plan_isolation(work)
        assert os.listdir(work) == ["c"]  # the private root's mount point was removed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not plan.pidns:
        pytest.skip(f"namespaces are not available here: {report.get('refused')}")
    assert not plan.private_root
    assert report["plan"] == "full, no private root", report
    assert report["filesystem_view"].startswith("host filesystem visible read-only (private root refused: "), report
    assert "Operation not permitted (test)" in report["filesystem_view"]
    assert "filesystem_binds" not in report
