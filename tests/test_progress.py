"""The progress API: plain mode (rate-limited, no control characters), rich mode on a
fake terminal console, the mode choice, and log records routed around live bars."""
from __future__ import annotations

import io
import logging
import re
import threading

import pytest
from rich.console import Console

from srscode.core import progress
from srscode.core.config import RunConfig
from srscode.core.context import StageContext
from srscode.core.progress import (
    ConsoleLogHandler, NullProgress, PlainProgress, RichProgress, choose_mode, make_progress,
)

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # anything but "\n"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture(autouse=True)
def _no_prefix():
    progress.set_prefix("")
    yield
    progress.set_prefix("")


def test_mode_choice():
    tty, pipe = FakeStream(True), FakeStream(False)
    assert choose_mode(False, tty, {}) == "rich"
    assert choose_mode(False, pipe, {}) == "plain"
    assert choose_mode(True, tty, {}) == "plain"  # --quiet
    assert choose_mode(False, tty, {"CI": "true"}) == "plain"
    assert choose_mode(False, pipe, {"SRSCODE_PROGRESS": "rich"}) == "rich"
    assert choose_mode(False, tty, {"SRSCODE_PROGRESS": "off"}) == "off"
    assert isinstance(make_progress("x", 3, mode="off"), NullProgress)


def test_plain_mode_is_rate_limited_and_has_no_control_characters(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="srscode.progress")
    progress.set_prefix("round 2")
    # a hostile name and count key must not smuggle escapes or line breaks into a log
    with make_progress("eval\x1b[31mred\r", total=100, unit="cand", mode="plain", interval=10, clock=clock) as bar:
        assert isinstance(bar, PlainProgress)
        for i in range(100):
            clock.t += 0.5  # 50 s in all: one line per 10 s, then the final one
            bar.advance(1, passed=i % 2, **{"fail\nure": 1 - i % 2})
            bar.set(loss=1.0 / (i + 1))
    lines = [r.getMessage() for r in caplog.records if r.name == "srscode.progress"]
    assert 4 <= len(lines) <= 6, lines
    for line in lines:
        assert not CONTROL.search(line) and "\n" not in line, repr(line)
    assert lines[0].startswith("round 2 eval [31mred: ") and "20/100 cand (20%)" in lines[0] and "eta 0:40" in lines[0]
    assert lines[-1].endswith("fail ure=50 passed=50 loss=0.01") and "100/100" in lines[-1] and "in 0:50" in lines[-1]


def test_plain_final_line_names_an_error(caplog):
    caplog.set_level(logging.INFO, logger="srscode.progress")
    with pytest.raises(KeyError):
        with make_progress("train", total=None, unit="step", mode="plain") as bar:
            bar.advance(3)
            raise KeyError("x")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "srscode.progress"]
    assert "train: 3 step" in line and "(stopped: KeyError)" in line and "%" not in line


def test_rich_mode_draws_bars_on_a_terminal_console():
    console = Console(file=io.StringIO(), force_terminal=True, width=160, color_system="standard")
    progress.set_prefix("round 1")
    with make_progress("evaluate", total=8, unit="cand", mode="rich", console=console) as bar:
        assert isinstance(bar, RichProgress)
        for _ in range(8):
            bar.advance(1, passed=1)
        with make_progress("train", total=2, unit="step", mode="rich", console=console) as inner:  # two at once
            inner.advance(2)
            inner.set(loss=0.25)
    out = console.file.getvalue()
    assert "\x1b[" in out  # a live display: cursor movement and colour
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "round 1 evaluate" in text and "8/8" in text and "passed=8" in text
    assert "round 1 train" in text and "2/2" in text and "loss=0.25" in text
    # the display stopped with the last bar; the next bar starts a fresh one
    display = progress._displays[id(console)]
    assert display.open == 0 and not display.progress.live.is_started


def test_context_progress_follows_quiet(monkeypatch):
    monkeypatch.delenv("SRSCODE_PROGRESS", raising=False)
    ctx = StageContext(config=RunConfig(), quiet=True)
    bar = ctx.progress("generate", total=4, unit="cand")
    assert isinstance(bar, PlainProgress) and bar.total == 4 and bar.unit == "cand"
    bar.close()


def test_advance_is_thread_safe():
    bar = make_progress("evaluate", total=4000, mode="off")
    threads = [threading.Thread(target=lambda: [bar.advance(1, passed=1) for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.done == 4000 and bar.counts["passed"] == 4000


def test_log_records_print_through_the_bar_console():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    logger = logging.getLogger("srscode.test_progress")
    handler = ConsoleLogHandler(console)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        with make_progress("generate", total=2, mode="rich", console=console) as bar:
            logger.warning("[bold]not markup[/bold]")
            bar.advance(2)
    finally:
        logger.removeHandler(handler)
    out = console.file.getvalue()
    assert "WARNING [bold]not markup[/bold]" in out  # printed verbatim, above the live bar
