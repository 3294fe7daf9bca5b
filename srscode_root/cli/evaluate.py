"""``srscode evaluate`` and ``srscode check-data``.

``evaluate IN.jsonl [-o OUT.jsonl] [--workers N] [--timeout S] [--evaluator NAME]``: each
input line is ``{"id", "solution", "test"}`` (optionally ``task_id``, and ``reference``,
whose runtime scales the timeout and whose collection gives the expected test ids); each
output line is that id's verdict, in input order. A line that is not valid gets an
``error`` verdict naming the problem and the run goes on. The evaluator is built through
the registry, like a run's, so a third-party one works too.

``check-data CONFIG``: runs every task's reference solution through the configured
evaluator, records expected ids and reference runtimes in the reference cache (which
the evaluators read for timeouts), and writes a summary: counts by status, slowest
references, failing references (tasks to exclude from training).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from srscode.core.errors import ConfigError, DataError, StageError

# (line id, job or None, problem) of one non-blank input line
ParsedLine = tuple[str, dict[str, Any] | None, str]


# --------------------------------------------------------------------------- evaluate


def verdict_record(line_id: str, v: Any) -> dict[str, Any]:
    return {
        "id": line_id,
        "task_id": v.task_id,
        "status": v.status,
        "passed": v.passed,
        "tests_passed": v.tests_passed,
        "tests_expected": v.tests_expected,
        "pass_rate": round(v.pass_rate, 6),
        "duration_s": v.duration_s,
        "excerpt": v.excerpt,
        "outcomes": dict(v.outcomes),
    }


def error_record(line_id: str, problem: str) -> dict[str, Any]:
    return {
        "id": line_id,
        "task_id": None,
        "status": "error",
        "passed": False,
        "tests_passed": 0,
        "tests_expected": 0,
        "pass_rate": 0.0,
        "duration_s": 0.0,
        "excerpt": problem,
        "outcomes": {},
    }


def parse_line(text: str, lineno: int, seen: dict[str, int]) -> ParsedLine:
    """(id, job or None, problem) for one input line."""
    fallback = f"line {lineno}"
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return fallback, None, f"line {lineno}: not valid JSON ({exc})"
    if not isinstance(obj, dict):
        return fallback, None, f"line {lineno}: expected a JSON object, got {type(obj).__name__}"
    raw_id = obj.get("id")
    if raw_id is None or isinstance(raw_id, (dict, list, bool)):
        return fallback, None, f"line {lineno}: missing or invalid 'id' (a string or number is required)"
    line_id = str(raw_id)
    if line_id in seen:
        return line_id, None, f"line {lineno}: id {line_id!r} was already used on line {seen[line_id]}"
    seen[line_id] = lineno
    for key in ("solution", "test"):
        if not isinstance(obj.get(key), str):
            return line_id, None, f"line {lineno}: {key!r} must be a string (got {type(obj.get(key)).__name__})"
    if not obj["test"].strip():
        return line_id, None, f"line {lineno}: 'test' is empty"
    ref = obj.get("reference")
    if ref is not None and not isinstance(ref, str):
        return line_id, None, f"line {lineno}: 'reference' must be a string or null"
    task_id = obj.get("task_id")
    job = {
        "solution": obj["solution"],
        "test": obj["test"],
        "reference": ref or None,
        "task_id": str(task_id) if task_id is not None else line_id,
    }
    return line_id, job, ""


def _iter_lines(path: str) -> Iterator[str]:
    if path == "-":
        yield from sys.stdin
        return
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"evaluate: input file {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"evaluate: input file {path} cannot be read: {exc}") from None
    with fh:
        yield from fh


def _parsed_lines(path: str) -> Iterator[ParsedLine]:
    seen: dict[str, int] = {}
    for lineno, text in enumerate(_iter_lines(path), start=1):
        if text.strip():
            yield parse_line(text, lineno, seen)


def make_evaluator(name: str, params: dict[str, Any]) -> Any:
    """The evaluator registered as ``name``, built as a run builds it but with no run
    (``ctx`` is None); plugin modules import light, so this stays cheap."""
    from srscode.core.registry import make_plugin_manager

    return make_plugin_manager().build("evaluator", name, params, None, "--evaluator", params_path="evaluator")


def evaluator_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.workers is not None:
        params["workers"] = args.workers if args.workers == "auto" else _positive_int(args.workers, "--workers")
    if args.timeout is not None:
        if args.timeout <= 0:
            raise ConfigError(f"--timeout must be positive, got {args.timeout}")
        params["timeout_s"] = args.timeout
        params["max_timeout_s"] = args.timeout
        params["min_timeout_s"] = min(2.0, args.timeout)
    if getattr(args, "cache", None):
        params["cache_path"] = args.cache
    if getattr(args, "no_dedupe", False):
        params["dedupe"] = False
    return params


def _positive_int(text: str, flag: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"{flag} must be 'auto' or a positive number, got {text!r}") from None
    if n < 1:
        raise ConfigError(f"{flag} must be 'auto' or a positive number, got {text!r}")
    return n


class _InOrderWriter:
    """Writes each line's record as soon as every earlier line's is out."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.written = 0
        self.counts: Counter[str] = Counter()
        self._pending: dict[int, dict[str, Any]] = {}

    def put(self, pos: int, record: dict[str, Any]) -> None:
        self._pending[pos] = record
        while self.written in self._pending:
            rec = self._pending.pop(self.written)
            self.counts[rec["status"]] += 1
            self.out.write(json.dumps(rec) + "\n")
            self.written += 1
        self.out.flush()


