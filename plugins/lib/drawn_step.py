"""The sampled decode step as one device graph: the model's step, then the fused first
draw (:func:`~srscode.plugins.lib.fast_decode.first_draw`) and bounded redraws of the rows
it rejected, all captured together (:meth:`FastDecoder._drawn_step` captures it).

Why: with the sampler outside the graph, every step went graph replay -> host launches the
draw -> host waits for its verdict (a sync) -> host launches the redraw of rejected rows ->
another sync, the device idle during each host gap. On an H200 (1.5B shape, B=256) the
engine's loop took 6.85 ms a step against 4.45 ms of graph replay and ~0.5 ms of sampler
device time. Here the host fills three noise buffers and replays one graph; it reads one
verdict per step, and only rows still rejected after every round in the graph (rare, see
:func:`redraw_sizes`) are sampled outside it, exactly.

A graph needs fixed shapes, and the rows that reject vary per step: each redraw round
takes a fixed number of rows, the rejected ones first (``topk`` of the rejection mask, no
sync), and keeps a redraw only for rows that had rejected. Every path samples a row's
top-p set exactly (rejection sampling: a draw is kept iff it is in the set; a row that
rejects every round is sampled from the set by the caller), so the bounds change the cost,
never the distribution. Measured on an H100 (docs/benchmarks.md, 2026-12-06): the engine's
decode 1.05-1.13x the draw after the step, the sampled step 5.1 ms against 5.6.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

REDRAW_MARGIN = 2.0  # a round's rows: this many times the rejections expected from the rows before it
REDRAW_SLACK = 4  # plus these, for the spread at small batches
REDRAW_ROUNDS = 2  # redraw rounds inside the graph after the first draw


def redraw_sizes(rows: int, top_p: float, rounds: int | None = None) -> list[int]:
    """Rows per redraw round. A draw is rejected with probability at most ``1 - top_p``
    (1 - top_p for a flat row, far less for a trained model's peaked one), so after a round
    of ``n`` rows about ``n (1 - top_p)`` remain; each round takes twice that plus a few.
    At 256 rows and top_p 0.95: 30 then 8 rows, and a row left after both (~1 - top_p cubed
    per row, ~3 % of steps at 256 flat rows) is sampled outside the graph. At least 2 rows
    (dynamo would specialise a size-1 dimension and compile the draw once more)."""
    sizes, n = [], rows
    for _ in range(REDRAW_ROUNDS if rounds is None else rounds):
        n = min(n, max(2, math.ceil(n * (1.0 - top_p) * REDRAW_MARGIN) + REDRAW_SLACK))
        sizes.append(n)
    return sizes


@dataclass
class DrawBuffers:
    """Static inputs of a captured sampled step (fixed addresses): the noise of the first
    draw [R, V] and of each redraw round [n, V] (float32, refilled before every replay),
    the additive ``ban`` [V] (0, or -inf on EOS before ``min_new_tokens``) and the rows whose
    token is discarded (``done`` [R]; never drawn again)."""

    noise: list[Any]
    ban: Any
    done: Any
    banned: bool = False

    @classmethod
    def allocate(cls, rows: int, vocab: int, top_p: float, device: Any, done: Any = None) -> "DrawBuffers":
        """``done``: the caller's own rows-ended tensor, where it keeps one (else a new one)."""
        import torch

        sizes = [rows] + redraw_sizes(rows, top_p)
        return cls(
            noise=[torch.empty(n, vocab, dtype=torch.float32, device=device) for n in sizes],
            ban=torch.zeros(vocab, dtype=torch.float32, device=device),
            done=torch.zeros(rows, dtype=torch.bool, device=device) if done is None else done,
        )

    def refill(self, generator: Any) -> None:
        """Fresh Exp(1) noise for the next replay, from the decoder's own generator (eager
        kernels on the stream, no sync; the graph never draws random numbers itself)."""
        for n in self.noise:
            n.exponential_(generator=generator)

    def set_ban(self, eos: Any, on: bool) -> None:
        """EOS banned (before ``min_new_tokens``) or allowed; written only when it changes."""
        if on != self.banned:
            self.ban.zero_()
            if on and eos.numel():
                self.ban.index_fill_(0, eos, float("-inf"))
            self.banned = on


def draw_rounds(first: Callable[..., tuple[Any, Any]], logits: Any, bufs: DrawBuffers,
                inv_temperature: float, top_p: float, mark_rows: Callable[..., None]) -> tuple[Any, Any]:
    """``(tokens [R], ok [R])`` for ``logits`` [R, V]: ``first`` on every row, then each
    redraw round on a fixed number of rows, those that rejected first. ``ok`` is False only
    for live rows that rejected every draw (the caller samples those exactly); done rows are
    ok from the start. Fixed shapes and no host sync: capturable in a device graph.
    ``mark_rows`` marks dim 0 of the draw's inputs dynamic (one compilation for every size)."""
    import torch

    mark_rows(logits, bufs.noise[0])
    tok, ok = first(logits, bufs.noise[0], inv_temperature, top_p, bufs.ban)
    ok = ok | bufs.done
    for noise in bufs.noise[1:]:
        # the rejected rows first; when fewer than the round's size, accepted rows fill it
        # and their redraws are dropped
        pick = (~ok).to(torch.float32).topk(noise.shape[0]).indices
        rejected = ~ok.index_select(0, pick)
        sub = logits.index_select(0, pick)
        mark_rows(sub, noise)
        t2, ok2 = first(sub, noise, inv_temperature, top_p, bufs.ban)
        take = rejected & ok2
        tok = tok.index_copy(0, pick, torch.where(take, t2, tok.index_select(0, pick)))
        ok = ok.index_copy(0, pick, ~rejected | take)
    return tok, ok


def is_eos(tok: Any, eos: Any) -> Any:
    """Whether each of ``tok`` [R] is one of ``eos`` [E] (a broadcast compare: a handful of
    ids, and no data-dependent kernel choice inside a captured graph)."""
    return (tok[:, None] == eos[None, :]).any(-1)


def record(tok: Any, state: Any, eos: Any, pad_id: int) -> None:
    """Token ``state.count`` of every row into the decode state, in place and without a
    sync (capturable): ``tok`` [R] becomes pad on rows that had ended, goes into
    ``state.out[:, count]``, ends the rows it is an EOS of (``lengths`` = count + 1), and
    becomes the next step's input (``tokens``; ``positions``, ``column`` and ``count``
    advance by one). ``state``: the decoder's buffers (``DecodeBuffers``)."""
    import torch

    finished = state.finished
    tok = torch.where(finished, pad_id, tok)
    state.out.index_copy_(1, state.count, tok[:, None])
    if eos.numel():
        hit = is_eos(tok, eos) & ~finished
        state.lengths.copy_(torch.where(hit, state.count + 1, state.lengths))
        finished |= hit
    state.tokens.copy_(tok)
    state.positions.add_(1)
    state.column.add_(1)
    state.count.add_(1)
