"""Checks for the starter task set in plugins/data/starter_set/tasks.jsonl (KodCode-V1 schema).

Schema checks are cheap; ``test_solutions_and_trials_execute_as_recorded`` runs every
reference solution and every recorded trial against its pytest file in a fresh temp dir.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TASKS_PATH = Path(__file__).resolve().parents[1] / "plugins/data/starter_set/tasks.jsonl"

TASK_KEYS = {
    "style", "subset", "question_id", "question", "solution", "test_code", "test_info",
    "gpt_difficulty", "gpt_pass_percentage", "gpt_pass_sequence", "gpt_pass_trial_num",
    "trials", "chosen_trial", "metadata",
}
TRIAL_KEYS = {"solution_code", "test_code", "test_result", "note"}
TEST_INFO_KEYS = {"function_name", "parameter_list", "function_declaration", "docstring"}

DEFAULT_TIMEOUT_S = 10
LOOPING_TRIAL_TIMEOUT_S = 3  # trials whose note mentions "timeout" are known to loop forever


def _load_tasks() -> list[dict]:
    with TASKS_PATH.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


TASKS = _load_tasks()


def _results(task: dict) -> list[str]:
    return [t["test_result"] for t in task["trials"].values()]


def _is_all_pass(task: dict) -> bool:
    return all(r == "Pass" for r in _results(task))


def _is_all_fail(task: dict) -> bool:
    return all(r == "Fail" for r in _results(task))


def _test_function_names(test_code: str) -> list[str]:
    tree = ast.parse(test_code)
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


# ---------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------

def test_task_count_and_unique_ids():
    assert len(TASKS) >= 40
    ids = [t["question_id"] for t in TASKS]
    assert len(ids) == len(set(ids))
    for qid in ids:
        assert qid.startswith("Starter_") and qid.endswith("_I"), qid


def test_difficulty_mix():
    counts = Counter(t["gpt_difficulty"] for t in TASKS)
    assert set(counts) == {"easy", "medium", "hard"}
    assert counts["easy"] >= 10
    assert counts["medium"] >= 12
    assert counts["hard"] >= 8


@pytest.mark.parametrize("task", TASKS, ids=[t["question_id"] for t in TASKS])
def test_task_schema(task):
    assert set(task) == TASK_KEYS
    assert task["style"] == "instruct"
    assert task["subset"] == "Starter"
    for key in ("question", "solution", "test_code"):
        assert isinstance(task[key], str) and task[key].strip()
    ast.parse(task["solution"])
    names = _test_function_names(task["test_code"])
    assert 3 <= len(names) <= 8, names
    assert len(names) == len(set(names))

    info = task["test_info"]
    assert info is None or isinstance(info, list)
    for entry in info or []:
        assert set(entry) == TEST_INFO_KEYS
        assert entry["function_declaration"] == f"def {entry['function_name']}{entry['parameter_list']}:"
        assert f"def {entry['function_name']}(" in task["solution"]

    seq = task["gpt_pass_sequence"]
    assert seq and all(x in (0, 1) for x in seq)
    assert task["gpt_pass_trial_num"] == sum(seq)
    assert 0.0 <= task["gpt_pass_percentage"] <= 1.0
    assert task["gpt_pass_percentage"] == pytest.approx(sum(seq) / len(seq), abs=1e-3)

    assert task["metadata"]["source"] == "srs-code starter set"
    assert isinstance(task["metadata"]["topic"], str) and task["metadata"]["topic"]


@pytest.mark.parametrize("task", TASKS, ids=[t["question_id"] for t in TASKS])
def test_trials_schema(task):
    trials = task["trials"]
    assert 2 <= len(trials) <= 4
    assert list(trials) == [f"starter_{i}" for i in range(len(trials))]
    for trial in trials.values():
        assert set(trial) == TRIAL_KEYS
        assert trial["test_result"] in ("Pass", "Fail")
        assert trial["test_code"] == task["test_code"]
        assert trial["note"].strip()
    results = _results(task)
    if not (_is_all_pass(task) or _is_all_fail(task)):
        assert "Pass" in results and "Fail" in results
    assert task["gpt_pass_sequence"] == [1 if r == "Pass" else 0 for r in results]
    chosen = task["chosen_trial"]
    if _is_all_fail(task):
        assert chosen is None
    else:
        assert trials[chosen]["test_result"] == "Pass"


def test_set_level_mix():
    all_pass = [t for t in TASKS if _is_all_pass(t)]
    all_fail = [t for t in TASKS if _is_all_fail(t)]
    assert 3 <= len(all_pass) <= 8
    assert 3 <= len(all_fail) <= 8
    no_import = [t for t in TASKS if "from solution import" not in t["test_code"]]
    assert 3 <= len(no_import) <= 8
    assert sum("@pytest.mark.parametrize" in t["test_code"] for t in TASKS) >= 2
    assert any(t["test_info"] is None for t in TASKS)
    assert any(t["test_info"] == [] for t in TASKS)
    assert any(t["test_info"] and len(t["test_info"]) == 2 for t in TASKS)
    looping = [tr for t in TASKS for tr in t["trials"].values() if "timeout" in tr["note"]]
    assert 1 <= len(looping) <= 3
    assert all(tr["test_result"] == "Fail" for tr in looping)


# ---------------------------------------------------------------------------
# execution
# ---------------------------------------------------------------------------

def _run_pytest(solution_code: str, test_code: str, timeout_s: float) -> tuple[str, str]:
    """Run test_code against solution_code in a fresh temp dir; return (result, detail).

    Judging by pytest's exit code is acceptable here only because every solution and
    trial in this set is our own trusted, hand-written code; untrusted model output must
    go through the engine's sandboxed executor instead.
    """
    with tempfile.TemporaryDirectory(prefix="starter_") as tmp:
        Path(tmp, "solution.py").write_text(solution_code, encoding="utf-8")
        Path(tmp, "test_solution.py").write_text("from solution import *\n" + test_code, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # The task tests need only core pytest; skipping entry-point plugins (hypothesis,
        # xdist, benchmark, ...) cuts each run from ~4 s to under 1 s.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_solution.py"],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return "Fail", f"timeout after {timeout_s}s"
        result = "Pass" if proc.returncode == 0 else "Fail"
        return result, (proc.stdout + proc.stderr)[-1500:]


def test_solutions_and_trials_execute_as_recorded():
    jobs = []  # (label, solution_code, test_code, expected, timeout)
    for task in TASKS:
        qid = task["question_id"]
        jobs.append((f"{qid}/reference", task["solution"], task["test_code"], "Pass", DEFAULT_TIMEOUT_S))
        for key, trial in task["trials"].items():
            timeout = LOOPING_TRIAL_TIMEOUT_S if "timeout" in trial["note"] else DEFAULT_TIMEOUT_S
            jobs.append((f"{qid}/{key}", trial["solution_code"], trial["test_code"],
                         trial["test_result"], timeout))

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda job: _run_pytest(job[1], job[2], job[4]), jobs))

    mismatches = [
        f"{label}: expected {expected}, got {got}\n{detail}"
        for (label, _, _, expected, _), (got, detail) in zip(jobs, outcomes)
        if got != expected
    ]
    assert not mismatches, "\n\n".join(mismatches)
