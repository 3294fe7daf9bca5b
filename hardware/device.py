"""Device operations for code that holds a ``torch.device`` rather than a resolved backend.

Timing code waits for the device before it reads a clock, benchmarks read its memory
counters, and the evaluator's sandbox hides every device from candidates. Each asks here;
the answer comes from the registered backend records (``Backend.device_module``,
``Backend.visible_devices_vars``), so a new backend needs no edit outside its record.
Importing this module does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .resolve import _records, registered_backends

if TYPE_CHECKING:
    import torch
    from srscode.core.registry import Registry


def visible_devices_vars(registry: Registry | None = None) -> tuple[str, ...]:
    """Every visible-devices variable of every backend in ``registry`` (default: the
    installed plugins), in registration order: what a process must set empty to see no device."""
    backends = registered_backends() if registry is None else tuple(_records(registry).values())
    return tuple(dict.fromkeys(var for b in backends for var in b.visible_devices_vars))


def _device_module(device: torch.device | str) -> Any | None:
    """``torch.<device_module>`` of the backend that drives ``device``; None where there is
    nothing to wait for or count (the CPU, a device no backend claims)."""
    import torch

    kind = torch.device(device).type
    owners = sorted((b for b in registered_backends() if b.device_type == kind), key=lambda b: (b.priority, b.name))
    if not owners or owners[0].device_module is None:
        return None
    return getattr(torch, owners[0].device_module, None)


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has run everything queued on it (kernels launch asynchronously)."""
    sync = getattr(_device_module(device), "synchronize", None)
    if sync is not None:
        sync()


def reset_peak_memory(device: torch.device | str) -> None:
    """Release cached blocks and restart the peak-memory counter of ``device``."""
    mod = _device_module(device)
    if mod is not None and hasattr(mod, "reset_peak_memory_stats"):
        mod.empty_cache()
        mod.reset_peak_memory_stats()


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """The most memory tensors held on ``device`` since the last reset; None where not counted."""
    mod = _device_module(device)
    if mod is None or not hasattr(mod, "max_memory_allocated"):
        return None
    return int(mod.max_memory_allocated())


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Free memory on ``device`` after releasing cached blocks; None where not counted."""
    mod = _device_module(device)
    if mod is None or not hasattr(mod, "mem_get_info"):
        return None
    mod.empty_cache()
    return int(mod.mem_get_info()[0])
