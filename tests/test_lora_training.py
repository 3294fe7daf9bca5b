"""LoRA layers under mixed precision (``plugins/lib/lora_training.py``): the trainers' inputs
stay bf16 and the adapter's product is added by one ``addmm`` while training under autocast,
for the same training; peft's own forward everywhere else. The tiny Qwen2 on the CPU in
bf16, under CPU autocast, stands in for a GPU's bf16 training."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import cpu_backend, make_ctx, make_lora_adapter

from srscode.core.types import AdapterRef, DPOPair, SFTExample

PROMPT = "<|im_start|>user\nWrite {name}.<|im_end|>\n<|im_start|>assistant\n"
BF16_ARGS = types.SimpleNamespace(bf16=True, fp16=False)


def examples(n: int = 4) -> list[SFTExample]:
    out = []
    for i in range(n):
        body = "".join(f"    x = x * {j} + {i}\n" for j in range(1 + 2 * i))
        out.append(SFTExample(f"t{i}", PROMPT.format(name=f"f{i}"), f"def f{i}(x):\n{body}    return x\n"))
    return out


def _bf16_ctx(model_dir):
    """The tiny model's context with a bf16 backend on the CPU: the base loads in bf16 and
    the trainers run under bf16 autocast, as they do on a GPU."""
    import torch

    ctx = make_ctx(model_dir, dpo={"beta": 0.1})
    ctx._backend = types.SimpleNamespace(**{**vars(cpu_backend()), "torch_dtype": torch.bfloat16,
                                           "dtype_name": "bf16", "mixed_precision": "bf16"})
    return ctx


def _watch_lora_inputs(monkeypatch, module):
    """Record the dtype of every input a LoRA A matrix sees in the stage's peft model."""
    seen: list = []
    wrap = module.peft_model_for

    def watched(*args, **kwargs):
        model = wrap(*args, **kwargs)
        for name, m in model.named_modules():
            if ".lora_A." in name:
                m.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].dtype))
        return model

    monkeypatch.setattr(module, "peft_model_for", watched)
    return seen


def _train(stage: str, ctx, init, out: Path, **params):
    from srscode.plugins.train import dpo as dpo_plugin
    from srscode.plugins.train import lora_sft

    base = dict(r=4, alpha=8, dropout=0.0, lr=1e-2, batch_size=2, max_length=128, **params)
    if stage == "sft":
        result = lora_sft.LoRASFTTrainer(lora_sft.LoRASFTParams(**base), ctx).train_sft(examples(), init, out)
        return result, result.metrics["train_loss"], "train"
    ex = examples()
    pairs = [DPOPair(e.task_id, e.prompt, e.completion, ex[(i + 1) % len(ex)].completion) for i, e in enumerate(ex)]
    result = dpo_plugin.DPOTrainerStage(dpo_plugin.DPOParams(**base), ctx).train_pairs(pairs, init, out)
    return result, result.metrics["dpo_loss"], "dpo"


def _tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_lora_inputs_stay_bf16_under_autocast_with_the_same_training(stage, tiny_model_dir, tmp_path, monkeypatch):
    """Without peft's cast a LoRA GEMM could run in fp32 or fail on mixed dtypes. Under
    autocast the adapter GEMMs see the same bf16 input either way, so with dropout 0 the same
    steps give the same loss and weights; only the dtype the input arrives in changes."""
    import torch

    from srscode.plugins.lib import lora_training
    from srscode.plugins.train import lora_sft

    ctx = _bf16_ctx(tiny_model_dir)
    init = AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, tmp_path / "init", seed=2, r=4, scale=0.3))
    seen = _watch_lora_inputs(monkeypatch, lora_sft)  # both stages wrap through lora_sft.lora_on_shared_base
    monkeypatch.setattr(lora_training, "FUSED_LORA_ADD", False)  # this test isolates the cast
    runs = {}
    for uncast in (True, False):
        monkeypatch.setattr(lora_training, "UNCAST_LORA_INPUTS", uncast)
        seen.clear()
        result, loss, key = _train(stage, ctx, init, tmp_path / f"{stage}-{uncast}")
        assert seen, "no LoRA layer ran: the test would prove nothing"
        runs[uncast] = (set(seen), loss, _tensors(result.adapter.path), result.metrics[f"{key}_lora_inputs_uncast"])
    (dtypes_on, loss_on, w_on, flag_on), (dtypes_off, loss_off, w_off, flag_off) = runs[True], runs[False]
    assert dtypes_on == {torch.bfloat16} and flag_on == 1.0
    assert dtypes_off == {torch.float32} and flag_off == 0.0  # peft's cast: what the lever removes
    assert loss_on == loss_off
    assert w_on.keys() == w_off.keys() and all(w.dtype == torch.float32 for w in w_on.values())  # fp32 adapter kept
    for k in w_on:
        assert torch.equal(w_on[k], w_off[k]), k
    start = _tensors(init.path)
    assert any(not torch.equal(w_on[k], start[k]) for k in w_on), "training changed nothing: the test would prove nothing"


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_the_lean_layers_train_as_peft_does_within_bf16_rounding(stage, tiny_model_dir, tmp_path, monkeypatch):
    """Both levers on (the default) against peft's own forward, both in bf16: the same loss
    up to bf16 rounding. (Not the weights element by element: Adam divides each gradient by
    its own running size, so on this tiny model elements whose gradient is rounding noise
    move by ~lr either way; the rounding itself is compared layer by layer against fp32 in
    test_the_fused_add_rounds_no_worse_than_peft.)"""
    from srscode.plugins.lib import lora_training

    init = AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, tmp_path / "init", seed=4, r=4, scale=0.3))
    losses = {}
    for lean in (True, False):
        monkeypatch.setattr(lora_training, "UNCAST_LORA_INPUTS", lean)
        monkeypatch.setattr(lora_training, "FUSED_LORA_ADD", lean)
        result, loss, key = _train(stage, _bf16_ctx(tiny_model_dir), init, tmp_path / f"{stage}-{lean}")
        assert result.metrics[f"{key}_lora_fused_add"] == result.metrics[f"{key}_lora_inputs_uncast"] == float(lean)
        losses[lean] = loss
    assert abs(losses[True] - losses[False]) <= 1e-2 * abs(losses[False]), losses


