"""Starting or resuming a run in its run dir (rank 0, which holds the ledger): the stored
config, the committed rounds' integrity, and the state the next round continues from
(the scheduler's state, the adapter; the memory is the ledger's)."""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import yaml

from .config import diff_keys
from .errors import LedgerError
from .ledger import FINAL_DPO, Ledger, config_hash, remove_stale_temp, write_atomic, write_json
from .task_loading import Split
from .types import AdapterRef, Scheduler

log = logging.getLogger("srscode.engine")


def resume_point(ledger: Ledger, config: Mapping[str, Any], force_keys: Sequence[str]) -> int:
    """The last committed round (0 for a new run) after checking the config and every
    committed round, and removing what an interrupted attempt left."""
    check_config(ledger, config, force_keys)
    last = ledger.last_round()
    # every committed round, not only the last: earlier rounds' files are read again
    # (DPO pairs), and a damaged one must stop the run before anything builds on it
    for r in range(1, last + 1):
        ledger.verify_round(r)
    removed = ledger.remove_uncommitted()
    if removed:
        log.warning("removed %d uncommitted round folder(s) from an interrupted attempt: %s",
                    len(removed), ", ".join(p.name for p in removed))
    remove_stale_temp(ledger.run_dir)  # we hold the lock: any temp file is a dead writer's
    return last


def check_config(ledger: Ledger, config: Mapping[str, Any], force_keys: Sequence[str]) -> None:
    """Store a new run's config; refuse a resume whose config changed in keys not forced."""
    run_dir = ledger.run_dir
    stored = ledger.get_meta("config")
    if stored is None:
        # files first, the ledger row last: a crash in between leaves no stored config,
        # so the resumed run writes the files again
        write_json(run_dir / "config.json", config)
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False).encode())
        ledger.set_meta(config=config, config_hash=config_hash(config), created=time.time(), schema=1)
        return
    changed = diff_keys(stored, config)
    if not changed:
        return
    refused = [k for k in changed if not any(k == a or k.startswith(a + ".") for a in force_keys)]
    if refused:
        raise LedgerError(
            f"{run_dir} was started with a different config: {', '.join(refused)} changed "
            f"(stored in {run_dir / 'config.yaml'}). Resume with the same config, use a new "
            f"--run-dir, or allow the change with --force {','.join(refused)}."
        )
    history = ledger.get_meta("config_changes") or []
    history.append({"at": time.time(), "keys": changed, "after_round": ledger.last_round()})
    ledger.set_meta(config=config, config_hash=config_hash(config), config_changes=history)
    write_json(run_dir / "config.json", config)
    log.warning("config keys changed with --force: %s", ", ".join(changed))


def restore(
    ledger: Ledger, scheduler: Scheduler, split: Split, seed: int, force_keys: Sequence[str], last: int,
) -> AdapterRef | None:
    """Set the scheduler up as after round ``last`` and return that round's adapter; a new
    run records its split, a resumed one must find the same."""
    stored_split = ledger.get_meta("split_sha256")
    if stored_split is None:
        ledger.set_meta(split_sha256=split.digest, n_train=len(split.train), n_val=len(split.val))
    elif stored_split != split.digest and "data" not in force_keys:
        raise LedgerError(
            f"{ledger.run_dir}: the training split differs from the one the run started with "
            "(the dataset changed). Use the same data, a new --run-dir, or --force data."
        )
    # only rank 0 schedules: the scheduler reads the ledger
    scheduler.setup(split.train, seed)
    if not last:
        return None
    row = ledger.round_row(last)
    assert row is not None
    scheduler.load_state_dict(row["scheduler_state"])
    return AdapterRef(row["adapter_path"], row["adapter_sha"]) if row["adapter_path"] else None


def validated(ledger: Ledger, key: int) -> bool:
    """Whether validation ``key`` (0 before training, a round, rounds + 1 final) is recorded."""
    return key in ledger.validations()


def final_dpo(ledger: Ledger) -> tuple[bool, AdapterRef | None]:
    """Whether the final DPO stage is committed, and its adapter."""
    row = ledger.stage(FINAL_DPO)
    return (row is not None, row["adapter"] if row else None)
