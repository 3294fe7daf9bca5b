"""The worker's cache of library files' statement ranges (``sandbox/tracebacks.py``):
pytest's output is unchanged, the worker learns a file once, and a child cannot make the
worker read files it did not import."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import _pytest.python
import pytest
from _pytest._code.source import get_statement_startend2

from srscode.plugins.sandbox import tracebacks
from srscode.plugins.xdist_evaluator import PytestXdistEvaluator, XdistParams


@pytest.mark.parametrize("module", [_pytest.python, ast, json.decoder, subprocess])
def test_statement_starts_match_pytest_for_every_line(module) -> None:
    text = open(module.__file__, encoding="utf-8").read()
    tree = ast.parse(text)
    values = tracebacks.statement_starts(tree)
    n_lines = len(text.splitlines())
    from bisect import bisect_right

    for lineno in range(0, n_lines, max(1, n_lines // 150)):  # pytest's side walks the whole tree per line
        i = bisect_right(values, lineno)
        if i == 0:
            continue  # pytest indexes values[-1] there; a traceback line is never above the first statement
        mine = (values[i - 1], None if i >= len(values) else values[i])
        assert mine == get_statement_startend2(lineno, tree), (module.__name__, lineno)


RENDER = textwrap.dedent(
    """
    import contextlib, io, json, os, re, sys
    import pytest
    from srscode.plugins.sandbox import tracebacks

    os.chdir(sys.argv[1])
    def run():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            pytest.main(["-q", "-p", "no:cacheprovider", "--tb=short", "-s", "--continue-on-collection-errors", "test_solution.py"])
        return re.sub(r"in [0-9.]+s", "", out.getvalue())

    plain = run()
    assert tracebacks.install((os.getcwd(),))  # the candidate's files are never cached
    assert tracebacks.cap_entries()  # changes nothing below CAP_HEAD + CAP_TAIL entries
    first = run()
    missed = tracebacks.missed_paths()
    known = tracebacks.remember(missed)
    cached = run()
    print(json.dumps({"plain": plain, "first": first, "cached": cached, "missed": missed, "known": known,
                      "missed_after": tracebacks.missed_paths()}))
    """
)

# the child imports srscode wherever this process found it (an install with --target
# puts it on PYTHONPATH)
CHILD_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin:/bin",
             **({"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {})}

# case -> (solution, test, whether the rendered traceback runs through library modules)
BROKEN = {
    "syntax error in the solution": ("def f(x)\n    return x\n", "def test_a():\n    assert f(1) == 1\n", True),
    "import of a missing name": ("def f(x):\n    return x\n", "from solution import g\n\ndef test_a():\n    assert g(1) == 1\n", True),
    "syntax error in the test": ("def f(x):\n    return x\n", "def test_a b():\n    assert f(1) == 1\n", True),
    "error at import": ("raise ValueError('boom')\n", "def test_a():\n    assert f(1) == 1\n", False),
    "failing assertion": ("def f(x):\n    return x + 1\n", "def test_a():\n    assert f(1) == 1\n", False),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_cached_ranges_render_the_same_report(case, tmp_path) -> None:
    solution, test, through_library = BROKEN[case]
    (tmp_path / "solution.py").write_text(solution)
    (tmp_path / "test_solution.py").write_text("from solution import *\n" + test)
    proc = subprocess.run([sys.executable, "-c", RENDER, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ("FAILED" if case == "failing assertion" else "ERROR") in r["plain"] and "test_solution.py" in r["plain"]
    assert r["first"] == r["plain"] and r["cached"] == r["plain"]
    assert not any(str(tmp_path) in p for p in r["missed"])
    if through_library:
        assert r["missed"] and all(p.endswith(".py") for p in r["missed"]), r["missed"]
        assert r["known"] == len(r["missed"]) and r["missed_after"] == []
    else:  # pytest prunes the frames to the candidate's files: nothing to learn
        assert r["missed"] == [], r["missed"]


def test_remember_reads_only_source_files_of_imported_modules(tmp_path) -> None:
    stranger = tmp_path / "not_imported.py"
    stranger.write_text("x = 1\n")
    before = tracebacks.remember([])
    assert tracebacks.remember([str(stranger), "/etc/passwd", "/dev/zero", 42]) == before  # type: ignore[list-item]
    assert tracebacks.remember([json.decoder.__file__]) == before + 1


def test_the_worker_reports_both_traceback_patches_active() -> None:
    """Both patches fall back silently where pytest's internals differ (pytest 9.1
    renamed the formatter class); the worker's hello says which are on, and on the
    pytest this suite runs with both must be."""
    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none"))
    try:
        assert ev.isolation["traceback_patches"] == {"statement_cache": True, "entry_cap": True}
    finally:
        ev.close()


def test_a_worker_learns_a_traceback_file_once(tmp_path) -> None:
    """The first broken candidate of a worker reports the library files its traceback
    needed; later broken candidates find them known and report nothing."""
    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none", timeout_s=20, max_timeout_s=20, dedupe=False))
    try:
        svc = ev.service
        raws: list[dict] = []
        handle = svc._handle

        def spy(raw):
            raws.append(dict(raw))
            handle(raw)

        svc._handle = spy  # type: ignore[method-assign]
        test = "def test_a():\n    assert f(1) == 1\n"
        for i in range(3):
            svc.submit_code("t", i, "def f(x)\n    return x\n", test, None)
        verdicts = [v for _, v in svc.results_with_seq()]
    finally:
        ev.close()
    assert [v.status for v in verdicts] == ["error"] * 3
    assert all("SyntaxError" in v.excerpt for v in verdicts)
    reported = ['"t": "ast_paths"' in r.get("events_raw", "") for r in raws]
    assert reported == [True, False, False]


CAPPED = textwrap.dedent(
    """
    import contextlib, io, json, os, re, sys
    import pytest
    from srscode.plugins.sandbox import tracebacks

    os.chdir(sys.argv[1])
    def run():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            pytest.main(["-q", "-p", "no:cacheprovider", "--tb=short", "-s", "test_solution.py"])
        return re.sub(r"in [0-9.]+s", "", out.getvalue())

    plain = run()
    assert tracebacks.cap_entries()
    print(json.dumps({"plain": plain, "capped": run()}))
    """
)


def test_a_runaway_recursion_renders_only_the_head_and_tail_of_its_traceback(tmp_path) -> None:
    """A factorial of -1 recurses until RecursionError; pytest would render ~1,000
    entries of which the bounded failure text keeps a few."""
    (tmp_path / "solution.py").write_text("def factorial(n):\n    if n == 0:\n        return 1\n    return n * factorial(n - 1)\n")
    (tmp_path / "test_solution.py").write_text(
        "from solution import *\n\ndef test_neg():\n    assert factorial(-1) == 1\n\ndef test_ok():\n    assert factorial(3) == 6\n"
    )
    proc = subprocess.run([sys.executable, "-c", CAPPED, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    plain, capped = r["plain"], r["capped"]
    n_plain, n_capped = plain.count("solution.py:4: in factorial"), capped.count("solution.py:4: in factorial")
    assert n_plain > 500
    # 10 head entries (the test's own line among them) and 10 tail entries, the last of
    # which raised: it is rendered as "solution.py:2: in factorial" by pytest
    entries = capped.count(": in factorial") + capped.count(": in test_neg")
    assert entries == tracebacks.CAP_HEAD + tracebacks.CAP_TAIL, capped[:3000]
    assert n_capped < n_plain
    marker = [ln for ln in capped.splitlines() if "traceback entries not rendered" in ln]
    all_entries = plain.count(": in factorial") + plain.count(": in test_neg")
    assert len(marker) == 1 and f"... {all_entries - entries} traceback entries" in marker[0], marker
    # what the bounded excerpt keeps is unchanged: the failure's first and last lines
    assert capped.split("... ")[0].splitlines()[:8] == plain.splitlines()[:8]
    assert capped.rstrip().splitlines()[-3:] == plain.rstrip().splitlines()[-3:]
    assert "RecursionError" in capped and "1 failed, 1 passed" in capped and "1 failed, 1 passed" in plain


@pytest.mark.parametrize("evaluator", ["fork", "subprocess"])
def test_both_evaluators_keep_a_capped_recursion_excerpt(evaluator) -> None:
    from srscode.plugins.subprocess_evaluator import SubprocessEvaluator, SubprocessParams

    ev = (PytestXdistEvaluator(XdistParams(workers=1, cache_path="none", dedupe=False)) if evaluator == "fork"
          else SubprocessEvaluator(SubprocessParams(workers=1, cache_path="none", dedupe=False)))
    solution = "def factorial(n):\n    if n == 0:\n        return 1\n    return n * factorial(n - 1)\n"
    test = "def test_neg():\n    assert factorial(-1) == 1\n\ndef test_ok():\n    assert factorial(3) == 6\n"
    try:
        ev.service.submit_code("t", 0, solution, test, None)
        [(_, v)] = list(ev.service.results_with_seq())
    finally:
        ev.close()
    assert (v.status, v.tests_passed, v.tests_expected) == ("failed", 1, 2)
    assert "RecursionError" in v.excerpt and "traceback entries not rendered" in v.excerpt, v.excerpt
