"""The installed package is the whole package: every folder of retnet_ref with an __init__.py is
found by the package list in pyproject.toml (a subpackage left out works in a checkout and fails
after a wheel install)."""
from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    found = set(find_packages(where=str(ROOT), include=config["include"]))
    on_disk = {str(p.parent.relative_to(ROOT)).replace("/", ".")
               for p in (ROOT / "retnet_ref").rglob("__init__.py")}
    assert on_disk and on_disk <= found, f"not installed: {sorted(on_disk - found)}"
