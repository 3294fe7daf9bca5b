"""Dataset source ``kodcode``: KodCode-V1 rows -> :class:`~srscode.core.types.Task`.

``load(path)`` reads

* local files in the KodCode-V1 schema: ``.json`` (a JSON list; JSON Lines written with a
  ``.json`` name, as ``datasets.Dataset.to_json`` does, are accepted too), ``.jsonl`` and
  ``.parquet``; ``path`` may be one file, a directory (searched recursively) or a glob;
* otherwise the Hugging Face hub through ``datasets.load_dataset(path, split, revision)``
  (``path`` defaults to ``hub_id``).

Every row is mapped by :class:`RowMapper`. Rows that cannot become a usable task are
skipped and counted by reason in the :class:`LoadReport` (with a few example ids), never
dropped silently; a ``test_info`` or ``trials`` entry that is malformed is dropped from
its (kept) row and counted under a reason ending in ``(row kept)``. Rows outside the
``subset``/``style`` filters are not defects: they are only counted in the log line.
"""
from __future__ import annotations

import ast
import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import DataError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import (
    ComponentSpec,
    FunctionInfo,
    LoadReport,
    RecordedTrial,
    Task,
)

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
MAX_EXAMPLES = 5

# skip reasons (the keys of LoadReport.skipped)
NOT_A_MAPPING = "row is not a mapping"
NO_ID = "missing question_id"
NO_QUESTION = "missing question"
NO_SOLUTION = "missing solution"
NO_TESTS = "missing tests"
NOT_TEXT = "{field} is not a string"
BAD_UTF8 = "text is not valid UTF-8"
DUPLICATE = "duplicate task id"
TEST_SYNTAX = "test code has a syntax error"
BAD_TEST_INFO = "malformed test_info entry (row kept)"
BAD_TRIAL = "malformed trials entry (row kept)"


class KodCodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_id: str = Field("KodCode/KodCode-V1", description="Hub dataset used when data.path is empty.")
    split: str = Field("train", description="Hub split to load.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    subset: list[str] | None = Field(None, description="Keep only rows whose `subset` is listed.")
    style: list[str] | None = Field(None, description="Keep only rows whose `style` is listed.")


# --------------------------------------------------------------------------- mapping


class _Skip(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _text(row: Mapping[str, Any], *keys: str, required: str | None = None) -> str | None:
    """The first present value of ``keys`` as valid UTF-8 text.

    Bytes are decoded as UTF-8. Strings that cannot be encoded (lone surrogates, which is
    what undecodable bytes become under ``surrogateescape``) are invalid UTF-8.
    ``required`` is the skip reason when the value is absent or blank.
    """
    value = None
    field = keys[0]
    for key in keys:
        value = row.get(key)
        if value is not None:
            field = key
            break
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _Skip(required)
        return None
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise _Skip(BAD_UTF8) from None
    if not isinstance(value, str):
        raise _Skip(NOT_TEXT.format(field=field))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Skip(BAD_UTF8) from None
    if required and not value.strip():
        raise _Skip(required)
    return value


def decode_code(value: str) -> str:
    """KodCode stores some trial code as a Python string literal (it starts with a
    quote); decode those. Code that merely starts with a docstring is not one literal
    expression, so ``literal_eval`` fails and the text is kept as it is."""
    stripped = value.strip()
    if stripped[:1] in ("'", '"'):
        try:
            decoded = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
        if isinstance(decoded, str):
            return decoded
    return value


def _maybe_json(value: Any) -> Any:
    """Some exports store nested fields as JSON text; parse those."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _valid_str(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RowMapper:
    """Maps KodCode-schema rows to tasks, keeping the counts of what it skipped."""

    def __init__(
        self,
        source: str = "kodcode",
        subset: Iterable[str] | None = None,
        style: Iterable[str] | None = None,
    ):
        self.source = source
        self.subset = set(subset) if subset is not None else None
        self.style = set(style) if style is not None else None
        self.tasks: list[Task] = []
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.filtered = 0
        self.rows = 0
        self._seen: set[str] = set()

    def _count(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(example)

    def add(self, row: Any, where: str) -> Task | None:
        """Map one row; ``where`` (file:line, row index) names it when it has no id."""
        self.rows += 1
        if not isinstance(row, Mapping):
            self._count(NOT_A_MAPPING, where)
            return None
        raw_id = row.get("question_id")
        ident = str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else where
        try:
            if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool) or not ident.strip():
                raise _Skip(NO_ID)
            if not _valid_str(ident):
                ident = where  # the id cannot be shown as text either
                raise _Skip(BAD_UTF8)
            if not self._keep(row):
                self.filtered += 1
                return None
            task = self._task(ident, row)
        except _Skip as skip:
            self._count(skip.reason, ident)
            return None
        if task.task_id in self._seen:  # keep the first
            self._count(DUPLICATE, task.task_id)
            return None
        self._seen.add(task.task_id)
        self.tasks.append(task)
        return task

    def _keep(self, row: Mapping[str, Any]) -> bool:
        if self.subset is not None and row.get("subset") not in self.subset:
            return False
        if self.style is not None and row.get("style") not in self.style:
            return False
        return True

    def _task(self, task_id: str, row: Mapping[str, Any]) -> Task:
        question = _text(row, "question", required=NO_QUESTION)
        solution = _text(row, "solution", required=NO_SOLUTION)
        # the HF dataset and the shared files call it test_code; accept `test` too
        test_code = _text(row, "test_code", "test", required=NO_TESTS)
        try:
            ast.parse(test_code)
        except (SyntaxError, ValueError):  # ValueError: NUL bytes in the source
            raise _Skip(TEST_SYNTAX) from None
        difficulty = row.get("gpt_difficulty")
        pct = row.get("gpt_pass_percentage")
        metadata = _maybe_json(row.get("metadata"))
        metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
        for key in ("style", "subset"):
            if row.get(key) is not None:
                metadata[key] = row[key]
        return Task(
            task_id=task_id,
            question=question,
            solution=solution,
            test_code=test_code,
            test_info=self._test_info(task_id, row.get("test_info")),
            difficulty=difficulty if isinstance(difficulty, str) else None,
            pass_percentage=float(pct) if isinstance(pct, (int, float)) and not isinstance(pct, bool) else None,
            source=self.source,
            trials=self._trials(task_id, row.get("trials")),
            metadata=metadata,
        )

    def _test_info(self, task_id: str, value: Any) -> tuple[FunctionInfo, ...]:
        value = _maybe_json(value)
        if value is None:
            return ()
        if isinstance(value, Mapping):  # a single entry not wrapped in a list
            value = [value]
        if not isinstance(value, (list, tuple)):
            self._count(BAD_TEST_INFO, task_id)
            return ()
        out = []
        for entry in value:
            info = self._function_info(entry)
            if info is None:
                self._count(BAD_TEST_INFO, task_id)
            else:
                out.append(info)
        return tuple(out)

    @staticmethod
    def _function_info(entry: Any) -> FunctionInfo | None:
        if not isinstance(entry, Mapping):
            return None
        name = entry.get("function_name")
        if not _valid_str(name) or not name.strip().isidentifier():
            return None
        fields = {}
        for key in ("parameter_list", "function_declaration", "docstring"):
            v = entry.get(key)
            if v is None:
                v = ""
            if not _valid_str(v):
                return None
            fields[key] = v
        declaration = fields["function_declaration"].strip()
        if not declaration and fields["parameter_list"].strip():
            declaration = f"def {name.strip()}{fields['parameter_list'].strip()}:"
        return FunctionInfo(
            name=name.strip(),
            parameters=fields["parameter_list"],
            declaration=declaration,
            docstring=fields["docstring"],
        )

    def _trials(self, task_id: str, value: Any) -> tuple[RecordedTrial, ...]:
        value = _maybe_json(value)
        if value is None:
            return ()
        if isinstance(value, (list, tuple)):
            value = {f"trial_{i}": v for i, v in enumerate(value)}
        if not isinstance(value, Mapping):
            self._count(BAD_TRIAL, task_id)
            return ()
        out = []
        for key, trial in value.items():
            if trial is None:  # parquet/arrow: a struct field this row does not have
                continue
            code = trial.get("solution_code") if isinstance(trial, Mapping) else None
            result = trial.get("test_result") if isinstance(trial, Mapping) else None
            if not _valid_str(code) or not _valid_str(result if result is not None else ""):
                self._count(BAD_TRIAL, task_id)
                continue
            out.append(RecordedTrial(key=str(key), solution_code=decode_code(code), result=result or ""))
        return tuple(out)

    def report(self) -> LoadReport:
        return LoadReport(tasks=list(self.tasks), skipped=dict(self.skipped), examples=dict(self.examples))


def map_rows(rows: Iterable[tuple[str, Any]], source: str = "kodcode", **filters: Any) -> LoadReport:
    """Map ``(where, row)`` pairs to a report; the shared entry point for other sources."""
    mapper = RowMapper(source=source, **filters)
    for where, row in rows:
        mapper.add(row, where)
    return mapper.report()


# --------------------------------------------------------------------------- reading


def _decode(data: bytes) -> str:
    # undecodable bytes become lone surrogates; the rows holding them are skipped as
    # invalid UTF-8 instead of failing the whole file
    return data.decode("utf-8", errors="surrogateescape")


def iter_json_lines(data: bytes, name: str) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(_decode(data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{name}:{lineno}", json.loads(line)
        except ValueError as exc:
            raise DataError(
                f"dataset file {name}, line {lineno}, is not valid JSON ({exc}). "
                "Fix or remove that line; each line of a .jsonl file must be one JSON object."
            ) from None


def iter_json(data: bytes, name: str) -> Iterator[tuple[str, Any]]:
    text = _decode(data)
    try:
        rows = json.loads(text)
    except ValueError as exc:
        if "Extra data" in str(exc):  # JSON Lines under a .json name (datasets' to_json)
            yield from iter_json_lines(data, name)
            return
        raise DataError(f"dataset file {name} is not valid JSON ({exc}).") from None
    if not isinstance(rows, list):
        raise DataError(
            f"dataset file {name} holds a JSON {type(rows).__name__}, expected a list of "
            "KodCode rows (or use .jsonl with one row per line)."
        )
    for i, row in enumerate(rows):
        yield f"{name}[{i}]", row


def iter_dataset(ds: Any, name: str) -> Iterator[tuple[str, Any]]:
    """Rows of a ``datasets.Dataset``, read in batches (much faster than row access)."""
    i = 0
    for batch in ds.iter(batch_size=1024):
        columns = list(batch)
        size = len(batch[columns[0]]) if columns else 0
        for j in range(size):
            yield f"{name}[{i}]", {c: batch[c][j] for c in columns}
            i += 1


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"dataset file {path} does not exist.") from None
    except OSError as exc:
        raise DataError(f"dataset file {path} cannot be read: {exc.strerror or exc}.") from None


def iter_file(path: Path) -> Iterator[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from iter_json_lines(_read_bytes(path), str(path))
    elif suffix == ".json":
        yield from iter_json(_read_bytes(path), str(path))
    elif suffix == ".parquet":
        import datasets  # heavy: only when a parquet file is read

        if not os.access(path, os.R_OK):
            raise DataError(f"dataset file {path} cannot be read: permission denied.")
        try:
            ds = datasets.Dataset.from_parquet(str(path))
        except Exception as exc:  # arrow raises many types for a damaged file
            raise DataError(f"dataset file {path} is not a readable parquet file ({type(exc).__name__}: {exc}).") from None
        yield from iter_dataset(ds, str(path))
    else:
        raise DataError(
            f"dataset file {path} has an unsupported type {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(DATA_SUFFIXES)}."
        )


def _is_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _looks_local(path: str) -> bool:
    """A path that cannot be a hub id ``owner/name`` (or a bare ``name``)."""
    p = Path(path)
    return (
        p.is_absolute()
        or path.startswith((".", "~"))
        or p.suffix.lower() in DATA_SUFFIXES
        or path.count("/") > 1
        or os.sep != "/" and os.sep in path
    )


def local_files(path: str) -> list[Path] | None:
    """The data files ``path`` names, or None when it should be read from the hub."""
    expanded = os.path.expanduser(path)
    if _is_glob(expanded):
        files = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"dataset path {path!r} is a glob that matches no files.")
        return files
    p = Path(expanded)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise DataError(
                f"dataset directory {p} holds no {'/'.join(DATA_SUFFIXES)} files."
            )
        return files
    if p.exists():
        return [p]
    if _looks_local(path):
        raise DataError(
            f"dataset file {p} does not exist. data.path must name an existing local "
            f".json/.jsonl/.parquet file, directory or glob, or a hub dataset id like KodCode/KodCode-V1."
        )
    return None


def iter_local(files: Iterable[Path]) -> Iterator[tuple[str, Any]]:
    for f in files:
        yield from iter_file(f)


# --------------------------------------------------------------------------- source


class KodCodeSource:
    """The ``kodcode`` dataset source."""

    def __init__(self, params: KodCodeParams | None = None, source_name: str = "kodcode"):
        self.params = params or KodCodeParams()
        self.source_name = source_name

    def _mapper(self) -> RowMapper:
        return RowMapper(source=self.source_name, subset=self.params.subset, style=self.params.style)

    def load(self, path: str | None) -> LoadReport:
        target = path or self.params.hub_id
        files = local_files(target)
        rows = iter_local(files) if files is not None else self._hub_rows(target)
        mapper = self._mapper()
        for where, row in rows:
            mapper.add(row, where)
        log.info(
            "%s: %d tasks from %d rows of %s (%d outside the subset/style filters, skipped: %s)",
            self.source_name, len(mapper.tasks), mapper.rows, target, mapper.filtered,
            dict(mapper.skipped) or "none",
        )
        return mapper.report()

    def _hub_rows(self, hub_id: str) -> Iterator[tuple[str, Any]]:
        import datasets  # heavy: only when the hub is used

        p = self.params
        try:
            ds = datasets.load_dataset(hub_id, split=p.split, revision=p.revision)
        except Exception as exc:  # offline, unknown id, bad split: all user-actionable
            raise DataError(
                f"cannot load hub dataset {hub_id!r} (split {p.split!r}, revision {p.revision!r}): "
                f"{type(exc).__name__}: {exc}. Check the id and the network, or point data.path "
                "at local .json/.jsonl/.parquet files in the KodCode schema."
            ) from None
        return iter_dataset(ds, f"{hub_id}:{p.split}")


@hookimpl
def srscode_datasets():
    yield ComponentSpec(
        "kodcode",
        factory=lambda params, ctx: KodCodeSource(params),
        params=KodCodeParams,
        summary="KodCode-V1 from the hub or local .json/.jsonl/.parquet files",
    )
