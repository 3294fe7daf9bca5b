"""The built wheel holds every module of the source tree: packages are discovered by setup.py,
so a new subpackage cannot be left out the way a hand-written list left it out."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder, as setup.py maps them
ROOTS = {"srscode": "srscode_root", "srscode/core": "core", "srscode/plugins": "plugins",
         "srscode/hardware": "hardware"}


def source_files() -> set[str]:
    want = set()
    for name, folder in ROOTS.items():
        base = ROOT / folder
        for path in base.rglob("*"):
            rel = path.relative_to(base)
            if path.is_dir() or "__pycache__" in rel.parts or path.suffix == ".pyc":
                continue
            # a folder below srscode_root that is its own mapped root is counted there
            if folder == "srscode_root" and rel.parts[0] in {"core", "plugins", "hardware"}:
                continue
            if path.suffix in {".py", ".jsonl"}:
                want.add(f"{name}/{rel.as_posix()}")
    return want


@pytest.mark.xdist_group("wheel-build")
def test_wheel_holds_every_module_and_nothing_from_tools(tmp_path: Path) -> None:
    # built from a copy: setuptools' build/ folder in the checkout can hold modules deleted since
    src = tmp_path / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in (*ROOTS.values(), "tools"):
        shutil.copytree(ROOT / folder, src / folder, ignore=skip)
    # --no-build-isolation: the build runs offline with the setuptools this env already has
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = tmp_path.glob("srs_code-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = source_files()
    assert len(want) > 60, sorted(want)  # the tree itself was found
    missing = sorted(want - names)
    assert not missing, f"modules left out of the wheel: {missing}"
    stray = sorted(n for n in names if n.startswith(("tools/", "tests/", "benchmarks/")) or "author_starter" in n)
    assert not stray, f"the wheel ships files that are not part of the package: {stray}"
    assert "srscode/plugins/data/starter_set/tasks.jsonl" in names


def test_starter_tasks_are_the_authoring_script_output() -> None:
    """tasks.jsonl is what tools/author_starter_set.py writes, byte for byte: an edit made to
    one and not the other fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("author_starter_set", ROOT / "tools/author_starter_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = (ROOT / "plugins/data/starter_set/tasks.jsonl").read_text(encoding="utf-8")
    assert module.render() == shipped, "tasks.jsonl differs from tools/author_starter_set.py's output; rerun it"
