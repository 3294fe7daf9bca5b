"""Paired comparison of ablation arms (``srscode report --compare``).

Runs are grouped by *arm* (the config an ablation ran) and *seed*; an arm's final
validation holds, per validation source (the held-out split, and each extra source under
``"sources"``), each task's ``[n_passed, n_samples]``. Two arms are compared on the same
tasks with the same samples per task, paired by seed and task id.

The bootstrap (seeded, deterministic): ``N_BOOT`` replicates; each draws the seeds with
replacement, then, within every drawn seed, that seed's tasks with replacement; the
replicate's statistic is the mean over the drawn seeds of the mean over the drawn tasks.
For a pair of arms the per-task value is the paired difference
``pass@1(arm A) − pass@1(arm B)`` (``c/n`` per task); for one arm it is the task's
pass@k (or, for retention, whether the task is still solved). The 95 % interval is the
2.5th to 97.5th percentile of the replicates; a difference is called significant when
that interval excludes 0.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from srscode.core.errors import SrsError
from srscode.core.ledger import Ledger
from srscode.core.validation import pass_at_k

N_BOOT = 2000
BOOT_SEED = 0
HELD_OUT = "held-out"
ABLATION_FILE = "ablation.json"
_SEED_DIR = re.compile(r"^seed(\d+)$")

PerTask = dict[str, tuple[int, int]]  # task id -> (n_passed, n_samples)


class CompareError(SrsError):
    """Runs that cannot be compared as asked (different tasks or samples, no data)."""


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    seeds: int
    tasks: int  # task draws per replicate, summed over seeds

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0


def hierarchical_bootstrap(values: Mapping[Any, Sequence[float]], n_boot: int = N_BOOT,
                           seed: int = BOOT_SEED) -> Estimate:
    """Mean over seeds of the mean over tasks, and its 95 % percentile interval from
    resampling seeds, then tasks within each drawn seed (see the module docstring).
    ``values``: seed -> the per-task values of that seed (each non-empty)."""
    import numpy as np

    keys = sorted(values, key=str)
    if not keys:
        raise CompareError("bootstrap: no seeds to resample")
    arrays = [np.asarray(values[k], dtype=float) for k in keys]
    for k, a in zip(keys, arrays):
        if a.size == 0:
            raise CompareError(f"bootstrap: seed {k} has no tasks")
    point = float(np.mean([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    n_seeds = len(arrays)
    seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    # per seed: the mean of its resampled tasks in every replicate -> (n_seeds, n_boot)
    task_means = np.stack([a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1) for a in arrays])
    stats = task_means[seed_draws, np.arange(n_boot)[:, None]].mean(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Estimate(point, float(lo), float(hi), n_seeds, sum(a.size for a in arrays))


def paired_differences(a: Mapping[Any, PerTask], b: Mapping[Any, PerTask], what: str = "") -> dict[Any, list[float]]:
    """seed -> per-task ``pass@1(a) − pass@1(b)`` over the seeds both have, in task-id order.
    Refuses (:class:`CompareError`) when a seed's task sets or samples per task differ."""
    common = sorted(set(a) & set(b), key=str)
    if not common:
        raise CompareError(f"{what}: the two arms share no seed (seeds {sorted(a, key=str)} vs "
                           f"{sorted(b, key=str)}); pair runs of the same seeds")
    out: dict[Any, list[float]] = {}
    for s in common:
        ta, tb = a[s], b[s]
        if set(ta) != set(tb):
            only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
            raise CompareError(
                f"{what}, seed {s}: the arms were validated on different tasks "
                f"({len(only_a)} only in the first, e.g. {only_a[:3]}; {len(only_b)} only in the second, "
                f"e.g. {only_b[:3]}); a paired comparison needs the same validation tasks "
                "(same data, train_ratio, validation.limit and seed)"
            )
        diffs = []
        for t in sorted(ta):
            (ca, na), (cb, nb) = ta[t], tb[t]
            if na != nb:
                raise CompareError(
                    f"{what}, seed {s}, task {t}: {na} samples in the first arm, {nb} in the second; a paired "
                    "comparison needs the same samples per task (validation.candidates)"
                )
            if na <= 0:
                raise CompareError(f"{what}, seed {s}, task {t}: no samples recorded")
            diffs.append(ca / na - cb / nb)
        if diffs:
            out[s] = diffs
    if not out:
        raise CompareError(f"{what}: no validation tasks in common")
    return out


