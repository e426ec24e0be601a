"""Execute a notebook top to bottom in a kernel running this very interpreter.

Used by `python -m retnet_ref notebooks`; nbclient and nbconvert come with the dev extra.
The kernel is started from sys.executable, never from whatever kernel spec named "python3" happens
to be installed for the user, so notebooks run against the package in this environment.

The HTML renders its maths offline: it loads MathJax (2.7, from the dev extra's package
jupyter-server-mathjax, copied once into a `mathjax/` folder beside the HTML) by a relative address
instead of from a CDN, and leaves out require.js, which only notebooks with widgets need. Keep that
folder next to the .html files when you move them. (nbconvert's Mermaid loader stays: it fetches
from the network only for a notebook with a Mermaid diagram, and ours have none.)
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import traceback
from pathlib import Path

# what JupyterLab writes into a notebook it saves with its default kernel: the committed notebooks
# carry the same, so that opening and saving one does not change it
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


# the trimmed MathJax of jupyter-server-mathjax has the HTML-CSS and SVG outputs, not nbconvert's
# default CommonHTML
MATHJAX_FOLDER = "mathjax"
MATHJAX_URL = f"{MATHJAX_FOLDER}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
# nbconvert's lab template less its require.js <script> (from a CDN; only widgets use it), and
# MathJax told to use the web font that jupyter-server-mathjax ships (STIX-Web; its default, TeX, is
# not shipped, and a glyph looked up in it fails as "[Math Processing Error]")
HTML_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web",
                                 imageFont: null},
                    SVG: {font: "STIX-Web"}});
</script>
{{ super() }}
{%- endblock html_head_js_mathjax -%}
"""


def mathjax_source() -> Path:
    """The MathJax 2 files that jupyter-server-mathjax installs (found without importing it)."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("jupyter_server_mathjax is not installed: "
                                  "install retnet_ref[dev]")
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    if not (folder / "MathJax.js").is_file():
        raise FileNotFoundError(f"no MathJax.js in {folder}")
    return folder


def install_mathjax(out_dir: Path) -> Path:
    """Copy MathJax into out_dir/mathjax/ unless that copy is there already; returns the folder."""
    source = mathjax_source()
    target = Path(out_dir) / MATHJAX_FOLDER
    stamp = target / ".source"
    current = stamp.is_file() and stamp.read_text() == str(source)
    if not (current and (target / "MathJax.js").is_file()):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        stamp.write_text(str(source))
    return target


def html_exporter():
    """nbconvert's HTML exporter with MathJax at a relative address and no script from a CDN."""
    from nbconvert import HTMLExporter

    return HTMLExporter(mathjax_url=MATHJAX_URL, raw_template=HTML_TEMPLATE)


def _current_env_kernel_manager():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class CurrentEnvKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            # log level ERROR: no start-up notices on the terminal; errors still show
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}",
                                    "--IPKernelApp.log_level=ERROR"],
                              display_name=KERNELSPEC["display_name"], language="python", env={})

    return KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvKernelSpecs())


def execute(path: Path, out_dir: Path | None, html: bool = True, timeout: int = 600) -> bool:
    """Run the notebook; write it back in place (out_dir None) or as .ipynb (+ .html) in out_dir."""
    import nbformat

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    ok = run_cells(nb, path.parent, timeout)
    target = path if out_dir is None else Path(out_dir) / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    if html and out_dir is not None:
        install_mathjax(target.parent)
        body, _ = html_exporter().from_notebook_node(nb)
        target.with_suffix(".html").write_text(body, encoding="utf-8")
    return ok


def run_cells(nb, folder: Path, timeout: int) -> bool:
    """Execute nb's cells in a fresh kernel of this interpreter, run in folder → whether all ran;
    an error stays in the cell's outputs and is reported."""
    from nbclient import NotebookClient

    km = _current_env_kernel_manager()
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
        return True
    except Exception:  # the error is stored in the notebook's outputs; report it and keep the file
        traceback.print_exc(limit=1)
        return False
    finally:
        if km.has_kernel:        # a kernel manager we pass in is ours to stop: one kernel at a time
            km.shutdown_kernel(now=True)
