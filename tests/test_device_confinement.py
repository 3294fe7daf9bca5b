"""hardware/ owns every device detail (issue 16, item 4).

Outside ``hardware/`` no module names a device API (``torch.cuda``, ``torch_npu``,
``getattr(torch, device.type)``, ``.synchronize(``, the device memory counters), a
visible-devices variable (``CUDA_VISIBLE_DEVICES``...) or branches on a hardware name
(``device.type != "cpu"``): stages, the sandbox and the benchmarks ask ``srscode.hardware``.
So a new accelerator is one ``Backend`` record: the second half of this file registers the
one docs/plugins.md walks through ("A new accelerator backend") and checks that
resolution, synchronisation, the memory counters, the sandbox's hidden devices and the
startup check all follow it without an edit anywhere else.

Comments and docstrings are scanned too: prose can say "the GPU", not ``torch.cuda``.
"""
from __future__ import annotations

import ast
import dataclasses
import re
import types
from pathlib import Path

import pytest
from srscode import hardware
from srscode.core.config import HardwareConfig
from srscode.core.errors import ConfigError
from srscode.core.registry import make_plugin_manager
from srscode.hardware import CompatRule, resolve_backend
from srscode.hardware.backends import BUILTIN_BACKENDS, CPU
from srscode.hardware.compat import check_compat
from srscode.hardware.testing import fake_module

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("core", "plugins", "srscode_root", "benchmarks")

DEVICE_API = re.compile(
    r"""
      \btorch\.(?:cuda|npu|xpu|mps)\b             # a device module
    | \btorch\.backends\.(?:cuda|cudnn|mps)\b
    | \btorch_npu\b
    | \bgetattr\(\s*torch\s*,                     # getattr(torch, device.type)
    | (?<!hardware)\.synchronize\(                # a device module's, not hardware.synchronize(
    | \b(?:max_memory_allocated|mem_get_info|reset_peak_memory_stats|empty_cache)\b
    """,
    re.X,
)
DEVICE_VAR = re.compile(r"\b[A-Z][A-Z0-9_]*_VISIBLE_DEVICES\b")
HARDWARE_NAMES = {"cpu", "cuda", "npu", "ascend", "xpu", "mps", "hip", "rocm"}

# (path relative to the repo, the exact text) -> why it may stay. Empty: nothing may.
ALLOWED: dict[tuple[str, str], str] = {}


def scanned_files() -> list[Path]:
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py")) if "__pycache__" not in p.parts]
    assert len(files) > 50, "the scan found too few modules: did the tree move?"
    return files


def device_var_names() -> set[str]:
    """Every variable a registered backend declares, also where DEVICE_VAR would miss it."""
    return set(hardware.visible_devices_vars())


def leaks(path: Path, root: Path = ROOT) -> list[str]:
    rel = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8")
    named = device_var_names()
    found: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        hits = [m.group(0) for m in DEVICE_API.finditer(line)] + [m.group(0) for m in DEVICE_VAR.finditer(line)]
        hits += [v for v in named if re.search(rf"\b{v}\b", line) and v not in hits]
        found += [f"{rel}:{lineno}: {hit}" for hit in hits if (rel, hit) not in ALLOWED]
    for node in ast.walk(ast.parse(text, filename=rel)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            consts = [c for o in operands for c in ([o, *o.elts] if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o])]
            names = [c.value for c in consts if isinstance(c, ast.Constant) and c.value in HARDWARE_NAMES]
            found += [f"{rel}:{node.lineno}: branches on {n!r}" for n in names if (rel, n) not in ALLOWED]
    return found


def test_no_device_detail_outside_hardware():
    found = [leak for path in scanned_files() for leak in leaks(path)]
    assert not found, (
        "device details outside hardware/ (ask srscode.hardware: synchronize, the memory "
        "counters, visible_devices_vars, the resolved backend):\n  " + "\n  ".join(found)
    )


def test_the_scan_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import torch\n"
        "torch.cuda.synchronize()\n"
        "getattr(torch, dev.type).synchronize()\n"
        "env = {'HIP_VISIBLE_DEVICES': ''}\n"
        "if dev.type != 'cpu':\n    pass\n"
        "mem = mod.max_memory_allocated()\n"
        "hardware.synchronize(dev)  # the way to do it\n"
    )
    found = leaks(bad, root=tmp_path)
    assert [f.split(": ", 1)[1] for f in found] == [
        "torch.cuda", ".synchronize(", "getattr(torch,", ".synchronize(", "HIP_VISIBLE_DEVICES",
        "max_memory_allocated", "branches on 'cpu'",
    ]


# --------------------------------------------------------------------- a new backend