def paired_bootstrap(a: Mapping[Any, PerTask], b: Mapping[Any, PerTask], what: str = "",
                     n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> Estimate:
    """The paired difference in pass@1 of arm ``a`` minus arm ``b`` (seed -> per-task results),
    with its bootstrap 95 % interval over seeds and tasks."""
    return hierarchical_bootstrap(paired_differences(a, b, what), n_boot, seed)


def arm_pass_at_k(per_seed: Mapping[Any, PerTask], k: int, n_boot: int = N_BOOT) -> Estimate | None:
    """One arm's pass@k (tasks with at least k samples), with its bootstrap interval."""
    values = {s: [pass_at_k(n, c, k) for c, n in pt.values() if n >= k] for s, pt in per_seed.items()}
    values = {s: v for s, v in values.items() if v}
    return hierarchical_bootstrap(values, n_boot) if values else None


# --------------------------------------------------------------------------- runs and arms


@dataclass
class ArmRun:
    arm: str
    seed: str  # the pairing key: "seed<i>" of an ablation, else the config's seed
    run_dir: Path
    final: dict[str, Any] | None = None  # the final validation's metrics
    final_round: int | None = None
    retention: dict[str, Any] | None = None  # the last retention probe
    reviews: dict[str, float] = field(default_factory=dict)  # task -> mean pass rate over its reviews
    notes: list[str] = field(default_factory=list)


def expand_dirs(paths: Sequence[str | Path]) -> list[tuple[str, str, Path]]:
    """(arm, seed key, run dir) for each run below the given paths: a run dir, an arm dir
    (``<arm>/seed<i>/``) or an ablation dir (``srscode ablate --out``: ``<arm>/seed<i>/``)."""
    out: list[tuple[str, str, Path]] = []
    for given in paths:
        p = Path(given)
        if (p / "ledger.sqlite").exists():
            m = _SEED_DIR.match(p.resolve().name)
            if m:
                out.append((p.resolve().parent.name, p.resolve().name, p))
            else:
                out.append((p.resolve().name, _config_seed(p), p))
            continue
        if not p.is_dir():
            raise CompareError(f"report: {p} does not exist (expected a run dir or an `srscode ablate` dir)")
        seeds = _seed_dirs(p)
        if seeds:  # an arm dir
            out.extend((p.resolve().name, s.name, s) for s in seeds)
            continue
        arms = _arm_order(p)
        found = [(arm, s.name, s) for arm in arms for s in _seed_dirs(p / arm)]
        if not found:
            raise CompareError(
                f"report: {p} is neither a run dir (no ledger.sqlite) nor an ablation dir "
                "(no <arm>/seed<i>/ run dirs below it)"
            )
        out.extend(found)
    seen: set[Path] = set()
    unique = []
    for arm, seed, d in out:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            unique.append((arm, seed, d))
    return unique


def _seed_dirs(p: Path) -> list[Path]:
    dirs = [d for d in p.iterdir() if d.is_dir() and _SEED_DIR.match(d.name) and (d / "ledger.sqlite").exists()] \
        if p.is_dir() else []
    return sorted(dirs, key=lambda d: int(_SEED_DIR.match(d.name).group(1)))  # type: ignore[union-attr]


def _arm_order(p: Path) -> list[str]:
    """Arms in the order `srscode ablate` ran them (its ablation.json), then any others by name."""
    arms: list[str] = []
    try:
        manifest = json.loads((p / ABLATION_FILE).read_text())
        arms = [str(a) for a in manifest.get("order") or manifest["arms"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    others = sorted(d.name for d in p.iterdir() if d.is_dir() and d.name not in arms)
    return arms + others


def _config_seed(run_dir: Path) -> str:
    ledger = Ledger(run_dir, create=False)
    try:
        return f"seed={(ledger.get_meta('config') or {}).get('seed', 0)}"
    finally:
        ledger.close()


def final_validation(validations: Mapping[int, Mapping[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    """The run's final validation (label "final"): after the last round and the final DPO."""
    finals = [k for k, v in validations.items() if v.get("label") == "final"]
    return (max(finals), dict(validations[max(finals)])) if finals else None


def load_arm_run(arm: str, seed: str, run_dir: Path) -> ArmRun:
    run = ArmRun(arm, seed, run_dir)
    ledger = Ledger(run_dir, create=False)
    try:
        fin = final_validation(ledger.validations())
        if fin is None:
            run.notes.append(f"{run_dir}: no final validation recorded (unfinished run, or validation.at_end "
                             "false); left out of the comparison")
        else:
            run.final_round, run.final = fin
        probes = getattr(ledger, "retention_probes", None)
        if callable(probes):
            got = probes() or {}
            if got:
                run.retention = dict(got[max(got, key=int)])
        run.reviews = review_rates(ledger)
    finally:
        ledger.close()
    return run


def review_rates(ledger: Ledger) -> dict[str, float]:
    """task -> its mean pass rate over the committed rounds that scheduled it as a review
    (each round's rate is the task's state in ``memory_log`` at that round)."""
    rates: dict[str, list[float]] = {}
    for rnd, review_ids in ledger.db.execute("SELECT round, review_ids FROM rounds ORDER BY round"):
        ids = json.loads(review_ids)
        if not ids:
            continue
        marks = ",".join("?" * len(ids))
        for t, state in ledger.db.execute(
                f"SELECT task_id, state FROM memory_log WHERE round = ? AND task_id IN ({marks})", (rnd, *ids)):
            rate = json.loads(state).get("last_pass_rate")
            if isinstance(rate, (int, float)):
                rates.setdefault(str(t), []).append(float(rate))
    return {t: sum(v) / len(v) for t, v in rates.items()}


def source_per_task(metrics: Mapping[str, Any], source: str) -> PerTask | None:
    m = metrics if source == HELD_OUT else ((metrics.get("sources") or {}).get(source) or {})
    pt = m.get("per_task")
    if not isinstance(pt, Mapping):
        return None
    out: PerTask = {}
    for t, v in pt.items():
        if isinstance(v, Mapping):
            v = (v.get("passed", v.get("n_passed")), v.get("samples", v.get("n_samples")))
        try:
            c, n = int(v[0]), int(v[1])
        except (TypeError, ValueError, IndexError):
            raise CompareError(f"validation source {source!r}: per-task result of {t!r} is {v!r}, "
                               "expected [n_passed, n_samples]") from None
        out[str(t)] = (c, n)
    return out


def source_summary(metrics: Mapping[str, Any], source: str) -> dict[str, Any]:
    return dict(metrics if source == HELD_OUT else ((metrics.get("sources") or {}).get(source) or {}))


def _retention_by_task(probe: Mapping[str, Any]) -> dict[str, float] | None:
    """Per-task "still solved" (1.0 / 0.0) of a retention probe, decided as the probe's
    ``solved`` count is (:mod:`srscode.core.retention_probe`): the task's mean test pass rate
    (``pass_rate``) at or above the probe's ``threshold``; for a record without them, its
    ``per_task`` ``[n_passed, n_samples]`` at a pass rate of at least the threshold (0.5).
    None when the record has neither."""
    threshold = probe.get("threshold", 0.5)
    threshold = float(threshold) if isinstance(threshold, (int, float)) else 0.5
    rates = probe.get("pass_rate")
    if isinstance(rates, Mapping):
        return {str(t): float(float(v) >= threshold) for t, v in rates.items()}
    pt = probe.get("per_task")
    if not isinstance(pt, Mapping):
        return None
    out = {}
    for t, v in pt.items():
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            return None
        out[str(t)] = float(bool(v[1]) and v[0] / v[1] >= threshold)
    return out


def _retention_values(probe: Mapping[str, Any]) -> list[float] | None:
    by_task = _retention_by_task(probe)
    return None if by_task is None else list(by_task.values())


def intersection_pair(a: Mapping[Any, Mapping[str, float]], b: Mapping[Any, Mapping[str, float]],
                      n_boot: int = N_BOOT, nothing: str = "no task in both arms") -> tuple[Estimate | None, str]:
    """``a`` minus ``b`` (seed -> task -> value), paired per seed both arms ran over the tasks
    *both* have a value for; bootstrap over seeds, then tasks. For what each arm decides on
    its own which tasks to measure (retention probes what the arm solved, reviews what it
    scheduled), the intersection is the like-for-like part. (None, why) where none is shared."""
    diffs = {}
    for s in sorted(set(a) & set(b), key=str):
        common = sorted(set(a[s]) & set(b[s]))
        if common:
            diffs[s] = [a[s][t] - b[s][t] for t in common]
    if not diffs:
        return None, ("no seed in common" if not set(a) & set(b) else nothing)
    return hierarchical_bootstrap(diffs, n_boot), ""


def retention_pair(a: Mapping[Any, Mapping[str, float]], b: Mapping[Any, Mapping[str, float]],
                   n_boot: int = N_BOOT) -> tuple[Estimate | None, str]:
    """Retention (still solved, 1/0) of ``a`` minus ``b`` over the training tasks both solved."""
    return intersection_pair(a, b, n_boot, "no task solved in both arms")


# --------------------------------------------------------------------------- the comparison


@dataclass
class Comparison:
    arms: dict[str, list[ArmRun]]
    sources: list[str]
    ks: list[int]
    per_arm: dict[str, dict[str, dict[str, Any]]]  # source -> arm -> {"pass@k": Estimate | float, ...}
    pairs: dict[str, list[tuple[str, str, Estimate | None, str]]]  # source -> (a, b, estimate, why none)
    retention: dict[str, Estimate | float | None]
    notes: list[str]
    # (a, b, estimate, why none): retention paired over the tasks both arms solved, per seed
    retention_pairs: list[tuple[str, str, Estimate | None, str]] = field(default_factory=list)
    # training reviews: per arm the mean pass rate of its reviewed tasks, and per pair over the
    # tasks both arms reviewed (same seed)
    reviews: dict[str, Estimate] = field(default_factory=dict)
    review_pairs: list[tuple[str, str, Estimate | None, str]] = field(default_factory=list)


def compare_runs(paths: Sequence[str | Path], n_boot: int = N_BOOT) -> Comparison:
    """Group the runs under ``paths`` by arm and compare every pair of arms (see module doc)."""
    arms: dict[str, list[ArmRun]] = {}
    for arm, seed, d in expand_dirs(paths):
        arms.setdefault(arm, []).append(load_arm_run(arm, seed, d))
    notes = [n for runs in arms.values() for r in runs for n in r.notes]
    for arm, runs in arms.items():
        seeds = [r.seed for r in runs]
        if len(set(seeds)) < len(seeds):
            raise CompareError(f"report: arm {arm!r} has two runs of the same seed ({seeds}); give each arm's "
                               "runs once (an ablation dir, or run dirs named <arm>/seed<i>)")
    finished = {a: [r for r in runs if r.final is not None] for a, runs in arms.items()}
    sources = [HELD_OUT]
    for runs in finished.values():
        for r in runs:
            sources.extend(s for s in sorted((r.final or {}).get("sources") or {}) if s not in sources)
    ks: set[int] = set()
    for runs in finished.values():
        for r in runs:
            for src in sources:
                ks.update(int(k[5:]) for k in source_summary(r.final or {}, src)
                          if re.fullmatch(r"pass@\d+", k))
    ks_sorted = sorted(ks) or [1]

    per_arm: dict[str, dict[str, dict[str, Any]]] = {}
    pairs: dict[str, list[tuple[str, str, Estimate | None, str]]] = {}
    names = list(arms)
    for src in sources:
        data: dict[str, dict[str, PerTask]] = {}
        per_arm[src] = {}
        for arm in names:
            runs = [r for r in finished[arm] if src == HELD_OUT or src in ((r.final or {}).get("sources") or {})]
            row: dict[str, Any] = {"seeds": len(runs)}
            pts = {r.seed: source_per_task(r.final or {}, src) for r in runs}
            if runs and all(pt for pt in pts.values()):
                data[arm] = {s: pt for s, pt in pts.items() if pt}
                row["tasks"] = sorted({len(pt) for pt in data[arm].values()})
                for k in ks_sorted:
                    row[f"pass@{k}"] = arm_pass_at_k(data[arm], k, n_boot)
            elif runs:
                missing = [str(r.run_dir) for r in runs if not pts[r.seed]]
                notes.append(f"{src}: arm {arm!r} has no per-task validation results in {', '.join(missing)} "
                             "(recorded before srs-code kept them?): its summary pass@k is shown, without "
                             "intervals, and it is left out of the paired differences")
                for k in ks_sorted:
                    vals = [source_summary(r.final or {}, src).get(f"pass@{k}") for r in runs]
                    vals = [v for v in vals if isinstance(v, (int, float))]
                    row[f"pass@{k}"] = sum(vals) / len(vals) if vals else None
            per_arm[src][arm] = row
        pairs[src] = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if a in data and b in data and not set(data[a]) & set(data[b]):
                    pairs[src].append((a, b, None, f"no seed in common ({', '.join(sorted(data[a]))} vs "
                                                   f"{', '.join(sorted(data[b]))})"))
                elif a in data and b in data:
                    est = paired_bootstrap(data[a], data[b], f"{src}: {a} vs {b}", n_boot)
                    pairs[src].append((a, b, est, ""))
                else:
                    pairs[src].append((a, b, None, "no per-task results" if finished[a] and finished[b]
                                       else "no finished run"))
    retention: dict[str, Estimate | float | None] = {}
    by_task: dict[str, dict[str, dict[str, float]]] = {}  # arm -> seed -> task -> still solved
    for arm, runs in arms.items():
        probes = {r.seed: r.retention for r in runs if r.retention}
        if not probes:
            continue
        vals = {s: _retention_by_task(p) for s, p in probes.items()}
        if all(v is not None for v in vals.values()):
            by_task[arm] = {s: v for s, v in vals.items() if v}  # a seed that never solved a task has none
            nonempty = {s: list(v.values()) for s, v in by_task[arm].items()}
            retention[arm] = hierarchical_bootstrap(nonempty, n_boot) if nonempty else None
        else:
            shares = [p.get("share") for p in probes.values() if isinstance(p.get("share"), (int, float))]
            retention[arm] = sum(shares) / len(shares) if shares else None
    retention_pairs = []
    probed = [a for a in names if a in by_task]
    for i, a in enumerate(probed):
        for b in probed[i + 1:]:
            est, why = retention_pair(by_task[a], by_task[b], n_boot)
            retention_pairs.append((a, b, est, why))
    reviewed = {arm: {r.seed: r.reviews for r in runs if r.reviews} for arm, runs in arms.items()}
    reviewed = {arm: v for arm, v in reviewed.items() if v}
    reviews = {arm: hierarchical_bootstrap({s: list(v.values()) for s, v in per.items()}, n_boot)
               for arm, per in reviewed.items()}
    review_pairs = []
    with_reviews = [a for a in names if a in reviewed]
    for i, a in enumerate(with_reviews):
        for b in with_reviews[i + 1:]:
            est, why = intersection_pair(reviewed[a], reviewed[b], n_boot, "no task reviewed in both arms")
            review_pairs.append((a, b, est, why))
    return Comparison(arms, sources, ks_sorted, per_arm, pairs, retention, notes, retention_pairs,
                      reviews, review_pairs)


# --------------------------------------------------------------------------- rendering


def _est(v: Any, signed: bool = False) -> str:
    if isinstance(v, Estimate):
        f = "+.3f" if signed else ".3f"
        return f"{v.mean:{f}} [{v.lo:{f}}, {v.hi:{f}}]"
    if isinstance(v, (int, float)):
        return f"{v:.3f} (no interval)"
    return "–"


def verdict(a: str, b: str, est: Estimate, src: str, what: str = "pass@1") -> str:
    """The one line the report states per pair."""
    if est.significant:
        better = a if est.mean > 0 else b
        return (f"{a} − {b} on {src} {what}: {est.mean:+.3f}, 95% interval [{est.lo:+.3f}, {est.hi:+.3f}] "
                f"excludes 0: significant ({better} is better)")
    return (f"{a} − {b} on {src} {what}: {est.mean:+.3f}, 95% interval [{est.lo:+.3f}, {est.hi:+.3f}] "
            "contains 0: no significant difference")


def _verdicts(c: Comparison) -> list[str]:
    out = [verdict(a, b, est, src) for src in c.sources for a, b, est, _ in c.pairs[src] if est is not None]
    out += [verdict(a, b, est, "training tasks both solved", "retention")
            for a, b, est, _ in c.retention_pairs if est is not None]
    out += [verdict(a, b, est, "training tasks both reviewed", "review pass rate")
            for a, b, est, _ in c.review_pairs if est is not None]
    return out


PROCEDURE = (f"Paired by seed and task id (same tasks, same samples per task). Bootstrap: {N_BOOT} replicates "
             "(seeded), each resampling the seeds, then the tasks within each drawn seed, with replacement; the "
             "interval is the 2.5–97.5th percentile; significant when it excludes 0.")


def _pair_rows(pairs: Sequence[tuple[str, str, Estimate | None, str]]) -> list[list[str]]:
    """One table row per pair of arms: the difference with its interval, or why there is none."""
    return [[f"{a} − {b}", "–", "–", "–", why] if est is None else
            [f"{a} − {b}", _est(est, signed=True), str(est.seeds), str(est.tasks),
             "yes" if est.significant else "no"] for a, b, est, why in pairs]


def _tables(c: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, header, rows) of every table, for markdown and HTML alike."""
    out = []
    for src in c.sources:
        head = ["arm", "seeds", "tasks per seed", *[f"pass@{k} [95% CI]" for k in c.ks]]
        rows = []
        for arm, row in c.per_arm[src].items():
            tasks = row.get("tasks")
            rows.append([arm, str(row["seeds"]), ", ".join(map(str, tasks)) if tasks else "–",
                         *[_est(row.get(f"pass@{k}")) for k in c.ks]])
        out.append((f"{src}: final validation per arm", head, rows))
        prow = _pair_rows(c.pairs[src])
        if prow:
            out.append((f"{src}: paired difference in pass@1", ["pair", "Δ pass@1 [95% CI]", "seeds",
                                                                 "paired tasks", "significant"], prow))
    if c.retention:
        out.append(("retention: share of ever-solved training tasks still solved (last probe)",
                    ["arm", "share [95% CI]", "seeds", "probed tasks"],
                    [[arm, _est(v), *((str(v.seeds), str(v.tasks)) if isinstance(v, Estimate) else ("–", "–"))]
                     for arm, v in c.retention.items()]))
    if c.retention_pairs:
        out.append(("retention: paired difference over the training tasks both arms solved (same seed)",
                    ["pair", "Δ still solved [95% CI]", "seeds", "paired tasks", "significant"],
                    _pair_rows(c.retention_pairs)))
    if c.reviews:
        out.append(("training reviews: mean pass rate of the reviewed tasks (over their reviews)",
                    ["arm", "pass rate [95% CI]", "seeds", "reviewed tasks"],
                    [[arm, _est(v), str(v.seeds), str(v.tasks)] for arm, v in c.reviews.items()]))
    if c.review_pairs:
        out.append(("training reviews: paired difference over the tasks both arms reviewed (same seed)",
                    ["pair", "Δ pass rate [95% CI]", "seeds", "paired tasks", "significant"],
                    _pair_rows(c.review_pairs)))
    return out


def to_markdown(c: Comparison) -> str:
    lines = []
    for heading, head, rows in _tables(c):
        lines += [f"## {heading}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    lines += _verdicts(c)
    lines += ["", PROCEDURE]
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines) + "\n"


def to_html(c: Comparison) -> str:
    parts = ["<h2 id='compare'>Paired comparison of arms</h2>"]
    verdicts = _verdicts(c)
    if verdicts:
        parts.append("<ul class='verdicts'>" + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts) + "</ul>")
    for heading, head, rows in _tables(c):
        parts.append(f"<h3>{html.escape(heading)}</h3><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                     + "".join(f"<tr><th scope='row'>{html.escape(r[0])}</th>"
                               + "".join(f"<td>{html.escape(x)}</td>" for x in r[1:]) + "</tr>" for r in rows)
                     + "</table>")
    parts.append(f"<p class='cap'>{html.escape(PROCEDURE)}</p>")
    parts.extend(f"<p class='meta'>note: {html.escape(n)}</p>" for n in c.notes)
    return "\n".join(parts)
