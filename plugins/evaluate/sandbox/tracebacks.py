"""Statement ranges of library files, computed once per worker instead of once per candidate.

pytest renders each traceback entry by parsing the entry's whole source file
(``_pytest._code.source.getstatementrange_ast``) and walking every node of the tree
(``get_statement_startend2``) to find the statement around the line. The traceback of a
collection error (a solution that does not compile, a test that imports a name the
solution lacks) runs through pytest's and importlib's own modules, so each such candidate
parsed those same large files again in its forked process: 0.3-0.5 CPU-s per candidate,
48 of the 751 KodCode candidates and a fifth of the evaluator's CPU time
(docs/benchmarks.md, "Evaluator throughput").

The worker installs :func:`install` before it forks. A child whose traceback needed a
library file the worker does not know yet reports the file's path with its results; the
worker then computes that file's statement start lines once (:func:`remember`), and every
later child inherits them. So only the first such candidate of a worker pays for the
parse. The worker accepts only the source files of modules it imported itself (a hostile
child cannot make it read anything else), and never files under the candidate's
directory (``solution.py`` and the test file change with every candidate). If pytest's
internals are not the ones this expects, nothing is patched and pytest's own (slower)
path stays in use.

:func:`cap_entries` bounds the other cost: a test that recurses without end (a
factorial of -1) fails with a traceback of ~1,000 entries, and pytest renders every one
(0.3-1 CPU-s per such candidate here) although the failure text a verdict keeps is cut to
its head and tail (``collector.TEXT_LIMIT``). Past ``CAP_HEAD + CAP_TAIL`` entries, only
the first ``CAP_HEAD`` and last ``CAP_TAIL`` are rendered, with a line saying how many
were left out; shorter tracebacks render exactly as pytest renders them.
"""
from __future__ import annotations

import ast
import os
import warnings
from typing import Any

__all__ = ["install", "cap_entries", "remember", "missed_paths", "statement_starts"]


class _Starts:
    """Stands in for a module's AST in pytest's per-report ``astcache``: it holds the one
    thing pytest reads from that tree, the sorted statement start lines."""

    __slots__ = ("values",)

    def __init__(self, values: list[int]) -> None:
        self.values = values


_KNOWN: dict[str, _Starts] = {}  # library file path -> its statement starts
_MISSED: set[str] = set()  # library files a traceback needed that are not known yet
_STATE: dict[str, Any] = {"installed": False, "private": ()}


