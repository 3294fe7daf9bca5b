"""The fast decode loop (plugins/lib/fast_decode.py) against transformers on tiny CPU models:
greedy token-for-token equality with ``generate`` (Qwen2 and a tied-embedding Llama, with
and without a LoRA adapter, left padding, per-row EOS, min_new_tokens), prefix sharing,
the exact top-p restriction against transformers' own warpers, graph reuse through a
recording runner, and the fallback to ``generate`` for other architectures."""
from __future__ import annotations

import pytest

from model_fixtures import *  # noqa: F401,F403
from model_fixtures import make_ctx, make_lora_adapter

from srscode.core.types import AdapterRef, Prompt

TEXTS = ["def add(a, b):", "import os\nclass Walker:\n    def walk(self, path):", "x = 1", "for i in range(10):\n"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.padding_side = "left"
    return tok


def _lora(model, seed: int):
    """A peft LoRA on every linear layer with random (non-zero) B, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return pm.eval()


def _qwen_fixture(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _tiny(kind: str, vocab: int, eos: int, pad: int):
    """A tiny random model whose greedy outputs vary (initializer_range 0.2: the default
    0.02 makes a 2-layer model repeat one token, which would make the test weak)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[kind]
    config = cfg(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,  # like SmolLM2
        initializer_range=0.2, bos_token_id=None, eos_token_id=eos, pad_token_id=pad,
    )
    torch.manual_seed(3)
    return cls(config).eval()


def _reference(model, enc, tok, max_new: int, eos: int, **kw):
    import torch

    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id,
                             eos_token_id=eos, **kw)
    return out[:, enc["input_ids"].shape[1]:].tolist()


def _fast(model, enc, tok, n: int, max_new: int, eos: int, runner=None, min_new: int = 0, packer=None):
    import torch

    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    spec = SamplingSpec(0.0, 1.0, (eos,), tok.pad_token_id, min_new_tokens=min_new)
    with torch.inference_mode():
        dec = FastDecoder(model, graph_runner=runner, linear_packer=packer)
        return dec.generate(enc["input_ids"], enc["attention_mask"], n, max_new, spec)


def _model_and_reference(tok, kind: str, lora: bool, max_new: int = 24):
    """A tiny model (with a LoRA adapter where asked), the prompts, and ``generate``'s greedy
    rows for them, checked not to be degenerate."""
    model = _tiny(kind, len(tok), tok.eos_token_id, tok.pad_token_id)
    if lora:
        model = _lora(model, seed=5)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ref = _reference(model, enc, tok, max_new, tok.eos_token_id)
    assert len({t for r in ref for t in r}) > 4, "the tiny model's output is degenerate; the test would be weak"
    return model, enc, ref


def _padded(rows: list[list[int]], width: int, pad: int) -> list[list[int]]:
    return [r + [pad] * (width - len(r)) for r in rows]


@pytest.mark.parametrize("kind", ["qwen2-fixture", "qwen2", "llama"])
@pytest.mark.parametrize("lora", [False, True])
def test_greedy_matches_generate_token_for_token(kind, lora, tiny_model_dir, tokenizer):
    import torch

    torch.set_num_threads(1)
    tok = tokenizer
    if kind == "qwen2-fixture":
        model = _qwen_fixture(tiny_model_dir)
    else:
        model = _tiny(kind, len(tok), tok.eos_token_id, tok.pad_token_id)
    if lora:
        base_out = _reference(model, tok(TEXTS, return_tensors="pt", padding=True), tok, 12, tok.eos_token_id)
        model = _lora(model, seed=5)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    assert enc["attention_mask"].min() == 0  # left padding is exercised
    max_new = 24
    ref = _reference(model, enc, tok, max_new, tok.eos_token_id)
    if lora:
        assert [r[:12] for r in ref] != base_out  # the adapter changes the output
    if kind != "qwen2-fixture" or lora:
        assert len({t for r in ref for t in r}) > 4, "the tiny model's output is degenerate; the test would be weak"
    got = _fast(model, enc, tok, 1, max_new, tok.eos_token_id)
    assert _padded(got.tokens, max_new, tok.pad_token_id) == _padded(ref, max_new, tok.pad_token_id)


@pytest.mark.parametrize("lora", [False, True])
def test_bmm_decode_attention_matches_generate_token_for_token(lora, tokenizer, monkeypatch):
    """The ``bmm`` decode attention (two batched GEMMs and an fp32 softmax) decodes what
    ``generate`` does, left padding and grouped heads included, as the sdpa path does."""
    import torch

    from srscode.plugins.lib import fast_decode

    torch.set_num_threads(1)
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    if lora:
        model = _lora(model, seed=5)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ref = _reference(model, enc, tok, 24, tok.eos_token_id)
    assert len({t for r in ref for t in r}) > 4, "the tiny model's output is degenerate; the test would be weak"
    monkeypatch.setattr(fast_decode, "DECODE_ATTENTION", "bmm")
    got = _fast(model, enc, tok, 1, 24, tok.eos_token_id)
    assert _padded(got.tokens, 24, tok.pad_token_id) == _padded(ref, 24, tok.pad_token_id)


def test_decode_attention_ways_agree_numerically():
    import torch

    from srscode.plugins.lib.fast_decode import decode_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 2, 3, 8, generator=g)
    k, v = torch.randn(2, 5, 2, 40, 8, generator=g).unbind(0)
    bias = torch.zeros(5, 1, 1, 40)
    bias[:, ..., :7] = torch.finfo(torch.float32).min  # left padding
    bias[2, ..., 30:] = torch.finfo(torch.float32).min  # a shorter row
    a = decode_attention(q, k, v, bias, 0.3, "sdpa")
    b = decode_attention(q, k, v, bias, 0.3, "bmm")
    assert a.shape == b.shape == (5, 2, 3, 8)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c = decode_attention(q, k[:, :, 7:], v[:, :, 7:], bias[..., 7:], 0.3, "bmm")  # the padding changes nothing
    torch.testing.assert_close(b[[0, 1, 3, 4]], c[[0, 1, 3, 4]], rtol=1e-5, atol=1e-5)


def test_per_row_eos_and_min_new_tokens_match_generate(tokenizer):
    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    free = _reference(model, enc, tok, 16, eos=-1 % len(tok))  # an id that never wins: no early stop
    # an "EOS" that one row emits mid-way (and not at its first step): that row must stop
    # there, counting the EOS, while the others go on
    row = next(i for i, r in enumerate(free) if len(set(r[2:10]) - set(r[:2])) > 0)
    eos = next(t for t in free[row][2:10] if t not in free[row][:2])
    stop = free[row].index(eos)
    ref = _reference(model, enc, tok, 16, eos)
    got = _fast(model, enc, tok, 1, 16, eos)
    assert _padded(got.tokens, 16, tok.pad_token_id) == _padded(ref, 16, tok.pad_token_id)
    assert got.lengths[row] == stop + 1 and got.tokens[row][stop] == eos
    assert all(t == tok.pad_token_id for t in got.tokens[row][stop + 1:])
    # min_new_tokens suppresses that EOS until after the minimum, as generate's processor does
    ref_min = _reference(model, enc, tok, 16, eos, min_new_tokens=stop + 2)
    got_min = _fast(model, enc, tok, 1, 16, eos, min_new=stop + 2)
    assert _padded(got_min.tokens, 16, tok.pad_token_id) == _padded(ref_min, 16, tok.pad_token_id)
    assert got_min.lengths[row] > stop + 1


def test_prefix_sharing_gives_the_rows_of_separate_prefills(tokenizer):
    tok = tokenizer
    model = _lora(_tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id), seed=9)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    one = _fast(model, enc, tok, 1, 20, tok.eos_token_id)
    three = _fast(model, enc, tok, 3, 20, tok.eos_token_id)
    assert three.tokens == [row for row in one.tokens for _ in range(3)]
    assert three.lengths == [n for n in one.lengths for _ in range(3)]


class RecordingRunner:
    """Stands in for a device graph runner on the CPU: counts captures, replays eagerly."""

    def __init__(self):
        self.captures = 0

    def capture(self, fn):
        self.captures += 1
        fn()  # a real runner warms up: the step must be idempotent
        return fn


def test_steps_go_through_the_graph_runner_once_per_window(tokenizer, monkeypatch):
    from srscode.plugins.lib import fast_decode

    tok = tokenizer
    monkeypatch.setattr(fast_decode, "WINDOW", 16)  # several attention windows in a short run
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    plain = _fast(model, enc, tok, 2, 40, tok.eos_token_id)
    runner = RecordingRunner()
    graphed = _fast(model, enc, tok, 2, 40, tok.eos_token_id, runner=runner)
    assert graphed.tokens == plain.tokens  # warm-up runs did not disturb the cache
    width = fast_decode._round_up(enc["input_ids"].shape[1], fast_decode.WIDTH_BUCKET)
    last_window = fast_decode._round_up(width + graphed.stats["steps"] - 1, 16)
    assert runner.captures == (last_window - fast_decode._round_up(width + 1, 16)) // 16 + 1



