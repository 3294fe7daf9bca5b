"""The run directory: an SQLite ledger plus one folder of artifacts per round.

SQLite (stdlib, WAL) gives transactions and crash safety instead of hand-rolled ones.
A round is committed when its row exists in ``rounds``: the row, the memory updates
of that round and the scheduler state go in one transaction, after the round's files
were written atomically and listed with their checksums in ``COMMIT``. A round folder
without a row is an abandoned attempt and is removed on resume; a committed round
whose files fail their checksums stops the run.

Layout::

    RUN_DIR/ledger.sqlite        meta, rounds, memory (current), memory_log (deltas), validations,
                                 retention_probes, failed_attempts (last failing candidate per task)
    RUN_DIR/config.yaml          the config the run was started with (for people)
    RUN_DIR/lock                 flock + the holder's host, pid, boot id and heartbeat (RunLock)
    RUN_DIR/rounds/000001/       schedule.json prompts.jsonl candidates.jsonl verdicts.jsonl
                                 memory.jsonl pairs.jsonl metrics.json adapter/ COMMIT
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .errors import LedgerError
from .faults import checkpoint
from .types import AdapterRef, FailedAttempt, ReviewState

SCHEMA_VERSION = 1

log = logging.getLogger("srscode.ledger")

# the ``stages`` row of the DPO stage that runs once after the last round (``dpo.every: end``)
FINAL_DPO = "dpo-final"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    committed_at REAL NOT NULL,
    new_ids TEXT NOT NULL,
    review_ids TEXT NOT NULL,
    metrics TEXT NOT NULL,
    scheduler_state TEXT NOT NULL,
    adapter_path TEXT,
    adapter_sha TEXT,
    commit_sha TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS memory (
    task_id TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    graduated INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    due INTEGER NOT NULL,
    priority REAL NOT NULL,
    interval INTEGER NOT NULL,
    last_pass_rate REAL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_due ON memory (active, due, priority, task_id);
CREATE INDEX IF NOT EXISTS memory_order ON memory (active, priority, task_id);
-- covering index: the per-round totals (retention metrics) scan it, not the JSON states
CREATE INDEX IF NOT EXISTS memory_stats ON memory (task_id, active, graduated, skipped, due, interval, last_pass_rate);
-- running totals over the memory table, kept by deltas in the commit transaction so
-- per-round statistics cost O(batch), not O(tasks)
CREATE TABLE IF NOT EXISTS totals (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memory_log (
    round INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (round, task_id)
);
CREATE TABLE IF NOT EXISTS validations (
    round INTEGER PRIMARY KEY,
    metrics TEXT NOT NULL
);
-- retention probes (config ``retention``): round -> the probe's result (JSON), the
-- final one under rounds + 1 like the final validation
CREATE TABLE IF NOT EXISTS retention_probes (
    round INTEGER PRIMARY KEY,
    result TEXT NOT NULL
);
-- reflection prompts: each task's last failing candidate (code + sanitised failure excerpt),
-- replaced in the commit transaction of the round that produced it, deleted when a later
-- round of the task had no failing candidate
CREATE TABLE IF NOT EXISTS failed_attempts (
    task_id TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    candidate_index INTEGER NOT NULL,
    status TEXT NOT NULL,
    pass_rate REAL NOT NULL,
    code TEXT NOT NULL,
    excerpt TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    name TEXT PRIMARY KEY,
    committed_at REAL NOT NULL,
    metrics TEXT NOT NULL,
    adapter_path TEXT,
    adapter_sha TEXT
);
"""

_STATE_FIELDS = {f.name for f in dataclasses.fields(ReviewState)}


def state_to_json(state: ReviewState) -> str:
    return json.dumps(dataclasses.asdict(state), sort_keys=True)


# a task counts as *correct* when its latest pass rate reaches this (retention metrics)
CORRECT_THRESHOLD = 0.5

# (low, high inclusive or None, label): powers of two, the shape SM-2 intervals take
INTERVAL_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (0, 1, "1"), (2, 2, "2"), (3, 4, "3-4"), (5, 8, "5-8"), (9, 16, "9-16"), (17, 32, "17-32"), (33, None, "33+"),
)


