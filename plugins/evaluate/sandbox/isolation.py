"""Operating-system isolation of candidates, and a probe that reports what is active.

Every step is unprivileged or uses only what the evaluator's own user already has; a
step the OS refuses is skipped and reported, never required. On Linux:

Once per worker (the namespaces are created before the worker forks its candidates):

* user (when not root) + mount + network + PID namespaces (``unshare``). The worker is
  PID 1 of its PID namespace: candidates cannot see or signal anything outside it (not
  the engine, not another worker's candidates), cannot kill the worker (the kernel
  ignores SIGKILL sent to a namespace's init from inside), and every orphan comes back
  to the worker, which kills and reaps it after each candidate;
* the network namespace is empty (a loopback that is down): no network;
* in the mount namespace: a fresh ``/proc`` that shows only the namespace's processes,
  then a private root (:func:`build_private_root`): an empty tmpfs holding read-only
  binds of only what Python and pytest need (the interpreter, every ``sys.path`` entry,
  the shared libraries and their data, the sandbox package, a few device nodes, the tz
  database) and the worker's directory, writable only in the candidate directory; the
  worker ``pivot_root``s into it and detaches the host's root, so no other path of the
  host can be reached, by any name. Where that is refused, the fallback of before: the
  user's home directory hidden behind an empty tmpfs (only the Python installation's
  paths bound back) and every mount remounted read-only except the candidate directory;
* the worker makes itself non-dumpable so a candidate of the same uid cannot ptrace it.

Per candidate (in the forked child, before any candidate code runs):

* a new session (``setsid``) so its whole process group can be killed;
* ``PR_SET_PDEATHSIG`` so it cannot outlive the worker;
* when the evaluator runs as root, the candidate drops to an unprivileged uid (65534);
* a nested user namespace: the candidate holds no capability over the worker's mounts
  or network, and its process-count limit (``RLIMIT_NPROC``) counts only its own
  processes;
* ``PR_SET_NO_NEW_PRIVS``.

Where PID namespaces are unavailable the worker is a child subreaper
(``PR_SET_CHILD_SUBREAPER``) instead, which still catches escaped daemons.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from .limits import hidden_devices

LINUX = sys.platform.startswith("linux")

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2

# pivot_root has no libc wrapper; its number per architecture (asm-generic: 41)
SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "i386": 217, "i686": 217, "aarch64": 41, "arm64": 41, "riscv64": 41,
                  "armv7l": 218, "ppc64le": 203, "ppc64": 203, "s390x": 217, "loongarch64": 41}

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

NOBODY = 65534

_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(libc().unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def umount_detached(target: str) -> None:
    _check(libc().umount2(target.encode(), ctypes.c_int(MNT_DETACH)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = SYS_PIVOT_ROOT.get(platform.machine().lower())
    if nr is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown system call number on {platform.machine()}")
    _check(libc().syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()), "pivot_root")


def prctl(option: int, arg: int) -> None:
    _check(libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def set_subreaper() -> bool:
    if not LINUX:
        return False
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        return True
    except OSError:
        return False


def set_pdeathsig(sig: int) -> None:
    if LINUX:
        try:
            prctl(PR_SET_PDEATHSIG, sig)
        except OSError:
            pass


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def map_ids(uid: int, gid: int) -> None:
    """Map our own uid/gid into the user namespace we just created (as ``unshare -U``)."""
    try:
        _write("/proc/self/setgroups", "deny")
    except FileNotFoundError:
        pass
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


# ----------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Which isolation steps a worker applies (decided by the probe)."""

    as_root: bool = False
    namespaces: int = 0  # CLONE_* flags the worker unshares before it forks itself
    proc: bool = False  # mount a fresh /proc (needs the PID namespace)
    hide_home: bool = False
    readonly_fs: bool = False
    drop_uid: int | None = None  # root only: the uid candidates run as
    nested_user: bool = False  # per candidate
    home: str = ""
    keep: list[str] = field(default_factory=list)  # paths under home bound back
    private_root: bool = False  # pivot into a root that shows only ``view`` (needs ``proc``)
    view: list[str] = field(default_factory=list)  # host paths the private root shows, by name

    @property
    def pidns(self) -> bool:
        return bool(self.namespaces & CLONE_NEWPID)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mountinfo() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) > 4:
                mp = parts[4]
                if "\\" in mp:  # octal escapes (\040 for a space)
                    mp = mp.encode().decode("unicode_escape")
                points.append(mp)
    return points


