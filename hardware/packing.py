"""Weights packed once for a device's matrix library (CPU: oneDNN's blocked layout).

A stage that multiplies the same frozen weight by a few rows many times (the fast decode
loop: 15 rows per step in the CPU demo) asks the backend for a :class:`LinearPacker`
(``ctx.backend.linear_packer()``); ``None`` means "use ``F.linear``" (the accelerators,
whose GEMM libraries read the plain layout at speed).

Why: on the CPU, ``F.linear`` goes through a GEMM that re-lays the weight out on every
call; for a few rows that dominates. Measured on a 2-core Xeon VM (torch 2.13.0+cpu, fp32,
15 rows): SmolLM2's LM head [49,152 x 576] 18.8 ms with ``F.linear`` against 6.7 ms with
the weight packed once, its MLP projections 0.30 against 0.14-0.16 ms. PyTorch offers no
public API for this; the ops are the ones its own compiler uses for frozen CPU weights
(``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``), so the packer
checks they work once and otherwise reports None (callers fall back to ``F.linear``).
Results equal ``F.linear``'s up to fp32 summation order (~1e-6 relative).

A packer may hold its copies in **bf16** for an fp32 model (``precision="bf16"``, or
``"auto"`` where oneDNN runs bf16 natively: AVX512-BF16 or AMX): inputs are cast to bf16 for
the GEMM (fp32 accumulation) and its bf16 output back to fp32, so the activations between
GEMMs, the KV cache and the sampler stay fp32; each GEMM's weights, input and output are
rounded to bf16's 8 mantissa bits, as bf16 inference rounds them. Why: the step's GEMMs read
every weight once per step, so half the bytes halve them; measured on a 2-core AMD EPYC VM
(avx512_bf16, torch 2.13.0+cpu) at 15 rows, SmolLM2's MLP projection [1,536 x 576] 0.144 ms
fp32 against 0.097 ms bf16 with both casts, its LM head 6.6-7.1 against 3.3-3.6 ms; at 4,096 rows
(a prefill) 221 against 408 GFLOP/s.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


PRECISIONS = ("model", "bf16", "auto")


class LinearPacker:
    """``pack(weight)`` once, then ``linear(x, packed, bias)`` = ``F.linear(x, weight, bias)``.

    ``dtype``: the packed copies' dtype (None: the weight's own). Where it differs from the
    input's, the input is cast for the GEMM and the output cast back; the bias is added in
    the input's dtype."""

    def __init__(self, rows_hint: int = 16, dtype: Any = None):
        self.rows_hint = rows_hint
        self.dtype = dtype

    def pack(self, weight: Any) -> Any:
        import torch

        with torch.no_grad():
            w = weight.detach()
            return torch.ops.mkldnn._reorder_linear_weight(w if self.dtype is None else w.to(self.dtype), self.rows_hint)

    def linear(self, x: Any, packed: Any, bias: Any = None) -> Any:
        import torch

        if self.dtype is None or x.dtype == self.dtype:
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
        y = torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), packed, None, "none", [], "").to(x.dtype)
        return y if bias is None else y + bias

    def rounds(self, weight: Any) -> bool:
        """Whether packing changes ``weight``'s values (a narrower dtype than its own)."""
        return self.dtype is not None and self.dtype != weight.dtype

    def fits(self, nbytes: int) -> bool:
        """Whether packed copies of ``nbytes`` leave room: at most half of the memory the
        system reports available (a 1.5B model's fp32 weights are 6 GB; a laptop that holds
        them once may not hold them twice). True where the system does not say."""
        avail = available_memory()
        return avail is None or nbytes <= avail // 2


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def onednn_packer(precision: str = "model") -> LinearPacker | None:
    """A packer where this torch build runs oneDNN's packed linear correctly, else None.

    ``precision``: ``"model"`` packs weights in their own dtype (exact up to summation
    order); ``"bf16"`` in bf16 wherever oneDNN computes it (see the module docstring);
    ``"auto"`` in bf16 only where oneDNN runs bf16 natively (elsewhere it emulates bf16,
    slower than fp32), else as ``"model"``."""
    if precision not in PRECISIONS:
        raise ValueError(f"linear packer precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16" or (precision == "auto" and _bf16_native()):
        if _works("bf16"):
            return LinearPacker(dtype=_dtype("bf16"))
        log.info("hardware: oneDNN packed bf16 linear unavailable; packing weights in their own dtype")
    return LinearPacker() if _works("model") else None


def _dtype(name: str) -> Any:
    import torch

    return None if name == "model" else torch.bfloat16


def _bf16_native() -> bool:
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - a private probe that moved: assume emulated (fp32 is then faster)
        return False


@functools.cache  # checked once per process and precision
def _works(precision: str) -> bool:
    try:
        import torch
        import torch.nn.functional as F

        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
        x = torch.randn(3, 5, 16, generator=g)
        p = LinearPacker(dtype=_dtype(precision))
        got = p.linear(x, p.pack(w), b)
        tol = 1e-4 if p.dtype is None else 5e-2  # bf16 keeps 8 mantissa bits
        return got.dtype == x.dtype and bool(torch.allclose(got, F.linear(x, w, b), rtol=tol, atol=tol))
    except Exception as exc:  # noqa: BLE001 - a private op that moved: plain F.linear instead
        log.info("hardware: oneDNN packed %s linear unavailable (%s: %s)", precision, type(exc).__name__, exc)
        return False


__all__ = ["PRECISIONS", "LinearPacker", "available_memory", "onednn_packer"]