def interval_bucket(interval: int) -> str:
    for low, high, label in INTERVAL_BUCKETS:
        if interval >= low and (high is None or interval <= high):
            return label
    return INTERVAL_BUCKETS[0][2]  # negative intervals: a policy bug, shown as "due next round"


def state_totals(s: ReviewState) -> dict[str, float]:
    """One task's contribution to the running totals."""
    out = {"seen": 1.0, "graduated": float(s.graduated), "skipped": float(s.skipped), "active": float(s.active),
           "correct": float(s.last_pass_rate is not None and s.last_pass_rate >= CORRECT_THRESHOLD)}
    if s.active:
        out["interval_sum"] = float(s.interval)
        out[f"interval:{interval_bucket(s.interval)}"] = 1.0
    return out


def memory_row(s: ReviewState) -> tuple[Any, ...]:
    """The ``memory`` table's row: indexed/aggregated columns, then the whole state."""
    return (s.task_id, int(s.active), int(s.graduated), int(s.skipped), s.due, s.priority, s.interval,
            s.last_pass_rate, state_to_json(s))


def state_from_json(text: str) -> ReviewState:
    data = json.loads(text)
    return ReviewState(**{k: v for k, v in data.items() if k in _STATE_FIELDS})


def round_dir(run_dir: Path, round_: int) -> Path:
    """The folder of one round's files (every rank knows it; only rank 0 opens the ledger)."""
    return run_dir / "rounds" / f"{round_:06d}"


# ----------------------------------------------------------------------- atomic files


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        checkpoint("write-tmp")
        os.replace(tmp, path)
    except BaseException as exc:  # disk full, a signal: drop the partial temp file
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # name the file in the error (a failed write() does not)
        raise
    fsync_dir(path.parent)
    checkpoint("write-renamed")


