"""The training speed levers of ``lora-sft`` / ``dpo`` keep the loss: packed rows give the
padded batch's per-token log-probabilities (fp32, tiny Qwen2), with completion-only
masking; progress goes through ``ctx.progress``; liger is chosen through the backend."""
from __future__ import annotations

import types

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx, make_lora_adapter
from progress_fakes import recording_progress

from srscode.core.types import AdapterRef, SFTExample

PROMPT = "<|im_start|>user\nWrite {name}.<|im_end|>\n<|im_start|>assistant\n"


def examples() -> list[SFTExample]:
    out = []
    for i in range(7):  # uneven lengths, so rows pack 2-3 examples and padded batches pad
        body = "".join(f"    x = x * {j} + {i}\n" for j in range(1 + 2 * i))
        out.append(SFTExample(f"t{i}", PROMPT.format(name=f"f{i}"), f"def f{i}(x):\n{body}    return x\n"))
    return out


@pytest.fixture
def ctx(tiny_model_dir):
    return make_ctx(tiny_model_dir)


def _per_example_logprobs(trainer, model) -> tuple[dict[tuple, list[float]], int]:
    """input ids of each example -> log-prob of each of its next-token labels (0 where
    masked), from the trainer's own batches; and the largest number of examples in a row."""
    import torch

    out: dict[tuple, list[float]] = {}
    most = 0
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            lp = model(**batch, fused_lm_head=True).log_probs
            for b in range(batch["input_ids"].shape[0]):
                ids = batch["input_ids"][b].tolist()
                if "position_ids" in batch:
                    pos = batch["position_ids"][b].tolist()
                    starts = [t for t, p in enumerate(pos) if p == 0] + [len(pos)]
                    spans = list(zip(starts, starts[1:]))
                    spans = [(s, e) for s, e in spans if any(x != -100 for x in batch["labels"][b][s:e].tolist())]
                else:
                    spans = [(0, int(batch["attention_mask"][b].sum()))]
                most = max(most, len(spans))
                for s, e in spans:
                    out[tuple(ids[s:e])] = lp[b, s : e - 1].tolist()
    return out, most


def test_packed_rows_give_the_padded_per_token_logprobs(ctx, tiny_model_dir, tmp_path):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer, peft_model_for

    init = AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, tmp_path / "init", seed=1, r=4, scale=0.3))
    got = {}
    for packing in (False, True):
        p = LoRASFTParams(r=4, alpha=8, batch_size=3, max_length=128, packing=packing)
        stage = LoRASFTTrainer(p, ctx)
        model = peft_model_for(ctx, init, p)  # non-zero LoRA: the adapter takes part
        try:
            trainer = stage.build_trainer(examples(), model, str(tmp_path / f"s{packing}"))
            model.eval()
            got[packing] = _per_example_logprobs(trainer, model)
        finally:
            from srscode.plugins.train.lora_sft import restore_base

            restore_base(ctx, model)
    padded, _ = got[False]
    packed, most = got[True]
    assert most >= 2, "the rows did not pack several examples: the test would prove nothing"
    assert len(padded) == len(packed) == 7 and padded.keys() == packed.keys()
    for key in padded:
        a, b = padded[key], packed[key]
        assert len(a) == len(b)
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
        # completion only: the prompt's labels are masked, the completion's are not
        scored = [x != 0.0 for x in a]
        assert not any(scored[:5]) and sum(scored) >= 10


