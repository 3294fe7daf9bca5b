"""Shared machinery of the built-in evaluators: the harness, per-test outcome
collection, expected-test learning, resource limits, isolation, process cleanup.

Kept import-light: the evaluators and ``srscode env`` import submodules lazily.
"""
from __future__ import annotations

from typing import Any


def isolation_status(refresh: bool = False) -> dict[str, Any]:
    """What isolation a candidate gets on this machine (runs a short probe once)."""
    from .isolation import isolation_status as _status

    return _status(refresh=refresh)


__all__ = ["isolation_status"]
