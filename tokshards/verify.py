"""`fineweb.py verify DIR`: re-read every shard and check it against the manifest."""
import glob
import os

import numpy as np

from .errors import UserError
from .formats import open_tokens, sha256_file
from .manifest import Manifest
from .parts import PARTS
from .writer import shard_files_on_disk


def verify(out_dir):
    """Return (problems, summary lines). An empty problem list means every byte checks out."""
    m = Manifest.load(out_dir)
    if m is None:
        plan = os.path.join(out_dir, PARTS, "job.json")
        if os.path.exists(plan):
            done = len(glob.glob(os.path.join(out_dir, PARTS, "[0-9]*.json")))
            raise UserError(f"{out_dir} is a multi-machine run in progress ({done} source files tokenized); "
                            f"once every rank is done: python fineweb.py assemble {out_dir}")
        raise UserError(f"{out_dir} has no manifest.json: not an output directory of this tool")
    st = m.data["settings"]
    problems, docs, tokens = [], 0, 0
    for s in m.shards:
        path = os.path.join(out_dir, s["file"])
        if not os.path.exists(path):
            problems.append(f"missing: {s['file']}")
            continue
        size = os.path.getsize(path)
        if size != s["bytes"]:
            kind = "truncated" if size < s["bytes"] else "too long"
            problems.append(f"{kind}: {s['file']} is {size:,} bytes, manifest says {s['bytes']:,}")
            continue
        try:
            arr = open_tokens(path, st["format"], st["dtype"])
        except ValueError as e:
            problems.append(f"corrupt header: {s['file']}: {e}")
            continue
        if len(arr) != s["tokens"]:
            problems.append(f"corrupt: {s['file']} holds {len(arr):,} tokens, manifest says {s['tokens']:,}")
            continue
        if sha256_file(path) != s["sha256"]:
            problems.append(f"corrupt: {s['file']} sha256 differs from the manifest")
            continue
        n_docs = int(np.count_nonzero(arr == st["eot"]))
        if n_docs != s["docs"]:
            problems.append(f"corrupt: {s['file']} has {n_docs:,} end-of-text tokens, manifest says {s['docs']:,}")
        docs += n_docs
        tokens += len(arr)
        del arr
    listed = {s["file"] for s in m.shards}
    for f in shard_files_on_disk(out_dir, st["prefix"]):
        if f not in listed:
            problems.append(f"extra: {f} is not in the manifest")
    for tmp in sorted(glob.glob(os.path.join(out_dir, ".*.tmp"))):
        problems.append(f"leftover temporary file: {os.path.basename(tmp)} (a run is going on, or was killed)")
    if not m.data["complete"]:
        problems.append(f"incomplete: the run stopped after {len(m.shards)} shards; rerun the same command to finish it")

    src = m.data["source"]
    where = src if isinstance(src, dict) else f"{len(src)} local files"
    summary = [
        f"{out_dir}: {len(m.shards)} shards ({st['format']}, {np.dtype(st['dtype']).name}), "
        f"{tokens:,} tokens, {docs:,} documents",
        f"source: {where}",
        f"tokenizer: {st['tokenizer']} (end-of-text id {st['eot']}), shard size {st['shard_size']:,}",
    ]
    if m.data.get("max_tokens"):
        summary.append(f"stopped at --max-tokens {m.data['max_tokens']:,}")
    sums = [s.get("token_count_sum") for s in m.shards]
    if sums and all(x is not None for x in sums):
        expected = sum(sums) + docs
        diff = tokens - expected
        summary.append(
            f"source token_count: sum {sum(sums):,} + {docs:,} end-of-text = {expected:,}; "
            f"written differs by {diff:+,} ({100 * diff / max(expected, 1):+.4f}%)"
        )
    return problems, summary