def _locked_flags(path: str) -> int:
    """Flags a remount inside a user namespace must keep (the kernel refuses to clear them)."""
    try:
        f = os.statvfs(path).f_flag
    except OSError:
        return 0
    out = 0
    for st, ms in ((1, MS_RDONLY), (2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            out |= ms
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def keep_paths(home: str, extra: list[str]) -> list[str]:
    """Paths under ``home`` the sandboxed processes still need: the Python
    installation, every ``sys.path`` entry, our own package, ``extra``."""
    if not home or home == "/":
        return []
    cands = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path, *extra]
    try:
        import srscode

        cands += [os.path.dirname(p) for p in getattr(srscode, "__path__", [])]
    except Exception:
        pass
    real = sorted({os.path.realpath(p) for p in cands if p and os.path.exists(p)})
    inside = [p for p in real if _under(p, home) and p != home]
    out: list[str] = []
    for p in inside:  # drop paths already covered by a kept ancestor
        if not any(_under(p, q) for q in out):
            out.append(p)
    return out


def _hide_home(home: str, keep: list[str]) -> None:
    # O_PATH descriptors still reach the real directories once the tmpfs covers them
    fds = [(p, os.open(p, os.O_PATH)) for p in keep]
    try:
        mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for p, fd in fds:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "a").close()
            mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
    finally:
        for _, fd in fds:
            os.close(fd)


def _readonly_except(writable: str) -> list[str]:
    """Remount every mount read-only except ``writable`` (bound onto itself first) and
    /proc (the id-map files of a nested user namespace are written there; everything
    else in it needs privileges the candidate does not have)."""
    mount(writable, writable, None, MS_BIND | MS_REC)
    failed = []
    for mp in _mountinfo():
        if _under(mp, writable) or _under(mp, "/proc"):
            continue
        try:
            mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(mp))
        except OSError as exc:
            if mp == "/" or exc.errno not in (errno.ENOENT, errno.EACCES, errno.EINVAL):
                failed.append(mp)
    return failed


# ----------------------------------------------------------------------------- private root

# Directories the dynamic loader searches by default, and what they hold besides
# libraries that a running interpreter may open later (locale archives, gconv modules
# for codecs). Candidates import extension modules lazily (sqlite3, ssl, ctypes, lzma),
# whose libraries cannot all be known when the worker starts, so the directories are
# shown whole (read-only); they hold installed software, not the host's data.
SYSTEM_LIB_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/local/lib64")
# Single files of /etc a candidate's Python reads: the loader's cache (libraries by
# name: ctypes, dlopen) and the local time zone. Everything else of /etc is synthetic.
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("null", "zero", "full", "random", "urandom")


def _mapped_library_dirs() -> list[str]:
    """Directories of the shared objects this process has mapped (libpython outside the
    system directories, a conda or pyenv prefix's ``lib``)."""
    out = set()
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if path.startswith("/") and ".so" in os.path.basename(path) and os.path.isfile(path):
                        out.add(os.path.dirname(path))
    except OSError:
        pass
    return sorted(out)


def view_paths() -> list[str]:
    """Host paths (by the names Python uses for them) a candidate's private root shows,
    read-only: the interpreter and its ``pyvenv.cfg`` (so ``sys.executable`` can run
    again), every ``sys.path`` entry (the standard library, ``lib-dynload``, the
    site-packages of the venv and its base), the sandbox package itself (the worker
    imports its collector lazily; the rest of the project checkout stays hidden), the
    shared-library directories, the tz database."""
    import sysconfig

    names = [sys.executable, os.path.join(sys.prefix, "pyvenv.cfg")]
    names += [p for p in sys.path if p]  # "" is the cwd of `python -c`, never shown
    names.append(os.path.dirname(os.path.abspath(__file__)))
    names += _mapped_library_dirs()
    names += SYSTEM_LIB_DIRS
    names += [p for p in (sysconfig.get_config_var("TZPATH") or "").split(os.pathsep) if p]
    names += ETC_FILES
    out: list[str] = []
    for n in names:
        n = os.path.abspath(n)
        if n not in out and os.path.exists(n):
            out.append(n)
    return out


