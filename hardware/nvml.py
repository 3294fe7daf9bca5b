"""Name and compute capability of the first visible NVIDIA GPU, read through NVML.

NVML answers from the driver without creating a CUDA context or calling ``cuInit``,
so asking it keeps the process fork-safe and costs no GPU memory (torch's own
``torch.cuda.device_count()`` uses NVML first for the same reason). ctypes on the
driver's ``libnvidia-ml.so.1`` avoids a dependency on ``nvidia-ml-py``.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass


@dataclass(frozen=True)
class NvmlInfo:
    name: str | None
    compute_capability: tuple[int, int] | None


def _first_visible_index() -> int:
    """NVML index of torch's ``cuda:0`` (honours CUDA_VISIBLE_DEVICES, UUIDs included)."""
    try:
        import torch.cuda

        return int(torch.cuda._get_nvml_device_index(0))  # private but stable since torch 1.13
    except Exception:  # noqa: BLE001 - any failure means "use NVML index 0"
        return 0


def device_info() -> NvmlInfo | None:
    """``None`` where NVML is absent or fails (no driver, a CPU box, a container without it)."""
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if lib.nvmlInit_v2() != 0:
            return None
    except AttributeError:
        return None
    try:
        handle = ctypes.c_void_p()
        if lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(_first_visible_index()), ctypes.byref(handle)) != 0:
            return None
        buf = ctypes.create_string_buffer(96)
        name = buf.value.decode(errors="replace") if lib.nvmlDeviceGetName(handle, buf, ctypes.c_uint(96)) == 0 else None
        major, minor = ctypes.c_int(), ctypes.c_int()
        rc = lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor))
        cc = (major.value, minor.value) if rc == 0 else None
        return NvmlInfo(name or None, cc)
    except AttributeError:  # a driver too old for these symbols
        return None
    finally:
        lib.nvmlShutdown()
