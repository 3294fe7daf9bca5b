"""The draw captured with the decode step (plugins/lib/drawn_step.py): fixed-shape rounds
that must sample transformers' top-p set exactly whatever their bounds, never draw a
banned token, and never touch rows whose token is discarded."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from srscode.plugins.lib.drawn_step import DrawBuffers, draw_rounds, redraw_sizes  # noqa: E402
from srscode.plugins.lib.fast_decode import SamplingSpec, first_draw, sample_tokens  # noqa: E402


def _reference_top_p(logits, temperature: float, top_p: float):
    """transformers' own warpers: temperature, then top-p; softmax of what survives."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


def _no_marks(*tensors):
    return None


def _buffers(rows: int, vocab: int, sizes: list[int]) -> DrawBuffers:
    return DrawBuffers(noise=[torch.empty(n, vocab) for n in [rows] + sizes], ban=torch.zeros(vocab),
                       done=torch.zeros(rows, dtype=torch.bool))


def _draw_then_resolve(logits, bufs, spec, gen, ban_ids=None):
    """What the decode loop does: refill, the rounds, then the rows left sampled exactly."""
    bufs.refill(gen)
    tok, ok = draw_rounds(first_draw, logits, bufs, 1.0 / spec.temperature, spec.top_p, _no_marks)
    left = (~ok).nonzero().squeeze(1)
    if left.numel():
        sub = logits.index_select(0, left).clone()
        if ban_ids is not None:
            sub.index_fill_(1, ban_ids, float("-inf"))
        tok = tok.index_copy(0, left, sample_tokens(sub, spec, probe=3, generator=gen))
    return tok, ok


def test_redraw_sizes_follow_the_expected_rejections():
    assert redraw_sizes(256, 0.95) == [30, 8]
    assert redraw_sizes(256, 0.5) == [256, 256]  # capped at the rows
    assert redraw_sizes(16, 0.95) == [6, 5]
    assert redraw_sizes(16, 1.0) == [4, 4]
    assert all(n >= 2 for n in redraw_sizes(2, 1.0))  # never a size-1 dimension (a recompile)


