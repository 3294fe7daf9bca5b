"""Resource limits and the scrubbed environment every candidate runs with."""
from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any, Mapping

# Variables a candidate may inherit; everything else (tokens, credentials, proxies,
# the user's PYTHON* settings) is dropped.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONPATH")

# Always set: BLAS single-threaded (a forked child must not rely on threads its parent
# started), no bytecode written, no debugger, no plugin autoload. Accelerators are hidden
# too, through hidden_devices().
ENV_FIXED = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONBREAKPOINT": "0",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    "PYTHONIOENCODING": "utf-8",
}


def hidden_devices() -> dict[str, str]:
    """Every registered backend's visible-devices variables, set empty: a candidate sees no
    accelerator, whichever backends are installed (hardware declares them, not the sandbox)."""
    from srscode.hardware import visible_devices_vars

    return dict.fromkeys(visible_devices_vars(), "")


def scrubbed_env(home: str, source: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None,
                 hidden: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a candidate runs with. ``hidden`` is :func:`hidden_devices` computed by
    the parent: a sandbox worker gets it in its config, so it never builds a plugin registry
    (slower start) and sees backends the parent registered (its SRSCODE_PLUGINS is scrubbed)."""
    src = os.environ if source is None else source
    env = {k: src[k] for k in ENV_ALLOW if k in src}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(hidden_devices() if hidden is None else hidden)
    env.update(ENV_FIXED)
    tmp = os.path.join(home, "tmp")
    env.update({"HOME": home, "TMPDIR": tmp, "TMP": tmp, "TEMP": tmp, "USER": "sandbox", "LOGNAME": "sandbox"})
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class Limits:
    """Per-candidate limits.

    ``memory_mb`` is address space the candidate may add on top of what its process
    already maps when it starts (a forked worker already maps pytest and its imports),
    so the same number means the same headroom in both evaluators.
    """

    memory_mb: int = 2048
    cpu_s: int = 10
    file_mb: int = 64
    open_files: int = 256
    processes: int = 64

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vm_size_bytes() -> int:
    """Current address-space size of this process (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds_for(timeout_s: float) -> int:
    """CPU-time limit for a wall timeout: a busy loop is stopped by SIGXCPU even if
    the wall-clock kill were late."""
    return int(math.ceil(timeout_s)) + 1


def apply_limits(limits: Limits, base_vm: int = 0, nproc: bool = True) -> list[str]:
    """setrlimit in the calling process; returns the limits that could not be set."""
    import resource

    failed: list[str] = []

    def _set(name: str, res: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        try:
            cur_soft, cur_hard = resource.getrlimit(res)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            failed.append(name)

    mb = 1024 * 1024
    if hasattr(resource, "RLIMIT_AS") and sys.platform.startswith("linux"):
        _set("address space", resource.RLIMIT_AS, base_vm + limits.memory_mb * mb)
    _set("cpu time", resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 2)
    _set("file size", resource.RLIMIT_FSIZE, limits.file_mb * mb)
    _set("open files", resource.RLIMIT_NOFILE, limits.open_files)
    _set("core dumps", resource.RLIMIT_CORE, 0)
    if nproc and hasattr(resource, "RLIMIT_NPROC"):
        _set("processes", resource.RLIMIT_NPROC, limits.processes)
    return failed
