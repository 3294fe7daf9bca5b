"""Generation speed of the ``hf`` generator's fast decode loop against ``model.generate``,
its memory use and its distance from the hardware limit (issue 7, targets 1 and 4).

    python3 benchmarks/generate.py --out OUT [--smollm2-gguf PATH] [--kodcode DIR]
    python3 benchmarks/generate.py --smoke [--out OUT]    # every part on the CPU, tiny shapes
    python3 benchmarks/generate.py --out OUT --parts a --profile   # part a + kernel profile

Parts (each in try/except; results in ``OUT/generate.json``, log in ``OUT/generate.log``):

a. Qwen2.5-Coder-1.5B shape, random weights, bf16: ``model.generate`` (dynamic cache)
   vs the fast loop (``FastDecoder``, the entry point the ``hf`` generator uses) on
   B=256 random prompts x 256 tokens, 256 new tokens (min_new_tokens forced), sampling
   T=0.8 top-p 0.95 and greedy; the fast loop also at B=512; the fast loop with
   ``compile=True`` (regional torch.compile, compile time reported apart: a first short
   call compiles, the timed call follows). ``--profile``: torch.profiler over 3 decode
   steps without graphs (B=256, window 512), eager and compiled: top-20 kernels by device
   time and kernels per step.
b. SmolLM2-135M-Instruct (``--smollm2-gguf``, converted the way ``hf_model`` converts the
   embedded GGUF) on the shared KodCode prompts x 4 through the real ``HFGenerator``
   (chat template, T=0.8, top-p 0.95, 512 new tokens, EOS honoured): ``decode=generate``
   on one batch of 64 prompts vs ``decode=fast`` on the same batch and on all prompts;
   plus greedy token-for-token checks vs ``generate`` on 8 prompts in bf16 and fp32.
c. Memory: peak memory per part, and the largest batch that fits for 256+256 tokens at
   the 1.5B and 7B shapes, from free memory and bytes per row, verified by decoding a few
   steps at that batch and trying 1.25x of it (an OOM there is caught and reported).
d. The physical limit per measured run: bytes per step (weights + KV) / 3 TB/s and FLOPs
   per step / 790 TFLOP/s against the measured step time; plus the graph replay and the
   sampler timed alone at B=256.

Random weights make top-p keep ~95 % of the 151,936-token vocabulary (near-uniform
logits), so part (a)'s sampling takes the sampler's full-sort path every step; part (b)
(a trained model) shows the usual top-k path.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchlog import open_log, out_dir, say  # noqa: E402  (benchmarks/ is on sys.path above)
from kernel_profile import kernel_summary, summary_lines  # noqa: E402

HBM_BPS = 3.0e12
FLOPS = 790e12
SHAPES = {
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vocab_size=152064),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1024),
}





def ensure_srscode_importable() -> None:
    from gpu_model_stages import ensure_srscode_importable as ensure

    ensure()


# ----------------------------------------------------------------------------- helpers


class Env:
    """Device, dtype and the memory API of the resolved backend (no device branches below)."""

    def __init__(self, smoke: bool):
        from srscode.core.config import HardwareConfig
        from srscode.hardware.resolve import builtin_registry, resolve_backend

        self.backend = resolve_backend(HardwareConfig(backend="cpu" if smoke else "auto"), builtin_registry())
        self.device = self.backend.device
        self.dtype = self.backend.torch_dtype
        self.smoke = smoke

    def sync(self) -> None:
        from srscode.hardware import synchronize

        synchronize(self.device)

    def reset_peak(self) -> None:
        from srscode.hardware import reset_peak_memory

        reset_peak_memory(self.device)

    def peak_gb(self) -> float | None:
        from srscode.hardware import peak_memory_bytes

        peak = peak_memory_bytes(self.device)
        return None if peak is None else round(peak / 2**30, 3)

    def free_bytes(self) -> int | None:
        from srscode.hardware import free_memory_bytes

        return free_memory_bytes(self.device)

    def runner(self) -> Any:
        return self.backend.graph_runner()


def build_model(env: Env, shape: str, eos: int = 2, pad: int = 0) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=shape != "7b", bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    with torch.device(env.device):
        model = Qwen2ForCausalLM._from_config(config, dtype=env.dtype, attn_implementation="sdpa")
    model.eval()
    model.generation_config.pad_token_id = pad
    model.generation_config.eos_token_id = eos
    return model


def random_prompts(env: Env, rows: int, length: int, vocab: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, vocab - 10, (rows, length), generator=g)
    return ids.to(env.device), torch.ones_like(ids).to(env.device)


def timed(env: Env, fn: Callable[[], Any]) -> tuple[Any, float]:
    env.sync()
    t = time.perf_counter()
    out = fn()
    env.sync()
    return out, time.perf_counter() - t


def params_bytes(model: Any) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def physical(model: Any, rows: int, prompt_len: int, new: int, step_s: float) -> dict[str, Any]:
    """Bytes and FLOPs of an average decode step (cache half way through) vs the measured step."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    elt = next(model.parameters()).element_size()
    kv_per_tok = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * elt
    avg_len = prompt_len + new / 2
    weights = params_bytes(model)
    kv = rows * avg_len * kv_per_tok
    n_params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    flops = 2 * n_params * rows + 4 * rows * avg_len * c.num_attention_heads * head_dim * c.num_hidden_layers
    t_mem, t_flop = (weights + kv) / HBM_BPS, flops / FLOPS
    bound = max(t_mem, t_flop)
    return {
        "weights_gb": _sig(weights / 1e9), "kv_read_gb_avg": _sig(kv / 1e9),
        "step_bound_ms": _sig(bound * 1e3), "bound_by": "memory" if t_mem >= t_flop else "compute",
        "mem_ms": _sig(t_mem * 1e3), "flop_ms": _sig(t_flop * 1e3),
        "measured_step_ms": _sig(step_s * 1e3), "measured_over_bound": _sig(step_s / bound) if bound else None,
    }


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


def fast_run(env: Env, model: Any, ids: Any, mask: Any, n: int, new: int, spec: Any,
             cache_tokens: int | None = None, dec: Any = None) -> tuple[Any, float, Any]:
    import torch

    from srscode.plugins.lib.fast_decode import FastDecoder

    dec = dec or FastDecoder(model, graph_runner=env.runner())
    with torch.inference_mode():
        res, secs = timed(env, lambda: dec.generate(ids, mask, n, new, spec, cache_tokens=cache_tokens))
    return res, secs, dec


