"""The ``kodcode`` and ``starter`` dataset sources: row mapping, skip report, file formats,
the hub path (with a fake ``datasets.load_dataset``)."""
from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest

from srscode.core.errors import ConfigError, DataError
from srscode.core.registry import validate_params
from srscode.core.types import FunctionInfo, RecordedTrial
from srscode.plugins.data import kodcode as kc
from srscode.plugins.data.kodcode import KodCodeParams, KodCodeSource
from srscode.plugins.data.starter import StarterSource

SHARED = Path(__file__).resolve().parents[2] / "shared/data/kodcode"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared KodCode rows not present at {SHARED}")

TEST_CODE = "from solution import add\n\ndef test_add():\n    assert add(1, 2) == 3\n"
SOLUTION = "def add(a, b):\n    return a + b\n"


def row(qid: str = "Q_1", **over) -> dict:
    base = {
        "style": "instruct",
        "subset": "Prefill",
        "question_id": qid,
        "question": "Add two numbers.",
        "solution": SOLUTION,
        "test_code": TEST_CODE,
        "test_info": [
            {
                "function_name": "add",
                "parameter_list": "(a, b)",
                "function_declaration": "def add(a, b):",
                "docstring": "Sum.",
            }
        ],
        "gpt_difficulty": "easy",
        "gpt_pass_percentage": 0.5,
        "trials": {
            "trial_0": {"solution_code": SOLUTION, "test_code": TEST_CODE, "test_result": "Pass"},
            "trial_1": {"solution_code": "def add(a, b):\n    return a - b\n", "test_code": TEST_CODE, "test_result": "Fail"},
        },
        "metadata": {"row_id": 1},
    }
    base.update(over)
    return base


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- real rows


@needs_shared
def test_shared_rows_load_completely():
    report = KodCodeSource().load(str(SHARED))
    raw = [r for f in sorted(SHARED.glob("*.json")) for r in json.loads(f.read_text())]
    assert len(report.tasks) == len(raw) == 203
    assert report.skipped == {}
    assert [t.task_id for t in report.tasks] == [r["question_id"] for r in raw]
    by_id = {t.task_id: t for t in report.tasks}
    assert sum(len(t.trials) for t in report.tasks) == 548
    assert {tr.result for t in report.tasks for tr in t.trials} == {"Pass", "Fail", "Fail - Timed Out"}
    # test_info: null, one and several entries all occur in these rows
    assert by_id["Algorithm_00000008_I"].test_info == ()
    assert [f.name for f in by_id["Prefill_00000185_I"].test_info] == ["gcd", "lcm"]
    first = by_id["Algorithm_00000003_I"]
    assert first.test_info[0].declaration == "def interleave_strings(first_str, second_str):"
    assert first.difficulty == "medium" and first.pass_percentage == pytest.approx(0.333)
    assert first.source == "kodcode"
    assert first.metadata["subset"] == "Algorithm" and first.metadata["style"] == "instruct"
    assert first.metadata["row_id"] == 3


@needs_shared
def test_shared_single_file_and_glob():
    one = sorted(SHARED.glob("*algorithm*.json"))[0]
    assert len(KodCodeSource().load(str(one)).tasks) == 31
    assert len(KodCodeSource().load(str(SHARED / "*.json")).tasks) == 203


@needs_shared
def test_subset_filter_on_local_rows():
    report = KodCodeSource(KodCodeParams(subset=["Algorithm"])).load(str(SHARED))
    assert len(report.tasks) == 31 and {t.metadata["subset"] for t in report.tasks} == {"Algorithm"}
    assert report.skipped == {}  # filtered rows are not defects


# --------------------------------------------------------------------------- formats


def _rows() -> list[dict]:
    return [
        row("Q_1"),
        row("Q_2", test_info=None, trials={"t": {"solution_code": SOLUTION, "test_code": TEST_CODE, "test_result": "Pass"}}),
        row("Q_3", test_info=[], gpt_difficulty=None, gpt_pass_percentage=None, metadata=None),
    ]


def _key(t):
    return (t.task_id, t.question, t.solution, t.test_code, t.test_info, t.difficulty,
            t.pass_percentage, t.trials, dict(t.metadata))


