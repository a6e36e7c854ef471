"""`fineweb.py verify DIR`: re-read every shard and check it against the manifest."""
import glob
import os

import numpy as np

from .errors import UserError
from .formats import check_file, open_tokens, read_megatron_index, sha256_file
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
        problem = check_file(path, fmt, st["dtype"], s.bytes, s.tokens, s.index_bytes)
        if problem:
            problems.append(problem)
            continue
        if sha256_file(path) != s.sha256:
            problems.append(f"corrupt: {s.file} sha256 differs from the manifest")
            continue
        if s.index_file and sha256_file(os.path.join(out_dir, s.index_file)) != s.index_sha256:
            problems.append(f"corrupt: {s.index_file} sha256 differs from the manifest")
            continue
        arr = open_tokens(path, fmt, st["dtype"])
        n_docs = int(np.count_nonzero(arr == st["eot"]))
        if n_docs != s.docs:
            problems.append(f"corrupt: {s.file} has {n_docs:,} document marker ids ({st['eot']}), manifest says {s.docs:,}")
        if s.index_file:
            cut_short = m.max_tokens is not None and s is m.shards[-1]  # --max-tokens may end inside a document
            problem = check_sequences(arr, read_megatron_index(os.path.join(out_dir, s.index_file), st["dtype"]), st,
                                      cut_short)
            if problem:
                problems.append(f"corrupt: {s.index_file}: {problem}")
        docs += n_docs
        tokens += len(arr)
        del arr
    listed = {f for s in m.shards for f in s.files}
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
        f"tokenizer: {st['tokenizer']}, document boundary {st['doc_boundary']} (before {st['boundary_before']}, "
        f"after {st['boundary_after']}), shard size {st['shard_size']:,}",
    ]
    if m.max_tokens:
        summary.append(f"stopped at --max-tokens {m.max_tokens:,}")
    sums = [s.token_count_sum for s in m.shards]
    if sums and all(x is not None for x in sums):
        per_doc = len(st["boundary_before"]) + len(st["boundary_after"])
        expected = sum(sums) + per_doc * docs
        diff = tokens - expected
        summary.append(
            f"source token_count: sum {sum(sums):,} + {per_doc * docs:,} boundary ids = {expected:,}; "
            f"written differs by {diff:+,} ({100 * diff / max(expected, 1):+.4f}%)"
        )
    return problems, summary


def check_sequences(tokens, lengths, st, cut_short):
    """What is wrong with a megatron shard's sequences: each one document, framed by the policy's ids."""
    if not len(lengths):
        return "" if not len(tokens) else "no sequences"
    if (lengths <= 0).any():
        return "an empty sequence"
    ends = np.cumsum(lengths.astype(np.int64))
    starts = ends - lengths
    for k, t in enumerate(st["boundary_before"]):
        bad = np.flatnonzero(tokens[starts + k] != t)
        if len(bad):
            return f"sequence {int(bad[0])} does not begin with the boundary ids {st['boundary_before']}"
    after = st["boundary_after"]
    check = ends[:-1] if cut_short else ends
    for k, t in enumerate(reversed(after)):
        bad = np.flatnonzero(tokens[check - 1 - k] != t)
        if len(bad):
            return f"sequence {int(bad[0])} does not end with the boundary ids {after}"
    n_markers = int(np.count_nonzero(tokens == st["eot"]))
    if n_markers != len(lengths) - (1 if cut_short and after and tokens[ends[-1] - 1] != after[-1] else 0):
        return f"{len(lengths):,} sequences for {n_markers:,} documents"
    return ""
