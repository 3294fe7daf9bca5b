"""Packed DPO (``lib/packed_preference.py``): steps of whole pairs in fixed-shape rows, and on
them TRL's sigmoid DPO loss, rewards and token counts, as TRL computes them on padded batches."""
from __future__ import annotations

import math
import random

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx, make_lora_adapter
from test_graphed_layers import _ctx_with_graphs, emulated_make_graphed_callables

from srscode.core.errors import StageError
from srscode.core.types import AdapterRef, DPOPair

PROMPT = "<|im_start|>user\nWrite f{i}.<|im_end|>\n<|im_start|>assistant\n"


def _pairs(n: int = 10) -> list[DPOPair]:
    return [DPOPair(f"t{i}", PROMPT.format(i=i), f"def f{i}(x):\n" + "    x = x + 1\n" * (1 + i % 4) + "    return x\n",
                    f"def f{i}(x):\n    return None\n" * (1 + i % 2)) for i in range(n)]


def _tokenized(n: int, seed: int = 0, longest: int = 40) -> list[dict]:
    rnd = random.Random(seed)
    return [{"prompt_ids": [rnd.randrange(3, 50) for _ in range(rnd.randrange(1, 12))],
             "chosen_ids": [rnd.randrange(3, 50) for _ in range(rnd.randrange(1, longest))],
             "rejected_ids": [rnd.randrange(3, 50) for _ in range(rnd.randrange(1, longest))]} for _ in range(n)]


def test_every_pair_is_planned_once_with_both_sequences_in_one_step_and_rows_within_length():
    from srscode.plugins.lib.packed_preference import PackedPairSteps

    pairs = _tokenized(200)
    steps = PackedPairSteps(pairs, rows=4, row_length=48)
    seen = []
    for step in steps.steps:
        assert len(step) == 4
        in_step = [(p, w) for row in step for p, w in row]
        assert sorted(w for p, w in in_step if p == in_step[0][0]) == [0, 1]
        for p in {p for p, _ in in_step}:
            assert sorted(w for q, w in in_step if q == p) == [0, 1], "a pair split across steps"
        for row in step:
            assert sum(len(steps.sequences[p][w][0]) for p, w in row) <= 48
        seen += in_step
    assert sorted(seen) == sorted((p, w) for p in range(200) for w in (0, 1))
    # truncated as TRL's collator truncates (keep the start), completion mask alongside
    longest = max(range(200), key=lambda i: len(pairs[i]["prompt_ids"]) + len(pairs[i]["chosen_ids"]))
    ids, mask = steps.sequences[longest][0]
    assert ids == (pairs[longest]["prompt_ids"] + pairs[longest]["chosen_ids"])[:48] and len(mask) == len(ids)
    # packing wins: few more steps than the tokens need
    tokens = sum(len(s[0]) for pair in steps.sequences for s in pair)
    assert len(steps) <= math.ceil(tokens / (4 * 48)) * 1.25 + 1


def test_one_row_a_step_is_refused():
    from srscode.plugins.lib.packed_preference import PackedPairSteps

    with pytest.raises(ValueError, match="at least 2 rows"):
        PackedPairSteps(_tokenized(3), rows=1, row_length=64)


def test_collated_step_labels_completions_only_and_maps_each_sequence_to_its_pair():
    from srscode.plugins.lib.packed_preference import PackedPairsCollator, PackedPairSteps

    pairs = [{"prompt_ids": [11, 12], "chosen_ids": [21, 22, 23], "rejected_ids": [31]},
             {"prompt_ids": [13], "chosen_ids": [24], "rejected_ids": [32, 33]}]
    steps = PackedPairSteps(pairs, rows=2, row_length=8)
    assert len(steps) == 1
    batch = PackedPairsCollator(pad_token_id=0, row_length=8)([steps[0]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["sequence_slot"].shape == (2, 8)
    ids, pos, lab, slot = (batch[k].tolist() for k in ("input_ids", "position_ids", "labels", "sequence_slot"))
    # rebuild each sequence from its slot: chosen of pair j is slot j, rejected 2 + j, padding 4
    seqs = {}
    for r in range(2):
        for t in range(8):
            seqs.setdefault(slot[r][t], []).append((ids[r][t], pos[r][t], lab[r][t]))
    wanted = {(11, 12, 21, 22, 23): [-100, -100, 21, 22, 23], (11, 12, 31): [-100, -100, 31],
              (13, 24): [-100, 24], (13, 32, 33): [-100, 32, 33]}
    got = {tuple(i for i, _, _ in s): [label for _, _, label in s] for k, s in seqs.items() if k != 4}
    assert got == wanted
    for k, s in seqs.items():
        assert [p for _, p, _ in s][:1] == [0]  # positions restart at each sequence
    chosen_slots = {tuple(i for i, _, _ in seqs[j]) for j in (0, 1)}
    assert chosen_slots == {(11, 12, 21, 22, 23), (13, 24)}
    # slot j and 2 + j belong to the same pair (same prompt)
    for j in (0, 1):
        assert seqs[j][0][0] == seqs[2 + j][0][0]
    assert all(label == -100 for _, _, label in seqs.get(4, []))
    assert int(batch["token_count"]) == 2 + 3 + 2 + 1 + 1 + 1 + 1 + 2
    assert batch["completion_tokens"].tolist() == [
        sum(label != -100 for _, _, label in seqs[k]) for k in range(4)]


def _trainer(ctx, adapter, scratch, **params):
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage
    from srscode.plugins.train.lora_sft import peft_model_for

    p = DPOParams(**{**dict(r=4, alpha=8, dropout=0.0, lr=1e-2, batch_size=4, max_length=64, log_every=100), **params})
    stage = DPOTrainerStage(p, ctx)
    return stage, stage.build_trainer(_pairs(), peft_model_for(ctx, adapter, p), str(scratch))


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory):
    path = make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("sft") / "adapter", seed=5, scale=0.2)
    return AdapterRef.from_dir(path)


