"""The trainers read the device once per log, not once per micro-batch (``lib/deferred_metrics.py``,
``lib/packed_mask.py``), with the same loss, metrics and token counts as the libraries' own.

On the CPU a read is counted where every ``.item()`` and ``if tensor`` lands,
``aten::_local_scalar_dense``; the CUDA-only test counts real synchronisations."""
from __future__ import annotations

import contextlib
import math
import types

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx

from srscode.core.types import DPOPair, SFTExample


def _examples(n: int = 12) -> list[SFTExample]:
    prompt = "<|im_start|>user\nWrite f{i}.<|im_end|>\n<|im_start|>assistant\n"
    return [SFTExample(f"t{i}", prompt.format(i=i), f"def f{i}(x):\n" + "    x = x + 1\n" * (1 + i % 5) + "    return x\n")
            for i in range(n)]


def _sft_trainer(model_dir, scratch, ctx=None, batch_size=1, **overrides):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer, peft_model_for

    ctx = ctx or make_ctx(model_dir)
    p = LoRASFTParams(r=4, alpha=8, dropout=0.0, lr=1e-3, batch_size=batch_size, max_length=48, log_every=100)
    stage = LoRASFTTrainer(p, ctx)
    trainer = stage.build_trainer(_examples(), peft_model_for(ctx, None, p), str(scratch), **overrides)
    return stage, trainer


def _bench():
    """benchmarks/train.py: its `syncs` arm is the baseline these tests hold reads against."""
    import importlib
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    return importlib.import_module("train")


class ReadCounter:
    """Counts ``aten::_local_scalar_dense`` (every ``.item()``, ``bool(tensor)``) while active."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.reads = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
                if func.overloadpacket.__name__ == "_local_scalar_dense":
                    counter.reads += 1
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


def _reads_per_step(stage, trainer, as_shipped: bool):
    """Reads counted in each step of ``trainer.train()`` under the stage's contexts, and the
    steps that logged."""
    from transformers import TrainerCallback

    from srscode.plugins.train import lora_sft

    counter = ReadCounter()
    per_step, logged = [], []

    class Steps(TrainerCallback):
        last = 0

        def on_step_end(self, args, state, control, **kw):
            per_step.append(counter.reads - self.last)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:  # not the run's closing summary
                logged.append(state.global_step)

        def on_step_begin(self, args, state, control, **kw):
            self.last = counter.reads

    trainer.add_callback(Steps())
    lora_sft.quiet_logs(trainer)

    # the libraries as they ship (the benchmark's `syncs` arm): transformers' packed-mask check
    with _bench().packed_mask_as_shipped() if as_shipped else contextlib.nullcontext(), \
            lora_sft.sft_speedups(stage, trainer, trainer.model), counter.mode:
        trainer.train()
    return per_step, logged


def test_steps_between_logs_read_nothing(tiny_model_dir, tmp_path):
    """The attack: any per-micro-batch read (a metric's .item(), a mask check in an `if`, a
    token count, a NaN filter) shows up as reads in the steps that do not log."""
    from srscode.plugins.train.lora_sft import restore_base

    stage, trainer = _sft_trainer(tiny_model_dir, tmp_path / "a")
    per_step, logged = _reads_per_step(stage, trainer, as_shipped=False)
    restore_base(stage.ctx, trainer.model)
    steps = len(per_step)
    assert steps >= 4, per_step
    assert logged == [1, steps]  # the first and the last step (log_every=100; lora_sft.log_last_step)
    quiet = [n for i, n in enumerate(per_step, start=1) if i not in logged]
    assert quiet == [0] * (steps - 2), per_step

    # the counter sees the libraries' reads: as shipped, every step reads several times
    # the benchmark's `syncs` arm: the loss logged every step, the NaN filter and the Trainer's
    # token count (a read each micro-batch), TRL's metrics and transformers' packed-mask check
    stage, trainer = _sft_trainer(tiny_model_dir, tmp_path / "b", **_bench().READ_EACH_STEP)
    trainer.defer_metrics = False
    shipped, _ = _reads_per_step(stage, trainer, as_shipped=True)
    restore_base(stage.ctx, trainer.model)
    assert min(shipped) >= 5, shipped  # TRL's metrics (3+), NaN filter, token count, packed-mask check


def _one_batch(trainer):
    rows = [trainer.train_dataset[i] for i in range(2)]
    return trainer.data_collator(rows)


def test_lean_loss_and_metrics_are_trls(tiny_model_dir, tmp_path):
    """The lean compute_loss gives TRL's loss (with and without num_items_in_batch) and, read
    at the log, TRL's entropy and token accuracy for the same batch."""
    import torch

    from srscode.plugins.train.lora_sft import restore_base

    stage, trainer = _sft_trainer(tiny_model_dir, tmp_path)
    model = trainer.model
    model.train()
    batch = _one_batch(trainer)
    try:
        results = {}
        for defer in (False, True):
            trainer.defer_metrics = defer
            trainer._metrics["train"].clear()
            with torch.no_grad():
                loss = trainer.compute_loss(model, dict(batch))
                loss_n = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(7))
            if defer:
                trainer.flush_metrics("train")
            m = trainer._metrics["train"]
            # TRL appended one value per call (the same batch twice); ours is one value for both
            results[defer] = (float(loss), float(loss_n), m["entropy"][-1], m["mean_token_accuracy"][-1])
        assert results[True] == pytest.approx(results[False], rel=1e-5)
        assert results[True][0] > 0 and not math.isnan(results[True][2])
        assert trainer._metric_sums == {}  # flushed
    finally:
        restore_base(stage.ctx, model)


