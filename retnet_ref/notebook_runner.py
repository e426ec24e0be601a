"""Execute a notebook top to bottom in a kernel running this very interpreter.

Used by `python -m retnet_ref notebooks`; nbclient and nbconvert come with the dev extra.
The kernel is started from sys.executable, never from whatever kernel spec named "python3" happens
to be installed for the user, so notebooks run against the package in this environment.
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path


# what JupyterLab writes into a notebook it saves with its default kernel: the committed notebooks carry the same,
# so that opening and saving one does not change it
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _current_env_kernel_manager():
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import KernelManager

    class CurrentEnvKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            # log level ERROR: no start-up notices on the terminal; errors still show
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                                    "--IPKernelApp.log_level=ERROR"],
                              display_name=KERNELSPEC["display_name"], language="python", env={})

    return KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvKernelSpecs())


def execute(path: Path, out_dir: Path | None, html: bool = True, timeout: int = 600) -> bool:
    """Run the notebook; write it back in place (out_dir None) or as .ipynb (+ .html) in out_dir."""
    import nbformat
    from nbclient import NotebookClient

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    km = _current_env_kernel_manager()
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    ok = True
    try:
        client.execute()
    except Exception:  # the error is stored in the notebook's outputs; report it and keep the file
        traceback.print_exc(limit=1)
        ok = False
    finally:
        if km.has_kernel:                # a kernel manager we pass in is ours to stop: one kernel at a time
            km.shutdown_kernel(now=True)
    target = path if out_dir is None else Path(out_dir) / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    if html and out_dir is not None:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nb)
        target.with_suffix(".html").write_text(body, encoding="utf-8")
    return ok
