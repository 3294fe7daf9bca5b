"""A benchmark's output folder, and its progress printed and written to its log file at once
(the device returns files, and a run cut off at its time limit still leaves the log)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, TextIO

_file: TextIO | None = None


def open_log(path: Path, mode: str = "w") -> TextIO:
    global _file
    _file = open(path, mode, encoding="utf-8")
    return _file


def out_dir(ap: argparse.ArgumentParser, out: Path | None, smoke: bool, name: str) -> Path:
    """``--out``, made if missing; under ``--smoke`` without it, a fresh temp dir (printed)."""
    if out is None:
        if not smoke:
            ap.error("--out DIR is required (only --smoke picks a temp dir)")
        out = Path(tempfile.mkdtemp(prefix=f"srscode-{name}-smoke-"))
        print(f"smoke run: writing to {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def log_file() -> TextIO | None:
    return _file


def close_log() -> None:
    global _file
    if _file is not None:
        _file.close()
        _file = None


def say(*parts: Any) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    if _file is not None:
        _file.write(line + "\n")
        _file.flush()
