"""Verdicts of the built-in evaluators: statuses, counts, expected-test learning,
timeout scaling, the reference cache and the streaming API."""
from __future__ import annotations

import json
import time

import pytest

from srscode.core.types import Candidate, Task
from srscode.plugins.evaluate.sandbox.expected import ReferenceCache, expected_key
from srscode.plugins.evaluate.sandbox.harness import static_test_ids
from srscode.plugins.evaluate.sandbox.service import TimeoutSettings, scaled_timeout
from srscode.plugins.evaluate.sandbox.verdicts import Expected, classify, expected_from_reference
from srscode.plugins.evaluate.subprocess_per_candidate import SubprocessEvaluator, SubprocessParams
from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

REF = "def add(a, b):\n    return a + b\n"
TEST = """
import pytest

def test_small():
    assert add(1, 2) == 3

@pytest.mark.parametrize("a,b", [(1, 1), (5, 7), (-2, 2)])
def test_param(a, b):
    assert add(a, b) == a + b

class TestGroup:
    def test_strings(self):
        assert add("a", "b") == "ab"
"""
N_TESTS = 5  # 1 + 3 parametrized + 1 method
TASK = Task("add", "add two things", REF, TEST)


def cand(code: str, index: int = 0, task_id: str = "add") -> Candidate:
    return Candidate(task_id, index, code, code)


# --------------------------------------------------------------------------- pure parts


def events(*evs: dict) -> str:
    return "\n".join(json.dumps(e) for e in evs) + "\n"


def test_classify_pass_needs_every_expected_id_and_a_finished_session() -> None:
    exp = Expected(("t.py::a", "t.py::b"), "reference")
    ok = events(
        {"t": "collected", "ids": ["t.py::a", "t.py::b"]},
        {"t": "report", "id": "t.py::a", "when": "call", "outcome": "passed"},
        {"t": "report", "id": "t.py::b", "when": "call", "outcome": "passed"},
        {"t": "done", "exitstatus": 0, "elapsed": 0.01},
    )
    v = classify({"events_raw": ok, "exit_code": 0}, exp, "t", 0, 5.0)
    assert (v.status, v.tests_passed, v.tests_expected, v.pass_rate) == ("passed", 2, 2, 1.0)
    # the same events without the end of the session: the process died (exit code 0 or not)
    v = classify({"events_raw": ok.replace('{"t": "done", "exitstatus": 0, "elapsed": 0.01}\n', ""), "exit_code": 0}, exp, "t", 0, 5.0)
    assert v.status == "crashed" and "exited with code 0" in v.excerpt
    # one expected test never reported: failed, and the excerpt names it
    partial = events(
        {"t": "collected", "ids": ["t.py::a"]},
        {"t": "report", "id": "t.py::a", "when": "call", "outcome": "passed"},
        {"t": "done", "exitstatus": 0, "elapsed": 0.01},
    )
    v = classify({"events_raw": partial, "exit_code": 0}, exp, "t", 0, 5.0)
    assert v.status == "failed" and v.tests_passed == 1 and "t.py::b" in v.excerpt
    assert v.outcomes["t.py::b"] == "missing"


def test_classify_statuses_from_runs() -> None:
    exp = Expected(("t.py::a",), "reference")
    assert classify({"timed_out": True, "signal": 9, "events_raw": ""}, exp, "t", 0, 2.0).status == "timeout"
    assert classify({"signal": 24, "events_raw": ""}, exp, "t", 0, 2.0).status == "timeout"  # SIGXCPU
    assert classify({"signal": 11, "events_raw": "", "output_tail": "Fatal Python error"}, exp, "t", 0, 2.0).status == "crashed"
    mem = events({"t": "collect_error", "id": "t.py", "text": "E   MemoryError"}, {"t": "collected", "ids": []}, {"t": "done", "exitstatus": 2})
    assert classify({"events_raw": mem}, exp, "t", 0, 2.0).status == "memory"
    err = events({"t": "collect_error", "id": "t.py", "text": "E   SyntaxError: bad"}, {"t": "collected", "ids": []}, {"t": "done", "exitstatus": 2})
    v = classify({"events_raw": err}, exp, "t", 0, 2.0)
    assert v.status == "error" and "SyntaxError" in v.excerpt
    assert classify({"sandbox_error": "disk full"}, exp, "t", 0, 2.0).status == "sandbox-error"
    assert classify({"worker_died": True, "detail": "x"}, exp, "t", 0, 2.0).status == "crashed"
    # garbage on the pipe is ignored, not trusted
    junk = "=== 1 passed ===\n{not json\n" + events({"t": "collected", "ids": []}, {"t": "done", "exitstatus": 5})
    assert classify({"events_raw": junk}, exp, "t", 0, 2.0).status == "error"