def test_a_shorter_batch_reuses_the_longer_cache_and_its_graphs(tokenizer, monkeypatch):
    """Batches longest first: a later batch with shorter prompts (the same rows) runs in the
    first batch's cache, capturing no window again, and decodes what a fresh decoder does;
    a longer batch gets a new cache."""
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    tok = tokenizer
    monkeypatch.setattr(fast_decode, "WINDOW", 16)
    monkeypatch.setattr(fast_decode, "WIDTH_BUCKET", 4)
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    long_enc = tok([TEXTS[1], TEXTS[0]], return_tensors="pt", padding=True)
    short_enc = tok([TEXTS[2], TEXTS[0]], return_tensors="pt", padding=True)
    assert short_enc["input_ids"].shape[1] < long_enc["input_ids"].shape[1]
    spec = SamplingSpec(0.0, 1.0, (), tok.pad_token_id)

    def run(dec, enc):
        with torch.inference_mode():
            return dec.generate(enc["input_ids"], enc["attention_mask"], 2, 40, spec)

    runner = RecordingRunner()
    dec = FastDecoder(model, graph_runner=runner)
    run(dec, long_enc)
    buf, captures, long_windows = dec.buffers, runner.captures, set(dec.buffers.graphs)
    short = run(dec, short_enc)
    assert dec.buffers is buf  # the same cache
    width = fast_decode._round_up(short_enc["input_ids"].shape[1], 4)
    short_windows = set(range(fast_decode._round_up(width + 1, 16),
                              fast_decode._round_up(width + short.stats["steps"] - 1, 16) + 1, 16))
    assert short_windows & long_windows, (short_windows, long_windows)  # some windows are shared
    assert runner.captures - captures == len(short_windows - long_windows)  # only the others are captured
    assert short.stats["cache_len"] < buf.shape[1]
    assert short.tokens == run(FastDecoder(model), short_enc).tokens
    run(dec, tok([TEXTS[1] * 3, TEXTS[0]], return_tensors="pt", padding=True))
    assert dec.buffers is not buf  # a longer batch: a new cache


# ----------------------------------------------------------------------------- sampling


def _reference_top_p(logits, temperature: float, top_p: float):
    """transformers' own warpers: temperature, then top-p; softmax of what survives."""
    import torch
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


def _dense(parts, rows: int, vocab: int):
    import torch

    dense = torch.zeros(rows, vocab)
    for r, ids, w in parts:
        block = torch.zeros(ids.shape[0], vocab).scatter(1, ids, w)
        if r is None:
            dense = block
        else:
            dense[r] = block
    return dense / dense.sum(-1, keepdim=True)


@pytest.mark.parametrize("probe", [128, 4])  # 4: the flat rows need the full-sort fallback
def test_top_p_restriction_is_transformers_distribution(probe):
    import torch

    from srscode.plugins.lib.fast_decode import top_p_candidates

    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(3, 500, generator=gen) * 4.0
    flat = torch.randn(3, 500, generator=gen) * 0.1  # top-4 mass far below top_p
    logits = torch.cat([peaked, flat])
    for temperature, top_p in [(0.8, 0.95), (1.3, 0.5), (0.5, 0.99)]:
        probs = torch.softmax(logits / temperature, dim=-1)
        parts = top_p_candidates(probs, top_p, probe)
        if probe == 4:
            assert any(r is not None for r, _, _ in parts)  # the fallback ran
        ref = _reference_top_p(logits, temperature, top_p)
        got = _dense(parts, logits.shape[0], logits.shape[1])
        assert torch.equal(got > 0, ref > 0), (temperature, top_p)  # the same kept set
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_samples_follow_temperature_and_top_p():
    import torch

    from srscode.plugins.lib.fast_decode import SamplingSpec, sample_tokens

    from srscode.plugins.lib import fast_decode

    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]]).repeat(20000, 1)
    torch.manual_seed(0)
    # (1.0, 0.9) and (0.5, 0.9): the top-3 probe covers top_p; (1.0, 0.97) and (1.5, 0.9):
    # it does not, so the rejection sampler runs; (2.0, 1.0): no top-p
    for temperature, top_p in [(1.0, 0.9), (0.5, 0.9), (1.0, 0.97), (1.5, 0.9), (2.0, 1.0)]:
        ref = _reference_top_p(logits[:1], temperature, top_p)[0]
        probs = torch.softmax(logits[:1] / temperature, dim=-1)
        if top_p < 1.0:
            assert (probs.topk(3).values.sum() < top_p) == ((temperature, top_p) in [(1.0, 0.97), (1.5, 0.9)])
        toks = sample_tokens(logits, SamplingSpec(temperature, top_p), probe=3)
        freq = torch.bincount(toks, minlength=6).float() / toks.numel()
        assert set(toks.unique().tolist()) <= set(ref.nonzero().flatten().tolist())
        torch.testing.assert_close(freq, ref, atol=0.015, rtol=0)
    greedy = sample_tokens(logits[:2], SamplingSpec(0.0))
    assert greedy.tolist() == [0, 0]
    # rows that reject every draw go to the sorted distribution: force it with 1 round
    # and a top_p whose kept set is small, and check the distribution still matches
    fast_decode_rounds = fast_decode.REJECTION_ROUNDS
    try:
        fast_decode.REJECTION_ROUNDS = 1
        flat = torch.zeros(20000, 6)
        toks = sample_tokens(flat + torch.tensor([0.3, 0.2, 0.1, 0.0, 0.0, 0.0]), SamplingSpec(1.0, 0.45), probe=1)
        ref = _reference_top_p(flat[:1] + torch.tensor([[0.3, 0.2, 0.1, 0.0, 0.0, 0.0]]), 1.0, 0.45)[0]
        freq = torch.bincount(toks, minlength=6).float() / toks.numel()
        torch.testing.assert_close(freq, ref, atol=0.015, rtol=0)
    finally:
        fast_decode.REJECTION_ROUNDS = fast_decode_rounds


def test_done_rows_never_send_a_step_down_the_rejection_path(monkeypatch):
    """Finished and padding rows (their tokens are discarded) with flat logits: the step
    draws once, from the top-k, and the live rows' distribution is unchanged."""
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import SamplingSpec, sample_tokens

    peaked = torch.tensor([4.0, 3.0, 1.0] + [-20.0] * 997)
    logits = torch.cat([peaked.repeat(6000, 1), torch.zeros(4, 1000)])  # 4 done rows, flat
    done = torch.arange(6004) >= 6000
    draws = []
    real_draw = fast_decode.draw
    monkeypatch.setattr(fast_decode, "draw", lambda w, g=None: draws.append(w.shape) or real_draw(w, g))
    torch.manual_seed(0)
    toks = sample_tokens(logits, SamplingSpec(1.0, 0.9), probe=8, done=done)
    assert draws == [torch.Size([6004, 8])], draws  # the top-k draw only
    ref = _reference_top_p(peaked[None], 1.0, 0.9)[0]
    freq = torch.bincount(toks[:6000], minlength=1000).float() / 6000
    assert set(toks[:6000].unique().tolist()) <= set(ref.nonzero().flatten().tolist())
    torch.testing.assert_close(freq, ref, atol=0.02, rtol=0)
    draws.clear()
    sample_tokens(logits, SamplingSpec(1.0, 0.9), probe=8)  # without done: the flat rows reject
    assert len(draws) > 1 and draws[1] == torch.Size([4, 1000]), draws



@pytest.mark.parametrize("splits", [1, 4, 7])  # 7 does not divide the vocabulary: whole rows
def test_first_draw_accepts_exactly_the_rows_whose_token_is_in_the_top_p_set(splits, monkeypatch):
    """The fused first draw's verdict agrees with transformers' kept set for every draw,
    on peaked rows (nearly all accepted) and flat ones (many rejected): a wrong boundary
    (>= instead of >, the mass including the token) would flip some of them. Reduced over
    slices of each row (DRAW_SPLITS) it draws the same tokens with the same verdicts."""
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import first_draw

    monkeypatch.setattr(fast_decode, "DRAW_SPLITS", splits)

    gen = torch.Generator().manual_seed(1)
    logits = torch.cat([torch.randn(4, 300, generator=gen) * 4.0, torch.randn(4, 300, generator=gen) * 0.3])
    logits[0, 7] = float("-inf")  # a banned token (EOS before min_new_tokens) is never drawn
    rows = logits.repeat(500, 1)
    for temperature, top_p in [(0.8, 0.95), (1.3, 0.5)]:
        kept = _reference_top_p(logits, temperature, top_p).repeat(500, 1) > 0
        noise = torch.empty(rows.shape).exponential_(generator=gen)
        tok, ok = first_draw(rows, noise, 1.0 / temperature, top_p, torch.zeros(300))
        in_set = kept.gather(1, tok[:, None]).squeeze(1)
        assert torch.equal(ok, in_set), (temperature, top_p)
        with monkeypatch.context() as whole:
            whole.setattr(fast_decode, "DRAW_SPLITS", 1)
            assert torch.equal(first_draw(rows, noise, 1.0 / temperature, top_p, torch.zeros(300))[0], tok)
        assert 0 < int((~ok).sum()) < ok.numel() // 2  # both verdicts occur
        assert not (tok.view(500, 8)[:, 0] == 7).any()


def _eager_compiled_first():
    from srscode.plugins.lib.fast_decode import compiled_first_draw

    return compiled_first_draw(_CountingBackend())  # dynamo traces it whole (fullgraph) and runs it as traced


