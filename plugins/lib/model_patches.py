"""Hand the shared base model back as a trainer found it.

The ``hf`` generator and the trainers share one base model (:mod:`.hf_model`). A trainer may
patch it while it trains: with ``liger`` on, transformers' ``Trainer.train`` calls
``apply_liger_kernel``, which binds liger's forwards onto the instance's modules (each RMSNorm,
each MLP, the causal LM's ``forward``) and replaces classes and functions in the model's
modeling module for the whole process (``modeling_qwen2.Qwen2RMSNorm``, ``.Qwen2MLP``,
``.apply_rotary_pos_emb``; ``torch.nn.functional.cross_entropy`` with its cross-entropy
option). Nothing undoes them: the next round's decoding ran liger's training kernels, and the
compiled decoder, whose guards saw other code, compiled again (H200, docs/benchmarks.md,
issue 19). A plain training leaves a little too (TRL's ``model_tags``, accelerate's forward
re-bound on the instance). liger has no unpatch, hence this snapshot: the instance attributes
of every module, and the names in the model's modeling modules (their classes' attributes
too), put back on exit.
"""
from __future__ import annotations

import contextlib
import sys
import types
from typing import Any, Iterator

_MISSING = object()


def _modeling_modules(model: Any) -> list[types.ModuleType]:
    """The modules whose classes build ``model`` (transformers' ``modeling_*``), and
    ``torch.nn.functional``, where liger's cross-entropy option writes."""
    import torch.nn.functional

    names = {cls.__module__ for m in model.modules() for cls in type(m).__mro__}
    found = [sys.modules[n] for n in sorted(names) if n.startswith("transformers.models.") and n in sys.modules]
    return found + [torch.nn.functional]


def _namespaces(model: Any) -> list[Any]:
    """Every object whose attributes are snapshotted: the model's modules (instance dicts),
    its modeling modules, and the classes those modules define."""
    spaces: list[Any] = list(model.modules())
    for mod in _modeling_modules(model):
        spaces.append(mod)
        spaces += [v for v in vars(mod).values() if isinstance(v, type) and v.__module__ == mod.__name__]
    return spaces


def _restore(obj: Any, saved: dict[str, Any]) -> int:
    """Put ``obj``'s attributes back to ``saved``; how many differed."""
    now = vars(obj)
    changed = 0
    for name in [n for n in now if n not in saved]:
        delattr(obj, name) if isinstance(obj, type) else now.pop(name)
        changed += 1
    for name, value in saved.items():
        if now.get(name, _MISSING) is not value:
            if isinstance(obj, type):
                setattr(obj, name, value)  # a class's __dict__ is read-only
            else:
                now[name] = value
            changed += 1
    return changed


@contextlib.contextmanager
def model_patches_undone(model: Any) -> Iterator[dict[str, int]]:
    """Snapshot ``model``'s module attributes and its modeling modules' names; restore them
    on exit, whatever happened inside. Yields a dict whose ``"restored"`` counts, after exit,
    the attributes put back (0 when training left the model as it was)."""
    spaces = _namespaces(model)
    saved = [(obj, dict(vars(obj))) for obj in spaces]  # shallow: the same objects, not copies
    report = {"restored": 0}
    try:
        yield report
    finally:
        report["restored"] = sum(_restore(obj, attrs) for obj, attrs in saved)
