"""Generation and evaluation overlapped: when the generator has ``generate_iter`` and the
evaluator ``submit`` / ``results``, the engine submits each batch as it arrives. A slow
fake generator (sleeps per batch) and a fake streaming evaluator (a worker thread,
fixed time per candidate) show that verdicts are produced while later batches are still
being generated, that the round's metrics hold honest spans, and that the candidate-count
and adapter checks still stop a round. Replay's ``generate_iter`` serves what
``generate`` serves."""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Mapping, Sequence

import pytest

import fake_stages
from fake_stages import FakeEvaluator, FakeGenerator, fake_config
from progress_fakes import recording_progress
from srscode.core.config import validate
from srscode.core.engine import Engine
from srscode.core.errors import StageError
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, Candidate, ComponentSpec, Prompt, Task, Verdict

BATCH_DELAY_S = 0.3
EVAL_S = 0.04  # per candidate: a batch (2 tasks x 2 candidates) takes 0.16 s < BATCH_DELAY_S
LOG: dict[str, list[float]] = {}


class SlowStreamingGenerator(FakeGenerator):
    """FakeGenerator's candidates, ``batch`` prompts at a time, each batch after a sleep."""

    def __init__(self, batch: int = 2, drop_one: bool = False, **kw: Any):
        super().__init__(**kw)
        self.batch, self.drop_one = batch, drop_one

    def generate_iter(self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int) -> Iterator[list[Candidate]]:
        try:
            for i in range(0, len(prompts), self.batch):
                time.sleep(BATCH_DELAY_S)
                out = self.generate(prompts[i : i + self.batch], n, adapter, seed)
                LOG.setdefault("batch_done", []).append(time.perf_counter())
                yield out[:-1] if self.drop_one and i == 0 else out
        finally:  # a real generator releases its decoding state (packed weights, a cache) here
            LOG.setdefault("stream_closed", []).append(time.perf_counter())


class ThreadStreamingEvaluator(FakeEvaluator):
    """FakeEvaluator's verdicts, computed by one worker thread, EVAL_S per candidate."""

    def __init__(self) -> None:
        self.todo: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.pending = 0
        threading.Thread(target=self._work, daemon=True).start()

    def _work(self) -> None:
        while True:
            task, cand = self.todo.get()
            time.sleep(EVAL_S)
            (v,) = FakeEvaluator.evaluate(self, {task.task_id: task}, [cand])
            LOG.setdefault("verdict_done", []).append(time.perf_counter())
            self.done.put(v)

    def submit(self, task: Task, candidate: Candidate) -> None:
        LOG.setdefault("submitted", []).append(time.perf_counter())
        self.pending += 1
        self.todo.put((task, candidate))

    def results(self) -> Iterator[Verdict]:
        while self.pending:
            v = self.done.get(timeout=30)
            self.pending -= 1
            yield v

    def evaluate(self, tasks: Mapping[str, Task], candidates: Sequence[Candidate]) -> list[Verdict]:
        time.sleep(EVAL_S * len(candidates))
        return FakeEvaluator.evaluate(self, tasks, candidates)


@hookimpl
def srscode_generators():
    from pydantic import BaseModel, ConfigDict

    class P(BaseModel):
        model_config = ConfigDict(extra="forbid")
        drop_one: bool = False
        ignore_adapter: bool = False

    yield ComponentSpec("slow-stream", lambda p, ctx: SlowStreamingGenerator(drop_one=p.drop_one, ignore_adapter=p.ignore_adapter), P, "test")


@hookimpl
def srscode_evaluators():
    yield ComponentSpec("thread-stream", lambda p, ctx: ThreadStreamingEvaluator(), None, "test")


def config(**over: Any) -> dict:
    cfg = fake_config(rounds=2, batch_size=12, candidates=2, **over)
    cfg["stages"]["generator"] = {"name": "slow-stream"}
    cfg["stages"]["evaluator"] = {"name": "thread-stream"}
    cfg["dpo"] = {"name": "none", "every": "never"}
    cfg["validation"] = {"every": 0, "at_start": False, "at_end": False}
    return cfg


def run(tmp: Path, cfg: dict) -> dict:
    c = validate(cfg)
    return Engine(c, c.model_dump(mode="json"), tmp, extra_plugins=[fake_stages, sys.modules[__name__]], quiet=True).run()


@pytest.fixture(autouse=True)
def _reset():
    LOG.clear()
    fake_stages.reset()
    yield
    fake_stages.reset()


def metrics(run_dir: Path, r: int) -> dict:
    return json.loads((run_dir / "rounds" / f"{r:06d}" / "metrics.json").read_text())


