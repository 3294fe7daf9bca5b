"""In-process tampering with the test runner (issue 20): every attack here must end as
``error`` (or ``failed``), never ``passed``.

Each hostile candidate's ``add`` is wrong, so only the hack could make it pass. Honest
candidates written with the features the defences must leave alone (threads that end
inside a test, namedtuples and dataclasses, ``sys._getframe``, ``gc.collect``, a
decorated test, a unittest test case) run in the same batch and must still pass.
"""
from __future__ import annotations

import sys

import pytest

from srscode.core.types import Candidate, Task
from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

REF = "def add(a, b):\n    return a + b\n"
TEST = """
import functools
import unittest
import pytest

def test_one():
    assert add(1, 2) == 3

@pytest.mark.parametrize("x", [1, 2])
def test_two(x):
    assert add(-x, x) == 0

def logged(fn):
    @functools.wraps(fn)
    def inner(*a, **k):
        return fn(*a, **k)
    return inner

@logged
def test_decorated():
    assert add(2, 2) == 4

class TestCase(unittest.TestCase):
    def test_unit(self):
        self.assertEqual(add(3, 4), 7)
"""
TASK = Task("add", "add", REF, TEST)
N_TESTS = 5
WRONG = "def add(a, b):\n    return None\n"

# a helper many attacks share: the innermost pytest frame's locals that hold `name`
FIND = """
import sys
def find(name):
    f = sys._getframe(1)
    while f is not None:
        if name in f.f_locals:
            return f.f_locals[name]
        f = f.f_back
    return None
"""

HONEST = {
    "honest-plain": REF,
    "honest-thread-joined": "import threading\ndef add(a, b):\n    out = []\n    t = threading.Thread(target=lambda: out.append(a + b))\n    t.start()\n    t.join()\n    return out[0]\n",
    "honest-stdlib": (
        "import collections, dataclasses, enum, gc, sys, typing\n"
        "P = collections.namedtuple('P', 'a b')\n@dataclasses.dataclass\nclass D:\n    x: int\n"
        "class E(enum.Enum):\n    A = 1\nclass T(typing.NamedTuple):\n    a: int\n"
        "def add(a, b):\n    gc.collect()\n    assert sys._getframe().f_code.co_name == 'add'\n    return D(P(a, b).a).x + T(b).a\n"
    ),
}