def test_classify_skips_and_xfails_are_not_passes() -> None:
    exp = Expected(("t.py::a",), "reference")
    for outcome, xfail in (("skipped", False), ("skipped", True)):
        ev = events({"t": "collected", "ids": ["t.py::a"]}, {"t": "report", "id": "t.py::a", "when": "call", "outcome": outcome, "xfail": xfail}, {"t": "done", "exitstatus": 0})
        assert classify({"events_raw": ev}, exp, "t", 0, 2.0).status == "failed"


def test_excerpt_is_bounded() -> None:
    exp = Expected(("t.py::a",), "reference")
    ev = events({"t": "collected", "ids": ["t.py::a"]}, {"t": "report", "id": "t.py::a", "when": "call", "outcome": "failed", "text": "x" * 50_000}, {"t": "done", "exitstatus": 1})
    assert len(classify({"events_raw": ev}, exp, "t", 0, 2.0).excerpt) <= 2000


def test_static_ids_follow_pytest_rules() -> None:
    code = """
def test_a(): pass
def helper(): pass
class TestX:
    def test_b(self): pass
class TestInit:
    def __init__(self): pass
    def test_c(self): pass
import unittest
class Case(unittest.TestCase):
    def test_d(self): pass
def test_a(): pass
"""
    assert static_test_ids(code) == ["test_solution.py::test_a", "test_solution.py::TestX::test_b", "test_solution.py::Case::test_d"]
    assert static_test_ids("def broken(:\n") == []


def test_timeout_scaling() -> None:
    s = TimeoutSettings(timeout_s=10, min_timeout_s=2, timeout_factor=5, max_timeout_s=30)
    assert scaled_timeout(s, None) == 10
    assert scaled_timeout(s, 0.01) == 2  # fast reference: the floor
    assert scaled_timeout(s, 1.0) == 5
    assert scaled_timeout(s, 100.0) == 30  # the cap


def test_reference_cache_merges_concurrent_writers(tmp_path) -> None:
    path = tmp_path / "cache.json"
    a, b = ReferenceCache(path), ReferenceCache(path)
    a.put("k1", Expected(("x",), "reference", 0.5, "passed"))
    b.put("k2", Expected(("y",), "static", None, None))
    a.save()
    b.save()
    c = ReferenceCache(path)
    assert c.get("k1") == Expected(("x",), "reference", 0.5, "passed") and c.get("k2").ids == ("y",)
    path.write_text("{broken")
    assert ReferenceCache(path).get("k1") is None  # a damaged cache is ignored, not fatal
    assert expected_key(TEST, REF) != expected_key(TEST, REF + "\n") != expected_key(TEST + " ", REF)


def test_expected_from_reference_falls_back_to_static() -> None:
    bad = events({"t": "collect_error", "id": "test_solution.py", "text": "E   ImportError"}, {"t": "collected", "ids": []}, {"t": "done", "exitstatus": 2, "elapsed": 0.1})
    exp = expected_from_reference({"events_raw": bad}, ["test_solution.py::test_a"])
    assert exp.source == "static" and exp.ids == ("test_solution.py::test_a",) and exp.ref_status == "error"
    good = events(
        {"t": "collected", "ids": ["a", "b"]},
        {"t": "report", "id": "a", "when": "call", "outcome": "passed"},
        {"t": "report", "id": "b", "when": "call", "outcome": "skipped", "xfail": True},
        {"t": "done", "exitstatus": 0, "elapsed": 0.25},
    )
    exp = expected_from_reference({"events_raw": good}, [])
    assert exp.ids == ("a",) and exp.ref_s == 0.25 and exp.ref_status == "passed"