@pytest.mark.parametrize("compiled,rounds,splits", [(False, 4, 1), (True, 4, 1), (False, 1, 1), (True, 4, 3)])
def test_samples_through_the_first_draw_follow_temperature_and_top_p(compiled, rounds, splits, monkeypatch):
    """Sampling with the first draw gives transformers' top-p distribution: rows whose
    draw is outside the set draw again (rounds > 1), and rows that rejected every draw are
    sampled from the set by the top-k path (rounds = 1: all of them)."""
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import SamplingSpec, first_draw, sample_tokens

    monkeypatch.setattr(fast_decode, "REJECTION_ROUNDS", rounds)
    monkeypatch.setattr(fast_decode, "DRAW_SPLITS", splits)
    torch._dynamo.reset()  # each sampling spec is compiled anew (floats are specialised): a clean count
    first = _eager_compiled_first() if compiled else first_draw
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    for temperature, top_p in [(1.0, 0.9), (0.5, 0.9), (1.0, 0.97), (1.5, 0.6), (2.0, 1.0)]:
        ref = _reference_top_p(logits[:1], temperature, top_p)[0]
        toks = sample_tokens(logits, SamplingSpec(temperature, top_p), probe=3, generator=gen, first=first)
        freq = torch.bincount(toks, minlength=6).float() / toks.numel()
        assert set(toks.unique().tolist()) <= set(ref.nonzero().flatten().tolist()), (temperature, top_p)
        torch.testing.assert_close(freq, ref, atol=0.015, rtol=0)


def test_first_draw_leaves_done_rows_and_redraws_only_rejected_rows(monkeypatch):
    """Done rows (discarded tokens; flat logits, so they would often reject) are never
    drawn again; live rows that drew outside the set are the only ones drawn again, by the
    same function, and no row reaches the top-k path here."""
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import SamplingSpec, first_draw, sample_tokens

    peaked = torch.tensor([4.0, 3.0, 1.0] + [-20.0] * 997)
    logits = torch.cat([peaked.repeat(6000, 1), torch.zeros(40, 1000)])  # 40 done rows, flat
    done = torch.arange(6040) >= 6000
    drawn, topk_path = [], []
    real_rows, real_sample = fast_decode._first_draw_rows, fast_decode.sample_tokens
    monkeypatch.setattr(fast_decode, "_first_draw_rows", lambda f, lg, *a: drawn.append(lg) or real_rows(f, lg, *a))
    monkeypatch.setattr(fast_decode, "sample_tokens", lambda lg, *a, **k: topk_path.append(lg) or real_sample(lg, *a, **k))
    gen = torch.Generator().manual_seed(0)
    toks = sample_tokens(logits, SamplingSpec(1.0, 0.9), probe=8, generator=gen, done=done, first=first_draw)
    ref = _reference_top_p(peaked[None], 1.0, 0.9)[0]
    outside = float(1.0 - torch.softmax(peaked, -1)[ref > 0].sum())  # a row's chance to draw outside the set
    assert drawn[0].shape[0] == 6040 and len(drawn) >= 2, [d.shape for d in drawn]
    assert 0 < drawn[1].shape[0] < 6000 * outside * 1.5, (drawn[1].shape, outside)  # the live rows that rejected
    assert all(bool((d[:, 0] == 4.0).all()) for d in drawn[1:])  # no done (flat) row drew again
    assert not topk_path
    freq = torch.bincount(toks[:6000], minlength=1000).float() / 6000
    torch.testing.assert_close(freq, ref, atol=0.02, rtol=0)


def test_compiled_decoder_samples_through_the_compiled_first_draw(tokenizer, monkeypatch):
    """A compiled decoder's sampling goes through the compiled first draw (one more graph):
    the prefill's logits through the sampler, every later step's draw inside the step
    (``DRAW_IN_STEP``; its redraw rounds on fewer rows compile nothing more), reproducibly
    per seed; DRAW_IN_STEP = False draws after each step; FIRST_DRAW = False keeps the
    top-k path (the baseline)."""
    import torch

    from srscode.plugins.lib import fast_decode

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    calls = []  # the sampler calls that passed the first draw
    real = fast_decode.sample_tokens
    monkeypatch.setattr(fast_decode, "sample_tokens",
                        lambda *a, **k: calls.append(k.get("first")) or real(*a, **k))
    fast_decode._FIRST_DRAWS.clear()
    torch._dynamo.reset()
    backend = _CountingBackend()
    first, dec = _fast_compiled(model, enc, tok, 2, 10, backend, sample=True)
    assert dec.first is not None and dec.fam.compiled
    assert backend.graphs == 6, backend.graphs  # pre, post (decode and prefill), head and the first draw
    firsts = [f for f in calls if f is not None]  # (None: rows the draws left, sampled exactly)
    assert len(firsts) == 1 and firsts[0] is dec.first, "the prefill's logits did not draw first"
    assert dec.stats["draws_in_step"] == dec.stats["steps"] - 1 == 9, dec.stats
    again, _ = _fast_compiled(model, enc, tok, 2, 10, backend, sample=True)
    assert again.tokens == first.tokens and backend.graphs == 6  # same seed, nothing recompiled
    monkeypatch.setattr(fast_decode, "DRAW_IN_STEP", False)
    calls.clear()
    after, dec = _fast_compiled(model, enc, tok, 2, 10, backend, sample=True)
    firsts = [f for f in calls if f is not None]
    assert len(firsts) == dec.stats["steps"] and all(f is dec.first for f in firsts), "not every step drew first"
    assert dec.stats["draws_in_step"] == 0 and backend.graphs == 6
    monkeypatch.setattr(fast_decode, "FIRST_DRAW", False)
    calls.clear()
    _, dec = _fast_compiled(model, enc, tok, 2, 10, backend, sample=True)
    assert dec.first is None and calls and not any(calls)


def _short_windows_llama(tok, monkeypatch):
    """A tiny Llama, the prompts and a counting compile backend after dynamo's reset, with
    16-column attention windows (several in a short run)."""
    import torch

    from srscode.plugins.lib import fast_decode

    monkeypatch.setattr(fast_decode, "WINDOW", 16)
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    torch._dynamo.reset()
    return model, tok(TEXTS, return_tensors="pt", padding=True), _CountingBackend()


@pytest.mark.parametrize("redraw_rounds", [2, 0])
def test_draws_captured_with_the_step_keep_min_new_tokens_and_their_buffers(tokenizer, monkeypatch, redraw_rounds):
    """The draw inside the step bans EOS before min_new_tokens (the token the model draws
    most is made EOS, so without the ban rows end at once), with the redraw rounds and with
    none (every rejected row then sampled outside the graph, exactly: the ban applies there
    too). Its graphs are captured once per window and reused by the next batch of the same
    shape, whose draws read the same buffers."""
    import collections

    import torch

    from srscode.plugins.lib import drawn_step, fast_decode
    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    monkeypatch.setattr(drawn_step, "REDRAW_ROUNDS", redraw_rounds)
    tok = tokenizer
    model, enc, backend = _short_windows_llama(tok, monkeypatch)

    def run(eos: tuple[int, ...], min_new: int, chunk: int | None = None):
        runner = RecordingRunner()
        dec = FastDecoder(model, graph_runner=runner, seed=11, compile=True, compile_backend=backend)
        spec = SamplingSpec(1.0, 0.9, eos, tok.pad_token_id, min_new_tokens=min_new)
        if chunk:  # two batches of the same shape through one decoder
            monkeypatch.setattr(fast_decode, "PREFILL_GROUPED", False)
        with torch.inference_mode():
            outs = [dec.generate(enc["input_ids"][i:i + 2], enc["attention_mask"][i:i + 2], 4, 24, spec)
                    for i in ((0, 2) if chunk else (0,))]
        return outs, dec, runner

    (free,), _, _ = run((), 0)
    # the token drawn most by the steps after the first (drawn inside the step), made likelier
    common = collections.Counter(t for row in free.tokens for t in row[1:6]).most_common(1)[0][0]
    with torch.no_grad():
        model.lm_head.weight[common] *= 3.0
    (ends,), _, _ = run((common,), 0)
    assert sum(2 <= length <= 6 for length in ends.lengths) >= 2, ends.lengths  # it ends rows early
    (held,), dec, runner = run((common,), 6)
    assert all(length > 6 for length in held.lengths), held.lengths
    assert all(common not in row[:6] for row in held.tokens)
    assert dec.stats["draws_in_step"] == dec.stats["steps"] - 1 > 0
    if redraw_rounds == 0:
        assert dec.stats["draw_fallback_rows"] > 0, dec.stats  # rows left to the exact path
    # that path bans too: rows the draws left, on logits where the banned token dominates
    logits = torch.zeros(8, len(tok))
    logits[:, common] = 20.0
    left = torch.zeros(8, dtype=torch.bool)
    spec = SamplingSpec(1.0, 0.9, (common,), tok.pad_token_id, min_new_tokens=6)
    picked = dec._resolved(torch.zeros(8, dtype=torch.long), left, logits, spec, torch.tensor([common]), {"draw_fallback_rows": 0})
    assert not bool((picked == common).any())
    allowed = dec._resolved(torch.zeros(8, dtype=torch.long), left, logits, spec, None, {"draw_fallback_rows": 0})
    assert bool((allowed == common).all())
    # every token but one an EOS: the rows draw that one until min_new_tokens, all end at the
    # next token, and the loop stops there (its one sync reads whether all rows had finished)
    (stop,), dec, _ = run(tuple(t for t in range(len(tok)) if t != 5), 3)
    assert stop.lengths == [4] * 8 and dec.stats["steps"] == 4, (stop.lengths, dec.stats)
    assert all(row[:3] == [5, 5, 5] for row in stop.tokens)
    outs, dec, runner = run((), 0, chunk=2)
    keys = [k for k in dec.buffers.graphs if isinstance(k, tuple)]
    assert keys and all(k[0] == "drawn" for k in keys) and runner.captures == len(dec.buffers.graphs)
    assert len(dec.buffers.draws) == 1 and all(len(o.tokens) == 8 for o in outs)
    assert backend.graphs == 6, backend.graphs  # the model's five pieces and the draw, whatever the rounds


