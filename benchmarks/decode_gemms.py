"""The decode step's linear layers, separate against packed (issue 19, part 1).

One decode step of the Qwen2.5-Coder-1.5B shape runs 7 GEMMs per layer at M = rows
(q, k, v, o, gate, up, down). q/k/v read the same input, as do gate/up: each group can be
one GEMM over concatenated weights. This measures, on the accelerator, 28 layers' worth of
each form captured in one CUDA graph (distinct weights per layer, as in the model, so
nothing is served from L2), and reports the ratio separate / packed in the same run.

    python benchmarks/decode_gemms.py [--rows 256] [--layers 28] [--reps 50]

Needs a CUDA device (prints why and exits 0 without one: a measurement, not a test).
"""
from __future__ import annotations

import argparse
import json
import sys

HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM = 1536, 8960, 12, 2, 128  # Qwen2.5-Coder-1.5B


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--autotune", action="store_true",
                    help="also the packed layer through torch.compile(mode='max-autotune-no-cudagraphs') (minutes)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("decode_gemms: no CUDA device; nothing measured")
        return 0
    dev, dt = "cuda", torch.bfloat16
    q_n, kv_n = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM

    def w(n: int, k: int) -> "torch.Tensor":
        return torch.randn(n, k, device=dev, dtype=dt) * 0.02

    layers = []
    for _ in range(args.layers):
        q, k, v = w(q_n, HIDDEN), w(kv_n, HIDDEN), w(kv_n, HIDDEN)
        qb, kb, vb = (torch.zeros(n, device=dev, dtype=dt) for n in (q_n, kv_n, kv_n))
        gate, up, down = w(INTER, HIDDEN), w(INTER, HIDDEN), w(HIDDEN, INTER)
        layers.append(dict(q=q, k=k, v=v, qb=qb, kb=kb, vb=vb, gate=gate, up=up, down=down,
                           qkv=torch.cat([q, k, v]), qkvb=torch.cat([qb, kb, vb]), gate_up=torch.cat([gate, up])))
    x = torch.randn(args.rows, HIDDEN, device=dev, dtype=dt)

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
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        g.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.reps):
            g.replay()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / args.reps

    with torch.inference_mode():
        if tuned is not None:
            autotuned()  # compiles and autotunes, untimed
        rounds = [(timed(separate), timed(packed)) + ((timed(autotuned),) if tuned else ()) for _ in range(3)]  # alternated: clocks drift
    sep = min(r[0] for r in rounds)
    pack = min(r[1] for r in rounds)
    nbytes = sum(t.numel() * t.element_size() for lw in layers for n, t in lw.items() if n in ("q", "k", "v", "gate", "up", "down"))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": args.rows, "layers": args.layers,
           "separate_ms": round(sep, 4), "packed_ms": round(pack, 4), "ratio_separate_over_packed": round(sep / pack, 4),
           "weights_gb": round(nbytes / 1e9, 3), "separate_tb_s": round(nbytes / sep / 1e9, 3),
           "packed_tb_s": round(nbytes / pack / 1e9, 3), "rounds_ms": rounds}
    if tuned is not None:
        best = min(r[2] for r in rounds)
        out.update(autotuned_ms=round(best, 4), ratio_packed_over_autotuned=round(pack / best, 4))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
