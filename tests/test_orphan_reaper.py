"""The orphan reaper: processes a library started are killed when their owner is SIGKILLed
(vLLM's engine core outlived its parent), and nothing else is."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from srscode.plugins.lib.orphan_reaper import descendants, proc_start_time

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the reaper reads /proc (Linux)")

OWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    from srscode.plugins.lib.orphan_reaper import descendants, reap_when_gone
    before = descendants()
    # a "library" child that starts a grandchild, like vLLM's engine core and its worker
    lib = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
    time.sleep(1.0)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                                 stdout=subprocess.DEVNULL)
    reap_when_gone(descendants() - before - {bystander.pid})
    print(" ".join(str(p) for p in sorted(descendants() - before - {bystander.pid})), bystander.pid, flush=True)
    time.sleep(600)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_a_sigkilled_owner_takes_the_processes_it_registered_with_it():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    line = owner.stdout.readline().split()
    *watched, bystander = [int(x) for x in line]
    try:
        lib = watched  # the library's child and grandchild, and the watchdog itself
        assert len(lib) >= 3, f"the library child, its grandchild and the watchdog should be listed: {line}"
        assert all(_alive(p) for p in lib)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert _wait_gone(lib) == [], "the library's processes outlived their SIGKILLed owner"
        # EOF on our stdout: no reaped process held the owner's pipe open
        assert owner.stdout.read() == ""
        assert _alive(bystander), "a process that was not registered was killed"
    finally:
        for p in [bystander, *watched]:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_a_reused_pid_is_not_killed(tmp_path):
    """The watchdog checks the start time it was given: a new process with the old pid lives."""
    from srscode.plugins.lib import orphan_reaper

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        r = orphan_reaper.Reaper()
        # register the pid with a start time that is not the live process's: as if the pid were reused
        assert proc_start_time(victim.pid) is not None
        r._proc.stdin.write(f"[[{victim.pid}, \"1\"]]\n".encode())
        r._proc.stdin.close()  # the owner is gone
        r._proc.wait(timeout=10)
        assert _alive(victim.pid)
    finally:
        victim.kill()
        victim.wait()


def test_descendants_sees_children_and_grandchildren():
    child = subprocess.Popen([sys.executable, "-c",
                              "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
                              "'import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        assert {child.pid, grandchild} <= descendants()
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.kill()
        child.wait()