def _through_service(service: Any, lines: Iterable[ParsedLine], writer: _InOrderWriter) -> int | None:
    """Submit each line as it is read (runs start while the file is still being read);
    returns how many lines got a copy of an identical run's verdict (None: dedupe off)."""
    at: dict[int, tuple[int, str]] = {}  # service seq -> (input position, line id)
    for pos, (line_id, job, problem) in enumerate(lines):
        if job is None:
            writer.put(pos, error_record(line_id, problem))
            continue
        at[service.submit_code(job["task_id"], pos, job["solution"], job["test"], job["reference"])] = (pos, line_id)
    for seq, v in service.results_with_seq():
        pos, line_id = at[seq]
        writer.put(pos, verdict_record(line_id, v))
    return service.reused if service.dedupe else None


def _in_one_batch(evaluator: Any, name: str, lines: Iterable[ParsedLine], writer: _InOrderWriter) -> None:
    """Any other :class:`~srscode.core.types.Evaluator`: one ``evaluate`` call over every
    valid line, each line its own task (lines may share a task_id and differ in test)."""
    from srscode.core.types import Candidate, Task

    tasks: dict[str, Task] = {}
    cands: list[Candidate] = []
    where: list[tuple[int, str, str]] = []  # (input position, line id, task_id) per candidate
    for pos, (line_id, job, problem) in enumerate(lines):
        if job is None:
            writer.put(pos, error_record(line_id, problem))
            continue
        key = f"line {pos}"
        tasks[key] = Task(key, "", job["reference"] or "", job["test"])
        cands.append(Candidate(key, 0, job["solution"], job["solution"]))
        where.append((pos, line_id, job["task_id"]))
    verdicts = evaluator.evaluate(tasks, cands) if cands else []
    if len(verdicts) != len(cands):
        raise StageError(f"evaluator {name!r} returned {len(verdicts)} verdicts for {len(cands)} candidates")
    for (pos, line_id, task_id), v in zip(where, verdicts):
        writer.put(pos, verdict_record(line_id, replace(v, task_id=task_id)))


