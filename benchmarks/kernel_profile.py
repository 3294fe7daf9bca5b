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


# host calls that wait for the device (a read of a result: .item(), a tensor in an `if`, a
# boolean-mask index; a blocking copy) and the aten operators that cause them
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
              "cudaMemcpyAsync")
HOST_READS = ("aten::_local_scalar_dense", "aten::nonzero")  # .item() and `if tensor` both reach the first


def host_waits(events: list[Any], steps: int) -> dict[str, Any]:
    """What the host spent waiting for the device, and the reads that made it wait, per step:
    each wait lets the device run dry while the host catches up afterwards."""
    import torch

    cpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    waits = [e for e in cpu if e.name in HOST_WAITS]
    reads: dict[str, int] = {}
    for e in cpu:
        if e.name in HOST_READS:
            reads[e.name] = reads.get(e.name, 0) + 1
    steps = max(1, steps)
    long_waits = [e for e in waits if e.time_range.elapsed_us() > 100]
    return {"host_wait_ms_per_step": round(sum(e.time_range.elapsed_us() for e in waits) / steps / 1e3, 3),
            "host_waits_over_100us_per_step": round(len(long_waits) / steps, 1),
            "host_reads_per_step": {k: round(v / steps, 1) for k, v in sorted(reads.items())}}


def host_top(events: list[Any], steps: int, wall_ms: float | None, top: int = 12) -> dict[str, Any]:
    """Where the host's time went per step: its operators' and runtime calls' self times (time
    less their children's), the top ones, and what is left of the wall (Python between the
    operators: the trainer, peft's and liger's wrappers, the profiler's own cost)."""
    import torch

    per_name: dict[str, list[float]] = {}
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CPU:
            continue
        slot = per_name.setdefault(e.name, [0, 0.0])
        slot[0] += 1
        slot[1] += e.self_cpu_time_total
    steps = max(1, steps)
    total_ms = sum(v[1] for v in per_name.values()) / steps / 1e3
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    r: dict[str, Any] = {
        "host_ops_self_ms_per_step": round(total_ms, 3),
        "host_top": [{"name": n[:120], "calls_per_step": round(c / steps, 1), "self_ms_per_step": round(t / steps / 1e3, 3)}
                     for n, (c, t) in ranked],
    }
    if wall_ms:
        r["host_outside_ops_ms_per_step"] = round(wall_ms - total_ms, 3)
    return r


def device_idle_ms(events: list[Any], wall_ms: float, steps: int) -> float | None:
    """Wall time per step with no kernel running (the union of kernel intervals, subtracted)."""
    import torch

    spans = sorted((e.time_range.start, e.time_range.end) for e in events
                   if e.device_type != torch.autograd.DeviceType.CPU)
    if not spans:
        return None
    busy, (start, end) = 0.0, spans[0]
    for s, e in spans[1:]:
        if s > end:
            busy += end - start
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    return round(wall_ms - busy / max(1, steps) / 1e3, 3)


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
    r.update(host_waits(events, steps))
    if wall_ms_per_step:
        r["wall_ms_per_step"] = round(wall_ms_per_step, 3)
        r["device_busy"] = round(total_us / steps / 1e3 / wall_ms_per_step, 3)
        if what == "device kernels":
            r["device_idle_ms_per_step"] = device_idle_ms(events, wall_ms_per_step, steps)
            r.update(host_top(events, steps, wall_ms_per_step))
    return r


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The summary as log lines."""
    head = f"{r['kernels_per_step']} {r['what']} per step, {r['device_ms_per_step']} ms per step"
    if "device_busy" in r:
        head += f" of {r['wall_ms_per_step']} ms wall (device busy {r['device_busy']:.0%})"
    kinds = ", ".join(f"{k} {v} ms" for k, v in r["by_kind_ms_per_step"].items())
    lines = [head, f"by kind: {kinds}"]
    if "host_wait_ms_per_step" in r:
        lines.append(f"host waited {r['host_wait_ms_per_step']} ms per step ({r['host_waits_over_100us_per_step']} waits "
                     f"over 100 us); reads per step {r['host_reads_per_step']}; device idle "
                     f"{r.get('device_idle_ms_per_step')} ms per step")
    if "host_top" in r:
        lines.append(f"host: operators' self time {r['host_ops_self_ms_per_step']} ms per step, outside them "
                     f"{r.get('host_outside_ops_ms_per_step')} ms; top:")
        lines += [f"  {row['self_ms_per_step']:>10.3f} ms  {row['calls_per_step']:>6.1f}x  {row['name'][:100]}"
                  for row in r["host_top"]]
    lines.append(f"top {len(r['top'])}:")
    lines += [f"  {row['us_per_step']:>10.1f} us  {row['calls_per_step']:>6.1f}x  {row['kind']:<9} {row['name'][:100]}"
              for row in r["top"]]
    return lines
