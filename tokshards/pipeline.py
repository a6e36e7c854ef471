"""source -> tokenize (process pool) -> shard writer -> manifest, with exact resume.

The parent reads batches of documents and hands them to a pool of tokenizer processes, keeping
at most a few batches in flight (bounded memory; results come back in order). Tokens go into
the shard writer; each finished shard is recorded in the manifest with the source position its
successor starts at, so a rerun of the same command continues from the last full shard.
"""
import glob
import multiprocessing as mp
import os
import shutil
import time
from collections import deque
from contextlib import closing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from .errors import UserError
from .manifest import Manifest, _unlink
from .parts import PARTS, run_settings
from .tokenizer import MismatchError, Tokenizer, encode, encode_in_worker, init_worker
from .writer import ShardWriter, shard_files_on_disk

# Tokens a known config holds (GPT-2, with one end-of-text per document): for the disk check
# and the progress bar. From the dataset card and build-nanogpt/llm.c shard counts.
KNOWN_TOKENS = {"sample-10BT": 9.95e9, "sample-100BT": 100.1e9, "sample-350BT": 362.0e9}


@dataclass
class Job:
    source: object  # LocalSource or HubSource
    out_dir: str
    prefix: str
    fmt: str = "bin"
    tokenizer: str = "gpt2"
    eot_token: str = None
    backend: str = "auto"  # tokenizer backend: auto | fast | tiktoken (same bytes either way)
    check_every: int = 1000  # fast backend: re-encode 1 document in N with tiktoken and compare
    shard_size: int = 100_000_000
    max_tokens: int = None
    nprocs: int = None
    text_column: str = "text"
    doc_separator: str = "\n\n"
    overwrite: bool = False
    disk_check: bool = True
    config_name: str = None  # the Hub config, for the size estimate