def _resolve(path: str) -> tuple[list[tuple[str, str]], str]:
    """Walk ``path`` as the kernel does: the symbolic links met on the way (each with its
    target, to be made again inside the private root) and the real path reached."""
    links: list[tuple[str, str]] = []
    todo = [c for c in path.split("/") if c][::-1]
    cur = "/"
    hops = 0
    while todo:
        c = todo.pop()
        if c == ".":
            continue
        if c == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, c)
        if os.path.islink(nxt):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"too many links: {path}")
            target = os.readlink(nxt)
            links.append((nxt, target))
            todo.extend([t for t in target.split("/") if t][::-1])
            if target.startswith("/"):
                cur = "/"
        else:
            cur = nxt
    return links, cur


def view_binds(view: list[str], work: str, home: str = "") -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """The real paths to bind (none inside another), the links to make, and the names
    left out because showing them would show the worker's parent directories (a
    ``sys.path`` entry of ``/tmp``, say), the whole home directory, everything (``/``),
    or a kernel file system (the private root has its own /proc and /dev, no /sys)."""
    reals: list[str] = []
    links: list[tuple[str, str]] = []
    left_out: list[str] = []
    for name in view:
        try:
            chain, real = _resolve(name)
        except OSError:
            left_out.append(name)
            continue
        if (real == "/" or _under(work, real) or _under(real, work) or (home and _under(home, real))
                or any(_under(real, k) for k in ("/proc", "/dev", "/sys"))):
            left_out.append(name)
            continue
        reals.append(real)
        links += [lk for lk in chain if lk not in links]
    binds: list[str] = []
    for p in sorted(set(reals)):
        if not any(_under(p, q) for q in binds):
            binds.append(p)
    return binds, links, left_out


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind_into(root: str, src: str, dst: str | None = None, recursive: bool = True) -> None:
    """Bind host ``src`` at ``root + (dst or src)``, making the mount point in the tmpfs."""
    target = root + (dst or src)
    if os.path.isdir(src):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
    mount(src, target, None, MS_BIND | (MS_REC if recursive else 0))


def _synthetic_etc(etc: str, uids: set[int]) -> None:
    """The few /etc files a candidate's libc may read, made up: user and group names
    (``pwd``, ``getpass``), ``localhost``, the lookup order. The host's are not shown."""
    import pwd

    def name(uid: int) -> str:
        if uid == 0:
            return "root"
        if uid == NOBODY:
            return "nobody"
        try:
            return pwd.getpwuid(uid).pw_name
        except (KeyError, OSError):
            return f"user{uid}"

    users = sorted({0, NOBODY, *uids})
    files = {
        "passwd": "".join(f"{name(u)}:x:{u}:{u}::/nonexistent:/usr/sbin/nologin\n" for u in users),
        "group": "".join(f"{'nogroup' if u == NOBODY else name(u)}:x:{u}:\n" for u in users),
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    }
    for fname, text in files.items():
        path = os.path.join(etc, fname)
        with open(path, "w") as fh:
            fh.write(text)
        os.chmod(path, 0o644)


