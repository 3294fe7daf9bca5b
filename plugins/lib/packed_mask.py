"""transformers' packed-sequence detection without its host read.

Given ``position_ids`` and no attention mask (lora-sft's packed rows), transformers
(``masking_utils.find_packed_sequence_indices``, 5.17 to 5.19) numbers each token's document
from the positions and then asks the device whether any row holds more than one document
(``(mask[:, -1] == 0).all()`` in an ``if``): a host read at the start of every forward, which
makes the host wait for all queued work and idles the device while it catches up
(``lib/deferred_metrics.py`` says why that costs). When every row is one document it returns
None and plain causal attention runs.

:func:`packed_mask_without_sync` swaps in the same numbering without the question for the
length of a training run: a row of one document then gets the block mask of one block, which
is the causal mask, so the attention and the loss are the same function. Not always the same
bits: sdpa then runs its masked kernel where it would have run its causal one, which round
differently (the CPU demo's round-1 adapter changed in the last digits, and its round 2
sampled other candidates; with this context off the demo repeats the earlier run exactly,
docs/benchmarks.md). Packed rows almost always
hold several documents or end in padding (its own "document"), so the mask was built anyway;
for the graphed decoder layers, every batch then passes a mask, as the captured one did.
transformers versions without that function are left as they are.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

log = logging.getLogger(__name__)


def packed_sequence_indices(position_ids: Any) -> Any:
    """Each token's document number in its row (a new document wherever the position does
    not go up by one), as transformers numbers them; never None, never a host read."""
    first = position_ids[:, :1] - 1
    return (position_ids.diff(dim=-1, prepend=first) != 1).cumsum(-1)


@contextlib.contextmanager
def packed_mask_without_sync() -> Iterator[bool]:
    """Within the block transformers builds packed masks with :func:`packed_sequence_indices`.
    Yields whether it switched (False where this transformers has no such function)."""
    try:
        from transformers import masking_utils
    except ImportError:
        yield False
        return
    original = getattr(masking_utils, "find_packed_sequence_indices", None)
    if not callable(original):
        log.debug("packed_mask_without_sync: this transformers has no find_packed_sequence_indices")
        yield False
        return
    masking_utils.find_packed_sequence_indices = packed_sequence_indices
    try:
        yield True
    finally:
        masking_utils.find_packed_sequence_indices = original
