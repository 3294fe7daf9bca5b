"""The CPU demo's DPO memory levers (issue 19, part 3): its DPO stage trains one pair per
forward with gradient accumulation instead of four pairs at once, with gradient
checkpointing. Activations (not logits: TRL 1.16's fused LM head never builds the
vocabulary-wide logits) scale with the pairs in a forward and the layers kept, so this
cuts the stage's peak RSS from ~14.6 to ~3.5 GiB. It must not change what is trained: the
same effective batch gives the same loss and the same adapter."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx

from srscode.core.types import DPOPair

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "<|im_start|>user\nWrite f{i}.<|im_end|>\n<|im_start|>assistant\n"
# completions of different lengths, so a batch of several pairs is padded and one is not
PAIRS = [
    DPOPair(f"t{i}", PROMPT.format(i=i), f"def f{i}(x):\n" + "    x = x + 1\n" * i + f"    return x + {i}\n",
            f"def f{i}(x):\n    return None\n")
    for i in range(4)
]


def train(ctx, scratch, batch_size, grad_accum, checkpointing=False):
    """Two optimizer steps of plain SGD (Adam would turn rounding-level gradient noise in
    near-zero entries into lr-sized steps); the losses logged and the trained LoRA weights."""
    import torch

    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage
    from srscode.plugins.train.lora_sft import peft_model_for, restore_base

    p = DPOParams(r=4, alpha=8, lr=0.5, epochs=2, dropout=0.0, batch_size=batch_size, grad_accum=grad_accum,
                  gradient_checkpointing=checkpointing, max_length=64,
                  log_every=1)  # every step's loss
    torch.manual_seed(0)  # the fresh LoRA's random A matrices
    model = peft_model_for(ctx, None, p)
    try:
        trainer = DPOTrainerStage(p, ctx).build_trainer(PAIRS, model, str(scratch), optim="sgd")
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        weights = {n: t.detach().clone() for n, t in model.named_parameters() if t.requires_grad}
    finally:
        restore_base(ctx, model)
    return losses, weights


@pytest.mark.parametrize("checkpointing", [False, True])
def test_accumulation_gives_the_loss_and_adapter_of_the_whole_batch(tiny_model_dir, tmp_path, checkpointing):
    import torch

    ctx = make_ctx(tiny_model_dir, dpo={"beta": 0.1})
    whole, w_whole = train(ctx, tmp_path / "whole", batch_size=4, grad_accum=1)
    accum, w_accum = train(ctx, tmp_path / "accum", batch_size=1, grad_accum=4, checkpointing=checkpointing)
    assert len(whole) == len(accum) == 2  # 2 epochs of one optimizer step each
    assert accum[0] == pytest.approx(math.log(2), abs=1e-5)
    assert accum[1] < accum[0] - 1e-3  # the second step saw a trained adapter
    assert accum == pytest.approx(whole, abs=1e-5)
    assert w_whole.keys() == w_accum.keys()
    for k in w_whole:
        torch.testing.assert_close(w_accum[k], w_whole[k], rtol=1e-3, atol=1e-5)


def test_demo_cpu_trains_dpo_one_pair_per_forward_with_the_same_effective_batch():
    cfg = yaml.safe_load((ROOT / "examples" / "demo-cpu.yaml").read_text())
    p = cfg["dpo"]["params"]
    assert p["batch_size"] == 1 and p["batch_size"] * p.get("grad_accum", 1) == 4
    assert p["gradient_checkpointing"] is True