@pytest.mark.parametrize("sizes", ["auto", [2, 2], []])
def test_rounds_sample_the_top_p_set_exactly_whatever_their_bounds(sizes):
    """Transformers' distribution from the rounds plus the exact sampling of the rows they
    leave, with generous bounds, with bounds far too small for the rejections (most rows
    left to the caller) and with no redraw at all. A round that kept a rejected row's draw,
    or filled its places with accepted rows and redrew them, would skew the frequencies."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    left_counts = []
    for temperature, top_p in [(1.0, 0.9), (0.5, 0.9), (1.5, 0.6), (2.0, 1.0)]:
        spec = SamplingSpec(temperature, top_p)
        ref = _reference_top_p(logits[:1], temperature, top_p)[0]
        bounds = redraw_sizes(20000, top_p) if sizes == "auto" else sizes
        tok, ok = _draw_then_resolve(logits, _buffers(20000, 6, bounds), spec, gen)
        left_counts.append(int((~ok).sum()))
        freq = torch.bincount(tok, minlength=6).float() / tok.numel()
        assert set(tok.unique().tolist()) <= set(ref.nonzero().flatten().tolist()), (temperature, top_p)
        torch.testing.assert_close(freq, ref, atol=0.015, rtol=0)
    if sizes == [2, 2] or not sizes:
        assert max(left_counts) > 1000, left_counts  # the caller's exact path really carried rows
    else:  # only rows that rejected all three draws (at most 0.4 ** 3 of them here)
        assert max(left_counts) < 20000 * 0.4**3 * 1.2, left_counts


def test_rounds_redraw_only_rejected_rows_and_never_done_ones():
    """Rows accepted by the first draw keep their token; done rows (flat logits that would
    often reject) keep theirs and stay ok; a redraw round picks rejected live rows first."""
    peaked = torch.tensor([4.0, 3.0, 1.0] + [-20.0] * 97)
    flat = torch.randn(40, 100, generator=torch.Generator().manual_seed(5)) * 0.1  # rejects often (no ties)
    logits = torch.cat([peaked.repeat(600, 1), flat])
    bufs = _buffers(640, 100, [64, 16])
    bufs.done[600:] = True
    gen = torch.Generator().manual_seed(2)
    bufs.refill(gen)
    first_tok, first_ok = first_draw(logits, bufs.noise[0], 1.0, 0.9, bufs.ban)
    tok, ok = draw_rounds(first_draw, logits, bufs, 1.0, 0.9, _no_marks)
    assert bool(ok[600:].all()) and torch.equal(tok[600:], first_tok[600:])
    assert torch.equal(tok[:600][first_ok[:600]], first_tok[:600][first_ok[:600]])
    rejected = ~first_ok[:600]
    assert 0 < int(rejected.sum()) <= 64  # every rejected live row was in the first redraw round
    in_set = _reference_top_p(peaked[None], 1.0, 0.9)[0] > 0
    assert bool(in_set[tok[:600][ok[:600]]].all())  # an ok row's token is in its set


def test_banned_tokens_are_never_drawn_in_any_round():
    """EOS before min_new_tokens: banned by the additive ``ban`` in the first draw and in every
    redraw round (flat rows: many redraws), and by the caller for the rows left."""
    logits = torch.randn(4000, 50, generator=torch.Generator().manual_seed(4)) * 0.3  # no ties
    logits[:, 7] = 3.0  # the banned token would be the likeliest
    bufs = _buffers(4000, 50, [300, 60])
    eos = torch.tensor([7])
    bufs.set_ban(eos, True)
    gen = torch.Generator().manual_seed(3)
    tok, ok = _draw_then_resolve(logits, bufs, SamplingSpec(1.0, 0.5), gen, ban_ids=eos)
    assert not bool((tok == 7).any())
    assert int((~ok).sum()) > 0  # rows went through every path
    bufs.set_ban(eos, False)
    assert not bool(bufs.ban.any())
    tok, _ = _draw_then_resolve(logits, bufs, SamplingSpec(1.0, 0.5), gen)
    assert bool((tok == 7).float().mean() > 0.5)  # allowed again, it dominates (the check above has teeth)


def test_record_writes_the_token_ends_rows_and_advances_the_next_inputs():
    """``record`` (captured with the step): pad on rows that had ended, the token into its
    column, EOS ends a live row at count + 1 (an ended row's pad, here an EOS id, does not
    move its length), and the next step's inputs advance by one."""
    import types

    from srscode.plugins.lib.drawn_step import record

    pad, eos = 2, torch.tensor([2, 6])  # pad is an EOS id, as where a tokenizer pads with EOS
    state = types.SimpleNamespace(
        out=torch.full((4, 5), pad), finished=torch.tensor([False, True, False, False]),
        lengths=torch.tensor([5, 1, 5, 5]), tokens=torch.zeros(4, dtype=torch.long),
        positions=torch.tensor([10, 3, 7, 0]), column=torch.tensor([4]), count=torch.tensor([1]))
    record(torch.tensor([2, 6, 4, 6]), state, eos, pad)
    assert state.out[:, 1].tolist() == [2, pad, 4, 6] and (state.out[:, [0, 2, 3, 4]] == pad).all()
    assert state.finished.tolist() == [True, True, False, True]
    assert state.lengths.tolist() == [2, 1, 5, 2]
    assert state.tokens.tolist() == [2, pad, 4, 6]
    assert state.positions.tolist() == [11, 4, 8, 1] and state.column.item() == 5 and state.count.item() == 2
    record(torch.tensor([3, 3, 6, 3]), state, torch.tensor([], dtype=torch.long), pad)  # no EOS ids: nothing ends
    assert state.out[:, 2].tolist() == [pad, pad, 6, pad] and state.finished.tolist() == [True, True, False, True]
    assert state.lengths.tolist() == [2, 1, 5, 2] and state.count.item() == 3
