"""The files of one round's folder, ``rounds/NNNNNN/``: the one writer of them.

Only rank 0 writes (a writer built with ``writes=False`` on the other ranks does nothing),
each file once, atomically, when its content is final for the whole run, whatever the
number of ranks: ``candidates.jsonl`` and ``verdicts.jsonl`` are written after the
ranks' shares were gathered. The trainers write ``adapter/`` and ``adapter-dpo/`` into
:attr:`RoundFiles.folder` themselves; the ledger seals every file (``COMMIT``) when the
round commits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .ledger import read_jsonl, record, round_dir, write_json, write_jsonl
from .types import Candidate, DPOPair, Prompt, ReviewState, Schedule, Verdict


class RoundFiles:
    def __init__(self, run_dir: Path, round_: int, writes: bool = True):
        self.round = round_
        self.folder = round_dir(run_dir, round_)
        self.writes = writes

    def schedule(self, schedule: Schedule) -> None:
        if self.writes:
            write_json(self.folder / "schedule.json",
                       {"round": self.round, "new": list(schedule.new), "review": list(schedule.review)})

    def prompts(self, prompts: Iterable[Prompt]) -> None:
        self._rows("prompts.jsonl", prompts)

    def generation(self, candidates: Sequence[Candidate], verdicts: Sequence[Verdict]) -> None:
        self._rows("candidates.jsonl", candidates)
        self._rows("verdicts.jsonl", verdicts)

    def memory(self, states: Iterable[ReviewState]) -> None:
        self._rows("memory.jsonl", states)

    def pairs(self, pairs: Iterable[DPOPair]) -> None:
        self._rows("pairs.jsonl", pairs)

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        if self.writes:
            write_json(self.folder / "metrics.json", metrics)

    def _rows(self, name: str, rows: Iterable[Any]) -> None:
        if self.writes:
            write_jsonl(self.folder / name, (record(r) for r in rows))


def committed_pairs(run_dir: Path, first: int, last: int) -> list[DPOPair]:
    """The DPO pairs of committed rounds ``first..last`` (rounds before 1 do not exist)."""
    out: list[DPOPair] = []
    for r in range(max(1, first), last + 1):
        path = round_dir(run_dir, r) / "pairs.jsonl"
        if path.exists():
            out.extend(DPOPair(**row) for row in read_jsonl(path))
    return out
