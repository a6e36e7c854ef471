"""The hardware limit (rows "a" of bench.py): tokenize texts already in memory, no IPC.

One process of bench.py's "a 2-core ceiling" run: it loads its share (part K of N, contiguous
documents) of the `text` column of the given parquet files into a list of str, prints "ready",
waits for a line on stdin, tokenizes, and prints one JSON line. bench.py times from "go" to the
last process's exit, so reading and interpreter start-up are not in the ceiling.

--backend tiktoken: per document [eot] + enc.encode_to_numpy(text) (falling back to
encode_ordinary on a lone surrogate, like tokshards/tokenizer.py), the fastest tiktoken path.
--backend fast: the tool's fast GPT-2 path (tokshards/fastgpt2.py: fastokens encode_batch_flat on
batches of --batch documents, end-of-text inserted, uint16). Its library threads follow
RAYON_NUM_THREADS, which bench.py sets to 1 for the one-core rows.
Either way the tokens are copied into a 1M-token uint16 buffer that is hashed (sha256) whenever it
fills, standing in for the shard write.
"""
import argparse
import hashlib
import json
import resource
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tokshards.pool import keep_freed_memory  # noqa: E402

# As the tool's processes do, and before pyarrow is loaded (it picks its allocator then): the ceiling
# must not pay page faults they do not (glibc giving freed blocks back, pyarrow's mimalloc its pages).
keep_freed_memory()
import pyarrow.parquet as pq  # noqa: E402
import tiktoken  # noqa: E402


def load_texts(files, part, nparts, column="text"):
    texts = []
    for chunk in iter_texts(files, part, nparts, column):
        texts += chunk
    return texts


def iter_texts(files, part, nparts, column="text", batch=1024):
    """Lists of str, batch by batch, for part K of N (contiguous documents) of the files."""
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    lo, hi = total * part // nparts, total * (part + 1) // nparts
    row = 0
    for f in files:
        pf = pq.ParquetFile(f)
        n = pf.metadata.num_rows
        if row + n <= lo or row >= hi:
            row += n
            continue
        for b in pf.iter_batches(batch_size=batch, columns=[column]):
            col = b.column(0)
            a, z = max(lo - row, 0), min(hi - row, len(col))
            if a < z:
                yield [t or "" for t in col.slice(a, z - a).to_pylist()]
            row += len(col)


def text_bytes_of(files, part, nparts, column="text"):
    """UTF-8 bytes of this part's texts, from the Arrow column (no str objects)."""
    import pyarrow.compute as pc

    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    lo, hi = total * part // nparts, total * (part + 1) // nparts
    row = nbytes = 0
    for f in files:
        for b in pq.ParquetFile(f).iter_batches(batch_size=4096, columns=[column]):
            a, z = max(lo - row, 0), min(hi - row, len(b))
            if a < z:
                nbytes += pc.sum(pc.binary_length(b.column(0).slice(a, z - a))).as_py() or 0
            row += len(b)
    return nbytes


def pieces_tiktoken(texts, enc, eot):
    e = np.array([eot], dtype=np.uint32)
    for t in texts:
        try:
            a = enc.encode_to_numpy(t, disallowed_special=())
        except UnicodeEncodeError:
            a = np.asarray(enc.encode_ordinary(t), dtype=np.uint32)
        yield e
        yield a


def pieces_fast(texts, fast, eot, enc, batch):
    u16 = np.dtype("<u2")
    for i in range(0, len(texts), batch):
        got = fast.encode_batch_flat(texts[i : i + batch])
        out = None if got is None else np.insert(got[0], got[1][:-1], eot).astype(u16, copy=False)  # [eot] + ids
        if out is None:  # lone surrogates: tiktoken, as the tool does
            out = np.concatenate(list(pieces_tiktoken(texts[i : i + batch], enc, eot))).astype(u16)
        yield out


def tokenize(pieces, cap=1 << 20):
    h = hashlib.sha256()
    buf = np.empty(cap, dtype=np.uint16)
    n = total = 0
    for a in pieces:
        k = len(a)
        if n + k > cap:
            h.update(memoryview(buf[:n]).cast("B"))
            total += n
            n = 0
            if k > cap:
                cap = k
                buf = np.empty(cap, dtype=np.uint16)
        buf[n : n + k] = a
        n += k
    h.update(memoryview(buf[:n]).cast("B"))
    return total + n, h.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--of", type=int, default=1)
    p.add_argument("--backend", choices=["tiktoken", "fast"], default="tiktoken")
    p.add_argument("--batch", type=int, default=256, help="fast: documents per encode_batch_flat call")
    p.add_argument("--include-read", action="store_true",
                   help="time the parquet read (pyarrow, text column -> str) too, not only tokenizing")
    args = p.parse_args()
    enc = tiktoken.get_encoding("gpt2")
    fast = None
    if args.backend == "fast":
        from tokshards import fastgpt2

        fast = fastgpt2.load("gpt2", enc)
    eot = enc.eot_token
    if fast is not None:  # first call: the library sets itself up (not part of the rate)
        fast.encode_batch_flat(["warm up"])

    def pieces_of(texts):
        if fast is None:
            return pieces_tiktoken(texts, enc, eot)
        return pieces_fast(texts, fast, eot, enc, args.batch)

    if args.include_read:
        # streaming: read 1024 rows -> str -> tokens, nothing kept (bytes are counted after timing)
        ndocs = [0]

        def pieces_streamed():
            for chunk in iter_texts(args.files, args.part, args.of):
                ndocs[0] += len(chunk)
                yield from pieces_of(chunk)

        pieces = pieces_streamed()
    else:
        texts = load_texts(args.files, args.part, args.of)
        pieces = pieces_of(texts)
    text_bytes = text_bytes_of(args.files, args.part, args.of)
    print("ready", flush=True)
    sys.stdin.readline()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ntok, digest = tokenize(pieces)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    docs = ndocs[0] if args.include_read else len(texts)
    print(json.dumps({"tokens": ntok, "docs": docs, "text_bytes": text_bytes, "seconds": t1 - t0,
                      "cpu_s": cpu, "sha256": digest}), flush=True)


if __name__ == "__main__":
    main()
