"""What a profiled stretch of work spent its device time on: the top kernels, the kernels per
step, and the device time by kind (GEMM, attention, the rest), so a benchmark that misses its
target says what stops it (issue 19). Device kernels where the profiler sees a device; on the
CPU (smoke runs) its operators' self times (their time less their children's) stand in for them."""
from __future__ import annotations

import re
from typing import Any

# kernel names by kind (cuBLAS/CUTLASS/nvjet GEMMs, flash/cuDNN/efficient attention, Triton
# (liger, inductor), optimizer); the CPU's aten names for the same kinds in smoke runs
KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa|attn", re.I)),
    ("gemm", re.compile(r"gemm|xmma|cutlass|nvjet|cublas|aten::(mm|addmm|bmm|matmul|linear)\b|mkldnn|onednn", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach|fused_sgd", re.I)),
    ("triton", re.compile(r"triton|liger", re.I)),
)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def kernel_summary(prof: Any, steps: int, top: int = 20, wall_ms_per_step: float | None = None) -> dict[str, Any]:
    """Summarise a finished ``torch.profiler.profile`` over ``steps`` steps. With
    ``wall_ms_per_step`` (the same steps' wall time), ``device_busy`` says what share of it
    the device was running kernels: far below 1 means the host, not the device, bounds a step."""
    import torch

    events = list(prof.events())
    dev = [e for e in events if e.device_type != torch.autograd.DeviceType.CPU]
    what = "device kernels"

    def us(e: Any) -> float:
        return e.time_range.elapsed_us()

    if not dev:
        what = "CPU operators' self time (no device events)"
        dev = events

        def us(e: Any) -> float:
            return e.self_cpu_time_total

    per_name: dict[str, list[float]] = {}
    for e in dev:
        slot = per_name.setdefault(e.name, [0, 0.0])
        slot[0] += 1
        slot[1] += us(e)
    total_us = sum(v[1] for v in per_name.values())
    by_kind: dict[str, float] = {}
    for name, (_, us) in per_name.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + us
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    steps = max(1, steps)
    r: dict[str, Any] = {
        "steps": steps, "what": what, "kernels_per_step": round(len(dev) / steps, 1),
        "device_ms_per_step": round(total_us / steps / 1e3, 3),
        "by_kind_ms_per_step": {k: round(v / steps / 1e3, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top": [{"name": n[:160], "kind": kind_of(n), "calls_per_step": round(c / steps, 1),
                 "us_per_step": round(t / steps, 1), "share": round(t / total_us, 4) if total_us else None}
                for n, (c, t) in ranked],
    }
    if wall_ms_per_step:
        r["wall_ms_per_step"] = round(wall_ms_per_step, 3)
        r["device_busy"] = round(total_us / steps / 1e3 / wall_ms_per_step, 3)
    return r


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The summary as log lines."""
    head = f"{r['kernels_per_step']} {r['what']} per step, {r['device_ms_per_step']} ms per step"
    if "device_busy" in r:
        head += f" of {r['wall_ms_per_step']} ms wall (device busy {r['device_busy']:.0%})"
    kinds = ", ".join(f"{k} {v} ms" for k, v in r["by_kind_ms_per_step"].items())
    lines = [head, f"by kind: {kinds}", f"top {len(r['top'])}:"]
    lines += [f"  {row['us_per_step']:>10.1f} us  {row['calls_per_step']:>6.1f}x  {row['kind']:<9} {row['name'][:100]}"
              for row in r["top"]]
    return lines
