"""Hardware backends (CUDA, Ascend, CPU), resolved once per process.

Stage code never branches on hardware: it asks the resolved backend (``ctx.backend``)
for ``device``, ``torch_dtype``, ``mixed_precision``, ``use_cpu`` and
``preferred_generator``. Importing this package does not import torch.
"""
from __future__ import annotations

from .backend import Backend, ProbeResult
from .resolve import ResolvedBackend, builtin_registry, reset_cache, resolve_backend

__all__ = ["Backend", "ProbeResult", "ResolvedBackend", "builtin_registry", "reset_cache", "resolve_backend"]
