"""Hardware backends (CUDA, Ascend, CPU), resolved once per process.

Stage code never branches on hardware: it asks the resolved backend (``ctx.backend``)
for ``device``, ``torch_dtype``, ``mixed_precision``, ``use_cpu`` and
``preferred_generator``; code that holds only a ``torch.device`` calls
:func:`synchronize` and the memory counters here, and the evaluator's sandbox hides
:func:`visible_devices_vars`. No module outside this package names a device API or a
device variable (tests/test_device_confinement.py). Importing this package does not
import torch.
"""
from __future__ import annotations

from .backend import Backend, CompatFacts, CompatRule, ProbeResult
from .device import free_memory_bytes, peak_memory_bytes, reset_peak_memory, synchronize, visible_devices_vars
from .resolve import ResolvedBackend, builtin_registry, registered_backends, reset_cache, resolve_backend

__all__ = [
    "Backend",
    "CompatFacts",
    "CompatRule",
    "ProbeResult",
    "ResolvedBackend",
    "builtin_registry",
    "free_memory_bytes",
    "peak_memory_bytes",
    "registered_backends",
    "reset_cache",
    "reset_peak_memory",
    "resolve_backend",
    "synchronize",
    "visible_devices_vars",
]