def test_drawn_loop_records_tokens_in_its_graph_and_survives_capture_warmups(tokenizer, monkeypatch):
    """The drawn loop's bookkeeping runs inside the captured step (token into ``out``, EOS,
    lengths, the next step's inputs). A runner runs a step once more while capturing (as
    a real one warms up), which would advance that state twice: the decoder restores it,
    so a recording runner gives the tokens of no runner (same seed), over several windows.
    Lengths agree with the tokens: a row ends at its first EOS, pad after it."""
    import torch

    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    tok = tokenizer
    model, enc, backend = _short_windows_llama(tok, monkeypatch)

    def run(runner, eos):
        dec = FastDecoder(model, graph_runner=runner, seed=9, compile=True, compile_backend=backend)
        spec = SamplingSpec(1.0, 0.9, eos, tok.pad_token_id, min_new_tokens=2)
        with torch.inference_mode():
            return dec.generate(enc["input_ids"], enc["attention_mask"], 3, 40, spec), dec

    free, _ = run(None, ())
    import collections

    common = collections.Counter(t for row in free.tokens for t in row[2:12]).most_common(1)[0][0]
    plain, dec = run(None, (common,))
    assert dec.stats["draws_in_step"] == dec.stats["steps"] - 1 > 0
    graphed, dec = run(RecordingRunner(), (common,))
    assert len([k for k in dec.buffers.graphs if isinstance(k, tuple)]) >= 2  # several windows captured
    assert 0 < dec.stats["capture_s"] < dec.stats["decode_s"]
    assert graphed.tokens == plain.tokens and graphed.lengths == plain.lengths
    ended = [n for n in plain.lengths if n < 40]
    assert ended and len(ended) < len(plain.lengths), plain.lengths  # some rows end early, some do not
    for row, n in zip(plain.tokens, plain.lengths):
        assert common not in row[:min(n - 1, 2)]  # min_new_tokens held
        if n < 40:
            assert row[n - 1] == common and common not in row[2:n - 1]
        assert all(t == tok.pad_token_id for t in row[n:])


def test_rows_the_draws_left_are_sampled_exactly_and_their_bookkeeping_redone(tokenizer):
    """A row the captured draws left unresolved got a provisional token and bookkeeping in
    the graph; the exact token replaces both: a provisional EOS no longer ends the row, an
    exact EOS does (at this token), a banned EOS is never the exact token, and resolved
    rows are untouched."""
    import torch

    from srscode.plugins.lib.drawn_step import record
    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    dec = FastDecoder(model, seed=1)
    buf = dec._buffers(4, 64)
    eos_id, pad, other = tok.eos_token_id, tok.pad_token_id, 9
    eos = buf.eos_ids((eos_id,))
    spec = SamplingSpec(1.0, 0.9, (eos_id,), pad)

    def state(provisional):
        buf.out.fill_(pad)
        buf.finished.copy_(torch.tensor([False, False, False, True]))
        buf.lengths.fill_(10)
        buf.count.fill_(3)
        record(torch.tensor(provisional), buf, eos, pad)

    logits = torch.zeros(4, len(tok))
    logits[0, other] = logits[2, eos_id] = 40.0  # the exact tokens: row 0 `other`, row 2 EOS
    ok = torch.tensor([False, True, False, True])
    state([eos_id, 5, 7, 11])
    dec.stats = {"draw_fallback_rows": 0}
    dec._fix_unresolved(buf, buf.tokens.clone(), ok, logits, spec, None, eos, 3, 10)
    assert buf.out[:, 3].tolist() == [other, 5, eos_id, pad]
    assert buf.finished.tolist() == [False, False, True, True]
    assert buf.lengths.tolist() == [10, 10, 4, 10]
    assert buf.tokens.tolist() == [other, 5, eos_id, pad] and dec.stats["draw_fallback_rows"] == 2
    state([eos_id, 5, 7, 11])
    dec._fix_unresolved(buf, buf.tokens.clone(), ok, logits, spec, eos, eos, 3, 10)  # EOS banned
    assert buf.out[2, 3].item() != eos_id and not buf.finished[2] and buf.lengths[2] == 10


def test_a_bf16_model_compiles_its_draw_once(tokenizer):
    """In bf16 the step's logits are bf16 and the prefill's float32: the draw takes both in
    the model's dtype, so it compiles once (a second variant costs seconds on a GPU)."""
    import torch

    from srscode.plugins.lib import fast_decode

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id).to(torch.bfloat16)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    fast_decode._FIRST_DRAWS.clear()
    torch._dynamo.reset()
    backend = _CountingBackend()
    out, dec = _fast_compiled(model, enc, tok, 2, 10, backend, sample=True)
    assert dec.first is not None and dec.stats["draws_in_step"] == 9
    assert backend.graphs == 6, backend.graphs  # pre, post (decode and prefill), head and one draw
    assert all(len(r) == 10 for r in out.tokens)


@pytest.mark.cuda
@pytest.mark.parametrize("group", [False, True])
def test_draws_in_real_cuda_graphs_give_the_uncaptured_loops_tokens(tokenizer, monkeypatch, group):
    """On a GPU, the step and its draws replayed from CUDA graphs give exactly the tokens of
    the same loop run without graphs (same seed): a graph reading stale noise, a stale done
    mask or freed buffers would draw differently. Several windows, two batches of one shape."""
    import torch

    from srscode.hardware.graphs import runner_factory
    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    monkeypatch.setattr(fast_decode, "WINDOW", 16)
    monkeypatch.setattr(fast_decode, "PREFILL_GROUPED", False)
    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id).cuda()
    enc = tok(TEXTS, return_tensors="pt", padding=True).to("cuda")
    torch._dynamo.reset()
    backend = _CountingBackend()
    spec = SamplingSpec(1.0, 0.9, (tok.eos_token_id,), tok.pad_token_id, min_new_tokens=3)

    def run(runner):
        dec = FastDecoder(model, graph_runner=runner, seed=5, compile=True, compile_backend=backend,
                          group_linears=group)
        with torch.inference_mode():
            return [(r.tokens, r.lengths) for r in (
                dec.generate(enc["input_ids"][i:i + 2], enc["attention_mask"][i:i + 2], 4, 40, spec) for i in (0, 2))], dec

    plain, _ = run(None)
    graphed, dec = run(runner_factory("cuda", "CUDAGraph")())
    assert dec.runner is not None and dec.stats["draws_in_step"] > 0
    assert (dec.groups is not None) is group
    assert len([k for k in dec.buffers.graphs if isinstance(k, tuple)]) >= 2  # several windows captured
    assert graphed == plain


def test_sampler_compiler_failure_falls_back_to_the_eager_sampler(tokenizer, caplog):
    """A compiler that fails on the sampler: a warning, and the eager sampler's tokens
    exactly (the failed first call's draws are not consumed)."""
    import torch

    from srscode.plugins.lib import fast_decode

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)

    class FailsOnSampler(_CountingBackend):
        def __call__(self, gm, example_inputs):
            if "exp" in str(gm.code):  # the first draw's graph; the model's pieces compile
                raise RuntimeError("no compiler for this")
            return super().__call__(gm, example_inputs)

    fast_decode._FIRST_DRAWS.clear()
    torch._dynamo.reset()
    plain, _ = _fast_compiled(model, enc, tok, 2, 10, _CountingBackend(), sample=True)
    fast_decode._FIRST_DRAWS.clear()
    torch._dynamo.reset()
    eager_sampler = fast_decode.FIRST_DRAW
    try:
        fast_decode.FIRST_DRAW = False
        expected, _ = _fast_compiled(model, enc, tok, 2, 10, _CountingBackend(), sample=True)
    finally:
        fast_decode.FIRST_DRAW = eager_sampler
    torch._dynamo.reset()
    with caplog.at_level("WARNING"):
        got, dec = _fast_compiled(model, enc, tok, 2, 10, FailsOnSampler(), sample=True)
    assert "torch.compile of the sampler failed" in caplog.text
    assert dec.first is None and dec.fam.compiled  # only the sampler fell back
    assert got.tokens == expected.tokens
    assert plain.tokens != expected.tokens  # the first draw does change the samples (the check above has teeth)


# ----------------------------------------------------------------------------- fallback


def _gpt2(vocab: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=256)).eval()


def test_unsupported_models_fall_back_to_generate(tiny_model_dir, tokenizer):
    from srscode.core.errors import StageError
    from srscode.plugins.lib import fast_decode
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    gpt2 = _gpt2(len(tokenizer))
    assert "gpt2" in fast_decode.unsupported_reason(gpt2, 64)
    assert fast_decode.unsupported_reason(_tiny("llama", len(tokenizer), 1, 0), 64) is None
    ctx = make_ctx(tiny_model_dir)
    ctx.models.tokenizer = tokenizer
    ctx.models.base_model = gpt2
    prompts = [Prompt("t1", TEXTS[0]), Prompt("t2", TEXTS[1])]
    auto = HFGenerator(HFGeneratorParams(max_new_tokens=6, do_sample=False), ctx)
    assert auto._fast_decoder(gpt2, prompts, tokenizer) is None
    cands = auto.generate(prompts, 2, None, seed=0)  # through generate(): it must still work
    enc = tokenizer([p.text for p in prompts], return_tensors="pt", padding=True)
    ref = _reference(gpt2, enc, tokenizer, 6, tokenizer.eos_token_id)
    assert [c.text for c in cands] == [tokenizer.decode(r, skip_special_tokens=True) for r in ref for _ in range(2)]
    with pytest.raises(StageError, match="gpt2"):
        HFGenerator(HFGeneratorParams(decode="fast"), ctx).generate(prompts, 1, None, 0)