HOSTILE = {
    # the two classes of the issue
    "code-of-pyfunc-call": "import _pytest.python as p\np.pytest_pyfunc_call.__code__ = (lambda pyfuncitem: True).__code__\n" + WRONG,
    "code-of-runtest": "import _pytest.python as p\np.Function.runtest.__code__ = (lambda self: None).__code__\n" + WRONG,
    "gc-thread-rebinds-tests": (
        "import gc, threading, time\n"
        "def swap():\n    for _ in range(400):\n        for o in gc.get_objects():\n"
        "            if getattr(o, '__name__', '').startswith('test_'):\n                o.__code__ = (lambda *a, **k: None).__code__\n"
        "        time.sleep(0.002)\n"
        "threading.Thread(target=swap, daemon=True).start()\n" + WRONG
    ),
    # variations: other runner functions, other ways to the same objects
    "code-of-call-and-report": "import _pytest.runner as r\nr.call_and_report.__code__ = (lambda item, when, log=True, **kw: None).__code__\n" + WRONG,
    "defaults-of-runner": "import _pytest.runner as r\nr.call_and_report.__defaults__ = (False,)\n" + WRONG,
    "rebind-module-function": (
        "import _pytest.runner as r\nreal = r.call_and_report\n"
        "def fake(item, when, log=True, **kw):\n    rep = real(item, when, log=False, **kw)\n    rep.outcome = 'passed'\n"
        "    item.ihook.pytest_runtest_logreport(report=rep)\n    return rep\n"
        "r.call_and_report = fake\n" + WRONG
    ),
    "rebind-runner-during-test": (
        "def add(a, b):\n    import _pytest.runner as r\n    real = r.call_and_report\n"
        "    def fake(item, when, log=True, **kw):\n        return real(item, 'setup' if when == 'call' else when, log=log, **kw)\n"
        "    r.call_and_report = fake\n    return None\n"
    ),
    "rebind-class-method": "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\n" + WRONG,
    "rebind-report-factory": (
        "import _pytest.reports as rp\nreal = rp.TestReport.from_item_and_call.__func__\n"
        "def fake(cls, item, call):\n    rep = real(cls, item, call)\n    rep.outcome = 'passed'\n    return rep\n"
        "rp.TestReport.from_item_and_call = classmethod(fake)\n" + WRONG
    ),
    "fake-pytest-module": "import sys, types\nsys.modules['_pytest.runner'] = types.ModuleType('_pytest.runner')\n" + WRONG,
    "reload-runner": "import importlib, _pytest.runner\nimportlib.reload(_pytest.runner)\n" + WRONG,
    "poison-builtins": "import builtins\nbuiltins.print = lambda *a, **k: None\n" + WRONG,
    "rebind-sys-audit": "import sys\nsys.audit = lambda *a: None\n" + WRONG,
    "gc-referrers": (
        "import gc\ndef add(a, b):\n    import test_solution\n"
        "    for r in gc.get_referrers(test_solution.test_one):\n        pass\n    return None\n"
    ),
    "gc-referents": "import gc, sys\ngc.get_referents(sys.modules)\n" + WRONG,
    "settrace-line-jump": (
        "import sys\n"
        "def tracer(frame, event, arg):\n    if frame.f_code.co_name.startswith('test_') and event == 'line':\n"
        "        frame.f_lineno = frame.f_code.co_firstlineno + 100\n    return tracer\n"
        "sys.settrace(tracer)\n" + WRONG
    ),
    "setprofile": "import sys\nsys.setprofile(lambda *a: None)\n" + WRONG,
    "current-frames": "import sys\nsys._current_frames()\n" + WRONG,
    "thread-at-import": "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n" + WRONG,
    "thread-outlives-test": (
        "import threading, time\n"
        "def add(a, b):\n    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n    return None\n"
    ),
    "thread-rebinds-later-tests": FIND + (
        "import threading, time\n"
        "def add(a, b):\n    session = find('session') or find('item').session\n"
        "    def later():\n        time.sleep(0.05)\n        for it in session.items:\n            it.runtest = lambda: None\n"
        "    threading.Thread(target=later).start()\n    return None\n"
    ),
    "thread-joined-tampers": FIND + (
        "import threading\n"
        "def add(a, b):\n    session = find('item').session\n"
        "    def now():\n        for it in session.items:\n            it.runtest = lambda: None\n"
        "    t = threading.Thread(target=now)\n    t.start()\n    t.join()\n    return None\n"
    ),
    "item-runtest-via-frames": FIND + (
        "def add(a, b):\n    item = find('item')\n    for it in item.session.items:\n        it.runtest = lambda: None\n    return None\n"
    ),
    "item-obj-via-frames": FIND + (
        "def add(a, b):\n    item = find('item')\n    for it in item.session.items:\n        it._obj = lambda *a, **k: None\n    return None\n"
    ),
    "register-pyfunc-plugin": FIND + (
        "import pytest\nclass Cheat:\n    @pytest.hookimpl(tryfirst=True)\n    def pytest_pyfunc_call(self, pyfuncitem):\n        return True\n"
        "def add(a, b):\n    find('item').config.pluginmanager.register(Cheat(), 'cheat')\n    return None\n"
    ),
    "register-at-import": FIND + (
        "import pytest\nclass Cheat:\n    @pytest.hookimpl(tryfirst=True)\n    def pytest_pyfunc_call(self, pyfuncitem):\n        return True\n"
        "cfg = find('config') or find('self').config\ncfg.pluginmanager.register(Cheat(), 'cheat')\n" + WRONG
    ),
    "transient-report-flip": FIND + (
        "import pytest\nclass Flip:\n    @pytest.hookimpl(tryfirst=True)\n    def pytest_runtest_logreport(self, report):\n"
        "        report.outcome = 'passed'\n"
        "def add(a, b):\n    find('item').config.pluginmanager.register(Flip(), 'flip')\n    return None\n"
    ),
    "signal-handler": (
        "import signal\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\n" + WRONG
    ),
    "gc-callback": "import gc\ngc.callbacks.append(lambda *a: None)\n" + WRONG,
    "gc-enable": "import gc\ngc.enable()\n" + WRONG,
    "ctypes-load": "import ctypes\nctypes.CDLL(None)\n" + WRONG,
    "ctypes-memmove": "import ctypes\nctypes.memmove(id(1) + 24, b'\\x00', 1)\n" + WRONG,
    "disarm-collector": FIND + (
        "def add(a, b):\n    cfg = find('item').config\n    for p in cfg.pluginmanager.get_plugins():\n"
        "        if hasattr(p, 'armed'):\n            p.armed = False\n    return None\n"
    ),
    "forge-events": (
        "import os, json\n"
        "def add(a, b):\n    ids = ['test_solution.py::test_one', 'test_solution.py::test_two[1]', 'test_solution.py::test_two[2]',\n"
        "           'test_solution.py::test_decorated', 'test_solution.py::TestCase::test_unit']\n"
        "    lines = [{'t': 'collected', 'ids': ids}]\n"
        "    for i in ids:\n        for w in ('setup', 'call', 'teardown'):\n"
        "            lines.append({'t': 'phase', 'id': i, 'when': w, 'raised': False})\n"
        "            lines.append({'t': 'report', 'id': i, 'when': w, 'outcome': 'passed', 'dur': 0})\n"
        "    lines.append({'t': 'done', 'exitstatus': 0, 'elapsed': 0.1})\n"
        "    data = ''.join(json.dumps(x) + '\\n' for x in lines).encode()\n"
        "    for fd in range(3, 64):\n        try:\n            os.write(fd, data)\n        except OSError:\n            pass\n"
        "    os._exit(0)\n"
    ),
    # the hook's state is its own: a candidate that reaches the worker's guard object (its
    # frame is on the stack) and swaps the guard's fields changes nothing the hook reads
    "swap-guard-fields": (
        "import sys, pytest\n"
        "class Cheat:\n    @pytest.hookimpl(tryfirst=True)\n    def pytest_pyfunc_call(self, pyfuncitem):\n        return True\n"
        "f = sys._getframe()\nwhile f is not None and f.f_code.co_name != '_candidate':\n    f = f.f_back\n"
        "w = f.f_locals['self']\nw.config.pluginmanager.register(Cheat(), 'cheat')\ng = w.guard\n"
        "object.__setattr__(g, 'hook_impls', tuple(tuple(hc._hookimpls) for hc in g.hook_callers))\n"
        "object.__setattr__(g, 'impl_functions', tuple(tuple(i.function for i in hc._hookimpls) for hc in g.hook_callers))\n" + WRONG
    ),
    "rebind-test-module-function": (
        "def add(a, b):\n    import sys\n    mod = sys.modules['test_solution']\n"
        "    for name in dir(mod):\n        if name.startswith('test_'):\n            setattr(mod, name, lambda *a, **k: None)\n    return None\n"
    ),
}


