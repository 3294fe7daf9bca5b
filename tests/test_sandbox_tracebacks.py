"""The worker's cache of library files' statement ranges (``sandbox/tracebacks.py``):
pytest's output is unchanged, the worker learns a file once, and a child cannot make the
worker read files it did not import."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import _pytest.python
import pytest
from _pytest._code.source import get_statement_startend2

from srscode.plugins.evaluate.sandbox import tracebacks
from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams


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
    from srscode.plugins.evaluate.sandbox import tracebacks

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
    from srscode.plugins.evaluate.sandbox import tracebacks

    os.chdir(sys.argv[1])
    def run():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            pytest.main(["-q", "-p", "no:cacheprovider", "--tb=short", "-s", "test_solution.py"])
        return re.sub(r"in [0-9.]+s", "", out.getvalue())

    plain = run()
    assert tracebacks.cap_entries()
    print(json.dumps({"plain": plain, "capped": run(), "recursion_limit": sys.getrecursionlimit()}))
    """
)

ENTRY = re.compile(r"^\S+\.py:\d+: in \w+$")  # the first line of an entry under --tb=short
MARKER = "traceback entries not rendered (srscode sandbox)"


def render_capped(tmp_path, solution: str, test: str) -> dict:
    """pytest's own rendering ("plain") and the capped one, of one candidate, in a child."""
    (tmp_path / "solution.py").write_text(solution)
    (tmp_path / "test_solution.py").write_text("from solution import *\n\n" + test)
    proc = subprocess.run([sys.executable, "-c", CAPPED, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def split_at_marker(capped: str) -> tuple[list[str], int, list[str]]:
    """The capped rendering's lines before the one marker line, its count, the lines after."""
    lines = capped.splitlines()
    at = [i for i, ln in enumerate(lines) if MARKER in ln]
    assert len(at) == 1, capped[:3000]
    m = re.fullmatch(r"\.\.\. (\d+) " + re.escape(MARKER) + r" \.\.\.", lines[at[0]].strip())
    assert m, lines[at[0]]
    return lines[: at[0]], int(m.group(1)), lines[at[0] + 1 :]


def n_entries(text: str) -> int:
    return sum(1 for ln in text.splitlines() if ENTRY.match(ln))


HEAD, TAIL = tracebacks.CAP_HEAD, tracebacks.CAP_TAIL
DEEP = "def deep(n):\n    if n == 0:\n        raise ValueError('bottom')\n    return deep(n - 1)\n"


@pytest.mark.parametrize("total", [HEAD + TAIL, HEAD + TAIL + 1, 62])
def test_a_deep_traceback_renders_only_its_head_and_tail(total, tmp_path) -> None:
    """A traceback of a known length, whatever pytest does with it: the test's own entry
    and ``deep(total - 2)`` down to ``deep(0)``, which raises a plain ValueError (pytest 9.2
    shortens a RecursionError's traceback itself, not this one's). Up to
    CAP_HEAD + CAP_TAIL entries render exactly as pytest renders them; one more and the
    cap engages, renders exactly CAP_HEAD + CAP_TAIL and says how many it left out."""
    r = render_capped(tmp_path, DEEP, f"def test_deep():\n    assert deep({total - 2}) == 1\n\ndef test_ok():\n    assert 1\n")
    plain, capped = r["plain"], r["capped"]
    assert "ValueError: bottom" in capped and "1 failed, 1 passed" in capped and "1 failed, 1 passed" in plain
    if total <= HEAD + TAIL:
        assert capped == plain and MARKER not in capped
        assert n_entries(plain) == total, plain  # the case really has that many entries
        return
    head, left_out, tail = split_at_marker(capped)
    assert n_entries(capped) == HEAD + TAIL and n_entries("\n".join(head)) == HEAD, capped[:3000]
    assert left_out == total - HEAD - TAIL
    if n_entries(plain) != total:
        pytest.skip(f"pytest {pytest.__version__} itself shortens a {total}-entry traceback of a plain exception "
                    f"(it rendered {n_entries(plain)} entries), so there is no full rendering to compare the "
                    "capped head and tail with; the cap's entry count and marker were checked above")
    # what is rendered is pytest's rendering: its first lines and its last lines, unchanged
    lines = plain.splitlines()
    assert head == lines[: len(head)]
    assert tail == lines[len(lines) - len(tail) :]
    assert len(head) + 1 + len(tail) < len(lines)


def test_a_runaway_recursion_renders_only_the_head_and_tail_of_its_traceback(tmp_path) -> None:
    """A factorial of -1 recurses until RecursionError: a traceback about as deep as the
    recursion limit, of which the bounded failure text keeps a few entries. The cap cuts
    it to CAP_HEAD + CAP_TAIL entries whatever pytest would render (pytest 9.0 rendered all
    ~1,000 entries; 9.2 renders 20 of a RecursionError's itself)."""
    r = render_capped(
        tmp_path, "def factorial(n):\n    if n == 0:\n        return 1\n    return n * factorial(n - 1)\n",
        "def test_neg():\n    assert factorial(-1) == 1\n\ndef test_ok():\n    assert factorial(3) == 6\n",
    )
    plain, capped = r["plain"], r["capped"]
    assert "RecursionError" in capped and "1 failed, 1 passed" in capped and "1 failed, 1 passed" in plain
    head, left_out, tail = split_at_marker(capped)
    assert n_entries(capped) == HEAD + TAIL and n_entries("\n".join(head)) == HEAD, capped[:3000]
    # every frame of the recursion is an entry: the stack held the limit's worth of frames,
    # pytest's own frames (filtered out) among them
    assert r["recursion_limit"] // 2 < left_out + HEAD + TAIL <= r["recursion_limit"]
    lines = plain.splitlines()
    # the head is pytest's head, line for line
    assert head == lines[: len(head)]
    # the tail is pytest's last entries and the error, line for line, wherever pytest puts
    # its own notes (pytest 9.2 adds a "Recursion error detected" note after the error)
    error = [i for i, ln in enumerate(tail) if ln.startswith("E   RecursionError")]
    assert len(error) == 1, tail
    tail_entries = tail[: error[0] + 1]
    end = lines.index(tail_entries[-1]) + 1
    assert lines[end - len(tail_entries) : end] == tail_entries
    if n_entries(plain) > HEAD + TAIL:  # pytest rendered every entry (before 9.2): the cap is shorter
        assert left_out == n_entries(plain) - HEAD - TAIL
        assert len(capped.splitlines()) < len(lines)


@pytest.mark.parametrize("evaluator", ["fork", "subprocess"])
def test_both_evaluators_keep_a_capped_recursion_excerpt(evaluator) -> None:
    from srscode.plugins.evaluate.subprocess_per_candidate import SubprocessEvaluator, SubprocessParams

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
