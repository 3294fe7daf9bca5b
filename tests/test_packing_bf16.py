"""bf16 packed weights for the CPU's fast decode loop (``pack_precision``): the copies are
bf16, activations stay fp32, a LoRA adapter runs beside the rounded base unrounded, and
``auto`` picks bf16 only where oneDNN runs it natively."""
from __future__ import annotations

import pytest

from model_fixtures import *  # noqa: F401,F403 - the fixtures (tiny_model_dir)
from test_fast_decode import _lora, _tiny  # the fast-loop tests' tiny random models


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _bf16_packer_or_skip():
    from srscode.hardware.packing import onednn_packer

    packer = onednn_packer("bf16")
    if packer is None or packer.dtype is None:
        pytest.skip("this torch build has no working oneDNN packed bf16 linear (the packer falls back)")
    return packer


def test_bf16_copies_round_the_weights_only():
    """The packed copy is bf16; the caller's tensors stay fp32; the result is F.linear's up
    to bf16 rounding of the weights, the input and the GEMM's output (not bit-equal: the
    rounding really happens), the bias added in fp32."""
    import torch
    import torch.nn.functional as F

    packer = _bf16_packer_or_skip()
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(96, 64, generator=g), torch.randn(96, generator=g)
    x = torch.randn(5, 64, generator=g)
    packed = packer.pack(w)
    assert packed.dtype == torch.bfloat16
    assert packer.rounds(w) and not packer.rounds(w.to(torch.bfloat16))
    got = packer.linear(x, packed, b)
    want = F.linear(x, w, b)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0.03, atol=0.01 * want.abs().max().item())
    assert not torch.equal(got, want)
    # what bf16 rounding of the weights, input and GEMM output gives (one bf16 step of the
    # output, where fp32 accumulation order may land on either side): nothing else
    bf16 = F.linear(x.bfloat16().float(), w.bfloat16().float())
    torch.testing.assert_close(got - b, bf16, rtol=2**-7, atol=1e-6)


def test_auto_is_bf16_only_where_it_is_native(monkeypatch):
    import torch

    from srscode.hardware import packing

    _bf16_packer_or_skip()
    monkeypatch.setattr(packing, "_bf16_native", lambda: False)
    assert packing.onednn_packer("auto").dtype is None  # emulated bf16 is slower than fp32
    monkeypatch.setattr(packing, "_bf16_native", lambda: True)
    assert packing.onednn_packer("auto").dtype == torch.bfloat16
    assert packing.onednn_packer("model").dtype is None
    with pytest.raises(ValueError, match="'fp8'.*model, bf16, auto"):
        packing.onednn_packer("fp8")


def test_cpu_backend_passes_the_precision_through():
    import torch

    from srscode.core.config import HardwareConfig
    from srscode.hardware.resolve import builtin_registry, resolve_backend

    _bf16_packer_or_skip()
    backend = resolve_backend(HardwareConfig(backend="cpu"), builtin_registry())
    assert backend.linear_packer().dtype is None
    assert backend.linear_packer("bf16").dtype == torch.bfloat16


def test_a_young_adapter_survives_beside_a_bf16_base(tokenizer):
    """A LoRA delta far below bf16's rounding step of the base: packed with a bf16 packer,
    the layer's output minus the base's is the adapter's contribution within ~1 % of itself
    (A stacked under the base, B applied after). Merged into the bf16 copy instead, the
    same delta is mostly lost: the check below would fail for the merge."""
    import torch

    from srscode.plugins.lib.fast_decode import LlamaFamily, _merged_lora_weight

    packer = _bf16_packer_or_skip()
    tok = tokenizer
    model = _lora(_tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id), seed=2)
    layer = model.base_model.model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        for b in layer.lora_B.values():
            b.weight.mul_(1e-3)  # delta ~1e-4 of a base whose bf16 step is ~1e-3
    x = torch.randn(4, layer.base_layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        delta = layer(x) - layer.base_layer(x)  # peft's own fp32 adapter contribution
        base_bf16 = packer.linear(x, packer.pack(layer.base_layer.weight), layer.base_layer.bias)
        with LlamaFamily(model).packed_linears(packer):
            got = layer(x) - base_bf16
        merged = packer.linear(x, packer.pack(_merged_lora_weight(layer)), layer.base_layer.bias) - base_bf16
    assert delta.abs().max() > 0
    assert (got - delta).norm() < 0.02 * delta.norm()
    assert (merged - delta).norm() > 0.3 * delta.norm(), "merging would have kept the delta: the test is weak"
    assert "forward" not in layer.__dict__


@pytest.mark.parametrize("lora", [False, True])
def test_bf16_packed_model_stays_close_to_the_fp32_model(lora, tokenizer):
    """The whole model under a bf16 packer: every base linear goes through it (call count),
    logits stay within bf16 rounding of the fp32 forward's, and the modules are themselves
    again afterwards. The packed copies are counted at bf16 size for the memory check."""
    import torch

    from srscode.plugins.lib.fast_decode import LlamaFamily

    packer = _bf16_packer_or_skip()
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    if lora:
        model = _lora(model, seed=4)
    ids = tok(["def add(a, b):"], return_tensors="pt")["input_ids"]
    calls, sizes = [], []
    linear = packer.linear
    packer.linear = lambda x, p, b=None: calls.append(1) or linear(x, p, b)
    packer.fits = lambda nbytes: sizes.append(nbytes) or True
    with torch.no_grad():
        want = model(ids).logits
        with LlamaFamily(model).packed_linears(packer):
            got = model(ids).logits
    layers = model.config.num_hidden_layers
    assert len(calls) == 4 * layers + 1  # q/k/v one GEMM, gate/up one, o, down; the head
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05 * want.abs().max().item())
    assert not torch.equal(got, want)
    base = sum(m.weight.numel() for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n)
    lora_a = sum(m.weight.numel() for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_A" in n)
    assert sizes == [(base + lora_a) * 2]  # bf16 copies: 2 bytes each, the adapters' A rows stacked in
    assert not any("forward" in m.__dict__ for m in model.modules())
