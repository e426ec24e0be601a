# Two commands on a fresh machine (Python >= 3.10 and make):
#   make        the main job: equivalence report, every notebook executed into build/notebooks/
#               (executed .ipynb and HTML), figures/ regenerated
#   make test   the test suite: pytest + hypothesis + gradient checks + nbval over every notebook
#               (figures made while testing go to build/test-figures/, leaving figures/ alone)
#
# TORCH selects the torch build installed into the virtual environment. The default is the small
# CPU wheel; keep a build you already have with  make TORCH= VENV_FLAGS=--system-site-packages
PYTHON     ?= python3
VENV       ?= .venv
TORCH      ?= torch==2.13.0
VENV_FLAGS ?=
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: all run verify notebooks test test-fast test-cuda notebooks-inplace clean

all: run

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(strip $(TORCH)),$(PY) -m pip install --quiet "$(TORCH)")
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: verify notebooks

verify: $(STAMP)
	$(PY) -m retnet_ref verify

notebooks: $(STAMP)
	$(PY) -m retnet_ref notebooks --out build/notebooks
	@echo "Executed notebooks (open the .html in a browser): build/notebooks/  Figures: figures/"

test: $(STAMP)
	TQDM_DISABLE=1 PYTHONHASHSEED=0 RETNET_FIGURES=$(CURDIR)/build/test-figures $(PY) -m pytest -p no:cacheprovider tests notebooks \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests -x -q

test-cuda: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider tests -m cuda -v

# regenerate the committed notebooks' outputs (run after changing a notebook or the package)
notebooks-inplace: $(STAMP)
	$(PY) -m retnet_ref notebooks --inplace

clean:
	rm -rf build .pytest_cache .hypothesis
