"""Shared test setup: offline tokenizer files, the real documents, and a CLI runner."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
FINEWEB_EDU = DATA / "fineweb-edu"
PARQUETS = sorted((FINEWEB_EDU / "sample" / "10BT").glob("*.parquet"))

# tiktoken downloads its vocabulary on first use; offline machines have a hash-checked copy here.
if (SHARED / "tiktoken-cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken-cache"))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")

needs_data = pytest.mark.skipif(not PARQUETS, reason=f"real documents not found in {FINEWEB_EDU}")


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run `python fineweb.py ARGS` as a user would; returns CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, str(REPO / "fineweb.py"), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def real_texts():
    """The 2,454 real documents, in dataset order."""
    import pyarrow.parquet as pq

    return [t for p in PARQUETS for t in pq.read_table(p, columns=["text"]).column(0).to_pylist()]
