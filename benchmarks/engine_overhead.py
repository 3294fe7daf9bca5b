"""Per-round cost of the engine itself (schedule + memory update + ledger commit) at
KodCode scale: 500k synthetic tasks, 400k of them already in the memory, batch 512,
model stages replaced by instant fakes.

Baseline in the same run: the seed's memory manager (one JSON file holding every
task's state, rewritten after each round; due tasks found by a scan and a sort).

    python benchmarks/engine_overhead.py [--tasks 500000] [--seen 400000] [--rounds 5]
    python benchmarks/engine_overhead.py --smoke     # 2,000 tasks, 1,500 in memory: seconds

The memory is prefilled as a resumed run's would be: with tasks the ratio scheduler does not
also take as new in the timed rounds (a task scheduled both as new and as review would stop
the engine).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.hookspecs import hookimpl
from srscode.core.ledger import Ledger
from srscode.core.task_loading import split_tasks
from srscode.core.types import Candidate, ComponentSpec, LoadReport, ReviewState, Task, Verdict
from srscode.plugins.schedule.ratio import RatioScheduler


def task_ids(n: int) -> list[str]:
    return [f"K{i:07d}" for i in range(n)]


class InstantStages:
    """A dataset of N tiny tasks and model stages that take no time."""

    def __init__(self, n: int):
        self.n = n

    @hookimpl
    def srscode_datasets(self):
        n = self.n

        class Source:
            def load(self, path):
                return LoadReport([Task(tid, "q", "s", "t") for tid in task_ids(n)])

        yield ComponentSpec("synthetic", lambda p, c: Source(), None, "")

    @hookimpl
    def srscode_generators(self):
        class Gen:
            def generate(self, prompts, n, adapter, seed):
                rng = random.Random(seed)
                return [Candidate(p.task_id, i, "x", "PASS" if rng.random() < 0.4 else "FAIL", adapter)
                        for p in prompts for i in range(n)]

        yield ComponentSpec("instant", lambda p, c: Gen(), None, "")

    @hookimpl
    def srscode_evaluators(self):
        class Ev:
            def evaluate(self, tasks, cands):
                return [Verdict(c.task_id, c.index, "passed" if c.code == "PASS" else "failed",
                                int(c.code == "PASS"), 1) for c in cands]

        yield ComponentSpec("instant", lambda p, c: Ev(), None, "")


class RoundTimer:
    """Lifecycle observer: wall time of each round from its first stage to its commit."""

    def __init__(self) -> None:
        self.rounds: list[float] = []
        self.stages: dict[str, list[float]] = {}
        self._start = 0.0

    @hookimpl
    def srscode_stage_start(self, round, stage):
        if stage == "schedule":
            self._start = time.perf_counter()

    @hookimpl
    def srscode_stage_finish(self, round, stage, seconds, info):
        self.stages.setdefault(stage, []).append(seconds)

    @hookimpl
    def srscode_round_end(self, round, metrics):
        self.rounds.append(time.perf_counter() - self._start)


def seen_tasks(n_tasks: int, seen: int, new_needed: int, train_ratio: float, seed: int) -> list[str]:
    """The tasks a resumed run's memory holds: none that the ratio scheduler takes as new in
    the timed rounds. A run resumed after k rounds has taken the first tasks of the
    scheduler's shuffled order as new and goes on after them; without a committed round to
    carry that cursor, the prefill takes the end of the order, which the timed rounds never
    reach (they take at most ``new_needed`` tasks from its start)."""
    train, _ = split_tasks(task_ids(n_tasks), train_ratio, seed)
    scheduler = RatioScheduler()
    scheduler.setup(train, seed)  # the engine's own call: the same order
    if seen + new_needed > len(scheduler.order):
        raise SystemExit(f"--seen {seen:,} leaves fewer than the {new_needed:,} new tasks the timed rounds may take "
                         f"from {len(scheduler.order):,} training tasks: lower --seen, --rounds or --batch")
    return scheduler.order[len(scheduler.order) - seen :]


def prefill(run_dir: Path, ids: list[str], seed: int) -> None:
    led = Ledger(run_dir)
    rng = random.Random(seed)
    states = []
    for tid in ids:
        s = ReviewState(tid, ef=round(rng.uniform(1.3, 2.6), 3), due=rng.randint(1, 40), streak=1, reviews=1,
                        last_pass_rate=round(rng.random(), 2))
        s.priority = s.ef
        states.append(s)
    with led.transaction():
        led._upsert_states(states, 0)  # memory rows, running totals and the round-0 log
    led.close()


def seed_style_round(path: Path, n_seen: int, batch: int, step: int, rng: random.Random) -> None:
    """The seed: load the whole memory JSON, scan for due tasks, sort, update, rewrite all."""
    memory = json.loads(path.read_text())
    due = sorted((k for k, v in memory.items() if v["due"] <= step and not v["graduated"]),
                 key=lambda k: memory[k]["ef"])[:batch]
    for k in due:
        memory[k].update(due=step + 1, ef=max(1.3, memory[k]["ef"] - 0.1), reviews=memory[k]["reviews"] + 1)
    path.write_text(json.dumps(memory))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=500_000)
    ap.add_argument("--seen", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile the timed run")
    ap.add_argument("--smoke", action="store_true", help="2,000 tasks, 1,500 in memory, batch 32, 3 rounds")
    args = ap.parse_args()
    if args.smoke:
        args.tasks, args.seen, args.batch, args.rounds = 2_000, 1_500, 32, 3

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg_dict = {
            "seed": 0, "rounds": 1, "batch_size": args.batch, "candidates": 8,
            "data": {"source": "synthetic", "train_ratio": 0.99},
            "stages": {"prompt": {"name": "base"}, "generator": {"name": "instant"},
                       "evaluator": {"name": "instant"}, "memory": {"name": "sm2"},
                       "scheduler": {"name": "ratio"}, "trainer": {"name": "none"}},
            "dpo": {"every": "never"}, "validation": {"at_start": False, "at_end": False},
        }
        plugin = InstantStages(args.tasks)
        seen = seen_tasks(args.tasks, args.seen, args.rounds * args.batch, cfg_dict["data"]["train_ratio"],
                          cfg_dict["seed"])
        t0 = time.perf_counter()
        prefill(run_dir, seen, 0)
        t_prefill = time.perf_counter() - t0

        # one process, several rounds: set-up (dataset, split, shuffle) happens once before
        # round 1; each round is timed from its schedule stage to its commit (round_end hook)
        timer = RoundTimer()
        cfg_dict["rounds"] = args.rounds
        cfg = validate(cfg_dict)
        eng = Engine(cfg, cfg.model_dump(mode="json"), run_dir, extra_plugins=[plugin, timer], quiet=True)
        t0 = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats

            with cProfile.Profile() as prof:
                eng.run()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        else:
            eng.run()
        t_total = time.perf_counter() - t0
        per_round = timer.rounds
        startup = t_total - sum(per_round)
        engine_stage = timer.stages

        # baseline: the seed's whole-file JSON memory at the same size
        mem_path = Path(tmp) / "memory.json"
        rng = random.Random(0)
        mem_path.write_text(json.dumps({f"K{i:07d}": {"ef": rng.uniform(1.3, 2.6), "due": rng.randint(1, 40),
                                                       "graduated": False, "reviews": 1} for i in range(args.seen)}))
        seed_times = []
        for step in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            seed_style_round(mem_path, args.seen, args.batch, step, rng)
            seed_times.append(time.perf_counter() - t0)

    ours = sum(per_round) / len(per_round)
    base = sum(seed_times) / len(seed_times)
    print(f"tasks {args.tasks:,}, in memory {args.seen:,}, batch {args.batch}, rounds timed {len(per_round)}")
    print(f"prefill of the memory store (not part of a round): {t_prefill:.2f} s")
    print(f"process set-up once per run or resume (dataset load, split, shuffle): {startup:.2f} s")
    print("| stage | mean seconds per round |")
    print("|---|---|")
    for k, v in engine_stage.items():
        print(f"| {k} | {sum(v) / len(v):.4f} |")
    print(f"| commit (seal files, retention metrics, SQLite transaction) | {ours - sum(sum(v) / len(v) for v in engine_stage.values()):.4f} |")
    print(f"| **engine per round, schedule to commit (srs-code, SQLite ledger)** | **{ours:.3f}** |")
    print(f"| seed-style JSON memory, same size | {base:.3f} |")
    print(f"ratio seed-style / srs-code per round: {base / ours:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
