"""The hardware limit (rows "a" of bench.py): tokenize texts already in memory, no IPC.

One process of bench.py's "a 2-core ceiling" run: it loads its share (part K of N, contiguous
documents) of the `text` column of the given parquet files into a list of str, prints "ready",
waits for a line on stdin, tokenizes, and prints one JSON line. bench.py times from "go" to the
last process's exit, so reading and interpreter start-up are not in the ceiling.

Per document it does what the tool's workers do at best: [eot] + enc.encode_to_numpy(text)
(falling back to encode_ordinary on a lone surrogate, like tokshards/tokenizer.py), copied into a
1M-token uint16 buffer that is hashed (sha256) whenever it fills, standing in for the shard write.
"""
import argparse
import hashlib
import json
import resource
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import tiktoken


def load_texts(files, part, nparts, column="text"):
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    lo, hi = total * part // nparts, total * (part + 1) // nparts
    texts, row = [], 0
    for f in files:
        pf = pq.ParquetFile(f)
        n = pf.metadata.num_rows
        if row + n <= lo or row >= hi:
            row += n
            continue
        for b in pf.iter_batches(batch_size=1024, columns=[column]):
            col = b.column(0)
            a, z = max(lo - row, 0), min(hi - row, len(col))
            if a < z:
                texts += [t or "" for t in col.slice(a, z - a).to_pylist()]
            row += len(col)
    return texts


def tokenize(texts, enc, eot, cap=1 << 20):
    h = hashlib.sha256()
    buf = np.empty(cap, dtype=np.uint16)
    n = total = 0
    for t in texts:
        try:
            a = enc.encode_to_numpy(t, disallowed_special=())
        except UnicodeEncodeError:
            a = np.asarray(enc.encode_ordinary(t), dtype=np.uint32)
        k = len(a) + 1
        if n + k > cap:
            h.update(memoryview(buf[:n]).cast("B"))
            total += n
            n = 0
            if k > cap:
                cap = k
                buf = np.empty(cap, dtype=np.uint16)
        buf[n] = eot
        buf[n + 1 : n + k] = a
        n += k
    h.update(memoryview(buf[:n]).cast("B"))
    return total + n, h.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--of", type=int, default=1)
    args = p.parse_args()
    enc = tiktoken.get_encoding("gpt2")
    texts = load_texts(args.files, args.part, args.of)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    enc.encode_to_numpy("warm up", disallowed_special=())
    print("ready", flush=True)
    sys.stdin.readline()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ntok, digest = tokenize(texts, enc, enc.eot_token)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"tokens": ntok, "docs": len(texts), "text_bytes": text_bytes, "seconds": t1 - t0,
                      "cpu_s": cpu, "sha256": digest}), flush=True)


if __name__ == "__main__":
    main()
