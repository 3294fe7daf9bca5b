"""Package discovery for the ``srscode`` distribution (everything else is in pyproject.toml).

The design keeps ``core/``, ``plugins/`` and ``hardware/`` at the top of the repository (no
``src/`` layout) and ships them as ``srscode.core`` etc. setuptools' declarative
``packages.find`` cannot map several folders under one package name, so the mapping is
computed here: every folder with an ``__init__.py`` under a mapped root is a package.
"""
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
# import name -> folder in the repository
PACKAGE_DIR = {"srscode": "srscode_root", "srscode.core": "core", "srscode.plugins": "plugins",
               "srscode.hardware": "hardware"}


def discover() -> list[str]:
    found = []
    for name, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            found.append(".".join((name, *rel.parts)))
    return found


setup(package_dir=PACKAGE_DIR, packages=discover())
