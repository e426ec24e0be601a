"""The course in a real browser: JupyterLab driven by Chromium through Playwright.

A JupyterLab server from this environment starts on 127.0.0.1, on a free port, with a random token,
serving *copies* of the notebooks from a temporary folder (so that running and saving them leaves
the checkout alone). For each notebook (chapter 01, chapter 05 and the index when there is one)
the test opens it, clears its outputs, chooses Run > Run All Cells as a reader would, and checks
what the reader sees: every code cell ran once, top to bottom, with no error or stderr output;
every formula is typeset by MathJax, with no MathJax error and no TeX left as raw text; every
figure shows. Screenshots go to build/browser/. The server it started is stopped by its process
id (its kernels first, through the REST API).

A second test opens the HTML that `python -m retnet_ref notebooks` writes, from disk, with every
network request blocked, and checks that its maths renders offline.

Needs Chromium (Debian's `chromium`, or RETNET_CHROMIUM=/path/to/chrome) and the Playwright driver
(the browser extra, which make installs where it finds a Chromium); skipped with the reason when
either is missing, except where RETNET_BROWSER_REQUIRED=1 (CI), where a missing browser fails.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "browser"
# chapter 01 and one more derivation chapter; the index too once it exists
NOTEBOOKS = [n for n in ("00_index", "01_recurrence", "05_chunkwise")
             if (ROOT / "notebooks" / f"{n}.ipynb").is_file()]
RUN_ALL_TIMEOUT_S = 300


def _missing(reason: str):
    if os.environ.get("RETNET_BROWSER_REQUIRED") == "1":
        pytest.fail(f"{reason} (RETNET_BROWSER_REQUIRED=1)")
    pytest.skip(reason)


def _chromium_path() -> str | None:
    configured = os.environ.get("RETNET_CHROMIUM")
    if configured:
        if not Path(configured).is_file():
            pytest.fail(f"RETNET_CHROMIUM={configured!r}: expected the path of a Chromium "
                        "executable")
        return configured
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed: make test EXTRAS=dev,browser "
                 "(or pip install -c constraints.txt -e '.[dev,browser]')")
    executable = _chromium_path()
    if executable is None:
        _missing("no Chromium found: install Debian's chromium (apt-get install chromium) "
                 "or set RETNET_CHROMIUM to a Chromium executable")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Lab:
    """A JupyterLab server of ours: started here, talked to over REST, stopped by its pid."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = folder / ".lab" / "settings" / "@jupyterlab"
        for extension, values in {
            # every cell in the DOM (JupyterLab attaches only those in view by default); no news
            "notebook-extension/tracker": {"windowingMode": "none"},
            "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False,
                                                "doNotDisturbMode": True},
        }.items():
            path = settings / f"{extension}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ,
                   JUPYTERLAB_SETTINGS_DIR=str(folder / ".lab" / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(folder / ".lab" / "workspaces"),
                   JUPYTER_CONFIG_DIR=str(folder / ".lab" / "config"),
                   JUPYTER_RUNTIME_DIR=str(folder / ".lab" / "runtime"),
                   RETNET_FIGURES=str(folder / "figures"))      # the kernels' figures stay here too
        self.log = (folder / ".lab" / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
             f"--port={self.port}", "--port-retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={folder}", "--LabApp.extension_manager=readonly",
             *(["--allow-root"] if os.geteuid() == 0 else [])],          # CI runs as root
            cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.api("GET", "/api/status") is not None:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log_text()
                self.stop()
                pytest.fail(f"JupyterLab did not start; its log:\n{log}")
            time.sleep(0.5)

    def api(self, method: str, path: str):
        request = urllib.request.Request(self.base + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def log_text(self) -> str:
        self.log.flush()
        return (self.folder / ".lab" / "server.log").read_text()[-4000:]

    def saved_after(self, path: str, before: str, timeout_s: float = 60) -> dict:
        """The notebook at path once saved again since `before` (its earlier last_modified)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                model = self.api("GET", f"/api/contents/{path}?content=1")
                if model["last_modified"] != before:
                    return model["content"]
            except urllib.error.HTTPError as err:     # 400 or 500 while the file is being written
                if err.code not in (400, 500):
                    raise
            time.sleep(0.5)
        pytest.fail(f"JupyterLab did not save {path} within {timeout_s} s")

    def stop_kernels(self):
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")
        for kernel in self.api("GET", "/api/kernels"):
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def stop(self):
        if self.process.poll() is None:
            try:
                self.stop_kernels()
            except OSError:
                pass
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def lab(browser, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):   # all: the index links to the rest
        shutil.copy(notebook, folder)
    server = Lab(folder)
    try:
        yield server
    finally:
        server.stop()
    assert server.process.returncode is not None, "the server we started is still running"
    assert not _port_open(server.port), f"port {server.port} is still open after the server stopped"


# run in the page: what the reader sees once the notebook has run
PAGE_REPORT = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const q = (sel) => Array.from(panel.querySelectorAll(sel));
  const outside = (el) => {          // the markdown's text with typeset maths and code taken out
    const copy = el.cloneNode(true);
    copy.querySelectorAll('mjx-container, code, pre, script').forEach((n) => n.remove());
    return copy.textContent;
  };
  return {
    codeCells: q('.jp-CodeCell').length,
    prompts: q('.jp-CodeCell .jp-InputPrompt').map((p) => p.textContent.trim()),
    stderr: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
              .map((o) => o.textContent.slice(0, 300)),
    maths: q('mjx-container').length,
    mathErrors: q('mjx-merror, [data-mjx-error]').map((e) => e.textContent.slice(0, 200))
              .concat(panel.textContent.includes('Math Processing Error')
                      ? ['Math Processing Error'] : []),
    rawTex: q('.jp-MarkdownCell .jp-RenderedMarkdown').map(outside).filter((t) => t.includes('$'))
              .map((t) => t.slice(0, 200)),
    latexOutputs: q('.jp-RenderedLatex').length,
    untypesetLatexOutputs: q('.jp-RenderedLatex')
              .filter((o) => !o.querySelector('mjx-container')).length,
    images: q('.jp-OutputArea-output img').map((img) => [img.complete, img.naturalWidth]),
  };
}"""


PROMPTS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt"


def _wait_for_run_all(page):
    """Until every code cell has run, or the run stopped (a cell failed: the rest stay unrun). A
    run that has not started yet (the kernel still starting on a loaded machine: every prompt still
    empty) is waited for, not taken for a stopped one."""
    deadline, quiet = time.monotonic() + RUN_ALL_TIMEOUT_S, 0
    indicator = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator")
    while time.monotonic() < deadline:
        prompts = [p.strip() for p in page.locator(PROMPTS).all_text_contents()]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return
        started = any(p not in ("[ ]:", "[]:") for p in prompts)
        running = "[*]:" in prompts or indicator.get_attribute("data-status") != "idle"
        quiet = 0 if running or not started else quiet + 1
        if quiet >= 5:                              # idle, nothing queued, for 5 s: it stopped
            return
        page.wait_for_timeout(1000)
    pytest.fail(f"Run All did not finish (or, with every prompt empty, start) within "
                f"{RUN_ALL_TIMEOUT_S} s")


def _menu(page, menu: str, item):
    """Click menu > item in JupyterLab's menu bar (item: a label, or a pattern for one)."""
    dialog = page.locator(".jp-Dialog")
    assert dialog.count() == 0, f"JupyterLab shows a dialog: {dialog.first.inner_text()!r}"
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
    label = item if isinstance(item, re.Pattern) else re.compile(f"^{re.escape(item)}$")
    page.locator(".lm-Menu-itemLabel", has_text=label).click()


def _wait_until_typeset(page, timeout_s: float = 60):
    """MathJax typesets asynchronously: wait until the count of typeset formulas stops changing."""
    count, deadline = -1, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = page.locator("mjx-container").count()
        if now == count and now > 0:
            return
        count = now
        page.wait_for_timeout(1000)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab_and_renders(lab, browser, name):
    stored = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code_cells = [c for c in stored.cells if c.cell_type == "code"]
    figures = sum("image/png" in o.get("data", {}) for c in code_cells for o in c.outputs)
    latex = sum("text/latex" in o.get("data", {}) and "image/png" not in o.get("data", {})
                and "text/html" not in o.get("data", {}) for c in code_cells for o in c.outputs)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        start = time.monotonic()
        # a workspace of its own, reset: no tab of an earlier test is restored
        page.goto(f"{lab.base}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={lab.token}")
        idle = page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']")
        idle.wait_for(timeout=120_000)
        # every cell attached to the page (the settings above turn JupyterLab's windowing off)
        page.wait_for_function("() => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')"
                               f".length === {len(code_cells)}", timeout=60_000)
        # outputs and prompts cleared first, so that everything checked below comes from this run
        _menu(page, "Edit", "Clear Outputs of All Cells")
        page.wait_for_function(f"() => document.querySelectorAll('{PROMPTS}').length > 0 && Array"
                               f".from(document.querySelectorAll('{PROMPTS}'))"
                               ".every((e) => /^\\[ ?\\]:$/.test(e.textContent.trim()))",
                               timeout=30_000)
        _menu(page, "Run", "Run All Cells")
        _wait_for_run_all(page)
        _wait_until_typeset(page)
        elapsed = time.monotonic() - start
        report = page.evaluate(PAGE_REPORT)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-top.png"))
        if figures:
            first = page.locator(".jp-NotebookPanel .jp-OutputArea-output img").first
            first.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / f"{name}-figure.png"))

        # what the server holds once JupyterLab has saved the run: the outputs a reader's file has
        before = lab.api("GET", f"/api/contents/{name}.ipynb?content=0")["last_modified"]
        _menu(page, "File", re.compile(r"^Save( Notebook)?$"))
        page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')",
                               timeout=60_000)                  # the tab's unsaved-changes mark
        saved = lab.saved_after(f"{name}.ipynb", before)
        saved_code = [c for c in saved["cells"] if c["cell_type"] == "code"]
    finally:
        page.close()
        lab.stop_kernels()                          # one kernel at a time on a small machine

    print(f"{name}: Run All took {elapsed:.1f} s; {report['maths']} typeset formulas, "
          f"{len(report['images'])} figures")
    assert report["codeCells"] == len(code_cells)
    assert report["stderr"] == [], f"error or stderr output in the page: {report['stderr']}"
    # a fresh kernel ran every code cell once, top to bottom
    in_order = [f"[{i}]:" for i in range(1, len(code_cells) + 1)]
    assert report["prompts"] == in_order, report["prompts"]
    errors = [o for c in saved_code for o in c["outputs"] if o["output_type"] == "error"]
    assert errors == [], f"error outputs: {[(e['ename'], e['evalue']) for e in errors]}"
    assert len(saved_code) == len(code_cells) and all(c["execution_count"] for c in saved_code)
    # equations: typeset, none in error, none left as raw TeX; SymPy's LaTeX outputs typeset too
    assert report["maths"] > 0
    assert report["mathErrors"] == [], report["mathErrors"]
    assert report["rawTex"] == [], f"TeX left untypeset in markdown: {report['rawTex']}"
    assert report["latexOutputs"] >= latex and report["untypesetLatexOutputs"] == 0
    # figures: as many as the stored notebook shows, each loaded with a width
    assert len(report["images"]) == figures, (len(report["images"]), figures)
    assert all(complete and width > 0 for complete, width in report["images"]), report["images"]


