"""Data-parallel runs under ``accelerate launch``: rank, world and the few collectives the
engine needs, over accelerate's ``PartialState``.

A single process (no ``WORLD_SIZE`` > 1 in the environment) gets :class:`SingleProcess`,
whose collectives are identities: it never imports torch, so model-free runs (replay,
dry runs) stay torch-free. Launched with several processes, :class:`TorchDistributed`
joins the process group accelerate sets up (the same ``PartialState`` TRL's trainers and
the hf generator use, so there is one group per process) with the hardware backend's
device flag: gloo on the CPU, NCCL on CUDA, HCCL on Ascend.

Failure policy (why there are two mechanisms):

* Work without collectives inside (scheduling, generation, evaluation, validation) runs
  through :func:`run_everywhere` / :func:`run_on_main`: an exception is caught and
  exchanged at the stage boundary, so every rank raises (the failing one its own error,
  the others a :class:`RankFailed` naming the rank and the error) and the run exits
  non-zero on all of them.
* Work with collectives inside (training: DDP all-reduces) cannot be guarded that way: a
  rank that left the stage would wait in a different collective than the others. There
  the exception propagates, the process exits, and the launcher (torch elastic, which
  ``accelerate launch`` runs) stops the other ranks. The process group's ``timeout``
  (``SRSCODE_DIST_TIMEOUT_S``, default 1800 s) is the backstop for anything else.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Protocol, TypeVar

from .errors import ConfigError, StageError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 1800.0


class RankFailed(StageError):
    """Another rank failed; this one stops too."""


class Distributed(Protocol):
    rank: int
    world: int

    @property
    def is_main(self) -> bool: ...

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        ...

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        ...

    def barrier(self) -> None: ...

    def close(self) -> None:
        """Leave the process group (idempotent); a process must not exit still holding it."""
        ...


class SingleProcess:
    """One process: the collectives are identities; torch is never imported."""

    rank = 0
    world = 1
    backend = None

    @property
    def is_main(self) -> bool:
        return True

    def broadcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None

    def close(self) -> None:
        pass


class TorchDistributed:
    """Several processes joined by accelerate's ``PartialState``."""

    def __init__(self, use_cpu: bool, collective: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        from datetime import timedelta

        from accelerate import PartialState

        self.state = PartialState(cpu=use_cpu, timeout=timedelta(seconds=timeout_s))
        self.rank = int(self.state.process_index)
        self.world = int(self.state.num_processes)
        import torch.distributed as dist

        if not dist.is_initialized():
            raise ConfigError(
                f"WORLD_SIZE is {os.environ.get('WORLD_SIZE')} but accelerate did not start a process "
                "group; launch with `accelerate launch --num_processes N -m srscode run CONFIG`."
            )
        self.backend = str(dist.get_backend())
        # accelerate may name a combined backend ("cuda:nccl,cpu:gloo"); the resolved
        # hardware backend's collective must be part of it
        if collective not in self.backend:
            raise ConfigError(
                f"hardware backend wants the {collective!r} collective but the process group uses "
                f"{self.backend!r}; set hardware.backend to match the devices the launcher gave "
                "this process."
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        box = [obj if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        # torch's all_gather_object directly: accelerate's gather_object flattens lists,
        # and a rank's payload here is often a list
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self.state.wait_for_everyone()

    def close(self) -> None:
        # a process that exits still holding the group can die at interpreter exit
        # ("terminate called without an active exception", SIGABRT) after its work is done,
        # which fails a finished run; leaving it first joins its threads
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launched_world() -> int:
    """The world size the launcher announced (1 when not launched by one)."""
    raw = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable WORLD_SIZE={raw!r} is not a number") from None


def connect(ctx: Any) -> Distributed:
    """The collectives for this process: torch ones only when launched with WORLD_SIZE > 1."""
    if launched_world() <= 1:
        return SingleProcess()
    backend = ctx.backend
    raw = os.environ.get("SRSCODE_DIST_TIMEOUT_S", "").strip()
    try:
        timeout = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"environment variable SRSCODE_DIST_TIMEOUT_S={raw!r} is not a number of seconds") from None
    return TorchDistributed(backend.use_cpu, backend.collective, timeout)


def shard(items: list[T], dist: Distributed) -> list[T]:
    """This rank's share: ``items[rank::world]`` (all of one task's candidates stay together)."""
    return items[dist.rank :: dist.world]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_everywhere(dist: Distributed, what: str, fn: Callable[..., T], *args: Any) -> list[T]:
    """``fn(*args)`` on every rank; every rank gets all ranks' results, in rank order. When
    ``fn`` raises on any rank, every rank raises (see the module docstring)."""
    if dist.world == 1:
        return [fn(*args)]
    error: BaseException | None = None
    try:
        local: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - exchanged, then re-raised below
        error = exc
        local = ("error", _describe(exc))
    rows = dist.gather(local)
    if error is not None:
        raise error
    failed = [(k, msg) for k, (kind, msg) in enumerate(rows) if kind == "error"]
    if failed:
        k, msg = failed[0]
        raise RankFailed(f"{what}: rank {k} of {dist.world} failed with {msg}; every rank stopped.")
    return [value for _kind, value in rows]


def run_on_main(dist: Distributed, what: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on rank 0 only; its result (or its failure) reaches every rank. On the
    other ranks ``args`` may hold what only rank 0 has (the ledger is None there)."""
    if dist.world == 1:
        return fn(*args)
    error: BaseException | None = None
    payload: tuple[str, Any] = ("ok", None)
    if dist.is_main:
        try:
            payload = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - broadcast, then re-raised below
            error = exc
            payload = ("error", _describe(exc))
    kind, value = dist.broadcast(payload)
    if error is not None:
        raise error
    if kind == "error":
        raise RankFailed(f"{what}: rank 0 failed with {value}; every rank stopped.")
    return value
