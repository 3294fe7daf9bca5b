"""The harness shape KodCode's own runner uses, and the pytest options of every run.

The candidate becomes ``solution.py``; the task's test code runs as a pytest file beside
it with ``from solution import *`` placed before it (many KodCode test files never import
from ``solution`` themselves: without that line 130 of 635 recorded verdicts flip).
"""
from __future__ import annotations

import ast
import hashlib
import re

SOLUTION_FILE = "solution.py"
TEST_FILE = "test_solution.py"
HARNESS_PREFIX = "from solution import *\n"
# bump when the harness or the inner pytest options change: it is part of cache keys
HARNESS_VERSION = "2"  # 2: the debugging plugin stays loaded (unittest tests need its options)

# Plugins blocked inside the sandboxed session: caching/report-file machinery
# no verdict depends on (the terminal reporter stays: assertion explanations use it). Each one skipped is work the per-candidate process does not do;
# unraisableexception/threadexception run gc.collect() five times per session (~40 ms).
BLOCKED_PLUGINS = (
    "cacheprovider",
    "doctest",
    "junitxml",
    "pastebin",
    "stepwise",
    "setuponly",
    "setupplan",
    "unraisableexception",
    "threadexception",
)


def inner_pytest_args(rootdir: str, test_path: str, inifile: str, plugins: tuple[str, ...] = ()) -> list[str]:
    """Arguments of the pytest session that runs one candidate.

    ``-s``: the candidate's output goes to a pipe the worker drains (bounded), not to
    pytest's per-test capture files; ``capsys``/``capfd`` still work.
    ``--continue-on-collection-errors``: with one test file, a collection error already
    means no test runs; without the flag pytest also raises ``Interrupted`` and renders
    that exception's long traceback through its own modules (0.1-0.4 CPU-s per broken
    candidate) only to print it.
    """
    args = ["-s", "-q", "--no-header", "--tb=short", "--continue-on-collection-errors", "-c", inifile, "--rootdir", rootdir, "--basetemp", f"{rootdir}/.pytest-tmp"]
    for name in BLOCKED_PLUGINS:
        args += ["-p", f"no:{name}"]
    for name in plugins:
        args += ["-p", name]
    args.append(test_path)
    return args


INI_TEXT = "[pytest]\naddopts =\nfilterwarnings =\n"


def test_source(test_code: str) -> str:
    """The test file's text: the harness line, then the task's test code."""
    return HARNESS_PREFIX + test_code


def sha256(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


_PARAM = re.compile(r"\[.*\]$", re.S)


def base_id(nodeid: str) -> str:
    """``test_solution.py::test_x[1-2]`` -> ``test_solution.py::test_x``."""
    return _PARAM.sub("", nodeid)


def static_test_ids(test_code: str) -> list[str]:
    """Test functions a test file defines, read from its syntax tree (no execution).

    The fallback when the file cannot be collected against a reference solution: it
    gives the base id of every test function and method pytest's default rules would
    collect (``test*`` functions, ``Test*`` classes without ``__init__``, unittest
    ``TestCase`` subclasses); parametrized variants are not expanded.
    """
    try:
        tree = ast.parse(HARNESS_PREFIX + test_code)
    except (SyntaxError, ValueError):
        return []
    ids: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            ids.append(f"{TEST_FILE}::{node.name}")
        elif isinstance(node, ast.ClassDef):
            bases = {getattr(b, "attr", getattr(b, "id", "")) for b in node.bases}
            is_unittest = any("TestCase" in b for b in bases)
            has_init = any(isinstance(n, ast.FunctionDef) and n.name == "__init__" for n in node.body)
            if not is_unittest and (not node.name.startswith("Test") or has_init):
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    ids.append(f"{TEST_FILE}::{node.name}::{item.name}")
    # a later definition of the same name replaces the earlier one, as at import
    return list(dict.fromkeys(ids))


def bounded(text: str, limit: int) -> str:
    """Keep the head and the tail of ``text`` within ``limit`` characters (the tail
    holds the assertion message, the head where it happened)."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head - 40
    return f"{text[:head]}\n... [{len(text) - head - tail} characters cut] ...\n{text[-tail:]}"