def test_metrics_over_a_log_interval_weigh_tokens(tiny_model_dir, tmp_path):
    import torch

    from srscode.plugins.train.lora_sft import restore_base

    stage, trainer = _sft_trainer(tiny_model_dir, tmp_path)
    model = trainer.model
    model.train()
    a = trainer.data_collator([trainer.train_dataset[0]])
    b = trainer.data_collator([trainer.train_dataset[1]])
    try:
        per_batch = []
        for batch in (a, b):
            with torch.no_grad():
                trainer.compute_loss(model, dict(batch))
            valid, entropy, correct = trainer._metric_sums.pop("train").tolist()
            per_batch.append((valid, entropy, correct))
        with torch.no_grad():
            trainer.compute_loss(model, dict(a))
            trainer.compute_loss(model, dict(b))
        trainer.flush_metrics("train")
        valid = sum(v for v, _, _ in per_batch)
        assert valid > 0
        assert trainer._metrics["train"]["entropy"] == pytest.approx([sum(e for _, e, _ in per_batch) / valid])
        assert trainer._metrics["train"]["mean_token_accuracy"] == pytest.approx([sum(c for _, _, c in per_batch) / valid])
    finally:
        restore_base(stage.ctx, model)


def test_tokens_seen_are_the_trainers_own_count(tiny_model_dir, tmp_path):
    """lora-sft and dpo: the non-padding tokens counted on the device equal transformers' own
    count (``include_num_input_tokens_seen="non_padding"``, a read per micro-batch)."""
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage
    from srscode.plugins.train.lora_sft import peft_model_for, quiet_logs, restore_base

    seen = {}
    for own in (False, True):
        extra = {"include_num_input_tokens_seen": "non_padding"} if own else {}
        # two rows a batch: the shorter one padded, so a count of every position would differ
        stage, trainer = _sft_trainer(tiny_model_dir, tmp_path / f"sft{own}", batch_size=2, **extra)
        quiet_logs(trainer)
        trainer.train()
        restore_base(stage.ctx, trainer.model)
        ctx = make_ctx(tiny_model_dir)
        pairs = [DPOPair(f"t{i}", e.prompt, e.completion, "def f(x):\n    return 0\n")
                 for i, e in enumerate(_examples(6))]
        p = DPOParams(r=4, alpha=8, dropout=0.0, batch_size=2, max_length=48, log_every=100)
        dpo = DPOTrainerStage(p, ctx).build_trainer(pairs, peft_model_for(ctx, None, p), str(tmp_path / f"dpo{own}"), **extra)
        quiet_logs(dpo)
        dpo.train()
        restore_base(ctx, dpo.model)
        seen[own] = (trainer.state.num_input_tokens_seen, dpo.state.num_input_tokens_seen)
    assert seen[True] == seen[False]
    assert min(seen[True]) > 0


