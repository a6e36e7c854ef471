# Two commands do everything on a fresh clone:  make demo  and  make test
#
# They run in a project virtual environment .venv/, made with `$(PY) -m venv` on first use and filled
# from the requirements files (again only when one of them changes: stamp files in .venv/), so a
# stock Debian/Ubuntu python3 (PEP 668 "externally managed") works too. Run inside a venv (venv,
# virtualenv, uv, pyenv-virtualenv) or a conda env, they use that environment as it is, installing
# only what is missing. PY picks the interpreter:  make demo PY=/usr/bin/python3   make test PY=python3.12
# Another interpreter for an existing .venv/:  make distclean  first.
# Uses nothing newer than GNU make 3.81 (macOS's make) and a POSIX sh.
PY ?= python3
VENV := .venv
SHARED := $(abspath ../shared)
# Offline machines: use the shared, hash-checked GPT-2 vocabulary if it is there;
# elsewhere tiktoken downloads it on first use as usual.
ifneq ($(wildcard $(SHARED)/tiktoken-cache/.),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tiktoken-cache
endif
export HF_HUB_DISABLE_TELEMETRY=1
export HF_UPDATE_DOWNLOAD_COUNTS=0

# What each target needs (the requirements files are the single source of truth for dependencies;
# pyproject.toml reads the same files for `pip install .` and its extras).
REQS_runtime := requirements.txt
REQS_dev := requirements.txt requirements-dev.txt requirements-ray.txt requirements-s3.txt requirements-azure.txt

.PHONY: deps demo test bench sample-10BT sample-100BT sample-350BT clean distclean env-runtime env-dev
.NOTPARALLEL:

# "env" when $(PY) already runs inside a virtual environment or the active conda environment (other
# than this project's .venv/): then that one is used as it is; else .venv/.
PY_ENV := $(shell $(PY) -c "import os, sys; r = os.path.realpath; c = os.environ.get('CONDA_PREFIX'); print('env' if (sys.prefix != sys.base_prefix or c and r(c) == r(sys.prefix)) and r(sys.prefix) != r('$(VENV)') else 'base')" 2>/dev/null)
ifeq ($(PY_ENV),env)
PYTHON := $(PY)
RUNTIME := env-runtime
DEV := env-dev
else
PYTHON := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
endif

deps: $(DEV)

demo: $(RUNTIME)
	$(PYTHON) demo/demo.py

test: $(DEV)
	$(PYTHON) -m pytest -q -n auto --maxprocesses 4 tests

# Throughput side by side with build-nanogpt (table), then 30 MB / 300 MB / 1.5 GB (table + plot):
# prints markdown tables, writes bench/out/*.md and bench/out/scale.png; then --readers on a capped
# loopback Hub, and where the CPU goes (main process vs workers, local vs Hub, projected to 8/32/96
# cores, and the tiktoken backend against its ceiling), what a Hub worker's download costs in CPU,
# then the fast tokenizer.json path against `tokenizers` (Llama 3.2). Takes ~45 minutes.
bench: $(DEV)
	$(PYTHON) bench/bench.py
	$(PYTHON) bench/bench.py --scale
	$(PYTHON) bench/hub_readers.py
	$(PYTHON) bench/parent_cost.py --tiktoken
	$(PYTHON) bench/hub_fetch.py
	$(PYTHON) bench/fast_json.py

# The real thing (needs the Hugging Face Hub): build-nanogpt's data, resumable.
sample-10BT: $(RUNTIME)
	$(PYTHON) fineweb.py --remote sample-10BT
sample-100BT: $(RUNTIME)
	$(PYTHON) fineweb.py --remote sample-100BT
sample-350BT: $(RUNTIME)
	$(PYTHON) fineweb.py --remote sample-350BT

clean:
	rm -rf demo/out bench/out .pytest_cache

distclean: clean
	rm -rf $(VENV) build *.egg-info

# ---- the interpreter ---------------------------------------------------------------------------
# One line and a non-zero exit when $(PY) cannot run or is older than the code needs (tomllib: 3.11).
CHECK_PY = v=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || { \
	  echo "make: cannot run PY=$(PY); give a Python 3.11+ interpreter, e.g. make $(or $(MAKECMDGOALS),demo) PY=/usr/bin/python3" >&2; exit 1; }; \
	$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "make: PY=$(PY) is Python $$v; fineweb needs 3.11 or newer (e.g. make $(or $(MAKECMDGOALS),demo) PY=python3.12; uv, pyenv, Homebrew or python.org have one)" >&2; exit 1; }