def walkthrough_code() -> str:
    """The plugin module of docs/plugins.md, "A new accelerator backend"."""
    page = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = page.split("\n## A new accelerator backend\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


class FakeXpu:
    """What ``torch.xpu`` offers, recording the calls that act on the device."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def device_count(self) -> int:
        return 2

    def synchronize(self) -> None:
        self.calls.append("synchronize")

    def empty_cache(self) -> None:
        self.calls.append("empty_cache")

    def reset_peak_memory_stats(self) -> None:
        self.calls.append("reset_peak_memory_stats")

    def max_memory_allocated(self) -> int:
        return 3 * 2**30

    def mem_get_info(self) -> tuple[int, int]:
        return (5 * 2**30, 8 * 2**30)


@pytest.fixture
def xpu(monkeypatch):
    """The walkthrough's module registered as a third party's is (here through
    ``SRSCODE_PLUGINS``), on a faked ``torch.xpu`` with two devices."""
    import torch

    plugin = fake_module(monkeypatch, "srscode_xpu")
    exec(compile(walkthrough_code(), "docs/plugins.md", "exec"), plugin.__dict__)
    monkeypatch.setenv("SRSCODE_PLUGINS", "srscode_xpu")
    device = FakeXpu()
    monkeypatch.setattr(torch, "xpu", device, raising=False)
    hardware.registered_backends.cache_clear()
    yield types.SimpleNamespace(record=plugin.XPU, device=device)
    hardware.registered_backends.cache_clear()


def test_new_backend_resolves(xpu):
    b = resolve_backend(HardwareConfig(backend="xpu"), make_plugin_manager())
    assert (b.name, b.device_type, b.collective, b.dtype_name, b.device_count) == ("xpu", "xpu", "xccl", "bf16", 2)
    assert b.launcher_env({"ZE_AFFINITY_MASK": "0", "ONEAPI_DEVICE_SELECTOR": "level_zero:0", "HOME": "/"}) == {
        "ZE_AFFINITY_MASK": "0", "ONEAPI_DEVICE_SELECTOR": "level_zero:0"}


def test_new_backend_is_synchronised_and_counted(xpu):
    import torch

    dev = torch.device("xpu")
    hardware.synchronize(dev)
    hardware.reset_peak_memory(dev)
    assert hardware.peak_memory_bytes(dev) == 3 * 2**30
    assert hardware.free_memory_bytes(dev) == 5 * 2**30
    assert xpu.device.calls == ["synchronize", "empty_cache", "reset_peak_memory_stats", "empty_cache"]


def test_cpu_has_nothing_to_wait_for_or_count():
    import torch

    cpu = torch.device("cpu")
    hardware.synchronize(cpu)
    hardware.reset_peak_memory(cpu)
    assert hardware.peak_memory_bytes(cpu) is None and hardware.free_memory_bytes(cpu) is None


def test_new_backend_devices_are_hidden_from_candidates(xpu):
    from srscode.plugins.evaluate.sandbox.isolation import static_report
    from srscode.plugins.evaluate.sandbox.limits import scrubbed_env

    env = scrubbed_env("/tmp/home", source={"ZE_AFFINITY_MASK": "0", "PATH": "/bin"})
    for var in ("ZE_AFFINITY_MASK", "ONEAPI_DEVICE_SELECTOR", "CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES"):
        assert env[var] == ""
    assert "ONEAPI_DEVICE_SELECTOR" in static_report()["accelerators"]


def test_builtin_backends_hide_what_the_sandbox_always_hid():
    from srscode.plugins.evaluate.sandbox.limits import scrubbed_env

    hidden = {"CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}
    assert set(hardware.visible_devices_vars(make_plugin_manager(load_entry_points=False))) == hidden
    assert {v for b in BUILTIN_BACKENDS for v in b.visible_devices_vars} == hidden
    env = scrubbed_env("/tmp/home", source={v: "0" for v in hidden})
    assert {v: env[v] for v in hidden} == dict.fromkeys(hidden, "")


def test_new_backend_compat_rules_apply_only_on_it(xpu):
    versions = {"python": "3.11.7", "torch": "2.10.0"}
    assert check_compat(versions, xpu.record) == []
    assert check_compat(versions, xpu.record, tp=2, lora=True) == ["LoRA with tensor_parallel_size=2 is untested on XPU"]
    assert check_compat(versions, CPU, tp=2, lora=True) == []
    strict = dataclasses.replace(
        xpu.record, compat_rules=(CompatRule(lambda facts: facts.installed("vllm-ascend"), "vllm-ascend next to an XPU", error=True),)
    )
    assert check_compat(versions, strict) == []
    with pytest.raises(ConfigError, match="vllm-ascend next to an XPU"):
        check_compat({**versions, "vllm-ascend": "0.23.0"}, strict)
