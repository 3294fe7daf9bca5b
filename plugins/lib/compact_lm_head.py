"""TRL's fused LM head scores only the tokens that carry a label, wherever that is free.

TRL computes the training stages' log-probs through its fused LM head (``add_fused_lm_head``:
the head in tiles, never the vocabulary-wide logits). On CUDA/XPU it projects only the
positions whose label is not ``-100``; on every other device it projects every position
(prompt, padding) and masks afterwards, because on Neuron/XLA a number of positions that
changes per batch recompiles the graph each time. An eager CPU has no such cost, and there
the prompt and padding positions are pure waste: the CPU demo's DPO stage took 78 s scoring
every position and 63-68 s scoring the labelled ones, with the same loss, and the run's peak RSS
fell from 3.66 to 2.88-2.98 GB (docs/benchmarks.md).

TRL makes that choice through a module-level helper, ``trl.trainer.utils._use_triton``, read on
every forward; :func:`compact_lm_head` answers "yes" there for the length of a training run on
a backend whose ``varying_shapes`` is True, and restores it after. The kernels' own choice
(Triton or the torch fallback, ``trl.kernels.chunked_logprob._use_triton``) is untouched. It is
a private name: where a TRL version lacks it the context changes nothing and logs why.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

log = logging.getLogger(__name__)


def _fused_head_module() -> Any | None:
    try:
        from trl.trainer import utils
    except ImportError:
        return None
    if not (hasattr(utils, "add_fused_lm_head") and callable(getattr(utils, "_use_triton", None))):
        return None
    return utils


@contextlib.contextmanager
def compact_lm_head(backend: Any) -> Iterator[bool]:
    """Within the block, TRL's fused LM head projects only labelled positions when
    ``backend.varying_shapes`` is True. Yields whether it switched."""
    wanted = bool(getattr(backend, "varying_shapes", False))
    utils = _fused_head_module() if wanted else None
    if utils is None:
        if wanted:
            log.debug("compact_lm_head: this TRL has no fused LM head switch; it scores as it chooses")
        yield False
        return
    original = utils._use_triton

    def labelled_positions_only(device: Any) -> bool:
        return True

    utils._use_triton = labelled_positions_only
    try:
        yield True
    finally:
        utils._use_triton = original
