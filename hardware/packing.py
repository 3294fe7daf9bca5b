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
"""
from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


class LinearPacker:
    """``pack(weight)`` once, then ``linear(x, packed, bias)`` = ``F.linear(x, weight, bias)``."""

    def __init__(self, rows_hint: int = 16):
        self.rows_hint = rows_hint

    def pack(self, weight: Any) -> Any:
        import torch

        with torch.no_grad():
            return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), self.rows_hint)

    def linear(self, x: Any, packed: Any, bias: Any = None) -> Any:
        import torch

        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")

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


def onednn_packer() -> LinearPacker | None:
    """A packer where this torch build runs oneDNN's packed fp32 linear correctly, else None."""
    return LinearPacker() if _works() else None


@functools.cache  # checked once per process
def _works() -> bool:
    try:
        import torch
        import torch.nn.functional as F

        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        w, b = torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
        x = torch.randn(3, 5, 16, generator=g)
        p = LinearPacker()
        got = p.linear(x, p.pack(w), b)
        return bool(torch.allclose(got, F.linear(x, w, b), rtol=1e-4, atol=1e-4))
    except Exception as exc:  # noqa: BLE001 - a private op that moved: plain F.linear instead
        log.info("hardware: oneDNN packed linear unavailable (%s: %s); weights stay unpacked", type(exc).__name__, exc)
        return False


__all__ = ["LinearPacker", "available_memory", "onednn_packer"]