def test_exported_html_renders_its_maths_offline(browser, tmp_path):
    """The HTML of `notebooks`, opened from disk with the network cut off: MathJax comes from the
    copy beside it."""
    from retnet_ref.notebook_runner import html_exporter, install_mathjax

    nb = nbformat.read(ROOT / "notebooks" / "01_recurrence.ipynb", as_version=4)
    install_mathjax(tmp_path)
    body, _ = html_exporter().from_notebook_node(nb)
    html = tmp_path / "01_recurrence.html"
    html.write_text(body, encoding="utf-8")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    remote = []

    def block_network(route):
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", block_network)
        start = time.monotonic()
        page.goto(html.as_uri())
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue"
            " && MathJax.Hub.queue.pending === 0"
            " && document.querySelectorAll('.MathJax, .MathJax_Display').length > 0",
            timeout=120_000)
        page.wait_for_timeout(500)
        typeset_s = time.monotonic() - start
        report = page.evaluate("""() => ({
          tex: document.querySelectorAll('script[type^="math/tex"]').length,
          typeset: document.querySelectorAll('span.MathJax, div.MathJax_Display').length,
          errors: document.querySelectorAll('.MathJax_Error, .merror, merror').length,
          processingError: document.body.innerText.includes('Math Processing Error'),
          font: MathJax.OutputJax['HTML-CSS'] ? MathJax.OutputJax['HTML-CSS'].fontInUse : null,
        })""")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "01_recurrence-html-offline.png"))
    finally:
        page.close()

    print(f"offline HTML: {report['tex']} formulas typeset in {typeset_s:.1f} s "
          f"with font {report['font']}")
    assert remote == [], f"the HTML asked the network for {remote}"
    assert report["tex"] > 0
    assert report["typeset"] >= report["tex"], report      # each TeX source has its typeset element
    assert report["errors"] == 0 and not report["processingError"], report
    assert report["font"] == "STIX-Web", report
