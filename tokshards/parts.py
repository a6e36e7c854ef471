"""Stage 3, on many machines: one source file -> one part (that file's tokens, in order).

`tokenize_file(job, i)` is the unit of distributed work (cluster.py runs it on Ray or for one
rank of a Slurm array): a plain function, idempotent. It writes, in `{out_dir}/parts/`:

- `{i:06d}.tokens`  the file's tokens (the run's dtype, no header), `<|endoftext|>` before each document;
- `{i:06d}.counts`  the source's token_count per document (int64), when the source has that column;
- `{i:06d}.json`    counts, sha256, and where each batch of the file starts: what assemble.py
                    needs to cut the same shards, with the same manifest, as a single-machine run.

Each file is written under a temporary name, fsynced and renamed, and the .json comes last, so a
part with a .json is complete. Run again, a task whose part is already there checks its size and
sha256 and returns at once.
"""
import hashlib
import json
import os
import socket
from contextlib import closing

import numpy as np

from .errors import UserError
from .formats import sha256_file
from .manifest import _unlink, atomic_write, fsync_dir
from .tokenizer import Tokenizer

PARTS = "parts"


def part_paths(out_dir, i):
    base = os.path.join(out_dir, PARTS, f"{i:06d}")
    return base + ".tokens", base + ".counts", base + ".json"


def run_settings(job, tok):
    """What an output directory is made with; a resume or a part must match it exactly."""
    return {
        "prefix": job.prefix, "format": job.fmt, "tokenizer": tok.name, "eot": tok.eot,
        "dtype": tok.dtype.str, "shard_size": job.shard_size, "text_column": job.text_column,
        "doc_separator": job.doc_separator,
    }


def load_done(out_dir, i, check_sha=True):
    """The part's record if part i is complete and intact, else None."""
    tok_path, counts_path, meta_path = part_paths(out_dir, i)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if os.path.exists(meta_path + ".used"):  # written into shards already, then deleted by assemble
            return meta
        if os.path.getsize(tok_path) != meta["bytes"]:
            return None
        if meta["has_counts"] and os.path.getsize(counts_path) != 8 * meta["docs"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    if check_sha and sha256_file(tok_path) != meta["sha256"]:
        return None
    return meta


def tokenize_file(job, i, nprocs=0):
    """Tokenize source file i of job into its part; returns the part's record (a small dict).

    nprocs=0 encodes in this process (a Ray task holds one CPU); more uses a local process pool."""
    from .pipeline import tokenize_in_order  # pipeline imports this module

    done = load_done(job.out_dir, i)
    if done is not None:
        return dict(done, skipped=True)
    tok = Tokenizer(job.tokenizer, job.eot_token, job.backend, job.check_every, encode=nprocs == 0)
    paths = part_paths(job.out_dir, i)
    os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
    # unique per attempt: a task that Ray retries may overlap a lost node's attempt still running
    tag = f"{socket.gethostname()}.{os.getpid()}"
    tmp = [os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.{tag}.tmp") for p in paths[:2]]
    h, n, docs, batches = hashlib.sha256(), 0, 0, []
    with_counts = bool(getattr(job.source, "has_token_count", False))
    try:
        with open(tmp[0], "wb") as ftok, open(tmp[1], "wb") as fcnt, \
                closing(job.source.file_batches(i)) as src, \
                closing(tokenize_in_order(src, tok, nprocs)) as stream:
            for batch, tokens in stream:
                # where this batch starts: in tokens, in documents, and in the source
                batches.append([n, docs, batch.start, batch.backend])
                ftok.write(memoryview(tokens).cast("B"))
                h.update(memoryview(tokens).cast("B"))
                k = int(np.count_nonzero(tokens == tok.eot))
                if with_counts:
                    counts = np.asarray(batch.token_counts, dtype="<i8")
                    if len(counts) != k:  # every document of the batch begins in it (no fragments)
                        raise UserError(f"{job.source.files[i]}: token_count column does not match the documents")
                    fcnt.write(counts.tobytes())
                n, docs = n + len(tokens), docs + k
            for f in (ftok, fcnt):
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp[0], paths[0])
        if with_counts:
            os.replace(tmp[1], paths[1])
        else:
            _unlink(tmp[1])
        fsync_dir(os.path.dirname(paths[0]))
    except BaseException:
        for t in tmp:
            _unlink(t)
        raise
    meta = {
        "index": i, "file": str(job.source.files[i]), "tokens": n, "bytes": n * tok.dtype.itemsize, "docs": docs,
        "sha256": h.hexdigest(), "has_counts": with_counts, "batches": batches,
    }
    atomic_write(paths[2], (json.dumps(meta) + "\n").encode(), tag=f".{tag}")
    return dict(meta, skipped=False)
