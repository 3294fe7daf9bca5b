"""``workers: auto`` shares the host's cores among the ranks of an ``accelerate launch``."""
from __future__ import annotations

import os

from srscode.plugins.evaluate.sandbox.pool import auto_workers


def test_auto_workers_is_one_per_core_for_a_single_process(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert auto_workers() == len(os.sched_getaffinity(0))


def test_auto_workers_divides_the_cores_among_local_ranks(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert auto_workers() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")  # more ranks than cores: still one worker
    assert auto_workers() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "not-a-number")
    assert auto_workers() == 32