def test_packed_rows_attend_only_within_their_example(ctx):
    """Without the per-example position ids the same packed row scores differently, so the
    equality above depends on the block-diagonal mask (no cross-contamination)."""
    import torch

    from srscode.plugins.lib import hf_model
    from srscode.plugins.train.lora_sft import PackedRowsCollator

    model, tok = hf_model.load_base(ctx)
    a = tok("def a():\n    return 1\n")["input_ids"]
    b = tok("def b(x, y):\n    return x + y\n")["input_ids"]
    row = {"input_ids": a + b, "labels": a + b, "seq_lengths": [len(a), len(b)]}
    batch = PackedRowsCollator(tok.pad_token_id)([row, {"input_ids": b, "labels": b, "seq_lengths": [len(b)]}])
    assert batch["position_ids"][0].tolist() == list(range(len(a))) + list(range(len(b)))
    assert batch["position_ids"][1].tolist()[len(b):] == list(range(len(a)))  # padding: its own "example"
    assert batch["labels"][0, len(a)] == -100 and (batch["labels"][1, len(b):] == -100).all()
    assert "attention_mask" not in batch
    with torch.no_grad():  # no cache, as in training: transformers looks for packing only then
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        packed = model(input_ids=batch["input_ids"][:1], position_ids=batch["position_ids"][:1],
                       use_cache=False).logits[0, len(a):]
        leaky = model(input_ids=batch["input_ids"][:1], use_cache=False).logits[0, len(a):]
    assert (alone - packed).abs().max() < 1e-5
    assert (alone - leaky).abs().max() > 1e-3


def test_progress_goes_through_ctx_progress(ctx, tmp_path, capfd):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer

    bars = []

    ctx.progress = recording_progress(bars)
    p = LoRASFTParams(r=4, alpha=8, lr=1e-2, batch_size=1, max_length=64, packing=False)
    m = LoRASFTTrainer(p, ctx).train_sft(examples()[:3], None, tmp_path / "a").metrics
    (bar,) = bars
    assert (bar.name, bar.unit, bar.closed) == ("train", "step", True)
    assert bar.total == bar.done == m["train_steps"] == 3
    assert bar.values["loss"] > 0
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err  # transformers' tqdm bar is off


def test_liger_is_chosen_through_the_backend():
    import importlib.util

    from srscode.core.errors import StageError
    from srscode.plugins.train.lora_sft import use_liger

    cpu, gpu = types.SimpleNamespace(use_cpu=True), types.SimpleNamespace(use_cpu=False)
    installed = importlib.util.find_spec("liger_kernel") is not None
    assert use_liger("auto", cpu) is False
    assert use_liger("auto", gpu) is installed
    assert use_liger(False, gpu) is False
    if installed:
        assert use_liger(True, cpu) is True
    else:
        with pytest.raises(StageError, match="liger-kernel"):
            use_liger(True, gpu)


def test_weighted_packing_draws_before_packing(ctx, tmp_path):
    from srscode.plugins.train.lora_sft import LoRASFTParams, LoRASFTTrainer, weighted_draw

    draw = weighted_draw([1.0, 0.0, 3.0], 4000, seed=5)
    assert draw == weighted_draw([1.0, 0.0, 3.0], 4000, seed=5)  # the same on every process
    assert 1 not in draw and 0.70 < draw.count(2) / 4000 < 0.80

    ex = examples()[:2]
    ex = [SFTExample(**{**ex[0].__dict__, "weight": 1e-9}), SFTExample(**{**ex[1].__dict__, "weight": 1.0})]
    m = LoRASFTTrainer(LoRASFTParams(r=4, alpha=8, batch_size=1, max_length=128, epochs=2.0), ctx).train_sft(
        ex, None, tmp_path / "w").metrics
    assert m["train_packed"] == 1.0 and m["train_weighted"] == 1.0
    from srscode.plugins.lib import hf_model

    _, tok = hf_model.load_base(ctx)
    n1 = len(tok(ex[1].prompt + ex[1].completion + tok.eos_token)["input_ids"])
    assert m["train_tokens"] == 4 * n1  # round(2 epochs x 2 rows) draws, all of the weighted one


# --------------------------------------------------------------- benchmarks/train.py (smoke path)


def _bench():
    import importlib
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    return importlib.import_module("train")