def test_generate_iter_streams_batches_and_generate_concatenates_them(tiny_model_dir):
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    ctx = make_ctx(tiny_model_dir)
    prompts = [Prompt(f"t{i}", t) for i, t in enumerate(TEXTS)]
    # fp32 packed weights (a CPU with native bf16 would pack bf16 under auto): compared with generate() below
    g = HFGenerator(HFGeneratorParams(max_new_tokens=6, batch_size=3, do_sample=False, pack_precision="model"), ctx)
    batches = list(g.generate_iter(prompts, 2, None, seed=1))
    assert [len(b) for b in batches] == [6, 2]  # 3 prompts x 2, then 1 x 2
    streamed = {(c.task_id, c.index): c.text for b in batches for c in b}
    whole = g.generate(prompts, 2, None, seed=1)
    assert [(c.task_id, c.index) for c in whole] == [(p.task_id, k) for p in prompts for k in range(2)]
    assert {(c.task_id, c.index): c.text for c in whole} == streamed
    slow = HFGenerator(HFGeneratorParams(max_new_tokens=6, batch_size=3, do_sample=False, decode="generate"), ctx)
    assert [c.text for c in slow.generate(prompts, 2, None, seed=1)] == [c.text for c in whole]


def test_prefill_groups_bound_padding_and_size():
    from srscode.plugins.lib.fast_decode import prefill_groups

    lengths = [300, 12, 150, 151, 40, 299, 1, 152, 80, 0, 298]
    groups = prefill_groups(lengths, budget=600, pad_share=0.125)
    assert sorted(j for g in groups for j in g) == list(range(len(lengths)))  # each prompt once
    for g in groups:
        widths = [max(lengths[j], 1) for j in g]
        padded = len(g) * max(widths)
        assert widths == sorted(widths)  # by length
        if len(g) > 1:
            assert padded <= 600 and padded - sum(widths) <= 0.125 * padded, (g, widths)
    assert [lengths[j] for j in groups[-1]] == [300]  # 298-300 padded would pass the budget of 600 at 3 rows
    assert prefill_groups([]) == []
    assert prefill_groups([7, 7, 7], budget=14) == [[0, 1], [2]]


def test_prefill_skips_the_padding_a_group_shares_and_decodes_the_same(tokenizer, monkeypatch):
    """Prompts of very different lengths are prefilled in groups cut to their own longest
    prompt (not the batch's), and greedy decoding still gives generate()'s tokens."""
    import torch

    from srscode.plugins.lib import fast_decode

    torch.set_num_threads(1)
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    texts = ["x = 1", "y = 2", "def walk(path):\n" + "    # step through every folder below path\n" * 6 + "    return path"]
    enc = tok(texts, return_tensors="pt", padding=True)
    ref = _reference(model, enc, tok, 12, tok.eos_token_id)
    widths = []
    prefill = fast_decode.LlamaFamily.prefill

    def spy(self, ids, mask, sink, groups=None):
        widths.append(ids.shape[1])
        return prefill(self, ids, mask, sink, groups)

    monkeypatch.setattr(fast_decode.LlamaFamily, "prefill", spy)
    got = _fast(model, enc, tok, 2, 12, tok.eos_token_id)
    full = fast_decode._round_up(enc["input_ids"].shape[1], fast_decode.WIDTH_BUCKET)
    assert len(widths) == 2 and min(widths) < enc["input_ids"].shape[1] // 4 and max(widths) <= full, widths
    assert _padded(got.tokens, 12, tok.pad_token_id) == [r for r in _padded(ref, 12, tok.pad_token_id) for _ in range(2)]
    # the benchmark's baseline: one chunk at the batch's width, the same tokens
    widths.clear()
    monkeypatch.setattr(fast_decode, "PREFILL_GROUPED", False)
    assert _fast(model, enc, tok, 2, 12, tok.eos_token_id).tokens == got.tokens
    assert widths == [full]


def _splitting_token(rows: list[list[int]], early: int = 15, late: int = 33) -> tuple[int, list[int]]:
    """A token that, taken as the EOS, ends some rows within the first ``STOP_CHECK_EVERY``
    (16) steps and others only after step 32: (the token, each row's first index of it, or
    the row's length where absent). The models are seeded, so this is found every time or never."""
    for t in rows[0][: early + 1]:
        firsts = [r.index(t) if t in r else len(r) for r in rows]
        if min(firsts) <= early and max(firsts) >= late:
            return t, firsts
    pytest.fail(f"no token of the first row splits these greedy rows into early and late ones: {rows}")


def test_stream_gives_out_rows_as_they_finish_and_adds_up_to_generate(tokenizer):
    """Rows that end early are given out at the next check (every ``STOP_CHECK_EVERY`` steps)
    while the others still decode; all parts together are ``generate``'s result, each row once."""
    import torch

    from srscode.plugins.lib import fast_decode
    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    assert fast_decode.STOP_CHECK_EVERY == 16  # the steps below assume it
    torch.set_num_threads(1)
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ids, mask, pad, new = enc["input_ids"], enc["attention_mask"], tok.pad_token_id, 40
    with torch.inference_mode():
        free = FastDecoder(model).generate(ids, mask, 1, new, SamplingSpec(0.0, 1.0, (), pad)).tokens
    eos, firsts = _splitting_token(free)
    spec = SamplingSpec(0.0, 1.0, (eos,), pad)
    events: list[tuple[str, object]] = []
    got: dict[int, tuple[list[int], int]] = {}
    dec = FastDecoder(model)
    with torch.inference_mode():
        for part in dec.stream(ids, mask, 1, new, spec, on_step=lambda s: events.append(("step", s))):
            events.append(("part", part.rows))
            for r, toks, length in zip(part.rows, part.tokens, part.lengths):
                assert r not in got, f"row {r} given out twice"
                got[r] = (toks, length)
        whole = FastDecoder(model).generate(ids, mask, 1, new, spec)
    early = [r for r, f in enumerate(firsts) if f <= 15]  # ended by step 16
    first_part = events.index(("part", early))
    assert events.index(("step", 16)) < first_part < events.index(("step", 32)), events
    assert sorted(got) == list(range(len(TEXTS)))
    for r, f in enumerate(firsts):  # each row: the free row up to and through the EOS, then pad
        length = min(f + 1, new)
        assert got[r] == (free[r][:length] + [pad] * (new - length), length), r
    assert [got[r][0] for r in range(len(TEXTS))] == whole.tokens
    assert [got[r][1] for r in range(len(TEXTS))] == whole.lengths
    assert dec.stats["rows_given_early"] >= len(early)
    assert dec.stats["steps"] == min(max(firsts) + 1, new)


def test_hf_generate_iter_gives_out_finished_rows_before_the_batch_ends(tiny_model_dir, monkeypatch):
    """Through the generator: a batch's early rows come as a part of their own while the
    model is in no decoding mode (the caller evaluates them meanwhile); closing the stream
    early restores the model's modules at once; the parts add up to ``generate``."""
    import torch

    from srscode.plugins.generate import hf
    from srscode.plugins.lib import hf_model
    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    ctx = make_ctx(tiny_model_dir)
    model, tok = hf_model.load_base(ctx)
    order = sorted(range(len(TEXTS)), key=lambda i: len(TEXTS[i]))  # the generator's batch order
    enc = tok([TEXTS[i] for i in order], return_tensors="pt", padding=True)
    with torch.inference_mode():
        free = FastDecoder(model).generate(enc["input_ids"], enc["attention_mask"], 1, 40,
                                           SamplingSpec(0.0, 1.0, (), tok.pad_token_id)).tokens
    eos, firsts = _splitting_token(free)
    monkeypatch.setattr(hf, "_eos_and_pad", lambda model, tokenizer: ({eos}, tokenizer.pad_token_id))
    prompts = [Prompt(f"t{i}", t) for i, t in enumerate(TEXTS)]
    g = hf.HFGenerator(hf.HFGeneratorParams(max_new_tokens=40, batch_size=len(TEXTS), do_sample=False), ctx)

    def patched() -> list[str]:  # modules whose forward the packing replaced for the call
        return [name for name, m in model.named_modules() if "forward" in vars(m)]

    parts = []
    for part in g.generate_iter(prompts, 2, None, seed=1):
        assert not torch.is_inference_mode_enabled()  # the caller's code runs outside the model's modes
        parts.append(part)
    early = {f"t{order[r]}" for r, f in enumerate(firsts) if f <= 15}
    assert len(parts) >= 2 and {c.task_id for c in parts[0]} == early
    assert all(c.completion_tokens <= 16 for c in parts[0])
    streamed = sorted((c.task_id, c.index, c.text) for p in parts for c in p)
    whole = g.generate(prompts, 2, None, seed=1)
    assert [(c.task_id, c.index) for c in whole] == [(p.task_id, k) for p in prompts for k in range(2)]
    assert sorted((c.task_id, c.index, c.text) for c in whole) == streamed

    stream = g.generate_iter(prompts, 2, None, seed=1)
    next(stream)
    held = patched()
    stream.close()
    assert patched() == []
    if g._fast_decoder(model, prompts, tok).packer is not None:  # the CPU backend packs (oneDNN present)
        assert held, "the weights were not packed while the stream was open: the close above proved nothing"


