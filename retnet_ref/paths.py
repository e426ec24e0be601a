"""Where the package reads notebooks and writes figures and build output: never the install folder.

Every default is relative to the *working directory*: the checkout of this repository that holds
it, if any (a folder with pyproject.toml, notebooks/ and retnet_ref/, found by walking up from the
working directory), else the working directory itself. So in a checkout, wherever in it you start
(its root under make, notebooks/ under JupyterLab), figures go to the checkout's figures/; after
a plain `pip install` they go to ./figures of wherever you run. $RETNET_FIGURES overrides
the figures folder, and the command line takes options for the others.
"""
from __future__ import annotations

import os
from pathlib import Path

FIGURES_ENV = "RETNET_FIGURES"


def is_checkout(path: Path) -> bool:
    """True for the root folder of a checkout of this repository."""
    return ((path / "pyproject.toml").is_file() and (path / "notebooks").is_dir()
            and (path / "retnet_ref" / "__init__.py").is_file())


def project_root(start: Path | None = None) -> Path:
    """The checkout that contains `start` (default: the working directory), else `start` itself."""
    start = Path.cwd() if start is None else Path(start)
    start = start.resolve()
    for folder in (start, *start.parents):
        if is_checkout(folder):
            return folder
    return start


def figures_dir(create: bool = True) -> Path:
    """$RETNET_FIGURES if set, else figures/ under project_root() (created if missing)."""
    env = os.environ.get(FIGURES_ENV)
    path = Path(env) if env else project_root() / "figures"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