def test_packed_loss_and_rewards_equal_trls_on_the_same_pairs(tiny_model_dir, sft_adapter, tmp_path):
    """One step holding all pairs, packed, against TRL's own loss on its padded batch of the
    same pairs, with the policy moved off the reference (so the rewards are not zero)."""
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from srscode.plugins.lib.packed_preference import PackedPairSteps
    from srscode.plugins.train.lora_sft import restore_base

    ctx = make_ctx(tiny_model_dir, dpo={"beta": 0.5})
    _, trainer = _trainer(ctx, sft_adapter, tmp_path, packing=True, batch_size=40)
    model = trainer.model
    try:
        steps = trainer.train_dataset
        assert trainer.srscode_packed and isinstance(steps, PackedPairSteps) and len(steps) == 1
        assert trainer.args.per_device_train_batch_size == 1  # one planned step an item
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, w in model.named_parameters():
                if "lora_B.default" in name:
                    w.add_(0.3 * torch.randn(w.shape, generator=gen))
        model.train()
        ours = float(trainer.compute_loss(model, trainer.data_collator([steps[0]])).detach())
        trainer.flush_preference_metrics("train")
        mine = {k: v[0] for k, v in trainer._metrics["train"].items()}
        trainer._metrics["train"].clear()
        pad = trainer.processing_class.pad_token_id
        padded = DataCollatorForPreference(pad_token_id=pad, max_length=64)([steps.pairs[i] for i in range(len(steps.pairs))])
        theirs = float(DPOTrainer.compute_loss(trainer, model, padded).detach())
        trl = {k: sum(v) / len(v) for k, v in trainer._metrics["train"].items()}
        assert abs(ours - math.log(2)) > 1e-3, "the policy should differ from the reference"
        assert ours == pytest.approx(theirs, rel=1e-5)
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                    "logps/rejected", "entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy"):
            assert mine[key] == pytest.approx(trl[key], rel=1e-4, abs=1e-6), key
        assert 0.0 < mine["rewards/accuracies"] < 1.0 or mine["rewards/margins"] != 0.0
    finally:
        restore_base(ctx, model)


def _stage_metrics(ctx, adapter, out, **params):
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage

    p = DPOParams(**{**dict(r=4, alpha=8, dropout=0.0, lr=1e-2, batch_size=4, max_length=64, log_every=1), **params})
    return DPOTrainerStage(p, ctx).train_pairs(_pairs(), adapter, out)