def build_private_root(plan: Plan, work: str, cand: str) -> list[str]:
    """Pivot this process (alone in its mount namespace) into a root that shows only
    ``plan.view`` read-only, the worker directory ``work`` read-only at its own path,
    ``cand`` writable, a fresh ``/proc``, a few device nodes and a synthetic ``/etc``;
    the host's root is detached afterwards, so no name reaches it any more (unlike
    ``chroot``, which a process with a user namespace of its own can leave).

    The worker keeps its cwd and every path it prepared (``<work>/c/test_solution.py``).
    Returns the real paths bound (for the report)."""
    cwd = os.getcwd()
    root = os.path.join(work, ".root")  # the worker's own directory: nothing else is touched
    _mkdirs(root)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    binds, links, _left_out = view_binds(plan.view, work, plan.home)
    for real in binds:
        _bind_into(root, real)
    for link, target in links:
        if any(_under(os.path.dirname(link), b) for b in binds):
            continue  # inside a bound directory: already there, as on the host
        _mkdirs(root + os.path.dirname(link))
        if not os.path.lexists(root + link):
            os.symlink(target, root + link)
    # the worker's directory (pytest.ini, the prepared candidate paths), then the
    # candidate directory over it, the only writable path
    _bind_into(root, work, recursive=False)
    mount(cand, root + cand, None, MS_BIND)
    # /proc: the fresh one of the PID namespace (mounted over the host's before this)
    _mkdirs(root + "/proc")
    mount("/proc", root + "/proc", None, MS_BIND | MS_REC)
    dev = root + "/dev"
    _mkdirs(dev)
    for d in DEVICES:
        if os.path.exists("/dev/" + d):
            _bind_into(root, "/dev/" + d, recursive=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    _mkdirs(dev + "/shm")  # empty and read-only, as the host's was remounted before
    _mkdirs(root + "/etc")
    uids = {os.geteuid()} | ({plan.drop_uid} if plan.drop_uid is not None else set())
    _synthetic_etc(root + "/etc", uids)
    _mkdirs(root + "/tmp")
    for d in (root, root + "/tmp", root + "/etc", dev, dev + "/shm"):
        os.chmod(d, 0o755)
    old = root + "/.old-root"
    _mkdirs(old)
    pivot_root(root, old)
    os.chdir("/")
    umount_detached("/.old-root")
    os.rmdir("/.old-root")
    failed = []
    for mp in _mountinfo():  # everything read-only but the candidate directory and /proc
        if _under(mp, cand) or _under(mp, "/proc") or mp.startswith("/dev/"):
            continue
        try:
            mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(mp))
        except OSError as exc:
            failed.append(f"{mp}: {exc}")
    if failed:
        raise OSError(errno.EPERM, f"private root: could not remount read-only: {'; '.join(failed[:3])}")
    os.chdir(cwd if os.path.isdir(cwd) else "/")
    return binds


def enter_worker_namespaces(plan: Plan) -> None:
    """In the worker's first process, before it forks the serving worker: the user
    namespace (which the fork inherits) and the PID namespace (which only children
    enter). The mount and network namespaces are the serving worker's own
    (:func:`setup_worker_mounts`), so this first process keeps the normal file system
    and can remove the worker's directory when the worker ends."""
    flags = plan.namespaces & (CLONE_NEWUSER | CLONE_NEWPID)
    if not flags:
        return
    uid, gid = os.geteuid(), os.getegid()
    unshare(flags)
    if flags & CLONE_NEWUSER:
        map_ids(uid, gid)


def setup_worker_mounts(plan: Plan, cand: str) -> None:
    """In the serving worker (PID 1 of its namespace): its own mount and network
    namespaces, a fresh /proc, then the private root (the worker's directory is the
    parent of ``cand``) or, where it is not planned, the hidden home and read-only
    mounts. Runs before the worker imports pytest, so the worker's own start-up
    already proves the private root holds what Python and pytest need."""
    if LINUX and plan.namespaces:
        try:
            prctl(PR_SET_DUMPABLE, 0)  # candidates of the same uid must not ptrace us
        except OSError:
            pass
    own = plan.namespaces & (CLONE_NEWNS | CLONE_NEWNET)
    if own:
        unshare(own)
    if not plan.namespaces & CLONE_NEWNS:
        return
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if plan.proc:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if plan.private_root:
        build_private_root(plan, os.path.dirname(cand), cand)
        return
    if plan.hide_home and plan.home:
        _hide_home(plan.home, plan.keep)
    if plan.readonly_fs:
        failed = _readonly_except(cand)
        if "/" in failed:
            raise OSError(errno.EPERM, "could not remount / read-only")


