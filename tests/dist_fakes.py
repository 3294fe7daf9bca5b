"""Stages for the data-parallel tests, loaded in `accelerate launch`ed processes through
``SRSCODE_PLUGINS=dist_fakes`` (with tests/ on PYTHONPATH).

* ``rank-train``: a trainer that behaves like ``lora-sft`` under accelerate: every rank is
  called with the same examples, only rank 0 writes the adapter folder, then all ranks
  wait and hash the same files (``fake_stages.FakeTrainer`` writes on every rank, which
  would race on a shared folder).
* ``rank-fail``: the replay generator that raises on the rank named by
  ``SRSCODE_TEST_FAIL_RANK`` in the round named by ``SRSCODE_TEST_FAIL_ROUND`` (default 2).
* ``SRSCODE_TEST_WRITE_AUDIT=LOGDIR:RUNDIR``: an audit hook (``sys.addaudithook``) appends
  to ``LOGDIR/rank<N>.log`` every path under RUNDIR this process opens for writing,
  renames or removes, and every SQLite database it opens there.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from srscode.core.generate_evaluate import round_seed
from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, ComponentSpec, TrainResult
from srscode.plugins.generate.replay import ReplayGenerator, ReplayParams


def _install_write_audit(spec: str) -> None:
    import sys

    log_dir, _, run_dir = spec.partition(":")
    root = os.path.abspath(run_dir)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log_path = os.path.join(log_dir, f"rank{_rank()}.log")
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    busy = [False]

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        path = None
        if event == "open":
            p, mode, flags = args
            if (isinstance(mode, str) and any(ch in mode for ch in "wax+")) or (isinstance(flags, int) and flags & writing):
                path = p
        elif event in ("os.rename", "os.remove", "shutil.rmtree", "sqlite3.connect"):
            path = args[0]
        if not isinstance(path, (str, os.PathLike)):
            return
        full = os.path.abspath(os.fspath(path))
        if full == root or full.startswith(root + os.sep):
            busy[0] = True
            try:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(f"{event} {full}\n")
            finally:
                busy[0] = False

    sys.addaudithook(hook)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _barrier() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.barrier()


class RankTrainer:
    def _save(self, out_dir: Path, body: dict[str, Any]) -> AdapterRef:
        out_dir.mkdir(parents=True, exist_ok=True)
        if _rank() == 0:
            (out_dir / "adapter_model.json").write_text(json.dumps(body, sort_keys=True))
        _barrier()
        return AdapterRef.from_dir(out_dir)

    def train_sft(self, examples: Sequence[Any], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        body = {"init": init.sha256 if init else None,
                "examples": sorted((e.task_id, round(e.weight, 6)) for e in examples)}
        return TrainResult(self._save(out_dir, body), {"train_loss": 1.0 / (1 + len(examples))})

    def train_pairs(self, pairs: Sequence[Any], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        body = {"init": init.sha256 if init else None, "pairs": sorted((p.task_id, p.chosen, p.rejected) for p in pairs)}
        return TrainResult(self._save(out_dir, body), {"loss": 0.69})


class RankFailGenerator(ReplayGenerator):
    def generate(self, prompts: Sequence[Any], n: int, adapter: AdapterRef | None, seed: int) -> list[Any]:
        fail_round = int(os.environ.get("SRSCODE_TEST_FAIL_ROUND", "2"))
        if (str(_rank()) == os.environ.get("SRSCODE_TEST_FAIL_RANK")
                and seed == round_seed(self.ctx.config.seed, fail_round)):
            raise RuntimeError(f"injected generator failure on rank {_rank()}")
        return super().generate(prompts, n, adapter, seed)


@hookimpl
def srscode_trainers():
    yield ComponentSpec("rank-train", lambda params, ctx: RankTrainer(), None, "test: rank-0-saves trainer")
    yield ComponentSpec("rank-dpo", lambda params, ctx: RankTrainer(), None, "test: rank-0-saves DPO trainer")


@hookimpl
def srscode_generators():
    yield ComponentSpec("rank-fail", lambda params, ctx: RankFailGenerator(params, ctx), ReplayParams,
                        "test: replay that fails on one rank")


if os.environ.get("SRSCODE_TEST_WRITE_AUDIT"):
    _install_write_audit(os.environ["SRSCODE_TEST_WRITE_AUDIT"])
