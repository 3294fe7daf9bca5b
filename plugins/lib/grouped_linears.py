"""A decode layer's linears that read one input as one GEMM each: q/k/v, and gate/up.

Why: at a few hundred rows a decode step's GEMMs are bound by reading the weights and by
each kernel's ramp and tail, not by FLOPs, so fewer, wider GEMMs finish sooner. Measured
on an H100 (benchmarks/decode_gemms.py, Qwen2.5-Coder-1.5B shape, 28 layers in one CUDA
graph, bf16): q/k/v + gate/up/down at 256 rows 2.13 ms as 6 GEMMs a layer against 1.92 ms
as 3 (1.11x), at 128 rows 1.84 against 1.61 (1.14x). Inductor's autotuned Triton GEMMs
were slower than cuBLAS's at these shapes (2.19 ms), so the grouping is ours, not the
compiler's (it does not merge GEMMs that share an input).

The grouped weights are *copies* (concatenated once per decoder, i.e. per ``generate``
call, and dropped with it): the model's own parameters are never re-pointed into a shared
buffer, which would make ``save_pretrained`` see tensors sharing storage and a trainer's
view of them change. The copies cost memory (+66 % of the layers' linear weights on the 1.5B
shape, 1.7 GB in bf16), so they are made only where they fit (:func:`grouped_layers`).

A peft LoRA linear whose active adapters are plain LoRA joins a group through its frozen
base layer; its adapters' product is added to its slice of the group's output as peft's
``lora.Linear.forward`` adds it (:func:`lora_added`). Any other module (DoRA, a LoRA bias,
merged or disabled adapters, a quantized or hooked linear, an MLP other than the gated
one of Llama/Qwen2/Mistral) keeps its group ungrouped: it is called as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

GATED_MLPS = ("LlamaMLP", "Qwen2MLP", "MistralMLP")  # forward = down(act(gate(x)) * up(x))


@dataclass
class LayerGroups:
    """One decode layer's grouped weights (None: that group is not grouped)."""

    qkv: Any = None  # [q + k + v out features, hidden]
    qkv_bias: Any = None
    gate_up: Any = None  # [2 x intermediate, hidden]
    gate_up_bias: Any = None


def _plain(m: Any) -> bool:
    """A module called as itself (no hooks, no instance-level forward such as a patch)."""
    return not (m._forward_hooks or m._forward_pre_hooks or "forward" in vars(m) or hasattr(m, "_hf_hook"))


def group_base(m: Any) -> Any:
    """The ``torch.nn.Linear`` whose weight stands for ``m`` in a group GEMM: ``m`` itself,
    or the base layer of a peft LoRA linear with plain adapters; None otherwise."""
    import torch

    from .fast_decode import _plain_lora_adapters

    if m is None or not _plain(m):
        return None
    if type(m) is torch.nn.Linear:
        return m
    base = getattr(m, "base_layer", None)
    if type(base) is torch.nn.Linear and _plain(base) and _plain_lora_adapters(m) is not None:
        return base
    return None


def lora_added(m: Any, x: Any, out: Any) -> Any:
    """``out`` (the base layer's output for ``x``) plus ``m``'s active LoRA adapters, as
    peft's ``lora.Linear.forward`` computes them in eval mode (its input cast to each
    adapter's dtype, the sum cast back); ``out`` itself where ``m`` is a plain linear."""
    if not hasattr(m, "lora_A"):
        return out
    dtype = out.dtype
    for name in m.active_adapters:
        if name not in m.lora_A:
            continue
        a = m.lora_A[name]
        x = m._cast_input_dtype(x, a.weight.dtype)
        out = out + m.lora_B[name](a(m.lora_dropout[name](x))) * m.scaling[name]
    return out.to(dtype)


def _concat(bases: Sequence[Any]) -> tuple[Any, Any]:
    import torch

    weight = torch.cat([b.weight.detach() for b in bases])
    if all(b.bias is None for b in bases):
        return weight, None
    bias = torch.cat([b.bias.detach() if b.bias is not None else weight.new_zeros(b.out_features) for b in bases])
    return weight, bias


def _qkv_bases(layer: Any) -> list[Any] | None:
    a = layer.self_attn
    bases = [group_base(getattr(a, n, None)) for n in ("q_proj", "k_proj", "v_proj")]
    return bases if all(bases) else None


def _gate_up_bases(layer: Any) -> list[Any] | None:
    mlp = layer.mlp
    if type(mlp).__name__ not in GATED_MLPS or not _plain(mlp) or not hasattr(mlp, "act_fn"):
        return None
    bases = [group_base(getattr(mlp, n, None)) for n in ("gate_proj", "up_proj")]
    return bases if all(bases) and bases[0].out_features == bases[1].out_features else None


def grouped_layers(layers: Sequence[Any], fits: Callable[[int], bool]) -> list[LayerGroups] | None:
    """Each layer's grouped q/k/v and gate/up weights, or None where no layer has a group
    or their copies would not fit (``fits(nbytes)``)."""
    import torch

    plan = [(_qkv_bases(layer), _gate_up_bases(layer)) for layer in layers]
    nbytes = sum(b.weight.numel() * b.weight.element_size() for groups in plan for g in groups if g for b in g)
    if not nbytes or not fits(nbytes):
        return None
    out = []
    with torch.no_grad():
        for qkv, gate_up in plan:
            g = LayerGroups()
            if qkv:
                g.qkv, g.qkv_bias = _concat(qkv)
            if gate_up:
                g.gate_up, g.gate_up_bias = _concat(gate_up)
            out.append(g)
    return out


def grouped_qkv(attn: Any, x: Any, weight: Any, bias: Any, sizes: Sequence[int]) -> tuple[Any, Any, Any]:
    """q, k, v of ``attn`` for ``x`` through the grouped ``weight``/``bias`` (their out
    features ``sizes``)."""
    import torch.nn.functional as F

    mods = (attn.q_proj, attn.k_proj, attn.v_proj)
    parts = F.linear(x, weight, bias).split(list(sizes), dim=-1)
    return tuple(lora_added(m, x, y) for m, y in zip(mods, parts))  # type: ignore[return-value]


def grouped_mlp(mlp: Any, x: Any, weight: Any, bias: Any) -> Any:
    """A gated MLP (``down(act(gate(x)) * up(x))``) for ``x`` with gate/up through the
    grouped ``weight``/``bias``."""
    import torch.nn.functional as F

    gate, up = F.linear(x, weight, bias).chunk(2, dim=-1)
    gate = lora_added(mlp.gate_proj, x, gate)
    up = lora_added(mlp.up_proj, x, up)
    return mlp.down_proj(mlp.act_fn(gate) * up)


__all__ = ["LayerGroups", "group_base", "grouped_layers", "grouped_mlp", "grouped_qkv", "lora_added"]
