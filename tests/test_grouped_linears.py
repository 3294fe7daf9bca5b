"""Grouped q/k/v and gate/up GEMMs in the fast decode loop (plugins/lib/grouped_linears.py):
the grouped step decodes what ``generate`` does (biases, LoRA adapters, compiled or not),
peft's adapter arithmetic is reproduced exactly, modules a group GEMM would bypass (hooks,
patched forwards, DoRA) are called as they are, the copies are skipped where they would not
fit, and the model's own parameters are never touched."""
from __future__ import annotations

import logging

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx
from test_fast_decode import (TEXTS, RecordingRunner, _CountingBackend, _lora, _model_and_reference, _padded,
                              _reference, _tiny)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    return tok


def _counting(monkeypatch):
    """Counts of the grouped q/k/v and MLP calls the decode loop makes."""
    from srscode.plugins.lib import fast_decode

    counts = {"qkv": 0, "mlp": 0}
    qkv, mlp = fast_decode.grouped_qkv, fast_decode.grouped_mlp

    def count_qkv(*a, **k):
        counts["qkv"] += 1
        return qkv(*a, **k)

    def count_mlp(*a, **k):
        counts["mlp"] += 1
        return mlp(*a, **k)

    monkeypatch.setattr(fast_decode, "grouped_qkv", count_qkv)
    monkeypatch.setattr(fast_decode, "grouped_mlp", count_mlp)
    return counts


def _decode(model, enc, tok, max_new: int, group: bool, runner=None, compile_backend=None, n: int = 1):
    import torch

    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    spec = SamplingSpec(0.0, 1.0, (tok.eos_token_id,), tok.pad_token_id)
    dec = FastDecoder(model, graph_runner=runner, group_linears=group, seed=3,
                      compile=compile_backend is not None, compile_backend=compile_backend)
    with torch.inference_mode():
        return dec.generate(enc["input_ids"], enc["attention_mask"], n, max_new, spec), dec


@pytest.mark.parametrize("kind", ["qwen2", "llama"])  # qwen2: q/k/v with biases
@pytest.mark.parametrize("lora", [False, True])
def test_grouped_decode_gives_generates_tokens(kind, lora, tokenizer, monkeypatch):
    import torch

    torch.set_num_threads(1)
    tok = tokenizer
    model, enc, ref = _model_and_reference(tok, kind, lora)
    counts = _counting(monkeypatch)
    got, dec = _decode(model, enc, tok, 24, group=True, runner=RecordingRunner())
    assert _padded(got.tokens, 24, tok.pad_token_id) == _padded(ref, 24, tok.pad_token_id)
    layers = model.config.num_hidden_layers
    assert dec.groups is not None and all(g.qkv is not None and g.gate_up is not None for g in dec.groups)
    if kind == "qwen2":
        assert all(g.qkv_bias is not None for g in dec.groups)
    # every decode step of every layer went through the grouped GEMMs (graphs replay eagerly here)
    assert counts["qkv"] >= (got.stats["steps"] - 1) * layers and counts["mlp"] == counts["qkv"], counts
    counts.update(qkv=0, mlp=0)
    plain, dec = _decode(model, enc, tok, 24, group=False)
    assert dec.groups is None and counts == {"qkv": 0, "mlp": 0}
    assert plain.tokens == got.tokens


def test_lora_added_is_pefts_forward_exactly():
    """A bf16 base with peft's float32 adapters (its default upcast), two adapters active:
    the base output plus ``lora_added`` is bit for bit what the LoRA layer returns."""
    import torch
    from peft import LoraConfig, get_peft_model

    from srscode.plugins.lib.grouped_linears import group_base, lora_added

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(32, 48, bias=True)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    net = Net().to(torch.bfloat16)
    pm = get_peft_model(net, LoraConfig(r=4, lora_alpha=16, target_modules=["proj"]), adapter_name="one")
    pm.add_adapter("two", LoraConfig(r=2, lora_alpha=4, target_modules=["proj"]))
    pm.base_model.set_adapter(["one", "two"])
    layer = pm.base_model.model.proj
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    pm.eval()
    assert layer.lora_A["one"].weight.dtype == torch.float32  # the upcast the test is about
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        want = layer(x)
        got = lora_added(layer, x, group_base(layer)(x))
    assert got.dtype == want.dtype and torch.equal(got, want)
    with torch.no_grad():  # not a no-op: the adapters change the output
        assert not torch.equal(group_base(layer)(x), want)