def is_io_error(exc: BaseException) -> bool:
    """An SQLite error from a refused or failed write (disk full, EFBIG, EIO), as opposed
    to a damaged file."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)


def remove_stale_temp(root: Path) -> list[Path]:
    """Delete temp files of atomic writes a killed process never renamed (call only while
    holding the run lock, when no other writer can be mid-write). Only where the engine
    writes: the run dir itself, rounds/ and final/."""
    stale = [p for p in root.glob(".*.tmp-*") if p.is_file()]
    for sub in ("rounds", "final"):
        if (root / sub).is_dir():
            stale += [p for p in (root / sub).rglob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode())


def write_jsonl(path: Path, rows: Iterable[Any]) -> None:
    lines = [json.dumps(r, sort_keys=True, default=_json_default) for r in rows]
    write_atomic(path, ("\n".join(lines) + ("\n" if lines else "")).encode())


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def record(obj: Any) -> dict[str, Any]:
    """A flat dataclass as a dict for JSON; ``dataclasses.asdict`` deep-copies every
    field and dominated the per-round cost at a few thousand candidates."""
    return {k: (record(v) if dataclasses.is_dataclass(v) else v) for k, v in vars(obj).items()}


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- lock


class RunLock:
    """An flock on RUN_DIR/lock, released by the kernel if the holder dies, plus a record of
    the holder in the file: host, pid, boot id, start time and a heartbeat.

    The record is for what flock cannot say across machines. On one host the flock is the
    truth: when it is free, whatever pid the record names is gone (a pid of another boot or
    host is never looked up here: it would name an unrelated process). On a run dir shared
    over the network, a file system may keep flocks per host (NFS mounted ``local_lock=flock``
    or ``nolock``), so a free flock with a record left by another host is not proof that its
    holder died: the holder rewrites its heartbeat every ``SRSCODE_LOCK_HEARTBEAT_S`` (default
    10 s), and a taker watches the record for 2.5 heartbeats. If it moves, the holder is alive
    and the taker stops; if not, the holder died without releasing, and the taker says so and
    takes over. A clean release empties the record, so only a crash costs that wait.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / "lock"
        self.fd: int | None = None
        self._record: dict[str, Any] = {}
        self._stop: threading.Event | None = None
        self._beat_thread: threading.Thread | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _read_holder(fd)
            os.close(fd)
            raise LedgerError(
                f"run dir {self.path.parent} is in use by another srscode process ({_describe_holder(holder)}); "
                "wait for it to finish or stop it before starting another run here."
            ) from None
        try:
            self._check_left_record(fd)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self.fd = fd
        self._record = {"pid": os.getpid(), "host": _host(), "boot_id": _boot_id(), "started": time.time(),
                        "heartbeat_s": _heartbeat_s(), "beat": 0}
        self._write_record()
        self._stop = threading.Event()
        self._beat_thread = threading.Thread(target=self._beat, name="srscode-lock-heartbeat", daemon=True)
        self._beat_thread.start()

    def _check_left_record(self, fd: int) -> None:
        """The flock is ours; a record still in the file is a holder that did not release."""
        holder = _read_holder(fd)
        if not holder:
            return
        if holder.get("host", _host()) == _host() and holder.get("boot_id", _boot_id()) == _boot_id():
            # this machine, this boot: the kernel dropped that holder's flock, so it is gone
            # (its pid may already name another process). A host name alone is not enough:
            # containers on different machines often share one; after a reboot the heartbeat decides
            log.info("run dir lock: the previous holder (%s) ended without releasing", _describe_holder(holder))
            return
        interval = min(float(holder.get("heartbeat_s") or DEFAULT_LOCK_HEARTBEAT_S), 60.0)
        deadline = time.monotonic() + 2.5 * interval
        while time.monotonic() < deadline:
            time.sleep(min(0.5, interval / 4))
            now = self._read_fresh()
            if now != holder:
                if not now:  # released meanwhile: it was alive, and it is done
                    return
                raise LedgerError(
                    f"run dir {self.path.parent} is in use by a srscode process on another host "
                    f"({_describe_holder(now)}): its heartbeat in {self.path} is moving, although this "
                    "file system let this host take the lock too (it keeps locks per host, e.g. NFS "
                    "mounted with local_lock=flock or nolock). Wait for that run to finish or stop it there."
                )
        log.warning("run dir lock: the previous holder (%s) did not release it and its heartbeat did not "
                    "move for %.1f s; taking over (its rounds up to the last committed one are kept)",
                    _describe_holder(holder), 2.5 * interval)

    def _read_fresh(self) -> dict[str, Any]:
        """The record as the file server has it: a new open revalidates an NFS client's cache
        (close-to-open), where reads through a long-open descriptor may see cached bytes."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return {}
        try:
            return _read_holder(fd)
        finally:
            os.close(fd)

    def _write_record(self) -> None:
        assert self.fd is not None
        data = (json.dumps(self._record, sort_keys=True) + "\n").encode()
        # in place and never empty (an empty record means released); fsync so a network file
        # system's server, and so another host, sees each beat
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))
        os.fsync(self.fd)

    def _beat(self) -> None:
        stop = self._stop
        assert stop is not None
        while not stop.wait(self._record["heartbeat_s"]):
            self._record["beat"] += 1
            with contextlib.suppress(OSError, AssertionError):  # a full disk must not kill the run here
                self._write_record()

    def holder(self) -> dict[str, Any]:
        """The record this lock wrote (host, pid, boot id, ...); empty when not held."""
        return dict(self._record) if self.fd is not None else {}

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            if self._beat_thread is not None:
                self._beat_thread.join(timeout=5)
            self._stop = self._beat_thread = None
        if self.fd is not None:
            with contextlib.suppress(OSError):  # an empty record: released cleanly, nothing to wait for
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


DEFAULT_LOCK_HEARTBEAT_S = 10.0


def _heartbeat_s() -> float:
    raw = os.environ.get("SRSCODE_LOCK_HEARTBEAT_S", "").strip()
    try:
        return max(float(raw), 0.05) if raw else DEFAULT_LOCK_HEARTBEAT_S
    except ValueError:
        raise LedgerError(f"environment variable SRSCODE_LOCK_HEARTBEAT_S={raw!r} is not a number of seconds") from None


def _host() -> str:
    import socket

    return socket.gethostname()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _read_holder(fd: int) -> dict[str, Any]:
    raw = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    # an older srs-code wrote the bare pid; it ran on one host
    return {"pid": raw.split()[0], "host": _host()} if raw.split() and raw.split()[0].isdigit() else {"pid": raw[:40]}


def _describe_holder(holder: Mapping[str, Any]) -> str:
    if not holder:
        return "pid unknown"
    text = f"pid {holder.get('pid', 'unknown')}"
    if holder.get("host"):
        text += f" on host {holder['host']}"
    if isinstance(holder.get("started"), (int, float)):
        text += f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['started']))}"
    return text


# --------------------------------------------------------------------------- ledger


class Ledger:
    """One run directory. Only the process holding the lock writes."""

    def __init__(self, run_dir: str | Path, create: bool = True):
        self.run_dir = Path(run_dir)
        db_path = self.run_dir / "ledger.sqlite"
        if not create and not db_path.exists():
            raise LedgerError(f"{self.run_dir} is not a srscode run dir (no ledger.sqlite)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "rounds").mkdir(exist_ok=True)
        try:
            self.db = sqlite3.connect(db_path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            # damage SQLite can still open is reported as rows, not as an exception
            problems = [r[0] for r in self.db.execute("PRAGMA integrity_check(5)")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(p.replace("\n", " ") for p in problems))
        except sqlite3.DatabaseError as exc:
            if is_io_error(exc):  # the file is fine, the disk refused: do not call it damaged
                raise LedgerError(
                    f"cannot read or write {db_path} ({exc}): the disk is full, a quota or file-size "
                    "limit was reached, or the device failed. The ledger was not changed; free some "
                    "space and run the same command again to resume."
                ) from None
            raise LedgerError(
                f"{db_path} is damaged ({exc}). Restore it from a backup or start a new run dir; "
                "round folders under rounds/ hold the artifacts."
            ) from None

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, **items: Any) -> None:
        with self.transaction():
            for k, v in items.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, json.dumps(v, sort_keys=True)))

    def transaction(self) -> "_Tx":
        return _Tx(self.db)

    # ------------------------------------------------------------------ rounds
    def round_dir(self, round_: int) -> Path:
        return round_dir(self.run_dir, round_)

    def last_round(self) -> int:
        row = self.db.execute("SELECT MAX(round) FROM rounds").fetchone()
        return int(row[0] or 0)

    def round_row(self, round_: int) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM rounds WHERE round=?", (round_,))
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([d[0] for d in cur.description], row))
        for key in ("new_ids", "review_ids", "metrics", "scheduler_state"):
            out[key] = json.loads(out[key])
        return out

    def rounds(self) -> list[dict[str, Any]]:
        return [self.round_row(r) for (r,) in self.db.execute("SELECT round FROM rounds ORDER BY round")]  # type: ignore[misc]

    def prepare_round_dir(self, round_: int) -> Path:
        """A clean folder for an uncommitted round (an abandoned attempt is removed)."""
        if self.round_row(round_) is not None:
            raise LedgerError(f"round {round_} is already committed in {self.run_dir}")
        d = self.round_dir(round_)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def remove_uncommitted(self) -> list[Path]:
        """Delete round folders that never got their commit row (crash mid-round)."""
        committed = {f"{r:06d}" for (r,) in self.db.execute("SELECT round FROM rounds")}
        removed = []
        for d in sorted((self.run_dir / "rounds").iterdir()):
            if d.name not in committed:
                shutil.rmtree(d) if d.is_dir() else d.unlink()
                removed.append(d)
        return removed

    def seal_round_files(self, round_: int) -> str:
        """Write COMMIT listing each file's sha256; returns the COMMIT file's own hash."""
        d = self.round_dir(round_)
        files = {
            str(p.relative_to(d)): file_sha256(p)
            for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "COMMIT" and not p.name.startswith(".")
        }
        body = json.dumps({"round": round_, "files": files}, indent=1, sort_keys=True).encode()
        write_atomic(d / "COMMIT", body)
        return hashlib.sha256(body).hexdigest()

    def verify_round(self, round_: int) -> None:
        """Check a committed round's files against COMMIT; raise naming the bad file."""
        row = self.round_row(round_)
        d = self.round_dir(round_)
        hint = (
            f"The round is damaged; restore {d} from a backup, or start a new run dir "
            "(resuming from a damaged round could silently corrupt the memory)."
        )
        if row is None:
            raise LedgerError(f"round {round_} has no commit row in {self.run_dir / 'ledger.sqlite'}")
        commit = d / "COMMIT"
        if not commit.exists():
            raise LedgerError(f"{commit} is missing: round {round_} has no commit marker. {hint}")
        body = commit.read_bytes()
        if hashlib.sha256(body).hexdigest() != row["commit_sha"]:
            raise LedgerError(f"{commit} does not match the checksum recorded in the ledger. {hint}")
        try:
            listing = json.loads(body)["files"]
        except (ValueError, KeyError) as exc:
            raise LedgerError(f"{commit} is not a valid commit marker ({exc}). {hint}") from None
        for rel, sha in listing.items():
            p = d / rel
            if not p.exists():
                raise LedgerError(f"{p} is missing (listed in {commit}). {hint}")
            if file_sha256(p) != sha:
                raise LedgerError(f"{p} fails its checksum (truncated or altered). {hint}")

    def commit_round(
        self,
        round_: int,
        new_ids: Sequence[str],
        review_ids: Sequence[str],
        metrics: Mapping[str, Any],
        scheduler_state: Mapping[str, Any],
        states: Sequence[ReviewState],
        adapter: AdapterRef | None,
        attempts: Mapping[str, FailedAttempt | None] | None = None,
    ) -> None:
        """``attempts``: task id -> its new last failing attempt, or None to forget the one
        kept (written in the round's transaction, so an unfinished round leaves none)."""
        commit_sha = self.seal_round_files(round_)
        checkpoint("commit-files")
        with self.transaction():
            self._upsert_states(states, round_)
            if attempts:
                self._write_attempts(attempts)
            self.db.execute(
                "INSERT INTO rounds VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    round_,
                    time.time(),
                    json.dumps(list(new_ids)),
                    json.dumps(list(review_ids)),
                    json.dumps(dict(metrics), sort_keys=True, default=_json_default),
                    json.dumps(dict(scheduler_state), sort_keys=True),
                    adapter.path if adapter else None,
                    adapter.sha256 if adapter else None,
                    commit_sha,
                ),
            )
        checkpoint("commit-db")

    def _upsert_states(self, states: Sequence[ReviewState], round_: int) -> None:
        delta: dict[str, float] = {}
        for old in self.get_states([s.task_id for s in states]).values():
            for k, v in state_totals(old).items():
                delta[k] = delta.get(k, 0.0) - v
        for new in states:
            for k, v in state_totals(new).items():
                delta[k] = delta.get(k, 0.0) + v
        self.db.executemany(
            "INSERT INTO totals VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            sorted(delta.items()),
        )
        rows = [memory_row(s) for s in states]
        self.db.executemany("INSERT OR REPLACE INTO memory VALUES (?,?,?,?,?,?,?,?,?)", rows)
        self.db.executemany(
            "INSERT OR REPLACE INTO memory_log VALUES (?,?,?)", [(round_, r[0], r[-1]) for r in rows]
        )

    def _write_attempts(self, attempts: Mapping[str, FailedAttempt | None]) -> None:
        for tid, a in sorted(attempts.items()):
            if a is None:
                self.db.execute("DELETE FROM failed_attempts WHERE task_id=?", (tid,))
            elif a.task_id != tid:
                raise LedgerError(f"failed attempt of task {a.task_id!r} filed under task {tid!r}")
            else:
                self.db.execute("INSERT OR REPLACE INTO failed_attempts VALUES (?,?,?,?,?,?,?)",
                                (tid, a.round, a.index, a.status, float(a.pass_rate), a.code, a.excerpt))

    def failed_attempts(self, task_ids: Sequence[str]) -> dict[str, FailedAttempt]:
        """The last failing attempt kept for each of ``task_ids`` that has one (primary-key lookups)."""
        out: dict[str, FailedAttempt] = {}
        ids = list(task_ids)
        for i in range(0, len(ids), 900):  # SQLite's host-parameter limit
            chunk = ids[i : i + 900]
            q = ("SELECT task_id, round, candidate_index, status, pass_rate, code, excerpt FROM failed_attempts "
                 f"WHERE task_id IN ({','.join('?' * len(chunk))})")
            for row in self.db.execute(q, chunk):
                out[row[0]] = FailedAttempt(*row)
        return out

    # ------------------------------------------------------------------ stages / validation
    def commit_stage(self, name: str, metrics: Mapping[str, Any], adapter: AdapterRef | None) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO stages VALUES (?,?,?,?,?)",
                (name, time.time(), json.dumps(dict(metrics), sort_keys=True, default=_json_default),
                 adapter.path if adapter else None, adapter.sha256 if adapter else None),
            )

    def stage(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT metrics, adapter_path, adapter_sha FROM stages WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return {"metrics": json.loads(row[0]), "adapter": AdapterRef(row[1], row[2]) if row[1] else None}

    def record_validation(self, round_: int, metrics: Mapping[str, Any]) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO validations VALUES (?, ?)",
                (round_, json.dumps(dict(metrics), sort_keys=True, default=_json_default)),
            )

    def validations(self) -> dict[int, dict[str, Any]]:
        return {r: json.loads(m) for r, m in self.db.execute("SELECT round, metrics FROM validations ORDER BY round")}

    def record_retention_probe(self, round_: int, result: Mapping[str, Any]) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO retention_probes VALUES (?, ?)",
                (round_, json.dumps(dict(result), sort_keys=True, default=_json_default)),
            )

    def retention_probes(self) -> dict[int, dict[str, Any]]:
        """Every recorded retention probe by round (rounds + 1: the final one); each holds
        ``share``, ``ci95_low``/``ci95_high`` (Wilson) and ``per_task: {task_id: [n_passed,
        n_samples]}`` (see :mod:`srscode.core.retention_probe`)."""
        q = "SELECT round, result FROM retention_probes ORDER BY round"
        return {r: json.loads(m) for r, m in self.db.execute(q)}

    def ever_solved(self, threshold: float, up_to_round: int) -> list[str]:
        """Tasks whose pass rate reached ``threshold`` at some review up to ``up_to_round``
        (from ``memory_log``, every committed review), sorted."""
        q = ("SELECT DISTINCT task_id FROM memory_log WHERE round <= ? "
             "AND json_extract(state, '$.last_pass_rate') >= ? ORDER BY task_id")
        return [r[0] for r in self.db.execute(q, (up_to_round, threshold))]

    # ------------------------------------------------------------------ memory
    def get_states(self, task_ids: Sequence[str]) -> dict[str, ReviewState]:
        out: dict[str, ReviewState] = {}
        ids = list(task_ids)
        for i in range(0, len(ids), 900):  # SQLite's host-parameter limit
            chunk = ids[i : i + 900]
            q = f"SELECT task_id, state FROM memory WHERE task_id IN ({','.join('?' * len(chunk))})"
            for tid, text in self.db.execute(q, chunk):
                out[tid] = state_from_json(text)
        return out

    def all_states(self) -> Iterator[ReviewState]:
        for (text,) in self.db.execute("SELECT state FROM memory ORDER BY task_id"):
            yield state_from_json(text)

    def totals(self) -> dict[str, float]:
        return {k: v for k, v in self.db.execute("SELECT key, value FROM totals")}

    def memory_counts(self, step: int) -> dict[str, int]:
        row = self.db.execute(
            "SELECT COUNT(*), SUM(graduated), SUM(skipped),"
            " SUM(CASE WHEN active=1 AND due<=? THEN 1 ELSE 0 END) FROM memory",
            (step,),
        ).fetchone()
        seen, grad, skip, due = (int(x or 0) for x in row)
        return {"seen": seen, "graduated": grad, "skipped": skip, "due": due, "active": seen - grad - skip}

    # MemoryView for schedulers
    def is_seen(self, task_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM memory WHERE task_id=?", (task_id,)).fetchone() is not None

    def due(self, step: int, limit: int) -> list[str]:
        q = "SELECT task_id FROM memory WHERE active=1 AND due<=? ORDER BY priority, task_id LIMIT ?"
        return [r[0] for r in self.db.execute(q, (step, limit))]

    def count_due(self, step: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM memory WHERE active=1 AND due<=?", (step,)).fetchone()[0])


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
            except BaseException:  # e.g. disk full at commit: leave no half-open transaction
                if self.db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.db.execute("ROLLBACK")
                raise
        elif self.db.in_transaction:  # after an I/O error SQLite may have rolled back already
            self.db.execute("ROLLBACK")
