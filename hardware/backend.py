"""The backend record a ``srscode_backends`` hook yields, and what its probe returns.

A record is plain data plus three small callables; nothing here imports torch.
"""
from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found, without initialising a device.

    ``reason`` says why the backend is usable or not, in words a user can act on.
    ``device_name`` may be ``None`` where reading it would initialise the device;
    the record's ``describe`` is then asked later, only for metadata.
    """

    usable: bool
    reason: str
    device_name: str | None = None
    device_count: int = 0


def _no_env(env: MutableMapping[str, str]) -> None:
    return None


def _no_bf16() -> bool:
    return False


def _no_graph_runner() -> None:
    return None


@dataclass(frozen=True)
class Backend:
    """One kind of hardware, as a plugin record (``registry.components["backend"][name].spec``).

    ``priority``: lower is probed first when ``hardware.backend`` is ``auto``
    (built-ins: ascend 10, cuda 20, cpu 1000). ``accelerator`` is False only for a
    backend whose dtype policy is fp32 and which cannot run vLLM. ``generator_modules``
    are the modules vLLM needs on this backend (``("vllm", "vllm_ascend")`` on Ascend,
    where vllm-ascend is vLLM's platform plugin); checked with ``find_spec``, never
    imported. ``mp_start_method`` is applied to this process's ``multiprocessing`` when
    nothing has fixed it yet. ``graph_runner`` returns a :class:`~.graphs.GraphRunner`
    (device graph capture and replay) or None where the device has none: callers then
    run the same work eagerly.
    """

    name: str
    device_type: str
    collective: str
    visible_devices_var: str | None
    env_prefixes: tuple[str, ...]
    probe: Callable[[], ProbeResult]
    prepare_env: Callable[[MutableMapping[str, str]], None] = _no_env
    bf16_supported: Callable[[], bool] = _no_bf16
    priority: int = 100
    accelerator: bool = True
    generator_modules: tuple[str, ...] = ("vllm",)
    mp_start_method: str | None = None
    describe: Callable[[], str | None] | None = None
    summary: str = ""
    graph_runner: Callable[[], object | None] = _no_graph_runner
