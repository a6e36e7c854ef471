"""Stage 3, on many machines: one source file -> one part (that file's tokens, in order).

`tokenize_file(job, i)` is the unit of distributed work (cluster.py runs it on Ray or for one
rank of a Slurm array): a plain function, idempotent. It writes, in `{out_dir}/parts/` (a local
directory or a bucket prefix: storage.py; the names are outdir.part_names):

- `{i:06d}.tokens`  the file's tokens (the shards' dtype, no header), framed by the document-boundary ids;
- `{i:06d}.counts`  the source's token_count per document (int64), when the source has that column;
- `{i:06d}.json`    counts, sha256, and where each batch of the file starts: what assemble.py
                    needs to cut the same shards, with the same manifest, as a single-machine run.

Each file is written under a temporary name unique to the attempt, fsynced and renamed (in a
bucket: uploaded), and the .json comes last, so a part with a .json is complete. Run again, a task whose part is already
there checks its size and sha256 and returns at once.
"""
import hashlib
import json
import os
from contextlib import closing
from dataclasses import dataclass, replace

import numpy as np

from .errors import UserError
from .manifest import create_file
from .outdir import PARTS, human_bytes, part_names
from .pool import log_stderr, tokenize_in_order
from .shardfile import ShardFile
from .positions import Position
from .storage import files_at, is_url


@dataclass(frozen=True)
class PartBatch:
    """Where one batch of a part starts: its first token and document in the part, and in the source."""

    token: int
    doc: int
    start: Position
    backend: str


@dataclass(frozen=True)
class Part:
    """A finished part's record (`{i:06d}.json`)."""

    index: int
    file: str  # the source file, for messages only (never used as a path)
    tokens: int
    bytes: int
    docs: int
    sha256: str
    has_counts: bool
    batches: tuple  # of PartBatch, in order
    skipped: bool = False  # this call found it done already

    def to_json(self):
        return {"index": self.index, "file": self.file, "tokens": self.tokens, "bytes": self.bytes, "docs": self.docs,
                "sha256": self.sha256, "has_counts": self.has_counts,
                "batches": [[b.token, b.doc, b.start.to_json(), b.backend] for b in self.batches]}

    @classmethod
    def from_json(cls, d, i):
        """Raises ValueError (KeyError, TypeError) unless d is the record of part i as this tool writes it."""
        if d["index"] != i or not isinstance(d["has_counts"], bool) or not isinstance(d["sha256"], str):
            raise ValueError(f"not the record of part {i}")
        tokens, nbytes, docs = (d[k] for k in ("tokens", "bytes", "docs"))
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63 for x in (tokens, nbytes, docs)) \
                or nbytes not in (2 * tokens, 4 * tokens) or docs > tokens:
            raise ValueError(f"part {i}: counts do not add up")
        batches = tuple(PartBatch(t, k, Position.from_json(p), str(b)) for t, k, p, b in d["batches"])
        starts, docs_at = [b.token for b in batches], [b.doc for b in batches]
        if tokens and (not batches or starts[0] != 0 or docs_at[0] != 0):
            raise ValueError(f"part {i}: its batches do not start at its first token")
        if any(not isinstance(x, int) for x in starts + docs_at) or starts != sorted(set(starts)) \
                or (starts and starts[-1] >= tokens) or docs_at != sorted(docs_at) or (docs_at and docs_at[-1] > docs):
            raise ValueError(f"part {i}: batches out of order or beyond its tokens")
        return cls(i, str(d["file"]), tokens, nbytes, docs, d["sha256"], d["has_counts"], batches)


def load_done(out_dir, i, check_sha=True):
    """Part i's record if the part is complete and intact (or already used by an assembly), else None.
    In a bucket the sha256 is not read back (an object exists only complete; its size is checked)."""
    files = files_at(out_dir)
    tokens, counts, record = part_names(i)
    try:
        body = files.read(record)
        if body is None:
            return None
        part = Part.from_json(json.loads(body), i)
        if files.size(record + ".used") is not None:  # written into shards already, then deleted by assemble
            return part
        if files.size(tokens) != part.bytes:
            return None
        if part.has_counts and files.size(counts) != 8 * part.docs:
            return None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if check_sha and files.sha256(tokens) not in (None, part.sha256):
        return None
    return part


def check_space(job, i, files, name):
    """One line, before tokenizing, if the local disk the part of file i is written on (the output
    directory, or for a bucket the staging directory it is uploaded from) has no room for it."""
    tokens = job.estimate_file_tokens(i)
    if not tokens:
        return
    need = tokens * np.dtype(job.dtype).itemsize + (1 << 20)
    where, free = files.staging_space(name)
    if need > free:
        upload = f" before its upload to {job.out_dir}" if is_url(job.out_dir) else ""
        raise UserError(f"the part of {os.path.basename(str(job.source.files[i]))} is written in {where}{upload}: "
                        f"about {human_bytes(need)} needed, {human_bytes(free)} free; "
                        + ("set TMPDIR to a disk with more space" if upload else "free some space")
                        + ", or skip this check with --no-disk-check")


def tokenize_file(job, i, nprocs=0, log=None):
    """Tokenize source file i of job into its part; returns its Part.

    nprocs=0 encodes in this process (a Ray task holds one CPU); more uses a local process pool.
    log: for a task's log lines (a retried network fault); default stderr."""
    done = load_done(job.out_dir, i)
    if done is not None:
        return replace(done, skipped=True)
    files = files_at(job.out_dir)
    names = part_names(i)
    if job.disk_check:
        check_space(job, i, files, names[0])
    # temporary names unique per attempt: a task that Ray retries may overlap a lost node's attempt still running
    tmp = [files.staging(n) for n in names[:2]]
    h, n, docs, batches = hashlib.sha256(), 0, 0, []
    with_counts = bool(getattr(job.source, "has_token_count", False))
    try:
        with ShardFile(tmp[0]) as ftok, create_file(tmp[1]) as fcnt, \
                closing(job.source.file_batches(i)) as src, \
                closing(tokenize_in_order(src, job.encoder_args(), nprocs, job.source.fetchers(max(nprocs, 1)),
                                          log or log_stderr)) as stream:
            for enc in stream:
                if with_counts and enc.counts is None:  # a file without the column (a Hub dataset's later
                    with_counts = False                 # file, hub.HubSource._file_columns): no counts kept
                batches.append(PartBatch(n, docs, enc.start, enc.backend))
                # in the dtype of the run's shards (a format may choose its own: megatron's int32)
                data = memoryview(np.ascontiguousarray(enc.tokens, dtype=job.dtype)).cast("B")
                ftok.write(data)
                h.update(data)
                k = enc.docs
                if with_counts:
                    counts = np.asarray(enc.counts, dtype="<i8")
                    if len(counts) != k:  # every document of the batch begins in it (no fragments)
                        raise UserError(f"{job.source.files[i]}: token_count column does not match the documents")
                    fcnt.write(counts.tobytes())
                n, docs = n + len(enc.tokens), docs + k
            ftok.finish()
            fcnt.flush()
            os.fsync(fcnt.fileno())
        files.put(tmp[0], names[0])
        if with_counts:
            files.put(tmp[1], names[1])
        else:
            files.discard(tmp[1])
        files.synced(PARTS)
    except BaseException:
        for t in tmp:
            files.discard(t)
        raise
    part = Part(i, str(job.source.files[i]), n, n * np.dtype(job.dtype).itemsize, docs, h.hexdigest(), with_counts,
                tuple(batches))
    files.write(names[2], (json.dumps(part.to_json()) + "\n").encode())  # last: a part with a record is complete
    return part
