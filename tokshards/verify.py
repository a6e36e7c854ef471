"""`fineweb.py verify DIR`: re-read every shard and check it against the manifest."""
import glob
import os

import numpy as np

from .errors import UserError
from .formats import check_file, open_tokens, sha256_file
from .manifest import Manifest
from .outdir import PARTS, OutputDir
from .shards import shard_pattern


def verify(out_dir):
    """Return (problems, summary lines). An empty problem list means every byte checks out."""
    if not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: no such directory")
    m = Manifest.load(out_dir)
    if m is None:
        if os.path.exists(os.path.join(out_dir, PARTS, "job.json")):
            done = len(glob.glob(os.path.join(out_dir, PARTS, "[0-9]*.json")))
            raise UserError(f"{out_dir} is a multi-machine run in progress ({done} source files tokenized); "
                            f"once every rank is done: python fineweb.py assemble {out_dir}")
        raise UserError(f"{out_dir} has no manifest.json: not an output directory of this tool")
    st = m.settings
    problems, docs, tokens = [], 0, 0
    if m.converting:
        problems.append(f"converting: an in-place conversion to {m.converting['to']} was interrupted after "
                        f"{len(m.converting['done'])} of {len(m.shards)} shards; finish it with: "
                        f"python fineweb.py merge {out_dir} --format {m.converting['to']}")
    for s in m.shards:
        path = os.path.join(out_dir, s.file)
        fmt = m.shard_format(s)
        problem = check_file(path, fmt, st["dtype"], s.bytes, s.tokens)
        if problem:
            problems.append(problem)
            continue
        if sha256_file(path) != s.sha256:
            problems.append(f"corrupt: {s.file} sha256 differs from the manifest")
            continue
        arr = open_tokens(path, fmt, st["dtype"])
        n_docs = int(np.count_nonzero(arr == st["eot"]))
        if n_docs != s.docs:
            problems.append(f"corrupt: {s.file} has {n_docs:,} end-of-text tokens, manifest says {s.docs:,}")
        docs += n_docs
        tokens += len(arr)
        del arr
    listed = {s.file for s in m.shards}
    pattern = shard_pattern(st["prefix"])
    for f in sorted(os.listdir(out_dir)):
        if pattern.match(f) and f not in listed:
            problems.append(f"extra: {f} is not in the manifest")
    holder = OutputDir.holder(out_dir)
    for tmp in sorted(glob.glob(os.path.join(out_dir, ".*.tmp"))):
        why = f"{holder} is writing it" if holder else "a run was killed: rerun it to remove this"
        problems.append(f"leftover temporary file: {os.path.basename(tmp)} ({why})")
    if not m.complete:
        what = f"{holder} is running now" if holder else "rerun the same command to finish it"
        problems.append(f"incomplete: the run stopped after {len(m.shards)} shards; {what}")

    src = m.source
    where = src if isinstance(src, dict) else f"{len(src)} local files"
    summary = [
        f"{out_dir}: {len(m.shards)} shards ({st['format']}, {np.dtype(st['dtype']).name}), "
        f"{tokens:,} tokens, {docs:,} documents",
        f"source: {where}",
        f"tokenizer: {st['tokenizer']} (end-of-text id {st['eot']}), shard size {st['shard_size']:,}",
    ]
    if m.max_tokens:
        summary.append(f"stopped at --max-tokens {m.max_tokens:,}")
    sums = [s.token_count_sum for s in m.shards]
    if sums and all(x is not None for x in sums):
        expected = sum(sums) + docs
        diff = tokens - expected
        summary.append(
            f"source token_count: sum {sum(sums):,} + {docs:,} end-of-text = {expected:,}; "
            f"written differs by {diff:+,} ({100 * diff / max(expected, 1):+.4f}%)"
        )
    return problems, summary
