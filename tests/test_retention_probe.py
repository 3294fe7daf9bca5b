"""The retention probe (config ``retention``): it re-tests exactly the training tasks that
were ever solved, with the adapter of that point, records the share still solved with a
Wilson interval and per-task counts, is redone only when interrupted, is off by default,
and shows in ``srscode status`` and the report."""
from __future__ import annotations

import argparse
import json

import pytest

import fake_stages
from fake_stages import fake_config
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import ConfigError
from srscode.core.ledger import Ledger
from srscode.core.metrics import status_summary
from srscode.core.retention_probe import summarize_probe, wilson
from srscode.core.types import Verdict

ROUNDS = 6


def probe_config(**overrides):
    return fake_config(rounds=ROUNDS, **{"retention": {"at_end": True, "every": 2, "candidates": 3}}, **overrides)


def run(tmp, cfg_dict):
    cfg = validate(cfg_dict)
    return Engine(cfg, cfg.model_dump(mode="json"), tmp, extra_plugins=[fake_stages], quiet=True).run()


def read(run_dir):
    led = Ledger(run_dir, create=False)
    try:
        log = [(r, t, json.loads(s)) for r, t, s in led.db.execute("SELECT round, task_id, state FROM memory_log")]
        rounds = {r["round"]: r for r in led.rounds()}
        dpo = led.stage("dpo-final")
        return led.retention_probes(), log, rounds, dpo, led.validations()
    finally:
        led.close()


@pytest.fixture(autouse=True)
def _reset():
    fake_stages.reset()
    yield
    fake_stages.reset()


@pytest.fixture
def probed(tmp_path_factory):
    d = tmp_path_factory.mktemp("probed")
    fake_stages.reset()
    run(d, probe_config())
    return d


def test_wilson_interval_matches_the_formula():
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == 1.0
    assert wilson(0, 0) == (None, None)


def test_summary_counts_samples_and_decides_on_the_mean_test_pass_rate():
    vs = [Verdict("a", 0, "passed", 2, 2), Verdict("a", 1, "failed", 1, 2), Verdict("b", 0, "failed", 0, 2),
          Verdict("b", 1, "failed", 1, 2)]
    out = summarize_probe(vs, ["a", "b", "c"], 0.5)
    assert out["per_task"] == {"a": [1, 2], "b": [0, 2], "c": [0, 0]}
    assert out["pass_rate"] == {"a": 0.75, "b": 0.25, "c": 0.0}
    assert (out["tasks"], out["solved"], out["share"]) == (3, 1, 1 / 3)
    assert out["ci95_low"] < 1 / 3 < out["ci95_high"] and out["interval"] == "wilson"


def test_probes_pick_exactly_the_ever_solved_training_tasks(probed):
    probes, log, rounds, dpo, _ = read(probed)
    assert sorted(probes) == [2, 4, ROUNDS + 1]  # round 6's is the final one
    from srscode.core.task_loading import split_tasks
    train = set(split_tasks([f"T{i:05d}" for i in range(120)], 0.8, 7)[0])
    for key, probe in probes.items():
        upto = min(key, ROUNDS)
        expected = sorted({t for r, t, s in log if r <= upto and (s["last_pass_rate"] or 0) >= 0.5} & train)
        assert expected and sorted(probe["per_task"]) == expected, key
        # tasks solved once and failed at their last review are probed too
        assert all(n == 3 for _, n in probe["per_task"].values())
        solved = [t for t, p in probe["pass_rate"].items() if p >= 0.5]
        assert probe["solved"] == len(solved) and probe["tasks"] == len(expected)
        assert probe["share"] == pytest.approx(len(solved) / len(expected))
        assert probe["ci95_low"] <= probe["share"] <= probe["ci95_high"]
        assert (probe["candidates"], probe["threshold"]) == (3, 0.5)
    # with the adapter of that point: the round's, and after the final DPO stage the DPO one
    assert probes[2]["adapter"] == rounds[2]["adapter_sha"] and probes[4]["adapter"] == rounds[4]["adapter_sha"]
    assert probes[ROUNDS + 1]["adapter"] == dpo["adapter"].sha256 and probes[ROUNDS + 1]["label"] == "final"
    ever = {t for r, t, s in log if (s["last_pass_rate"] or 0) >= 0.5}
    last = {}
    for r, t, s in sorted(log, key=lambda x: x[0]):
        last[t] = s["last_pass_rate"]
    assert any(last[t] < 0.5 for t in ever), "the fixture has no forgotten task: the test proves less"