@pytest.mark.parametrize("fmt", ["json", "jsonl", "json-lines-named-json", "parquet"])
def test_local_formats_round_trip(tmp_path, fmt):
    rows = _rows()
    if fmt == "json":
        path = write_json(tmp_path / "rows.json", rows)
    elif fmt == "jsonl":
        path = write_jsonl(tmp_path / "rows.jsonl", rows)
    elif fmt == "json-lines-named-json":  # what datasets' Dataset.to_json writes
        path = write_jsonl(tmp_path / "rows.json", rows)
    else:
        import datasets

        path = tmp_path / "rows.parquet"
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    report = KodCodeSource().load(str(path))
    assert report.skipped == {}
    expected = KodCodeSource().load(str(write_json(tmp_path / "ref.json", rows)))
    assert [_key(t) for t in report.tasks] == [_key(t) for t in expected.tasks]
    t1, t2, t3 = report.tasks
    assert t1.test_info == (FunctionInfo("add", "(a, b)", "def add(a, b):", "Sum."),)
    assert [tr.key for tr in t1.trials] == ["trial_0", "trial_1"]
    assert t1.trials[1] == RecordedTrial("trial_1", "def add(a, b):\n    return a - b\n", "Fail")
    # parquet stores trials as one struct type: the fields a row lacks come back null
    assert [tr.key for tr in t2.trials] == ["t"]
    assert t2.test_info == () and t3.test_info == ()
    assert t3.difficulty is None and t3.pass_percentage is None
    assert dict(t3.metadata) == {"style": "instruct", "subset": "Prefill"}


def test_directory_mixes_formats(tmp_path):
    write_json(tmp_path / "a.json", [row("A")])
    sub = tmp_path / "sub"
    sub.mkdir()
    write_jsonl(sub / "b.jsonl", [row("B")])
    (tmp_path / "notes.txt").write_text("ignored")
    assert [t.task_id for t in KodCodeSource().load(str(tmp_path)).tasks] == ["A", "B"]


# --------------------------------------------------------------------------- skips


def test_every_defect_is_counted_never_silent(tmp_path):
    rows = [
        row("ok"),
        row("no_tests_key", test_code=None),
        row("blank_tests", test_code="   \n"),
        row("no_solution", solution=None),
        row("int_question", question=42),
        row("lone_surrogate", question="bad \ud800 text"),
        row("ok"),  # duplicate id: the first is kept
        row("syntax", test_code="def test_x(:\n    pass\n"),
        {"question": "no id at all", "solution": SOLUTION, "test_code": TEST_CODE},
        ["not", "a", "mapping"],
        row("alias", test_code=None, test=TEST_CODE),  # `test` accepted for `test_code`
        row("bad_info", test_info=[{"function_name": 3}, "junk", {"docstring": "x"}, row()["test_info"][0]]),
        row("bad_trials", trials={"a": "not a dict", "b": {"solution_code": None, "test_result": "Pass"},
                                  "c": {"solution_code": SOLUTION, "test_result": "Pass"}}),
    ]
    report = KodCodeSource().load(str(write_json(tmp_path / "rows.json", rows)))
    assert [t.task_id for t in report.tasks] == ["ok", "alias", "bad_info", "bad_trials"]
    assert report.tasks[0].question == "Add two numbers."
    assert report.skipped == {
        kc.NO_TESTS: 2,
        kc.NO_SOLUTION: 1,
        "question is not a string": 1,
        kc.BAD_UTF8: 1,
        kc.DUPLICATE: 1,
        kc.TEST_SYNTAX: 1,
        kc.NO_ID: 1,
        kc.NOT_A_MAPPING: 1,
        kc.BAD_TEST_INFO: 3,
        kc.BAD_TRIAL: 2,
    }
    assert report.examples[kc.NO_TESTS] == ["no_tests_key", "blank_tests"]
    assert report.examples[kc.NO_ID] == [f"{tmp_path / 'rows.json'}[8]"]
    assert report.examples[kc.BAD_TEST_INFO] == ["bad_info"] * 3
    by_id = {t.task_id: t for t in report.tasks}
    assert [f.name for f in by_id["bad_info"].test_info] == ["add"]
    assert [tr.key for tr in by_id["bad_trials"].trials] == ["c"]
    assert by_id["alias"].test_code == TEST_CODE


def test_invalid_utf8_bytes_skip_only_their_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = json.dumps(row("good")).encode()
    bad = json.dumps(row("bad", question="QQQ")).encode().replace(b"QQQ", b"caf\xe9")
    path.write_bytes(good + b"\n" + bad + b"\n")
    report = KodCodeSource().load(str(path))
    assert [t.task_id for t in report.tasks] == ["good"]
    assert report.skipped == {kc.BAD_UTF8: 1} and report.examples[kc.BAD_UTF8] == ["bad"]


def test_examples_are_capped(tmp_path):
    rows = [row(f"n{i}", solution="") for i in range(7)]
    report = KodCodeSource().load(str(write_jsonl(tmp_path / "r.jsonl", rows)))
    assert report.skipped == {kc.NO_SOLUTION: 7}
    assert report.examples[kc.NO_SOLUTION] == [f"n{i}" for i in range(5)]


def test_trial_code_stored_as_string_literal_is_decoded(tmp_path):
    literal_code = repr("def add(a, b):\n    return a + b\n")
    docstring_first = '"""Module doc."""\ndef add(a, b):\n    return a + b\n'
    trials = {
        "lit": {"solution_code": literal_code, "test_code": repr(TEST_CODE), "test_result": "Pass"},
        "doc": {"solution_code": docstring_first, "test_code": TEST_CODE, "test_result": "Pass"},
    }
    task = KodCodeSource().load(str(write_json(tmp_path / "r.json", [row(trials=trials)]))).tasks[0]
    assert task.trials[0].solution_code == "def add(a, b):\n    return a + b\n"
    assert task.trials[1].solution_code == docstring_first  # not one literal: kept as is