class _OneLayer:
    """A bf16 linear layer (1024 -> 768) with an fp32 LoRA r 16 of non-zero B, and its fp32 twin."""

    @staticmethod
    def make(dtype):
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(1024, 768, bias=False))
        net[0].weight.data.mul_(4)
        model = get_peft_model(net.to(dtype), LoraConfig(r=16, lora_alpha=32, target_modules=["0"],
                                                         init_lora_weights=False))
        return model


def _layer_run(model, x, lean: bool, autocast: bool):
    import torch

    from srscode.plugins.lib.lora_training import mixed_precision_lora

    model.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    with mixed_precision_lora(model, BF16_ARGS if lean else types.SimpleNamespace()), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = model(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(y.dtype)
    (y.float() * g.float()).sum().backward()
    grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
    return y.float().detach(), x.grad.float(), grads


def test_the_fused_add_rounds_no_worse_than_peft():
    """One LoRA layer under bf16 autocast, against the same layer in fp32: the lean layer's
    output, input gradient and adapter gradients are no further from fp32 than peft's (one
    rounding of the sum where peft rounds the product, the scaled product and the sum)."""
    import torch

    bf16, fp32 = _OneLayer.make(torch.bfloat16), _OneLayer.make(torch.float32)
    fp32.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})  # the same values
    x = torch.randn(2, 64, 1024, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    ref = _layer_run(fp32, x.float(), lean=False, autocast=False)
    peft_out = _layer_run(bf16, x, lean=False, autocast=True)
    lean_out = _layer_run(bf16, x, lean=True, autocast=True)
    assert not torch.equal(lean_out[0], peft_out[0]), "the lean forward did not run"
    for what, r, p, le in zip(("output", "input grad"), ref[:2], peft_out[:2], lean_out[:2]):
        assert (le - r).norm() <= 1.05 * (p - r).norm(), what
    assert lean_out[2].keys() == peft_out[2].keys() and any("lora_B" in k for k in lean_out[2])
    for k, r in ref[2].items():
        if "lora_" not in k:
            continue
        assert bf16.get_parameter(k).dtype == torch.float32  # the optimizer's fp32 weights get fp32 grads
        err_lean, err_peft = (lean_out[2][k] - r).norm(), (peft_out[2][k] - r).norm()
        assert err_lean <= 1.05 * err_peft, (k, float(err_lean), float(err_peft))


@pytest.fixture
def peft_bf16(tiny_model_dir, tmp_path):
    """The tiny model in bf16 with a non-zero fp32 adapter (peft's autocast_adapter_dtype),
    and the same in fp32 as the reference."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = make_lora_adapter(tiny_model_dir, tmp_path / "a", seed=7, r=4, scale=0.5)
    models = {}
    for dt in (torch.bfloat16, torch.float32):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dt)
        models[dt] = PeftModel.from_pretrained(base, adapter, is_trainable=True)
    ids = torch.randint(0, models[dt].config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    return models, ids


def test_peft_forward_is_used_outside_autocast_and_restored_after(peft_bf16):
    import torch
    from peft.tuners.lora.layer import Linear

    from srscode.plugins.lib.lora_training import mixed_precision_lora

    models, ids = peft_bf16
    model = models[torch.float32]
    layers = [m for m in model.modules() if type(m) is Linear]
    assert layers
    with mixed_precision_lora(model, types.SimpleNamespace(bf16=False, fp16=False)) as on:
        assert on == {"uncast": False, "fused_add": False}
        assert all("forward" not in m.__dict__ for m in layers)
    with pytest.raises(RuntimeError, match="boom"), mixed_precision_lora(model, BF16_ARGS) as on:
        assert on == {"uncast": True, "fused_add": True}
        assert all("forward" in m.__dict__ for m in layers) and not any(m.cast_input_dtype_enabled for m in layers)
        raise RuntimeError("boom")  # a failed training still gives the layers back
    assert all("forward" not in m.__dict__ and m.cast_input_dtype_enabled for m in layers)


@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed:UserWarning")  # the tiny model's linears have no bias
@pytest.mark.parametrize("case", ["disabled", "merged", "dora", "bias"])
def test_peft_forward_serves_what_the_fused_add_does_not(case, tiny_model_dir, tmp_path):
    """Adapters disabled or merged, DoRA (a peft variant) and a B bias: the lean forward hands
    these to peft's, so the output is peft's exactly."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from srscode.plugins.lib.lora_training import mixed_precision_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", use_dora=case == "dora", lora_bias=case == "bias",
                     init_lora_weights=False)  # non-zero B: the adapter changes the output
    model = get_peft_model(base, cfg)
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    if case == "merged":
        model.merge_adapter()

    def run(lean: bool):
        ctx = model.disable_adapter() if case == "disabled" else torch.autocast("cpu", enabled=False)
        with ctx, mixed_precision_lora(model, BF16_ARGS if lean else types.SimpleNamespace()), \
                torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            return model(input_ids=ids).logits

    assert torch.equal(run(True), run(False))