def test_a_committed_probe_is_not_redone(probed):
    before = read(probed)[0]
    fake_stages.reset()
    run(probed, probe_config())
    assert fake_stages.CALLS.get("generate", 0) == 0
    assert read(probed)[0] == before


@pytest.mark.parametrize("which", [0, -1], ids=["round-probe", "final-probe"])
def test_an_interrupted_probe_is_redone_the_same(probed, tmp_path, monkeypatch, which):
    expected = read(probed)
    calls = []  # the generate call number of each probe
    original = Engine._probe

    def spy(self, key, adapter, label):
        calls.append(fake_stages.CALLS.get("generate", 0) + 1)
        return original(self, key, adapter, label)

    monkeypatch.setattr(Engine, "_probe", spy)
    fake_stages.reset()
    run(tmp_path / "count", probe_config())
    fake_stages.reset()
    fake_stages.FAIL_ON_CALL["generate"] = calls[which]
    with pytest.raises(Exception, match="injected failure"):
        run(tmp_path / "b", probe_config())
    partial = read(tmp_path / "b")[0]
    assert len(partial) == (0 if which == 0 else 2)
    fake_stages.reset()
    run(tmp_path / "b", probe_config())
    got = read(tmp_path / "b")
    assert got[0] == expected[0] and got[4] == expected[4]


def test_off_by_default_and_status_unchanged(tmp_path):
    summary = run(tmp_path, fake_config(rounds=2))
    assert "retention" not in summary
    led = Ledger(tmp_path, create=False)
    try:
        assert led.retention_probes() == {}
    finally:
        led.close()


def test_status_prints_the_share(probed, capsys):
    from srscode.cli.main import _print_status

    led = Ledger(probed, create=False)
    try:
        summary = status_summary(led)
    finally:
        led.close()
    final = summary["retention"][ROUNDS + 1]
    assert "per_task" not in final and final["share"] is not None
    _print_status(summary, argparse.Namespace(json=False))
    out = capsys.readouterr().out
    assert f"retention final (after round {ROUNDS}): {final['share']:.3f} still solved " \
           f"({final['solved']} of {final['tasks']} ever-solved tasks, 95% Wilson" in out
    assert "retention round (after round 2)" in out


def test_the_report_plots_retention_beside_validation(probed, tmp_path):
    pytest.importorskip("matplotlib")
    from srscode.cli.report_render import write_report

    from srscode.cli.report_render import load_run, plot_retention

    page = write_report([probed], tmp_path / "report")
    assert (tmp_path / "report" / "retention.png").read_bytes().startswith(b"\x89PNG")
    assert "Retention beside held-out pass@1" in page.read_text()
    run_data = load_run(probed)
    val_ax, ret_ax = plot_retention([run_data]).axes
    shares = [p["share"] for _, p in sorted(run_data.retention.items())]
    assert [list(line.get_ydata()) for line in ret_ax.get_lines() if len(line.get_ydata()) == 3][0] == shares
    assert list(ret_ax.get_lines()[0].get_xdata()) == [2, 4, ROUNDS + 1]
    passes = [v["pass@1"] for _, v in sorted(run_data.validations.items())]
    assert list(val_ax.get_lines()[0].get_ydata()) == passes
    run_data.retention = {}
    assert plot_retention([run_data]) is None  # no probe: no plot, the report as before


@pytest.mark.parametrize("key,value", [("every", -1), ("threshold", 0), ("candidates", 0), ("bogus", 1)])
def test_bad_retention_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"retention.{key}"):
        validate(fake_config(retention={key: value}))


def test_a_run_stored_before_the_retention_section_resumes_without_force(tmp_path):
    """The default section is new: a config stored without it ran with it off."""
    cfg_dict = fake_config(rounds=2)
    cfg = validate(cfg_dict)
    stored = cfg.model_dump(mode="json")
    del stored["retention"]
    Engine(cfg, stored, tmp_path, extra_plugins=[fake_stages], quiet=True).run()
    fake_stages.reset()
    run(tmp_path, cfg_dict)  # refused with "retention changed" without the default rule
    assert fake_stages.CALLS.get("generate", 0) == 0
    with pytest.raises(Exception, match="retention changed"):  # turning it on is a change
        run(tmp_path, fake_config(rounds=2, retention={"at_end": True}))