def run_evaluate(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Judge the input's lines; write verdict lines in input order."""
    from srscode.plugins.evaluate.sandbox.service import ServiceEvaluator

    evaluator = make_evaluator(args.evaluator, evaluator_params(args))
    close_out = False
    if out is None:
        if args.output and args.output != "-":
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            out = open(args.output, "w", encoding="utf-8")
            close_out = True
        else:
            out = sys.stdout
    t0 = time.monotonic()
    writer = _InOrderWriter(out)
    try:
        lines = _parsed_lines(args.input)
        if isinstance(evaluator, ServiceEvaluator):
            shared = _through_service(evaluator.service, lines, writer)
        else:
            shared = None
            _in_one_batch(evaluator, args.evaluator, lines, writer)
    finally:
        close = getattr(evaluator, "close", None)
        if close is not None:
            close()
        if close_out:
            out.close()
    elapsed = time.monotonic() - t0
    n_lines, counts = writer.written, writer.counts
    if not getattr(args, "quiet", False):
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        rate = n_lines / elapsed if elapsed > 0 else 0.0
        copies = f"; {shared} line(s) identical to an earlier one or to the reference got its verdict (--no-dedupe runs them)" if shared else ""
        print(f"evaluated {n_lines} line(s) in {elapsed:.1f} s ({rate:.1f}/s): {summary or 'nothing'}{copies}", file=sys.stderr)
    return 0


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="judge a JSONL file of solutions against their pytest tests",
        description=(
            "Each input line is {\"id\", \"solution\", \"test\"} (optionally \"task_id\" and "
            "\"reference\": the reference solution, whose run gives the expected test ids and "
            "scales the timeout). Each output line is that id's verdict, in input order."
        ),
    )
    p.add_argument("input", help="input JSONL file ('-' for stdin)")
    p.add_argument("-o", "--output", help="write verdicts here (default: stdout)")
    p.add_argument("--workers", default=None, help="parallel candidates: 'auto' (default) or a number")
    p.add_argument("--timeout", type=float, default=None, help="per-candidate timeout in seconds (default 10; with a reference, scaled from its runtime but never above this)")
    p.add_argument("--evaluator", default="pytest-xdist", help="a registered evaluator's name (`srscode plugins` lists them; default pytest-xdist)")
    p.add_argument("--cache", default=None, help="reference cache file (default ~/.cache/srscode/reference-cache.json; 'none' = in memory)")
    p.add_argument("--no-dedupe", action="store_true", help="run every line, also lines whose solution, test and reference equal an earlier line's (by default those get a copy of its verdict)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    p.set_defaults(func=run_evaluate)
    return p


# --------------------------------------------------------------------------- check-data


def run_check_data(args: argparse.Namespace) -> int:
    from srscode.core.config import load_config
    from srscode.core.context import StageContext
    from srscode.core.registry import make_plugin_manager
    from srscode.plugins.evaluate.sandbox.service import ServiceEvaluator

    cfg, _ = load_config(args.config, getattr(args, "set", None) or ())
    registry = make_plugin_manager()
    ctx = StageContext(config=cfg, registry=registry, quiet=True)
    source = registry.build("dataset", cfg.data.source, cfg.data.params, ctx, "data.source")
    report = source.load(cfg.data.path)
    tasks = list(report.tasks)
    if args.limit:
        tasks = tasks[: args.limit]
    params = dict(cfg.stages.evaluator.params or {})
    if args.workers is not None:
        params["workers"] = args.workers if args.workers == "auto" else _positive_int(args.workers, "--workers")
    if args.cache:
        params["cache_path"] = args.cache
    evaluator = registry.build("evaluator", cfg.stages.evaluator.name, params, ctx, "stages.evaluator")
    t0 = time.monotonic()
    results: dict[str, Any] = {}
    cache_path = None
    isolation: dict[str, Any] = {}
    try:
        if isinstance(evaluator, ServiceEvaluator):  # learn each file's ids from its reference
            service = evaluator.service
            cache_path = str(service.cache.path) if service.cache.path else None
            lock = threading.Lock()

            def record(task_id: str) -> Any:
                def cb(_key: str, exp: Any) -> None:
                    with lock:
                        results[task_id] = {"status": exp.ref_status or "no-reference", "reference_s": exp.ref_s, "tests": len(exp.ids), "excerpt": exp.ref_excerpt}

                return cb

            for task in tasks:
                service.learn(task.test_code, task.solution or None, record(task.task_id))
            service.wait_references()
            while len(results) < len(tasks):  # callbacks for cached entries ran inline
                time.sleep(0.05)
            service.cache.save()
            isolation = evaluator.isolation
        else:  # any other evaluator: judge the reference like a candidate
            from srscode.core.types import Candidate

            by_id = {t.task_id: t for t in tasks}
            cands = [Candidate(t.task_id, 0, "", t.solution) for t in tasks]
            for v in evaluator.evaluate(by_id, cands):
                results[v.task_id] = {"status": v.status, "reference_s": v.duration_s, "tests": v.tests_expected, "excerpt": v.excerpt}
    finally:
        close = getattr(evaluator, "close", None)
        if close is not None:
            close()
    elapsed = time.monotonic() - t0
    counts = Counter(r["status"] for r in results.values())
    failing = [
        {"task_id": tid, "status": r["status"], "excerpt": (r["excerpt"] or "")[:300]}
        for tid, r in sorted(results.items())
        if r["status"] != "passed"
    ]
    timed = [(tid, r["reference_s"]) for tid, r in results.items() if r["reference_s"] is not None]
    slowest = [{"task_id": tid, "reference_s": round(s, 4)} for tid, s in sorted(timed, key=lambda x: -x[1])[:10]]
    summary = {
        "config": str(args.config),
        "source": cfg.data.source,
        "tasks": len(tasks),
        "rows_skipped_by_source": dict(report.skipped),
        "counts": dict(sorted(counts.items())),
        "passing": counts.get("passed", 0),
        "failing_references": failing,
        "slowest": slowest,
        "reference_cache": cache_path,
        "evaluator": cfg.stages.evaluator.name,
        "isolation": isolation,
        "seconds": round(elapsed, 2),
    }
    text = json.dumps(summary, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


def add_check_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check-data",
        help="run every task's reference solution; report failing/slow tasks, record runtimes",
        description=(
            "Runs every task's reference solution through the configured evaluator, records "
            "expected test ids and reference runtimes in the reference cache (used to scale "
            "timeouts) and prints a summary: counts by status, slowest tasks, failing references."
        ),
    )
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("-o", "--output", help="also write the summary JSON here")
    p.add_argument("--workers", default=None, help="parallel runs: 'auto' or a number (default: the config's)")
    p.add_argument("--cache", default=None, help="reference cache file (default: the evaluator's)")
    p.add_argument("--limit", type=int, default=None, help="check at most this many tasks")
    p.set_defaults(func=run_check_data)
    return p