# ----------------------------------------------------------------------------- part a


def part_a(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from srscode.plugins.lib.fast_decode import SamplingSpec

    shape = "tiny" if env.smoke else "1.5b"
    rows, plen, new = (8, 16, 8) if env.smoke else (args.rows, args.prompt_len, args.new_tokens)
    env.reset_peak()
    model = build_model(env, shape)
    vocab = model.config.vocab_size
    ids, mask = random_prompts(env, rows, plen, vocab)
    out: dict[str, Any] = {"shape": shape, "rows": rows, "prompt_len": plen, "new_tokens": new, "dtype": str(env.dtype)}
    eos = model.generation_config.eos_token_id
    sample = dict(do_sample=True, temperature=0.8, top_p=0.95, top_k=0)

    def baseline(kind: str, kw: dict[str, Any]) -> None:
        torch.manual_seed(0)
        with torch.inference_mode():
            gen, secs = timed(env, lambda: model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
                eos_token_id=eos, **kw))
        toks = (gen.shape[1] - plen) * rows
        out[f"generate_{kind}"] = {"tokens": toks, "s": round(secs, 3), "tok_s": round(toks / secs, 1)}
        say(f"  generate {kind}: {toks} tokens in {secs:.2f}s = {toks / secs:,.0f} tok/s")

    def decode_row(res: Any, secs: float, b: int) -> dict[str, Any]:
        """One fast-loop run's figures (tokens, rates, step time and its physical bound)."""
        toks = sum(res.lengths)
        st = res.stats
        step_s = st["decode_s"] / max(1, st["steps"] - 1)
        # the decoder's graphs are captured during its call (compilation included, where
        # new): the step without that time is what each replayed step took
        replay_s = (st["decode_s"] - st.get("capture_s", 0.0)) / max(1, st["steps"] - 1)
        return {"rows": b, "tokens": toks, "s": round(secs, 3), "tok_s": round(toks / secs, 1),
                "prefill_s": round(st["prefill_s"], 3), "decode_s": round(st["decode_s"], 3),
                "capture_s": round(st.get("capture_s", 0.0), 3), "step_ms": round(step_s * 1e3, 3),
                "step_ms_without_captures": round(replay_s * 1e3, 3),
                "draw_fallback_rows": st.get("draw_fallback_rows"), "peak_gb": env.peak_gb(),
                "physical": physical(model, b, plen, new, step_s)}

    def ours(kind: str, spec: SamplingSpec, b: int, with_micro: bool = False) -> None:
        torch.manual_seed(0)
        i, m = (ids, mask) if b == rows else random_prompts(env, b, plen, vocab)
        env.reset_peak()
        res, secs, dec = fast_run(env, model, i, m, 1, new, spec)
        r = decode_row(res, secs, b)
        toks, st, step_s = r["tokens"], res.stats, r["step_ms"] / 1e3
        out[f"fast_{kind}_B{b}"] = r
        say(f"  fast {kind} B={b}: {toks} tokens in {secs:.2f}s = {toks / secs:,.0f} tok/s "
            f"(prefill {st['prefill_s']:.2f}s, step {step_s * 1e3:.2f} ms, peak {r['peak_gb']} GB)")
        if with_micro:
            out["micro"] = micro(env, dec, spec, b)
        del dec, res  # free this run's cache before the next one
        env.reset_peak()

    def compiled(specs: dict[str, SamplingSpec]) -> None:
        """The fast loop with ``compile=True``: a first short call with the same buffer shape
        compiles (timed apart as ``compile_s``); its graphs are then dropped so the timed
        calls capture their windows as the eager rows do."""
        from srscode.plugins.lib.fast_decode import FastDecoder

        torch.manual_seed(0)
        env.reset_peak()
        dec = FastDecoder(model, graph_runner=env.runner(), compile=True,
                          compile_backend=getattr(args, "compile_backend", "inductor"))
        warm = dataclasses.replace(specs["sample"], min_new_tokens=2)
        _, secs, _ = fast_run(env, model, ids, mask, 1, 2, warm, cache_tokens=new, dec=dec)
        out["compile_s"] = round(secs, 2)
        out["compiled_active"] = dec.fam.compiled  # False: the compiler failed, rows below are eager
        say(f"  compile (first call, 2 steps): {secs:.1f}s, compiled: {dec.fam.compiled}")
        for kind, spec in specs.items():
            dec.buffers.graphs.clear()
            res, secs, _ = fast_run(env, model, ids, mask, 1, new, spec, dec=dec)
            r = decode_row(res, secs, rows)
            toks, st, step_s = r["tokens"], res.stats, r["step_ms"] / 1e3
            out[f"fast_{kind}_B{rows}_compiled"] = r
            say(f"  fast {kind} B={rows} compiled: {toks} tokens in {secs:.2f}s = {toks / secs:,.0f} tok/s "
                f"(prefill {st['prefill_s']:.2f}s, step {step_s * 1e3:.2f} ms)")
            if kind == "sample":
                out["micro_compiled"] = micro(env, dec, spec, rows)
        if args.profile:
            out["profile_compiled"] = profile_steps(env, dec, specs["sample"], ids, mask, new, "compiled")
        del dec
        env.reset_peak()

    def optional_profile(label: str, spec: SamplingSpec, compile: bool) -> None:
        """``profile_steps`` on a new decoder into ``out["profile_<label>"]``; a failure is
        recorded there and the timings go on (the profile is optional)."""
        from srscode.plugins.lib.fast_decode import FastDecoder

        try:
            out[f"profile_{label}"] = profile_steps(env, FastDecoder(model, compile=compile, group_linears=True), spec,
                                                    ids, mask, new, label)
        except Exception as exc:  # noqa: BLE001 - the profile is optional; the timings go on
            out[f"profile_{label}"] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"  profile ({label}) failed: {traceback.format_exc()}")

    def engine_decoder(group: bool = True) -> Any:
        """A new decoder as an engine round's ``hf`` generate call makes one (compile on,
        grouped q/k/v and gate/up GEMMs as ``pack_weights`` gives on an accelerator)."""
        from srscode.plugins.lib import fast_decode

        return fast_decode.FastDecoder(model, graph_runner=env.runner(), compile=True,
                                       compile_backend=getattr(args, "compile_backend", None), group_linears=group)

    def engine_calls(spec: SamplingSpec) -> None:
        """What an engine round's default ``hf`` generation does since compile is on by
        default: a new decoder per ``generate`` call (compile=True, as ``compile: auto`` is on
        an accelerator), the compiled pieces made once per process. Calls 1-3 per decode
        attention: B=rows (the first call of the process compiles), B=rows again, B=3/4 rows
        (a new batch size); ``new_graphs`` counts dynamo's compilations during each call."""
        from torch._dynamo.utils import counters

        from srscode.plugins.lib import fast_decode

        rows_per_call = [rows, rows, max(fast_decode.ROW_BUCKET, rows * 3 // 4)]
        calls = []
        attn = fast_decode.DECODE_ATTENTION
        try:
            # the default (the fused first draw and the step's bookkeeping captured with the
            # step, q/k/v and gate/up grouped), the same without grouped GEMMs, the draw after
            # the step (bookkeeping on the host), and the top-k-first sampler, in this run
            default_splits = fast_decode.DRAW_SPLITS
            # (and the prefill through the eager modules)
            for sampler, first_draw, in_step, group, compiled_prefill in (
                    ("drawn_in_step", True, True, True, True), ("drawn_in_step_ungrouped", True, True, False, True),
                    ("drawn_in_step_eager_prefill", True, True, True, False),
                    ("first_draw", True, False, True, True), ("topk_first", False, False, True, True)):
                fast_decode.FIRST_DRAW, fast_decode.DRAW_IN_STEP = first_draw, in_step
                fast_decode.COMPILED_PREFILL = compiled_prefill
                for call, b in enumerate(rows_per_call, 1):
                    torch.manual_seed(call)
                    before = counters["stats"]["unique_graphs"]
                    dec = engine_decoder(group)
                    res, secs, _ = fast_run(env, model, ids[:b], mask[:b], 1, new, spec, dec=dec)
                    r = decode_row(res, secs, b)
                    r.update(attention=attn, sampler=sampler, call=call, compiled=dec.fam.compiled,
                             new_graphs=counters["stats"]["unique_graphs"] - before)
                    calls.append(r)
                    say(f"  engine call {call} ({attn}, {sampler}) B={b}: {r['tokens']} tokens in {secs:.2f}s = "
                        f"{r['tok_s']:,.0f} tok/s, step {r['step_ms']:.2f} ms ({r['step_ms_without_captures']:.2f} "
                        f"without the call's {r['capture_s']:.3f} s of graph captures), new graphs {r['new_graphs']}, "
                        f"compiled {dec.fam.compiled}, rows drawn outside the graph {r['draw_fallback_rows']}")
                    if call == 2 and sampler in ("drawn_in_step", "drawn_in_step_ungrouped"):  # the step replayed alone, the samplers alone
                        out[f"micro_engine_{attn}{'' if group else '_ungrouped'}"] = micro(env, dec, spec, b) if group else {
                            "sampled_step_drawn_in_graph_ms": micro_drawn_only(env, dec)}
                    del dec, res
                    env.reset_peak()
        finally:
            fast_decode.FIRST_DRAW, fast_decode.DRAW_IN_STEP, fast_decode.DRAW_SPLITS = True, True, default_splits
            fast_decode.COMPILED_PREFILL = True
        out["engine_calls"] = calls
        two = {c["sampler"]: c["tok_s"] for c in calls if c["call"] == 2}
        prefill_two = {c["sampler"]: c["prefill_s"] for c in calls if c["call"] == 2}
        if len(two) == 5:
            out["ratio_compiled_vs_eager_prefill_call2"] = round(two["drawn_in_step"] / two["drawn_in_step_eager_prefill"], 3)
            out["prefill_s_compiled_vs_eager_call2"] = [prefill_two["drawn_in_step"], prefill_two["drawn_in_step_eager_prefill"]]
            out["ratio_first_draw_vs_topk_first_call2"] = round(two["first_draw"] / two["topk_first"], 3)
            out["ratio_drawn_in_step_vs_first_draw_call2"] = round(two["drawn_in_step"] / two["first_draw"], 3)
            out["ratio_grouped_vs_ungrouped_call2"] = round(two["drawn_in_step"] / two["drawn_in_step_ungrouped"], 3)
            say(f"  engine call 2, first draw / top-k first: {out['ratio_first_draw_vs_topk_first_call2']}x; "
                f"drawn in the step / drawn after it: {out['ratio_drawn_in_step_vs_first_draw_call2']}x; "
                f"grouped q/k/v and gate/up / one GEMM per linear: {out['ratio_grouped_vs_ungrouped_call2']}x; "
                f"compiled prefill / eager: {out['ratio_compiled_vs_eager_prefill_call2']}x "
                f"(prefill s {out['prefill_s_compiled_vs_eager_call2']})")

    def after_liger(spec: SamplingSpec) -> None:
        """An engine call on the model as a liger training leaves it (what every round after the
        first decoded before ``model_patches_undone``), between calls on the clean model: the
        last after the patches are undone (what such rounds decode now)."""
        from torch._dynamo.utils import counters

        from srscode.plugins.lib.model_patches import model_patches_undone

        try:
            from transformers.integrations.liger import apply_liger_kernel
            import liger_kernel  # noqa: F401
        except ImportError as exc:
            out["after_liger"] = {"skipped": f"liger-kernel not importable: {exc}"}
            say(f"  after liger: skipped ({exc})")
            return
        rows_here = []

        def call(label: str) -> None:
            torch.manual_seed(2)
            before = counters["stats"]["unique_graphs"]
            dec = engine_decoder()
            res, secs, _ = fast_run(env, model, ids, mask, 1, new, spec, dec=dec)
            r = decode_row(res, secs, rows)
            r.update(label=label, compiled=dec.fam.compiled, new_graphs=counters["stats"]["unique_graphs"] - before)
            rows_here.append(r)
            say(f"  after liger, {label}: {r['tok_s']:,.0f} tok/s, step {r['step_ms']:.2f} ms, "
                f"new graphs {r['new_graphs']}, {secs:.2f}s")
            del dec, res
            env.reset_peak()

        call("clean model")
        with model_patches_undone(model) as undone:
            apply_liger_kernel(model, {})
            call("liger's patches left on (before the fix)")
            call("liger's patches left on, second call")  # compiled already: liger's kernels alone
        call("patches undone (the fix)")
        out["after_liger"] = {"calls": rows_here, "restored": undone["restored"],
                              "ratio_patched_vs_clean": round(rows_here[1]["tok_s"] / rows_here[0]["tok_s"], 3),
                              "ratio_patched_again_vs_clean": round(rows_here[2]["tok_s"] / rows_here[0]["tok_s"], 3),
                              "ratio_undone_vs_patched": round(rows_here[3]["tok_s"] / rows_here[1]["tok_s"], 3)}
        say(f"  RATIO after liger: patched / clean {out['after_liger']['ratio_patched_vs_clean']}x "
            f"(second call {out['after_liger']['ratio_patched_again_vs_clean']}x), "
            f"undone / patched {out['after_liger']['ratio_undone_vs_patched']}x ({undone['restored']} attributes restored)")

    sampling = SamplingSpec(0.8, 0.95, (eos,), 0, min_new_tokens=new)
    greedy = SamplingSpec(0.0, 1.0, (eos,), 0, min_new_tokens=new)
    if getattr(args, "after_liger_only", False):  # a first call compiles (as engine call 1), then the four
        fast_run(env, model, ids, mask, 1, new, sampling, dec=engine_decoder())
        after_liger(sampling)
        return out
    if getattr(args, "engine_only", False):
        baseline("sample", sample)
        engine_calls(sampling)
        base = out["generate_sample"]["tok_s"]
        out["ratio_engine_vs_generate"] = [
            {"attention": c["attention"], "sampler": c["sampler"], "call": c["call"], "rows": c["rows"],
             "ratio": round(c["tok_s"] / base, 2)}
            for c in out["engine_calls"]]
        for r in out["ratio_engine_vs_generate"]:
            say(f"  ratio engine call {r['call']} ({r['attention']}, {r['sampler']}, B={r['rows']}) / generate: {r['ratio']}")
        if args.profile:  # what the compiled step spends its time on (the process's compilation, reused)
            optional_profile("engine_compiled", sampling, compile=True)
            optional_profile("engine_eager", sampling, compile=False)
            try:
                out["profile_prefill"] = profile_prefill(env, engine_decoder(), sampling, ids, mask)
            except Exception as exc:  # noqa: BLE001 - the profile is optional
                out["profile_prefill"] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"  profile (prefill) failed: {traceback.format_exc()}")
        return out
    if args.profile:
        optional_profile("eager", sampling, compile=False)
    baseline("sample", sample)
    ours("sample", sampling, rows, with_micro=True)
    ours("greedy", greedy, rows)
    if not args.no_compile:
        try:
            compiled({"sample": sampling, "greedy": greedy})
        except Exception as exc:  # noqa: BLE001 - record and go on with the eager rows
            out["compiled_error"] = f"{type(exc).__name__}: {exc}"
            say(f"  compiled runs failed: {traceback.format_exc()}")
    if not args.skip_greedy_baseline:
        baseline("greedy", dict(do_sample=False))
    ours("sample", sampling, 2 * rows)
    ratios = {k: round(out[f"fast_{k}_B{rows}"]["tok_s"] / out[f"generate_{k}"]["tok_s"], 2)
              for k in ("sample", "greedy") if f"generate_{k}" in out}
    out["ratio_vs_generate"] = ratios
    ratios_c = {k: round(out[f"fast_{k}_B{rows}_compiled"]["tok_s"] / out[f"generate_{k}"]["tok_s"], 2)
                for k in ("sample", "greedy") if f"generate_{k}" in out and f"fast_{k}_B{rows}_compiled" in out}
    out["ratio_compiled_vs_generate"] = ratios_c
    ratios_ce = {k: round(out[f"fast_{k}_B{rows}_compiled"]["tok_s"] / out[f"fast_{k}_B{rows}"]["tok_s"], 2)
                 for k in ("sample", "greedy") if f"fast_{k}_B{rows}_compiled" in out}
    out["ratio_compiled_vs_eager"] = ratios_ce
    table(f"part a: {shape} shape, {rows}x{plen} prompt + {new} new tokens", out, [
        ("generate dynamic cache, sample", out.get("generate_sample", {}).get("tok_s")),
        ("generate dynamic cache, greedy", out.get("generate_greedy", {}).get("tok_s")),
        (f"fast loop, sample B={rows}", out[f"fast_sample_B{rows}"]["tok_s"]),
        (f"fast loop, greedy B={rows}", out[f"fast_greedy_B{rows}"]["tok_s"]),
        (f"fast loop, sample B={2 * rows}", out.get(f"fast_sample_B{2 * rows}", {}).get("tok_s")),
        (f"fast sample B={rows} compiled (compile {out.get('compile_s')} s apart)",
         out.get(f"fast_sample_B{rows}_compiled", {}).get("tok_s")),
        (f"fast greedy B={rows} compiled", out.get(f"fast_greedy_B{rows}_compiled", {}).get("tok_s")),
    ], [(f"ratio compiled/eager fast ({k})", v) for k, v in ratios_ce.items()]
       + [(f"ratio compiled fast/generate ({k})", v) for k, v in ratios_c.items()]
       + [(f"ratio fast/generate ({k})", v) for k, v in ratios.items()])
    return out  # the model is freed when this frame goes


def micro(env: Env, dec: Any, spec: Any, rows: int) -> dict[str, Any]:
    """The captured step replayed alone and the sampler alone (last window of the last batch)."""
    import torch

    from srscode.plugins.lib.fast_decode import compiled_first_draw, first_draw, sample_tokens

    buf = dec.buffers
    window = max(k if isinstance(k, int) else k[1] for k in buf.graphs)
    drawn_keys = [k for k in buf.graphs if isinstance(k, tuple) and k[1] == window]
    reps = 3 if env.smoke else 20
    with torch.inference_mode():
        logits = dec._step(buf, window).float()  # captures the plain step where the loop drew inside it
        step = buf.graphs[window]
        drawn_ms = micro_drawn_only(env, dec, reps) if drawn_keys else None
        padding = torch.arange(logits.shape[0], device=logits.device) >= rows  # as the decode loop passes it
        _, t_step = timed(env, lambda: [step() for _ in range(reps)])
        _, t_samp = timed(env, lambda: [sample_tokens(logits, spec, done=padding) for _ in range(reps)])
        _, t_greedy = timed(env, lambda: [logits.argmax(-1) for _ in range(reps)])
        # Random weights give near-uniform rows, which take the sampler's rejection path every
        # step; a trained model's rows are peaked and take the top-k path alone. The same
        # logits, sharpened until every row's top-PROBE tokens hold top_p of the mass, time
        # that path on the same shape (what a trained model's step would pay for sampling).
        sharp, scale = logits, 1.0
        while not top_p_covered(sharp[:rows], spec) and scale < 1e4:
            scale *= 4.0
            sharp = logits * scale
        covered = top_p_covered(sharp[:rows], spec)
        _, t_topk = timed(env, lambda: [sample_tokens(sharp, spec, done=padding) for _ in range(reps)])
        # the fused first draw (the compiled decoders' default), eager and compiled (its
        # first call compiles, untimed), on the sharpened and the random-weight logits
        fused = dec.first or compiled_first_draw("eager" if env.smoke else "inductor")
        sample_tokens(sharp, spec, done=padding, first=fused)
        first_ms = {}
        from srscode.plugins.lib import fast_decode

        default_splits = fast_decode.DRAW_SPLITS
        draw_device_ms = {}
        try:  # the compiled draw reducing over slices of each row (each value compiles once here):
            # wall time through the sampler, and the device time of the draw alone (profiled)
            noise = torch.empty(sharp.shape, dtype=torch.float32, device=sharp.device).exponential_()
            ban = torch.zeros(sharp.shape[1], dtype=torch.float32, device=sharp.device)
            for splits in (1, 4, 16, 64):
                fast_decode.DRAW_SPLITS = splits
                drawn = own_draw(dec.fam.dtype, "eager" if env.smoke else "inductor")
                sample_tokens(sharp, spec, done=padding, first=drawn)
                _, t = timed(env, lambda: [sample_tokens(sharp, spec, done=padding, first=drawn) for _ in range(reps)])
                first_ms[f"compiled_sharp_splits{splits}"] = round(t / reps * 1e3, 3)
                drawn(sharp, noise, 1.0 / spec.temperature, spec.top_p, ban)
                env.sync()
                with torch.profiler.profile(activities=list(torch.profiler.supported_activities())) as prof:
                    for _ in range(reps):
                        drawn(sharp, noise, 1.0 / spec.temperature, spec.top_p, ban)
                    env.sync()
                draw_device_ms[splits] = kernel_summary(prof, reps, 5)["device_ms_per_step"]
        finally:
            fast_decode.DRAW_SPLITS = default_splits
        say(f"  micro first draw device ms by slices per row: {draw_device_ms}")
        for label, fn in (("eager", first_draw), ("compiled", fused)):
            for which, lg in (("sharp", sharp), ("random", logits)):
                _, t = timed(env, lambda fn=fn, lg=lg: [sample_tokens(lg, spec, done=padding, first=fn)
                                                          for _ in range(reps)])
                first_ms[f"{label}_{which}"] = round(t / reps * 1e3, 3)
    r = {"window": window, "step_ms": round(t_step / reps * 1e3, 3), "sampler_ms": round(t_samp / reps * 1e3, 3),
         "sampler_topk_path_ms": round(t_topk / reps * 1e3, 3), "sharpened_by": scale, "sharpened_covered": covered,
         "sampler_first_draw_ms": first_ms, "first_draw_device_ms_by_splits": draw_device_ms, "argmax_ms": round(t_greedy / reps * 1e3, 3),
         "graphs": dec.runner is not None}
    r["sampled_step_topk_ms"] = round(r["step_ms"] + r["sampler_topk_path_ms"], 3)
    r["sampled_step_first_draw_ms"] = round(r["step_ms"] + first_ms["compiled_sharp"], 3)
    r["sampled_step_drawn_in_graph_ms"] = drawn_ms  # on these random-weight logits (flat rows: most redraws)
    say(f"  micro (B={rows}, window {window}): step replay {r['step_ms']} ms, top-p sampler {r['sampler_ms']} ms "
        f"(on these random-weight logits), {r['sampler_topk_path_ms']} ms on the same logits x{scale:g} (the top-k "
        f"path a trained model takes; every row on it: {covered}), argmax {r['argmax_ms']} ms, device graphs: {r['graphs']}")
    say(f"  micro first draw (ms; sharp = x{scale:g}, random = as decoded): {first_ms}; sampled step "
        f"{r['sampled_step_topk_ms']} ms (top-k first) -> {r['sampled_step_first_draw_ms']} ms (first draw, compiled), "
        f"sampler ratio {r['sampler_topk_path_ms'] / max(first_ms['compiled_sharp'], 1e-9):.2f}x")
    if drawn_ms is not None:
        say(f"  micro sampled step, draw captured with the step (noise refill + one replay): {drawn_ms} ms "
            f"(step replay + compiled first draw outside: {r['sampled_step_first_draw_ms']} ms)")
    return r


def micro_drawn_only(env: Env, dec: Any, reps: int = 20) -> float:
    """ms per replay of the loop's drawn step at the last batch's largest window (noise
    refilled, then the step, its draws and bookkeeping as one graph)."""
    buf = dec.buffers
    key = max((k for k in buf.graphs if isinstance(k, tuple)), key=lambda k: k[1])
    window, drawn, draws = key[1], buf.graphs[key], buf.draws[key[3]]
    # each replay advances the cache column and the token count: start them where the
    # replays stay inside this window and the output's columns
    import torch

    with torch.inference_mode():  # the buffers are inference tensors
        buf.column.fill_(window - reps - 2)
        buf.count.zero_()
        _, t = timed(env, lambda: [(draws.refill(dec.rng), drawn()) for _ in range(reps)])
    return round(t / reps * 1e3, 3)


def own_draw(dtype: Any, backend: str) -> Any:
    """The first draw compiled from its own copy of the code, in the model's ``dtype`` as the
    decoder calls it: dynamo keeps entries per code object, and the slice counts tried here
    would otherwise add to the decoder's own entries up to dynamo's recompile limit."""
    import types

    import torch

    from srscode.plugins.lib.fast_decode import _in_dtype, first_draw

    f = first_draw
    code = types.FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    return _in_dtype(torch.compile(code, dynamic=False, fullgraph=True, backend=backend), dtype)


def top_p_covered(logits: Any, spec: Any) -> bool:
    """Whether every row's top-``PROBE`` tokens hold ``top_p`` of its mass (the sampler's
    top-k path, no rejection sampling)."""
    import torch

    from srscode.plugins.lib.fast_decode import PROBE

    if spec.greedy or spec.top_p >= 1.0:
        return True
    probs = torch.softmax(logits / spec.temperature, dim=-1)
    return bool((probs.topk(min(PROBE, probs.shape[-1]), dim=-1).values.sum(-1) >= spec.top_p).all())


def profile_prefill(env: Env, dec: Any, spec: Any, ids: Any, mask: Any, top: int = 20) -> dict[str, Any]:
    """torch.profiler over one call that decodes a single token (its prefill, then token 0
    through the sampler), after an untimed one: where the call's prefill time goes."""
    import torch
    from torch.profiler import profile

    with torch.inference_mode():
        dec.generate(ids, mask, 1, 1, spec)
        env.sync()
        t = time.perf_counter()
        with profile(activities=list(torch.profiler.supported_activities())) as prof:
            dec.generate(ids, mask, 1, 1, spec)
            env.sync()
        wall = time.perf_counter() - t
    r = {"label": "prefill", "prompts": ids.shape[0], "width": ids.shape[1], "wall_ms": round(wall * 1e3, 1),
         "prefill_s": dec.stats.get("prefill_s"), **kernel_summary(prof, 1, top)}
    say(f"  profile (prefill of {r['prompts']} prompts x {r['width']} tokens, one call, wall {r['wall_ms']} ms "
        f"under the profiler):")
    for line in summary_lines(r):
        say(f"    {line}")
    return r


def profile_steps(env: Env, dec: Any, spec: Any, ids: Any, mask: Any, new: int, label: str,
                  steps: int = 3, top: int = 20) -> dict[str, Any]:
    """torch.profiler over ``steps`` decode steps (model step + float cast + sampler) run
    without device graphs, at the largest window of a ``new``-token run: the top-``top``
    kernels by device time and the kernel count per step. Device kernels where the profiler
    sees a device; on the CPU (smoke) its operators' self times stand in for them."""
    import torch
    from torch.profiler import profile

    from srscode.plugins.lib.fast_decode import sample_tokens

    runner, dec.runner = dec.runner, None
    try:
        with torch.inference_mode():
            dec.generate(ids, mask, 1, 2, dataclasses.replace(spec, min_new_tokens=2), cache_tokens=new)
            buf = dec.buffers
            window = buf.shape[1]
            buf.graphs.clear()

            draws = buf.draws.get(spec.top_p)  # the loop drew inside its step (fast_decode.DRAW_IN_STEP)

            eos = buf.eos_ids(spec.eos_ids)

            def step() -> None:
                if draws is not None:  # as the loop runs it: noise, then the step, its draws and bookkeeping
                    draws.refill(dec.rng)
                    dec._drawn_step(buf, window, spec, draws, eos)
                else:
                    sample_tokens(dec.fam.decode(buf, window, dec.groups).float(), spec, dec.probe, dec.rng,
                                  first=dec.first)

            step()  # warm (a compiled decoder compiled in generate above)
            env.sync()
            acts = list(torch.profiler.supported_activities())
            with profile(activities=acts) as prof:
                for _ in range(steps):
                    step()
                env.sync()
    finally:
        dec.runner = runner
    r = {"label": label, "rows": buf.shape[0], "window": window, **kernel_summary(prof, steps, top)}
    say(f"  profile ({label}, B={r['rows']}, window {window}):")
    for line in summary_lines(r):
        say(f"    {line}")
    return r


# ----------------------------------------------------------------------------- part b


def find_kodcode(arg: str | None) -> Path | None:
    for c in ([Path(arg)] if arg else []) + [ROOT / ".devcarry" / "kodcode", ROOT.parent / "shared" / "data" / "kodcode"]:
        if c.is_dir():
            return c
    return None


def part_b(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from srscode.core.config import RunConfig
    from srscode.core.context import StageContext
    from srscode.plugins.lib import hf_model
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.data.kodcode import KodCodeSource
    from srscode.plugins.data.starter import StarterSource
    from srscode.plugins.prompt.builders import ChatBuilder

    data = find_kodcode(args.kodcode)
    if data is None and not env.smoke:  # the smoke takes starter prompts instead
        return {"skipped": "no KodCode data (--kodcode, .devcarry/kodcode or ../shared/data/kodcode)"}
    if args.smollm2_dir:  # an already converted Hugging Face folder
        folder = Path(args.smollm2_dir)
    else:
        gguf = Path(args.smollm2_gguf) if args.smollm2_gguf else (hf_model.embedded_gguf() if env.smoke else None)
        if gguf is None or not gguf.is_file():
            return {"skipped": f"no SmolLM2 model (--smollm2-gguf {args.smollm2_gguf!r} is not a file, no --smollm2-dir)"}
        if importlib.util.find_spec("gguf") is None:
            return {"skipped": "the gguf package (the demo extra) is not installed: SmolLM2 cannot be converted"}
        # what hf_model does with the embedded GGUF (needs the gguf package)
        folder = hf_model.convert_gguf(str(gguf.parent), gguf.name, Path(args.cache) / f"{gguf.stem}-{gguf.stat().st_size}")
    env.reset_peak()
    ctx = StageContext(config=RunConfig.model_validate({"model": {"name_or_path": str(folder)}}), quiet=True,
                       _backend=env.backend)
    model, tok = hf_model.load_base(ctx)
    builder = ChatBuilder(tokenizer_provider=lambda: tok)
    ctx.prompt_builder = builder
    tasks = KodCodeSource().load(str(data)).tasks if data is not None else StarterSource().load().tasks
    prompts = [builder.build(t) for t in tasks]
    n, new, sub = (2, 4, 2) if env.smoke else (4, 512, 64)
    if env.smoke:  # the shortest few: the CPU is shared
        prompts = sorted(prompts, key=lambda p: len(p.text))[:3]
    out: dict[str, Any] = {"prompts": len(prompts), "n": n, "max_new_tokens": new, "model": str(folder)}

    def run(kind: str, ps: list[Any], decode: str, batch: int) -> None:
        g = HFGenerator(HFGeneratorParams(temperature=0.8, top_p=0.95, max_new_tokens=new, batch_size=batch,
                                          decode=decode), ctx)
        env.reset_peak()
        cands, secs = timed(env, lambda: g.generate(ps, n, None, seed=0))
        toks = sum(c.completion_tokens for c in cands)
        r = {"decode": decode, "prompts": len(ps), "batch_prompts": batch, "tokens": toks, "s": round(secs, 3),
             "tok_s": round(toks / secs, 1), "mean_len": round(toks / len(cands), 1), "peak_gb": env.peak_gb()}
        out[kind] = r
        say(f"  {kind}: {len(ps)} prompts x {n} ({decode}, {batch} prompts/batch): {toks} tokens in {secs:.2f}s = "
            f"{toks / secs:,.0f} tok/s, mean {r['mean_len']} tokens, peak {r['peak_gb']} GB")

    run("generate_subset", prompts[:sub], "generate", sub)
    run("fast_subset", prompts[:sub], "fast", sub)
    run("fast_all_b64", prompts, "fast", 64 if not env.smoke else 2)
    run("fast_all_one_batch", prompts, "fast", len(prompts))
    out["greedy_check_bf16"] = greedy_check(env, model, tok, prompts[: 1 if env.smoke else 8], 6 if env.smoke else 256)
    fp32 = type(model).from_pretrained(str(folder), dtype=torch.float32).to(env.device).eval()
    out["greedy_check_fp32"] = greedy_check(env, fp32, tok, prompts[: 1 if env.smoke else 8], 6 if env.smoke else 256)
    del fp32
    ratio = round(out["fast_subset"]["tok_s"] / out["generate_subset"]["tok_s"], 2)
    out["ratio_fast_vs_generate_subset"] = ratio
    out["peak_gb_part"] = env.peak_gb()
    table("part b: SmolLM2-135M-Instruct, KodCode chat prompts, T=0.8 top-p 0.95", out, [
        (f"generate, {sub} prompts x {n}", out["generate_subset"]["tok_s"]),
        (f"fast, same {sub} prompts x {n}", out["fast_subset"]["tok_s"]),
        (f"fast, all {len(prompts)} prompts, batches of {out['fast_all_b64']['batch_prompts']}", out["fast_all_b64"]["tok_s"]),
        (f"fast, all {len(prompts)} prompts, one batch", out["fast_all_one_batch"]["tok_s"]),
        ("greedy rows equal to generate, bf16", f"{out['greedy_check_bf16']['equal_rows']}/{out['greedy_check_bf16']['rows']}"),
        ("greedy rows equal to generate, fp32", f"{out['greedy_check_fp32']['equal_rows']}/{out['greedy_check_fp32']['rows']}"),
    ], [("ratio fast/generate (same prompts)", ratio),
        ("ratio fast all-in-one-batch / generate", round(out["fast_all_one_batch"]["tok_s"] / out["generate_subset"]["tok_s"], 2))])
    return out


def greedy_check(env: Env, model: Any, tok: Any, prompts: list[Any], new: int) -> dict[str, Any]:
    import torch

    from srscode.plugins.lib.fast_decode import SamplingSpec

    enc = tok([p.text for p in prompts], return_tensors="pt", padding=True)
    enc = {k: v.to(env.device) for k, v in enc.items()}
    eos = sorted({tok.eos_token_id} | set(_as_list(model.generation_config.eos_token_id)))
    with torch.inference_mode():
        ref = model.generate(**enc, do_sample=False, max_new_tokens=new, pad_token_id=tok.pad_token_id, eos_token_id=eos,
                             top_k=None, top_p=None, temperature=None, repetition_penalty=1.0)
    ref = ref[:, enc["input_ids"].shape[1]:].tolist()
    res, _, _ = fast_run(env, model, enc["input_ids"], enc["attention_mask"], 1, new,
                         SamplingSpec(0.0, 1.0, tuple(eos), tok.pad_token_id))
    first_diff = []
    for a, b in zip(ref, res.tokens):
        a = a + [tok.pad_token_id] * (new - len(a))
        first_diff.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None))
    r = {"rows": len(ref), "equal_rows": sum(d is None for d in first_diff), "first_divergence": first_diff,
         "dtype": str(next(model.parameters()).dtype), "max_new_tokens": new}
    say(f"  greedy check {r['dtype']}: {r['equal_rows']}/{r['rows']} rows equal; first divergence per row {first_diff}")
    return r