def _evaluate(codes: dict[str, str]) -> dict[str, object]:
    ev = PytestXdistEvaluator(XdistParams(workers=2, cache_path="none", dedupe=False, min_timeout_s=5, timeout_s=5, max_timeout_s=5))
    try:
        cands = [Candidate("add", i, c, c) for i, c in enumerate(codes.values())]
        return dict(zip(codes, ev.evaluate({"add": TASK}, cands)))
    finally:
        ev.close()


@pytest.fixture(scope="module")
def verdicts() -> dict[str, object]:
    # honest candidates before and after the hostile ones, in one pool
    batch = {**HONEST, **HOSTILE, **{f"{k}#2": v for k, v in HONEST.items()}}
    return _evaluate(batch)


def test_honest_candidates_still_pass(verdicts) -> None:
    for name in [*HONEST, *(f"{k}#2" for k in HONEST)]:
        v = verdicts[name]
        assert (v.status, v.tests_passed, v.tests_expected) == ("passed", N_TESTS, N_TESTS), (name, v.excerpt)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_tampering_never_passes(verdicts, name: str) -> None:
    v = verdicts[name]
    assert v.status in ("error", "failed"), (name, v.status, v.excerpt)
    assert not v.passed and v.tests_passed < N_TESTS, (name, v)