def enter_candidate(plan: Plan) -> None:
    """Steps of the candidate's own process, before any candidate code runs."""
    if plan.drop_uid is not None:
        os.setgroups([])
        os.setgid(plan.drop_uid)
        os.setuid(plan.drop_uid)
        if plan.nested_user:
            # setuid from root clears "dumpable", which leaves /proc/self/* owned by
            # root and the id-map files below unwritable
            prctl(PR_SET_DUMPABLE, 1)
    if plan.nested_user:
        uid, gid = os.geteuid(), os.getegid()
        unshare(CLONE_NEWUSER)
        map_ids(uid, gid)
    if LINUX:
        try:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        except OSError:
            pass


# ----------------------------------------------------------------------------- probe


def _probe_checks(plan: Plan, work: str, cand: str, marker: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"pid": os.getpid(), "euid": os.geteuid()}
    if marker:  # a host file beside the worker's directory: a private root must hide it
        out["host_visible"] = os.path.lexists(marker)
    try:
        import socket

        out["interfaces"] = [n for _, n in socket.if_nameindex()]
    except OSError:
        out["interfaces"] = ["?"]
    for key, path in (("outside_write", os.path.join(work, "outside-probe")), ("inside_write", os.path.join(cand, "inside-probe"))):
        try:
            with open(path, "w") as fh:
                fh.write("x")
            out[key] = True
        except OSError as exc:
            out[key] = False
            out[key + "_error"] = str(exc)
    if plan.hide_home and plan.home:
        try:
            visible = set(os.listdir(plan.home))
        except OSError:
            visible = set()
        allowed = {os.path.relpath(k, plan.home).split("/")[0] for k in plan.keep}
        out["home_hidden"] = visible <= allowed
    try:
        out["proc_entries"] = sum(1 for n in os.listdir("/proc") if n.isdigit())
    except OSError:
        out["proc_entries"] = -1
    try:
        os.kill(os.getppid(), 0)
        out["can_signal_parent"] = True
    except OSError:
        out["can_signal_parent"] = False
    return out


def _probe_once(plan: Plan, work: str) -> dict[str, Any]:
    """Fork a worker-like process with ``plan``, fork a candidate from it, check effects."""
    cand = os.path.join(work, "c")
    os.makedirs(cand, exist_ok=True)
    if plan.drop_uid is not None:
        os.chown(cand, plan.drop_uid, plan.drop_uid)
    marker = ""
    if plan.private_root:
        marker = os.path.join(os.path.dirname(work), f".srscode-view-probe-{os.getpid()}")
        try:
            with open(marker, "w"):
                pass
            os.chmod(marker, 0o644)
        except OSError:
            marker = ""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the probe's worker-like process
        code = 0
        try:
            os.close(r)
            os.setsid()
            enter_worker_namespaces(plan)
            wpid = os.fork() if plan.pidns else 0
            if wpid == 0:
                setup_worker_mounts(plan, cand)
                cpid = os.fork()
                if cpid == 0:
                    try:
                        os.setsid()
                        enter_candidate(plan)
                        res = _probe_checks(plan, work, cand, marker)
                        res["ok"] = True
                    except BaseException as exc:
                        res = {"ok": False, "error": f"candidate: {type(exc).__name__}: {exc}"}
                    os.write(w, json.dumps(res).encode())
                    os._exit(0)
                os.waitpid(cpid, 0)
                os._exit(0)
            _, st = os.waitpid(wpid, 0)
            code = os.waitstatus_to_exitcode(st) & 0x7F
        except BaseException as exc:
            try:
                os.write(w, json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}).encode())
            except OSError:
                pass
            code = 3
        os._exit(code)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    for path in (os.path.join(work, "outside-probe"), os.path.join(work, "c/inside-probe"), marker):
        try:
            if path:
                os.unlink(path)
        except OSError:
            pass
    try:
        os.rmdir(os.path.join(work, ".root"))  # the private root's mount point
    except OSError:
        pass
    try:
        return json.loads(data.decode() or "{}") or {"ok": False, "error": "no answer"}
    except ValueError:
        return {"ok": False, "error": "garbled answer"}


