"""A fast batched decode loop for Llama-family decoder-only models (llama, qwen2, mistral).

Why our own loop rather than ``model.generate``: measured on an H100 with the
Qwen2.5-Coder-1.5B shape at 256 rows, ``generate`` with a dynamic cache reaches about
3,000 tok/s and with a static cache + ``torch.compile`` 8,600, against a memory bound of
a few ms per step. What transformers does not offer (5.17-5.24) and this module does:

* **prefix sharing**: the N candidates of one prompt copy that prompt's KV rows after
  one prefill (``generate(num_return_sequences=N)`` prefills every copy), and prompts are
  prefilled in groups of similar length, each at its own longest prompt's width rather
  than the batch's (:func:`prefill_groups`);
* **decode attention without repeat_kv**: with one query token, the ``heads/kv_heads``
  query heads of one KV head are viewed as that many query *positions* against the same
  K/V ([R, kv_heads, group, D] x [R, kv_heads, L, D]), so each step reads the cache
  once instead of copying it ``group`` times; the window read grows with the sequence
  (``WINDOW`` columns at a time) instead of spanning the whole static cache;
* **one device graph per step** (CUDA graphs through the hardware backend's
  ``graph_runner``; eager where it offers none, e.g. the CPU), instead of ~1,000 kernel
  launches from Python per step;
* optionally (``compile=True``) **regional torch.compile** of each layer's pieces around
  attention (norm + q/k/v + rotary; o_proj + residual + norm + MLP + residual) and of the
  final norm + lm_head, as functions of the layer module, so one compilation serves every
  layer and the growing attention window never recompiles; the rows dimension is dynamic
  and the compiled pieces are kept per process (:func:`family_for`), so batch sizes,
  ``generate`` calls and rounds (a new adapter under the same name) reuse them; it cuts
  the ~50 small kernels per layer that bound the step even inside a graph;
* **exact top-p without sorting the vocabulary** every step: ``topk`` of ``PROBE``
  tokens, and for rows whose top-``PROBE`` mass is below ``top_p`` exact rejection
  sampling (see :func:`sample_tokens`); a full sort only where that rejects every draw.
  Compiled decoders draw every row from its whole distribution first, in one fused
  function (:func:`first_draw`); rows whose draw falls outside the top-p set (about
  ``1 - top_p`` of them) draw again the same way, and only rows that reject
  ``REJECTION_ROUNDS`` draws take that path. From the second token on, the draw, two
  bounded redraw rounds and the step's bookkeeping (the token into the output, EOS,
  lengths, the next step's inputs) are captured in the step's own device graph
  (:mod:`~srscode.plugins.lib.drawn_step`), so a step is one replay and one sync;
* **grouped GEMMs** (``group_linears``, the ``hf`` generator's ``pack_weights``): each
  layer's q/k/v and gate/up as one GEMM each, through concatenated copies made per call
  (:mod:`~srscode.plugins.lib.grouped_linears`);
* compiled decoders **prefill through the same compiled pieces** (prompts and width
  dynamic), where the eager norms, rotary and activation were half the prefill.

Everything else is the model's own modules: embeddings, norms, q/k/v/o projections (so
peft LoRA layers apply), rotary embedding (so rope scaling applies), MLP and lm_head.
Numerics follow transformers: positions from the attention mask (``cumsum - 1``, as
``generate`` computes them for left padding), scaling from the attention module,
temperature then top-p as ``TopPLogitsWarper`` defines it, EOS suppressed before
``min_new_tokens`` as ``MinNewTokensLengthLogitsProcessor`` does, pad after EOS.

Unsupported models (another ``model_type``, a sliding window shorter than the sequence,
a rope type that changes with the sequence length): :func:`unsupported_reason` says why, and the ``hf`` generator falls back to ``generate``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from srscode.hardware import synchronize
from srscode.plugins.lib.drawn_step import DrawBuffers, draw_rounds, is_eos, record
from srscode.plugins.lib.grouped_linears import LayerGroups, grouped_layers, grouped_mlp, grouped_qkv

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("llama", "qwen2", "mistral")
STATIC_ROPE_TYPES = ("default", "linear", "llama3", None)
PROBE = 128  # top-k tokens examined before the (rare, on trained models) rejection sampler
REJECTION_ROUNDS = 4  # draws per row before a full sort (each accepted with prob >= top_p)
WINDOW = 128  # attention reads the cache in windows of this many columns
# Packed linears that read the same input (q/k/v, gate/up) run as one GEMM (see
# _packed_group). False: one GEMM per layer (the baseline benchmarks/cpu_generate.py compares).
GROUP_PACKED = True
ROW_BUCKET = 16  # rows are padded to a multiple of this so graphs are reused
WIDTH_BUCKET = 32  # prompt widths are padded to a multiple of this
PREFILL_TOKENS = 16384  # prompts per prefill chunk are bounded by this many tokens
PREFILL_PAD_SHARE = 0.125  # a prefill chunk's padding stays under this share of its tokens (see prefill_groups)
PREFILL_GROUPED = True  # False: chunks in batch order at the batch's width (what the loop did before; a benchmark's baseline)
STOP_CHECK_EVERY = 16  # decode steps between stop-string checks (a host sync and a decode)
STOP_MARGIN = 8  # earlier tokens re-decoded at each check, for stop strings spanning two checks
FIRST_DRAW = True  # compiled decoders sample through the fused first draw (False: top-k first, a benchmark's baseline)
DRAW_SPLITS = 4  # slices per row in the first draw's reductions (1: whole rows; see first_draw; 4 measured best)
DRAW_IN_STEP = True  # compiled decoders capture the draw with the step (False: drawn after it, a benchmark's baseline)
GIVE_OUT_EARLY = True  # rows are given out at each check as they finish (False: all at the end, a benchmark's baseline)
COMPILED_PREFILL = True  # compiled decoders prefill through the compiled pieces too (False: eager modules, a benchmark's baseline)
DECODE_ATTENTION = "sdpa"  # decode attention: "sdpa" (the backend's fused kernel) or "bmm" (two batched GEMMs)
COMPILE_BACKEND: Any = "inductor"  # torch.compile's backend when none is given (tests count graphs with theirs)


# ----------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SamplingSpec:
    """What to draw: greedy when ``temperature == 0`` (or ``do_sample`` False upstream)."""

    temperature: float = 1.0
    top_p: float = 1.0
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0
    min_new_tokens: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def top_p_candidates(probs: Any, top_p: float, probe: int = PROBE) -> list[tuple[Any, Any, Any]]:
    """The top-p restriction of ``probs`` [R, V] as ``[(rows, token_ids, weights)]``.

    Kept tokens are those whose mass strictly above them (descending order) is below
    ``top_p``, which is ``TopPLogitsWarper``'s set (it removes tokens whose ascending
    cumulative probability is <= 1 - top_p, keeping at least one). ``weights`` are the
    kept probabilities (zero elsewhere), unnormalised. Rows whose top-``probe`` mass
    reaches ``top_p`` are answered from ``topk``; the others (e.g. a near-uniform
    distribution) by a full sort of those rows only.
    """
    k = min(probe, probs.shape[-1])
    vals, ids = probs.topk(k, dim=-1)
    above = vals.cumsum(-1) - vals
    weights = vals * (above < top_p)
    covered = vals.sum(-1) >= top_p
    if k == probs.shape[-1] or bool(covered.all()):
        return [(None, ids, weights)]
    rows = (~covered).nonzero().squeeze(1)
    done = covered.nonzero().squeeze(1)
    svals, sids = probs.index_select(0, rows).sort(dim=-1, descending=True)
    sabove = svals.cumsum(-1) - svals
    out = [(rows, sids, svals * (sabove < top_p))]
    if done.numel():
        out.append((done, ids.index_select(0, done), weights.index_select(0, done)))
    return out


def draw(weights: Any, generator: Any = None) -> Any:
    """One index per row of non-negative ``weights`` [R, K], with probability proportional
    to the weight: the exponential race ``argmax w_i / E_i`` (E_i ~ Exp(1)) is an exact
    categorical draw in three elementwise passes, where ``torch.multinomial`` over a
    151,936-wide row costs a cumulative sum and a search per draw."""
    import torch

    race = torch.empty_like(weights, dtype=torch.float32).exponential_(generator=generator)
    return (weights.float() / race).argmax(dim=-1)


def first_draw(logits: Any, noise: Any, inv_temperature: float, top_p: float, ban: Any) -> tuple[Any, Any]:
    """One exact draw per row of ``softmax(logits * inv_temperature + ban)`` [R, V] and whether
    it lies in the row's top-p set: ``(tokens [R], accepted [R] bool)``. ``ban`` [V] float32
    is 0, or -inf for tokens that may not be drawn (EOS before ``min_new_tokens``).

    The draw is the exponential race of :func:`draw` in log space (``argmax x_i - log E_i``
    with ``noise`` E ~ Exp(1), float32 [R, V]), so no softmax is written; a token is in
    the top-p set iff the mass strictly above it is below ``top_p`` (the set
    :func:`top_p_candidates` keeps). Accepted draws are distributed exactly as the set
    renormalised (rejection sampling), and a row is accepted with probability >= ``top_p``.
    Written for torch.compile: fused, it reads the logits and the noise a few times and
    writes nothing of their size, where the top-k path's softmax, radix top-k and draws
    each pass over a [R, V] tensor (~1.2 ms a step at 256 rows x 152k on an H100)."""
    import torch

    x = logits.float() * inv_temperature + ban
    rows, vocab = x.shape
    # The reductions run over ``splits`` slices of each row (1: whole rows), then across the
    # slices: a compiled reduction runs one program per reduced row, and 256 rows of 152k
    # leave most of a GPU's SMs idle while 256 x splits rows of 152k / splits do not. The
    # race's argmax is the first index of the largest slice maximum, as the whole row's is.
    splits = DRAW_SPLITS if DRAW_SPLITS > 1 and vocab % DRAW_SPLITS == 0 else 1
    xs = x.view(rows, splits, vocab // splits)
    race = (x - torch.log(noise)).view(rows, splits, vocab // splits)
    m = xs.amax(-1).amax(-1)[:, None, None]
    best, where_in = race.max(-1)
    part = best.argmax(-1)
    tok = part * (vocab // splits) + where_in.gather(1, part[:, None]).squeeze(1)
    xt = x.gather(1, tok[:, None])[:, :, None]
    e = torch.exp(xs - m)
    z = e.sum(-1).sum(-1)
    above = torch.where(xs > xt, e, 0.0).sum(-1).sum(-1)
    return tok, above < top_p * z


_FIRST_DRAWS: dict[Any, Callable[..., tuple[Any, Any]]] = {}


def _first_draw_rows(first: Callable[..., tuple[Any, Any]], logits: Any, spec: SamplingSpec,
                     generator: Any) -> tuple[Any, Any]:
    """``first`` on ``logits`` [R, V] with fresh noise (no token banned: the caller masked
    the logits). A single row goes in twice (its noise independent per copy; the first
    copy's draw is used): dynamo specialises a size-1 dimension, which would compile the
    function once more."""
    import torch

    rows = logits.shape[0]
    if rows == 1:
        logits = logits.repeat(2, 1)
    noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device).exponential_(generator=generator)
    _rows_dynamic(logits, noise)
    ban = torch.zeros(logits.shape[1], dtype=torch.float32, device=logits.device)
    tok, ok = first(logits, noise, 1.0 / spec.temperature, spec.top_p, ban)
    return tok[:rows], ok[:rows]


def compiled_first_draw(backend: Any = "inductor") -> Callable[..., tuple[Any, Any]]:
    """:func:`first_draw` through torch.compile, made once per process and backend (the rows
    dimension is marked dynamic at each call, so batch sizes reuse it)."""
    key = backend if isinstance(backend, str) else id(backend)
    fn = _FIRST_DRAWS.get(key)
    if fn is None:
        import torch

        opts: dict[str, Any] = dict(dynamic=False, fullgraph=True, backend=backend)
        if backend == "inductor":
            opts["mode"] = "default"
        fn = _FIRST_DRAWS[key] = torch.compile(first_draw, **opts)
    return fn


def _in_dtype(first: Callable[..., tuple[Any, Any]], dtype: Any) -> Callable[..., tuple[Any, Any]]:
    """``first`` on logits in the model's ``dtype``: the step's draw reads the head's logits
    as they are, and the prefill's (float32 copies of the same dtype's values, so the cast
    is exact) are cast back, so one compilation serves both (a float32 input would be a
    second one, ~5 s on an H100)."""

    def run(logits: Any, noise: Any, inv_temperature: float, top_p: float, ban: Any) -> tuple[Any, Any]:
        x = logits.to(dtype)
        _rows_dynamic(x)
        return first(x, noise, inv_temperature, top_p, ban)

    return run


def sample_tokens(logits: Any, spec: SamplingSpec, probe: int = PROBE, generator: Any = None, done: Any = None,
                  first: Callable[..., tuple[Any, Any]] | None = None) -> Any:
    """One token per row of ``logits`` [R, V] (float32): argmax, or temperature + top-p.

    Rows whose top-``probe`` tokens hold ``top_p`` of the mass (a trained model, nearly
    always) sample from those. The others (a flat distribution keeps most of the
    vocabulary) use rejection sampling, which needs no sort: draw from the untruncated
    distribution and accept a token iff the mass strictly above it is below ``top_p``
    (it is then in the kept set); accepted draws are distributed exactly as the kept set
    renormalised, and every draw is accepted with probability >= ``top_p``. Only the rows
    that rejected are drawn again; rows that reject ``REJECTION_ROUNDS`` draws in a row
    (probability <= (1 - top_p)^rounds) sample from the sorted distribution.

    ``generator``: the random stream to draw from (the decode loop passes its own, seeded
    per call, so sampling never touches the device's default generator, whose state a
    graph capture registers).

    ``done``: a bool [R] of rows whose token is discarded (finished or padding rows). They
    get a token from the top-k draw alone and never send the step down the rejection or
    sort path: their logits (a pad token's, zeros for padding) are often flat.

    ``first``: :func:`first_draw` (or its compiled form) to draw every row from its whole
    distribution first, rows outside the top-p set drawing again the same way (up to
    ``REJECTION_ROUNDS`` draws), and only rows that rejected every draw taking the path
    above (exact: a draw is accepted exactly when it is in the set, and the last resort
    samples the same set)."""
    import torch

    if spec.greedy:
        return logits.argmax(dim=-1)
    if first is not None:
        tok, ok = _first_draw_rows(first, logits, spec, generator)
        if done is not None:
            ok = ok | done
        # rows outside the set draw again, through the same function on those rows alone
        # (each round accepts a row with probability >= top_p); a top-k path on a handful of
        # rows costs as much as on all of them (the radix top-k's passes), this does not
        for drawn in range(1, REJECTION_ROUNDS + 1):
            if bool(ok.all()):
                return tok
            again = (~ok).nonzero().squeeze(1)
            if drawn == REJECTION_ROUNDS:
                break
            sub_tok, sub_ok = _first_draw_rows(first, logits.index_select(0, again), spec, generator)
            tok = tok.index_copy(0, again, sub_tok)
            ok = ok.index_copy(0, again, sub_ok)
        return tok.index_copy(0, again, sample_tokens(logits.index_select(0, again), spec, probe, generator))
    probs = torch.softmax(logits / spec.temperature, dim=-1)
    if spec.top_p >= 1.0:
        return draw(probs, generator)
    top_p = spec.top_p
    k = min(probe, probs.shape[-1])
    vals, ids = probs.topk(k, dim=-1)
    weights = vals * ((vals.cumsum(-1) - vals) < top_p)
    out = ids.gather(1, draw(weights, generator).unsqueeze(1)).squeeze(1)
    covered = vals.sum(-1) >= top_p
    if done is not None:
        covered |= done
    if k == probs.shape[-1] or bool(covered.all()):
        return out
    pending = (~covered).nonzero().squeeze(1)
    for _ in range(REJECTION_ROUNDS):
        sub = probs.index_select(0, pending)
        picked = draw(sub, generator)
        drawn_p = sub.gather(1, picked.unsqueeze(1))
        accept = torch.where(sub > drawn_p, sub, 0.0).sum(-1) < top_p
        out.index_copy_(0, pending, torch.where(accept, picked, out.index_select(0, pending)))
        pending = pending[~accept]
        if pending.numel() == 0:
            return out
    for rows, cand, w in top_p_candidates(probs.index_select(0, pending), top_p, probe):
        pick = cand.gather(1, draw(w, generator).unsqueeze(1)).squeeze(1)
        out.index_copy_(0, pending if rows is None else pending.index_select(0, rows), pick)
    return out


# ----------------------------------------------------------------------------- support


def _rope_types(config: Any) -> set[Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if not isinstance(params, dict):
        return {None}
    if "rope_type" in params or "type" in params:
        return {params.get("rope_type", params.get("type"))}
    nested = [v for v in params.values() if isinstance(v, dict)]
    return {v.get("rope_type", v.get("type")) for v in nested} or {None}


def causal_lm_of(model: Any) -> Any:
    """The transformers ``*ForCausalLM`` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def unsupported_reason(model: Any, total_len: int) -> str | None:
    """Why the fast loop cannot run ``model`` for sequences of ``total_len`` tokens, or None."""
    lm = causal_lm_of(model)
    config = getattr(lm, "config", None)
    mtype = getattr(config, "model_type", None)
    if mtype not in SUPPORTED_TYPES:
        return f"model_type {mtype!r} is not one of {', '.join(SUPPORTED_TYPES)}"
    inner = getattr(lm, "model", None)
    for attr in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(inner, attr):
            return f"{type(lm).__name__}.model has no {attr}"
    if not hasattr(lm, "lm_head"):
        return f"{type(lm).__name__} has no lm_head"
    window = getattr(config, "sliding_window", None)
    sliding = mtype == "mistral" or "sliding_attention" in (getattr(config, "layer_types", None) or ())
    if sliding and window is not None and window < total_len:
        return f"sliding window {window} < {total_len} tokens"
    bad = _rope_types(config) - set(STATIC_ROPE_TYPES)
    if bad:
        return f"rope type {sorted(map(str, bad))} depends on the sequence length"
    return None


# ----------------------------------------------------------------------------- the model


def prefill_groups(lengths: Sequence[int], budget: int | None = None,
                   pad_share: float | None = None) -> list[list[int]]:
    """Prompt indices in prefill chunks: by length, each chunk at most ``budget`` tokens
    once padded to its longest prompt, and closed before its padding would pass
    ``pad_share`` of them. Why: a chunk is computed at its longest prompt's width, and a
    batch padded to its longest prompt wasted 40 % of the prefill on 64 starter prompts
    (13,534 real tokens at width 352); on a CPU the prefill is compute-bound and was 73 %
    of such a call."""
    budget = PREFILL_TOKENS if budget is None else budget
    pad_share = PREFILL_PAD_SHARE if pad_share is None else pad_share
    order = sorted(range(len(lengths)), key=lambda j: lengths[j])
    groups: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for j in order:
        n = max(int(lengths[j]), 1)
        padded = (len(cur) + 1) * n
        if cur and (padded > budget or padded - real - n > pad_share * padded):
            groups.append(cur)
            cur, real = [], 0
        cur.append(j)
        real += n
    if cur:
        groups.append(cur)
    return groups


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _rotate(q: Any, k: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """Rotary embedding as Llama/Qwen2/Mistral apply it (rotate-half); cos/sin [B, T, D]."""
    import torch

    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rot(x: Any) -> Any:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def _own_code(method: Any) -> Any:
    """``method`` bound to a copy of its code object. Dynamo keeps compiled entries per code
    object, and each entry guards on what its trace read (the family's constants, the
    adapter's name): with the class's shared code every model in a process would add
    entries to one list and, past dynamo's recompile limit (8), silently run eagerly. A
    family's own code keeps its entries to its own model (see :func:`family_for`)."""
    import types

    f = method.__func__
    code = types.FunctionType(f.__code__.replace(), f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    return types.MethodType(code, method.__self__)


def _rows_dynamic(*tensors: Any, dims: Sequence[int] = (0,)) -> None:
    """Mark ``dims`` of a compiled piece's inputs dynamic, by default dim 0 (the rows): one
    compilation serves every batch size (rows are multiples of ``ROW_BUCKET``, never the 0/1
    dynamo specialises), where static shapes recompiled per row count and, past the
    recompile limit, fell back to eager. The prefill marks its prompts and width (0, 1)."""
    import torch

    for t in tensors:
        for d in dims:
            torch._dynamo.maybe_mark_dynamic(t, d)


def _plain_lora_adapters(layer: Any) -> list[str] | None:
    """The active adapters of a peft LoRA linear whose forward is base + scaling * B A x,
    or None where it is not: adapters disabled or already merged, dropout active (training
    mode), an adapter variant (DoRA) or a LoRA bias, or no active adapter on this layer."""
    if getattr(layer, "disable_adapters", True) or getattr(layer, "merged", True) or layer.training:
        return None
    names = [a for a in layer.active_adapters if a in layer.lora_A]
    if not names or any(a in getattr(layer, "lora_variant", {}) or layer.lora_bias.get(a, False) for a in names):
        return None
    return names


def _merged_lora_weight(layer: Any) -> Any:
    """A peft LoRA linear's weight with its active adapters merged (base + each adapter's
    ``get_delta_weight``, peft's own merge formula), or None where merging would not give
    its forward (see :func:`_plain_lora_adapters`)."""
    import torch

    names = _plain_lora_adapters(layer)
    if names is None:
        return None
    with torch.no_grad():
        weight = layer.base_layer.weight
        delta = sum(layer.get_delta_weight(a).to(torch.float32) for a in names)
        return (weight.to(torch.float32) + delta).to(weight.dtype)


def _stacked_lora(layer: Any) -> tuple[Any, Any, Any] | None:
    """For a plain LoRA linear (else None): its base weight [N, K], the active adapters' A
    rows [r, K] and their B columns side by side with the scaling folded in, [N, r]. The A
    rows are packed stacked under the base, so ``y = x [W; A]^T`` and the layer's output is
    ``y[:, :N] + y[:, N:] up^T``.

    For a packer that rounds the weights (bf16 copies of fp32 ones). Merged into the base,
    a delta smaller than the base's rounding step (a young adapter's) would be mostly
    rounded away; kept as the product B (A x), it is rounded relative to itself (~1 % of
    the delta in bf16). Stacked, A x comes out of the base's own packed GEMM, so a step
    costs one extra [R, r] x [r, N] product instead of two GEMMs beside it."""
    import torch

    names = _plain_lora_adapters(layer)
    if names is None:
        return None
    with torch.no_grad():
        weight = layer.base_layer.weight
        a = torch.cat([layer.lora_A[n].weight.to(weight.dtype) for n in names])
        up = torch.cat([layer.lora_B[n].weight.to(weight.dtype) * layer.scaling[n] for n in names], dim=1)
        return weight, a, up


@dataclass
class _PackTarget:
    """One linear layer whose forward the packed path replaces."""

    module: Any
    make: Callable[[], Any]  # its weight, or (weight, A, up) (see _stacked_lora): made when packed
    rows: int  # output features
    rank: int  # A rows stacked under the weight (0: none)
    in_features: int
    bias: Any


def _packed_group(packer: Any, members: list[_PackTarget]) -> Callable[[Any], Any]:
    """One packed GEMM for layers that read the same input (q/k/v; gate/up): their weights
    (and stacked A rows) concatenated, the adapters' ``up`` as one block-diagonal product
    after it; ``x -> [..., sum of rows]``. Why: on the CPU, at the demo's 15 rows, a GEMM
    call's overhead rivals its work; q/k/v as one call took 0.086 ms against 0.145 as three
    (bf16, SmolLM2's shapes), gate/up 0.19 against 0.24 (2-core AMD EPYC)."""
    import torch
    import torch.nn.functional as F

    weights, stacked, ups = [], [], []
    for t in members:
        made = t.make()
        w, a, up = made if isinstance(made, tuple) else (made, None, None)
        weights.append(w)
        if a is not None:
            stacked.append(a)
        ups.append(up)
    n = sum(t.rows for t in members)
    with torch.no_grad():
        packed = packer.pack(torch.cat(weights + stacked) if len(weights) + len(stacked) > 1 else weights[0])
        up = None
        if stacked:  # block-diagonal: each layer's B reads only its own A rows
            up = weights[0].new_zeros(n, sum(a.shape[0] for a in stacked))
            row = col = 0
            for t, u in zip(members, ups):
                if u is not None:
                    up[row:row + t.rows, col:col + u.shape[1]] = u
                    col += u.shape[1]
                row += t.rows
        biases = [t.bias for t in members]
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat([b.detach() if b is not None else weights[0].new_zeros(t.rows) for t, b in zip(members, biases)])
    del weights, stacked, ups

    def run(x: Any) -> Any:
        if up is None:
            return packer.linear(x, packed, bias)
        y = packer.linear(x, packed)
        return y[..., :n] + F.linear(y[..., n:], up, bias)

    return run


def _member_forward(run: Callable[[Any], Any], rows: list[int], i: int, stash: dict) -> Callable[..., Any]:
    """Layer ``i`` of a packed group: the group's GEMM runs once per input, whichever member
    asks first, and each member takes its slice (the slices are dropped once all are taken,
    so a prefill's outputs are not kept)."""

    def forward(x: Any, *args: Any, **kwargs: Any) -> Any:
        if stash.get("x") is not x or i not in stash["left"]:
            stash.update(x=x, parts=run(x).split(rows, dim=-1), left=set(range(len(rows))))
        stash["left"].discard(i)
        out = stash["parts"][i]
        if not stash["left"]:
            stash.clear()
        return out

    return forward


class LlamaFamily:
    """The model's own modules, called for prefill (many tokens) and decode (one)."""

    def __init__(self, model: Any, compile: bool = False, compile_backend: Any = "inductor"):
        lm = causal_lm_of(model)
        self.lm = lm
        self.inner = lm.model
        self.layers = list(lm.model.layers)
        attn = self.layers[0].self_attn
        config = lm.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(attn, "head_dim", None) or config.hidden_size // self.heads
        self.group = self.heads // self.kv_heads
        self.scaling = float(getattr(attn, "scaling", self.head_dim**-0.5))
        param = next(lm.parameters())
        self.dtype = param.dtype
        self.device = param.device
        # The decode step's per-layer pieces around attention. Eager: the model's modules
        # one kernel at a time (~50 small kernels per layer, which bounds the step on an
        # H100 even inside a device graph). Compiled *regionally*: each piece is one
        # function of (layer module, tensors), and dynamo treats an inlined module's
        # parameters as inputs (``inline_inbuilt_nn_modules``), so one artifact serves
        # every layer; attention (whose window grows) stays outside, so windows never
        # recompile. Inductor's own cudagraphs stay off (mode "default"): the step is
        # captured whole by the backend's GraphRunner, whose warm-up runs the compilation.
        self.pre, self.post, self.head = self._pre, self._post, self._head
        self.compiled = bool(compile)
        if compile:
            import torch

            opts = dict(dynamic=False, fullgraph=False, backend=compile_backend)
            if compile_backend == "inductor":
                opts["mode"] = "default"
            self.pre = torch.compile(_own_code(self._pre), **opts)
            self.post = torch.compile(_own_code(self._post), **opts)
            self.head = torch.compile(_own_code(self._head), **opts)

    @contextlib.contextmanager
    def packed_linears(self, packer: Any) -> Iterator[None]:
        """Route the base linear layers (q/k/v/o, MLP, lm_head) through ``packer``'s packed
        weights while decoding (see :mod:`srscode.hardware.packing`). A peft LoRA layer whose
        active adapters are plain LoRA is packed with them merged (W + scaling * B A, what
        peft's merge computes), so the step runs one GEMM instead of three per layer, unless
        the packer rounds the weights (bf16 copies of fp32 ones): then the adapter's A is
        stacked under the base (see :func:`_stacked_lora`) and its B applied after; others
        (adapters disabled, DoRA, a LoRA bias) keep their adapter path around a packed base.
        A layer's q/k/v, and its gate/up, are packed as one GEMM each (:func:`_packed_group`).
        The packed copies are made on entry (one group at a time) and freed on exit, so they
        never sit beside the trainer's memory, and the modules are unchanged afterwards."""
        groups = self._pack_groups(getattr(packer, "rounds", lambda w: False))
        itemsize = (getattr(packer, "dtype", None) or self.dtype).itemsize  # the copies' dtype
        nbytes = sum((t.rows + t.rank) * t.in_features for g in groups for t in g) * itemsize
        fits = getattr(packer, "fits", None)
        if callable(fits) and not fits(nbytes):
            log.info("fast decode: %.1f GB of packed weights would not fit in memory; decoding with F.linear", nbytes / 1e9)
            groups = []
        patched = []
        try:
            for group in groups:
                run = _packed_group(packer, group)  # packs one group at a time: its fp32 copies only
                if len(group) == 1:
                    forwards = [lambda x, *args, run=run, **kwargs: run(x)]
                else:
                    rows, stash = [t.rows for t in group], {}
                    forwards = [_member_forward(run, rows, i, stash) for i in range(len(group))]
                for t, forward in zip(group, forwards):
                    t.module.forward = forward  # an instance attribute: nn.Module.__call__ finds it first
                    patched.append(t.module)
            yield
        finally:
            for m in patched:
                del m.forward

    def _pack_groups(self, rounds: Callable[[Any], bool]) -> list[list[_PackTarget]]:
        """The linear layers to pack, grouped by shared input: each layer's q/k/v, its
        gate/up, then every other linear (o, down, lm_head) alone."""
        import torch

        targets: dict[int, _PackTarget] = {}
        done: set[int] = set()
        for layer in self.layers:
            for name, m in layer.named_modules():
                if id(m) in done or "lora_" in name:
                    continue
                base = getattr(m, "base_layer", None)
                names = _plain_lora_adapters(m) if type(base) is torch.nn.Linear else None
                if names is not None:
                    stacked = rounds(base.weight)  # rounded copies keep the adapter apart
                    rank = sum(m.lora_A[a].weight.shape[0] for a in names) if stacked else 0
                    make = functools.partial(_stacked_lora if stacked else _merged_lora_weight, m)
                    targets[id(m)] = _PackTarget(m, make, base.out_features, rank, base.in_features, base.bias)
                    done.add(id(base))
                elif type(m) is torch.nn.Linear:
                    targets[id(m)] = _PackTarget(m, functools.partial(getattr, m, "weight"), m.out_features, 0,
                                                 m.in_features, m.bias)
        head = self.lm.lm_head
        if type(head) is torch.nn.Linear:
            targets[id(head)] = _PackTarget(head, functools.partial(getattr, head, "weight"), head.out_features, 0,
                                            head.in_features, head.bias)
        groups = []
        for layer in self.layers if GROUP_PACKED else ():
            attn, mlp = layer.self_attn, layer.mlp
            for owner, names in ((attn, ("q_proj", "k_proj", "v_proj")), (mlp, ("gate_proj", "up_proj"))):
                members = [targets.get(id(getattr(owner, n, None))) for n in names]
                if all(members) and len({t.in_features for t in members}) == 1:
                    groups.append(members)
                    for t in members:
                        del targets[id(t.module)]
        return groups + [[t] for t in targets.values()]

    def uncompile(self) -> None:
        """Back to the eager pieces (after a compiler failure)."""
        self.pre, self.post, self.head = self._pre, self._post, self._head
        self.compiled = False

    def _pre(self, layer: Any, h: Any, cos: Any, sin: Any, qkv: Any = None, qkv_bias: Any = None) -> tuple[Any, Any, Any]:
        """Input norm, q/k/v projections and rotary of one layer, for the decode step and the
        prefill (``qkv``: its grouped q/k/v weight, see :mod:`.grouped_linears`)."""
        x = layer.input_layernorm(h)
        b, t, _ = x.shape
        a = layer.self_attn
        if qkv is None:
            q, k, v = a.q_proj(x), a.k_proj(x), a.v_proj(x)
        else:  # one GEMM (see grouped_linears)
            kv = self.kv_heads * self.head_dim
            q, k, v = grouped_qkv(a, x, qkv, qkv_bias, (self.heads * self.head_dim, kv, kv))
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        return _rotate(q, k, cos, sin) + (v,)

    def _post(self, layer: Any, h: Any, o: Any, gate_up: Any = None, gate_up_bias: Any = None) -> Any:
        """o_proj + residual, post-attention norm, MLP + residual; ``o`` [R, T, heads x D], the
        attention's output (``gate_up``: the MLP's grouped gate/up weight)."""
        h = h + layer.self_attn.o_proj(o)
        x = layer.post_attention_layernorm(h)
        return h + (layer.mlp(x) if gate_up is None else grouped_mlp(layer.mlp, x, gate_up, gate_up_bias))

    def _head(self, h: Any) -> Any:
        """Final norm and lm_head, logits in the model dtype: the draw captured with the step
        casts them as it reads them (a float32 copy of [R, V] would be written and read
        again each step: 155 MB at 256 rows x 152k); the loop casts where it samples outside."""
        return self.lm.lm_head(self.inner.norm(h))[:, 0]

    def prefill(self, ids: Any, mask: Any, sink: Callable[[int, Any, Any], None],
                groups: Sequence[LayerGroups] | None = None) -> Any:
        """Run prompts ``ids`` [P, W] (left-padded, ``mask`` [P, W]); hand each layer's K/V
        [P, kv_heads, W, D] to ``sink(layer, k, v)``; return last-position logits [P, V] fp32.

        Compiled (``COMPILED_PREFILL``), the layers' pieces around attention are the decode
        step's compiled ones with the prompts and their width dynamic (one more compilation
        of each, for every prompt count and width): eager, their norms, rotary, activation
        and casts were half the prefill's device time on an H100 (233 of 475 ms for 256
        prompts x 256 tokens of the 1.5B shape, the GEMMs 227)."""
        import torch
        import torch.nn.functional as F

        p, w = ids.shape
        compiled = self.compiled and COMPILED_PREFILL
        pre, post = (self.pre, self.post) if compiled else (self._pre, self._post)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self.inner.embed_tokens(ids)
        cos, sin = self.inner.rotary_emb(h, pos)
        causal = torch.ones(w, w, dtype=torch.bool, device=ids.device).tril()
        # every query sees itself, so padded positions stay finite (their K/V are masked
        # for everyone else); otherwise a fully masked row would give NaN K/V downstream
        allowed = causal & (mask.bool()[:, None, :] | torch.eye(w, dtype=torch.bool, device=ids.device))
        bias = torch.zeros(p, 1, w, w, dtype=h.dtype, device=ids.device)
        bias.masked_fill_(~allowed[:, None], torch.finfo(h.dtype).min)
        for i, layer in enumerate(self.layers):
            g = groups[i] if groups is not None else _UNGROUPED
            if compiled:
                _rows_dynamic(h, cos, sin, dims=(0, 1))  # (a dimension of 1 is still specialised: see _prefill)
            q, k, v = pre(layer, h, cos, sin, g.qkv, g.qkv_bias)
            sink(i, k, v)
            if self.group > 1:
                k = k.repeat_interleave(self.group, dim=1)
                v = v.repeat_interleave(self.group, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scaling).transpose(1, 2).reshape(p, w, -1)
            if compiled:
                _rows_dynamic(h, o, dims=(0, 1))
            h = post(layer, h, o, g.gate_up, g.gate_up_bias)
        h = h[:, -1:].contiguous()  # the decode step's layout: the compiled head guards on strides
        if compiled:
            _rows_dynamic(h)
        return (self.head if compiled else self._head)(h).float()

    def decode(self, cache: "DecodeBuffers", window: int, groups: Sequence[LayerGroups] | None = None) -> Any:
        """One token per row from ``cache``'s input buffers; K/V written at column
        ``cache.column``; attention over the first ``window`` columns. Logits [R, V].
        ``groups``: each layer's grouped weights (:func:`.grouped_linears.grouped_layers`)."""

        r = cache.tokens.shape[0]
        h = self.inner.embed_tokens(cache.tokens[:, None])
        cos, sin = self.inner.rotary_emb(h, cache.positions[:, None])
        cache.bias.index_fill_(3, cache.column, 0.0)  # the new column becomes visible
        bias = cache.bias[..., :window]
        if self.compiled:
            _rows_dynamic(h, cos, sin)
        for i, layer in enumerate(self.layers):
            g = groups[i] if groups is not None else _UNGROUPED
            q, k, v = self.pre(layer, h, cos, sin, g.qkv, g.qkv_bias)
            kc, vc = cache.k[i], cache.v[i]
            kc.index_copy_(2, cache.column, k)
            vc.index_copy_(2, cache.column, v)
            # [R, heads, 1, D] -> [R, kv_heads, group, D]: the group's query heads become
            # query positions against their shared K/V (no repeat_kv copy)
            qg = q.reshape(r, self.kv_heads, self.group, self.head_dim)
            o = decode_attention(qg, kc[:, :, :window], vc[:, :, :window], bias, self.scaling)
            o = o.reshape(r, 1, self.heads * self.head_dim)  # a view: the group heads are the query heads in order
            if self.compiled:
                _rows_dynamic(h, o)
            h = self.post(layer, h, o, g.gate_up, g.gate_up_bias)
        if self.compiled:
            _rows_dynamic(h)
        return self.head(h)


_UNGROUPED = LayerGroups()
FAMILIES_PER_MODEL = 4  # adapter names remembered per model (the hf generator uses one)


def active_adapters(model: Any) -> tuple[str, ...]:
    """A peft model's active adapter names (read by the compiled pieces' guards); () for a
    plain model."""
    if not hasattr(model, "peft_config"):
        return ()
    names = getattr(model, "active_adapters", ())
    return tuple(names() if callable(names) else names)


def family_for(model: Any, compile: bool = False, compile_backend: Any = "inductor") -> LlamaFamily:
    """The process's :class:`LlamaFamily` for ``model`` (its causal LM), made once.

    Compiled pieces are built once per process per model, adapter name and backend and
    kept across ``generate`` calls, rounds and adapter reloads: dynamo's guards read the
    model's structure, its parameters' shapes and dtypes, and the active adapter's name,
    none of which changes when a round loads new LoRA weights under the same name (the
    ``hf`` generator's one slot), and the rows dimension is dynamic, so a new batch size
    does not recompile either. Before, every decoder compiled again (~5 s per call on an
    H100), which is why ``compile`` was off by default. A handful of adapter names per
    model are kept (``FAMILIES_PER_MODEL``, least recently used out), each with its own
    code, so a caller cycling through many names never meets dynamo's recompile limit."""
    lm = causal_lm_of(model)
    # kept on the model itself: a family holds the model, so a cache keyed by it elsewhere
    # would keep every model alive
    per_model = lm.__dict__.get("_srscode_fast_families")
    if per_model is None:
        per_model = {}
        object.__setattr__(lm, "_srscode_fast_families", per_model)
    backend = compile_backend if isinstance(compile_backend, str) else id(compile_backend)
    key = (bool(compile), backend, active_adapters(model) if compile else ())
    fam = per_model.pop(key, None)
    if fam is None:
        fam = LlamaFamily(model, compile=compile, compile_backend=compile_backend)
    per_model[key] = fam  # most recently used last
    while len(per_model) > FAMILIES_PER_MODEL:
        per_model.pop(next(iter(per_model)))
    return fam


def decode_attention(q: Any, k: Any, v: Any, bias: Any, scale: float, how: str | None = None) -> Any:
    """One query position per group head: ``q`` [R, kv_heads, group, D] against ``k``/``v``
    [R, kv_heads, W, D] with the additive ``bias`` [R, 1, 1, W]; [R, kv_heads, group, D].

    ``sdpa``: the backend's fused kernel (on CUDA, cuDNN's flash kernel, made for blocks of
    many queries: it read the cache at about a third of HBM bandwidth on an H100 at these
    shapes). ``bmm``: scores by one batched GEMM, an fp32 softmax, values by another: each
    reads the cache once as a plain batched matrix product (``DECODE_ATTENTION`` picks the
    default; benchmarks/generate.py measures both)."""
    import torch
    import torch.nn.functional as F

    if (how or DECODE_ATTENTION) == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale + bias.float()
    return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)


@dataclass
class DecodeBuffers:
    """Static per-batch state a captured step reads and writes (fixed addresses)."""

    k: list[Any]
    v: list[Any]
    bias: Any  # [R, 1, 1, L] additive mask in the model dtype
    tokens: Any  # [R] the token each row feeds this step
    positions: Any  # [R] its rotary position
    column: Any  # [1] the cache column it is written to
    out: Any  # [R, L] the tokens decoded (pad after a row's end)
    finished: Any  # [R] rows that ended (EOS, a stop string, or padding rows)
    lengths: Any  # [R] each row's length (the call's max_new_tokens until it ends)
    count: Any  # [1] tokens recorded so far (the index the next captured draw writes)
    graphs: dict[Any, Callable[[], Any]] = field(default_factory=dict)  # by window (and draw, see _drawn_step)
    draws: dict[float, DrawBuffers] = field(default_factory=dict)  # by top_p: the captured draws' inputs
    eos: dict[tuple[int, ...], Any] = field(default_factory=dict)  # the EOS ids the captured steps compare with

    @classmethod
    def allocate(cls, fam: LlamaFamily, rows: int, length: int) -> "DecodeBuffers":
        import torch

        shape = (rows, fam.kv_heads, length, fam.head_dim)
        dev, dt = fam.device, fam.dtype
        return cls(
            k=[torch.zeros(shape, dtype=dt, device=dev) for _ in fam.layers],
            v=[torch.zeros(shape, dtype=dt, device=dev) for _ in fam.layers],
            bias=torch.full((rows, 1, 1, length), torch.finfo(dt).min, dtype=dt, device=dev),
            tokens=torch.zeros(rows, dtype=torch.long, device=dev),
            positions=torch.zeros(rows, dtype=torch.long, device=dev),
            column=torch.zeros(1, dtype=torch.long, device=dev),
            out=torch.zeros(rows, length, dtype=torch.long, device=dev),
            finished=torch.zeros(rows, dtype=torch.bool, device=dev),
            lengths=torch.zeros(rows, dtype=torch.long, device=dev),
            count=torch.zeros(1, dtype=torch.long, device=dev),
        )

    def eos_ids(self, ids: Sequence[int]) -> Any:
        """``ids`` as a tensor kept with the buffers (a captured step reads its address)."""
        import torch

        key = tuple(sorted(set(ids)))
        if key not in self.eos:
            self.eos[key] = torch.tensor(key, dtype=torch.long, device=self.tokens.device)
        return self.eos[key]

    def state(self) -> list[Any]:
        """What a captured drawn step writes besides the KV cache (see FastDecoder._captured)."""
        return [self.bias, self.tokens, self.positions, self.column, self.out, self.finished, self.lengths, self.count]

    @property
    def shape(self) -> tuple[int, int]:
        return self.bias.shape[0], self.bias.shape[-1]


# ----------------------------------------------------------------------------- the loop


@dataclass
class DecodeResult:
    """Per row: the generated ids (pad after EOS, ``max_new_tokens`` long) and the count
    of generated tokens (through EOS, or through the token completing a stop string)."""

    tokens: list[list[int]]
    lengths: list[int]
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class DecodedRows:
    """Some finished rows of a call (:meth:`FastDecoder.stream`): their indices among the
    call's real rows, generated ids (pad after the end, ``max_new_tokens`` long) and lengths."""

    rows: list[int]
    tokens: list[list[int]]
    lengths: list[int]


class _Checks:
    """What the loop does every ``STOP_CHECK_EVERY`` tokens, where it reads the device
    anyway: progress, stop strings (rows that completed one end), and the rows that ended
    given out (``GIVE_OUT_EARLY``). Calling it with the tokens made so far yields the rows
    given out then (none between checks)."""

    def __init__(self, out: Any, finished: Any, lengths: Any, real: int, spec: SamplingSpec,
                 stop_check: Callable[[list[list[int]]], list[int | None]] | None,
                 on_step: Callable[[int], None] | None):
        self.out, self.finished, self.lengths, self.real, self.spec = out, finished, lengths, real, spec
        self.stop_check, self.on_step = stop_check, on_step
        self.stop_at: dict[int, int] = {}
        self.given: set[int] = set()

    def __call__(self, made: int) -> Iterator["DecodedRows"]:
        if made % STOP_CHECK_EVERY:
            return
        if self.on_step is not None:
            self.on_step(made)  # progress within a batch (a batch can take minutes on a CPU)
        if self.stop_check is not None:
            # the tail since the last check (plus a margin for a stop string spanning it)
            # decides early finishing; the exact end is found on the full text when given out
            tail = max(0, made - STOP_CHECK_EVERY - STOP_MARGIN)
            FastDecoder._check_stops(self.out[: self.real, tail:made], self.finished, self.stop_at, self.stop_check)
        if GIVE_OUT_EARLY:
            done = [r for r, f in enumerate(self.finished[: self.real].tolist()) if f and r not in self.given]
            if done:
                self.given.update(done)
                yield FastDecoder._rows_out(self.out, self.lengths, done, made, self.spec.pad_id, self.stop_check)


class FastDecoder:
    """Decode batches of left-padded prompts with ``n`` candidates each.

    One instance serves one ``generate`` call: its device graphs are captured against the
    adapter active during that call (peft switches adapters in Python, so a graph
    captured earlier would replay the old adapter's kernels and tensors) and freed with
    its buffers, so the KV cache never outlives the call (training needs the memory).
    Buffers and graphs are reused across batches of the same bucketed shape; the compiled
    pieces (``compile``) outlive it, per process.
    """

    def __init__(self, model: Any, graph_runner: Any = None, probe: int = PROBE, seed: int | None = None,
                 compile: bool = False, compile_backend: Any = None, linear_packer: Any = None,
                 group_linears: bool = False):
        """``compile``: the decode step's per-layer pieces around attention (and the final
        norm + lm_head) through ``torch.compile``, regionally (see :class:`LlamaFamily`);
        compiled once per process (:func:`family_for`). ``compile_backend``: torch.compile's
        backend (default ``COMPILE_BACKEND``; tests count compilations with one of their own).
        ``linear_packer``: the backend's :class:`~srscode.hardware.packing.LinearPacker`
        (CPU) for the base weights during each call, or None; unused when compiled (the
        compiler lays out its own GEMMs). ``group_linears``: where no packer is used, each
        layer's q/k/v and gate/up run as one GEMM each, through copies of their weights
        made at this decoder's first call where they fit (see :mod:`.grouped_linears`)."""
        import torch

        backend = COMPILE_BACKEND if compile_backend is None else compile_backend
        self.fam = family_for(model, compile=compile, compile_backend=backend)
        self.runner = graph_runner
        self.packer = linear_packer
        self.group_linears = group_linears
        self.groups: list[LayerGroups] | None = None  # made at the first call (the graphs read them)
        self._grouped = False
        self.probe = probe
        self.buffers: DecodeBuffers | None = None
        self.stats: dict[str, float] = {}  # the last call's (prefill_s, decode_s, steps, ...)
        # Sampling draws from a generator of its own on the model's device, seeded from
        # ``seed`` or else from torch's (CPU) default stream, so ``torch.manual_seed`` before
        # a call still makes it reproducible. Not the device's default generator: a graph
        # capture registers that one's state, and a capture that fails part-way leaves it
        # refusing eager draws ("Offset increment outside graph capture").
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.rng = torch.Generator(device=self.fam.device)
        self.rng.manual_seed(seed)
        # compiled decoders sample through the fused first draw, compiled once per process
        # (its first call compiles; see _sample for a compiler failure)
        self.first = _in_dtype(compiled_first_draw(backend), self.fam.dtype) if self.fam.compiled and FIRST_DRAW else None
        self._first_ran = False

    def _sample(self, logits: Any, spec: SamplingSpec, done: Any) -> Any:
        if self.first is not None and not self._first_ran and not spec.greedy:
            state = self.rng.get_state()
            try:  # the first call compiles: a compiler failure leaves the eager sampler
                tok = sample_tokens(logits, spec, self.probe, self.rng, done=done, first=self.first)
                self._first_ran = True
                return tok
            except Exception as exc:  # noqa: BLE001 - the eager sampler still samples
                log.warning("fast decode: torch.compile of the sampler failed (%s: %s); sampling without it",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self.first = None
                self.rng.set_state(state)  # the eager sampler draws what it would have drawn
        return sample_tokens(logits, spec, self.probe, self.rng, done=done, first=self.first)

    def _resolved(self, tok: Any, ok: Any, logits: Any, spec: SamplingSpec, ban: Any, stats: dict) -> Any:
        """``tok`` with the rows the captured draw left unresolved (``ok`` False: rejected
        every draw in the graph; the loop calls this only when some are) sampled exactly
        from their top-p sets, outside the graph."""
        rows = (~ok).nonzero().squeeze(1)
        sub = logits.index_select(0, rows).float()
        if ban is not None:
            sub.index_fill_(1, ban, float("-inf"))
        stats["draw_fallback_rows"] += int(rows.numel())
        return tok.index_copy(0, rows, sample_tokens(sub, spec, self.probe, self.rng))

    def _buffers(self, rows: int, length: int) -> DecodeBuffers:
        # a cache at least this long serves the batch as it is (windows never reach past the
        # batch's length), graphs included: with the generator's batches longest first, one
        # allocation and one capture per window serve a whole call of equal-row batches
        if self.buffers is None or self.buffers.shape[0] != rows or self.buffers.shape[1] < length:
            self.buffers = None  # free the old cache (and its graphs) before allocating
            self.buffers = DecodeBuffers.allocate(self.fam, rows, length)
        return self.buffers

    def release(self) -> None:
        """Free the call's buffers (KV cache, output), graphs and grouped weights now. Without
        a graph runner the stored steps are closures over the decoder and its buffers, a
        reference cycle that only Python's cyclic GC would free, the KV cache with it."""
        if self.buffers is not None:
            self.buffers.graphs.clear()
            self.buffers.draws.clear()
        self.buffers = None
        self.groups = None
        self._grouped = False

    def _make_groups(self) -> None:
        """The grouped weights, once per decoder (its graphs read their addresses)."""
        if self._grouped:
            return
        self._grouped = True
        if self.group_linears:
            from srscode.hardware.device import free_memory_bytes
            from srscode.hardware.packing import available_memory

            free = free_memory_bytes(self.fam.device)
            if free is None:  # a device whose memory is not counted apart (the CPU): the host's
                free = available_memory()
            self.groups = grouped_layers(self.fam.layers, lambda n: free is None or n <= free // 2)
            if self.groups is None:
                log.info("fast decode: grouped q/k/v and gate/up weights would not fit (or none apply); one GEMM per linear")

    def _prefill(self, ids: Any, mask: Any, sink: Callable[[int, Any, Any], None]) -> Any:
        """:meth:`LlamaFamily.prefill` with the grouped weights; where its compilation fails
        (no C++ compiler, an unsupported op) the pieces go back to eager, as for the step,
        and the prefill runs again (its sink writes are the same)."""
        import torch

        if ids.shape[0] == 1 and self.fam.compiled and COMPILED_PREFILL:
            # a group of one prompt goes in twice, its second copy dropped: dynamo specialises
            # a dimension of 1, which would compile every piece once more (mid-round, on GPU)
            def first_of(i: int, k: Any, v: Any) -> None:
                sink(i, k[:1], v[:1])

            return self._prefill(ids.repeat(2, 1), mask.repeat(2, 1), first_of)[:1]
        try:
            return self.fam.prefill(ids, mask, sink, self.groups)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - the eager pieces still prefill
            if not self.fam.compiled:
                raise
            log.warning("fast decode: torch.compile failed (%s: %s); decoding without it",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.fam.uncompile()
            return self.fam.prefill(ids, mask, sink, self.groups)

    def _step(self, buf: DecodeBuffers, window: int) -> Any:
        return self._captured(buf, window, lambda: self.fam.decode(buf, window, self.groups))

    def _drawn_step(self, buf: DecodeBuffers, window: int, spec: SamplingSpec, draws: DrawBuffers,
                    eos: Any) -> tuple[Any, Any, Any]:
        """The step, its draw and its bookkeeping as one graph (see :mod:`.drawn_step`):
        ``(logits, tokens, ok)``, ``ok`` False on live rows that rejected every draw in it
        (their token and bookkeeping are provisional). ``draws`` holds the noise, ban and
        done rows it reads (filled by the caller before each call)."""
        inv_t = 1.0 / spec.temperature
        first = self.first

        def step() -> tuple[Any, Any, Any]:
            logits = self.fam.decode(buf, window, self.groups)
            tok, ok = draw_rounds(first, logits, draws, inv_t, spec.top_p, _rows_dynamic)
            record(tok, buf, eos, spec.pad_id)
            return logits, tok, ok

        key = ("drawn", window, inv_t, spec.top_p, tuple(sorted(set(spec.eos_ids))), spec.pad_id)  # (no read of ``eos``: a sync)
        return self._captured(buf, key, step, keep=buf.state())

    def _captured(self, buf: DecodeBuffers, key: Any, step: Callable[[], Any], keep: Sequence[Any] = ()) -> Any:
        """``step()`` through the graph captured for ``key`` on ``buf`` (captured now if new).
        ``keep``: tensors ``step`` updates in place (a drawn step's bookkeeping), restored
        after each run that compiles or captures it, so the call still runs it once."""
        fn = buf.graphs.get(key)
        if fn is None:
            import time

            t0 = time.perf_counter()
            fn = step
            saved = [t.clone() for t in keep]

            def restore() -> None:
                for t, s in zip(keep, saved):
                    t.copy_(s)

            if self.fam.compiled and not buf.graphs:
                # the first step of a shape compiles (outside any capture); a compiler
                # failure (no C++ compiler, an unsupported op) leaves the eager pieces
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - the eager step still decodes
                    log.warning("fast decode: torch.compile failed (%s: %s); decoding without it",
                                type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                    self.fam.uncompile()
                restore()
            if self.runner is not None:
                try:
                    fn = self.runner.capture(step)
                except Exception as exc:  # noqa: BLE001 - a module that cannot be captured still decodes
                    log.warning("fast decode: graph capture failed (%s: %s); decoding eagerly", type(exc).__name__, exc)
                    self.runner = None
                restore()
            buf.graphs[key] = fn
            synchronize(self.fam.device)  # the warm-up runs and compilation, counted as capture time
            self.stats["capture_s"] = self.stats.get("capture_s", 0.0) + time.perf_counter() - t0
        return fn()

    def generate(self, ids: Any, mask: Any, n: int, max_new_tokens: int, spec: SamplingSpec,
                 stop_check: Callable[[list[list[int]]], list[int | None]] | None = None,
                 cache_tokens: int | None = None, on_step: Callable[[int], None] | None = None) -> DecodeResult:
        """Every row of the call at once: :meth:`stream` collected in row order."""
        real = ids.shape[0] * n
        tokens: list[list[int]] = [[] for _ in range(real)]
        lengths = [0] * real
        for part in self.stream(ids, mask, n, max_new_tokens, spec, stop_check, cache_tokens, on_step):
            for r, toks, length in zip(part.rows, part.tokens, part.lengths):
                tokens[r], lengths[r] = toks, length
        return DecodeResult(tokens, lengths, dict(self.stats))

    def stream(self, ids: Any, mask: Any, n: int, max_new_tokens: int, spec: SamplingSpec,
               stop_check: Callable[[list[list[int]]], list[int | None]] | None = None,
               cache_tokens: int | None = None, on_step: Callable[[int], None] | None = None) -> Iterator[DecodedRows]:
        """See :meth:`_stream`; the base weights packed for the call where a packer is given
        (until the stream ends or is closed). ``self.stats`` holds the call's timings after it."""
        packing = self.packer is not None and not self.fam.compiled
        if not packing:
            self._make_groups()
        with self.fam.packed_linears(self.packer) if packing else contextlib.nullcontext():
            yield from self._stream(ids, mask, n, max_new_tokens, spec, stop_check, cache_tokens, on_step)

    def _stream(
        self,
        ids: Any,
        mask: Any,
        n: int,
        max_new_tokens: int,
        spec: SamplingSpec,
        stop_check: Callable[[list[list[int]]], list[int | None]] | None = None,
        cache_tokens: int | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> Iterator[DecodedRows]:
        """``ids``/``mask`` [P, W] left-padded prompts on the model's device; rows are
        ``n`` consecutive copies of each prompt. ``stop_check(rows_tokens)`` returns, per
        row, the generated length at which a stop string completed (or None); it is
        called every ``STOP_CHECK_EVERY`` steps on unfinished rows and on each row as it is
        given out. ``cache_tokens`` (>= ``max_new_tokens``) sizes the cache for longer
        sequences than this call decodes (memory probes).

        Rows are given out as they finish, checked every ``STOP_CHECK_EVERY`` steps (the
        loop syncs there anyway), and the rest after the last step: a caller can evaluate
        the rows that ended early while the long ones still decode, so the evaluation
        after a call's last step is only that of the rows that ran longest."""
        import time

        import torch

        fam = self.fam
        dev = fam.device
        p, w0 = ids.shape
        width = _round_up(w0, WIDTH_BUCKET)
        if width != w0:  # more left padding: same positions, same result
            pad = torch.full((p, width - w0), spec.pad_id, dtype=ids.dtype, device=ids.device)
            ids = torch.cat([pad, ids], 1)
            mask = torch.cat([torch.zeros_like(pad), mask], 1)
        real = p * n
        rows = _round_up(real, ROW_BUCKET)
        length = _round_up(width + max(max_new_tokens, cache_tokens or 0), WINDOW)
        buf = self._buffers(rows, length)
        stats: dict[str, float] = {"rows": rows, "real_rows": real, "cache_len": length, "capture_s": 0.0}
        self.stats = stats

        t0 = time.perf_counter()
        # ---- prefill: once per prompt, KV rows copied to its n candidates (prefix sharing)
        mask_rows = mask.bool().repeat_interleave(n, 0)
        bias_prompt = torch.where(mask_rows, 0.0, torch.finfo(fam.dtype).min).to(fam.dtype)
        buf.bias.fill_(torch.finfo(fam.dtype).min)
        buf.bias[:real, 0, 0, :width] = bias_prompt
        buf.bias[real:, 0, 0, 0] = 0.0  # padding rows see one column, so they stay finite
        first_logits: Any = None
        if PREFILL_GROUPED:
            groups = prefill_groups(mask.long().sum(-1).tolist())
        else:
            chunk = max(1, PREFILL_TOKENS // width)
            groups = [list(range(s, min(p, s + chunk))) for s in range(0, p, chunk)]
        for group in groups:
            # prompts of similar length, computed from the first column any of them uses:
            # left padding that all of them share is never computed (its cache columns stay
            # masked for these rows, as the padding columns are)
            pick = torch.tensor(group, device=dev)
            sub_mask = mask.index_select(0, pick)
            used = sub_mask.bool().any(0).nonzero()
            # (at least two columns: a width of 1 would make dynamo specialise the compiled
            # pieces once more; the extra column is padding, masked as all padding is)
            lead = min(int(used[0]) if used.numel() else width - 1, width - 2) if PREFILL_GROUPED else 0
            rows_of = (pick[:, None] * n + torch.arange(n, device=dev)).flatten()  # the group's candidate rows

            def sink(i: int, k: Any, v: Any, rows_of: Any = rows_of, lead: int = lead) -> None:
                buf.k[i][rows_of, :, lead:width] = k.repeat_interleave(n, 0)
                buf.v[i][rows_of, :, lead:width] = v.repeat_interleave(n, 0)

            logits = self._prefill(ids.index_select(0, pick)[:, lead:], sub_mask[:, lead:], sink)
            if first_logits is None:  # padding rows keep zeros: any finite logits (their tokens are discarded)
                first_logits = torch.zeros(rows, logits.shape[1], dtype=torch.float32, device=dev)
            first_logits[rows_of] = logits.repeat_interleave(n, 0)
            del logits
        prompt_lens = mask.long().sum(-1).repeat_interleave(n, 0)
        positions = torch.zeros(rows, dtype=torch.long, device=dev)
        positions[:real] = prompt_lens
        synchronize(dev)
        stats["prefill_s"] = time.perf_counter() - t0

        # ---- decode
        t1 = time.perf_counter()
        eos = buf.eos_ids(spec.eos_ids)
        out = buf.out[:, :max_new_tokens]
        out.fill_(spec.pad_id)
        finished, lengths = buf.finished, buf.lengths
        finished.fill_(False)
        finished[real:] = True
        lengths.fill_(max_new_tokens)
        stats["draws_in_step"] = 0
        stats["draw_fallback_rows"] = 0
        check = _Checks(out, finished, lengths, real, spec, stop_check, on_step)
        # token 0, from the prefill's logits; every token goes through ``record`` (captured
        # with the step where the draw is, see _drawn_loop), which advances the next step's
        # inputs from one before the first
        buf.positions.copy_(positions - 1)
        buf.column.fill_(width - 1)
        buf.count.zero_()
        if spec.min_new_tokens > 0 and eos.numel():
            first_logits.index_fill_(1, eos, float("-inf"))
        record(self._sample(first_logits, spec, finished), buf, eos, spec.pad_id)
        # (a sampler that failed to compile there leaves self.first None: the host loop)
        in_step = DRAW_IN_STEP and self.first is not None and not spec.greedy
        loop = self._drawn_loop if in_step else self._host_loop
        steps = yield from loop(buf, spec, eos, first_logits.shape[1], width, length, max_new_tokens, check)
        synchronize(dev)
        stats["decode_s"] = time.perf_counter() - t1
        stats["steps"] = steps
        stats["rows_given_early"] = len(check.given)
        rest = [r for r in range(real) if r not in check.given]
        if rest:
            yield self._rows_out(out, lengths, rest, steps, spec.pad_id, stop_check)

    def _host_loop(self, buf: DecodeBuffers, spec: SamplingSpec, eos: Any, vocab: int, width: int, length: int,
                   max_new_tokens: int, check: _Checks) -> Iterator[DecodedRows]:
        """Tokens 1.. with sampling (or argmax) after each step's graph and the bookkeeping
        on the host (greedy decoding, eager decoders, the benchmarks' baselines). Returns
        the steps (tokens made)."""
        made = 1
        while made < max_new_tokens:
            yield from check(made)
            if bool(buf.finished.all()):
                break
            window = min(length, _round_up(width + made, WINDOW))  # token made - 1 is read at column width + made - 1
            logits = self._step(buf, window)
            logits = logits if spec.greedy else logits.float()  # argmax reads the model dtype as is
            if made < spec.min_new_tokens and eos.numel():
                logits.index_fill_(1, eos, float("-inf"))
            record(self._sample(logits, spec, buf.finished), buf, eos, spec.pad_id)
            made += 1
        return made

    def _drawn_loop(self, buf: DecodeBuffers, spec: SamplingSpec, eos: Any, vocab: int, width: int, length: int,
                    max_new_tokens: int, check: _Checks) -> Iterator[DecodedRows]:
        """Tokens 1.. with each step's draw *and* its bookkeeping (:func:`.drawn_step.record`:
        the token into ``out``, EOS, lengths, the next step's inputs) captured in the step's
        graph, so the host's part of a step is one replay, the next step's noise (queued
        behind the replay, overlapping it) and one sync for the draws' verdict. Rows the
        draws left unresolved are sampled exactly outside the graph and their bookkeeping
        redone (:meth:`_fix_unresolved`). Returns the steps (tokens made).

        Why: with the bookkeeping on the host (about ten small launches between the sync
        and the next replay, the device idle meanwhile) the engine's step was ~0.6 ms above
        the replayed step alone on an H100 (5.75 against 5.11 ms)."""
        import torch

        finished = buf.finished
        if max_new_tokens == 1 or bool(finished.all()):
            return 1
        draws = buf.draws.get(spec.top_p)
        if draws is None:  # kept with the buffers: their graphs read these addresses
            draws = buf.draws[spec.top_p] = DrawBuffers.allocate(buf.shape[0], vocab, spec.top_p,
                                                                 finished.device, done=finished)

        def prepare(index: int) -> None:  # the inputs of the replay that draws token ``index``
            draws.set_ban(eos, index < spec.min_new_tokens)
            draws.refill(self.rng)

        prepare(1)
        index = 1
        while True:
            window = min(length, _round_up(width + index, WINDOW))  # token index - 1 is read at column width + index - 1
            logits, tok, ok = self._drawn_step(buf, window, spec, draws, eos)
            self.stats["draws_in_step"] += 1
            last = index + 1 == max_new_tokens
            if not last:
                prepare(index + 1)  # queued behind the replay: no gap after the sync
            all_ok, all_done = torch.stack((ok.all(), finished.all())).tolist()  # the step's one sync
            if not all_ok:
                ban = eos if index < spec.min_new_tokens and eos.numel() else None
                self._fix_unresolved(buf, tok, ok, logits, spec, ban, eos, index, max_new_tokens)
                all_done = bool(finished.all())
            if last or all_done:
                return index + 1
            yield from check(index + 1)  # (rows it ends are seen ended at the next sync)
            index += 1

    def _fix_unresolved(self, buf: DecodeBuffers, tok: Any, ok: Any, logits: Any, spec: SamplingSpec, ban: Any,
                        eos: Any, index: int, max_new_tokens: int) -> None:
        """Token ``index`` of the rows the captured draws left unresolved (``ok`` False,
        always live rows), sampled exactly, and the bookkeeping the graph did for them with
        its provisional token done again."""
        import torch

        rows = (~ok).nonzero().squeeze(1)
        new = self._resolved(tok, ok, logits, spec, ban, self.stats).index_select(0, rows)
        col = torch.full_like(rows, index)
        buf.out.index_put_((rows, col), new)
        hit = is_eos(new, eos)
        buf.lengths.index_put_((rows,), torch.where(hit, index + 1, max_new_tokens))
        buf.finished.index_put_((rows,), hit)
        buf.tokens.index_put_((rows,), new)

    @staticmethod
    def _rows_out(out: Any, lengths: Any, rows: list[int], steps: int, pad_id: int,
                  stop_check: Callable[[list[list[int]]], list[int | None]] | None) -> DecodedRows:
        """The final ids and lengths of finished ``rows`` after ``steps`` decode steps: cut at
        EOS, or at the earliest completed stop string on the row's whole text."""
        toks = out[rows].tolist()
        lens = lengths[rows].tolist()
        if stop_check is not None:
            for i, at in enumerate(stop_check([t[:steps] for t in toks])):
                if at is not None:
                    lens[i] = min(lens[i], at)
        for t, n in zip(toks, lens):  # tokens past a row's end are pad (EOS already placed)
            t[n:] = [pad_id] * (len(t) - n)
        return DecodedRows(rows, toks, lens)

    @staticmethod
    def _check_stops(out: Any, finished: Any, stop_at: dict[int, int], stop_check: Callable) -> None:
        """Finish the live rows whose recent tokens (``out``) complete a stop string."""
        import torch

        live = [r for r, f in enumerate(finished[: out.shape[0]].tolist()) if not f and r not in stop_at]
        if not live:
            return
        seqs = out[live].tolist()
        ended = []
        for r, at in zip(live, stop_check(seqs)):
            if at is not None:
                stop_at[r] = at
                ended.append(r)
        if ended:
            finished[torch.tensor(ended, device=finished.device)] = True


def stop_lengths(tokenizer: Any, stops: Sequence[str], eos_ids: set[int]) -> Callable[[list[list[int]]], list[int | None]]:
    """``stop_check`` for :meth:`FastDecoder.generate`: per row, the smallest number of
    generated tokens whose decoded text contains a stop string (what transformers'
    ``stop_strings`` stops at), or None."""
    stops = [s for s in stops if s]

    def text(ids: list[int], k: int) -> str:
        return tokenizer.decode(ids[:k], skip_special_tokens=True)

    def check(rows: list[list[int]]) -> list[int | None]:
        found: list[int | None] = []
        for ids in rows:
            end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))
            if not any(s in text(ids, end) for s in stops):
                found.append(None)
                continue
            lo, hi = 1, end  # the smallest prefix holding a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in text(ids, mid) for s in stops):
                    hi = mid
                else:
                    lo = mid + 1
            found.append(lo)
        return found

    return check


__all__ = [
    "DecodeResult",
    "DecodedRows",
    "FastDecoder",
    "SamplingSpec",
    "compiled_first_draw",
    "first_draw",
    "prefill_groups",
    "sample_tokens",
    "stop_lengths",
    "top_p_candidates",
    "unsupported_reason",
]
