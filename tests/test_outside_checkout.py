"""The package used outside a checkout: it reads and writes relative to the working directory (or an
option), never where it is installed; the notebooks command fails loudly when it has nothing to run
or lacks the dev extra.

The CLI runs in a subprocess whose working directory is a fresh temporary folder and which imports
the package from this checkout (PYTHONPATH), as an installed package would be imported from
site-packages; the test then checks that neither the package folder nor the checkout gained an
output.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import retnet_ref
from retnet_ref import __main__ as cli
from retnet_ref import paths

PACKAGE = Path(retnet_ref.__file__).resolve().parent
CHECKOUT = PACKAGE.parent

TINY_NOTEBOOK = """\
from retnet_ref.plots import figure, save
fig, ax = figure()
ax.plot([0, 1], [1, 0])
print(save(fig, "tiny_outside_checkout"))
"""


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder that a notebook run could write (figures, notebooks, HTML), with its
    size and modification time (source files are left out: they may be edited meanwhile)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and p.suffix in {".png", ".ipynb", ".html"}}


def _run_cli(args, cwd: Path, timeout=300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != paths.FIGURES_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "retnet_ref", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def _write_tiny_notebook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(TINY_NOTEBOOK)]
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def _nothing_written_in_package_or_checkout(before: dict):
    assert _snapshot(PACKAGE) == before, "the run wrote into the package folder"
    assert not any((PACKAGE / name).exists() for name in ("figures", "build", "notebooks"))
    built = CHECKOUT / "build" / "notebooks"
    figure = CHECKOUT / "figures" / "tiny_outside_checkout.png"
    for leftover in (figure, built / "tiny.ipynb", built / "tiny.html"):
        assert not leftover.exists(), f"the run wrote {leftover} into the checkout"


def test_project_root_is_the_checkout_holding_the_working_directory_else_the_directory(tmp_path):
    assert paths.is_checkout(CHECKOUT)
    assert paths.project_root(CHECKOUT / "notebooks") == CHECKOUT
    assert paths.project_root(CHECKOUT / "retnet_ref") == CHECKOUT
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert paths.project_root(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()


def test_save_writes_under_the_working_directory_outside_a_checkout(monkeypatch, tmp_path):
    from retnet_ref.plots import figure, save

    monkeypatch.delenv(paths.FIGURES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(PACKAGE)
    fig, ax = figure()
    ax.plot([0, 1], [0, 1])
    assert save(fig, "tiny_outside_checkout") == "tiny_outside_checkout.png"
    assert (tmp_path / "figures" / "tiny_outside_checkout.png").stat().st_size > 0
    _nothing_written_in_package_or_checkout(before)

    monkeypatch.setenv(paths.FIGURES_ENV, str(tmp_path / "elsewhere"))
    save(fig, "tiny_outside_checkout")
    assert (tmp_path / "elsewhere" / "tiny_outside_checkout.png").is_file()


def test_notebooks_command_outside_a_checkout_without_notebooks_fails_clearly(tmp_path):
    before = _snapshot(PACKAGE)
    result = _run_cli(["notebooks"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message, message
    assert message.startswith("no notebooks found:")
    assert str(tmp_path.resolve() / "notebooks") in message
    assert "does not exist" in message
    assert list(tmp_path.iterdir()) == []                          # it created nothing either
    _nothing_written_in_package_or_checkout(before)


def test_notebooks_command_outside_a_checkout_writes_under_the_working_directory(tmp_path):
    _write_tiny_notebook(tmp_path / "notebooks")
    before = _snapshot(PACKAGE)
    result = _run_cli(["notebooks"], cwd=tmp_path)
    assert result.returncode == 0, result
    assert "ok   tiny.ipynb" in result.stdout
    assert (tmp_path / "figures" / "tiny_outside_checkout.png").stat().st_size > 0
    executed = nbformat.read(tmp_path / "build" / "notebooks" / "tiny.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "tiny_outside_checkout.png"
    html = (tmp_path / "build" / "notebooks" / "tiny.html").read_text()
    assert "tiny_outside_checkout.png" in html
    # the HTML loads no script from the network: MathJax comes from the copy beside it
    scripts = re.findall(r"<script[^>]*\bsrc=\"([^\"]*)\"", html)
    assert scripts == ["mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"], scripts
    assert (tmp_path / "build" / "notebooks" / "mathjax" / "MathJax.js").is_file()
    _nothing_written_in_package_or_checkout(before)


def test_notebooks_command_options_choose_the_folders(tmp_path):
    _write_tiny_notebook(tmp_path / "course")
    before = _snapshot(PACKAGE)
    result = _run_cli(["notebooks", "course", "--out", "html", "--figures", "pictures"],
                      cwd=tmp_path)
    assert result.returncode == 0, result
    assert (tmp_path / "pictures" / "tiny_outside_checkout.png").is_file()
    assert (tmp_path / "html" / "tiny.ipynb").is_file()
    assert (tmp_path / "html" / "tiny.html").is_file()
    assert not (tmp_path / "figures").exists() and not (tmp_path / "build").exists()
    _nothing_written_in_package_or_checkout(before)


@pytest.mark.parametrize("module", cli.NOTEBOOK_MODULES)
def test_notebooks_command_without_the_dev_extra_says_what_to_install(monkeypatch, capsys, tmp_path,
                                                                      module):
    _write_tiny_notebook(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)      # importing it now fails, as when absent
    assert cli.main(["notebooks", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"needs {module}," in err and "install retnet_ref[dev]" in err
    assert not (tmp_path / "build").exists()


def test_notebooks_command_rejects_a_path_that_is_no_notebook(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a notebook")
    cases = ((tmp_path / "missing.ipynb", "no such file or folder"),
             (tmp_path / "notes.txt", "not a notebook"))
    for bad, why in cases:
        with pytest.raises(SystemExit) as stop:
            cli.main(["notebooks", str(bad)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and why in err
        assert "paths: expected .ipynb files or folders of them" in err


def test_notebooks_command_fails_on_a_folder_without_notebooks(tmp_path, capsys):
    assert cli.main(["notebooks", str(tmp_path)]) == 1
    assert f"the folder {tmp_path} holds no .ipynb file" in capsys.readouterr().err
