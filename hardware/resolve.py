"""Pick the backend once per process and derive everything stages ask of it.

Which backend:

1. ``hardware.backend`` in the config, when it is not ``auto``. An explicit config value
   wins over the environment (a config file is the record of the run; if
   ``SRSCODE_BACKEND`` disagrees, a warning says it was ignored).
2. ``SRSCODE_BACKEND``, when the config says ``auto`` (so one config file runs on any
   box, and a box can pin its own backend).
3. Otherwise every registered backend is probed in ``priority`` order (ascend, cuda,
   then cpu with a warning); the first usable one wins.

A backend named in 1 or 2 that is not usable here is a :class:`ConfigError` saying why.

Dtype: ``auto`` = bf16 where the device supports it, else fp16, and fp32 on CPU.
``require_bf16: true`` turns any fallback (and an explicit fp16/fp32) into an error.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import multiprocessing
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from srscode.core.errors import ConfigError

from .backend import Backend, ProbeResult

if TYPE_CHECKING:
    import torch
    from srscode.core.config import HardwareConfig
    from srscode.core.registry import Registry

log = logging.getLogger("srscode.hardware")

ENV_VAR = "SRSCODE_BACKEND"
_MIXED = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


@dataclass(frozen=True)
class ResolvedBackend:
    """The backend this process uses; stages ask it instead of branching on hardware."""

    backend: Backend
    dtype_name: str  # "bf16" | "fp16" | "fp32"
    probe: ProbeResult
    source: str  # "config" | "env" | "probe"
    _name_cache: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ record fields
    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def device_type(self) -> str:
        return self.backend.device_type

    @property
    def collective(self) -> str:
        return self.backend.collective

    @property
    def visible_devices_var(self) -> str | None:
        return self.backend.visible_devices_var

    @property
    def env_prefixes(self) -> tuple[str, ...]:
        return self.backend.env_prefixes

    @property
    def mp_start_method(self) -> str | None:
        return self.backend.mp_start_method

    @property
    def device_count(self) -> int:
        return self.probe.device_count

    @property
    def device_name(self) -> str | None:
        """From the probe, or read once from the device (which may initialise it)."""
        if self.probe.device_name is not None:
            return self.probe.device_name
        if "name" not in self._name_cache:
            name = None
            if self.backend.describe is not None:
                try:
                    name = self.backend.describe()
                except Exception as exc:  # noqa: BLE001 - metadata must not stop a run
                    log.warning("could not read the %s device name: %s", self.name, exc)
            self._name_cache["name"] = name
        return self._name_cache["name"]

    # ------------------------------------------------------------------ training / generation
    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.dtype_name]

    @property
    def mixed_precision(self) -> str:
        """For accelerate / TRL: ``bf16``, ``fp16`` or ``no``."""
        return _MIXED[self.dtype_name]

    @property
    def use_cpu(self) -> bool:
        """For TRL/transformers ``use_cpu=`` and accelerate ``cpu=``."""
        return self.device_type == "cpu"

    @property
    def device(self) -> torch.device:
        """This process's device, as accelerate sees it (it handles ranks and local devices)."""
        from accelerate import PartialState

        dev = PartialState(cpu=self.use_cpu).device
        if dev.type != self.device_type:
            raise ConfigError(
                f"hardware.backend resolved to {self.name!r} (device type {self.device_type}) but "
                f"accelerate's state in this process uses {dev.type!r}; something initialised "
                "accelerate for another device first. Set hardware.backend to match, or start a fresh process."
            )
        return dev

    def graph_runner(self) -> Any:
        """A fresh :class:`~srscode.hardware.graphs.GraphRunner` for this device, or None
        (no graph capture here: run eagerly)."""
        return self.backend.graph_runner()

    def linear_packer(self, precision: str = "model") -> Any:
        """A :class:`~srscode.hardware.packing.LinearPacker` for this device, or None (use
        ``F.linear``); ``precision``: ``model``, ``bf16`` or ``auto`` (see :func:`~srscode.hardware.packing.onednn_packer`)."""
        return self.backend.linear_packer(precision)

    @property
    def varying_shapes(self) -> bool:
        """Whether tensors whose size changes every step cost nothing extra here (see :class:`Backend`)."""
        return self.backend.varying_shapes

    @property
    def preferred_generator(self) -> str:
        """``vllm`` where vLLM (and, on Ascend, vllm-ascend) is installed on an accelerator, else ``hf``.

        Checked with ``find_spec`` only; vllm_ascend is looked up only where the backend
        lists it, never on CUDA.
        """
        mods = self.backend.generator_modules
        if self.backend.accelerator and mods and all(importlib.util.find_spec(m) is not None for m in mods):
            return "vllm"
        return "hf"

    def launcher_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables a launcher must forward to workers (visible devices + env prefixes)."""
        env = os.environ if environ is None else environ
        keep = tuple(self.env_prefixes) + ((self.visible_devices_var,) if self.visible_devices_var else ())
        return {k: v for k, v in env.items() if k.startswith(keep)} if keep else {}

    # ------------------------------------------------------------------ records
    def versions(self) -> dict[str, str | None]:
        from .versions import package_versions

        return package_versions()

    def metadata(self) -> dict[str, Any]:
        """What the run records: backend, device, dtype, and every relevant version."""
        return {
            "backend": self.name,
            "source": self.source,
            "device_type": self.device_type,
            "collective": self.collective,
            "device_name": self.device_name,
            "device_count": self.device_count,
            "dtype": self.dtype_name,
            "mixed_precision": self.mixed_precision,
            "preferred_generator": self.preferred_generator,
            "versions": self.versions(),
        }

    def check_compat(
        self, tp: int = 1, lora: bool = False, versions: Mapping[str, str | None] | None = None
    ) -> list[str]:
        """The startup check; raises ConfigError on a known-incompatible set, returns warnings."""
        from .compat import check_compat

        return check_compat(
            self.versions() if versions is None else versions, self.backend, tp=tp, lora=lora, environ=os.environ
        )


# ---------------------------------------------------------------------------- resolution

_cache: dict[tuple[Any, ...], ResolvedBackend] = {}
_lock = threading.Lock()


def reset_cache() -> None:
    """Forget the resolved backend (tests; a process normally resolves once)."""
    with _lock:
        _cache.clear()


def builtin_registry() -> Registry:
    """A registry with only the built-in backends (no other plugin imported)."""
    import pluggy
    from srscode.core import hookspecs
    from srscode.core.registry import PluginInfo, Registry

    from . import backends

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(backends, name=backends.__name__)
    return Registry(pm, [PluginInfo(backends.__name__, "srs-code", "builtin", True)], {})


def _records(registry: Registry) -> dict[str, Backend]:
    return {name: p.spec for name, p in registry.components["backend"].items()}


@functools.cache
def registered_backends() -> tuple[Backend, ...]:
    """Every backend the installed plugins register, for code with no resolved backend at
    hand (:mod:`.device`). Built once per process: the installed plugins do not change
    while it runs, so :func:`reset_cache` keeps it (tests adding a backend call
    ``registered_backends.cache_clear()``)."""
    from srscode.core.registry import make_plugin_manager

    return tuple(_records(make_plugin_manager()).values())


def _pick(hw: HardwareConfig, backends: dict[str, Backend], env_value: str) -> tuple[Backend, ProbeResult, str]:
    wanted, source = None, "probe"
    if hw.backend != "auto":
        wanted, source = hw.backend, "config"
        if env_value and env_value != hw.backend:
            log.warning(
                "%s=%s is ignored: the config sets hardware.backend: %s explicitly", ENV_VAR, env_value, hw.backend
            )
    elif env_value:
        wanted, source = env_value, "env"

    where = "hardware.backend" if source == "config" else f"{ENV_VAR} (environment)"
    if wanted is not None:
        backend = backends.get(wanted)
        if backend is None:
            raise ConfigError(
                f"{where}: unknown backend {wanted!r}. Available: {', '.join(sorted(backends)) or '(none)'}, or auto."
            )
        backend.prepare_env(os.environ)
        result = backend.probe()
        if not result.usable:
            raise ConfigError(
                f"{where}: backend {wanted!r} is not usable here: {result.reason}. "
                "Use hardware.backend: auto to pick what this machine has."
            )
        return backend, result, source

    tried: list[str] = []
    for backend in sorted(backends.values(), key=lambda b: (b.priority, b.name)):
        result = backend.probe()
        if result.usable:
            if not backend.accelerator:
                skipped = f" ({'; '.join(tried)})" if tried else ""
                log.warning("no accelerator found, running on %s%s", backend.name, skipped)
            return backend, result, source
        tried.append(f"{backend.name}: {result.reason}")
    raise ConfigError("hardware.backend: auto found no usable backend: " + "; ".join(tried))


def _dtype(hw: HardwareConfig, backend: Backend) -> str:
    where = f"hardware.dtype ({hw.dtype}) on backend {backend.name!r}"
    if hw.require_bf16 and hw.dtype in ("fp16", "fp32"):
        raise ConfigError(f"{where}: hardware.require_bf16 is true but the dtype is set to {hw.dtype}")
    if hw.dtype == "auto":
        if not backend.accelerator and not hw.require_bf16:
            return "fp32"
        if backend.bf16_supported():
            return "bf16"
        if hw.require_bf16:
            raise ConfigError(
                f"hardware.require_bf16 is true but this {backend.name} device has no bf16 "
                "(e.g. Ascend 910A, NVIDIA before Ampere); set require_bf16: false to fall back to fp16"
            )
        return "fp16"
    if hw.dtype == "bf16" and not backend.bf16_supported():
        raise ConfigError(f"{where}: this device has no bf16; use dtype: auto (fp16 here)")
    if hw.dtype == "fp16" and not backend.accelerator:
        raise ConfigError(f"{where}: fp16 mixed precision needs an accelerator (accelerate refuses it on CPU); use auto or fp32")
    return hw.dtype


def _apply_start_method(method: str | None) -> None:
    if method is None:
        return
    current = multiprocessing.get_start_method(allow_none=True)
    if current is None:
        multiprocessing.set_start_method(method)
    elif current != method:
        log.warning("multiprocessing start method is already %r; this backend wants %r", current, method)


def resolve_backend(hw_config: HardwareConfig | None = None, registry: Registry | None = None) -> ResolvedBackend:
    """Resolve (once per process per hardware config) the backend, its dtype and env."""
    if hw_config is None:
        from srscode.core.config import HardwareConfig

        hw_config = HardwareConfig()
    env_value = os.environ.get(ENV_VAR, "").strip()
    env_value = "" if env_value == "auto" else env_value
    key = (hw_config.backend, hw_config.dtype, hw_config.require_bf16, env_value)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            return found
        if registry is None:
            from srscode.core.registry import make_plugin_manager

            registry = make_plugin_manager()
        backend, probe, source = _pick(hw_config, _records(registry), env_value)
        dtype = _dtype(hw_config, backend)
        backend.prepare_env(os.environ)
        _apply_start_method(backend.mp_start_method)
        resolved = ResolvedBackend(backend=backend, dtype_name=dtype, probe=probe, source=source)
        log.info(
            "backend %s (%s, %d device(s), %s) from %s",
            resolved.name, probe.device_name or "?", probe.device_count, dtype, source,
        )
        _cache[key] = resolved
        return resolved