# --------------------------------------------------------------------------- real runs

CASES = [
    (REF, "passed", N_TESTS),
    ("def add(a, b):\n    return a - b if isinstance(a, int) and a > 2 else a + b\n", "failed", 4),
    ("def add(a, b)\n    return a + b\n", "error", 0),  # syntax error: collection fails
    ("def add(a, b):\n    import time\n    while True:\n        time.sleep(0.01)\n", "timeout", 0),
    ("def add(a, b):\n    return bytearray(50 * 1024 ** 3)\n", "memory", 0),
    ("import os\nos._exit(0)\n", "crashed", 0),
    ("import pytest\npytest.exit('bye', returncode=0)\n", "error", 0),
    ("def add(a, b):\n    if a == 5:\n        import os\n        os._exit(0)\n    return a + b\n", "crashed", 2),
]


@pytest.fixture(scope="module")
def xdist_eval():
    ev = PytestXdistEvaluator(XdistParams(workers=2, cache_path="none", timeout_s=3, max_timeout_s=3, min_timeout_s=1.5))
    yield ev
    ev.close()


def test_fork_server_verdicts(xdist_eval) -> None:
    verdicts = xdist_eval.evaluate({"add": TASK}, [cand(code, i) for i, (code, _, _) in enumerate(CASES)])
    assert [v.index for v in verdicts] == list(range(len(CASES)))  # one per candidate, in order
    for v, (_code, status, passed) in zip(verdicts, CASES):
        assert v.status == status, (v.status, v.excerpt)
        assert v.tests_expected == N_TESTS
        # the crashing candidate ran the tests before the one that killed the process
        assert v.tests_passed == passed, (v.status, v.outcomes)
    timeout = verdicts[3]
    assert timeout.duration_s < 1.5 + 3.0  # scaled limit plus grace
    assert "add" in verdicts[1].excerpt or "assert" in verdicts[1].excerpt


def test_subprocess_evaluator_judges_the_same_way() -> None:
    ev = SubprocessEvaluator(SubprocessParams(workers=2, cache_path="none", timeout_s=3, max_timeout_s=3, min_timeout_s=1.5))
    try:
        picked = [CASES[i] for i in (0, 1, 2, 5, 6)]
        verdicts = ev.evaluate({"add": TASK}, [cand(code, i) for i, (code, _, _) in enumerate(picked)])
    finally:
        ev.close()
    assert [v.status for v in verdicts] == [status for _, status, _ in picked]
    assert [v.tests_passed for v in verdicts] == [n for _, _, n in picked]


def test_streaming_submit_and_results(xdist_eval) -> None:
    other = Task("mul", "multiply", "def mul(a, b):\n    return a * b\n", "def test_mul():\n    assert mul(3, 4) == 12\n")
    t0 = time.monotonic()
    xdist_eval.submit(TASK, cand(REF, 0))
    xdist_eval.submit(other, cand("def mul(a, b):\n    return a * b\n", 1, "mul"))
    first = next(iter(xdist_eval.results()))  # a verdict comes back before more are submitted
    xdist_eval.submit(other, cand("def mul(a, b):\n    return a + b\n", 2, "mul"))
    rest = list(xdist_eval.results())
    got = {(v.task_id, v.index): v.status for v in [first, *rest]}
    assert got == {("add", 0): "passed", ("mul", 1): "passed", ("mul", 2): "failed"}
    assert time.monotonic() - t0 < 30