# the attacks whose primitive or effect the integrity checks see: the verdict says so
NAMED = {
    "code-of-pyfunc-call": "set __code__ of a function",
    "code-of-runtest": "set __code__ of a function",
    "code-of-call-and-report": "set __code__ of a function",
    "defaults-of-runner": "set __defaults__ of a function",
    # whichever comes first: the thread's refused call, or the check that finds it alive
    "gc-thread-rebinds-tests": "called gc.get_objects|a thread the candidate started",
    "rebind-module-function": "code outside pytest on the runner's stack (solution.py:fake)",
    "rebind-runner-during-test": "rebound call_and_report",
    "rebind-class-method": "rebound runtest",
    "rebind-report-factory": "rebound from_item_and_call",
    "fake-pytest-module": "rebound _pytest.runner",
    "reload-runner": "code outside pytest on the runner's stack",
    "poison-builtins": "rebound print",
    "rebind-sys-audit": "rebound audit",
    "gc-referrers": "called gc.get_referrers",
    "gc-referents": "called gc.get_referents",
    "settrace-line-jump": "called sys.settrace",
    "setprofile": "called sys.setprofile",
    "current-frames": "called sys._current_frames",
    "thread-at-import": "thread the candidate started",
    "thread-outlives-test": "thread the candidate started",
    "thread-rebinds-later-tests": "thread the candidate started",
    "thread-joined-tampers": "changed while tests ran",
    "item-runtest-via-frames": "changed while tests ran",
    "item-obj-via-frames": "test function",
    "register-pyfunc-plugin": "implementations of pytest's hook",
    "register-at-import": "implementations of pytest's hook",
    "transient-report-flip": "implementations of pytest's hook",
    "signal-handler": "signal handler",
    "gc-callback": "garbage-collector hooks",
    "gc-enable": "garbage-collector hooks",
    "ctypes-load": "called ctypes.dlopen",
    "disarm-collector": "without the sandbox's checks",
    "forge-events": "without the sandbox's checks",
    "rebind-test-module-function": "changed while tests ran",
    "swap-guard-fields": "implementations of pytest's hook",
}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_tampering_is_named_in_an_error(verdicts, name: str) -> None:
    v = verdicts[name]
    assert v.status == "error", (name, v.status, v.excerpt)
    assert "tampered with the test runner" in v.excerpt, (name, v.excerpt)
    assert any(alt in v.excerpt for alt in NAMED[name].split("|")), (name, v.excerpt)


def test_the_worker_learns_the_runner_code_it_fingerprints() -> None:
    # the warm-up sessions (which once crashed before they ran: the fingerprint would then
    # fall back to every binding) report the runner code a session runs
    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none"))
    try:
        info = ev.service.pool.info["integrity"]
    finally:
        ev.close()
    assert info["armed"] is True
    assert info["runner_functions_warmed"] > 100 and 100 < info["bindings"] < 3000 and info["hooks"] > 10, info


def test_every_hostile_candidate_is_checked_by_name() -> None:
    # ctypes-memmove ends as a plain failure: the foreign function is gone before it runs
    assert set(HOSTILE) - set(NAMED) == {"ctypes-memmove"}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring exists from Python 3.12")
def test_sys_monitoring_callbacks_are_refused() -> None:  # pragma: no cover - 3.12+
    code = "import sys\nsys.monitoring.use_tool_id(3, 'x')\nsys.monitoring.register_callback(3, sys.monitoring.events.LINE, lambda *a: None)\n" + WRONG
    v = _evaluate({"m": code})["m"]
    assert v.status == "error" and "sys.monitoring" in v.excerpt, v.excerpt


# ----------------------------------------------------------------------------- strict equality
EQ_TEST = """
def test_number():
    assert add(1, 2) == 3

def test_list():
    assert [add(1, 1), add(2, 2)] == [2, 4]

def test_dict():
    assert {"sum": add(2, 3)} == {"sum": 5}
"""
EQ_TASK = Task("eq", "eq", REF, EQ_TEST)
ALWAYS_EQ = "class Any:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n    __hash__ = object.__hash__\ndef add(a, b):\n    return Any()\n"
STR_SUBCLASS = "class S(int):\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n    __hash__ = int.__hash__\ndef add(a, b):\n    return S(0)\n"
PLAIN_SUBCLASS = "class I(int):\n    pass\ndef add(a, b):\n    return I(a + b)\n"
FRACTION = "from fractions import Fraction\ndef add(a, b):\n    return Fraction(a + b)\n"


def _evaluate_eq(strict: bool) -> dict[str, object]:
    codes = {"ref": REF, "always-eq": ALWAYS_EQ, "int-subclass-eq": STR_SUBCLASS, "plain-subclass": PLAIN_SUBCLASS, "stdlib-type": FRACTION}
    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none", dedupe=False, strict_equality=strict))
    try:
        cands = [Candidate("eq", i, c, c) for i, c in enumerate(codes.values())]
        return dict(zip(codes, ev.evaluate({"eq": EQ_TASK}, cands)))
    finally:
        ev.close()


def test_strict_equality_is_off_by_default_and_documents_the_gap() -> None:
    v = _evaluate_eq(strict=False)
    # the tolerated gap strict mode closes
    assert (v["always-eq"].status, v["int-subclass-eq"].status) == ("passed", "passed")
    assert XdistParams().strict_equality is False


def test_strict_equality_fails_own_eq_and_keeps_honest_values() -> None:
    v = _evaluate_eq(strict=True)
    assert {k: x.status for k, x in v.items()} == {
        "ref": "passed",
        "always-eq": "failed",
        "int-subclass-eq": "failed",
        "plain-subclass": "passed",  # int's own __eq__
        "stdlib-type": "passed",  # fractions is standard library
    }
    assert "strict equality: Any defines its own __eq__" in v["always-eq"].excerpt