# ---- .venv/ ------------------------------------------------------------------------------------
# Made anew when missing or when its python is gone (the interpreter that made it was removed or
# upgraded). Debian/Ubuntu without python3-venv (no ensurepip): one line says what to install.
VENV_BROKEN := $(shell test -e $(VENV)/bin/python || echo FORCE)
$(VENV)/pyvenv.cfg: $(VENV_BROKEN)
	@$(CHECK_PY)
	@rm -rf $(VENV)
	@echo "make: making $(VENV)/ with $(PY) -m venv"
	@out=$$($(PY) -m venv $(VENV) 2>&1 && $(VENV)/bin/python -m pip --version 2>&1 >/dev/null) || { \
	  rm -rf $(VENV); \
	  if printf '%s\n' "$$out" | grep -q ensurepip; then \
	    v=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	    if command -v apt-get >/dev/null 2>&1; then \
	      s="sudo "; [ "$$(id -u)" = 0 ] && s=; fix="install it with: $${s}apt install python$$v-venv"; \
	    else fix="install your system's venv/ensurepip package for Python $$v, or give another PY=..."; fi; \
	    echo "make: $(PY) cannot make $(VENV)/ (its ensurepip module is missing); $$fix" >&2; \
	  else \
	    echo "make: $(PY) -m venv $(VENV) failed: $$(printf '%s\n' "$$out" | grep . | tail -n 1)" >&2; \
	  fi; exit 1; }

$(VENV)/.installed-runtime: $(REQS_runtime) pyproject.toml $(VENV)/pyvenv.cfg
	@echo "make: installing $(REQS_runtime) into $(VENV)/"
	@$(call pip_install,$(PYTHON),$(REQS_runtime))
	@touch $@

$(VENV)/.installed-dev: $(REQS_dev) pyproject.toml $(VENV)/pyvenv.cfg
	@echo "make: installing $(REQS_dev) into $(VENV)/"
	@$(call pip_install,$(PYTHON),$(REQS_dev))
	@touch $@ $(VENV)/.installed-runtime

FORCE:

# ---- an active venv / conda env: install only what is missing (one cheap metadata look-up) ---------
HAS_REQS = import re, sys; from importlib.metadata import distribution as d; \
	[d(re.match('[A-Za-z0-9._-]+', l)[0]) for f in sys.argv[1:] for l in open(f) if l[:1].isalnum() and ';' not in l]
env-runtime env-dev: env-%:
	@$(CHECK_PY)
	@$(PY) -c "$(HAS_REQS)" $(REQS_$*) 2>/dev/null || { $(call pip_install,$(PY),$(REQS_$*)); }

# $(1) -m pip install -r each of $(2); uv's pip where $(1) has none (an environment made by `uv venv`).
pip_install = if $(1) -m pip --version >/dev/null 2>&1; then echo "$(1) -m pip install -q $(addprefix -r ,$(2))"; \
	  $(1) -m pip install -q $(addprefix -r ,$(2)); \
	elif command -v uv >/dev/null 2>&1; then echo "uv pip install -q --python $(1) $(addprefix -r ,$(2))"; \
	  uv pip install -q --python $(1) $(addprefix -r ,$(2)); \
	else echo "make: $(1) has no pip: install it ($(1) -m ensurepip), or install uv" >&2; exit 1; fi