def test_packed_document_numbers_are_transformers_own():
    import torch
    from transformers import masking_utils

    from srscode.plugins.lib.packed_mask import packed_mask_without_sync, packed_sequence_indices

    packed = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]])
    assert torch.equal(packed_sequence_indices(packed), masking_utils.find_packed_sequence_indices(packed))
    one_each = torch.arange(6).repeat(2, 1)
    assert masking_utils.find_packed_sequence_indices(one_each) is None  # transformers: plain causal
    assert packed_sequence_indices(one_each).eq(0).all()  # ours: one document, the same mask
    original = masking_utils.find_packed_sequence_indices
    with packed_mask_without_sync() as on:
        assert on and masking_utils.find_packed_sequence_indices is packed_sequence_indices
    assert masking_utils.find_packed_sequence_indices is original


def test_rows_of_one_document_score_as_plain_causal(tiny_model_dir):
    """Where transformers would skip the mask (every row one document), the block mask of one
    block gives the same logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from srscode.plugins.lib.packed_mask import packed_mask_without_sync

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 10))
    positions = torch.arange(10).repeat(2, 1)
    packed = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2]] * 2)
    with torch.no_grad():
        plain = model(input_ids=ids, position_ids=positions).logits
        plain_packed = model(input_ids=ids, position_ids=packed).logits
        with packed_mask_without_sync():
            ours = model(input_ids=ids, position_ids=positions).logits
            ours_packed = model(input_ids=ids, position_ids=packed).logits
    torch.testing.assert_close(ours, plain)
    torch.testing.assert_close(ours_packed, plain_packed)
    assert not torch.allclose(plain_packed[:, 4:], plain[:, 4:])  # the mask does act on packed rows


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device: real synchronisations")
@pytest.mark.parametrize("compact", [False, True])
def test_cuda_steps_between_logs_do_not_synchronise(tiny_model_dir, tmp_path, monkeypatch, compact):
    """torch's sync debug mode warns at every host synchronisation. Steps that do not log have
    none, but for TRL's compact LM head (CUDA's default: only labelled positions scored), whose
    boolean index and masked scatter synchronise four times a micro-batch (forward and backward;
    measured on an H100)."""
    import warnings

    import torch
    from transformers import TrainerCallback
    from trl.trainer import utils as trl_utils

    from srscode.plugins.train import lora_sft

    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: compact)
    ctx = make_ctx(tiny_model_dir)
    ctx._backend = types.SimpleNamespace(device=torch.device("cuda"), torch_dtype=torch.bfloat16, dtype_name="bf16",
                                         mixed_precision="bf16", use_cpu=False, name="cuda")
    stage, trainer = _sft_trainer(tiny_model_dir, tmp_path, ctx=ctx)
    lora_sft.quiet_logs(trainer)
    per_step, logged = [], []

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = len(caught)

        def on_step_end(self, args, state, control, **kw):
            per_step.append(sum("synchronizing CUDA operation" in str(w.message) for w in caught[self.start:]))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                logged.append(state.global_step)

    trainer.add_callback(Steps())
    with warnings.catch_warnings(record=True) as caught, lora_sft.sft_speedups(stage, trainer, trainer.model):
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    lora_sft.restore_base(ctx, trainer.model)
    quiet = [n for i, n in enumerate(per_step, start=1) if i not in logged]
    assert len(quiet) >= 2, per_step
    assert quiet == [4 if compact else 0] * len(quiet), per_step
