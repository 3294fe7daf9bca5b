"""The round loop: schedule -> prompt -> generate -> evaluate -> memory -> train -> pairs.

Everything a round produces is written to its folder and committed to the ledger
before the next round starts, so a run can stop at any point and resume with exactly
the schedule and memory of an uninterrupted run (the scheduler's state, the memory
and the adapter come back from the last committed round; nothing random is carried
in process memory: every seed derives from the run seed and the round number).

Data-parallel under ``accelerate launch`` (see :mod:`srscode.core.distributed`): rank 0
holds the run lock and the ledger and is the only writer; it schedules and sends the
schedule to every rank; each rank generates and evaluates its share of the tasks
(``ids[rank::world]``) and the results are gathered on every rank in the order one process
would produce; every rank trains on the same examples (the trainer shards them, rank 0
saves the adapter, and every rank must see the same adapter hash); rank 0 commits.

Streaming: when the generator has ``generate_iter`` and the evaluator ``submit`` /
``results``, generation and evaluation overlap (each batch is submitted as it arrives).
The round's ``seconds`` then stay a partition of wall time: ``generate`` ends when the
last candidate exists and ``evaluate`` is only the tail after it;
``metrics["streaming"]["seconds"]`` adds ``generate`` (first to last candidate),
``evaluate`` (the evaluator's busy span, from the first submit to the last verdict,
overlapping generation) and ``evaluation_tail`` (last candidate to last verdict); with
several ranks, the slowest rank's spans and each rank's tail.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from .config import RunConfig, diff_keys
from .context import StageContext
from .distributed import Distributed, SingleProcess, connect, run_everywhere, run_on_main, shard
from .errors import DataError, Interrupted, LedgerError, StageError
from .faults import checkpoint
from .ledger import (
    Ledger, RunLock, config_hash, is_io_error, read_jsonl, record, remove_stale_temp, write_atomic, write_json, write_jsonl,
)
from .pairs import build_pairs
from .registry import Registry, make_plugin_manager
from .retention import retention_metrics
from .types import AdapterRef, Candidate, DPOPair, Prompt, ReviewState, SFTExample, Task, Verdict
from .validation import summarize

log = logging.getLogger("srscode.engine")

FINAL_DPO = "dpo-final"


def split_tasks(task_ids: Sequence[str], train_ratio: float, seed: int) -> tuple[list[str], list[str]]:
    """Fixed train/validation split: a task's side depends only on (seed, id), so it is
    stable across resumes and unaffected by row order or by rows added later."""
    train, val = [], []
    for tid in sorted(task_ids):
        h = int.from_bytes(hashlib.sha256(f"split:{seed}:{tid}".encode()).digest()[:8], "big")
        (train if h / 2**64 < train_ratio else val).append(tid)
    return train, val


def round_seed(seed: int, round_: int, purpose: str = "generate") -> int:
    return int.from_bytes(hashlib.sha256(f"{purpose}:{seed}:{round_}".encode()).digest()[:4], "big") >> 1


def rank_seed(seed: int, rank: int, world: int) -> int:
    """The generation seed of one rank: the round's seed in one process (so single-process
    runs are unchanged), a distinct one per rank otherwise, so that ranks do not draw the
    same random stream for their different prompts."""
    return seed if world == 1 else round_seed(seed, rank, f"rank-of-{world}")


@dataclass
class GenEval:
    """One rank's (or, gathered, every rank's) candidates and verdicts of one call."""

    candidates: list[Candidate]
    verdicts: list[Verdict]
    timing: dict[str, float] = field(default_factory=dict)  # streaming spans, when streamed


class Engine:
    def __init__(
        self,
        config: RunConfig,
        config_dict: Mapping[str, Any],
        run_dir: str | Path,
        *,
        force_keys: Sequence[str] = (),
        quiet: bool = False,
        extra_plugins: Sequence[Any] = (),
        registry: Registry | None = None,
    ):
        self.config = config
        self.config_dict = dict(config_dict)
        self.run_dir = Path(run_dir)
        self.force_keys = tuple(force_keys)
        self.registry = registry or make_plugin_manager(extra_plugins)
        self.ctx = StageContext(config=config, run_dir=self.run_dir, registry=self.registry, quiet=quiet)
        self.stage_seconds: dict[str, float] = {}
        self.dist: Distributed = SingleProcess()  # connected in run()

    # ----------------------------------------------------------------- hooks
    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        if not self.dist.is_main:  # observers (loggers, progress) see one run, not one per rank
            return
        try:
            getattr(self.registry.pm.hook, hook_name)(**kwargs)
        except Exception as exc:  # observers must never stop a run
            log.warning("lifecycle hook %s raised %s: %s", hook_name, type(exc).__name__, exc)

    @contextlib.contextmanager
    def _stage(self, round_: int, name: str, info: dict[str, Any] | None = None, timed: bool = True) -> Iterator[dict[str, Any]]:
        info = {} if info is None else info
        if not timed:  # generation inside validation: counted in the validate stage
            yield info
            return
        self._notify("srscode_stage_start", round=round_, stage=name)
        checkpoint(f"stage-start:{name}")
        start = time.perf_counter()
        try:
            yield info
        except BaseException as exc:
            self._notify("srscode_stage_error", round=round_, stage=name, error=exc)
            raise
        checkpoint(f"stage-end:{name}")
        seconds = time.perf_counter() - start
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + seconds
        self._notify("srscode_stage_finish", round=round_, stage=name, seconds=seconds, info=info)

    # ----------------------------------------------------------------- setup
    def _build(self, stage: str, ref: Any, key: str) -> Any:
        return self.registry.build(stage, ref.name, ref.params, self.ctx, key)

    def _check_config(self, ledger: Ledger) -> None:
        stored = ledger.get_meta("config")
        if stored is None:
            # files first, the ledger row last: a crash in between leaves no stored config,
            # so the resumed run writes the files again
            write_json(self.run_dir / "config.json", self.config_dict)
            write_atomic(self.run_dir / "config.yaml", yaml.safe_dump(self.config_dict, sort_keys=False).encode())
            ledger.set_meta(
                config=self.config_dict,
                config_hash=config_hash(self.config_dict),
                created=time.time(),
                schema=1,
            )
            return
        changed = diff_keys(stored, self.config_dict)
        if not changed:
            return
        allowed = {k for k in self.force_keys}
        refused = [k for k in changed if not any(k == a or k.startswith(a + ".") for a in allowed)]
        if refused:
            raise LedgerError(
                f"{self.run_dir} was started with a different config: {', '.join(refused)} changed "
                f"(stored in {self.run_dir / 'config.yaml'}). Resume with the same config, use a new "
                f"--run-dir, or allow the change with --force {','.join(refused)}."
            )
        history = ledger.get_meta("config_changes") or []
        history.append({"at": time.time(), "keys": changed, "after_round": ledger.last_round()})
        ledger.set_meta(config=self.config_dict, config_hash=config_hash(self.config_dict), config_changes=history)
        write_json(self.run_dir / "config.json", self.config_dict)
        log.warning("config keys changed with --force: %s", ", ".join(changed))

    def _load_tasks(self) -> dict[str, Task]:
        cfg = self.config.data
        source = self.registry.build("dataset", cfg.source, cfg.params, self.ctx, "data.source")
        report = source.load(cfg.path)
        for reason, count in sorted(report.skipped.items()):
            examples = ", ".join(report.examples.get(reason, [])[:3])
            log.warning("data: skipped %d rows: %s%s", count, reason, f" (e.g. {examples})" if examples else "")
        tasks = {t.task_id: t for t in report.tasks}
        if cfg.limit is not None and len(tasks) > cfg.limit:
            keep = sorted(tasks, key=lambda t: hashlib.sha256(f"limit:{self.config.seed}:{t}".encode()).digest())
            tasks = {t: tasks[t] for t in sorted(keep[: cfg.limit])}
        if not tasks:
            raise DataError(
                f"data: source {cfg.source!r} gave no usable tasks from {cfg.path or '(its default)'}; "
                f"skipped: {dict(report.skipped) or 'none'}."
            )
        self.load_report = report
        return tasks

    def _build_components(self) -> list[Any]:
        """Validate every stage's name and params before touching the run dir, and all of
        them before any factory runs (a generator's factory may load a tokenizer)."""
        cfg = self.config
        refs = [(stage, getattr(cfg.stages, stage), f"stages.{stage}") for stage in
                ("prompt", "generator", "evaluator", "memory", "scheduler", "trainer")]
        if cfg.dpo.every != "never":
            refs.append(("trainer", cfg.dpo, "dpo.name"))
        for stage, ref, key in refs:
            self.registry.validate(stage, ref.name, ref.params, key, "dpo.params" if key == "dpo.name" else None)
        self.prompt_builder = self._build("prompt", cfg.stages.prompt, "stages.prompt")
        self.generator = self._build("generator", cfg.stages.generator, "stages.generator")
        self.evaluator = self._build("evaluator", cfg.stages.evaluator, "stages.evaluator")
        self.memory = self._build("memory", cfg.stages.memory, "stages.memory")
        self.scheduler = self._build("scheduler", cfg.stages.scheduler, "stages.scheduler")
        self.trainer = self._build("trainer", cfg.stages.trainer, "stages.trainer")
        self.dpo_trainer = None
        if cfg.dpo.every != "never":
            self.dpo_trainer = self.registry.build("trainer", cfg.dpo.name, cfg.dpo.params, self.ctx, "dpo.name", "dpo.params")
            if not hasattr(self.dpo_trainer, "train_pairs"):
                raise StageError(f"dpo.name: trainer {cfg.dpo.name!r} cannot train on preference pairs")
        return [self.generator, self.evaluator, self.trainer, self.dpo_trainer]

    # ----------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        # joined before any component is built: the generator and the trainer use the same
        # process group (accelerate's PartialState) and this rank's device
        self.dist = connect(self.ctx)
        if not self.dist.is_main:
            self.ctx.quiet = True  # one progress display, rank 0's
        components: list[Any] = []
        run_everywhere(self.dist, "building the stages", lambda: components.extend(self._build_components()))
        opened: dict[str, Any] = {}
        run_on_main(self.dist, "opening the run dir", lambda: opened.update(self._open_run_dir()))
        lock: RunLock | None = opened.get("lock")
        ledger: Ledger | None = opened.get("ledger")
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM,)}

        def _on_term(signum: int, frame: Any) -> None:
            # abandon the current stage: the round in progress is not committed and is
            # redone on resume; the lock is released in ``finally``
            raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")

        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGTERM, _on_term)
        try:
            return self._run(ledger, components)
        except KeyboardInterrupt:
            where = f"; the run stopped at round {ledger.last_round() + 1}" if ledger is not None else ""
            raise Interrupted(f"interrupted{where}") from None
        except OSError as exc:
            # EFBIG: a file-size limit (RLIMIT_FSIZE, some filesystems) stops writes like a full disk
            if ledger is not None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise LedgerError(_write_failed(ledger, exc.filename or self.run_dir, exc.strerror)) from None
            raise
        except sqlite3.OperationalError as exc:
            # SQLite reports a full disk as SQLITE_FULL, a refused write as SQLITE_IOERR_*; the
            # transaction was rolled back, so the ledger still ends at the last committed round
            if ledger is not None and is_io_error(exc):
                raise LedgerError(_write_failed(ledger, self.run_dir / "ledger.sqlite", str(exc))) from None
            raise
        finally:
            for c in components:
                close = getattr(c, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()
            for s, h in previous.items():
                with contextlib.suppress(ValueError):
                    signal.signal(s, h)
            if ledger is not None:
                ledger.close()
            if lock is not None:
                lock.release()

    def _open_run_dir(self) -> dict[str, Any]:
        """Rank 0 only: the run dir, its lock and its ledger (other ranks never open them)."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: a user error, not a bug
            raise LedgerError(
                f"run dir {self.run_dir} cannot be created ({exc.strerror}): give --run-dir a "
                "directory path that is not a file and that you can write to."
            ) from None
        lock = RunLock(self.run_dir)
        lock.acquire()
        try:
            ledger = Ledger(self.run_dir)
        except BaseException:  # a damaged ledger: say so, but leave the run dir unlocked
            lock.release()
            raise
        return {"lock": lock, "ledger": ledger}

    def _run(self, ledger: Ledger | None, components: list[Any]) -> dict[str, Any]:
        cfg = self.config
        dist = self.dist

        def resume_point() -> int:
            assert ledger is not None
            self._check_config(ledger)
            last = ledger.last_round()
            # every committed round, not only the last: earlier rounds' files are read again
            # (DPO pairs), and a damaged one must stop the run before anything builds on it
            for r in range(1, last + 1):
                ledger.verify_round(r)
            removed = ledger.remove_uncommitted()
            if removed:
                log.warning("removed %d uncommitted round folder(s) from an interrupted attempt: %s",
                            len(removed), ", ".join(p.name for p in removed))
            remove_stale_temp(self.run_dir)  # we hold the lock: any temp file is a dead writer's
            return last

        last = run_on_main(dist, "checking the run dir", resume_point)

        def load() -> str:
            self.tasks = self._load_tasks()
            return hashlib.sha256("\n".join(sorted(self.tasks)).encode()).hexdigest()

        # every rank loads the data (each builds prompts and evaluates); all must see the same tasks
        digests = run_everywhere(dist, "loading the data", load)
        if len(set(digests)) > 1:
            raise DataError(
                f"the ranks loaded different task sets from {cfg.data.path or cfg.data.source!r} "
                f"(task-id digests {', '.join(d[:12] for d in digests)}); every process must read the same data."
            )
        train_ids, val_ids = split_tasks(list(self.tasks), cfg.data.train_ratio, cfg.seed)
        if cfg.validation.limit is not None:
            val_ids = val_ids[: cfg.validation.limit]
        self.train_ids, self.val_ids = train_ids, val_ids
        split_digest = hashlib.sha256("\n".join(train_ids).encode()).hexdigest()

        self.ctx.cache["tasks"] = self.tasks
        self.ctx.cache["prompt_builder"] = self.prompt_builder

        def restore() -> AdapterRef | None:
            assert ledger is not None
            stored_split = ledger.get_meta("split_sha256")
            if stored_split is None:
                ledger.set_meta(split_sha256=split_digest, n_train=len(train_ids), n_val=len(val_ids))
            elif stored_split != split_digest and "data" not in self.force_keys:
                raise LedgerError(
                    f"{self.run_dir}: the training split differs from the one the run started with "
                    "(the dataset changed). Use the same data, a new --run-dir, or --force data."
                )
            # only rank 0 schedules: the scheduler reads the ledger
            self.scheduler.setup(train_ids, cfg.seed)
            adapter: AdapterRef | None = None
            if last:
                row = ledger.round_row(last)
                assert row is not None
                self.scheduler.load_state_dict(row["scheduler_state"])
                if row["adapter_path"]:
                    adapter = AdapterRef(row["adapter_path"], row["adapter_sha"])
            return adapter

        adapter = run_on_main(dist, "restoring the run state", restore)
        self._notify("srscode_run_start", run_dir=str(self.run_dir), config=self.config_dict, resumed_from=last)
        if last:
            log.info("resuming %s after round %d", self.run_dir, last)

        def not_validated(key: int) -> bool:
            return run_on_main(dist, "reading validations", lambda: key not in ledger.validations())  # type: ignore[union-attr]

        if cfg.validation.at_start and self.val_ids and not_validated(0):
            self._validate(ledger, 0, adapter, "before")
        for r in range(last + 1, cfg.rounds + 1):
            adapter = self._round(ledger, r, adapter)

        final_done, final_adapter = run_on_main(dist, "reading the final DPO stage", lambda: _final_stage(ledger))
        if self.dpo_trainer is not None and cfg.dpo.every == "end" and not final_done:
            adapter = self._final_dpo(ledger, adapter)
        elif final_done:
            adapter = final_adapter
        final_key = cfg.rounds + 1
        if cfg.validation.at_end and self.val_ids and not_validated(final_key):
            self._validate(ledger, final_key, adapter, "final")

        def finish() -> dict[str, Any]:
            assert ledger is not None
            summary = self.summary(ledger)
            self._notify("srscode_run_finish", run_dir=str(self.run_dir), summary=summary)
            return summary

        return run_on_main(dist, "finishing the run", finish)

    # ----------------------------------------------------------------- generation + evaluation
    def _check_candidates(
        self, round_: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, candidates: Sequence[Candidate]
    ) -> list[Candidate]:
        expected = {(p.task_id, i) for p in prompts for i in range(n)}
        got = {(c.task_id, c.index) for c in candidates}
        if got != expected or len(candidates) != len(expected):
            raise StageError(
                f"round {round_}: generator {self.config.stages.generator.name!r} returned "
                f"{len(candidates)} candidates; expected {n} for each of {len(prompts)} prompts."
            )
        for c in candidates:
            self._check_adapter(round_, c, adapter)
        return sorted(candidates, key=lambda c: (c.task_id, c.index))

    def _check_adapter(self, round_: int, c: Candidate, adapter: AdapterRef | None) -> None:
        want = adapter.sha256 if adapter else None
        used = c.adapter.sha256 if c.adapter else None
        if used != want:
            raise StageError(
                f"round {round_}: candidate {c.candidate_id} was generated with adapter "
                f"{c.adapter.path + ' ' + used[:12] if c.adapter and used else 'none (the base model)'}, "
                f"but the trainer's latest adapter is "
                f"{adapter.path + ' ' + adapter.sha256[:12] if adapter else 'none'}. The generator "
                "did not apply the adapter it was given; refusing to continue with silent base-model rollouts."
            )

    def _streams(self) -> bool:
        return all(callable(getattr(obj, name, None)) for obj, name in
                   ((self.generator, "generate_iter"), (self.evaluator, "submit"), (self.evaluator, "results")))

    def _generate_evaluate(
        self, round_: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int,
        rdir: Path | None = None, timed: bool = True,
    ) -> GenEval:
        """Candidates and verdicts of ``prompts``, each rank doing its share; every rank gets
        all of them, sorted by (task, index) as one process would produce them. ``rdir``: the
        round folder rank 0 writes candidates.jsonl and verdicts.jsonl into."""
        dist = self.dist
        mine = shard(list(prompts), dist)
        # a generator whose draws are keyed by task (replay) samples the same whatever the
        # shard, so it keeps the round's seed and a run on N ranks equals the 1-process run
        if not getattr(self.generator, "seeds_per_task", False):
            seed = rank_seed(seed, dist.rank, dist.world)
        single = dist.world == 1
        local_rdir = rdir if single else None  # one process writes inside the stages, as before

        called = time.perf_counter()
        local_s = [0.0]

        def local() -> GenEval:
            start = time.perf_counter()
            try:
                if not mine:
                    return GenEval([], [])
                if self._streams():
                    return self._stream(round_, mine, n, adapter, seed, local_rdir, timed)
                return self._sequential(round_, mine, n, adapter, seed, local_rdir, timed)
            finally:
                local_s[0] = time.perf_counter() - start

        rows = run_everywhere(dist, f"round {round_}: generation and evaluation", local)
        if single:
            return rows[0]
        started = time.perf_counter()
        waited = started - called - local_s[0]  # for the slowest rank, in the gather
        cands = sorted((c for row in rows for c in row.candidates), key=lambda c: (c.task_id, c.index))
        verdicts = sorted((v for row in rows for v in row.verdicts), key=lambda v: (v.task_id, v.index))
        if rdir is not None and dist.is_main:
            write_jsonl(rdir / "candidates.jsonl", (record(c) for c in cands))
            write_jsonl(rdir / "verdicts.jsonl", (record(v) for v in verdicts))
        timing = _merge_timings([row.timing for row in rows])
        if timed:
            # waiting for the slowest rank, merging and writing the gathered files: with the
            # stages' own seconds (this rank's), the round's seconds still add up to wall time
            self.stage_seconds["gather"] = self.stage_seconds.get("gather", 0.0) + waited + time.perf_counter() - started
        return GenEval(cands, verdicts, timing)

    def _sequential(
        self, r: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int,
        rdir: Path | None, timed: bool,
    ) -> GenEval:
        with self._stage(r, "generate", timed=timed) as info:
            candidates = self._check_candidates(r, prompts, n, adapter, self.generator.generate(prompts, n, adapter, seed))
            info["candidates"] = len(candidates)
            if rdir is not None:
                write_jsonl(rdir / "candidates.jsonl", (record(c) for c in candidates))
        with self._stage(r, "evaluate", timed=timed) as info:
            verdicts = self.evaluator.evaluate(self.tasks, candidates) if candidates else []
            if len(verdicts) != len(candidates):
                raise StageError(f"round {r}: evaluator returned {len(verdicts)} verdicts for {len(candidates)} candidates")
            verdicts = sorted(verdicts, key=lambda v: (v.task_id, v.index))
            info["passed"] = sum(v.passed for v in verdicts)
            if rdir is not None:
                write_jsonl(rdir / "verdicts.jsonl", (record(v) for v in verdicts))
        return GenEval(candidates, verdicts)

    def _stream(
        self, r: int, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int,
        rdir: Path | None, timed: bool,
    ) -> GenEval:
        """Generation and evaluation overlapped: each batch goes to the evaluator as it
        arrives. ``generate`` ends when the last candidate exists; ``evaluate`` is the tail."""
        start = time.perf_counter()
        first_submit: float | None = None
        got: list[Candidate] = []
        with self._stage(r, "generate", timed=timed) as info:
            for batch in self.generator.generate_iter(prompts, n, adapter, seed):  # type: ignore[attr-defined]
                for c in batch:  # before submitting: never spend the sandbox on wrong rollouts
                    self._check_adapter(r, c, adapter)
                for c in batch:
                    self.evaluator.submit(self.tasks[c.task_id], c)  # type: ignore[attr-defined]
                if batch and first_submit is None:
                    first_submit = time.perf_counter()
                got.extend(batch)
            last_candidate = time.perf_counter()
            candidates = self._check_candidates(r, prompts, n, adapter, got)
            info.update(candidates=len(candidates), streamed=1)
            if rdir is not None:
                write_jsonl(rdir / "candidates.jsonl", (record(c) for c in candidates))
        with self._stage(r, "evaluate", timed=timed) as info:
            by_key: dict[tuple[str, int], Verdict] = {}
            # verdicts that finished during generation are counted at once, the tail live
            with self.ctx.progress("evaluate", total=len(candidates), unit="cand") as bar:
                for v in self.evaluator.results():  # type: ignore[attr-defined]
                    by_key[(v.task_id, v.index)] = v
                    bar.advance(1, **{v.status: 1})
            last_verdict = time.perf_counter()
            missing = [c.candidate_id for c in candidates if (c.task_id, c.index) not in by_key]
            if missing or len(by_key) != len(candidates):
                raise StageError(
                    f"round {r}: evaluator {self.config.stages.evaluator.name!r} streamed {len(by_key)} verdicts "
                    f"for {len(candidates)} candidates (missing e.g. {', '.join(missing[:3]) or 'none'})."
                )
            verdicts = [by_key[(c.task_id, c.index)] for c in candidates]
            info["passed"] = sum(v.passed for v in verdicts)
            if rdir is not None:
                write_jsonl(rdir / "verdicts.jsonl", (record(v) for v in verdicts))
        generate_s = last_candidate - start
        tail = last_verdict - last_candidate
        timing = {
            "generate": generate_s,
            "evaluate": last_verdict - (first_submit or last_candidate),  # busy span, overlapping generation
            "evaluation_tail": tail,
        }
        return GenEval(candidates, verdicts, timing)

    # ----------------------------------------------------------------- one round
    def _round(self, ledger: Ledger | None, r: int, adapter: AdapterRef | None) -> AdapterRef | None:
        cfg = self.config
        dist = self.dist
        main = dist.is_main
        self.stage_seconds = {}
        rdir = self.run_dir / "rounds" / f"{r:06d}"

        with self._stage(r, "schedule") as info:
            def schedule() -> tuple[Any, dict[str, ReviewState]]:
                assert ledger is not None
                ledger.prepare_round_dir(r)
                sched = self.scheduler.schedule(r, cfg.batch_size, ledger)
                states = ledger.get_states(sched.review)
                for tid in sched.new:
                    states[tid] = self.memory.initial(self.tasks[tid])
                write_json(rdir / "schedule.json", {"round": r, "new": list(sched.new), "review": list(sched.review)})
                return sched, states

            sched, states = run_on_main(dist, f"round {r}: schedule", schedule)
            info.update(new=len(sched.new), review=len(sched.review))
        ids = list(sched.task_ids)
        if not ids:
            log.info("round %d: nothing to schedule (all tasks graduated or skipped)", r)

        with self._stage(r, "prompt"):
            prompts = {tid: self.prompt_builder.build(self.tasks[tid]) for tid in ids}
            if main:
                write_jsonl(rdir / "prompts.jsonl", (record(p) for p in prompts.values()))

        ge = self._generate_evaluate(r, [prompts[t] for t in ids], cfg.candidates, adapter, round_seed(cfg.seed, r), rdir)
        candidates, verdicts = ge.candidates, ge.verdicts

        with self._stage(r, "memory"):
            def update_memory() -> tuple[dict[str, float], dict[str, ReviewState]]:
                rates: dict[str, list[float]] = {}
                for v in verdicts:
                    rates.setdefault(v.task_id, []).append(v.pass_rate)
                task_rate = {t: sum(x) / len(x) for t, x in rates.items()}
                after = {t: self.memory.update(states[t], task_rate.get(t, 0.0), r) for t in ids}
                write_jsonl(rdir / "memory.jsonl", (record(after[t]) for t in ids))
                return task_rate, after

            before = {t: states[t] for t in ids}
            # rank 0's update is the one committed; every rank trains with its weights
            task_rate, after = run_on_main(dist, f"round {r}: memory", update_memory)

        with self._stage(r, "train") as info:
            examples = [
                _sft_example(self.tasks[t], prompts[t], self.memory.weight(after[t])) for t in ids
            ]
            # every rank trains (the trainer's accelerate shards the data); an exception here
            # ends this process and the launcher stops the others (collectives are inside)
            result = self.trainer.train_sft(examples, adapter, rdir / "adapter") if examples else None
            if result is not None:
                adapter = self._same_adapter(r, "train", result.adapter)
                info.update(result.metrics)
            train_metrics = dict(result.metrics) if result else {}

        pairs: list[DPOPair] = []
        if main:
            with self._stage(r, "pairs") as info:
                pairs = build_pairs(
                    prompts, candidates, verdicts, cfg.dpo.max_pairs_per_task, cfg.seed,
                    tasks=self.tasks, reference_as_chosen=cfg.dpo.reference_as_chosen,
                )
                info["pairs"] = len(pairs)
                write_jsonl(rdir / "pairs.jsonl", (record(p) for p in pairs))

        dpo_metrics: dict[str, float] = {}
        if self.dpo_trainer is not None and isinstance(cfg.dpo.every, int) and r % cfg.dpo.every == 0:
            with self._stage(r, "dpo") as info:
                window = run_on_main(dist, f"round {r}: DPO pairs",
                                     lambda: self._pairs_since(ledger, r - cfg.dpo.every + 1, r, extra=pairs))  # type: ignore[arg-type, operator]
                if window:
                    res = self.dpo_trainer.train_pairs(window, adapter, rdir / "adapter-dpo")
                    adapter = self._same_adapter(r, "dpo", res.adapter)
                    dpo_metrics = _prefixed("dpo_", res.metrics)
                dpo_metrics["dpo_pairs_trained"] = float(len(window))
                info.update(dpo_metrics)

        validation = None
        if cfg.validation.every and r % cfg.validation.every == 0 and self.val_ids and r != cfg.rounds:
            validation = self._validate(ledger, r, adapter, "round")

        def commit() -> None:
            assert ledger is not None
            metrics = self._metrics(ledger, r, sched, before, after, task_rate, verdicts, pairs, candidates)
            metrics.update(train_metrics)
            metrics.update(dpo_metrics)
            if validation:
                metrics["validation"] = validation
            metrics["seconds"] = dict(self.stage_seconds)
            if ge.timing:  # under "seconds" like every wall-time figure (readers treat those as volatile)
                metrics["streaming"] = {"seconds": ge.timing}
            if dist.world > 1:
                metrics["world_size"] = dist.world
            metrics.update(retention_metrics(ledger, r, after, task_rate, pairs=len(pairs)))
            write_json(rdir / "metrics.json", metrics)
            ledger.commit_round(r, sched.new, sched.review, metrics, self.scheduler.state_dict(), list(after.values()), adapter)
            self._notify("srscode_round_end", round=r, metrics=metrics)

        run_on_main(dist, f"round {r}: commit", commit)  # also the end-of-round barrier
        return adapter

    def _same_adapter(self, r: int, stage: str, adapter: AdapterRef | None) -> AdapterRef | None:
        """Every rank must continue from the adapter rank 0 saved (same content hash)."""
        shas = run_everywhere(self.dist, f"round {r}: {stage} adapter", lambda: adapter.sha256 if adapter else None)
        if len(set(shas)) > 1:
            held = ", ".join(f"rank {k}: {(sha or 'none')[:12]}" for k, sha in enumerate(shas))
            raise StageError(
                f"round {r}: after {stage}, the ranks hold different adapters "
                f"({held}); the trainer must "
                "save once (rank 0) into a folder every rank reads, and every rank must train."
            )
        return adapter

    def _metrics(
        self,
        ledger: Ledger,
        r: int,
        sched: Any,
        before: Mapping[str, ReviewState],
        after: Mapping[str, ReviewState],
        task_rate: Mapping[str, float],
        verdicts: Sequence[Verdict],
        pairs: Sequence[DPOPair],
        candidates: Sequence[Candidate] = (),
    ) -> dict[str, Any]:
        def mean(xs: Sequence[float]) -> float:
            return sum(xs) / len(xs) if xs else 0.0

        # sampling that collapses onto one solution shows here first (the evaluator runs
        # each distinct one once, so this is also the share of runs it saved)
        seen: set[tuple[str, str]] = set()
        copies = 0
        for c in candidates:
            copies += (c.task_id, c.code) in seen
            seen.add((c.task_id, c.code))

        ids = list(sched.task_ids)
        statuses = Counter(v.status for v in verdicts)
        return {
            "round": r,
            "new": len(sched.new),
            "review": len(sched.review),
            "candidates": len(verdicts),
            "pass_rate": mean([task_rate.get(t, 0.0) for t in ids]),
            "pass_rate_new": mean([task_rate.get(t, 0.0) for t in sched.new]),
            "pass_rate_review": mean([task_rate.get(t, 0.0) for t in sched.review]),
            "candidate_pass_rate": mean([float(v.passed) for v in verdicts]),
            "tasks_solved": sum(1 for t in ids if any(v.passed for v in verdicts if v.task_id == t)),
            "statuses": dict(sorted(statuses.items())),
            "timeout_rate": statuses.get("timeout", 0) / len(verdicts) if verdicts else 0.0,
            "duplicate_rate": copies / len(candidates) if candidates else 0.0,
            "newly_graduated": sum(1 for t in ids if after[t].graduated and not before[t].graduated),
            "newly_skipped": sum(1 for t in ids if after[t].skipped and not before[t].skipped),
            "lapses": sum(1 for t in sched.review if (before[t].last_pass_rate or 0) > 0 and task_rate.get(t, 0.0) == 0),
            "dpo_pairs": len(pairs),
        }

    def _pairs_since(self, ledger: Ledger, first: int, last: int, extra: Sequence[DPOPair] = ()) -> list[DPOPair]:
        """DPO pairs of committed rounds first..last-1 plus ``extra`` (the current round's)."""
        out: list[DPOPair] = []
        for r in range(max(1, first), last):
            path = ledger.round_dir(r) / "pairs.jsonl"
            if path.exists():
                out.extend(DPOPair(**row) for row in read_jsonl(path))
        out.extend(extra)
        return out

    def _final_dpo(self, ledger: Ledger | None, adapter: AdapterRef | None) -> AdapterRef | None:
        r = self.config.rounds
        out = self.run_dir / "final" / "adapter-dpo"

        def window() -> list[DPOPair]:
            assert ledger is not None
            if out.exists():
                import shutil

                shutil.rmtree(out)  # an abandoned attempt
            out.parent.mkdir(parents=True, exist_ok=True)
            return self._pairs_since(ledger, 1, r + 1)

        with self._stage(r, "dpo") as info:
            pairs = run_on_main(self.dist, "final DPO: pairs", window)
            metrics: dict[str, float] = {"dpo_pairs_trained": float(len(pairs))}
            if pairs:
                assert self.dpo_trainer is not None
                res = self.dpo_trainer.train_pairs(pairs, adapter, out)
                adapter = self._same_adapter(r, "final DPO", res.adapter)
                metrics.update(_prefixed("dpo_", res.metrics))
            info.update(metrics)

        def commit() -> None:
            assert ledger is not None
            ledger.commit_stage(FINAL_DPO, metrics, adapter)
            log.info("final DPO stage: %d pairs", len(pairs))

        run_on_main(self.dist, "final DPO: commit", commit)
        return adapter

    def _validate(self, ledger: Ledger | None, key: int, adapter: AdapterRef | None, label: str) -> dict[str, Any] | None:
        """Validation split across ranks like generation; rank 0 records it (other ranks get None)."""
        cfg = self.config.validation
        with self._stage(key, "validate") as info:
            prompts = [self.prompt_builder.build(self.tasks[t]) for t in self.val_ids]
            ge = self._generate_evaluate(key, prompts, cfg.candidates, adapter,
                                         round_seed(self.config.seed, key, "validate"), timed=False)
            metrics: dict[str, Any] = summarize(ge.verdicts, [k for k in cfg.k if k <= cfg.candidates])
            metrics.update(label=label, adapter=adapter.sha256 if adapter else None, candidates=len(ge.candidates))
            info.update({k: v for k, v in metrics.items() if isinstance(v, float)})

        def record_it() -> None:
            assert ledger is not None
            ledger.record_validation(key, metrics)

        run_on_main(self.dist, "recording validation", record_it)
        return metrics if self.dist.is_main else None

    def summary(self, ledger: Ledger) -> dict[str, Any]:
        return status_summary(ledger)


def _final_stage(ledger: Ledger | None) -> tuple[bool, AdapterRef | None]:
    assert ledger is not None
    row = ledger.stage(FINAL_DPO)
    return (row is not None, row["adapter"] if row else None)


def _merge_timings(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Streaming spans of several ranks: the slowest rank's (the round waits for it), and
    each rank's tail."""
    rows = [r for r in rows if r]
    if not rows:
        return {}
    out = {k: max(r[k] for r in rows) for k in ("generate", "evaluate", "evaluation_tail")}
    for k, r in enumerate(rows):
        out[f"rank{k}_evaluation_tail"] = r["evaluation_tail"]
    return out


def _write_failed(ledger: Ledger, path: Any, why: str | None) -> str:
    try:
        last = ledger.last_round()
        state = f"round {last} (the last committed one) is intact" if last else "no round had been committed yet"
    except sqlite3.Error:
        state = "the last committed round is intact"
    return (
        f"cannot write {path} ({why or 'write failed'}): the disk is full or a quota or file-size "
        f"limit was reached. The run stopped cleanly and {state}. "
        "Free some space and run the same command again to resume."
    )


def _prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k if k.startswith(prefix) else prefix + k: v for k, v in metrics.items()}


def _sft_example(task: Task, prompt: Prompt, weight: float) -> SFTExample:
    return SFTExample(task.task_id, prompt.text, f"```python\n{task.solution.strip()}\n```", weight)


def status_summary(ledger: Ledger) -> dict[str, Any]:
    last = ledger.last_round()
    row = ledger.round_row(last) if last else None
    config = ledger.get_meta("config") or {}
    vals = ledger.validations()
    dpo = ledger.stage(FINAL_DPO)
    return {
        "run_dir": str(ledger.run_dir),
        "round": last,
        "rounds_planned": config.get("rounds"),
        "memory": ledger.memory_counts(last + 1),
        "n_train": ledger.get_meta("n_train"),
        "n_val": ledger.get_meta("n_val"),
        "last_metrics": row["metrics"] if row else {},
        "adapter": row["adapter_path"] if row else None,
        "validations": vals,
        "final_dpo": dpo["metrics"] if dpo else None,
    }
