"""peft LoRA layers while the trainers run under mixed precision (bf16/fp16 autocast).

peft's ``lora.Linear.forward`` is written for every case (fp32 adapters on low-precision
bases, variants, mixed adapter batches), and on a GPU each LoRA layer costs separate kernels
for each of its steps. Profiling the 1.5B SFT step on an H100 (docs/benchmarks.md, issue 19
part 2) showed the GPU idle 39 % of the step while the host launched ~6,400 kernels, of
which the LoRA bookkeeping was most: an fp32 copy of the layer's input and autocast's cast
back (``x.to(fp32)``, then bf16 again for the GEMM), the ``* scaling`` and the ``result +``,
each activation-sized, each again in backward, for 7 layers x 28 blocks. Under autocast two
changes give the same GEMM inputs with fewer kernels:

* the input stays in the compute dtype (peft's ``cast_input_dtype_enabled`` flag), since
  autocast runs the adapter's GEMMs in bf16/fp16 from its fp32 weights anyway;
* ``result + scaling * (A x) B^T`` is one ``addmm`` (the GEMM's epilogue adds and scales;
  its backward is two GEMMs with the scale folded in), instead of a GEMM, a multiply and an
  add. peft has no such option, hence :func:`_fused_forward`.

Both act only on plain ``lora.Linear`` layers whose adapters are vanilla LoRA without a B
bias; the fused forward hands every other call to peft's (adapters disabled or merged, mixed
adapter batches, extra arguments).

Both apply only while the trainer runs under autocast, which is what makes mixing an fp32
adapter with bf16 activations valid; the adapter's weights stay fp32 (the optimizer's).
``UNCAST_LORA_INPUTS`` / ``FUSED_LORA_ADD`` = False are the baselines the benchmark compares.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator

UNCAST_LORA_INPUTS = True
FUSED_LORA_ADD = True


def under_autocast(args: Any) -> bool:
    """Whether a transformers Trainer with these arguments trains under autocast (accelerate
    wraps the model's forward in it for ``bf16`` / ``fp16``)."""
    return bool(getattr(args, "bf16", False) or getattr(args, "fp16", False))


def _fused_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    import torch

    if args or kwargs or self.disable_adapters or self.merged or any(n in self.lora_variant for n in self.active_adapters):
        return type(self).forward(self, x, *args, **kwargs)  # peft's own path for those cases
    result = self.base_layer(x)
    out = result.shape[-1]
    for name in self.active_adapters:
        if name not in self.lora_A:
            continue
        a = self.lora_A[name](self.lora_dropout[name](self._cast_input_dtype(x, self.lora_A[name].weight.dtype)))
        flat = torch.addmm(result.reshape(-1, out), a.reshape(-1, a.shape[-1]), self.lora_B[name].weight.t(),
                           alpha=self.scaling[name])
        result = flat.view(*result.shape[:-1], out)
    return result


def _vanilla_lora_linears(model: Any) -> list[Any]:
    """peft's plain ``lora.Linear`` layers holding vanilla LoRA only: no variant (DoRA, ...)
    and no B bias on any adapter. Subclasses (bnb, gptq, ...) and the rest keep peft's forward
    and its casts (a variant computes with the input's dtype, so uncasting would change it)."""
    from peft.tuners.lora.layer import Linear

    return [m for m in model.modules()
            if type(m) is Linear and not m.lora_variant and not any(m.lora_bias.values())]


@contextlib.contextmanager
def mixed_precision_lora(model: Any, trainer_args: Any) -> Iterator[dict[str, bool]]:
    """While training under autocast, on the vanilla LoRA layers: inputs uncast and the
    adapter's product added by one ``addmm`` (see the module docstring); everything restored
    on exit. Yields which of the two are on (both off without autocast)."""
    autocast = under_autocast(trainer_args)
    on = {"uncast": UNCAST_LORA_INPUTS and autocast, "fused_add": FUSED_LORA_ADD and autocast}
    layers = _vanilla_lora_linears(model) if any(on.values()) else []
    # peft.helpers.disable_input_dtype_casting does the same to every tuner layer, variants
    # included; these flags are set per layer so that only the vanilla ones lose the cast
    casts = [m.cast_input_dtype_enabled for m in layers]
    try:
        for m in layers:
            if on["uncast"]:
                m.cast_input_dtype_enabled = False
            if on["fused_add"]:
                m.forward = types.MethodType(_fused_forward, m)
        yield on
    finally:
        for m, cast in zip(layers, casts):
            m.cast_input_dtype_enabled = cast
            m.__dict__.pop("forward", None)