def test_verdicts_arrive_while_later_batches_are_generated(tmp_path):
    cfg = config()
    cfg["rounds"] = 1
    run(tmp_path, cfg)
    m = metrics(tmp_path, 1)
    last_batch = max(LOG["batch_done"])
    # the overlap itself: most verdicts existed before the generator produced its last batch
    early = [t for t in LOG["verdict_done"] if t < last_batch]
    assert len(LOG["verdict_done"]) == m["candidates"] == 24
    assert len(early) >= 24 - 4, (len(early), "verdicts finished before the last batch")
    s = m["streaming"]["seconds"]
    # 6 batches of 0.3 s; evaluating everything takes 24 x 0.04 = 0.96 s, of which only the
    # last batch's 0.16 s may remain after generation
    assert s["generate"] >= 6 * BATCH_DELAY_S
    assert s["evaluation_tail"] < 0.5 * 24 * EVAL_S
    assert s["evaluate"] > s["evaluation_tail"] + 0.5  # the evaluator was busy during generation
    # the round's seconds stay a partition of wall time: evaluate is the tail only
    assert m["seconds"]["evaluate"] == pytest.approx(s["evaluation_tail"], abs=0.05)
    verdicts = [json.loads(x) for x in (tmp_path / "rounds/000001/verdicts.jsonl").read_text().splitlines()]
    cands = [json.loads(x) for x in (tmp_path / "rounds/000001/candidates.jsonl").read_text().splitlines()]
    assert [(v["task_id"], v["index"]) for v in verdicts] == [(c["task_id"], c["index"]) for c in cands]


def test_streamed_run_equals_the_sequential_run(tmp_path):
    run(tmp_path / "stream", config())
    seq = config()
    seq["stages"]["generator"] = {"name": "fake-gen"}  # no generate_iter: the old path
    seq["stages"]["evaluator"] = {"name": "fake-eval"}
    run(tmp_path / "seq", seq)
    for r in (1, 2):
        a, b = tmp_path / "stream" / "rounds" / f"{r:06d}", tmp_path / "seq" / "rounds" / f"{r:06d}"
        for name in ("candidates.jsonl", "verdicts.jsonl", "memory.jsonl", "pairs.jsonl"):
            # the adapter's path names the run dir; its hash is compared
            assert (a / name).read_text().replace("/stream/", "/seq/") == (b / name).read_text(), (r, name)
        assert "streaming" in metrics(tmp_path / "stream", r) and "streaming" not in metrics(tmp_path / "seq", r)


def test_a_missing_candidate_stops_the_streamed_round(tmp_path):
    cfg = config()
    cfg["stages"]["generator"]["params"] = {"drop_one": True}
    with pytest.raises(StageError, match="returned 23 candidates; expected 2 for each of 12 prompts"):
        run(tmp_path, cfg)


def test_the_adapter_check_holds_when_streaming(tmp_path):
    cfg = config()
    cfg["stages"]["generator"]["params"] = {"ignore_adapter": True}
    with pytest.raises(StageError, match="did not apply the adapter") as raised:
        run(tmp_path, cfg)
    assert (tmp_path / "rounds" / "000001" / "COMMIT").exists()  # round 1 (no adapter yet) was fine
    # round 2's wrong candidates were refused before any reached the evaluator
    assert len(LOG["submitted"]) == 24
    # and its stream was closed as the check stopped it, not whenever the traceback (still
    # held here) lets go of the engine's frames
    assert raised.traceback and len(LOG["stream_closed"]) == 2


def test_replay_generate_iter_serves_what_generate_serves():
    from srscode.plugins.generate.replay import ReplayGenerator, ReplayParams
    from srscode.plugins.data.starter import StarterSource

    tasks = {t.task_id: t for t in StarterSource().load(None).tasks}

    gen = ReplayGenerator(ReplayParams(batch_tasks=5), SimpleNamespace(tasks=tasks))
    prompts = [Prompt(t, "p") for t in sorted(tasks)[:12]]
    batches = list(gen.generate_iter(prompts, 3, None, 11))
    assert [len(b) for b in batches] == [15, 15, 6]
    assert [c for b in batches for c in b] == gen.generate(prompts, 3, None, 11)
    assert ReplayGenerator.seeds_per_task is True


def test_the_streamed_evaluation_drives_a_progress_bar_with_status_counts(tmp_path, monkeypatch):
    from srscode.core.context import StageContext

    bars: list = []
    record = recording_progress(bars)
    monkeypatch.setattr(StageContext, "progress", lambda self, *args, **kwargs: record(*args, **kwargs))
    cfg = config()
    cfg["rounds"] = 1
    run(tmp_path, cfg)
    (bar,) = [b for b in bars if b.name == "evaluate"]
    verdicts = [json.loads(x) for x in (tmp_path / "rounds/000001/verdicts.jsonl").read_text().splitlines()]
    assert (bar.unit, bar.total, bar.done) == ("cand", 24, 24)
    statuses: dict = {}
    for v in verdicts:
        statuses[v["status"]] = statuses.get(v["status"], 0) + 1
    assert bar.counts == statuses