def test_hf_generator_frees_the_decoders_cache_when_the_call_ends(tiny_model_dir, monkeypatch):
    """A decoder without a graph runner keeps its steps as closures over itself and its
    buffers, a reference cycle: without ``release`` the KV cache and the grouped weights
    outlived the call until Python's cyclic GC ran (the trainer needs that memory next).
    With the collector off, the buffers are gone once the call's candidates are out, for a
    call that ends and for a stream closed early."""
    import gc
    import weakref

    from srscode.plugins.generate import hf
    from srscode.plugins.lib import fast_decode

    made = []
    real = fast_decode.FastDecoder

    def recording(*args, **kwargs):
        dec = real(*args, **kwargs)
        made.append(dec)
        return dec

    monkeypatch.setattr(fast_decode, "FastDecoder", recording)
    ctx = make_ctx(tiny_model_dir)
    g = hf.HFGenerator(hf.HFGeneratorParams(max_new_tokens=8, batch_size=2, do_sample=False, compile=True), ctx)
    monkeypatch.setattr(fast_decode, "COMPILE_BACKEND", _CountingBackend())  # dynamo without a C++ build
    prompts = [Prompt(f"t{i}", t) for i, t in enumerate(TEXTS)]
    gc.disable()
    try:
        for stop_early in (False, True):
            made.clear()
            stream = g.generate_iter(prompts, 2, None, seed=1)
            next(stream)
            dec = made[0]
            buffers, groups = weakref.ref(dec.buffers), dec.groups
            assert buffers() is not None and groups is not None  # compiled: grouped, no packer
            groups = weakref.ref(groups[0].qkv)
            if stop_early:
                stream.close()
            else:
                assert len([c for part in stream for c in part]) > 0
            del dec, made[:]
            assert buffers() is None and groups() is None, f"the cache outlived the call (stopped early: {stop_early})"
    finally:
        gc.enable()


# ----------------------------------------------------------------------------- benchmark smoke


def test_benchmark_part_a_smoke_runs_on_cpu(tmp_path):
    """benchmarks/generate.py part (a) with tiny shapes: both paths produce every forced token
    and the table's ratios come from the measured rates (the GPU run must not fail on a typo)."""
    import argparse
    import importlib.util
    from pathlib import Path

    import torch

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py"
    spec = importlib.util.spec_from_file_location("bench_generate", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch._dynamo.reset()  # compilations of earlier tests in this worker count towards dynamo's limits
    # compiled rows through dynamo with the eager backend (inductor's C++ build is the slow test's)
    args = argparse.Namespace(rows=8, prompt_len=16, new_tokens=8, skip_greedy_baseline=False, no_compile=False,
                              profile=True, compile_backend="eager")
    out = bench.part_a(bench.Env(smoke=True), args)
    for key in ("fast_sample_B8_compiled", "fast_greedy_B8_compiled"):
        assert out[key]["tokens"] == 8 * 8, key
    assert out["compiled_active"] is True
    assert out["ratio_compiled_vs_eager"]["sample"] == round(
        out["fast_sample_B8_compiled"]["tok_s"] / out["fast_sample_B8"]["tok_s"], 2)
    for label in ("eager", "compiled"):
        prof = out[f"profile_{label}"]
        assert prof["kernels_per_step"] > 0 and 0 < len(prof["top"]) <= 20, prof
        assert prof["window"] == 128  # the largest window of 16 (-> 32) + 8 tokens
    for key in ("generate_sample", "generate_greedy", "fast_sample_B8", "fast_greedy_B8", "fast_sample_B16"):
        assert out[key]["tokens"] == (16 if key.endswith("B16") else 8) * 8, key  # min_new_tokens forced
    for kind in ("sample", "greedy"):
        expected = out[f"fast_{kind}_B8"]["tok_s"] / out[f"generate_{kind}"]["tok_s"]
        assert out["ratio_vs_generate"][kind] == round(expected, 2)
    assert out["micro"]["graphs"] is False  # the CPU backend offers no graph capture
    assert out["fast_sample_B8"]["physical"]["step_bound_ms"] > 0
    # --engine-only (the GPU runs' mode): every arm's three calls, their ratios, both micros
    torch._dynamo.reset()
    args.engine_only = True
    out = bench.part_a(bench.Env(smoke=True), args)
    arms = {c["sampler"] for c in out["engine_calls"]}
    assert arms == {"drawn_in_step", "drawn_in_step_ungrouped", "drawn_in_step_eager_prefill", "first_draw",
                    "topk_first"}, arms
    assert len(out["engine_calls"]) == 15 and all(c["tokens"] > 0 for c in out["engine_calls"])
    assert out["ratio_compiled_vs_eager_prefill_call2"] > 0
    assert out["ratio_grouped_vs_ungrouped_call2"] > 0 and out["ratio_drawn_in_step_vs_first_draw_call2"] > 0
    assert out["micro_engine_sdpa"]["sampled_step_drawn_in_graph_ms"] > 0
    assert out["micro_engine_sdpa_ungrouped"]["sampled_step_drawn_in_graph_ms"] > 0
    assert out["profile_engine_compiled"]["kernels_per_step"] > 0
    assert out["profile_prefill"]["kernels_per_step"] > 0 and out["profile_prefill"]["prefill_s"] > 0


def test_stop_strings_end_rows_like_generate(tiny_model_dir, tokenizer):
    """A stop string completed late in the row (after a periodic check) and a special-token
    stop: the fast loop gives generate()'s text and token count."""
    from srscode.plugins.lib import fast_decode
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    ctx = make_ctx(tiny_model_dir)
    ctx.models.tokenizer = tokenizer
    ctx.models.base_model = _tiny("qwen2", len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)

    def run(decode, prompts):
        g = HFGenerator(HFGeneratorParams(max_new_tokens=48, do_sample=False, decode=decode, pack_precision="model"), ctx)
        return [(c.text, c.completion_tokens) for c in g.generate(prompts, 1, None, seed=0)]

    (full, full_len), = run("fast", [Prompt("t", TEXTS[1])])
    assert full_len == 48 and (full, full_len) == run("generate", [Prompt("t", TEXTS[1])])[0]
    ok = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")
    late = len(tokenizer.decode(tokenizer(full)["input_ids"][: fast_decode.STOP_CHECK_EVERY + 4]))
    at = next(i for i in range(late, len(full) - 1) if set(full[i : i + 2]) <= ok and full.find(full[i : i + 2]) == i)
    prompts = [Prompt("t", TEXTS[1], stop=(full[at : at + 2], "<|endoftext|>"))]
    fast = run("fast", prompts)
    assert fast == run("generate", prompts)
    assert fast[0][0] == full[:at] and fast[0][1] < 48


# ----------------------------------------------------------------------------- graph capability


def test_backends_offer_graph_capture_only_where_the_device_has_it():
    import contextlib

    from srscode.hardware.backends import ASCEND, CPU, CUDA
    from srscode.hardware.graphs import GraphRunner

    assert CPU.graph_runner() is None
    assert CUDA.graph_runner is not CPU.graph_runner and ASCEND.graph_runner is not CPU.graph_runner

    calls: list[str] = []

    class FakeGraph:
        def __init__(self):
            self.replays = 0

        def replay(self):
            calls.append("replay")

        def pool(self):
            return ("pool", id(self))

    class FakeDevice:  # torch.cuda's graph API, recording what the runner does
        Stream = object

        @staticmethod
        def current_stream():
            return type("S", (), {"wait_stream": lambda self, s: calls.append("wait")})()

        @staticmethod
        def stream(s):
            return contextlib.nullcontext()

        pools: list = []

        @classmethod
        def graph(cls, g, pool=None):
            cls.pools.append(pool)
            calls.append("capture")
            return contextlib.nullcontext()

    FakeDevice.Stream = lambda: type("S", (), {"wait_stream": lambda self, s: calls.append("wait")})()
    runner = GraphRunner(FakeDevice, FakeGraph, warmup=2)
    ran: list[int] = []
    replay = runner.capture(lambda: ran.append(1) or "out")
    assert len(ran) == 3 and calls.count("capture") == 1  # two warm-up runs, then the captured one
    assert replay() == "out" and calls[-1] == "replay" and len(ran) == 3  # replay does not call fn
    runner.capture(lambda: "other")
    # every capture gets a private pool: a shared pool id dies with its graphs, and the
    # decode loop drops its graphs when the batch shape changes
    assert FakeDevice.pools == [None, None]


def test_a_failed_graph_capture_falls_back_to_eager_steps(tokenizer, caplog):
    class BrokenRunner:
        def capture(self, fn):
            raise RuntimeError("operation not permitted when stream is capturing")

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    plain = _fast(model, enc, tok, 1, 12, tok.eos_token_id)
    with caplog.at_level("WARNING"):
        broken = _fast(model, enc, tok, 1, 12, tok.eos_token_id, runner=BrokenRunner())
    assert broken.tokens == plain.tokens
    assert "graph capture failed" in caplog.text


def test_sampling_uses_its_own_seeded_generator(tokenizer):
    """Sampling draws from the decoder's own generator: reproducible for a seed (given or
    taken from torch.manual_seed), different across seeds, and the device's default
    generator is never advanced by it (a failed graph capture can leave that one unusable)."""
    import torch

    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    tok = tokenizer
    model = _tiny("llama", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    spec = SamplingSpec(1.5, 0.98, (), tok.pad_token_id)

    def run(**kw):
        with torch.inference_mode():
            return FastDecoder(model, **kw).generate(enc["input_ids"], enc["attention_mask"], 3, 10, spec).tokens

    assert run(seed=1) == run(seed=1)
    assert run(seed=1) != run(seed=2)
    torch.manual_seed(7)
    first = run()
    after_run = torch.get_rng_state()
    torch.manual_seed(7)
    assert run() == first
    # the default stream gave the seed (one draw) and nothing else: sampling drew from its own
    torch.manual_seed(7)
    torch.randint(0, 2**62, (1,))
    assert torch.equal(after_run, torch.get_rng_state())


def test_exponential_race_draw_is_categorical():
    import torch

    from srscode.plugins.lib.fast_decode import draw

    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).repeat(20000, 1)
    picks = draw(w, gen)
    freq = torch.bincount(picks, minlength=4).float() / len(picks)
    assert freq[1] == 0.0  # zero weight is never drawn
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.015)