def plan_isolation(work: str, home: str | None = None, drop_uid: int | None = None, as_user: bool = False) -> tuple[Plan, dict[str, Any]]:
    """Find the strongest plan this machine allows; return it and a report of what is active.

    ``work`` is a directory like the worker's (candidates get ``work/c``). ``as_user``
    makes root take the unprivileged user's path (user namespaces, same uid), which is
    how the tests exercise that path on a machine where they run as root.
    """
    report: dict[str, Any] = {"platform": sys.platform}
    if not LINUX:
        report.update(
            network="NOT cut (namespaces need Linux)",
            filesystem="writable wherever the user can write (namespaces need Linux)",
            filesystem_view="host filesystem visible and writable where the user can write (namespaces need Linux)",
            processes="own session killed on timeout; no PID namespace",
            user="same user as the evaluator",
            process_limit="per user",
        )
        return Plan(), report
    as_root = os.geteuid() == 0 and not as_user
    home = os.path.realpath(home or os.path.expanduser("~"))
    keep = keep_paths(home, [work])
    if as_root:
        uid = NOBODY if drop_uid is None else drop_uid
        os.chmod(work, 0o755)  # the unprivileged candidate must reach its directory
        base = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    else:
        uid = None
        base = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    full = Plan(
        as_root=as_root,
        namespaces=base,
        proc=True,
        hide_home=home not in ("/", "") and os.path.isdir(home),
        readonly_fs=True,
        drop_uid=uid,
        nested_user=True,
        home=home,
        keep=keep,
        private_root=True,
        view=view_paths(),
    )
    attempts: list[tuple[str, Plan]] = [("full", full)]
    relax = [  # drop one step at a time, weakest loss first
        ("no nested user namespace", dict(nested_user=False)),
        ("home not hidden", dict(hide_home=False)),
        ("no fresh /proc", dict(proc=False)),
        ("no PID namespace", dict(namespaces=base & ~CLONE_NEWPID, proc=False)),
        ("no network namespace", dict(namespaces=base & ~(CLONE_NEWPID | CLONE_NEWNET), proc=False)),
        ("no namespaces", dict(namespaces=0, readonly_fs=False, hide_home=False, proc=False)),
    ]
    cur = full
    for name, change in relax:
        cur = Plan(**{**cur.to_dict(), **change})
        attempts.append((name, cur))
    # The private root is kept wherever it works, so where one step fails each plan is
    # also tried without it (before the next step is dropped); it needs the fresh /proc
    # (the host's would show the host's processes, whose /proc/<pid>/root is the host).
    staged: list[tuple[str, Plan]] = []
    for name, plan in attempts:
        if plan.proc:
            staged.append((name, plan))
        without = Plan(**{**plan.to_dict(), "private_root": False, "view": []})
        staged.append((f"{name}, no private root" if plan.proc else name, without))
    attempts = staged
    if as_root:  # last resort: keep the uid (the Python install may be unreadable to it)
        attempts.append(("same uid as the evaluator", Plan(**{**cur.to_dict(), "drop_uid": None})))
    refused = []
    chosen, result = Plan(), {}
    root_refused = ""
    for name, plan in attempts:
        res = _probe_once(plan, work)
        if res.get("ok") and res.get("inside_write") and not (plan.private_root and res.get("host_visible") is not False):
            chosen, result = plan, res
            report["plan"] = name
            break
        why = res.get("error") or res.get("inside_write_error") or (
            "candidate dir not writable" if not res.get("inside_write") else "a host file is still visible")
        refused.append(f"{name}: {why}")
        if plan.private_root and not root_refused:
            root_refused = why
    report["refused"] = refused
    net_cut = bool(chosen.namespaces & CLONE_NEWNET) and set(result.get("interfaces", ["?"])) <= {"lo"}
    report["network"] = "cut (empty network namespace)" if net_cut else "NOT cut (no network namespace allowed here)"
    if chosen.readonly_fs and result.get("outside_write") is False:
        fs = "read-only except the candidate's temp dir"
    else:
        fs = "writable wherever the candidate's user can write"
    if chosen.private_root:
        fs = "private root: only the Python installation, shared libraries and the candidate's temp dir; " + fs
    elif chosen.hide_home:
        fs += "; home directory hidden" if result.get("home_hidden", False) else "; home directory NOT hidden"
    report["filesystem"] = fs
    report.update(_view_report(chosen, work, root_refused))
    if chosen.pidns:
        report["processes"] = (
            "own session killed and reaped on timeout; worker is PID 1 of its own PID namespace "
            f"(candidates see {result.get('proc_entries', '?')} processes, cannot signal outside it, every orphan is reaped)"
        )
    else:
        report["processes"] = "own session killed and reaped on timeout; subreaper sweep for escaped daemons"
    report["user"] = (
        f"uid {result.get('euid')} (dropped from root)" if chosen.drop_uid is not None else f"same user as the evaluator (uid {os.geteuid()})"
    )
    if chosen.nested_user:
        report["process_limit"] = "enforced per candidate (own user namespace)"
    elif as_root and chosen.drop_uid is None:
        report["process_limit"] = "NOT enforced (root ignores RLIMIT_NPROC)"
    else:
        report["process_limit"] = "per user (shared with the user's other processes)"
    return chosen, report


