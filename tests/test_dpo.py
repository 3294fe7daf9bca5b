"""The ``dpo`` trainer on the tiny random Qwen2: the reference is the policy at the stage's
start (so the step-0 loss is log 2), training changes the adapter, only the trained
adapter is saved, and the shared base is left clean."""
from __future__ import annotations

import math

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx, make_lora_adapter
from progress_fakes import recording_progress

from srscode.core.types import AdapterRef, DPOPair

PROMPT = "<|im_start|>user\nWrite f{i}.<|im_end|>\n<|im_start|>assistant\n"
PAIRS = [
    DPOPair(f"t{i}", PROMPT.format(i=i), f"def f{i}(x):\n    return x + {i}\n", f"def f{i}(x):\n    return None\n")
    for i in range(4)
]


@pytest.fixture(scope="module")
def ctx(tiny_model_dir):
    return make_ctx(tiny_model_dir, dpo={"beta": 0.1})


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory):
    """Stands in for the adapter SFT just trained: random, non-zero B, so base + adapter is
    far from the bare base."""
    path = make_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("sft") / "adapter", seed=5, scale=0.2)
    return AdapterRef.from_dir(path)


def dpo(ctx, **params):
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage

    base = dict(r=4, alpha=8, lr=1e-2, epochs=1, batch_size=2, max_length=64)
    base.update(params)
    return DPOTrainerStage(DPOParams(**base), ctx)


def seq_logp(model, tok, prompt: str, completion: str) -> float:
    import torch

    ids = tok(prompt + completion, return_tensors="pt")["input_ids"]
    n_prompt = len(tok(prompt)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    logp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logp[n_prompt - 1 :].sum())


def test_step0_loss_is_log2_because_the_reference_is_the_sft_policy(ctx, sft_adapter, tmp_path):
    from peft import PeftModel

    from srscode.plugins.lib import hf_model

    base, tok = hf_model.load_base(ctx)
    # the adapter moves the policy's log-ratios far from zero against the bare base, so
    # a reference = base would give a step-0 loss far from log 2
    pm = PeftModel.from_pretrained(base, sft_adapter.path)
    with_adapter = [seq_logp(pm, tok, p.prompt, p.chosen) - seq_logp(pm, tok, p.prompt, p.rejected) for p in PAIRS]
    hf_model.unload_lora(pm)
    bare = [seq_logp(base, tok, p.prompt, p.chosen) - seq_logp(base, tok, p.prompt, p.rejected) for p in PAIRS]
    beta = ctx.config.dpo.beta
    loss_if_ref_were_base = sum(-math.log(1 / (1 + math.exp(-beta * (w - b)))) for w, b in zip(with_adapter, bare)) / 4
    assert abs(loss_if_ref_were_base - math.log(2)) > 0.01  # 100x the tolerance below

    result = dpo(ctx).train_pairs(PAIRS, sft_adapter, tmp_path / "dpo")
    assert result.metrics["dpo_first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert result.metrics["dpo_pairs"] == 4 and result.metrics["dpo_steps"] == 2


def test_dpo_changes_the_adapter_and_saves_only_it(ctx, sft_adapter, tmp_path):
    from safetensors.torch import load_file

    from srscode.plugins.lib import hf_model

    base = ctx.models.base_model or hf_model.load_base(ctx)[0]
    result = dpo(ctx, epochs=2).train_pairs(PAIRS, sft_adapter, tmp_path / "dpo")
    out = tmp_path / "dpo"
    assert result.adapter == AdapterRef.from_dir(out) and result.adapter.sha256 != sft_adapter.sha256
    assert not (out / "ref").exists()  # TRL's frozen reference copy is not saved
    before = load_file(f"{sft_adapter.path}/adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert max(float((before[k] - after[k]).abs().max()) for k in before) > 1e-4
    assert result.metrics["dpo_loss"] < result.metrics["dpo_first_loss"]  # it learned the preference
    # the shared base is the same object, without LoRA layers
    assert ctx.models.base_model is base
    assert not [n for n, _ in base.named_modules() if "lora_" in n] and not base.training


def test_without_an_adapter_a_fresh_lora_is_trained_against_the_base(ctx, tmp_path):
    result = dpo(ctx).train_pairs(PAIRS, None, tmp_path / "fresh")
    assert result.metrics["dpo_first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert (tmp_path / "fresh" / "adapter_config.json").is_file()


def test_no_pairs_keeps_the_adapter(ctx, sft_adapter, tmp_path):
    result = dpo(ctx).train_pairs([], sft_adapter, tmp_path / "none")
    assert result.adapter == sft_adapter and result.metrics["dpo_pairs"] == 0
    assert not (tmp_path / "none").exists()


def test_beta_comes_from_the_dpo_config(tiny_model_dir):
    assert dpo(make_ctx(tiny_model_dir, dpo={"beta": 0.25})).beta == 0.25


def test_registered_with_strict_params():
    from srscode.core.errors import ConfigError
    from srscode.core.registry import validate_params
    from srscode.plugins.train import dpo as dpo_plugin

    (spec,) = list(dpo_plugin.srscode_trainers())
    assert spec.name == "dpo"
    with pytest.raises(ConfigError, match="beta"):  # beta lives in dpo.beta, not in params
        validate_params(spec.params, {"beta": 0.1}, "dpo.params")


def test_progress_goes_through_ctx_progress(tiny_model_dir, tmp_path):
    bars = []

    c = make_ctx(tiny_model_dir, dpo={"beta": 0.1})
    c.progress = recording_progress(bars)
    m = dpo(c).train_pairs(PAIRS, None, tmp_path / "out").metrics
    (bar,) = bars
    assert (bar.name, bar.unit, bar.closed) == ("dpo", "step", True)
    assert bar.total == bar.done == m["dpo_steps"] == 2
    assert math.isfinite(bar.values["loss"])