def usable_cpus():
    """Cores this process may run on: affinity mask and cgroup CPU quota (containers, cloud VMs)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def tokenize_in_order(batches, tok, nprocs, window=None):
    """Yield (batch, tokens) in input order, with at most `window` batches in flight.

    A batch that carries a task (a parquet row group) is read by the worker itself; its
    token_count values come back with the tokens."""
    if nprocs == 0:  # in this process: for debugging, and for tiny inputs
        try:
            for b in batches:
                tokens, counts = encode(tok, b.texts, b.first_continues, b.task)
                if b.task is not None:
                    b.token_counts = counts
                b.backend = tok.backend
                yield b, tokens
        except MismatchError as e:
            raise UserError(str(e)) from None
        return
    window = window or 2 * nprocs + 2
    # forkserver: workers start clean, without the parent's threads (datasets' event loop).
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ex = ProcessPoolExecutor(nprocs, mp_context=ctx, initializer=init_worker, initargs=tok.worker_args())
    pending = deque()
    try:
        for b in batches:
            pending.append((b, ex.submit(encode_in_worker, b.texts, b.first_continues, b.task)))
            b.texts = None  # the worker has its copy; keep the parent small
            while len(pending) >= window or (pending and pending[0][1].done()):
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())
    except MismatchError as e:
        raise UserError(str(e)) from None
    except BrokenProcessPool:
        raise UserError(
            "a tokenizer worker process died (killed, or out of memory?); rerun the same command to resume"
        ) from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _result(batch, future):
    tokens, counts, batch.backend = future.result()
    if batch.task is not None:
        batch.token_counts = counts
    return batch, tokens


def estimate_tokens(job):
    if job.max_tokens:
        return job.max_tokens
    if job.config_name in KNOWN_TOKENS and not getattr(job.source, "local", False):
        return int(KNOWN_TOKENS[job.config_name])
    nbytes = job.source.input_bytes()
    if nbytes:
        # ~4.4 bytes of text per GPT-2 token; snappy parquet holds ~2x its size in text.
        parquet = sum(1 for f in getattr(job.source, "files", []) if f.endswith(".parquet"))
        factor = 2.0 if parquet else 1.0
        return int(nbytes * factor / 4.4)
    return None


def check_disk(job, itemsize, already):
    est = estimate_tokens(job)
    if not est or not job.disk_check:
        return
    need = max(0, est - already) * itemsize
    free = shutil.disk_usage(job.out_dir).free
    if need > free:
        raise UserError(
            f"this run will write about {need / 1e9:.1f} GB but {job.out_dir} has {free / 1e9:.1f} GB free; "
            "free some space, limit the run with --max-tokens, or skip this check with --no-disk-check"
        )


def _clean_leftovers(out_dir):
    for tmp in glob.glob(os.path.join(out_dir, ".*.tmp")):
        _unlink(tmp)


def _remove_unrecorded_shards(out_dir, prefix, shards):
    """A shard renamed into place just before a crash, never entered in the manifest: the rerun
    writes it again, or (with a smaller --max-tokens) never does; either way it must not stay,
    or verify fails and a loader that lists the directory reads it."""
    recorded = {s["file"] for s in shards}
    for f in shard_files_on_disk(out_dir, prefix):
        if f not in recorded:
            _unlink(os.path.join(out_dir, f))


def _remove_old_output(out_dir, prefix):
    old = Manifest.load(out_dir) if os.path.exists(os.path.join(out_dir, "manifest.json")) else None
    names = {s["file"] for s in old.shards} if old else set()
    names |= set(shard_files_on_disk(out_dir, prefix))
    for f in names | {"manifest.json"}:
        _unlink(os.path.join(out_dir, f))


def run(job, log=print, progress=None):
    """Run (or resume) a job; returns the manifest.

    progress: optional object with start(initial_tokens, estimated_total), update(n), close().
    """
    t0 = time.time()
    nprocs = usable_cpus() if job.nprocs is None else job.nprocs
    # with workers, the parent never encodes: it does not load the fast backend (less memory)
    tok = Tokenizer(job.tokenizer, job.eot_token, job.backend, job.check_every, encode=nprocs == 0)
    if tok.note:
        log(tok.note)
    settings = run_settings(job, tok)
    os.makedirs(job.out_dir, exist_ok=True)
    _clean_leftovers(job.out_dir)
    parts = os.path.join(job.out_dir, PARTS)
    if os.path.exists(os.path.join(parts, "job.json")):
        if not job.overwrite:
            raise UserError(f"{job.out_dir} holds a multi-machine run in progress ({parts}/); finish it with "
                            f"python fineweb.py assemble {job.out_dir}, or add --overwrite to start over")
        shutil.rmtree(parts)
    if job.overwrite:
        _remove_old_output(job.out_dir, job.prefix)
    manifest = Manifest.start(job.out_dir, settings, job.source.describe(), job.overwrite)

    # Where to start: after the last full shard. A trailing short shard (the end of a
    # --max-tokens run) is rewritten, which is how a finished run is extended.
    keep = manifest.full_shards(job.shard_size)
    written = sum(s["tokens"] for s in manifest.shards[:keep])
    if manifest.data["complete"]:
        total = sum(s["tokens"] for s in manifest.shards)
        if manifest.data["max_tokens"] is None or (job.max_tokens is not None and job.max_tokens <= total):
            if job.max_tokens is not None and job.max_tokens < total:
                raise UserError(
                    f"{job.out_dir} already holds {total:,} tokens, more than --max-tokens {job.max_tokens:,}; "
                    "use --overwrite to make a smaller run"
                )
            log(f"{job.out_dir} is already complete ({total:,} tokens in {len(manifest.shards)} shards); nothing to do")
            return manifest
    if job.max_tokens is not None and written > job.max_tokens:
        raise UserError(
            f"{job.out_dir} already holds {written:,} tokens, more than --max-tokens {job.max_tokens:,}; "
            "use --overwrite to make a smaller run"
        )
    check_disk(job, tok.dtype.itemsize, written)  # before anything is written
    dropped = manifest.shards[keep:]
    del manifest.shards[keep:]
    manifest.data.update(complete=False, max_tokens=None)
    manifest.save()
    for s in dropped:
        _unlink(os.path.join(job.out_dir, s["file"]))
    _remove_unrecorded_shards(job.out_dir, job.prefix, manifest.shards)
    start = manifest.shards[-1]["end"] if keep else None
    if keep:
        log(f"resuming {job.out_dir}: keeping {keep} complete shards ({written:,} tokens)")

    writer = ShardWriter(manifest, job.prefix, job.fmt, tok.dtype, job.shard_size, tok.eot,
                         on_shard=lambda e: log(f"wrote {e['file']}: {e['tokens']:,} tokens, {e['docs']:,} docs"))
    progress = progress or _NoProgress()
    progress.start(written, estimate_tokens(job))
    try:
        _stream(job, tok, writer, start, written, nprocs, progress)
    except BaseException:
        progress.close(ok=False)
        raise
    progress.close(ok=True)
    manifest.data.update(complete=True, max_tokens=job.max_tokens if writer.stopped else None,
                         seconds=round(time.time() - t0, 1))
    manifest.save()
    return manifest


def _stream(job, tok, writer, start, total, nprocs, progress):
    skip = start["skip"] if start else 0
    batches = job.source.batches(start["pos"] if start else None)
    with closing(batches), closing(tokenize_in_order(batches, tok, nprocs)) as stream:
        for batch, tokens in stream:
            offset, counts = 0, batch.token_counts
            if skip:  # first batch(es) of a resumed run: drop what the kept shards already hold
                cut = min(skip, len(tokens))
                if counts is not None:
                    counts = counts[int(np.count_nonzero(tokens[:cut] == tok.eot)) :]
                tokens, offset, skip = tokens[cut:], cut, skip - cut
            if job.max_tokens is not None and total + len(tokens) >= job.max_tokens:
                tokens, writer.stopped = tokens[: job.max_tokens - total], True
            writer.add(tokens, batch.start, offset, counts, batch.backend)
            total += len(tokens)
            progress.update(len(tokens))
            if writer.stopped:
                break
    writer.flush(end=None)


class _NoProgress:
    def start(self, initial, total):
        pass

    def update(self, n):
        pass

    def close(self, ok=True):
        pass