def _as_list(x: Any) -> list[int]:
    return list(x) if isinstance(x, (list, tuple)) else ([] if x is None else [x])


# ----------------------------------------------------------------------------- part c


def per_row_bytes(model: Any, cache_len: int) -> int:
    """KV cache + sampler buffers (fp32 logits, probabilities, a full sort's values and
    indices, cumsum, weights) + one row's activations."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    elt = next(model.parameters()).element_size()
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * elt * cache_len
    sampler = c.vocab_size * (elt + 4 * 8 + 8 * 2)  # incl. the sort's double buffer
    act = (c.hidden_size * 8 + c.intermediate_size * 3) * elt
    return kv + sampler + act


def part_c(env: Env, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import SamplingSpec

    out: dict[str, Any] = {}
    plen, new = (16, 16) if env.smoke else (256, 256)
    for shape in (["tiny"] if env.smoke else ["1.5b", "7b"]):
        r: dict[str, Any] = {}
        out[shape] = r
        try:
            env.reset_peak()
            model = build_model(env, shape)
            cache_len = fast_decode._round_up(plen + new, fast_decode.WINDOW)
            row = per_row_bytes(model, cache_len)
            free = env.free_bytes()
            budget = free if free is not None else args.smoke_budget_mb * 2**20
            margin = int(budget * 0.06) + (1 << 30 if free is not None else 0)  # allocator slack, prefill transients
            fit = max(16, (budget - margin) // row // 16 * 16)
            r.update({"weights_gb": round(params_bytes(model) / 2**30, 2), "free_gb": round(budget / 2**30, 2),
                      "bytes_per_row_mb": round(row / 2**20, 2), "estimated_max_rows": int(fit)})
            say(f"  {shape}: free {r['free_gb']} GB, {r['bytes_per_row_mb']} MB per row -> {fit} rows")
            spec = SamplingSpec(0.8, 0.95, (2,), 0, min_new_tokens=4)
            for label, rows in (("at_estimate", fit), ("at_1.25x", int(fit * 1.25) // 16 * 16)):
                ids, mask = random_prompts(env, rows, plen, model.config.vocab_size)
                try:
                    env.reset_peak()
                    res, secs, dec = fast_run(env, model, ids, mask, 1, 4, spec, cache_tokens=new)
                    r[label] = {"rows": rows, "ok": True, "s": round(secs, 2), "peak_gb": env.peak_gb()}
                    del dec, res
                except torch.OutOfMemoryError as exc:
                    r[label] = {"rows": rows, "ok": False, "oom": str(exc).splitlines()[0][:200]}
                say(f"  {shape} {label}: {r[label]}")
                del ids, mask
                env.reset_peak()
            del model
        except Exception as exc:  # noqa: BLE001 - one shape failing must not stop the other
            r["error"] = f"{type(exc).__name__}: {exc}"
            say(f"  {shape}: {r['error']}")
        env.reset_peak()
    table("part c: largest batch for 256 prompt + 256 new tokens", out, [
        (f"{s}: estimated max rows", v.get("estimated_max_rows")) for s, v in out.items()
    ] + [(f"{s}: ran at estimate / at 1.25x", f"{v.get('at_estimate', {}).get('ok')} / {v.get('at_1.25x', {}).get('ok')}")
         for s, v in out.items()], [])
    return out


# ----------------------------------------------------------------------------- output


def table(title: str, out: dict[str, Any], rows: list[tuple[str, Any]], ratios: list[tuple[str, Any]]) -> None:
    say(f"\n{title}")
    width = max([len(k) for k, _ in rows + ratios] + [10])
    for k, v in rows + ratios:
        say(f"  {k:<{width}}  {v if v is not None else '-'}")
    say("")


def physical_summary(results: dict[str, Any]) -> dict[str, Any]:
    a = results.get("a") or {}
    out = {k: v["physical"] for k, v in a.items() if isinstance(v, dict) and "physical" in v}
    rows = [(f"{k}: bound {v['step_bound_ms']} ms ({v['bound_by']}), measured {v['measured_step_ms']} ms",
             v["measured_over_bound"]) for k, v in out.items()]
    table("part d: measured decode step vs the physical bound (3 TB/s, 790 TFLOP/s)", out, rows[:-1] if rows else [],
          [(f"measured/bound, {rows[-1][0]}", rows[-1][1])] if rows else [])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for generate.json and generate.log (--smoke: a temp dir)")
    ap.add_argument("--smoke", action="store_true",
                    help="every part on the CPU with tiny shapes (part b: starter prompts without KodCode data); "
                         "a part that fails fails the run")
    ap.add_argument("--parts", default="abcd")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--skip-greedy-baseline", action="store_true", help="part a: no generate() greedy run (~20 s)")
    ap.add_argument("--no-compile", action="store_true", help="part a: no compiled fast-loop rows")
    ap.add_argument("--engine-only", action="store_true",
                    help="part a: only generate() sampled and the engine-round calls (compiled once, both attentions)")
    # inductor; --smoke (and tests) "eager": dynamo still traces, without the minute of C++ builds
    ap.add_argument("--after-liger-only", action="store_true",
                    help="part a: only engine calls on the clean model, with liger's patches left on it, and after "
                         "model_patches_undone (liger-kernel needed; GPU)")
    ap.add_argument("--compile-backend", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true",
                    help="part a: torch.profiler over 3 decode steps without graphs at B=rows, largest window "
                         "(eager, and compiled unless --no-compile): top-20 kernels and kernels per step")
    ap.add_argument("--smoke-big", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--smoke-budget-mb", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--smollm2-gguf", default=None, help="SmolLM2-135M-Instruct GGUF file (part b)")
    ap.add_argument("--smollm2-dir", default=None, help="or a converted Hugging Face folder of it (part b)")
    ap.add_argument("--kodcode", default=None, help="KodCode json folder (default .devcarry/kodcode or ../shared/data/kodcode)")
    ap.add_argument("--cache", default=None,
                    help="where the converted GGUF goes (default: $TMPDIR/srscode-bench-models, not OUT: 0.5 GB)")
    args = ap.parse_args(argv)
    args.out = out_dir(ap, args.out, args.smoke, "generate")
    args.compile_backend = args.compile_backend or ("eager" if args.smoke else "inductor")
    args.cache = args.cache or str(Path(tempfile.gettempdir()) / "srscode-bench-models")
    open_log(args.out / "generate.log", "a")
    ensure_srscode_importable()
    import torch
    import transformers

    t0 = time.perf_counter()
    if args.smoke:
        torch.set_num_threads(1)  # tiny matrices; the CPU is shared
    env = Env(args.smoke)
    results: dict[str, Any] = {"device": env.backend.device_name, "torch": torch.__version__,
                               "transformers": transformers.__version__, "smoke": args.smoke}
    say(f"device {results['device']} ({env.device}, {env.dtype}), torch {torch.__version__}, "
        f"transformers {transformers.__version__}")
    dest = args.out / "generate.json"
    for name, fn in (("a", part_a), ("b", part_b), ("c", part_c)):
        if name not in args.parts:
            continue
        say(f"== part {name} ({time.perf_counter() - t0:.0f}s)")
        try:
            results[name] = fn(env, args)
        except Exception as exc:  # noqa: BLE001 - record and go on with the next part
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            say(f"  part {name} failed: {results[name]['traceback']}")
        env.reset_peak()
        dest.write_text(json.dumps(results, indent=2, default=str))
    if "d" in args.parts:
        try:
            results["d"] = physical_summary(results)
        except Exception as exc:  # noqa: BLE001
            results["d"] = {"error": f"{type(exc).__name__}: {exc}"}
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    dest.write_text(json.dumps(results, indent=2, default=str))
    a = results.get("a") or {}
    say(f"wall {results['wall_s']} s; results in {dest}")
    if a.get("ratio_compiled_vs_eager"):
        say(f"RATIO compiled/eager fast loop (1.5B shape, B={a['rows']}): {a['ratio_compiled_vs_eager']}")
    if a.get("ratio_compiled_vs_generate"):
        say(f"RATIO compiled fast/generate (1.5B shape, B={a['rows']}): {a['ratio_compiled_vs_generate']}")
    if "ratio_vs_generate" in a:
        say(f"RATIO fast/generate (1.5B shape, B={a['rows']}): {a['ratio_vs_generate']}")
    if isinstance(results.get("b"), dict) and "ratio_fast_vs_generate_subset" in results["b"]:
        say(f"RATIO fast/generate (SmolLM2, same prompts): {results['b']['ratio_fast_vs_generate_subset']}")
    for name, part in results.items():
        if isinstance(part, dict) and "skipped" in part:
            say(f"part {name} skipped: {part['skipped']}")
    failed = [name for name in args.parts if "error" in (results.get(name) or {})]
    return 1 if args.smoke and failed else 0


if __name__ == "__main__":
    sys.exit(main())