def test_a_failing_setup_or_teardown_is_a_plain_failure_not_tampering() -> None:
    """Setup and teardown phases are sealed only when they raise: such a test fails, and
    the verdict does not call it tampering."""
    test = (
        "import pytest\n\n@pytest.fixture\ndef broken_setup():\n    raise RuntimeError('setup')\n\n"
        "@pytest.fixture\ndef broken_teardown():\n    yield 1\n    raise RuntimeError('teardown')\n\n"
        "def test_ok():\n    assert add(1, 2) == 3\n\ndef test_setup(broken_setup):\n    assert add(1, 2) == 3\n\n"
        "def test_teardown(broken_teardown):\n    assert add(1, 2) == 3\n"
    )
    task = Task("fx", "fx", REF, test)
    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none", dedupe=False))
    try:
        (v,) = ev.evaluate({"fx": task}, [Candidate("fx", 0, REF, REF)])
    finally:
        ev.close()
    assert v.status == "failed" and "tampered" not in v.excerpt, v.excerpt
    assert v.outcomes["test_solution.py::test_ok"] == "passed"
    assert v.outcomes["test_solution.py::test_setup"] == "error"
    assert v.outcomes["test_solution.py::test_teardown"] == "error"


def test_an_honest_candidate_passes_whatever_signal_dispositions_the_engine_inherited() -> None:
    """The worker sets its candidates' handlers (SIGXFSZ ignored, SIGINT raising) after it
    fingerprinted the runner; the checks compare with those, not with what the engine's
    process happened to inherit (a job started in the background by a shell has SIGINT
    ignored, which the worker inherits; this session's shell does not)."""
    import signal
    import subprocess

    code = (
        "import signal\n"
        "from srscode.core.types import Candidate, Task\n"
        "from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams\n"
        f"task = Task('add', 'add', {REF!r}, 'def test_a():\\n    assert add(1, 2) == 3\\n')\n"
        "ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path='none'))\n"
        "try:\n    (v,) = ev.evaluate({'add': task}, [Candidate('add', 0, task.solution, task.solution)])\n"
        "finally:\n    ev.close()\n"
        "print('VERDICT', v.status, v.excerpt[:200])\n"
    )
    for disposition in (signal.SIG_DFL, signal.SIG_IGN):
        def preexec(d=disposition) -> None:
            signal.signal(signal.SIGINT, d)
            signal.signal(signal.SIGXFSZ, d)

        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=preexec)
        assert "VERDICT passed" in out.stdout, (disposition, out.stdout[-800:], out.stderr[-800:])


@pytest.mark.parametrize("target,attr", [("check", "__kwdefaults__"), ("check", "__defaults__"), ("hook", "__defaults__")])
def test_the_hooks_own_defaults_cannot_be_changed(target: str, attr: str) -> None:
    """All the hook's state is in its functions' defaults (made in the worker, the
    candidate's part bound by arm()). Code that reached them (through a frame of the hook,
    from a signal handler that fired inside it) and changed them must end the process like
    any other refused primitive."""
    import os

    from srscode.plugins.evaluate.sandbox import integrity

    guard = _guard_for_test()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            integrity.arm(guard, w, frozenset())
            hook = guard.hook
            fn = hook if target == "hook" else hook.__defaults__[3]
            if attr == "__kwdefaults__":
                fn.__kwdefaults__ = {"_fd": 2}
            else:
                fn.__defaults__ = tuple(fn.__defaults__)
        finally:
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    out = os.read(r, 65536).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == integrity.TAMPER_EXIT, out
    assert '"t": "tamper"' in out and attr in out, out


def _guard_for_test():
    """A guard built as the worker builds one, over a prepared pytest session."""
    import os
    import tempfile

    from _pytest.config import _prepareconfig
    import _pytest.main as pmain

    from srscode.plugins.evaluate.sandbox import integrity, worker
    from srscode.plugins.evaluate.sandbox.collector import Collector

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "test_x.py")
        with open(path, "w") as fh:
            fh.write("def test_x():\n    pass\n")
        config = _prepareconfig(["-q", "-p", "no:cacheprovider", "--rootdir", tmp, path], plugins=[Collector(None)])
        config._do_configure()
        try:
            session = pmain.Session.from_config(config)
            return integrity.build_guard(config, session, worker.Worker._candidate.__code__)
        finally:
            config._ensure_unconfigure()
