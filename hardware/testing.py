"""Fakes that make this machine look like a CUDA or Ascend host, for tests.

They patch the things the real probes look at (``torch.cuda.device_count``, NVML,
``torch_npu`` / ``torch.npu``, module specs) through a pytest ``monkeypatch``, so the
real probe and resolution code runs. Nothing here creates a device: anything that
touches one (``ResolvedBackend.device``, a tensor) still needs the real hardware.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types
from typing import Any

from . import nvml


def fake_module(monkeypatch: Any, name: str, **attrs: Any) -> types.ModuleType:
    """Put an importable stand-in module with a spec into ``sys.modules`` (so ``find_spec`` finds it)."""
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def no_cuda(monkeypatch: Any) -> None:
    """Make the CUDA probe find no device, whatever this machine has."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def fake_cuda(
    monkeypatch: Any, count: int = 2, name: str = "NVIDIA L40S", compute_capability: tuple[int, int] = (8, 9)
) -> None:
    """A CUDA build of torch with ``count`` GPUs of compute capability ``compute_capability``."""
    import torch

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(nvml, "device_info", lambda: nvml.NvmlInfo(name, compute_capability))


def fake_ascend(monkeypatch: Any, count: int = 8, name: str = "Ascend910B3", bf16: bool = True) -> types.SimpleNamespace:
    """An installed ``torch_npu`` whose ``torch.npu`` reports ``count`` NPUs; returns the namespace."""
    import torch

    npu = types.SimpleNamespace(
        is_available=lambda: count > 0,
        device_count=lambda: count,
        get_device_name=lambda index=0: name,
        is_bf16_supported=lambda: bf16,
    )
    fake_module(monkeypatch, "torch_npu")
    monkeypatch.setattr(torch, "npu", npu, raising=False)
    # the probe sets this for vLLM's workers; register it so monkeypatch restores it
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    return npu


def fake_vllm(monkeypatch: Any, ascend_plugin: bool = False) -> None:
    """An installed vLLM (and vllm-ascend, its platform plugin, where asked) as ``find_spec`` sees it."""
    fake_module(monkeypatch, "vllm")
    if ascend_plugin:
        fake_module(monkeypatch, "vllm_ascend")


def record_start_method(monkeypatch: Any) -> list[str]:
    """Keep resolution from changing this process's multiprocessing start method; record the request."""
    import multiprocessing

    calls: list[str] = []
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: None)
    monkeypatch.setattr(multiprocessing, "set_start_method", lambda method, force=False: calls.append(method))
    return calls