def test_modules_a_group_would_bypass_are_called_as_they_are(tokenizer):
    """A forward hook on q_proj (accelerate's offloading works so), an instance-level
    forward on an MLP (liger patches so) and a DoRA adapter keep their groups ungrouped:
    the hook still sees every step and the tokens are generate()'s."""
    import torch
    from peft import LoraConfig, get_peft_model

    from srscode.plugins.lib.grouped_linears import group_base

    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ref = _reference(model, enc, tok, 12, tok.eos_token_id)
    layers = model.model.layers
    seen = []
    handle = layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    mlp = layers[1].mlp
    mlp.forward = type(mlp).forward.__get__(mlp)  # what a patch leaves: an instance attribute
    try:
        got, dec = _decode(model, enc, tok, 12, group=True)
        assert _padded(got.tokens, 12, tok.pad_token_id) == _padded(ref, 12, tok.pad_token_id)
        assert dec.groups[0].qkv is None and dec.groups[1].qkv is not None
        assert dec.groups[1].gate_up is None and dec.groups[0].gate_up is not None
        assert seen.count(1) == got.stats["steps"] - 1  # one per decode step (1 token each)
    finally:
        handle.remove()
        del mlp.forward
    dora = get_peft_model(_tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id),
                          LoraConfig(r=4, target_modules=["q_proj", "up_proj"], use_dora=True)).eval()
    layer = dora.base_model.model.model.layers[0]
    assert group_base(layer.self_attn.q_proj) is None and group_base(layer.mlp.up_proj) is None
    assert group_base(layer.self_attn.k_proj) is layer.self_attn.k_proj  # not adapted: itself
    got, dec = _decode(dora, enc, tok, 12, group=True)
    assert dec.groups is None  # every layer has DoRA on q_proj and up_proj: nothing to group
    assert _padded(got.tokens, 12, tok.pad_token_id) == _padded(_reference(dora, enc, tok, 12, tok.eos_token_id),
                                                                  12, tok.pad_token_id)
    with torch.no_grad():
        dora.train()  # dropout active: no adapter is plain, nothing groups
        assert group_base(dora.base_model.model.model.layers[0].self_attn.k_proj) is not None
        dora.eval()


def test_groups_are_skipped_where_their_copies_would_not_fit(tokenizer, monkeypatch, caplog):
    from srscode.hardware import device, packing

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    sizes = []
    monkeypatch.setattr(device, "free_memory_bytes", lambda dev: None)  # the CPU: the host's memory counts
    monkeypatch.setattr(packing, "available_memory", lambda: sizes.append(1) and 0 or 1000)
    with caplog.at_level(logging.INFO, logger="srscode.plugins.lib.fast_decode"):
        got, dec = _decode(model, enc, tok, 8, group=True)
    assert sizes and dec.groups is None
    assert "would not fit" in caplog.text
    plain, _ = _decode(model, enc, tok, 8, group=False)
    assert got.tokens == plain.tokens


def test_grouping_leaves_the_models_parameters_alone(tokenizer):
    """The groups are copies: every parameter keeps its own storage, and the groups hold
    the current values (a weight changed between calls is seen by the next decoder)."""
    import torch

    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    before = {n: (p.data_ptr(), p.clone()) for n, p in model.named_parameters()}
    _, dec = _decode(model, enc, tok, 6, group=True)
    ptrs = set()
    for n, p in model.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1]), n
        ptrs.add(p.untyped_storage().data_ptr())
    assert len(ptrs) == len(before)  # one storage each (named_parameters lists a tied head once)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        attn.k_proj.weight.add_(1.0)
    _, dec2 = _decode(model, enc, tok, 6, group=True)
    q = attn.q_proj.out_features
    assert torch.equal(dec2.groups[0].qkv[q:q + attn.k_proj.out_features], attn.k_proj.weight)
    assert not torch.equal(dec.groups[0].qkv, dec2.groups[0].qkv)


@pytest.mark.parametrize("lora", [False, True])
def test_compiled_grouped_decode_compiles_once_and_agrees(lora, tokenizer):
    """Compiled (dynamo with a counting backend), the grouped pieces are still one graph
    each for every layer, and decode the eager ungrouped loop's tokens."""
    import torch

    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    if lora:
        model = _lora(model, seed=7)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    eager, _ = _decode(model, enc, tok, 16, group=False, n=2)
    torch._dynamo.reset()
    backend = _CountingBackend()
    got, dec = _decode(model, enc, tok, 16, group=True, runner=RecordingRunner(), compile_backend=backend, n=2)
    assert dec.fam.compiled and dec.groups is not None
    assert got.tokens == eager.tokens
    assert backend.graphs == 5, backend.graphs  # pre, post (decode and prefill), head


def test_hf_generator_groups_with_pack_weights(tiny_model_dir, tokenizer):
    """The hf generator asks for groups with pack_weights (on by default), not without; with
    a packer (the CPU, not compiled) the packer's own groups are used instead."""
    import types

    import torch

    from srscode.core.types import Prompt
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.lib import fast_decode

    model = _tiny("llama", len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    ctx = make_ctx(tiny_model_dir)
    accel = types.SimpleNamespace(use_cpu=False, graph_runner=lambda: None, linear_packer=lambda precision: None)

    def decoder(**params):
        g = HFGenerator(HFGeneratorParams(compile=False, **params), ctx)
        g.ctx = types.SimpleNamespace(backend=accel)
        return g._fast_decoder(model, [Prompt("t1", TEXTS[0])], tokenizer)

    enc = tokenizer(TEXTS[:1], return_tensors="pt")
    spec = fast_decode.SamplingSpec(0.0, 1.0, (), 0)
    for pack in (True, False):
        dec = decoder(pack_weights=pack)
        with torch.inference_mode():
            dec.generate(enc["input_ids"], enc["attention_mask"], 1, 2, spec)
        assert (dec.groups is not None) is pack