def test_test_info_derives_missing_declaration(tmp_path):
    info = [{"function_name": "add", "parameter_list": "(a, b)", "function_declaration": None, "docstring": None}]
    task = KodCodeSource().load(str(write_json(tmp_path / "r.json", [row(test_info=info)]))).tasks[0]
    assert task.test_info == (FunctionInfo("add", "(a, b)", "def add(a, b):", ""),)


# --------------------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="nope.jsonl"):
        KodCodeSource().load(str(missing))
    with pytest.raises(DataError, match="matches no files"):
        KodCodeSource().load(str(tmp_path / "*.parquet"))
    with pytest.raises(DataError, match="holds no"):
        KodCodeSource().load(str(tmp_path))


def test_unreadable_files_name_the_path(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        KodCodeSource().load(str(bad_json))
    bad_line = write_jsonl(tmp_path / "bad.jsonl", [row()])
    bad_line.write_text(bad_line.read_text() + "{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2"):
        KodCodeSource().load(str(bad_line))
    not_list = write_json(tmp_path / "obj.json", {"rows": []})  # type: ignore[arg-type]
    with pytest.raises(DataError, match="obj.json.*expected a list"):
        KodCodeSource().load(str(not_list))
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet"):
        KodCodeSource().load(str(bad_parquet))
    odd = tmp_path / "rows.csv"
    odd.write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported type"):
        KodCodeSource().load(str(odd))


# --------------------------------------------------------------------------- hub


class FakeHub:
    def __init__(self, rows):
        self.rows = rows
        self.calls = []

    def __call__(self, path, *args, **kwargs):
        import datasets

        self.calls.append((path, args, kwargs))
        return datasets.Dataset.from_list(self.rows)


def test_hub_path_passes_id_split_revision_and_filters(monkeypatch):
    import datasets

    rows = [
        row("keep", subset="Leetcode", style="instruct"),
        row("other_subset", subset="Apps", style="instruct"),
        row("other_style", subset="Leetcode", style="complete"),
        row("no_tests", subset="Leetcode", style="instruct", test_code=None),
    ]
    # the HF dataset names the column `test`; parquet-backed rows carry every column
    for r in rows:
        r["test"] = r.pop("test_code")
    fake = FakeHub(rows)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    params = KodCodeParams(split="train", revision="abc123", subset=["Leetcode"], style=["instruct"])
    report = KodCodeSource(params).load("KodCode/KodCode-V1")
    assert fake.calls == [("KodCode/KodCode-V1", (), {"split": "train", "revision": "abc123"})]
    assert [t.task_id for t in report.tasks] == ["keep"]
    assert report.skipped == {kc.NO_TESTS: 1}
    # no path: the hub id param is used
    KodCodeSource(KodCodeParams(hub_id="me/mine", split="test")).load(None)
    assert fake.calls[-1] == ("me/mine", (), {"split": "test", "revision": None})


def test_hub_failure_is_a_data_error(monkeypatch):
    import datasets

    def broken(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(DataError, match="KodCode/KodCode-V1.*offline"):
        KodCodeSource().load("KodCode/KodCode-V1")


def test_params_schema_rejects_unknown_keys():
    (spec,) = list(kc.srscode_datasets())
    assert spec.name == "kodcode"
    with pytest.raises(ConfigError, match="data.params.limit"):
        validate_params(spec.params, {"limit": 3}, "data.params")
    source = spec.factory(validate_params(spec.params, {"subset": ["Apps"]}, "data.params"), None)
    assert isinstance(source, KodCodeSource) and source.params.subset == ["Apps"]


# --------------------------------------------------------------------------- starter


def _packaged_starter() -> Path:
    return Path(str(importlib.resources.files("srscode.plugins.data.starter_set") / "tasks.jsonl"))


@pytest.mark.skipif(not _packaged_starter().is_file(), reason="starter tasks.jsonl not written yet")
def test_starter_set_loads_through_the_same_mapping():
    report = StarterSource().load(None)
    assert report.skipped == {}
    assert len(report.tasks) >= 40
    assert all(t.source == "starter" for t in report.tasks)
    assert all(2 <= len(t.trials) <= 4 for t in report.tasks)
    assert {tr.result for t in report.tasks for tr in t.trials} <= {"Pass", "Fail"}


def test_starter_path_override(tmp_path):
    report = StarterSource().load(str(write_jsonl(tmp_path / "mine.jsonl", [row("S1"), row("S2", solution=None)])))
    assert [t.task_id for t in report.tasks] == ["S1"] and report.tasks[0].source == "starter"
    assert report.skipped == {kc.NO_SOLUTION: 1}
    with pytest.raises(DataError, match="not an existing local file"):
        StarterSource().load("some/hub-id")
