"""Trainer ``none``: trains nothing and keeps the current adapter; for dry runs of a
curriculum with the ``replay`` generator, where there is no model to train."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from srscode.core.hookspecs import hookimpl
from srscode.core.types import AdapterRef, ComponentSpec, DPOPair, SFTExample, TrainResult


class NullTrainer:
    adapter_rank = None  # it saves no adapter

    def train_sft(self, examples: Sequence[SFTExample], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        return TrainResult(adapter=init, metrics={"sft_examples": float(len(examples))})

    def train_pairs(self, pairs: Sequence[DPOPair], init: AdapterRef | None, out_dir: Path) -> TrainResult:
        return TrainResult(adapter=init, metrics={"pairs_seen": float(len(pairs))})


def _factory(params: Any, ctx: Any) -> NullTrainer:
    return NullTrainer()


@hookimpl
def srscode_trainers():
    yield ComponentSpec("none", _factory, None, "no training (dry runs)")