def statement_starts(tree: ast.AST) -> list[int]:
    """The sorted 0-based line numbers ``get_statement_startend2`` collects: every
    statement and except handler, the decorators of classes and functions, and the line
    before a ``finally``/``else`` block (pytest treats those blocks as statements of their
    own). Kept in step with pytest 8-9's ``_pytest._code.source`` (tests compare the two)."""
    values: list[int] = []
    for x in ast.walk(tree):
        if isinstance(x, (ast.stmt, ast.ExceptHandler)):
            if isinstance(x, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                values.extend(d.lineno - 1 for d in x.decorator_list)
            values.append(x.lineno - 1)
            for name in ("finalbody", "orelse"):
                val = getattr(x, name, None)
                if val:
                    values.append(val[0].lineno - 1 - 1)
    values.sort()
    return values


def _private(p: str) -> bool:
    return any(p == d or p.startswith(d.rstrip(os.sep) + os.sep) for d in _STATE["private"])


def _eligible(path: Any) -> str | None:
    if not isinstance(path, os.PathLike):
        return None  # "<frozen importlib._bootstrap>", "<string>": no file to parse
    p = os.fspath(path)
    return None if _private(p) else p


def _pytest_formatter(field: str) -> tuple[Any, Any] | None:
    """``_pytest._code.code`` and its traceback formatter class (``ExceptionInfoFormatter``
    since pytest 9.1, ``FormattedExcinfo`` before), when that class is the dataclass with
    ``field`` these patches expect; None otherwise."""
    try:
        import _pytest._code.code as code
    except ImportError:
        return None
    cls = getattr(code, "ExceptionInfoFormatter", None) or getattr(code, "FormattedExcinfo", None)
    if cls is None or field not in getattr(cls, "__dataclass_fields__", {}):
        return None
    return code, cls


def install(private_dirs: tuple[str, ...]) -> bool:
    """Patch pytest's traceback source lookup; ``private_dirs`` (the candidate's
    directory) are never cached. Returns whether the patch is active."""
    if _STATE["installed"]:
        _STATE["private"] = tuple(private_dirs)
        return True
    found = _pytest_formatter("astcache")
    try:
        from bisect import bisect_right

        import _pytest._code.source as source

        if found is None:
            return False
        formatter = found[1]
        original_startend = source.get_statement_startend2
        original_entrysource = formatter._getentrysource
        if not callable(original_startend):
            return False
    except (ImportError, AttributeError):
        return False

    def get_statement_startend2(lineno: int, node: Any) -> tuple[int, int | None]:
        if not isinstance(node, _Starts):
            return original_startend(lineno, node)
        values = node.values
        i = bisect_right(values, lineno)
        return values[i - 1], (None if i >= len(values) else values[i])

    def _getentrysource(self: Any, entry: Any) -> Any:
        try:
            path = _eligible(entry.frame.code.path)
        except Exception:
            path = None
        if path is not None:
            key = entry.frame.code.path
            if key not in self.astcache:
                known = _KNOWN.get(path)
                if known is not None:
                    self.astcache[key] = known
                else:
                    _MISSED.add(path)
        return original_entrysource(self, entry)

    source.get_statement_startend2 = get_statement_startend2
    formatter._getentrysource = _getentrysource
    _STATE.update(installed=True, private=tuple(private_dirs))
    return True


# entries of one traceback that are rendered: the first ones show where the test called
# into the solution, the last ones where it failed; the bounded text keeps no more
CAP_HEAD, CAP_TAIL = 10, 10


def cap_entries(head: int = CAP_HEAD, tail: int = CAP_TAIL) -> bool:
    """Render at most ``head + tail`` entries of a traceback (after pytest's own
    filtering); returns whether the patch is active."""
    if _STATE.get("capped"):
        return True
    found = _pytest_formatter("tbfilter")
    if found is None:
        return False
    code, formatter = found
    try:
        original = formatter.repr_traceback
        filter_traceback = code.filter_excinfo_traceback
        marker_entry = code.ReprEntryNative
        traceback_type = code.Traceback
    except AttributeError:
        return False

    def repr_traceback(self: Any, excinfo: Any) -> Any:
        inner = self.tbfilter
        cut: list[int] = []

        def capped(ei: Any) -> Any:
            tb = filter_traceback(inner, ei)
            if len(tb) > head + tail:
                cut.append(len(tb) - head - tail)
                tb = traceback_type([*tb[:head], *tb[len(tb) - tail :]])
            return tb

        self.tbfilter = capped
        try:
            rep = original(self, excinfo)
        finally:
            self.tbfilter = inner
        if cut and len(rep.reprentries) > head:
            rep.reprentries.insert(head, marker_entry([f"... {cut[0]} traceback entries not rendered (srscode sandbox) ...\n"]))
        return rep

    formatter.repr_traceback = repr_traceback
    _STATE["capped"] = True
    return True


def missed_paths() -> list[str]:
    return sorted(_MISSED)


MAX_SOURCE_BYTES = 4 * 1024 * 1024


def _module_files() -> set[str]:
    import sys

    out = set()
    for mod in list(sys.modules.values()):
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and f.endswith(".py"):
            out.add(f)
    return out


def remember(paths: list[str]) -> int:
    """Compute, in this process (the worker), the statement starts of those ``paths``
    that are source files of modules it imported; returns how many files are known."""
    wanted = [p for p in paths if isinstance(p, str) and p not in _KNOWN and not _private(p)]
    allowed = _module_files() if wanted else set()
    for p in wanted:
        if p not in allowed:
            continue
        try:
            if os.path.getsize(p) > MAX_SOURCE_BYTES:
                continue
            with open(p, "rb") as fh:
                data = fh.read(MAX_SOURCE_BYTES + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(data, "source", "exec")
        except (OSError, SyntaxError, ValueError):
            continue
        _KNOWN[p] = _Starts(statement_starts(tree))
    _MISSED.difference_update(_KNOWN)
    return len(_KNOWN)