def test_without_reference_the_static_ids_are_expected(xdist_eval) -> None:
    task = Task("noref", "", "", "def test_a():\n    assert f() == 1\n\ndef test_b():\n    assert f() + 1 == 2\n")
    vs = xdist_eval.evaluate({"noref": task}, [cand("def f():\n    return 1\n", 0, "noref"), cand("def f():\n    return 2\n", 1, "noref")])
    assert [(v.status, v.tests_passed, v.tests_expected) for v in vs] == [("passed", 2, 2), ("failed", 0, 2)]


def test_reference_outcomes_scale_the_timeout_and_fill_the_cache(tmp_path) -> None:
    cache = tmp_path / "ref.json"
    slow_ref = "import time\ndef f():\n    time.sleep(0.5)\n    return 1\n"
    task = Task("slow", "", slow_ref, "def test_f():\n    assert f() == 1\n")
    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path=str(cache), min_timeout_s=0.5, timeout_factor=2, timeout_s=30))
    try:
        # 3 x the reference's time: over a 2x-reference limit (about 1 s), far under timeout_s
        vs = ev.evaluate({"slow": task}, [cand(slow_ref, 0, "slow"), cand(slow_ref.replace("0.5", "1.5"), 1, "slow")])
    finally:
        ev.close()
    assert [v.status for v in vs] == ["passed", "timeout"]
    entry = ReferenceCache(cache).get(expected_key(task.test_code, task.solution))
    assert entry is not None and entry.ids == ("test_solution.py::test_f",) and entry.ref_status == "passed"
    assert 0.5 <= entry.ref_s < 5


def test_a_dead_worker_is_replaced_and_its_job_retried() -> None:
    import os
    import signal
    import threading

    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none", timeout_s=2, max_timeout_s=2, min_timeout_s=2, dedupe=False))  # REF must run again
    try:
        pool = ev.service.pool
        ev.evaluate({"add": TASK}, [cand(REF, 0)])  # reference learned, worker warm
        victim = pool.worker_pids()[0]
        # kill the worker (not the candidate) while it runs a slow candidate
        threading.Timer(0.5, lambda: os.killpg(victim, signal.SIGKILL)).start()
        slow = "import time\ndef add(a, b):\n    time.sleep(1)\n    return a + b\n"
        vs = ev.evaluate({"add": TASK}, [cand(slow, 1), cand(REF, 2)])
        assert pool.restarts == 1 and pool.worker_pids() != [victim]
        assert [v.status for v in vs] == ["timeout", "passed"]  # the retry ran the job again
    finally:
        ev.close()


# --------------------------------------------------------------------------- dedupe


class CountingPool:
    """An ExecutionPool that runs nothing: answers each job with the events of a run in
    which every test of TEST passes when the solution contains ``ok``, and fails
    otherwise. ``sandbox_errors`` jobs (by solution text) first fail with an error of ours."""

    def __init__(self, sandbox_errors: tuple[str, ...] = ()) -> None:
        import queue

        self.results: queue.Queue = queue.Queue()
        self.jobs: list[dict] = []
        self.info: dict = {}
        self.sandbox_errors = list(sandbox_errors)

    def start(self) -> None:
        pass

    def submit(self, job: dict, priority: int = 1) -> None:
        self.jobs.append(job)
        if job["solution"] in self.sandbox_errors:
            self.sandbox_errors.remove(job["solution"])
            self.results.put({"id": job["id"], "sandbox_error": "could not prepare the candidate's files"})
            return
        ids = ["test_solution.py::test_small", "test_solution.py::test_param[1-1]", "test_solution.py::TestGroup::test_strings"]
        outcome = "passed" if "ok" in job["solution"] else "failed"
        evs = [{"t": "collected", "ids": ids}] + [{"t": "report", "id": i, "when": "call", "outcome": outcome} for i in ids]
        self.results.put({"id": job["id"], "events_raw": events(*evs, {"t": "done", "exitstatus": 0, "elapsed": 0.01}), "exit_code": 0})

    def close(self) -> None:
        pass