def _view_report(plan: Plan, work: str, refused: str) -> dict[str, Any]:
    """``filesystem_view`` (one line: what a candidate can see of the host) and, with a
    private root, ``filesystem_binds`` (the host paths it shows, read-only)."""
    if plan.private_root:
        binds, _links, left_out = view_binds(plan.view, work, plan.home)
        line = (f"private root ({len(binds)} read-only binds of the Python installation, shared libraries and "
                "tz data; /dev: " + ", ".join(DEVICES) + "; synthetic /etc; fresh /proc; writable: the candidate's temp dir)")
        out: dict[str, Any] = {"filesystem_view": line, "filesystem_binds": binds}
        if left_out:
            out["filesystem_left_out"] = left_out
        return out
    if not plan.namespaces & CLONE_NEWNS:
        why = "no mount namespace allowed here"
    elif not plan.proc:
        why = "no PID namespace for a fresh /proc"
    else:
        why = f"private root refused: {refused or 'unknown'}"
    how = "read-only" if plan.readonly_fs else "and writable where the user can write"
    return {"filesystem_view": f"host filesystem visible {how} ({why})"}


_STATUS: dict[str, Any] | None = None


def isolation_status(refresh: bool = False) -> dict[str, Any]:
    """What isolation candidates get here: runs the probe in a fresh Python process once.

    Keys: network, filesystem, filesystem_view (private root or not, and why),
    filesystem_binds (the host paths a private root shows), processes, user,
    process_limit, limits, environment, accelerators, plan (which relaxation was
    needed), refused (steps the OS refused).
    """
    global _STATUS
    if _STATUS is not None and not refresh:
        return dict(_STATUS)
    code = "from srscode.plugins.evaluate.sandbox.isolation import _probe_cli; _probe_cli()"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        status = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:  # never let a status query break `srscode env`
        status = {"error": f"isolation probe failed: {type(exc).__name__}: {exc}"}
    _STATUS = status
    return dict(status)


def static_report() -> dict[str, str]:
    return {
        "limits": "address space, CPU seconds, file size, open files, processes, no core dumps",
        "environment": "scrubbed to an allow-list (PATH, LANG, LC_*, TZ, TERM, PYTHONPATH); HOME and TMPDIR in the temp dir",
        "accelerators": f"hidden ({', '.join(hidden_devices())} empty)",
    }


def _probe_cli() -> None:
    import shutil

    tmp = tempfile.mkdtemp(prefix="srscode-probe-")
    try:
        os.chmod(tmp, 0o755)
        work = os.path.join(tmp, "w0")
        os.makedirs(work)
        _plan, report = plan_isolation(work)
        report.update(static_report())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report))
