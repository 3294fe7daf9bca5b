"""The decode step's linear layers, separate against packed (issue 19, part 1).

One decode step of the Qwen2.5-Coder-1.5B shape runs 7 GEMMs per layer at M = rows
(q, k, v, o, gate, up, down). q/k/v read the same input, as do gate/up: each group can be
one GEMM over concatenated weights. This measures, on the accelerator, 28 layers' worth of
each form captured in one device graph (distinct weights per layer, as in the model, so
nothing is served from L2), and reports the ratio separate / packed in the same run.

    python benchmarks/decode_gemms.py [--rows 256] [--layers 28] [--reps 50] [--out DIR]
    python benchmarks/decode_gemms.py --smoke   # tiny shapes on the CPU, eager (measures nothing)

Where the backend offers no device graphs (and without --smoke) it prints why and exits 0: a
measurement, not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM = 1536, 8960, 12, 2, 128  # Qwen2.5-Coder-1.5B


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--autotune", action="store_true",
                    help="also the packed layer through torch.compile(mode='max-autotune-no-cudagraphs') (minutes)")
    ap.add_argument("--out", type=Path, default=None, help="folder for decode_gemms.json")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no graphs: checks the script runs")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from srscode.core.config import HardwareConfig
    from srscode.hardware import synchronize
    from srscode.hardware.resolve import builtin_registry, resolve_backend

    backend = resolve_backend(HardwareConfig(backend="cpu" if args.smoke else "auto"), builtin_registry())
    dev, runner = backend.device, backend.graph_runner()
    hidden, inter, heads, kv_heads, head_dim = HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM
    dt = torch.bfloat16
    if args.smoke:
        dt = torch.float32
        hidden, inter, heads, kv_heads, head_dim = 64, 128, 4, 2, 16
        args.rows, args.layers, args.reps = 8, 2, 3
    elif runner is None:
        print(f"decode_gemms: the {backend.name} backend offers no device graphs; nothing measured")
        return 0
    q_n, kv_n = heads * head_dim, kv_heads * head_dim

    def w(n: int, k: int) -> "torch.Tensor":
        return torch.randn(n, k, device=dev, dtype=dt) * 0.02

    layers = []
    for _ in range(args.layers):
        q, k, v = w(q_n, hidden), w(kv_n, hidden), w(kv_n, hidden)
        qb, kb, vb = (torch.zeros(n, device=dev, dtype=dt) for n in (q_n, kv_n, kv_n))
        gate, up, down = w(inter, hidden), w(inter, hidden), w(hidden, inter)
        layers.append(dict(q=q, k=k, v=v, qb=qb, kb=kb, vb=vb, gate=gate, up=up, down=down,
                           qkv=torch.cat([q, k, v]), qkvb=torch.cat([qb, kb, vb]), gate_up=torch.cat([gate, up])))
    x = torch.randn(args.rows, hidden, device=dev, dtype=dt)

    def separate() -> None:
        for lw in layers:
            F.linear(x, lw["q"], lw["qb"]), F.linear(x, lw["k"], lw["kb"]), F.linear(x, lw["v"], lw["vb"])
            g, u = F.linear(x, lw["gate"]), F.linear(x, lw["up"])
            F.linear(F.silu(g) * u, lw["down"])

    def packed() -> None:
        for lw in layers:
            F.linear(x, lw["qkv"], lw["qkvb"]).split([q_n, kv_n, kv_n], -1)
            g, u = F.linear(x, lw["gate_up"]).chunk(2, -1)
            F.linear(F.silu(g) * u, lw["down"])

    def packed_layer(x, qkv, qkvb, gate_up, down):
        a = F.linear(x, qkv, qkvb)
        g, u = F.linear(x, gate_up).chunk(2, -1)
        return a, F.linear(F.silu(g) * u, down)

    tuned = torch.compile(packed_layer, mode="max-autotune-no-cudagraphs", dynamic=False) if args.autotune else None

    def autotuned() -> None:
        for lw in layers:
            tuned(x, lw["qkv"], lw["qkvb"], lw["gate_up"], lw["down"])

    def timed(fn) -> float:
        """ms per call: 28 layers' worth replayed from one device graph (eager without graphs)."""
        run = fn if runner is None else runner.capture(fn)  # (the runner warms fn up first)
        run()
        synchronize(dev)
        t = time.perf_counter()
        for _ in range(args.reps):
            run()
        synchronize(dev)
        return (time.perf_counter() - t) / args.reps * 1e3

    with torch.inference_mode():
        if tuned is not None:
            autotuned()  # compiles and autotunes, untimed
        rounds = [(timed(separate), timed(packed)) + ((timed(autotuned),) if tuned else ()) for _ in range(3)]  # alternated: clocks drift
    sep = min(r[0] for r in rounds)
    pack = min(r[1] for r in rounds)
    nbytes = sum(t.numel() * t.element_size() for lw in layers for n, t in lw.items() if n in ("q", "k", "v", "gate", "up", "down"))
    out = {"device": backend.device_name or str(dev), "torch": torch.__version__, "rows": args.rows, "layers": args.layers,
           "separate_ms": round(sep, 4), "packed_ms": round(pack, 4), "ratio_separate_over_packed": round(sep / pack, 4),
           "weights_gb": round(nbytes / 1e9, 3), "separate_tb_s": round(nbytes / sep / 1e9, 3),
           "packed_tb_s": round(nbytes / pack / 1e9, 3), "rounds_ms": rounds}
    if tuned is not None:
        best = min(r[2] for r in rounds)
        out.update(autotuned_ms=round(best, 4), ratio_packed_over_autotuned=round(pack / best, 4))
    print(json.dumps(out))
    print(f"RATIO separate / grouped GEMMs ({args.rows} rows, {args.layers} layers): {out['ratio_separate_over_packed']}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "decode_gemms.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