def test_benchmark_flop_count_matches_the_known_model_sizes():
    train = _bench()
    # Qwen2.5-Coder-1.5B: 1.31 B non-embedding parameters; 7B: 6.53 B
    assert abs(train.frozen_linear_params(train.SHAPES["1.5b"]) / 1.31e9 - 1) < 0.02
    assert abs(train.frozen_linear_params(train.SHAPES["7b"]) / 6.53e9 - 1) < 0.02
    s = train.SHAPES["1.5b"]
    one = train.example_flops(s, 1, 0, 16, 151936)
    # one token: 4P for the frozen weights, ~2 % more for the rank-16 LoRA, its own attention
    lora = 6 * 16 * 28 * (9 * 1536 + 2 * 256 + 3 * 8960)
    assert one == 4 * train.frozen_linear_params(s) + lora + 6 * 28 * 1536 * 2
    assert 0.015 < lora / one < 0.025
    # the attention term grows quadratically, the head term per scored token
    assert train.example_flops(s, 1000, 0, 16, 151936) > 1000 * one
    assert train.example_flops(s, 10, 10, 16, 151936) - train.example_flops(s, 10, 0, 16, 151936) == 10 * 4.0 * 151936 * 1536


def test_benchmark_rows_lengths_and_table():
    """The fast core of --smoke: KodCode rows as the qwen builder renders them, token lengths
    as TRL builds rows, and a table whose last lines are the ratios."""
    train = _bench()
    kod = train.default_kodcode()
    if kod is None:
        pytest.skip("no KodCode data here (../shared/data/kodcode)")
    train.ensure_srscode_importable()
    rows = train.load_rows(kod)
    assert len(rows) > 100 and all(p.startswith("<|im_start|>system") and c.strip() for p, c in rows)
    tok = train.small_bpe([t for r in rows[:50] for t in r], vocab_size=600)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == tok.pad_token_id
    lengths = train.token_lengths(tok, rows[:20], max_length=300)
    full = train.token_lengths(tok, rows[:20], max_length=10**6)
    for (n, c), (fn, fc) in zip(lengths, full):
        assert n == min(fn, 300) and 0 <= c <= fc and c == max(0, n - (fn - fc))
    res = {"device": "x", "dtype": "bf16", "errors": {}, "matmul": {"bf16_tflops": 700.0},
           "sft_trl": {"tokens_per_s": 1000.0}, "sft_ours": {"tokens_per_s": 2500.0},
           "dpo_trl": {"pairs_per_s": 4.0}, "dpo_ours": {"pairs_per_s": 6.0}}
    lines = train.table(res).splitlines()
    assert lines[-2:] == ["RATIO sft tokens/s ours/TRL: 2.50x", "RATIO dpo pairs/s ours/TRL: 1.50x"]


@pytest.mark.slow  # ~40 s on a busy 2-core CPU
def test_benchmark_smoke_run(tmp_path, monkeypatch):
    """The benchmark's whole path (TRL arms, our arms, loss check, max-batch search, table) on
    the tiny shape with the fixture tokenizer, on the CPU."""
    import model_fixtures

    train = _bench()
    try:
        args = train.parse_args(["--smoke", "--out", str(tmp_path), "--examples", "4"])
    except SystemExit:
        pytest.skip("no KodCode data here (../shared/data/kodcode)")
    args.dpo_pairs, args.max_batch_tries = 2, "1"  # --smoke's own choices, made smaller still
    monkeypatch.setenv("SRSCODE_BACKEND", "cpu")
    train.ensure_srscode_importable()
    res = train.run(args, tokenizer=model_fixtures.build_bpe_tokenizer())
    assert res["errors"] == {}, res["errors"]
    assert res["sft_trl"]["gradient_checkpointing"] is True  # TRL's default, kept in the baseline
    assert res["sft_trl"]["tokens"] > 0 and res["sft_ours"]["tokens"] > 0
    assert res["loss_check"]["bf16_noise_ok"], res["loss_check"]  # fp32 here: to 1e-4
    assert res["dpo_trl"]["pairs_per_s"] > 0 and res["dpo_ours"]["pairs_per_s"] > 0
    assert res["max_batch"]["tiny"]["largest_rows"] == 1
    lines = train.table(res).splitlines()
    assert lines[-2].startswith("RATIO sft tokens/s ours/TRL: ") and lines[-2].endswith("x")
    assert lines[-1].startswith("RATIO dpo pairs/s ours/TRL: ")
