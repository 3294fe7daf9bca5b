"""Walk a wheel set's Requires-Dist closure against what the GPU host already has.

Used to (re)derive requirements-vllm-0.23.0-cp312.txt; not needed by fetch.sh/install.sh.

    python3 tools/gpu-wheelhouse/walk_deps.py --host host-freeze.txt --dl .whl/walk \
        'vllm==0.23.0' 'trl' ...

For each requirement (markers evaluated for CPython 3.12 on Linux x86_64, extras followed):
skipped when the name is in SKIP (deliberately not carried) or the host has a version that
satisfies it; otherwise the newest wheel matching every specifier seen so far (plus
--pin constraints) is downloaded with pip --no-deps and its own Requires-Dist is walked.
At the end every chosen version is re-checked against every specifier that named it, and
every host version that fails a specifier is listed (those are judged by hand).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import zipfile
from collections import defaultdict

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

# not carried on purpose (the host has them, or they are optional GPU kernels vLLM imports lazily)
SKIP = {
    "torch": "host has 2.11.0 (vLLM pins exactly that)",
    "torchaudio": "host has 2.11.0",
    "torchvision": "host has 0.26.0",
    "flashinfer-python": "skipped: run with VLLM_USE_FLASHINFER_SAMPLER=0, FLASH_ATTN backend",
    "flashinfer-cubin": "skipped with flashinfer-python",
    "nvidia-cudnn-frontend": "optional kernels (nvidia-*: not carried)",
    "nvidia-cutlass-dsl": "optional CuTe-DSL kernels (nvidia-*: not carried, ~100s of MB)",
    "tilelang": "optional kernels, not imported on the LLM/LoRA path",
    "quack-kernels": "optional CuTe-DSL kernels (needs nvidia-cutlass-dsl)",
    "tokenspeed-mla": "optional MLA kernels (DeepSeek-style models only)",
    "humming-kernels": "optional quantized-MoE kernels",
    "fastsafetensors": "optional GDS loader (load_format=fastsafetensors only)",
    "numba": "host has 0.68.0; vLLM pins 0.65.0, used only by the n-gram speculative proposer",
    "setuptools": "host has 81.0.0; vLLM asks <81 (only for its build helpers)",
}

PY_PLATS = [
    "manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
    "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
    "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64", "any",
]

ENV = {
    "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
    "platform_machine": "x86_64", "platform_system": "Linux", "os_name": "posix",
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
    "platform_release": "", "platform_version": "", "implementation_version": "3.12.3",
}


def marker_ok(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    for e in extras | {""}:
        if req.marker.evaluate({**ENV, "extra": e}):
            return True
    return False


def pip_download(spec: str, dest: str) -> str:
    before = set(os.listdir(dest))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3",
           "--abi", "none", "-d", dest, spec]
    for p in PY_PLATS:
        cmd += ["--platform", p]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"pip download {spec!r} failed:\n{r.stderr[-2000:]}")
    new = set(os.listdir(dest)) - before
    name = canonicalize_name(Requirement(spec).name)
    for f in sorted(new) + sorted(os.listdir(dest)):
        if f.endswith(".whl") and canonicalize_name(parse_wheel_filename(f)[0]) == name:
            return os.path.join(dest, f)
    raise SystemExit(f"no wheel for {spec} in {dest}")


def requires(whl: str) -> list[str]:
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n))
        text = z.read(meta).decode()
    return [line[len("Requires-Dist:"):].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True, help="pip freeze of the host")
    ap.add_argument("--dl", required=True, help="download folder")
    ap.add_argument("--pin", action="append", default=[], help="extra constraint, e.g. 'openai<3'")
    ap.add_argument("seeds", nargs="+")
    a = ap.parse_args()
    os.makedirs(a.dl, exist_ok=True)
    host: dict[str, Version] = {}
    for line in open(a.host):
        if "==" in line:
            n, v = line.strip().split("==", 1)
            host[canonicalize_name(n)] = Version(v)
    pins: dict[str, SpecifierSet] = defaultdict(SpecifierSet)
    for p in a.pin:
        r = Requirement(p)
        pins[canonicalize_name(r.name)] &= r.specifier

    specs: dict[str, list[tuple[str, str]]] = defaultdict(list)  # name -> [(spec, parent)]
    chosen: dict[str, tuple[Version, str]] = {}
    extras_done: dict[str, set[str]] = defaultdict(set)
    host_bad: list[str] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    queue: list[tuple[str, str, set[str]]] = [(s, "(seed)", set()) for s in a.seeds]
    while queue:
        raw, parent, parent_extras = queue.pop(0)
        req = Requirement(raw)
        if not marker_ok(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        specs[name].append((str(req.specifier), parent))
        if name in SKIP:
            skipped[name].append(f"{parent}: {req.specifier}")
            continue
        if name in host and name not in chosen:
            if req.specifier.contains(host[name], prereleases=True):
                continue
            host_bad.append(f"{name} host {host[name]} fails {req.specifier or '*'} from {parent}")
            continue
        if name not in chosen:
            allspec = SpecifierSet()
            for s, _ in specs[name]:
                allspec &= SpecifierSet(s)
            allspec &= pins[name]
            whl = pip_download(f"{req.name}{allspec}", a.dl)
            ver = parse_wheel_filename(os.path.basename(whl))[1]
            chosen[name] = (ver, whl)
            print(f"+ {name}=={ver}  (for {parent}{' ' + str(req.specifier) if req.specifier else ''})", flush=True)
            for d in requires(whl):
                queue.append((d, f"{name}=={ver}", set()))
        new_extras = set(req.extras) - extras_done[name]
        if new_extras:
            extras_done[name] |= new_extras
            for d in requires(chosen[name][1]):
                dr = Requirement(d)
                if dr.marker is not None and any(dr.marker.evaluate({**ENV, "extra": e}) for e in new_extras) \
                        and not dr.marker.evaluate({**ENV, "extra": ""}):
                    queue.append((d, f"{name}[{','.join(sorted(new_extras))}]", new_extras))

    print("\n# chosen")
    bad = []
    for name, (ver, whl) in sorted(chosen.items()):
        for s, parent in specs[name]:
            if not SpecifierSet(s).contains(ver, prereleases=True):
                bad.append(f"{name}=={ver} fails {s} from {parent}")
        print(f"{name}=={ver}  {os.path.getsize(whl) / 2**20:.1f} MiB")
    print("\n# skipped on purpose")
    for n, who in sorted(skipped.items()):
        print(f"{n}: {SKIP[n]}  <- {'; '.join(sorted(set(who)))}")
    print("\n# host versions failing a specifier (judge by hand)")
    print("\n".join(host_bad) or "none")
    print("\n# chosen versions failing a specifier (conflicts)")
    print("\n".join(bad) or "none")


if __name__ == "__main__":
    main()
