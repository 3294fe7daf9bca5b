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

Several machines (``accelerate launch --num_machines M --machine_rank K``) add what one host
never shows: a node can die alone, and each node has its own disks. So

* a collective that fails (a peer's sockets closed: its node or process died) or times out
  (a peer stopped answering: a frozen node, a cut network) raises :class:`PeerLost` naming
  this rank, its host and what it was doing, and saying how to resume; gloo would otherwise
  print a bare C++ error, and without the timeout a hard node death would hang it forever;
* the run dir must be shared storage: :func:`check_shared_run_dir` has rank 0 write a nonce
  file there at start and every rank find it within ``SRSCODE_SHARED_WAIT_S`` (default 60 s),
  and :func:`shared_adapter` has every rank find the files of an adapter rank 0 saved before
  anyone compares hashes, so a node-local run dir stops with :class:`NotShared` saying so
  rather than with an adapter-hash mismatch rounds later;
* caches (model conversion, tokenizer, evaluator references) stay per node: nothing here
  reads them across nodes.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

from .errors import ConfigError, LedgerError, StageError

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_SHARED_WAIT_S = 60.0
PROBE_PREFIX = ".shared-storage-probe-"


class RankFailed(StageError):
    """Another rank failed; this one stops too."""


class PeerLost(StageError):
    """A collective failed or timed out: another rank's node or process died, hung, or the
    network between the nodes failed. The message says what this rank was doing."""

    def __init__(self, rank: int, world: int, cause: BaseException | str, timeout_s: float | None = None,
                 what: str = ""):
        self.rank, self.world, self.timeout_s, self.what = rank, world, timeout_s, what
        self.cause = cause if isinstance(cause, str) else _short(cause)
        during = f" during {what}" if what else ""
        limit = f"={timeout_s:g} s" if timeout_s is not None else ""
        super().__init__(
            f"rank {rank} of {world} (host {host_name()}) lost contact with the other ranks{during}: "
            f"{self.cause}. Another node or process died, stopped answering within the process "
            f"group's timeout (SRSCODE_DIST_TIMEOUT_S{limit}), or the network between the nodes "
            "failed. Rounds up to the last committed one are intact: once every node is back, run "
            "the same launch command on every node to resume."
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite its own __init__
        return (PeerLost, (self.rank, self.world, self.cause, self.timeout_s, self.what))

    def during(self, what: str) -> "PeerLost":
        """The same loss, naming the stage (the collectives themselves do not know it)."""
        return self if self.what else PeerLost(self.rank, self.world, self.cause, self.timeout_s, what)


class NotShared(LedgerError):
    """A rank cannot see files rank 0 wrote in the run dir: it is not shared storage."""


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

        self.timeout_s = timeout_s
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

    def _lost(self, exc: BaseException) -> PeerLost:
        return PeerLost(self.rank, self.world, exc, self.timeout_s)

    def broadcast(self, obj: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        box = [obj if self.is_main else None]
        try:
            broadcast_object_list(box, from_process=0)
        except RuntimeError as exc:  # torch's DistError family subclasses RuntimeError
            raise self._lost(exc) from exc
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        # torch's all_gather_object directly: accelerate's gather_object flattens lists,
        # and a rank's payload here is often a list
        out: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(out, obj)
        except RuntimeError as exc:
            raise self._lost(exc) from exc
        return out

    def barrier(self) -> None:
        try:
            self.state.wait_for_everyone()
        except RuntimeError as exc:
            raise self._lost(exc) from exc

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
    try:
        rows = dist.gather(local)
    except PeerLost as lost:
        if error is not None:  # this rank's own failure says more than the lost peer
            raise error from None
        raise lost.during(what) from lost.__cause__
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
    try:
        kind, value = dist.broadcast(payload)
    except PeerLost as lost:
        if error is not None:
            raise error from None
        raise lost.during(what) from lost.__cause__
    if error is not None:
        raise error
    if kind == "error":
        raise RankFailed(f"{what}: rank 0 failed with {value}; every rank stopped.")
    return value


# --------------------------------------------------------------------- several machines


def host_name() -> str:
    return socket.gethostname()


# what torch, gloo, NCCL and HCCL raise when a peer is gone; only consulted for errors from
# collectives this module does not wrap (DDP's, inside a trainer)
_LOST_PATTERNS = re.compile(
    r"Connection (reset|closed|refused|was likely closed)|Broken pipe|Timed out waiting|Socket Timeout|"
    r"\bgloo\b|NCCL|HCCL|ProcessGroup|DistBackendError|DistNetworkError|DistStoreError|TCPStore",
)


def lost_contact(dist: Distributed, exc: BaseException) -> PeerLost | None:
    """``exc`` as a :class:`PeerLost` when it is a failed collective of a several-rank run
    (raised inside a stage such as training, where DDP's collectives are not ours), else None."""
    if dist.world <= 1 or isinstance(exc, PeerLost) or not isinstance(exc, RuntimeError):
        return None
    dist_errors: tuple[type, ...] = ()
    try:
        import torch.distributed as tdist

        dist_errors = tuple(t for t in (getattr(tdist, "DistError", None),) if isinstance(t, type))
    except ImportError:
        pass
    if not (isinstance(exc, dist_errors) or _LOST_PATTERNS.search(str(exc))):
        return None
    return PeerLost(dist.rank, dist.world, exc, getattr(dist, "timeout_s", None))


def _short(exc: BaseException) -> str:
    """gloo's message without its source path and advice: ``Read error ...: Connection reset by peer``."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip())
    text = text.split(". This is typically", 1)[0].split("\n", 1)[0]
    return f"{type(exc).__name__}: {text[:300]}"


def shared_wait_s() -> float:
    """How long a rank waits for rank 0's files to appear (``SRSCODE_SHARED_WAIT_S``): network
    file systems may show another client's new file only after their attribute cache expires."""
    raw = os.environ.get("SRSCODE_SHARED_WAIT_S", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_SHARED_WAIT_S
    except ValueError:
        raise ConfigError(f"environment variable SRSCODE_SHARED_WAIT_S={raw!r} is not a number of seconds") from None
    return max(value, 0.0)


def _wait_until(seen: Callable[[], bool], wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        if seen():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _write_probe(run_dir: Path) -> tuple[str, str]:
    for old in run_dir.glob(PROBE_PREFIX + "*"):  # a crashed start's
        old.unlink(missing_ok=True)
    nonce = secrets.token_hex(8)
    (run_dir / f"{PROBE_PREFIX}{nonce}").write_text(f"{nonce} {host_name()}\n")
    return nonce, host_name()


def _sees_probe(run_dir: Path, nonce: str, wait_s: float) -> tuple[bool, str]:
    name = f"{PROBE_PREFIX}{nonce}"

    def seen() -> bool:
        try:
            # listing first: on NFS it revalidates the directory, where a lookup by name may
            # answer from a cached "no such file"
            return name in os.listdir(run_dir) and (run_dir / name).read_text().split()[0] == nonce
        except (OSError, IndexError):
            return False

    return _wait_until(seen, wait_s), host_name()


def _remove_probe(run_dir: Path, nonce: str) -> None:
    (run_dir / f"{PROBE_PREFIX}{nonce}").unlink(missing_ok=True)


def check_shared_run_dir(dist: Distributed, run_dir: Path) -> None:
    """Every rank must see a file rank 0 just wrote in ``run_dir`` (the same path on every
    node); raises :class:`NotShared` on every rank otherwise. Called once rank 0 holds the run dir."""
    if dist.world <= 1:
        return
    wait_s = shared_wait_s()
    nonce, main_host = run_on_main(dist, "probing the run dir", _write_probe, run_dir)
    rows = run_everywhere(dist, "checking that the run dir is shared",
                          lambda: (True, host_name()) if dist.is_main else _sees_probe(run_dir, nonce, wait_s))
    run_on_main(dist, "removing the run dir probe", _remove_probe, run_dir, nonce)
    blind = [f"rank {k} (host {host})" for k, (ok, host) in enumerate(rows) if not ok]
    if blind:
        raise NotShared(
            f"run dir {run_dir} is not shared storage: {', '.join(blind)} cannot see the file "
            f"{PROBE_PREFIX}{nonce} that rank 0 (host {main_host}) wrote there, after waiting {wait_s:g} s. "
            "Over several machines rank 0 alone writes the ledger, the round files and the adapters, "
            "and every rank reads the adapters from the run dir: put the run dir on storage every node "
            "mounts at the same path (NFS, Lustre, a cloud file share) and pass that same --run-dir on "
            "every node. (SRSCODE_SHARED_WAIT_S sets the wait, for file systems slow to show new files.)"
        )


def _listing(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def shared_adapter(dist: Distributed, what: str, adapter: Any) -> Any:
    """``adapter`` (an :class:`~srscode.core.types.AdapterRef` or None), after every rank found
    the files rank 0 saved in its folder (waiting up to ``SRSCODE_SHARED_WAIT_S``); a rank that
    had to wait hashes the folder again. Raises :class:`NotShared` on every rank when a rank
    cannot see them, before anyone loads the adapter or compares hashes."""
    if dist.world <= 1:
        return adapter
    path, wanted = run_on_main(dist, f"{what}: listing its files",
                               lambda: (adapter.path, _listing(Path(adapter.path))) if adapter else (None, {}))
    if path is None:
        return adapter
    folder = Path(path)
    wait_s = shared_wait_s()

    def check() -> tuple[list[str], str, bool]:
        if dist.is_main:
            return [], host_name(), False
        first = _listing(folder)
        if all(first.get(n) == size for n, size in wanted.items()):
            return [], host_name(), False
        _wait_until(lambda: all(_listing(folder).get(n) == size for n, size in wanted.items()), wait_s)
        have = _listing(folder)
        return sorted(n for n, size in wanted.items() if have.get(n) != size), host_name(), True

    rows = run_everywhere(dist, f"{what}: checking the files on every rank", check)
    blind = [(k, missing, host) for k, (missing, host, _) in enumerate(rows) if missing]
    if blind:
        k, missing, host = blind[0]
        main_host = rows[0][1]
        raise NotShared(
            f"{what}: rank {k} (host {host}) cannot see {len(missing)} of the {len(wanted)} files rank 0 "
            f"(host {main_host}) saved in {folder} (e.g. {missing[0]}) after waiting {wait_s:g} s: the run dir "
            "is not shared storage. Put it on storage every node mounts at the same path (NFS, Lustre, a "
            "cloud file share) and pass that same --run-dir on every node; the rounds committed so far are intact."
        )
    waited = rows[dist.rank][2]
    if waited and adapter is not None:
        from .types import AdapterRef

        return AdapterRef.from_dir(folder)
    return adapter
