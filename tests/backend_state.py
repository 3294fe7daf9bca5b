"""Process-wide backend state that one test must not hand on to the next.

An xdist worker runs many test modules one after another in one process. Two things in
that process outlive a test:

* accelerate's shared state (``PartialState`` / ``AcceleratorState`` / ``GradientState``,
  each a class-level dict every instance shares). The first ``PartialState(cpu=...)`` of a
  process fixes the device for every later one: a test that trains with ``use_cpu=True``
  (TRL's Trainer does ``PartialState(cpu=True)``) left the state on the CPU, and a later
  test in the same worker that resolved ``cuda`` failed in ``ResolvedBackend.device`` with
  "accelerate's state in this process uses 'cpu'" (``hardware/resolve.py``); the other
  way round a CUDA-initialised state makes a later ``use_cpu=True`` trainer run on the GPU.
* the hardware resolution cache (``srscode.hardware.resolve.reset_cache``).

:func:`clean_backend_state` resets both before and after every test; ``conftest.py``
imports it, so it is autouse for the whole suite (a per-test opt-in would be forgotten by
the next test that trains). It resets accelerate the way accelerate's own tests do
(``AcceleratorState._reset_state(True)``, ``GradientState._reset_state()``), and never
imports accelerate just to reset it, so torch-free tests stay torch-free.
"""
from __future__ import annotations

import sys

import pytest

__all__ = ["clean_backend_state", "accelerate_initialised", "reset_backend_state"]


def accelerate_initialised() -> dict[str, bool]:
    """Which of accelerate's shared states hold anything in this process (all False when
    accelerate was never imported)."""
    state = sys.modules.get("accelerate.state")
    if state is None:
        return {"PartialState": False, "AcceleratorState": False, "GradientState": False}
    return {name: bool(getattr(state, name)._shared_state) for name in ("PartialState", "AcceleratorState", "GradientState")}


def reset_backend_state() -> None:
    """Forget the resolved backend and accelerate's shared state in this process."""
    from srscode.hardware.resolve import reset_cache

    reset_cache()
    state = sys.modules.get("accelerate.state")
    if state is None:
        return
    state.AcceleratorState._reset_state(reset_partial_state=True)
    state.GradientState._reset_state()


@pytest.fixture(autouse=True)
def clean_backend_state():
    """Every test starts and ends with no resolved backend and no accelerate state (a
    module-scoped fixture set up before the test cannot leak its state into it either)."""
    reset_backend_state()
    yield
    reset_backend_state()
