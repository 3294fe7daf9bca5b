"""The CPU demo's SFT memory levers (issue 19, part 3): its ``lora-sft`` stage trains one
packed row per forward with 4 accumulated per optimizer step and gradient checkpointing,
instead of 4 rows at once. Activations (not logits: TRL 1.16 computes the loss through its
chunked LM head, never the vocabulary-wide logits) scale with the tokens in a forward and
the layers kept: ~4 MB per token in fp32 on SmolLM2-135M, so 4 rows of ~580 tokens peaked
at ~10.7 GiB RSS against ~2.4 GiB now. It must not change what is trained: TRL divides the
summed token loss by the tokens of the whole accumulated batch (``num_items_in_batch``),
so the same rows per step give the same loss and the same adapter."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx

from srscode.core.types import SFTExample

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "<|im_start|>user\nWrite f{i}.<|im_end|>\n<|im_start|>assistant\n"
# completions of different lengths (rows of different length: the batch of 4 is padded,
# one row alone is not), each too long to share a 48-token row with another
EXAMPLES = [
    SFTExample(f"t{i}", PROMPT.format(i=i), f"def f{i}(x):\n" + "    x = x + 1\n" * (i + 1) + f"    return x + {i}\n")
    for i in range(5)
]


def train(ctx, scratch, batch_size, grad_accum, checkpointing=False):
    """Two epochs of plain SGD (as in test_dpo_memory: Adam would turn rounding-level
    gradient noise into lr-sized steps); the losses logged and the trained LoRA weights."""
    import torch

    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer, peft_model_for, restore_base

    p = LoRASFTParams(r=4, alpha=8, lr=0.5, epochs=2, dropout=0.0, batch_size=batch_size, grad_accum=grad_accum,
                      gradient_checkpointing=checkpointing, max_length=48,
                      log_every=1)  # every step's loss
    torch.manual_seed(0)  # the fresh LoRA's random A matrices
    model = peft_model_for(ctx, None, p)
    try:
        trainer = LoRASFTTrainer(p, ctx).build_trainer(EXAMPLES, model, str(scratch), optim="sgd")
        rows = len(trainer.get_train_dataloader())
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        weights = {n: t.detach().clone() for n, t in model.named_parameters() if t.requires_grad}
    finally:
        restore_base(ctx, model)
    return rows, losses, weights


@pytest.mark.parametrize("checkpointing", [False, True])
def test_accumulation_gives_the_loss_and_adapter_of_the_whole_batch(tiny_model_dir, tmp_path, checkpointing):
    import torch

    ctx = make_ctx(tiny_model_dir)
    batches, whole, w_whole = train(ctx, tmp_path / "whole", batch_size=4, grad_accum=1)
    rows, accum, w_accum = train(ctx, tmp_path / "accum", batch_size=1, grad_accum=4, checkpointing=checkpointing)
    assert rows == 5 and batches == 2  # one example per row: a step of 4 rows and a step of 1, each epoch
    assert len(whole) == len(accum) == 4
    assert accum[-1] < accum[0]  # it trained
    assert accum == pytest.approx(whole, rel=1e-4, abs=1e-5)
    assert w_whole.keys() == w_accum.keys()
    for k in w_whole:
        torch.testing.assert_close(w_accum[k], w_whole[k], rtol=1e-3, atol=1e-5)


def test_demo_cpu_trains_sft_one_row_per_forward_with_the_same_effective_batch():
    cfg = yaml.safe_load((ROOT / "examples" / "demo-cpu.yaml").read_text())
    p = cfg["stages"]["trainer"]["params"]
    assert p["batch_size"] == 1 and p["batch_size"] * p.get("grad_accum", 1) == 4
    assert p["gradient_checkpointing"] is True
