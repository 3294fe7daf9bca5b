"""``srscode evaluate`` and ``srscode check-data`` (through their argparse parsers)."""
from __future__ import annotations

import argparse
import io
import json
import sys
import types

import pytest

from srscode.core.errors import ConfigError, DataError, RegistryError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, Verdict
from srscode.cli.evaluate import add_check_data_parser, add_evaluate_parser

REF = "def add(a, b):\n    return a + b\n"
TEST = "def test_add():\n    assert add(2, 3) == 5\n\ndef test_neg():\n    assert add(-1, 1) == 0\n"


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="srscode")
    sub = ap.add_subparsers()
    add_evaluate_parser(sub)
    add_check_data_parser(sub)
    return ap.parse_args(argv)


def write_lines(path, lines) -> None:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))


def test_evaluate_writes_one_verdict_per_line_in_input_order(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    write_lines(
        src,
        [
            {"id": "good", "solution": REF, "test": TEST, "reference": REF, "task_id": "t1"},
            "this is not json",
            {"id": 7, "solution": "def add(a, b):\n    return a * b\n", "test": TEST, "reference": REF},
            "",
            {"id": "no-test", "solution": REF},
            {"id": "good", "solution": REF, "test": TEST},
            ["a", "list"],
            {"id": "exit", "solution": "import os\nos._exit(0)\n", "test": TEST},
        ],
    )
    out = tmp_path / "sub" / "out.jsonl"
    args = parse(["evaluate", str(src), "-o", str(out), "--workers", "2", "--timeout", "5", "--cache", "none", "-q"])
    assert args.func(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["good", "line 2", "7", "no-test", "good", "line 7", "exit"]
    by_pos = {i: r for i, r in enumerate(rows)}
    assert by_pos[0]["status"] == "passed" and by_pos[0]["task_id"] == "t1"
    assert (by_pos[0]["tests_passed"], by_pos[0]["tests_expected"], by_pos[0]["pass_rate"]) == (2, 2, 1.0)
    assert by_pos[2]["status"] == "failed" and by_pos[2]["tests_passed"] == 0 and by_pos[2]["excerpt"]
    assert by_pos[1]["status"] == "error" and "not valid JSON" in by_pos[1]["excerpt"]
    assert by_pos[3]["status"] == "error" and "'test' must be a string" in by_pos[3]["excerpt"]
    assert by_pos[4]["status"] == "error" and "already used on line 1" in by_pos[4]["excerpt"]
    assert by_pos[5]["status"] == "error" and "JSON object" in by_pos[5]["excerpt"]
    assert by_pos[6]["status"] == "crashed" and not by_pos[6]["passed"]
    for r in rows:
        assert set(r) >= {"id", "status", "passed", "tests_passed", "tests_expected", "duration_s", "excerpt"}


@pytest.mark.parametrize("dedupe", [True, False])
def test_identical_lines_share_a_verdict_unless_no_dedupe(tmp_path, capsys, dedupe) -> None:
    wrong = "def add(a, b):\n    return a * b\n"
    src = tmp_path / "in.jsonl"
    write_lines(src, [{"id": f"w{i}", "solution": wrong, "test": TEST, "reference": REF} for i in range(3)]
                + [{"id": "ref", "solution": REF, "test": TEST, "reference": REF}])
    out = tmp_path / "out.jsonl"
    args = parse(["evaluate", str(src), "-o", str(out), "--workers", "2", "--timeout", "5", "--cache", "none"]
                 + ([] if dedupe else ["--no-dedupe"]))
    assert args.func(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["status"], r["tests_passed"]) for r in rows] == [("w0", "failed", 0), ("w1", "failed", 0), ("w2", "failed", 0), ("ref", "passed", 2)]
    err = capsys.readouterr().err
    if dedupe:  # two copies of w0, and the reference line's verdict from the reference run
        assert "; 3 line(s) identical to an earlier one or to the reference got its verdict" in err
    else:
        assert "identical" not in err


def test_evaluate_to_stdout_and_bad_arguments(tmp_path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    write_lines(src, [{"id": "a", "solution": REF, "test": TEST}])
    args = parse(["evaluate", str(src), "--workers", "1", "--cache", "none"])
    buf = io.StringIO()
    assert args.func(args, out=buf) == 0
    assert json.loads(buf.getvalue())["status"] == "passed"
    assert "evaluated 1 line(s)" in capsys.readouterr().err
    with pytest.raises(DataError, match="does not exist"):
        a = parse(["evaluate", str(tmp_path / "missing.jsonl"), "--cache", "none"])
        a.func(a)
    with pytest.raises(ConfigError, match="--workers"):
        a = parse(["evaluate", str(src), "--workers", "zero", "--cache", "none"])
        a.func(a)


def test_check_data_reports_failing_references_and_records_runtimes(tmp_path, capsys) -> None:
    rows = [
        {"question_id": "ok1", "question": "add", "solution": REF, "test_code": TEST, "test_info": []},
        {"question_id": "ok2", "question": "add", "solution": REF, "test_code": "def test_x():\n    assert add(1, 1) == 2\n", "test_info": []},
        {"question_id": "broken", "question": "add", "solution": "def add(a, b):\n    return 0\n", "test_code": TEST, "test_info": []},
    ]
    data = tmp_path / "tasks.jsonl"
    write_lines(data, rows)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{source: kodcode, path: {data}}}\nstages:\n  evaluator: {{name: pytest-xdist, params: {{workers: 2}}}}\n")
    cache = tmp_path / "cache.json"
    summary_path = tmp_path / "summary.json"
    args = parse(["check-data", str(cfg), "-o", str(summary_path), "--cache", str(cache)])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads(summary_path.read_text())
    assert printed == summary
    assert summary["tasks"] == 3 and summary["counts"] == {"failed": 1, "passed": 2}
    assert [f["task_id"] for f in summary["failing_references"]] == ["broken"]
    assert {s["task_id"] for s in summary["slowest"]} == {"ok1", "ok2", "broken"}
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 3 and all(e["ref_s"] is not None for e in entries.values())


def test_an_unknown_evaluator_lists_the_registered_ones(tmp_path) -> None:
    src = tmp_path / "in.jsonl"
    write_lines(src, [{"id": "a", "solution": REF, "test": TEST}])
    args = parse(["evaluate", str(src), "--evaluator", "pytest-xdsit", "--cache", "none"])
    with pytest.raises(RegistryError, match=r"--evaluator: unknown evaluator 'pytest-xdsit'\. Available: .*pytest-xdist, subprocess"):
        args.func(args)


class EqualsReference:
    """A third-party Evaluator without the streaming service: a candidate passes when its
    code is the task's reference solution."""

    closed = 0

    def evaluate(self, tasks, candidates):
        return [Verdict(c.task_id, c.index, "passed" if c.code == tasks[c.task_id].solution else "failed", 0, 1, {}, 0.0, "")
                for c in candidates]

    def close(self) -> None:
        EqualsReference.closed += 1


def test_a_third_party_evaluator_judges_the_file_through_the_registry(tmp_path, monkeypatch) -> None:
    plugin = types.ModuleType("equals_reference_plugin")

    @hookimpl
    def srscode_evaluators():
        yield ComponentSpec("equals-reference", lambda params, ctx: EqualsReference())

    plugin.srscode_evaluators = srscode_evaluators
    monkeypatch.setitem(sys.modules, plugin.__name__, plugin)
    monkeypatch.setenv("SRSCODE_PLUGINS", plugin.__name__)
    src = tmp_path / "in.jsonl"
    write_lines(src, [{"id": "a", "solution": REF, "test": TEST, "reference": REF, "task_id": "t"},
                      "not json",
                      {"id": "b", "solution": "def add(a, b):\n    return 0\n", "test": TEST, "reference": REF, "task_id": "t"}])
    args = parse(["evaluate", str(src), "--evaluator", "equals-reference", "-q"])
    buf = io.StringIO()
    assert args.func(args, out=buf) == 0
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(r["id"], r["task_id"], r["status"]) for r in rows] == [("a", "t", "passed"), ("line 2", None, "error"), ("b", "t", "failed")]
    assert EqualsReference.closed == 1
    with pytest.raises(ConfigError, match=r"evaluator: this component takes no params"):
        args = parse(["evaluate", str(src), "--evaluator", "equals-reference", "--workers", "2"])
        args.func(args)