def test_the_stage_trains_packed_steps_through_graphed_layers(tiny_model_dir, sft_adapter, tmp_path):
    """dpo with a backend that captures graphs (emulated): packed steps, the policy's layers
    replayed, the reference's run eagerly; the first loss is log 2 (the reference is the
    policy at the start); every real token counted; the adapter trained and saved."""
    from pathlib import Path

    from safetensors.torch import load_file

    from srscode.plugins.lib.packed_preference import PackedPairSteps
    from srscode.plugins.train.lora_sft import restore_base

    ctx = _ctx_with_graphs(tiny_model_dir, emulated_make_graphed_callables)
    result = _stage_metrics(ctx, sft_adapter, tmp_path / "packed", epochs=2.0)
    m = result.metrics
    assert m["dpo_packed"] == 1.0 and m["dpo_graph_captures"] == 1.0
    # every step has its 4 rows, so every policy pass replays; no reference pass does
    assert m["dpo_graph_replayed"] == pytest.approx(0.5)
    assert m["dpo_first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert math.isfinite(m["dpo_loss"]) and m["dpo_loss"] != pytest.approx(math.log(2), abs=1e-4)
    assert 0.0 <= m["dpo_reward_accuracy"] <= 1.0 and math.isfinite(m["dpo_reward_margin"])
    # tokens: both sequences of every pair (as TRL tokenised them), each epoch
    _, probe = _trainer(make_ctx(tiny_model_dir), sft_adapter, tmp_path / "probe", packing=True)
    restore_base(make_ctx(tiny_model_dir), probe.model)
    assert isinstance(probe.train_dataset, PackedPairSteps)
    per_epoch = sum(len(s[0]) for pair in probe.train_dataset.sequences for s in pair)
    assert m["dpo_tokens"] == 2 * per_epoch
    before = load_file(str(Path(sft_adapter.path) / "adapter_model.safetensors"))
    after = load_file(str(Path(result.adapter.path) / "adapter_model.safetensors"))
    assert any(not bool((before[k] == after[k]).all()) for k in before if k in after)


def test_packing_stays_off_without_graphs_and_unsupported_settings_are_clear_errors(tiny_model_dir, sft_adapter,
                                                                                     tmp_path):
    ctx = make_ctx(tiny_model_dir, dpo={"beta": 0.1})  # the CPU backend captures no graphs: TRL's padded batches
    assert _stage_metrics(ctx, sft_adapter, tmp_path / "cpu").metrics["dpo_packed"] == 0.0
    graphs = _ctx_with_graphs(tiny_model_dir, emulated_make_graphed_callables)
    assert _stage_metrics(graphs, sft_adapter, tmp_path / "hinge", loss_type="hinge").metrics["dpo_packed"] == 0.0
    assert _stage_metrics(graphs, sft_adapter, tmp_path / "one", batch_size=1).metrics["dpo_packed"] == 0.0
    with pytest.raises(StageError, match="packing is true but loss_type"):
        _stage_metrics(ctx, sft_adapter, tmp_path / "e1", packing=True, loss_type="hinge")
    with pytest.raises(StageError, match="packing is true but batch_size is 1"):
        _stage_metrics(ctx, sft_adapter, tmp_path / "e2", packing=True, batch_size=1)
    with pytest.raises(StageError, match="graphs is true but packing is false"):
        _stage_metrics(graphs, sft_adapter, tmp_path / "e3", packing=False, graphs=True)
    with pytest.raises(StageError, match="graphs is true but the 'cpu' backend captures no graphs"):
        _stage_metrics(ctx, sft_adapter, tmp_path / "e4", graphs=True)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device: real graph capture")
def test_cuda_packed_dpo_through_real_graphs_trains_as_the_eager_layers(tiny_model_dir, sft_adapter, tmp_path):
    """torch.cuda.make_graphed_callables itself under bf16 autocast: the policy's layers
    replayed, the reference's eager, the same losses as the eager layers on the same steps."""
    import types

    import torch

    def cuda_ctx():
        ctx = make_ctx(tiny_model_dir)
        runner = types.SimpleNamespace(make_graphed_callables=torch.cuda.make_graphed_callables)
        ctx._backend = types.SimpleNamespace(device=torch.device("cuda"), torch_dtype=torch.bfloat16,
                                             dtype_name="bf16", mixed_precision="bf16", use_cpu=False, name="cuda",
                                             varying_shapes=True, graph_runner=lambda: runner)
        return ctx

    runs = {g: _stage_metrics(cuda_ctx(), sft_adapter, tmp_path / str(g), packing=True, graphs=g, epochs=3.0).metrics
            for g in (True, False)}
    graphed, eager = runs[True], runs[False]
    assert graphed["dpo_graph_captures"] == 1.0 and graphed["dpo_graph_replayed"] == pytest.approx(0.5)
    assert eager["dpo_graph_captures"] == 0.0
    assert graphed["dpo_first_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert graphed["dpo_loss"] == pytest.approx(eager["dpo_loss"], rel=2e-2)
    assert graphed["dpo_tokens"] == eager["dpo_tokens"]


def _dpo_reads_per_step(ctx, adapter, scratch, **params):
    from transformers import TrainerCallback

    from srscode.plugins.train import lora_sft
    from srscode.plugins.train.dpo import dpo_speedups
    from test_deferred_metrics import ReadCounter

    stage, trainer = _trainer(ctx, adapter, scratch, **{"log_every": 100, "epochs": 3.0, **params})
    counter = ReadCounter()
    per_step, logged = [], []

    class Steps(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.last = counter.reads

        def on_step_end(self, args, state, control, **kw):
            per_step.append(counter.reads - self.last)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                logged.append(state.global_step)

    trainer.add_callback(Steps())
    lora_sft.quiet_logs(trainer)
    try:
        with dpo_speedups(stage, trainer, trainer.model), counter.mode:
            trainer.train()
    finally:
        lora_sft.restore_base(ctx, trainer.model)
    return trainer, per_step, logged


def test_packed_steps_between_logs_read_nothing(tiny_model_dir, sft_adapter, tmp_path):
    """The attack: a per-step read (TRL's DPO metrics read ~19 scalars a step) shows up as
    reads in the steps that do not log; packed DPO keeps its metrics on the device."""
    ctx = _ctx_with_graphs(tiny_model_dir, emulated_make_graphed_callables)
    trainer, per_step, logged = _dpo_reads_per_step(ctx, sft_adapter, tmp_path / "packed")
    assert trainer.srscode_packed
    assert len(per_step) >= 4 and logged == [1, len(per_step)], (per_step, logged)
    quiet = [n for i, n in enumerate(per_step, start=1) if i not in logged]
    assert quiet == [0] * len(quiet), per_step
    # the counter sees TRL's own DPO loss reading every step
    trainer, shipped, _ = _dpo_reads_per_step(ctx, sft_adapter, tmp_path / "padded", packing=False)
    assert not trainer.srscode_packed and min(shipped) >= 10, shipped
