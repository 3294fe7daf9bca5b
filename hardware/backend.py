"""The backend record a ``srscode_backends`` hook yields, what its probe returns, and its
startup-check rules.

A record is plain data plus a few small callables; nothing here imports torch.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class CompatFacts:
    """What a :class:`CompatRule` looks at: installed versions (``None`` = not installed),
    the generator's tensor-parallel size, whether it serves a LoRA adapter, the environment."""

    versions: Mapping[str, str | None]
    tp: int = 1
    lora: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)

    def installed(self, dist: str) -> bool:
        """Whether ``dist`` is installed with a version that parses."""
        from .compat import parse_version

        return parse_version(self.versions.get(dist)) is not None

    def vllm_plugin_enabled(self, name: str) -> bool:
        """Whether vLLM would activate its platform plugin ``name`` (every installed one,
        unless ``VLLM_PLUGINS`` lists the wanted ones)."""
        allowed = self.environ.get("VLLM_PLUGINS")
        return allowed is None or name in [p.strip() for p in allowed.split(",")]


@dataclass(frozen=True)
class CompatRule:
    """A known problem on one backend, checked at start-up while it is the resolved one.

    Where ``applies(facts)``, ``message`` (formatted with ``tp``) refuses the start
    (``error``) or is logged as a warning.
    """

    applies: Callable[[CompatFacts], bool]
    message: str
    error: bool = False


def _no_env(env: MutableMapping[str, str]) -> None:
    return None


def _no_bf16() -> bool:
    return False


def _no_graph_runner() -> None:
    return None


def _no_linear_packer(precision: str = "model") -> None:
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
    run the same work eagerly. ``linear_packer(precision)`` returns a
    :class:`~.packing.LinearPacker` (frozen weights laid out once for the device's GEMM
    library; ``precision`` one of :data:`~.packing.PRECISIONS`) or None where the plain
    layout is already the fast one. ``varying_shapes``: True where a tensor whose size
    changes every step costs nothing extra (eager kernels, no compilation per shape); the
    training stages then let TRL's fused LM head score only the tokens that carry a label
    (:mod:`srscode.plugins.lib.compact_lm_head`). False (TRL's own choice) where unknown.

    ``visible_devices_var`` selects this backend's devices (a launcher forwards it,
    ``srscode env`` shows it); ``extra_visible_devices_vars`` are further variables its
    runtime also reads. The evaluator's sandbox sets all of them, of every registered
    backend, empty. ``device_module`` names the ``torch`` submodule that drives the device
    (``torch.<device_module>.synchronize()`` and its memory counters, through
    :mod:`~.device`); None where there is nothing to wait for or count. ``compat_rules``
    are checked at start-up while this backend is the resolved one.
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
    linear_packer: Callable[[str], object | None] = _no_linear_packer
    varying_shapes: bool = False
    extra_visible_devices_vars: tuple[str, ...] = ()
    device_module: str | None = None
    compat_rules: tuple[CompatRule, ...] = ()

    @property
    def visible_devices_vars(self) -> tuple[str, ...]:
        """Every variable that, set empty, hides this backend's devices from a process."""
        first = (self.visible_devices_var,) if self.visible_devices_var else ()
        return first + self.extra_visible_devices_vars