# ----------------------------------------------------------------------------- torch.compile


def _fast_compiled(model, enc, tok, n: int, max_new: int, backend, runner=None, sample: bool = False):
    import torch

    from srscode.plugins.lib.fast_decode import FastDecoder, SamplingSpec

    spec = SamplingSpec(0.8 if sample else 0.0, 0.9 if sample else 1.0, (tok.eos_token_id,), tok.pad_token_id)
    dec = FastDecoder(model, graph_runner=runner, seed=7, compile=backend is not None,
                      compile_backend=backend or "inductor")
    with torch.inference_mode():
        return dec.generate(enc["input_ids"], enc["attention_mask"], n, max_new, spec), dec


@pytest.mark.slow  # inductor's C++ compilation of three regions takes ~1 min on a shared 2-core CPU
@pytest.mark.skipif(__import__("shutil").which("g++") is None and __import__("shutil").which("gcc") is None,
                    reason="CPU inductor needs a C++ compiler")
@pytest.mark.parametrize("lora", [False, True])
def test_compiled_decode_matches_eager_token_for_token(lora, tokenizer):
    import torch

    torch._dynamo.reset()
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    if lora:
        model = _lora(model, seed=5)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    eager, _ = _fast_compiled(model, enc, tok, 2, 20, None)
    assert len({t for r in eager.tokens for t in r}) > 4, "degenerate output; the test would be weak"
    compiled, dec = _fast_compiled(model, enc, tok, 2, 20, "inductor", runner=RecordingRunner())
    assert dec.fam.compiled, "compilation failed and the decoder fell back to eager"
    assert compiled.tokens == eager.tokens
    assert compiled.lengths == eager.lengths


