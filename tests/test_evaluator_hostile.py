"""Hostile candidates, each mixed with honest ones in one batch.

Every hostile candidate must fail (its ``add`` is wrong or absent: only the hack could
make it pass), finish within its limit plus a small grace, leave no process and no file
behind, and leave the honest candidates' verdicts exactly as they are in a clean batch.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from srscode.core.types import Candidate, Task
from srscode.plugins.evaluate.subprocess_per_candidate import SubprocessEvaluator, SubprocessParams
from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

REF = "def add(a, b):\n    return a + b\n"
TEST = """
def test_one():
    assert add(1, 2) == 3

def test_two():
    assert add(-5, 5) == 0
"""
TASK = Task("add", "add", REF, TEST)
MARK = f"srscode-hostile-{uuid.uuid4().hex[:12]}"
GRACE_S = 4.0
LIMIT_S = 2.0  # every candidate's limit here (min_timeout_s; the reference is fast)

HONEST = [
    ("honest-pass", REF),
    ("honest-wrong", "def add(a, b):\n    return a - b\n"),
    ("honest-partial", "def add(a, b):\n    return 0 if a == -5 else a + b\n"),
]


def hostile(outside: Path) -> list[tuple[str, str]]:
    o = str(outside)
    return [
        ("loop-at-import", "while True:\n    pass\n"),
        ("sleep-forever", "import time\ndef add(a, b):\n    time.sleep(10 ** 6)\n"),
        ("alloc-50gb", "BLOB = bytearray(50 * 1024 ** 3)\ndef add(a, b):\n    return a + b\n"),
        (
            "fork-storm",
            "import os, time\nfor _ in range(200):  # capped\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\ndef add(a, b):\n    return None\n",
        ),
        ("os-exit-import", "import os\nos._exit(0)\n"),
        ("os-exit-call", "import os\ndef add(a, b):\n    os._exit(0)\n"),
        ("sys-exit-import", "import sys\nsys.exit(0)\n"),
        ("sys-exit-call", "import sys\ndef add(a, b):\n    sys.exit(0)\n"),
        ("pytest-exit-import", "import pytest\npytest.exit('done', returncode=0)\n"),
        ("pytest-exit-call", "import pytest\ndef add(a, b):\n    pytest.exit('done', returncode=0)\n"),
        ("delete-test-file", "import os\nos.remove(os.path.join(os.path.dirname(__file__), 'test_solution.py'))\ndef add(a, b):\n    return None\n"),
        (
            "rewrite-test-file",
            "import os\nwith open(os.path.join(os.path.dirname(__file__), 'test_solution.py'), 'w') as f:\n"
            "    f.write('def test_one():\\n    pass\\n')\ndef add(a, b):\n    return None\n",
        ),
        (
            "write-outside",
            "import os\nfor p in [%r, '/tmp/%s', os.path.expanduser('~root') + '/%s', '/var/tmp/%s', '/dev/shm/%s']:\n"
            "    try:\n        open(p, 'w').write('x')\n    except OSError:\n        pass\ndef add(a, b):\n    return None\n"
            % (f"{o}/{MARK}", MARK, MARK, MARK, MARK),
        ),
        (
            "background-process",
            "import subprocess, sys, os\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)  # %s'], start_new_session=True,\n"
            "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)  # %s'])\n    os._exit(0)\n"
            "def add(a, b):\n    return None\n" % (MARK, MARK),
        ),
        ("output-100mb", "import sys\ndef add(a, b):\n    sys.stdout.write('x' * (100 * 1024 * 1024))\n    sys.stdout.flush()\n    return None\n"),
        ("deep-recursion", "import sys\nsys.setrecursionlimit(10 ** 7)\ndef add(a, b):\n    return add(a, b) + 1\n"),
        (
            "poison-builtins",
            "import builtins, sys, os\nbuiltins.AssertionError = type('AssertionError', (Exception,), {})\n"
            "builtins.len = lambda x: 0\nsys.modules['solution_helper'] = sys\nos.chdir('/')\n"
            "import _pytest\nsys.modules['pytest'] = None\ndef add(a, b):\n    return None\n",
        ),
        ("fake-summary", "print('=' * 20 + ' 2 passed in 0.01s ' + '=' * 20)\ndef add(a, b):\n    print('PASSED')\n    return None\n"),
        ("patch-runner", "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\ndef add(a, b):\n    return None\n"),
        (
            "remount-rw",  # needs a capability the candidate must not hold
            "import ctypes\nctypes.CDLL(None).mount(None, b'/', None, 32 | 4096, None)\n"
            "open('/tmp/%s', 'w').write('x')\ndef add(a, b):\n    return None\n" % MARK,
        ),
    ]


def descendants(pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out: set[int] = set()
    todo = list(pids)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def marked_processes() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if MARK.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


def run_batch(ev, names_codes: list[tuple[str, str]]):
    cands = [Candidate("add", i, code, code) for i, (_n, code) in enumerate(names_codes)]
    verdicts = ev.evaluate({"add": TASK}, cands)
    assert len(verdicts) == len(cands)
    return {name: v for (name, _c), v in zip(names_codes, verdicts)}


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="process checks read /proc (Linux)")
def test_hostile_candidates_fail_cleanly_and_do_not_disturb_honest_ones(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)  # only the sandbox, not file permissions, may stop the writes
    # dedupe off: every honest copy must really run after the hostile ones, not get the
    # verdict of the identical copy that ran before them
    ev = PytestXdistEvaluator(XdistParams(workers=2, cache_path="none", min_timeout_s=LIMIT_S, timeout_s=LIMIT_S, max_timeout_s=LIMIT_S, dedupe=False))
    try:
        clean = run_batch(ev, HONEST)
        pool = ev.service.pool
        base = pool.base
        bad = hostile(outside)
        if "PID namespace" in ev.isolation.get("processes", ""):
            # only safe to try where candidates cannot see anything outside their namespace
            bad.append(("kill-everything", "import os, signal\nos.kill(-1, signal.SIGKILL)\n"))
        # honest candidates before, between and after the hostile ones
        mixed = HONEST + bad[: len(bad) // 2] + HONEST + bad[len(bad) // 2 :] + HONEST
        mixed = [(f"{n}#{i}" if n.startswith("honest") else n, c) for i, (n, c) in enumerate(mixed)]
        got = run_batch(ev, mixed)
        assert ev.service.reused == 0  # every candidate of the batch ran in its own process

        for name, v in got.items():
            if name.startswith("honest"):
                ref = clean[name.split("#")[0]]
                assert (v.status, v.tests_passed) == (ref.status, ref.tests_passed), (name, v)
            else:
                assert not v.passed, (name, v)
                assert v.tests_passed < v.tests_expected, (name, v)
            assert v.duration_s <= LIMIT_S + GRACE_S, (name, v.duration_s, v.status)
        expect = {
            "loop-at-import": "timeout",
            "sleep-forever": "timeout",
            "alloc-50gb": "memory",
            "os-exit-import": "crashed",
            "os-exit-call": "crashed",
            "pytest-exit-import": "error",
            "patch-runner": "error",  # the integrity hook sees the rebound runner method
        }
        assert {n: got[n].status for n in expect} == expect
        # workers survived everything and nothing a candidate started is still running
        assert pool.restarts == 0
        worker_pids = pool.worker_pids()
        left = descendants(worker_pids)
        inner = {p for p in left if Path(f"/proc/{p}/stat").exists() and int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]) in worker_pids}
        assert left <= inner and len(inner) <= len(worker_pids), f"leftover processes: {sorted(left - inner)}"
        assert marked_processes() == []
        # the pool still works after the hostile batch
        again = run_batch(ev, HONEST)
        assert {n: (v.status, v.tests_passed) for n, v in again.items()} == {n: (v.status, v.tests_passed) for n, v in clean.items()}
    finally:
        ev.close()
    assert not os.path.exists(base)
    assert marked_processes() == []
    leaked = [p for p in (outside / MARK, Path("/tmp") / MARK, Path("/var/tmp") / MARK, Path("/dev/shm") / MARK, Path(os.path.expanduser("~root")) / MARK) if p.exists()]
    for p in leaked:
        p.unlink()
    assert leaked == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="as a normal user the suite above already runs the user-namespace path")
def test_unprivileged_path_when_run_as_root(tmp_path) -> None:
    """Root takes the setuid path above; users get user namespaces with their own uid.
    Exercise that path here too with the candidates that attack it."""
    from srscode.plugins.evaluate.sandbox.expected import ReferenceCache
    from srscode.plugins.evaluate.sandbox.limits import Limits
    from srscode.plugins.evaluate.sandbox.pool import WorkerPool
    from srscode.plugins.evaluate.sandbox.service import EvaluationService, TimeoutSettings

    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    pool = WorkerPool(2, Limits(), as_user=True)
    pool.start()
    svc = EvaluationService(pool, TimeoutSettings(timeout_s=LIMIT_S, max_timeout_s=LIMIT_S, min_timeout_s=LIMIT_S), ReferenceCache(None), dedupe=False)
    try:
        if "PID namespace" not in pool.info.get("processes", ""):
            pytest.skip(f"user namespaces are not available here: {pool.info.get('refused')}")
        names = {"write-outside", "background-process", "remount-rw", "fork-storm", "poison-builtins", "os-exit-call"}
        bad = [(n, c) for n, c in hostile(outside) if n in names] + [("kill-everything", "import os, signal\nos.kill(-1, signal.SIGKILL)\n")]
        batch = HONEST + bad + HONEST
        cands = [Candidate("add", i, c, c) for i, (_n, c) in enumerate(batch)]
        verdicts = svc.evaluate({"add": TASK}, cands)
        got = [(n, v) for (n, _c), v in zip(batch, verdicts)]
        assert [v.status for n, v in got if n.startswith("honest")] == ["passed", "failed", "passed"] * 2
        assert not any(v.passed for n, v in got if not n.startswith("honest"))
        assert pool.restarts == 0
        workers = pool.worker_pids()
        assert len(descendants(workers)) <= len(workers)  # only the PID-1 worker itself
    finally:
        svc.close()
    assert marked_processes() == []
    assert [p for p in (outside / MARK, Path("/tmp") / MARK) if p.exists()] == []


def test_isolation_is_reported(tmp_path) -> None:
    from srscode.plugins.evaluate.sandbox import isolation_status

    st = isolation_status()
    for key in ("network", "filesystem", "processes", "user", "process_limit", "environment", "accelerators"):
        assert key in st, st


def test_subprocess_baseline_is_not_fooled_by_exit_codes_or_fake_output() -> None:
    """The seed-style baseline judged by per-test outcomes: exit-code tricks fail there too."""
    names = {"os-exit-import", "os-exit-call", "sys-exit-import", "pytest-exit-call", "fake-summary"}
    bad = [(n, c) for n, c in hostile(Path("/nonexistent")) if n in names]
    ev = SubprocessEvaluator(SubprocessParams(workers=2, cache_path="none", min_timeout_s=5, timeout_s=5, max_timeout_s=5))
    try:
        got = run_batch(ev, HONEST[:1] + bad)
    finally:
        ev.close()
    assert got["honest-pass"].passed
    assert all(not got[n].passed for n in names), {n: got[n].status for n in names}
