"""`fineweb.py verify DIR` (or a bucket URL): re-read every shard and check it against the manifest."""
import glob
import os
import tempfile

import numpy as np

from .bucket import lock_state, manifest_at
from .errors import UserError
from .formats import check_file, open_tokens, read_megatron_index, sha256_file
from .manifest import Manifest
from .outdir import PARTS, OutputDir
from .shards import shard_pattern
from .storage import BucketFiles, is_url


def verify(out_dir):
    """Return (problems, summary lines). An empty problem list means every byte checks out. A bucket
    URL is read shard by shard into a temporary directory and checked the same way."""
    if is_url(out_dir):
        return verify_bucket(out_dir)
    if not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: no such directory")
    m = Manifest.load(out_dir)
    if m is None:
        if os.path.exists(os.path.join(out_dir, PARTS, "job.json")):
            done = len(glob.glob(os.path.join(out_dir, PARTS, "[0-9]*.json")))
            raise UserError(f"{out_dir} is a multi-machine run in progress ({done} source files tokenized); "
                            f"once every rank is done: python fineweb.py assemble {out_dir}")
        raise UserError(f"{out_dir} has no manifest.json: not an output directory of this tool")
    problems, docs, tokens = converting_problem(m, out_dir), 0, 0
    for s in m.shards:
        problem, n_docs, n_tokens = check_shard(out_dir, m, s)
        problems += problem
        docs, tokens = docs + n_docs, tokens + n_tokens
    pattern = shard_pattern(m.settings["prefix"])
    problems += extra_problems([f for f in sorted(os.listdir(out_dir)) if pattern.match(f)], m)
    holder = OutputDir.holder(out_dir)
    for tmp in sorted(glob.glob(os.path.join(out_dir, ".*.tmp"))):
        why = f"{holder} is writing it" if holder else "a run was killed: rerun it to remove this"
        problems.append(f"leftover temporary file: {os.path.basename(tmp)} ({why})")
    return problems + incomplete_problem(m, holder), summarize(out_dir, m, tokens, docs)


def verify_bucket(url):
    bucket = BucketFiles(url)
    m = manifest_at(url)
    if m is None:
        raise UserError(f"{url} has no manifest.json: not an output directory of this tool")
    with tempfile.TemporaryDirectory(prefix="fineweb-verify-") as tmp:
        names = bucket.listing()
        problems, docs, tokens = converting_problem(m, url), 0, 0
        for s in m.shards:
            missing = [f for f in s.files if f not in names]
            if missing:
                problems.append(f"missing: {missing[0]}")
                continue
            for f in s.files:  # one shard at a time: the local space needed is one shard's
                bucket.get(f, os.path.join(tmp, f))
            problem, n_docs, n_tokens = check_shard(tmp, m, s)
            for f in s.files:
                os.unlink(os.path.join(tmp, f))
            problems += problem
            docs, tokens = docs + n_docs, tokens + n_tokens
        pattern = shard_pattern(m.settings["prefix"])
        problems += extra_problems([f for f in sorted(names) if pattern.match(f)], m)
        holder = lock_state(bucket)[0]
        for key, _ in bucket.unfinished_uploads(lambda name: bool(pattern.match(name))):
            why = f"{holder} is writing it" if holder else "a run was killed: rerun it to remove this"
            problems.append(f"leftover unfinished upload: {key.rsplit('/', 1)[-1]} ({why})")
        return problems + incomplete_problem(m, holder), summarize(url, m, tokens, docs)


def converting_problem(m, where):
    if not m.converting:
        return []
    return [f"converting: an in-place conversion to {m.converting['to']} was interrupted after "
            f"{len(m.converting['done'])} of {len(m.shards)} shards; finish it with: "
            f"python fineweb.py merge {where} --format {m.converting['to']}"]


def check_shard(d, m, s):
    """([problem], documents, tokens) of one listed shard whose files are in directory d."""
    st = m.settings
    path = os.path.join(d, s.file)
    fmt = m.shard_format(s)
    problem = check_file(path, fmt, st["dtype"], s.bytes, s.tokens, s.index_bytes)
    if problem:
        return [problem], 0, 0
    if sha256_file(path) != s.sha256:
        return [f"corrupt: {s.file} sha256 differs from the manifest"], 0, 0
    if s.index_file and sha256_file(os.path.join(d, s.index_file)) != s.index_sha256:
        return [f"corrupt: {s.index_file} sha256 differs from the manifest"], 0, 0
    problems = []
    arr = open_tokens(path, fmt, st["dtype"])
    n_docs = int(np.count_nonzero(arr == st["eot"]))
    if n_docs != s.docs:
        problems.append(f"corrupt: {s.file} has {n_docs:,} document marker ids ({st['eot']}), manifest says {s.docs:,}")
    if s.index_file:
        cut_short = m.max_tokens is not None and s is m.shards[-1]  # --max-tokens may end inside a document
        problem = check_sequences(arr, read_megatron_index(os.path.join(d, s.index_file), st["dtype"]), st, cut_short)
        if problem:
            problems.append(f"corrupt: {s.index_file}: {problem}")
    n_tokens = len(arr)
    del arr
    return problems, n_docs, n_tokens


def extra_problems(shard_like, m):
    listed = {f for s in m.shards for f in s.files}
    return [f"extra: {f} is not in the manifest" for f in shard_like if f not in listed]


def incomplete_problem(m, holder):
    if m.complete:
        return []
    what = f"{holder} is running now" if holder else "rerun the same command to finish it"
    return [f"incomplete: the run stopped after {len(m.shards)} shards; {what}"]


def summarize(where, m, tokens, docs):
    st = m.settings
    src = m.source
    source = src if isinstance(src, dict) else f"{len(src)} local files"
    summary = [
        f"{where}: {len(m.shards)} shards ({st['format']}, {np.dtype(st['dtype']).name}), "
        f"{tokens:,} tokens, {docs:,} documents",
        f"source: {source}",
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
    return summary


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
