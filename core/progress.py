"""Progress displays for long stages; stages never look at the terminal themselves.

How a stage uses it (``ctx`` is the :class:`~srscode.core.context.StageContext` its
factory received)::

    with ctx.progress("generate", total=len(prompts) * n, unit="cand") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

    with ctx.progress("evaluate", total=len(candidates), unit="cand") as bar:
        for verdict in verdicts_as_they_finish:
            bar.advance(1, **{verdict.status: 1})   # keyword counts are summed: passed=12 failed=3

    with ctx.progress("train", total=max_steps, unit="step") as bar:
        for step, loss in steps:
            bar.advance(1)
            bar.set(loss=loss)                       # ``set`` values replace, they are not summed

``advance``/``set`` are cheap (no I/O unless a render is due) and thread-safe, so a
worker pool may call them. ``total`` may be ``None`` when unknown; ``set_total`` fixes
it later.

Where it goes, decided once per bar by :func:`choose_mode`:

* ``rich``: live bars on stderr (rich) when stderr is a terminal, not ``quiet`` and
  not CI (env ``CI`` set);
* ``plain``: otherwise, one line per update at most every ``interval`` seconds plus a
  final line, through the ``srscode.progress`` logger at INFO (so ``--quiet``, which
  raises the log level to WARNING, silences it). Plain lines hold no control
  characters: they are safe for CI logs and files.
* ``SRSCODE_PROGRESS=rich|plain|off`` overrides the choice.

While rich bars are live, log records must go through the same console or they tear
the display: the CLI installs :func:`configure_logging` instead of ``basicConfig``.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Literal, TextIO

Mode = Literal["rich", "plain", "off"]

log = logging.getLogger("srscode.progress")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATEFMT = "%H:%M:%S"
PLAIN_INTERVAL_S = 10.0

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_prefix = ""


def set_prefix(text: str) -> None:
    """Text put before every bar's name, e.g. ``"round 3"`` (the console logger sets it
    when a stage starts, so stages need not know the round)."""
    global _prefix
    _prefix = text


def clean(text: str) -> str:
    """One line of printable text: control characters (ESC, CR, newlines...) become spaces."""
    return _CONTROL.sub(" ", text)


def choose_mode(quiet: bool = False, stream: TextIO | None = None, env: dict[str, str] | None = None) -> Mode:
    env = os.environ if env is None else env  # type: ignore[assignment]
    forced = (env.get("SRSCODE_PROGRESS") or "").strip().lower()
    if forced in ("rich", "plain", "off"):
        return forced  # type: ignore[return-value]
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        tty = False
    if quiet or not tty or env.get("CI"):
        return "plain"
    return "rich"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """A progress bar of one stage. Subclasses render; this class keeps the numbers."""

    def __init__(self, name: str, total: int | None = None, unit: str = "it",
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.label = f"{_prefix} {name}".strip()
        self.total = total
        self.unit = unit
        self.done = 0
        self.counts: dict[str, float] = {}
        self.values: dict[str, Any] = {}
        self.closed = False
        self._clock = clock
        self.started = clock()
        self._lock = threading.Lock()

    # --------------------------------------------------------------- public API
    def advance(self, n: int = 1, **counts: float) -> None:
        """``n`` more units done; keyword counts are added to running totals."""
        with self._lock:
            self.done += n
            for k, v in counts.items():
                self.counts[k] = self.counts.get(k, 0) + v
            self._update()

    def set(self, **values: Any) -> None:
        """Show these values as they are (e.g. ``loss``), replacing earlier ones."""
        with self._lock:
            self.values.update(values)
            self._update()

    def set_total(self, total: int | None) -> None:
        with self._lock:
            self.total = total
            self._update()

    def close(self, error: BaseException | None = None) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._close(error)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc)

    # --------------------------------------------------------------- numbers
    @property
    def elapsed(self) -> float:
        return max(self._clock() - self.started, 0.0)

    @property
    def rate(self) -> float:
        e = self.elapsed
        return self.done / e if e > 0 else 0.0

    def fields_text(self) -> str:
        items = {**dict(sorted(self.counts.items())), **self.values}  # stable order: failed, passed, timeout
        return " ".join(f"{k}={_fmt_value(v)}" for k, v in items.items())

    def line(self, final: bool = False, error: BaseException | None = None) -> str:
        """The plain one-line rendering, e.g.
        ``round 2 evaluate: 120/480 cand (25%) 12.3 cand/s eta 0:29 passed=10 failed=110``."""
        done = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{self.label}:", done, self.unit]
        if self.total:
            parts.append(f"({100 * self.done / self.total:.0f}%)")
        parts.append(f"{self.rate:.3g} {self.unit}/s")
        if final:
            parts.append(f"in {_fmt_duration(self.elapsed)}")
        elif self.total and self.rate > 0 and self.done < self.total:
            parts.append(f"eta {_fmt_duration((self.total - self.done) / self.rate)}")
        text = self.fields_text()
        if text:
            parts.append(text)
        if error is not None:
            parts.append(f"(stopped: {type(error).__name__})")
        return clean(" ".join(parts))

    # --------------------------------------------------------------- rendering hooks
    def _update(self) -> None:  # called with the lock held
        pass

    def _close(self, error: BaseException | None) -> None:
        pass


class NullProgress(Progress):
    """Counts, shows nothing (``SRSCODE_PROGRESS=off``)."""


class PlainProgress(Progress):
    """Rate-limited log lines without control characters."""

    def __init__(self, name: str, total: int | None = None, unit: str = "it", *,
                 interval: float = PLAIN_INTERVAL_S, logger: logging.Logger = log,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name, total, unit, clock)
        self.interval = interval
        self.logger = logger
        self._last = self.started

    def _update(self) -> None:
        now = self._clock()
        finished = self.total is not None and self.done >= self.total  # the final line follows
        if now - self._last >= self.interval and not finished:
            self._last = now
            self.logger.info("%s", self.line())

    def _close(self, error: BaseException | None) -> None:
        self.logger.info("%s", self.line(final=True, error=error))


# ------------------------------------------------------------------------- rich


_console: Any = None
_displays: dict[int, "_RichDisplay"] = {}
_displays_lock = threading.Lock()


def get_console() -> Any:
    """The process-wide rich console on stderr that bars and log records share."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


