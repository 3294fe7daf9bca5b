"""The round loop: schedule -> prompt -> generate -> evaluate -> memory -> train -> pairs
-> DPO -> validate -> commit (:data:`~srscode.core.types.STAGES`); :meth:`Engine._round`
is that loop, one method per stage over a :class:`~srscode.core.round_state.RoundState`.

Everything a round produces is written to its folder and committed to the ledger
before the next round starts, so a run can stop at any point and resume with exactly
the schedule and memory of an uninterrupted run (the scheduler's state, the memory
and the adapter come back from the last committed round; nothing random is carried
in process memory: every seed derives from the run seed and the round number).

Where the rest lives: task loading and the split (:mod:`.task_loading`), resuming
(:mod:`.resume`), generation and evaluation, streamed or not (:mod:`.generate_evaluate`),
a round's files (:mod:`.round_files`), its metrics and the run's status (:mod:`.metrics`),
stage timing and hooks (:mod:`.stage_timing`).

Data-parallel under ``accelerate launch`` (see :mod:`srscode.core.distributed`): rank 0
holds the run lock and the ledger and is the only writer; it schedules and sends the
schedule to every rank; each rank generates and evaluates its share of the tasks and the
results are gathered on every rank; every rank trains on the same examples (the trainer
shards them, rank 0 saves the adapter, and every rank must see the same adapter hash);
rank 0 commits. Work only rank 0 does goes through ``run_on_main``, work every rank does
through ``run_everywhere``, so a failure on one rank stops them all.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import signal
import sqlite3
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import RunConfig
from .context import StageContext
from .distributed import Distributed, SingleProcess, connect, run_everywhere, run_on_main
from .distributed import check_shared_run_dir, lost_contact, shared_adapter  # several machines
from .errors import Interrupted, LedgerError, StageError
from .failure_excerpt import default_paths
from .generate_evaluate import GenerateEvaluate, round_seed
from .ledger import FINAL_DPO, Ledger, RunLock, is_io_error
from .metrics import prefixed, round_metrics, status_summary
from .pairs import build_pairs
from .reflection import last_failed_attempts
from .registry import Registry, make_plugin_manager
from .resume import final_dpo, restore, resume_point, validated
from .retention_probe import probe_tasks, summarize_probe
from .round_files import RoundFiles, committed_pairs
from .round_state import RoundState
from .sft_target import own_passing_code
from .stage_timing import StageTimer
from .task_loading import Split, check_same_tasks, ids_digest, load_tasks, load_validation_sources
from .types import AdapterRef, DPOPair, FailedAttempt, ReviewState, Schedule, SFTExample, Task
from .validation import per_task, summarize, validation_metrics

log = logging.getLogger("srscode.engine")


class Engine:
    """One run: ``Engine(config, config_dict, run_dir).run()`` starts it, or resumes it after
    its last committed round, runs it to the end and returns its status summary."""

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
        self.timer = StageTimer(self._notify)
        self.dist: Distributed = SingleProcess()  # connected in run()
        self.lock: RunLock | None = None  # rank 0's, from run()
        self.ledger: Ledger | None = None

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        if not self.dist.is_main:  # observers (loggers, progress) see one run, not one per rank
            return
        try:
            getattr(self.registry.pm.hook, hook_name)(**kwargs)
        except Exception as exc:  # observers must never stop a run
            log.warning("lifecycle hook %s raised %s: %s", hook_name, type(exc).__name__, exc)

    # ----------------------------------------------------------------- setup
    def _build_components(self) -> None:
        """Validate every stage's name and params before touching the run dir, and all of
        them before any factory runs (a generator's factory may load a tokenizer)."""
        cfg = self.config
        refs = [(stage, getattr(cfg.stages, stage), f"stages.{stage}") for stage in
                ("prompt", "generator", "evaluator", "memory", "scheduler", "trainer")]
        if cfg.dpo.every != "never":
            refs.append(("trainer", cfg.dpo, "dpo.name"))
        for stage, ref, key in refs:
            self.registry.validate(stage, ref.name, ref.params, key, "dpo.params" if key == "dpo.name" else None)
        self.prompt_builder = self.ctx.prompt_builder = self._build("prompt", "stages.prompt")
        missing = [m for m in ("build", "extract", "render_target") if not callable(getattr(self.prompt_builder, m, None))]
        if missing:  # render_target is newer than build/extract: say so before any round runs
            raise StageError(f"stages.prompt: prompt builder {cfg.stages.prompt.name!r} has no {', '.join(missing)}(); "
                             "a builder owns its text format both ways: build(task), extract(output, prompt) and "
                             "render_target(task, prompt, code=None), the training target (see core/types.py)")
        self.generator = self._build("generator", "stages.generator")
        self.evaluator = self._build("evaluator", "stages.evaluator")
        self.memory = self._build("memory", "stages.memory")
        self.scheduler = self._build("scheduler", "stages.scheduler")
        self.trainer = self._build("trainer", "stages.trainer")
        self.dpo_trainer = None
        if cfg.dpo.every != "never":
            self.dpo_trainer = self.registry.build("trainer", cfg.dpo.name, cfg.dpo.params, self.ctx, "dpo.name",
                                                   "dpo.params")
            if not hasattr(self.dpo_trainer, "train_pairs"):
                raise StageError(f"dpo.name: trainer {cfg.dpo.name!r} cannot train on preference pairs")
        # the largest LoRA rank an adapter of this run can have (the vllm generator sizes for it)
        ranks = [getattr(t, "adapter_rank", None) for t in (self.trainer, self.dpo_trainer)]
        self.ctx.adapter_rank = max((r for r in ranks if r is not None), default=None)

    def _build(self, stage: str, key: str) -> Any:
        ref = getattr(self.config.stages, stage)
        return self.registry.build(stage, ref.name, ref.params, self.ctx, key)

    def _components(self) -> list[Any]:
        return [getattr(self, name, None) for name in ("generator", "evaluator", "trainer", "dpo_trainer")]

    def _open_run_dir(self) -> None:
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
            self.ledger = Ledger(self.run_dir)
        except BaseException:  # a damaged ledger: say so, but leave the run dir unlocked
            lock.release()
            raise
        self.lock = lock

    def _load_tasks(self) -> None:
        """Every rank loads the data (each builds prompts and evaluates); all must see the same tasks."""
        check_same_tasks(run_everywhere(self.dist, "loading the data", self._load_tasks_here), self.config)
        self.split = Split.of(list(self.tasks), self.config)
        self.ctx.tasks = self.tasks
        self.gen_eval = GenerateEvaluate(self.config, self.generator, self.evaluator, self.tasks, self.dist,
                                         self.timer, self.ctx.progress)
        # validation.sources: every rank loads them too; each is validated apart from the
        # training data (its own task ids, its own GenerateEvaluate)
        self.val_sources: dict[str, tuple[dict[str, Task], GenerateEvaluate]] = {}
        if self.config.validation.sources:
            check_same_tasks(run_everywhere(self.dist, "loading the validation sources", self._load_val_sources_here),
                             self.config)

    def _load_tasks_here(self) -> str:
        self.tasks = load_tasks(self.config, self.registry, self.ctx)
        return ids_digest(self.tasks)

    def _load_val_sources_here(self) -> str:
        loaded = load_validation_sources(self.config, self.registry, self.ctx)
        self.val_sources = {
            label: (tasks, GenerateEvaluate(self.config, self.generator, self.evaluator, tasks, self.dist,
                                            self.timer, self.ctx.progress))
            for label, tasks in loaded.items()
        }
        return ids_digest(f"{label}\0{t}" for label, tasks in loaded.items() for t in tasks)

    # ----------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        # joined before any component is built: the generator and the trainer use the same
        # process group (accelerate's PartialState) and this rank's device
        self.dist = connect(self.ctx)
        if not self.dist.is_main:
            self.ctx.quiet = True  # one progress display, rank 0's
        run_everywhere(self.dist, "building the stages", self._build_components)
        run_on_main(self.dist, "opening the run dir", self._open_run_dir)
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM,)}
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGTERM, _stop_on_signal)
        ledger = self.ledger
        try:
            return self._run()
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
        except RuntimeError as exc:  # a collective inside a stage (DDP's) failing on a lost node
            lost = lost_contact(self.dist, exc)
            if lost is None:
                raise
            raise lost from exc
        finally:
            for c in self._components():
                close = getattr(c, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()
            for s, h in previous.items():
                with contextlib.suppress(ValueError):
                    signal.signal(s, h)
            if ledger is not None:
                ledger.close()
            if self.lock is not None:
                self.lock.release()
            self.dist.close()

    def _run(self) -> dict[str, Any]:
        cfg, dist, ledger = self.config, self.dist, self.ledger
        check_shared_run_dir(dist, self.run_dir)  # before anything is read from it on other ranks
        last = run_on_main(dist, "checking the run dir", resume_point, ledger, self.config_dict, self.force_keys)
        self._load_tasks()
        adapter = run_on_main(dist, "restoring the run state", restore,
                              ledger, self.scheduler, self.split, cfg.seed, self.force_keys, last)
        adapter = shared_adapter(dist, f"resuming after round {last}: its adapter", adapter)
        self._notify("srscode_run_start", run_dir=str(self.run_dir), config=self.config_dict, resumed_from=last)
        if last:
            log.info("resuming %s after round %d", self.run_dir, last)
        if cfg.validation.at_start and self._validation_missing(0):
            self._validate(0, adapter, "before")
        if last and self._probe_due(last):  # its round committed, the probe did not
            self._probe(last, adapter, "round")
        for r in range(last + 1, cfg.rounds + 1):
            adapter = self._round(r, adapter)
            if self._probe_due(r):
                self._probe(r, adapter, "round")
        adapter = self._dpo_at_end(adapter)
        if cfg.validation.at_end and self._validation_missing(cfg.rounds + 1):
            self._validate(cfg.rounds + 1, adapter, "final")
        if cfg.retention.at_end and self._probe_missing(cfg.rounds + 1):
            self._probe(cfg.rounds + 1, adapter, "final")
        return run_on_main(dist, "finishing the run", self._finish)

    def _finish(self) -> dict[str, Any]:
        assert self.ledger is not None
        summary = status_summary(self.ledger)
        self._notify("srscode_run_finish", run_dir=str(self.run_dir), summary=summary)
        return summary

    # ----------------------------------------------------------------- one round
    def _round(self, r: int, adapter: AdapterRef | None) -> AdapterRef | None:
        cfg = self.config
        self.timer.new_round()
        s = RoundState(r, adapter, RoundFiles(self.run_dir, r, writes=self.dist.is_main))
        self._schedule(s)
        self._prompt(s)
        s.generated = self.gen_eval(r, [s.prompts[t] for t in s.task_ids], cfg.candidates, s.adapter,
                                    round_seed(cfg.seed, r), s.files)
        self._update_memory(s)
        self._train(s)
        if self.dist.is_main:  # only rank 0 keeps pairs (and writes them)
            self._pairs(s)
        if self.dpo_trainer is not None and isinstance(cfg.dpo.every, int) and r % cfg.dpo.every == 0:
            self._dpo(s)
        if cfg.validation.every and r % cfg.validation.every == 0 and self._validates() and r != cfg.rounds:
            s.validation = self._validate(r, s.adapter, "round")
        run_on_main(self.dist, f"round {r}: commit", self._commit, s)  # also the end-of-round barrier
        return s.adapter

    def _schedule(self, s: RoundState) -> None:
        with self.timer.stage(s.round, "schedule") as info:
            s.schedule, s.before = run_on_main(self.dist, f"round {s.round}: schedule", self._pick_tasks, s)
            info.update(new=len(s.schedule.new), review=len(s.schedule.review))
        if not s.task_ids:
            log.info("round %d: nothing to schedule (all tasks graduated or skipped)", s.round)

    def _pick_tasks(self, s: RoundState) -> tuple[Schedule, dict[str, ReviewState]]:
        """Rank 0: the scheduler's tasks and their memory before the round (new ones: initial)."""
        assert self.ledger is not None
        self.ledger.prepare_round_dir(s.round)
        schedule = self.scheduler.schedule(s.round, self.config.batch_size, self.ledger)
        if repeated := schedule.repeated():
            raise StageError(
                f"round {s.round}: scheduler {self.config.stages.scheduler.name!r} named tasks more than once: "
                f"{', '.join(repeated[:5])}{' ...' if len(repeated) > 5 else ''} ({len(repeated)} in all); "
                "a round works on each task once, as new or as review."
            )
        states = self.ledger.get_states(schedule.review)
        for tid in schedule.new:
            states[tid] = self.memory.initial(self.tasks[tid])
        s.files.schedule(schedule)
        return schedule, {t: states[t] for t in schedule.task_ids}

    def _prompt(self, s: RoundState) -> None:
        with self.timer.stage(s.round, "prompt") as info:
            # a review task with a failing attempt in the ledger gets a reflection prompt when the
            # builder has build_reflection (reflect); new tasks and validation always get build
            attempts = self._review_attempts(s)
            s.prompts = {t: self.prompt_builder.build_reflection(self.tasks[t], attempts[t]) if t in attempts
                         else self.prompt_builder.build(self.tasks[t]) for t in s.task_ids}
            if attempts:
                info["reflect"] = len(attempts)
            s.files.prompts(s.prompts.values())

    def _reflects(self) -> bool:
        return callable(getattr(self.prompt_builder, "build_reflection", None))

    def _review_attempts(self, s: RoundState) -> dict[str, FailedAttempt]:
        """The review tasks' last failing attempts (rank 0 reads the ledger; every rank gets them)."""
        if not s.schedule.review or not self._reflects():
            return {}
        return run_on_main(self.dist, f"round {s.round}: failed attempts",
                           lambda: self.ledger.failed_attempts(s.schedule.review))

    def _failed_attempts(self, s: RoundState) -> dict[str, FailedAttempt | None]:
        """Rank 0, at commit: each scheduled task's new last failing attempt (see
        :func:`~srscode.core.reflection.last_failed_attempts`)."""
        return last_failed_attempts(s.round, s.task_ids, s.generated.candidates, s.generated.verdicts, self.tasks,
                                    default_paths(self.run_dir))

    def _update_memory(self, s: RoundState) -> None:
        with self.timer.stage(s.round, "memory"):
            # rank 0's update is the one committed; every rank trains with its weights
            s.task_rate, s.after = run_on_main(self.dist, f"round {s.round}: memory", self._review, s)

    def _review(self, s: RoundState) -> tuple[dict[str, float], dict[str, ReviewState]]:
        """Rank 0: each task's mean pass rate and its memory after this review."""
        rates: dict[str, list[float]] = {}
        for v in s.generated.verdicts:
            rates.setdefault(v.task_id, []).append(v.pass_rate)
        task_rate = {t: sum(x) / len(x) for t, x in rates.items()}
        after = {t: self.memory.update(s.before[t], task_rate.get(t, 0.0), s.round) for t in s.task_ids}
        s.files.memory(after.values())
        return task_rate, after

    def _train(self, s: RoundState) -> None:
        with self.timer.stage(s.round, "train") as info:
            target = self.config.sft.target
            # reference (the default): every scheduled task, its reference solution; otherwise
            # s.generated is gathered on every rank, so every rank picks the same examples
            passing = {} if target == "reference" else own_passing_code(s.generated.candidates,
                                                                        s.generated.verdicts)
            picked = [self._sft_example(s, t, passing.get(t)) for t in s.task_ids]
            examples = [e for e in picked if e is not None]
            if target != "reference":
                own = sum(1 for t in s.task_ids if t in passing)
                s.sft_metrics = {"sft_examples": float(len(examples)), "sft_own_pass": float(own)}
                info.update(s.sft_metrics)
                if not examples:
                    log.info("round %d: no SFT examples (sft.target %s: %s); training skipped", s.round, target,
                             "no candidate passed" if target == "own_pass" else "no candidate passed, no reference")
            if not examples:
                return
            # every rank trains (the trainer's accelerate shards the data); an exception here
            # ends this process and the launcher stops the others (collectives are inside)
            result = self.trainer.train_sft(examples, s.adapter, s.files.folder / "adapter")
            s.adapter = self._same_adapter(s.round, "train", result.adapter)
            s.train_metrics = dict(result.metrics)
            info.update(result.metrics)

    def _sft_example(self, s: RoundState, task_id: str, own: str | None = None) -> SFTExample | None:
        """The task's SFT example on the prompt it got this round: its own passing code ``own``
        when given (sft.target own_pass/mixed), else the reference; None when the target has
        nothing to train on (own_pass without a pass; mixed without a pass or a reference)."""
        task, prompt = self.tasks[task_id], s.prompts[task_id]
        target = self.config.sft.target
        if own is None and (target == "own_pass" or (target == "mixed" and not task.solution.strip())):
            return None
        completion = (self.prompt_builder.render_target(task, prompt) if own is None
                      else self.prompt_builder.render_target(task, prompt, code=own))
        return SFTExample(task_id, prompt.text, completion, self.memory.weight(s.after[task_id]))

    def _pairs(self, s: RoundState) -> None:
        cfg = self.config.dpo
        reference = self._reference_target(s) if cfg.reference_as_chosen else None
        with self.timer.stage(s.round, "pairs") as info:
            s.pairs = build_pairs(s.prompts, s.generated.candidates, s.generated.verdicts, cfg.max_pairs_per_task,
                                  self.config.seed, reference)
            info["pairs"] = len(s.pairs)
            s.files.pairs(s.pairs)

    def _reference_target(self, s: RoundState) -> Callable[[str], str]:
        """task id -> its reference solution as the prompt builder's training target."""
        return lambda tid: self.prompt_builder.render_target(self.tasks[tid], s.prompts[tid])

    def _dpo(self, s: RoundState) -> None:
        with self.timer.stage(s.round, "dpo") as info:
            window = run_on_main(self.dist, f"round {s.round}: DPO pairs", self._dpo_window, s)
            if window:
                assert self.dpo_trainer is not None
                res = self.dpo_trainer.train_pairs(window, s.adapter, s.files.folder / "adapter-dpo")
                s.adapter = self._same_adapter(s.round, "dpo", res.adapter)
                s.dpo_metrics = prefixed("dpo_", res.metrics)
            s.dpo_metrics["dpo_pairs_trained"] = float(len(window))
            info.update(s.dpo_metrics)

    def _dpo_window(self, s: RoundState) -> list[DPOPair]:
        """Rank 0: the pairs of the rounds since the last DPO stage, this one's included."""
        every = self.config.dpo.every
        assert isinstance(every, int)
        return committed_pairs(self.run_dir, s.round - every + 1, s.round - 1) + s.pairs

    def _commit(self, s: RoundState) -> None:
        """Rank 0: the round's metrics, then its files sealed and its ledger row."""
        assert self.ledger is not None
        metrics = round_metrics(self.ledger, s, self.timer.seconds, self.dist.world)
        s.files.metrics(metrics)
        attempts = self._failed_attempts(s) if self._reflects() else None
        self.ledger.commit_round(s.round, s.schedule.new, s.schedule.review, metrics, self.scheduler.state_dict(),
                                 list(s.after.values()), s.adapter, attempts)
        self._notify("srscode_round_end", round=s.round, metrics=metrics)

    def _same_adapter(self, r: int, stage: str, adapter: AdapterRef | None) -> AdapterRef | None:
        """Every rank must continue from the adapter rank 0 saved (same content hash)."""
        adapter = shared_adapter(self.dist, f"round {r}: {stage} adapter", adapter)
        shas = run_everywhere(self.dist, f"round {r}: {stage} adapter", _sha, adapter)
        if len(set(shas)) > 1:
            held = ", ".join(f"rank {k}: {(sha or 'none')[:12]}" for k, sha in enumerate(shas))
            raise StageError(
                f"round {r}: after {stage}, the ranks hold different adapters "
                f"({held}); the trainer must "
                "save once (rank 0) into a folder every rank reads, and every rank must train."
            )
        return adapter

    # ----------------------------------------------------------------- after the rounds
    def _dpo_at_end(self, adapter: AdapterRef | None) -> AdapterRef | None:
        """The final DPO stage (``dpo.every: end``) unless committed; its adapter when it was."""
        done, done_adapter = run_on_main(self.dist, "reading the final DPO stage", final_dpo, self.ledger)
        if done:
            return done_adapter
        if self.dpo_trainer is None or self.config.dpo.every != "end":
            return adapter
        r = self.config.rounds
        out = self.run_dir / "final" / "adapter-dpo"
        with self.timer.stage(r, "dpo") as info:
            pairs = run_on_main(self.dist, "final DPO: pairs", self._final_dpo_window, out)
            metrics: dict[str, float] = {"dpo_pairs_trained": float(len(pairs))}
            if pairs:
                res = self.dpo_trainer.train_pairs(pairs, adapter, out)
                adapter = self._same_adapter(r, "final DPO", res.adapter)
                metrics.update(prefixed("dpo_", res.metrics))
            info.update(metrics)
        run_on_main(self.dist, "final DPO: commit", self._commit_final_dpo, metrics, adapter, len(pairs))
        return adapter

    def _final_dpo_window(self, out: Path) -> list[DPOPair]:
        """Rank 0: every round's pairs, with ``out`` cleared of an abandoned attempt."""
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return committed_pairs(self.run_dir, 1, self.config.rounds)

    def _commit_final_dpo(self, metrics: Mapping[str, float], adapter: AdapterRef | None, n_pairs: int) -> None:
        assert self.ledger is not None
        self.ledger.commit_stage(FINAL_DPO, metrics, adapter)
        log.info("final DPO stage: %d pairs", n_pairs)

    def _validates(self) -> bool:
        """Whether there is a validation set: the held-out split (unless turned off) or a source."""
        return bool(self.config.validation.held_out and self.split.val) or bool(self.val_sources)

    def _validation_missing(self, key: int) -> bool:
        return self._validates() and not run_on_main(self.dist, "reading validations", validated, self.ledger, key)

    def _validate(self, key: int, adapter: AdapterRef | None, label: str) -> dict[str, Any] | None:
        """Validation split across ranks like generation; rank 0 records it (other ranks get None).

        The top-level metrics are the held-out split's; each of ``validation.sources`` is
        validated with the same candidates and k and recorded under ``sources.<label>``.
        Every set records ``per_task: {task_id: [n_passed, n_samples]}``."""
        cfg = self.config.validation
        ks = [k for k in cfg.k if k <= cfg.candidates]
        with self.timer.stage(key, "validate") as info:
            metrics: dict[str, Any] = {}
            held_out: dict[str, list[int]] | None = None
            n_candidates = 0
            if cfg.held_out and self.split.val:
                prompts = [self.prompt_builder.build(self.tasks[t]) for t in self.split.val]
                ge = self.gen_eval(key, prompts, cfg.candidates, adapter,
                                   round_seed(self.config.seed, key, "validate"), timed=False)
                metrics = summarize(ge.verdicts, ks)
                held_out, n_candidates = per_task(ge.verdicts), len(ge.candidates)
            metrics.update(label=label, adapter=adapter.sha256 if adapter else None, candidates=n_candidates)
            info.update({k: v for k, v in metrics.items() if isinstance(v, float)})
            if held_out is not None:
                metrics["per_task"] = held_out
            sources = {name: self._validate_source(key, name, adapter, ks) for name in self.val_sources}
            if sources:
                metrics["sources"] = sources
                info["sources"] = {name: {k: v for k, v in m.items() if isinstance(v, float)}
                                   for name, m in sources.items()}
        run_on_main(self.dist, "recording validation", self._record_validation, key, metrics)
        return metrics if self.dist.is_main else None

    def _validate_source(self, key: int, name: str, adapter: AdapterRef | None, ks: Sequence[int]) -> dict[str, Any]:
        """One of ``validation.sources``: all its tasks, ``validation.candidates`` samples each.
        ``ctx.tasks`` names its tasks meanwhile (a generator such as replay reads them there)."""
        cfg = self.config.validation
        tasks, gen_eval = self.val_sources[name]
        prompts = [self.prompt_builder.build(t) for t in tasks.values()]
        previous, self.ctx.tasks = self.ctx.tasks, tasks
        try:
            ge = gen_eval(key, prompts, cfg.candidates, adapter, round_seed(self.config.seed, key, f"validate:{name}"),
                          timed=False)
        finally:
            self.ctx.tasks = previous
        metrics = validation_metrics(ge.verdicts, ks, len(ge.candidates))
        if self.dist.is_main:
            scores = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("pass@") and "ci" not in k)
            log.info("validation %s on %s: %s on %d tasks", key, name, scores or "no scores", len(tasks))
        return metrics

    def _record_validation(self, key: int, metrics: Mapping[str, Any]) -> None:
        assert self.ledger is not None
        self.ledger.record_validation(key, metrics)


    # ----------------------------------------------------------------- retention probe
    def _probe_due(self, r: int) -> bool:
        """Whether the every-k retention probe of round ``r`` is due and not recorded (the
        last round's is the final probe's when ``retention.at_end`` is on)."""
        cfg = self.config.retention
        if not cfg.every or r % cfg.every or (r == self.config.rounds and cfg.at_end):
            return False
        return self._probe_missing(r)

    def _probe_missing(self, key: int) -> bool:
        return not run_on_main(self.dist, "reading retention probes", lambda: key in self.ledger.retention_probes())

    def _probe(self, key: int, adapter: AdapterRef | None, label: str) -> None:
        """Re-test every ever-solved training task with ``adapter`` (see
        :mod:`.retention_probe`); split across ranks like validation, recorded by rank 0."""
        cfg = self.config.retention
        ids = run_on_main(self.dist, "retention probe: tasks", self._probe_tasks, key)
        # untimed and not a lifecycle stage: observers read "validate" stages as validations
        prompts = [self.prompt_builder.build(self.tasks[t]) for t in ids]
        ge = self.gen_eval(key, prompts, cfg.candidates, adapter,
                           round_seed(self.config.seed, key, "retention"), timed=False)
        result = summarize_probe(ge.verdicts, ids, cfg.threshold)
        result.update(label=label, adapter=adapter.sha256 if adapter else None, candidates=cfg.candidates)
        run_on_main(self.dist, "recording the retention probe", self._record_probe, key, result)

    def _probe_tasks(self, key: int) -> list[str]:
        assert self.ledger is not None
        solved = self.ledger.ever_solved(self.config.retention.threshold, min(key, self.config.rounds))
        return probe_tasks(solved, self.split.train)

    def _record_probe(self, key: int, result: Mapping[str, Any]) -> None:
        assert self.ledger is not None
        self.ledger.record_retention_probe(key, result)
        log.info("retention probe (%s, after round %d): %d of %d ever-solved training tasks still solved",
                 result["label"], min(key, self.config.rounds), result["solved"], result["tasks"])


def _stop_on_signal(signum: int, frame: Any) -> None:
    # abandon the current stage: the round in progress is not committed and is redone on
    # resume; the lock is released in ``Engine.run``'s ``finally``
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}")


def _sha(adapter: AdapterRef | None) -> str | None:
    return adapter.sha256 if adapter else None


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
