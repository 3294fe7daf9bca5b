"""The paired bootstrap of ``srscode report --compare`` (srscode.cli.compare) on
constructed per-task results, and the grouping of ablation dirs into arms."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from srscode.cli import compare as C
from srscode.core.ledger import Ledger

pytest.importorskip("numpy")


def per_task(rates: list[int], n: int = 4, prefix: str = "t") -> dict[str, tuple[int, int]]:
    return {f"{prefix}{i:03d}": (c, n) for i, c in enumerate(rates)}


def test_large_difference_excludes_zero():
    # arm A solves 3 of 4 samples on every task, arm B 1 of 4, over 3 seeds of 40 tasks
    a = {s: per_task([3] * 40) for s in ("seed0", "seed1", "seed2")}
    b = {s: per_task([1] * 30 + [3] * 10) for s in ("seed0", "seed1", "seed2")}
    est = C.paired_bootstrap(a, b)
    assert est.mean == pytest.approx(0.5 * 30 / 40)
    assert 0 < est.lo <= est.mean <= est.hi
    assert est.significant and est.seeds == 3 and est.tasks == 120
    flipped = C.paired_bootstrap(b, a)  # the order of the arms flips the sign only
    assert flipped.mean == pytest.approx(-est.mean) and flipped.hi < 0 and flipped.significant
    assert "significant (a is better)" in C.verdict("a", "b", est, "held-out")


def test_identical_arms_give_zero_and_contain_zero():
    a = {s: per_task([i % 5 for i in range(30)]) for s in ("seed0", "seed1")}
    est = C.paired_bootstrap(a, dict(a))
    assert (est.mean, est.lo, est.hi) == (0.0, 0.0, 0.0)
    assert not est.significant
    assert "no significant difference" in C.verdict("a", "b", est, "held-out")


def test_noise_only_difference_is_not_significant():
    # the arms differ on a few tasks in both directions: the interval straddles 0
    base = [2] * 20
    b = base.copy()
    b[0], b[1], b[2], b[3] = 3, 1, 3, 1
    est = C.paired_bootstrap({"s": per_task(base)}, {"s": per_task(b)})
    assert est.mean == pytest.approx(0.0) and est.lo < 0 < est.hi and not est.significant


def test_bootstrap_is_deterministic_and_uses_seeds():
    a = {s: per_task([(i * 7 + k) % 5 for i in range(25)]) for k, s in enumerate(("seed0", "seed1", "seed2"))}
    b = {s: per_task([(i * 3 + k) % 5 for i in range(25)]) for k, s in enumerate(("seed0", "seed1", "seed2"))}
    assert C.paired_bootstrap(a, b) == C.paired_bootstrap(a, b)
    one = C.paired_bootstrap({"seed0": a["seed0"]}, {"seed0": b["seed0"]})
    assert one.seeds == 1 and one.tasks == 25


def test_between_seed_spread_widens_the_interval():
    # the same mean difference, once consistent across seeds, once varying by seed:
    # resampling seeds must show the second as less certain
    steady_a = {s: per_task([2] * 20) for s in ("s0", "s1", "s2")}
    steady_b = {s: per_task([1] * 20) for s in ("s0", "s1", "s2")}
    vary_a = {"s0": per_task([4] * 20), "s1": per_task([2] * 20), "s2": per_task([0] * 20)}
    vary_b = {"s0": per_task([0] * 20), "s1": per_task([1] * 20), "s2": per_task([2] * 20)}
    steady, vary = C.paired_bootstrap(steady_a, steady_b), C.paired_bootstrap(vary_a, vary_b)
    assert steady.mean == pytest.approx(vary.mean) == pytest.approx(0.25)
    assert (vary.hi - vary.lo) > (steady.hi - steady.lo) + 0.5


def test_mismatched_task_sets_are_refused():
    a = {"seed0": per_task([1, 2, 3])}
    b = {"seed0": {**per_task([1, 2]), "other": (1, 4)}}
    with pytest.raises(C.CompareError, match=r"held-out: x vs y, seed seed0: the arms were validated on "
                                             r"different tasks .*'t002'.*'other'"):
        C.paired_bootstrap(a, b, "held-out: x vs y")


def test_different_samples_per_task_are_refused():
    a = {"seed0": per_task([1, 2], n=4)}
    b = {"seed0": per_task([1, 2], n=8)}
    with pytest.raises(C.CompareError, match=r"task t000: 4 samples in the first arm, 8 in the second"):
        C.paired_bootstrap(a, b)


def test_no_common_seed_is_refused():
    with pytest.raises(C.CompareError, match="share no seed"):
        C.paired_bootstrap({"seed0": per_task([1])}, {"seed1": per_task([1])})


def test_arm_pass_at_k_uses_the_unbiased_estimator():
    pts = {"seed0": {"a": (1, 4), "b": (0, 4)}}
    p1 = C.arm_pass_at_k(pts, 1)
    p2 = C.arm_pass_at_k(pts, 2)
    assert p1.mean == pytest.approx(0.125) and p2.mean == pytest.approx(0.25)  # (1 - C(3,2)/C(4,2)) / 2
    assert C.arm_pass_at_k(pts, 5) is None  # no task has 5 samples


def test_retention_values_follow_the_probes_threshold():
    probe = {"threshold": 0.6, "pass_rate": {"a": 0.6, "b": 0.59, "c": 1.0}, "per_task": {}}
    assert C._retention_values(probe) == [1.0, 0.0, 1.0]
    assert C._retention_values({"per_task": {"a": [1, 2], "b": [0, 2]}}) == [1.0, 0.0]
    assert C._retention_values({"share": 0.5}) is None


# --------------------------------------------------------------------------- from run dirs


def fake_run(run_dir: Path, seed: int, per_task_: dict | None, sources: dict | None = None,
             probe: dict | None = None) -> Path:
    """A run dir holding only what the comparison reads: the config and validations."""
    led = Ledger(run_dir)
    try:
        led.set_meta(config={"seed": seed, "rounds": 2})
        final = {"label": "final", "pass@1": 0.5}
        if per_task_ is not None:
            final["per_task"] = {t: list(v) for t, v in per_task_.items()}
        if sources:
            final["sources"] = sources
        led.record_validation(0, {"label": "before", "pass@1": 0.1})
        led.record_validation(3, final)
        if probe is not None and hasattr(led, "record_retention_probe"):
            led.record_retention_probe(3, probe)
    finally:
        led.close()
    return run_dir


def test_ablation_dir_groups_arms_and_sources(tmp_path):
    good = per_task([4] * 10)
    bad = per_task([0] * 10)
    he_a = {"pass@1": 1.0, "per_task": {t: list(v) for t, v in per_task([4] * 8, prefix="HumanEval/").items()}}
    he_b = {"pass@1": 1.0, "per_task": {t: list(v) for t, v in per_task([4] * 8, prefix="HumanEval/").items()}}
    for i in range(2):
        fake_run(tmp_path / "abl" / "good" / f"seed{i}", i, good, {"humaneval": he_a})
        fake_run(tmp_path / "abl" / "bad" / f"seed{i}", i, bad, {"humaneval": he_b})
    (tmp_path / "abl" / "ablation.json").write_text(json.dumps({"order": ["good", "bad"], "arms": {}}))
    c = C.compare_runs([tmp_path / "abl"], n_boot=200)
    assert list(c.arms) == ["good", "bad"] and c.sources == ["held-out", "humaneval"]
    (a, b, est, _), = c.pairs["held-out"]
    assert (a, b, est.mean, est.lo, est.significant) == ("good", "bad", 1.0, 1.0, True)
    (_, _, he, _), = c.pairs["humaneval"]
    assert he.mean == 0.0 and not he.significant
    md = C.to_markdown(c)
    assert "| good − bad | +1.000 [+1.000, +1.000] | 2 | 20 | yes |" in md
    assert "| good − bad | +0.000 [+0.000, +0.000] | 2 | 16 | no |" in md
    html = C.to_html(c)
    assert "contains 0: no significant difference" in html and "excludes 0: significant (good is better)" in html


def test_runs_without_per_task_are_named_not_guessed(tmp_path):
    fake_run(tmp_path / "old-a", 0, None)
    fake_run(tmp_path / "old-b", 0, None)
    c = C.compare_runs([tmp_path / "old-a", tmp_path / "old-b"], n_boot=50)
    assert c.pairs["held-out"] == [("old-a", "old-b", None, "no per-task results")]
    assert any("no per-task validation results" in n and "old-a" in n for n in c.notes)
    assert c.per_arm["held-out"]["old-a"]["pass@1"] == 0.5  # the summary, shown without interval
    assert "0.500 (no interval)" in C.to_markdown(c)


def test_mismatched_runs_refuse_the_report(tmp_path):
    fake_run(tmp_path / "x" / "seed0", 0, per_task([1, 2]))
    fake_run(tmp_path / "y" / "seed0", 0, per_task([1, 2, 3]))
    with pytest.raises(C.CompareError, match="validated on different tasks"):
        C.compare_runs([tmp_path / "x", tmp_path / "y"], n_boot=50)


def test_not_a_run_dir_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(C.CompareError, match=r"empty is neither a run dir .* nor an ablation dir"):
        C.expand_dirs([tmp_path / "empty"])
    with pytest.raises(C.CompareError, match="does not exist"):
        C.expand_dirs([tmp_path / "missing"])


def test_retention_per_arm_when_recorded(tmp_path):
    if not hasattr(Ledger, "record_retention_probe"):
        pytest.skip("this ledger has no retention probes")
    probe = {"threshold": 0.5, "share": 0.5, "pass_rate": {"a": 1.0, "b": 0.0}, "per_task": {"a": [2, 2], "b": [0, 2]}}
    fake_run(tmp_path / "r" / "seed0", 0, per_task([1]), probe=probe)
    fake_run(tmp_path / "u" / "seed0", 0, per_task([1]))
    c = C.compare_runs([tmp_path / "r", tmp_path / "u"], n_boot=100)
    assert set(c.retention) == {"r"} and c.retention["r"].mean == 0.5
    assert "retention: share of ever-solved training tasks still solved" in C.to_markdown(c)


def test_retention_pair_uses_only_tasks_both_arms_solved():
    a = {"s0": {"t1": 1.0, "t2": 1.0, "t3": 0.0}, "s1": {"t1": 1.0}}
    b = {"s0": {"t1": 0.0, "t2": 1.0, "t4": 0.0}, "s1": {"t9": 1.0}, "s2": {"t1": 1.0}}
    est, why = C.retention_pair(a, b, n_boot=200)
    # s0: t1 (1-0) and t2 (1-1); s1 shares no task; s2 is only in b
    assert why == "" and est.seeds == 1 and est.tasks == 2 and est.mean == pytest.approx(0.5)
    est, why = C.retention_pair({"s0": {"t1": 1.0}}, {"s0": {"t2": 1.0}})
    assert est is None and why == "no task solved in both arms"
    est, why = C.retention_pair({"s0": {"t1": 1.0}}, {"s1": {"t1": 1.0}})
    assert est is None and why == "no seed in common"


def test_retention_pairs_in_the_comparison_and_its_verdicts(tmp_path):
    if not hasattr(Ledger, "record_retention_probe"):
        pytest.skip("this ledger has no retention probes")

    def probe(rates):
        return {"threshold": 0.5, "pass_rate": rates, "per_task": {t: [int(r * 4), 4] for t, r in rates.items()}}

    for seed in (0, 1):
        fake_run(tmp_path / "abl" / "keep" / f"seed{seed}", seed, per_task([1]),
                 probe=probe({"a": 1.0, "b": 1.0, "c": 1.0, "x": 0.0}))
        fake_run(tmp_path / "abl" / "forget" / f"seed{seed}", seed, per_task([1]),
                 probe=probe({"a": 0.0, "b": 0.0, "c": 0.25, "y": 1.0}))
    c = C.compare_runs([tmp_path / "abl" / "keep", tmp_path / "abl" / "forget"], n_boot=200)
    [(a, b, est, why)] = c.retention_pairs
    assert (a, b, why) == ("keep", "forget", "") and est.mean == pytest.approx(1.0) and est.significant
    md = C.to_markdown(c)
    assert "retention: paired difference over the training tasks both arms solved (same seed)" in md
    assert "| keep − forget | +1.000 [+1.000, +1.000] | 2 | 6 | yes |" in md
    assert ("keep − forget on training tasks both solved retention: +1.000, 95% interval [+1.000, +1.000] "
            "excludes 0: significant (keep is better)") in md
    assert "keep − forget on training tasks both solved retention" in C.to_html(c)


def test_review_rates_are_each_reviewed_tasks_mean_pass_rate_over_its_reviews(tmp_path, monkeypatch):
    """Checked against the round files: each review round's verdicts give the task's rate."""
    import json as _json

    from srscode.cli.main import main
    from srscode.core.types import Verdict

    monkeypatch.setenv("SRSCODE_PROGRESS", "off")
    monkeypatch.setenv("SRSCODE_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    cfg = Path(__file__).resolve().parents[1] / "examples" / "srs-dry.yaml"
    assert main(["-q", "run", str(cfg), "--run-dir", str(run), "--set", "rounds=4", "--set", "batch_size=6"]) == 0
    expected: dict[str, list[float]] = {}
    for rd in sorted((run / "rounds").iterdir()):
        review = set(_json.loads((rd / "schedule.json").read_text())["review"])
        per: dict[str, list[float]] = {}
        for line in (rd / "verdicts.jsonl").read_text().splitlines():
            row = _json.loads(line)
            v = Verdict(**{k: row[k] for k in ("task_id", "index", "status", "tests_passed", "tests_expected")})
            per.setdefault(v.task_id, []).append(v.pass_rate)
        for t in review:
            expected.setdefault(t, []).append(sum(per[t]) / len(per[t]))
    assert expected, "the dry run scheduled no reviews: the check would be empty"
    led = Ledger(run, create=False)
    try:
        got = C.review_rates(led)
    finally:
        led.close()
    assert got == pytest.approx({t: sum(v) / len(v) for t, v in expected.items()})
