# Two commands do everything on a fresh clone:  make demo  and  make test
PY ?= python3
SHARED := $(abspath ../shared)
# Offline machines: use the shared, hash-checked GPT-2 vocabulary if it is there;
# elsewhere tiktoken downloads it on first use as usual.
ifneq ($(wildcard $(SHARED)/tiktoken-cache/.),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED)/tiktoken-cache
endif
export HF_HUB_DISABLE_TELEMETRY=1
export HF_UPDATE_DOWNLOAD_COUNTS=0

.PHONY: deps demo test bench sample-10BT sample-100BT sample-350BT clean

# Install only what is missing (a second run costs one import).
deps:
	@$(PY) -c "import datasets, huggingface_hub, tiktoken, tokenizers, numpy, pyarrow, tqdm, zstandard, pytest, hypothesis, psutil, ray" 2>/dev/null \
	  || $(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt

demo: deps
	$(PY) demo/demo.py

test: deps
	$(PY) -m pytest -q tests

# Throughput side by side with build-nanogpt (table), then 30 MB / 300 MB / 1.5 GB (table + plot):
# prints markdown tables, writes bench/out/*.md and bench/out/scale.png. Takes ~30 minutes.
bench: deps
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q matplotlib
	$(PY) bench/bench.py
	$(PY) bench/bench.py --scale
	$(PY) bench/hub_readers.py

# The real thing (needs the Hugging Face Hub): build-nanogpt's data, resumable.
sample-10BT: deps
	$(PY) fineweb.py --remote sample-10BT
sample-100BT: deps
	$(PY) fineweb.py --remote sample-100BT
sample-350BT: deps
	$(PY) fineweb.py --remote sample-350BT

clean:
	rm -rf demo/out bench/out .pytest_cache
