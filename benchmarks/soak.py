"""Soak: a long run with fake model stages and the real evaluator on the starter set, to
show that nothing accumulates and that the engine's own cost per round stays small.

The engine runs in this process (so its memory and descriptors are what is measured);
the starter set's recorded candidates come from the built-in ``replay`` generator, the
real ``pytest-xdist`` evaluator runs them, and the fake trainers of
``srscode.testing.fault_stages`` write an adapter folder every round. The curriculum is the
project's ``uniform`` ablation (``uniform`` scheduler, memory ``none``), which takes a full
batch every round: with ``ratio`` + SM-2 a 44-task set is graduated or parked within a few
dozen rounds and later rounds would be empty (and SM-2 under ``uniform`` reviews tasks long
before they are due, which grows its intervals past SQLite's integer range after about 110
rounds).

Every ``--every`` rounds it samples: the engine process's RSS, its open file descriptors,
the number and total RSS of its descendant processes (the evaluator's workers) and the
number of files and folders under the run's temp dir (``TMPDIR`` points at a fresh folder,
which the evaluator's sandboxes inherit). Per round it measures the engine's overhead: the
wall time between two round ends minus the time of the model stages (generate, evaluate,
train, dpo, validate).

    python benchmarks/soak.py [--rounds 200] [--every 10] [--evaluator pytest-xdist] [--json OUT]
    python benchmarks/soak.py --smoke      # 4 rounds, DPO and validation included: seconds

Exit status 1 when a check fails (growth beyond the tolerances printed, overhead >= 1 s);
``--smoke`` prints the checks without enforcing them (4 rounds measure no growth).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from srscode.core.hookspecs import hookimpl
from srscode.testing import fault_stages

MODEL_STAGES = ("generate", "evaluate", "train", "dpo", "validate")


def _rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _count_entries(path: Path) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(path))


class Probe:
    """A lifecycle-hook plugin: round wall times, stage times and periodic samples."""

    def __init__(self, every: int, tmpdir: Path):
        self.every = every
        self.tmpdir = tmpdir
        self.last_end: float | None = None
        self.start = time.perf_counter()
        self.rounds: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []

    def sample(self, round_: int) -> dict[str, Any]:
        kids = _descendants(os.getpid())
        kid_rss = 0
        for pid in kids:
            try:
                kid_rss += _rss_kib(pid)
            except OSError:
                pass
        return {
            "round": round_,
            "rss_mib": round(_rss_kib() / 1024, 1),
            # Python objects alive: flat while RSS creeps means native caches (SQLite's
            # page cache is capped at 2 MiB per connection by default), not a leak
            "py_blocks_k": round(sys.getallocatedblocks() / 1000, 1),
            "fds": len(os.listdir("/proc/self/fd")),
            "children": len(kids),
            "children_rss_mib": round(kid_rss / 1024, 1),
            "temp_entries": _count_entries(self.tmpdir),
        }

    @hookimpl
    def srscode_round_end(self, round: int, metrics: Mapping[str, Any]) -> None:  # noqa: A002 - hook arg name
        now = time.perf_counter()
        wall = now - (self.last_end if self.last_end is not None else self.start)
        seconds = dict(metrics.get("seconds") or {})
        model = sum(v for k, v in seconds.items() if k in MODEL_STAGES)
        self.rounds.append({"round": round, "wall_s": wall, "model_s": model, "overhead_s": wall - model,
                            "candidates": metrics.get("candidates", 0), "stages": seconds,
                            "first": self.last_end is None})
        self.last_end = now
        if round % self.every == 0 or round == 1:
            self.samples.append(self.sample(round))


def soak_config(rounds: int, evaluator: str, cache: Path, smoke: bool = False) -> dict[str, Any]:
    cfg = fault_stages.fault_config(evaluator, cache)
    cfg.update(rounds=rounds, batch_size=8, candidates=2)
    cfg["stages"]["scheduler"] = {"name": "uniform"}
    cfg["stages"]["memory"] = {"name": "none"}
    # the smoke's few rounds still pass through DPO and validation
    cfg["dpo"] = {"name": "fault-dpo", "every": 2 if smoke else 50}
    cfg["validation"] = {"every": 2 if smoke else 20, "candidates": 2, "k": [1, 2], "limit": 4}
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--evaluator", default="pytest-xdist")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--keep", action="store_true", help="keep the run dir (printed)")
    ap.add_argument("--smoke", action="store_true", help="4 rounds sampled every round; checks not enforced")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.every = 4, 1

    work = Path(tempfile.mkdtemp(prefix="srscode-soak-"))
    tmpdir = work / "tmp"
    tmpdir.mkdir()
    os.environ["TMPDIR"] = str(tmpdir)  # the evaluator's sandboxes and anything else temporary
    tempfile.tempdir = str(tmpdir)

    from srscode.core.config import validate
    from srscode.core.engine import Engine

    cfg = validate(soak_config(args.rounds, args.evaluator, work / "reference-cache.json", args.smoke))
    probe = Probe(args.every, tmpdir)
    engine = Engine(cfg, cfg.model_dump(mode="json"), work / "run", extra_plugins=[fault_stages, probe], quiet=True)
    t0 = time.perf_counter()
    engine.run()
    total = time.perf_counter() - t0
    time.sleep(1.0)  # let the evaluator's workers finish exiting
    after = probe.sample(args.rounds)
    after["round"] = "after run"

    steady = [r for r in probe.rounds if not r["first"]]
    overhead = sorted(r["overhead_s"] for r in steady)
    engine_stages: dict[str, list[float]] = {}
    for r in steady:
        for k, v in r["stages"].items():
            if k not in MODEL_STAGES:
                engine_stages.setdefault(k, []).append(v)
    warm = [s for s in probe.samples if s["round"] >= 2 * args.every] or probe.samples
    growth = {k: round(warm[-1][k] - warm[0][k], 1)
              for k in ("rss_mib", "py_blocks_k", "fds", "children", "children_rss_mib", "temp_entries")}

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(f"rounds {args.rounds}, candidates evaluated {sum(r['candidates'] for r in probe.rounds)}, "
          f"evaluator {args.evaluator}, total {total:.0f} s ({total / args.rounds:.2f} s per round)")
    print("\n| round | engine RSS MiB | Python blocks (k) | open fds | child processes | children RSS MiB "
          "| temp entries |")
    print("|---|---|---|---|---|---|---|")
    for s in [*probe.samples, after]:
        print(f"| {s['round']} | {s['rss_mib']} | {s['py_blocks_k']} | {s['fds']} | {s['children']} | "
              f"{s['children_rss_mib']} | {s['temp_entries']} |")
    print(f"\ngrowth from round {warm[0]['round']} to {warm[-1]['round']}: "
          + ", ".join(f"{k} {v:+g}" for k, v in growth.items()))
    print(f"engine overhead per round (round wall - {'/'.join(MODEL_STAGES)}), rounds 2-{args.rounds}: "
          f"median {statistics.median(overhead):.3f} s, p95 {pct(overhead, 0.95):.3f} s, max {overhead[-1]:.3f} s")
    print("engine stages, mean s per round: "
          + ", ".join(f"{k} {statistics.mean(v):.4f}" for k, v in sorted(engine_stages.items())))
    first = [r for r in probe.rounds if r["first"]]
    if first:
        print(f"round 1 (includes start-up: dataset, evaluator workers): wall {first[0]['wall_s']:.2f} s")

    failures = []
    if overhead[-1] >= 1.0:
        failures.append(f"engine overhead reached {overhead[-1]:.3f} s in a round")
    if growth["rss_mib"] > 25:
        failures.append(f"engine RSS grew by {growth['rss_mib']} MiB")
    if growth["fds"] > 0 or growth["children"] > 0:
        failures.append(f"descriptors or processes accumulate: {growth}")
    if growth["temp_entries"] > 0:
        failures.append(f"temp entries accumulate: {growth['temp_entries']:+d}")
    if after["children"] or after["temp_entries"]:
        failures.append(f"left after the run: {after['children']} processes, {after['temp_entries']} temp entries")
    print("\nchecks: " + ("all passed" if not failures else "FAILED: " + "; ".join(failures))
          + (" (smoke: not enforced)" if args.smoke and failures else ""))

    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": probe.rounds, "samples": probe.samples, "after": after,
                                               "total_s": total, "failures": failures}, indent=1))
    if args.keep:
        print(f"run dir kept: {work / 'run'}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures and not args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