def test_the_builtin_pools_and_the_fake_are_execution_pools() -> None:
    from srscode.plugins.evaluate.sandbox.limits import Limits
    from srscode.plugins.evaluate.sandbox.pool import WorkerPool
    from srscode.plugins.evaluate.sandbox.service import ExecutionPool
    from srscode.plugins.evaluate.sandbox.subproc import SubprocessPool

    for pool in (WorkerPool(1, Limits()), SubprocessPool(1, Limits()), CountingPool()):
        assert isinstance(pool, ExecutionPool), type(pool).__name__
        pool.close()


def dedupe_service(pool: CountingPool, dedupe: bool = True):
    from srscode.plugins.evaluate.sandbox.service import EvaluationService

    return EvaluationService(pool, TimeoutSettings(), ReferenceCache(None), dedupe=dedupe)


def run_all(svc, subs: list[tuple[str, int, str, str | None]]) -> dict[tuple[str, int], object]:
    seqs = {svc.submit_code(t, i, sol, TEST, ref): (t, i) for t, i, sol, ref in subs}
    got = {seqs[s]: v for s, v in svc.results_with_seq()}
    svc.close()
    return got


def test_identical_candidates_run_once_and_each_gets_its_own_verdict() -> None:
    pool = CountingPool()
    svc = dedupe_service(pool)
    ok, bad = "def add(a, b):  # ok\n    return a + b\n", "def add(a, b):\n    return 0\n"
    got = run_all(svc, [("t", 0, ok, None), ("t", 1, ok, None), ("t", 2, bad, None), ("t", 3, ok, None), ("u", 0, bad, None)])
    assert len(pool.jobs) == 2  # one run per distinct solution of the same test file
    assert svc.reused == 3
    assert {k: (v.task_id, v.index, v.status) for k, v in got.items()} == {
        ("t", 0): ("t", 0, "passed"), ("t", 1): ("t", 1, "passed"), ("t", 2): ("t", 2, "failed"),
        ("t", 3): ("t", 3, "passed"), ("u", 0): ("u", 0, "failed")}


def test_without_dedupe_every_copy_runs() -> None:
    pool = CountingPool()
    ok = "def add(a, b):  # ok\n    return a + b\n"
    got = run_all(dedupe_service(pool, dedupe=False), [("t", i, ok, None) for i in range(4)])
    assert len(pool.jobs) == 4 and all(v.status == "passed" for v in got.values())


def test_a_candidate_equal_to_the_reference_takes_the_reference_run() -> None:
    pool = CountingPool()
    ref = "def add(a, b):  # ok reference\n    return a + b\n"
    other = "def add(a, b):  # ok too\n    return b + a\n"
    svc = dedupe_service(pool)
    got = run_all(svc, [("t", 0, ref, ref), ("t", 1, other, ref), ("t", 2, ref, ref)])
    # the reference run (which learned the expected ids) and one run of the other solution
    assert [j["solution"] for j in pool.jobs] == [ref, other]
    assert [got[("t", i)].status for i in range(3)] == ["passed"] * 3
    assert got[("t", 0)].tests_expected == 3


def test_copies_of_a_run_that_failed_on_our_side_run_themselves() -> None:
    ok = "def add(a, b):  # ok\n    return a + b\n"
    pool = CountingPool(sandbox_errors=(ok,))
    got = run_all(dedupe_service(pool), [("t", i, ok, None) for i in range(3)])
    statuses = [got[("t", i)].status for i in range(3)]
    assert statuses[0] == "sandbox-error" and statuses[1:] == ["passed", "passed"]
    assert len(pool.jobs) == 3  # the failed run and one run for each waiting copy


def test_a_reference_timeout_excerpt_names_the_reference_limit() -> None:
    hung = events({"t": "collected", "ids": ["a"]}, {"t": "report", "id": "a", "when": "setup", "outcome": "passed"})
    exp = expected_from_reference({"events_raw": hung, "timed_out": True}, [], 7.5)
    assert exp.ref_status == "timeout" and exp.ref_s is None
    assert "7.5 s" in exp.ref_excerpt, exp.ref_excerpt