class _RichDisplay:
    """One live rich display per console, shared by every open bar on it."""

    def __init__(self, console: Any):
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress as RichProgressDisplay, TaskProgressColumn,
            TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        self.progress = RichProgressDisplay(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=console,
            # log records reach the console through configure_logging's handler; rich's
            # own stdout/stderr redirection would double-print them
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.open = 0

    def add(self, bar: "RichProgress") -> Any:
        if self.open == 0:
            self.progress.start()
        self.open += 1
        return self.progress.add_task(bar.label, total=bar.total, unit=bar.unit, rate="", extra="")

    def remove(self, task_id: Any) -> None:
        self.open -= 1
        if self.open <= 0:
            self.open = 0
            self.progress.refresh()
            self.progress.stop()
            # a stopped display keeps its finished rows on screen; start the next one fresh
            for t in list(self.progress.task_ids):
                self.progress.remove_task(t)


class RichProgress(Progress):
    """A live bar (rich) on the shared stderr console."""

    def __init__(self, name: str, total: int | None = None, unit: str = "it", *, console: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name, total, unit, clock)
        console = console if console is not None else get_console()
        with _displays_lock:
            self.display = _displays.get(id(console))
            if self.display is None:
                self.display = _displays[id(console)] = _RichDisplay(console)
            self.task_id = self.display.add(self)

    def _update(self) -> None:
        self.display.progress.update(
            self.task_id, completed=self.done, total=self.total,
            rate=f"{self.rate:.3g} {self.unit}/s", extra=self.fields_text(),
        )

    def _close(self, error: BaseException | None) -> None:
        self._update()
        if error is not None:
            self.display.progress.update(self.task_id, description=f"{self.label} (stopped)")
        with _displays_lock:
            self.display.remove(self.task_id)


def make_progress(name: str, total: int | None = None, unit: str = "it", *, quiet: bool = False,
                  mode: Mode | None = None, console: Any = None, interval: float = PLAIN_INTERVAL_S,
                  clock: Callable[[], float] = time.monotonic) -> Progress:
    """A progress bar for stage ``name``; see the module docstring. ``mode``, ``console``
    and ``clock`` are for tests and embedding; stages call ``ctx.progress``."""
    mode = mode or choose_mode(quiet, console.file if console is not None else None)
    if mode == "rich":
        return RichProgress(name, total, unit, console=console, clock=clock)
    if mode == "plain":
        return PlainProgress(name, total, unit, interval=interval, clock=clock)
    return NullProgress(name, total, unit, clock)


# ------------------------------------------------------------------------- logging


class ConsoleLogHandler(logging.Handler):
    """Log records printed through the shared rich console, above any live bars."""

    def __init__(self, console: Any = None, level: int = logging.NOTSET):
        super().__init__(level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from rich.text import Text

            console = self.console if self.console is not None else get_console()
            console.print(Text(self.format(record)), soft_wrap=True)
        except Exception:  # logging must never raise
            self.handleError(record)


def configure_logging(level: int, quiet: bool = False, fmt: str = LOG_FORMAT, datefmt: str = LOG_DATEFMT) -> None:
    """What the CLI calls instead of ``logging.basicConfig``: in rich mode, log records go
    through the console the bars use; otherwise a plain stderr handler."""
    root = logging.getLogger()
    root.setLevel(level)
    for h in list(root.handlers):
        if getattr(h, "_srscode", False):
            root.removeHandler(h)
    handler: logging.Handler
    handler = ConsoleLogHandler() if choose_mode(quiet) == "rich" else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt))
    handler._srscode = True  # type: ignore[attr-defined]
    root.addHandler(handler)