class _CountingBackend:
    """A torch.compile backend that counts the graphs dynamo hands it and runs them as is."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_compiled_regions_compile_once_for_all_layers(kind, tokenizer):
    """One artifact per region whatever the depth: a per-layer recompile (a guard on the
    layer's identity) would make compilations grow with the layers, and past dynamo's
    recompile limit silently fall back to eager. Also: greedy output equals the eager loop,
    and new attention windows (several here) do not recompile."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from srscode.plugins.lib import fast_decode

    tok = tokenizer
    cls, cfg = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[kind]
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    counts = {}
    for layers in (2, 6):
        config = cfg(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                     initializer_range=0.2, bos_token_id=None, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id)
        torch.manual_seed(3)
        model = cls(config).eval()
        torch._dynamo.reset()
        backend = _CountingBackend()
        old_window = fast_decode.WINDOW
        fast_decode.WINDOW = 16  # several windows in a short run
        try:
            eager, _ = _fast_compiled(model, enc, tok, 1, 40, None)
            got, dec = _fast_compiled(model, enc, tok, 1, 40, backend)
        finally:
            fast_decode.WINDOW = old_window
        assert dec.fam.compiled
        assert got.tokens == eager.tokens
        counts[layers] = backend.graphs
    assert counts[2] == counts[6], counts
    # pre and post for the decode step and for the prefill (prompts and width dynamic), the head
    # (a graph break inside one would add a graph)
    assert counts[2] == 5, counts


def test_a_compiler_failing_in_the_prefill_leaves_the_eager_pieces(tokenizer, caplog, monkeypatch):
    """The prefill is the first compiled code a call runs: a compiler that fails there gives
    a warning and the eager pieces (prefill and steps), with the eager loop's tokens; an
    out-of-memory error is not a compiler failure and propagates."""
    import logging

    import torch

    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    eager, _ = _fast_compiled(model, enc, tok, 2, 12, None)
    torch._dynamo.reset()

    def failing(gm, example_inputs):
        raise RuntimeError("no compiler for this")

    with caplog.at_level(logging.WARNING, logger="srscode.plugins.lib.fast_decode"):
        got, dec = _fast_compiled(model, enc, tok, 2, 12, failing, runner=RecordingRunner())
    assert not dec.fam.compiled and "torch.compile failed" in caplog.text
    assert got.tokens == eager.tokens and got.lengths == eager.lengths

    from srscode.plugins.lib import fast_decode

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    torch._dynamo.reset()
    monkeypatch.setattr(fast_decode.LlamaFamily, "prefill", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        _fast_compiled(model, enc, tok, 2, 12, _CountingBackend())


def test_hf_generator_compile_auto_asks_the_backend(tiny_model_dir, tokenizer):
    """compile: auto is off where the backend runs on the CPU (use_cpu), on where it is an
    accelerator; an explicit bool wins. No device is named."""
    import types

    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams

    model = _tiny("llama", len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    ctx = make_ctx(tiny_model_dir)
    prompts = [Prompt("t1", TEXTS[0])]

    def compiled(setting, backend=None) -> bool:
        g = HFGenerator(HFGeneratorParams(compile=setting), ctx)
        if backend is not None:
            g.ctx = types.SimpleNamespace(backend=backend)
        return g._fast_decoder(model, prompts, tokenizer).fam.compiled

    assert ctx.backend.use_cpu and compiled("auto") is False
    assert compiled(True) is True
    accel = types.SimpleNamespace(use_cpu=False, graph_runner=lambda: None)
    assert compiled("auto", accel) is True
    assert compiled(False, accel) is False


def test_compiled_decoders_outlive_dynamos_recompile_limit_across_adapters(tokenizer):
    """An engine run makes one decoder per round, each with a new peft adapter. Dynamo guards
    on the active adapter's name, so with shared compiled code every round would recompile
    and, past its recompile limit, silently run eagerly; each decoder compiles its own."""
    import torch
    from peft import LoraConfig, get_peft_model

    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lora, adapter_name="a0").eval()
    rounds = torch._dynamo.config.recompile_limit + 2
    for i in range(1, rounds):
        pm.add_adapter(f"a{i}", lora)
    enc = tok(TEXTS[:2], return_tensors="pt", padding=True)
    torch._dynamo.reset()
    per_round = []
    for i in range(rounds):
        pm.set_adapter(f"a{i}")
        backend = _CountingBackend()
        _fast_compiled(pm, enc, tok, 1, 3, backend)
        per_round.append(backend.graphs)
    assert per_round == [5] * rounds  # the last decoders still hand dynamo's graphs to the backend


def test_hf_generator_compiles_once_per_process_across_rounds_adapters_and_batch_sizes(
        tiny_model_dir, tokenizer, tmp_path, monkeypatch):
    """The engine's pattern through the real generator: validation on the base, then rounds
    that each load a new adapter (the trainer unloads the generator's LoRA layers between
    rounds), batch sizes that differ per call, an adapter loaded again, adapters disabled.
    The compiled pieces are made once per process: after the first adapter call no call
    adds a graph (before, every call compiled again, which is why compile was off by
    default), and the outputs are the eager loop's token for token."""
    import torch

    from srscode.plugins.generate.hf import ADAPTER_SLOT, HFGenerator, HFGeneratorParams
    from srscode.plugins.lib import fast_decode, hf_model

    adapters = [AdapterRef.from_dir(make_lora_adapter(tiny_model_dir, tmp_path / f"a{i}", seed=i)) for i in range(3)]
    prompts = [Prompt(f"t{i}", TEXTS[i % len(TEXTS)] + " " * (i // len(TEXTS))) for i in range(7)]
    calls = [(3, None), (5, 0), ("train", None), (2, 1), (7, 1), ("train", None), (4, 2), (6, 0), (3, "off")]

    def run(compile: bool) -> tuple[list, list]:
        backend = _CountingBackend()
        monkeypatch.setattr(fast_decode, "COMPILE_BACKEND", backend)
        torch._dynamo.reset()
        ctx = make_ctx(tiny_model_dir)
        gen = HFGenerator(HFGeneratorParams(compile=compile, temperature=0.0, max_new_tokens=12, pack_precision="model"),
                          ctx)
        texts, graphs = [], []
        for size, which in calls:
            if size == "train":  # what a trainer does to the generator's model between rounds
                hf_model.release_peft(ctx)
                continue
            # "off": no adapter while the generator's peft model exists (disable_adapter)
            ref = adapters[which] if isinstance(which, int) else None
            cands = gen.generate(prompts[:size], 2, ref, seed=1)
            assert {c.adapter for c in cands} == {ref}
            if ref is not None:
                assert ctx.models.peft_model.active_adapter == ADAPTER_SLOT
            texts.append([c.text for c in cands])
            graphs.append(backend.graphs)
        return texts, graphs

    eager_texts, eager_graphs = run(False)
    assert eager_graphs == [0] * len(eager_graphs)
    texts, graphs = run(True)
    assert texts == eager_texts
    first_adapter = 1  # the call index of the first generate with an adapter
    assert graphs[0] == 5, graphs  # pre, post (decode and prefill), head on the base
    assert graphs[first_adapter] == 10, graphs  # and once more with the adapter (its own code)
    assert graphs[-2] == graphs[first_adapter], graphs  # rounds, reloads and new batch sizes add nothing
    assert graphs[-1] <= graphs[first_adapter] + 5, graphs  # adapters disabled: at most one more set


# ----------------------------------------------------------------------------- packed weights (CPU)


def _packer_or_skip():
    from srscode.hardware.packing import onednn_packer

    packer = onednn_packer()
    if packer is None:
        pytest.skip("this torch build has no working oneDNN packed linear (the packer falls back to F.linear)")
    return packer


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("lora", [False, True])
def test_packed_weights_decode_what_generate_does(kind, lora, tokenizer):
    """The CPU backend's packed base weights (oneDNN layout) give generate()'s greedy tokens,
    LoRA included (its A/B stay unpacked), and every module is itself again afterwards."""
    import torch

    packer = _packer_or_skip()
    torch.set_num_threads(1)
    tok = tokenizer
    model, enc, ref = _model_and_reference(tok, kind, lora)
    calls = []
    linear = packer.linear

    def counting(x, packed, bias=None):
        calls.append(x.shape[-1])
        return linear(x, packed, bias)

    packer.linear = counting
    got = _fast(model, enc, tok, 1, 24, tok.eos_token_id, packer=packer)
    assert _padded(got.tokens, 24, tok.pad_token_id) == _padded(ref, 24, tok.pad_token_id)
    layers = model.config.num_hidden_layers
    # per step and layer: q/k/v as one GEMM, gate/up as one, o, down; then the head
    assert len(calls) >= 24 * (4 * layers + 1), "the packed path was not taken for every base linear"
    assert not any("forward" in m.__dict__ for m in model.modules()), "a patched forward outlived the call"
    if lora:  # each LoRA layer ran as one packed GEMM of W + scaling * B A (not base + A/B apart)
        from srscode.plugins.lib.fast_decode import _merged_lora_weight

        layer = model.base_model.model.model.layers[0].self_attn.q_proj
        merged = _merged_lora_weight(layer)
        assert merged is not None
        x = torch.randn(3, layer.base_layer.in_features)
        with torch.no_grad():
            torch.testing.assert_close(packer.linear(x, packer.pack(merged), layer.base_layer.bias), layer(x),
                                       rtol=1e-4, atol=1e-4)
            with model.disable_adapter():
                assert _merged_lora_weight(layer) is None  # disabled: the base alone, packed
        model.train()
        assert _merged_lora_weight(layer) is None  # dropout active: never merged
        model.eval()


@pytest.mark.parametrize("lora", [False, True])
def test_grouped_layers_share_one_gemm_in_any_order(lora, tokenizer):
    """q/k/v (and gate/up) are packed as one GEMM: each layer still returns its own output
    (biases and adapters included), whichever member is called first; the group's outputs
    are dropped once every member took its part; a new input computes afresh."""
    import torch

    from srscode.plugins.lib.fast_decode import LlamaFamily

    packer = _packer_or_skip()
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)  # q/k/v carry biases
    if lora:
        model = _lora(model, seed=6)
    attn = model.get_decoder().layers[1].self_attn
    mods = [attn.q_proj, attn.k_proj, attn.v_proj]
    x, x2 = torch.randn(2, 3, model.config.hidden_size), torch.randn(2, 3, model.config.hidden_size)
    calls = []
    linear = packer.linear
    packer.linear = lambda *a, **k: calls.append(1) or linear(*a, **k)
    with torch.no_grad():
        want, want2 = [m(x) for m in mods], mods[1](x2)
        with LlamaFamily(model).packed_linears(packer):
            got = {i: mods[i](x) for i in (2, 0, 1)}  # v first
            assert len(calls) == 1
            stash = mods[0].forward.__closure__  # the group's shared state, emptied after the last part
            assert any(isinstance(c.cell_contents, dict) and c.cell_contents == {} for c in stash)
            again = mods[1](x2)
            assert len(calls) == 2
    for i, m in enumerate(mods):
        torch.testing.assert_close(got[i], want[i], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, want2, rtol=1e-4, atol=1e-4)


def test_hf_generator_packs_where_the_backend_offers_a_packer(tiny_model_dir, tokenizer, monkeypatch):
    """pack_weights asks the backend (the CPU backend offers oneDNN's packer, the accelerators
    none); false turns it off; a compiled decoder never packs (the compiler lays out its GEMMs)."""
    import types

    import torch

    from srscode.core.config import HardwareConfig
    from srscode.hardware.resolve import builtin_registry, resolve_backend
    from srscode.plugins.generate.hf import HFGenerator, HFGeneratorParams
    from srscode.plugins.lib import fast_decode

    packer = _packer_or_skip()
    model = _tiny("llama", len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    prompts = [Prompt("t1", TEXTS[0])]
    ctx = make_ctx(tiny_model_dir)

    def decoder(backend, **params):
        g = HFGenerator(HFGeneratorParams(**params), ctx)
        g.ctx = types.SimpleNamespace(backend=backend)
        return g._fast_decoder(model, prompts, tokenizer)

    asked = []

    def cpu_with(p):
        return types.SimpleNamespace(use_cpu=True, graph_runner=lambda: None,
                                     linear_packer=lambda precision: asked.append(precision) or p)

    accel = types.SimpleNamespace(use_cpu=False, graph_runner=lambda: None, linear_packer=lambda precision: None)
    assert decoder(cpu_with(packer)).packer is packer
    assert decoder(cpu_with(packer), pack_precision="model").packer is packer
    assert asked == ["auto", "model"]  # the precision goes to the backend, which knows the hardware
    assert decoder(cpu_with(packer), pack_weights=False).packer is None
    assert decoder(accel).packer is None
    assert resolve_backend(HardwareConfig(backend="cpu"), builtin_registry()).linear_packer() is not None

    packed = []
    spy = types.SimpleNamespace(pack=lambda w: packed.append(w) or packer.pack(w), linear=packer.linear)
    enc = tokenizer(TEXTS[:1], return_tensors="pt")
    spec = fast_decode.SamplingSpec(0.0, 1.0, (), 0)
    monkeypatch.setattr(fast_decode, "COMPILE_BACKEND", _CountingBackend())  # dynamo without a C++ build
    for compile, expect_packing in ((False, True), (True, False)):
        packed.clear()
        dec = decoder(cpu_with(spy), compile=compile)
        assert dec.fam.compiled is compile
        with torch.inference_mode():
            dec.generate(enc["input_ids"], enc["attention_mask"], 1, 2, spec)
        assert bool(packed) is expect_packing


def test_packing_is_skipped_where_the_copies_would_not_fit(tokenizer, caplog):
    """A model whose packed copies would take more than half the available memory decodes
    with F.linear (same tokens), and says so."""
    import logging

    packer = _packer_or_skip()
    tok = tokenizer
    model = _tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id)
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    ref = _reference(model, enc, tok, 12, tok.eos_token_id)
    packed = []
    pack = packer.pack
    packer.pack = lambda w: packed.append(w) or pack(w)
    packer.fits = lambda nbytes: nbytes < 1000  # the tiny model's weights are larger
    with caplog.at_level(logging.INFO, logger="srscode.plugins.lib.fast_decode"):
        got = _fast(model, enc, tok, 1, 12, tok.eos_token_id, packer=packer)
    assert packed == []
    assert _padded(got.tokens, 12, tok.pad_token_id) == _padded(ref, 12, tok.pad_token_id)
    assert "would not fit in memory" in caplog.text


def test_available_memory_is_read_where_the_system_reports_it():
    import os

    from srscode.hardware.packing import LinearPacker, available_memory

    avail = available_memory()
    if os.path.exists("/proc/meminfo"):
        assert avail is not None and avail > 0
        assert LinearPacker().fits(avail // 4) and not LinearPacker().fits(avail)
    else:
        assert avail is None and LinearPacker().fits(10**15)


def test_compiled_families_are_bounded_per_model_and_freed_with_it(tokenizer):
    """The process-wide compile cache lives on the model: at most FAMILIES_PER_MODEL adapter
    names are kept (least recently used out), and dropping the model frees it all."""
    import gc
    import weakref

    import torch
    from peft import LoraConfig, get_peft_model

    from srscode.plugins.lib import fast_decode

    tok = tokenizer
    pm = get_peft_model(_tiny("qwen2", len(tok), tok.eos_token_id, tok.pad_token_id),
                        LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"), adapter_name="a0").eval()
    names = [f"a{i}" for i in range(fast_decode.FAMILIES_PER_MODEL + 2)]
    for name in names[1:]:
        pm.add_adapter(name, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    backend = _CountingBackend()
    seen = []
    for name in names:
        pm.set_adapter(name)
        seen.append(fast_decode.family_for(pm, compile=True, compile_backend=backend))
    pm.set_adapter(names[-1])
    assert fast_decode.family_for(pm, compile=True, compile_backend=backend) is seen[-1]  # reused
    kept = fast_decode.causal_lm_of(pm).__dict__["_srscode_fast_families"]
    assert len(kept) == fast_decode.FAMILIES_PER_MODEL
    assert {k[2] for k in kept} == {(n,) for n in names[-fast_decode.FAMILIES_PER_MODEL:]}
    ref = weakref.ref(fast_decode.causal_lm_of(pm))
    del pm, seen, kept
    gc.collect()
    torch._dynamo.reset()
    gc.collect()
    assert ref() is None, "the cached families kept the model alive"
