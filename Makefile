# Two commands on a fresh machine (Python >= 3.11 and make):
#   make        the main job: equivalence report, every notebook executed into build/notebooks/
#               (executed .ipynb and HTML, figures in build/figures/)
#   make test   the test suite: pytest + hypothesis + gradient checks + nbval over every notebook
#               (figures made while testing go to build/test-figures/, leaving figures/ alone)
#
# TORCH selects the torch build installed into the virtual environment, TORCH_INDEX the index it comes
# from (e.g. PyTorch's CPU-only wheels on Linux: see the README); keep a build you already have with
#   make TORCH= VENV_FLAGS=--system-site-packages
# EXTRAS the project's extras installed: dev, plus browser (the Playwright driver of the browser test)
# where a Chromium is installed (Debian's chromium package, or RETNET_CHROMIUM=/path/to/chrome), so
# that make test runs the browser test there; EXTRAS=dev leaves the driver out
PYTHON     ?= python3
VENV       ?= .venv
TORCH      ?= torch==2.13.0
TORCH_INDEX ?=
VENV_FLAGS ?=
comma      := ,
CHROMIUM   := $(or $(RETNET_CHROMIUM),$(shell command -v chromium chromium-browser 2>/dev/null))
EXTRAS     ?= dev$(if $(strip $(CHROMIUM)),$(comma)browser)
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: all run verify notebooks lab test test-fast test-cuda notebooks-inplace corpus peers clean

all: run

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH)),$(PY) -m pip install --quiet $(if $(strip $(TORCH_INDEX)),--index-url $(TORCH_INDEX)) "$(TORCH)")
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

run: verify notebooks

verify: $(STAMP)
	$(PY) -m retnet_ref verify

# figures go to build/figures: some depend on the machine (timings), so the committed figures/ stay as they are
notebooks: $(STAMP)
	$(PY) -m retnet_ref notebooks --out build/notebooks --figures build/figures
	@echo "Executed notebooks (open the .html in a browser): build/notebooks/  Figures: build/figures/"

# open the course in JupyterLab; its kernel is this environment's Python (the server's own python3 kernel);
# figures saved from it go to build/figures too
lab: $(STAMP)
	RETNET_FIGURES=$(CURDIR)/build/figures $(PY) -m jupyter lab notebooks/

# peers the conformance tests check (tests/test_conformance.py; skipped where absent), installed without
# their dependencies: the dev extra already brings torch and Triton; einops is the one they add
PEERS ?= fla-core==0.6.0 yet-another-retnet==0.5.1 einops==0.8.2
# the official implementation, the oracle of tests/test_torchscale.py (skipped where absent), also without
# dependencies: fairscale is imported for its wrappers only, and timm (for drop-path, unused at rate 0) is
# stood in for by the test while it imports torchscale
ORACLES ?= torchscale==0.3.0 fairscale==0.4.0
peers: $(STAMP)
	$(PY) -m pip install --quiet --no-deps $(PEERS) $(ORACLES)

test: $(STAMP)
	$(PY) -m ruff check retnet_ref tests examples notebooks
	TQDM_DISABLE=1 PYTHONHASHSEED=0 RETNET_FIGURES=$(CURDIR)/build/test-figures $(PY) -m pytest -p no:cacheprovider tests notebooks \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests -x -q

# an explicit request for the GPU tests fails where there is no GPU (make test skips them instead)
test-cuda: $(STAMP)
	$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-cuda: no CUDA device (torch.cuda.is_available() is False)')"
	$(PY) -m pytest -p no:cacheprovider tests -m cuda -v

# regenerate the committed notebooks' outputs and figures/ (run after changing a notebook or the package)
notebooks-inplace: $(STAMP)
	$(PY) -m retnet_ref notebooks --inplace

# the training corpus (Debian's python3.11-doc, via apt-get download and dpkg-deb) in build/corpus/
corpus: $(STAMP)
	$(PY) -m retnet_ref corpus

clean:
	rm -rf build .pytest_cache .hypothesis
