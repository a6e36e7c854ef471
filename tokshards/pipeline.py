"""source -> tokenize (process pool) -> shard writer -> manifest, with exact resume, on one machine.

The output directory (outdir.py) says what state it is in and holds the lock; the resume rules
(resume.py) say what to keep; the pool (pool.py) tokenizes batches in order; the writer (writer.py)
cuts them into shards and records each finished one in the manifest with the source position its
successor starts at, so a rerun of the same command continues from the last full shard.
"""
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .encoders import backend_note
from .errors import UserError
from .job import usable_cpus
from .manifest import Manifest, settings_mismatch, source_mismatch
from .bucket import open_dir
from .outdir import FOREIGN, PARTS, PARTS_STATE, RUN
from .pool import tokenize_in_order
from .resume import DONE, ERROR, plan
from .writer import ShardWriter


def open_manifest(out, job, log):
    """The manifest this run continues (checked against the job), or a new one; None if the
    directory holds nothing of a run. Refuses someone else's files and other runs' output."""
    st = out.state()
    if st.kind == PARTS_STATE:
        if not job.overwrite:
            raise UserError(f"{out.label} holds a multi-machine run in progress ({out.label}/{PARTS}/); finish it with "
                            f"python fineweb.py assemble {out.label}, or add --overwrite to start over")
        out.remove_parts()
        st = out.state()
    if st.kind == RUN and st.manifest.converting and not job.overwrite:
        to = st.manifest.converting["to"]
        raise UserError(f"{out.label} is being converted to {to} (an interrupted merge); finish it with: "
                        f"python fineweb.py merge {out.label} --format {to}")
    if st.kind == RUN and (job.overwrite or not st.manifest.shards):  # nothing of value kept: start afresh
        out.remove_run(st.manifest)
        st = out.state()
    if st.kind == FOREIGN:
        out.refuse_foreign(st)
    if st.kind != RUN:
        return None
    m = st.manifest
    problem = settings_mismatch(out.label, m.settings, job.settings()) or \
        source_mismatch(out.label, m.source, job.source.describe())
    if problem:
        raise UserError(problem)
    nfiles = len(job.source.files)
    for s in m.shards:
        if s.end is not None and s.end.pos.file >= nfiles:
            raise UserError(f"{m.path}: shard {s.index} ends in input file {s.end.pos.file}, but there are {nfiles}: "
                            "this manifest does not describe this input; use another --local-dir, or --overwrite")
    if m.settings.get("tokenizer_sha256") is None:  # a manifest of an earlier version: record them from now on
        log(f"{out.label}: made by an earlier fineweb.py that did not record the tokenizer's content hash and the "
            "inputs' fingerprints; recording them now")
        m.settings, m.source = job.settings(), job.source.describe()
        m.save()
        out.publish(m)
    return m


@dataclass(frozen=True)
class Streamed:
    """What stream() did: whether --max-tokens stopped it, and the CPU seconds the workers' threads spent
    reading the batches it took from them (a resumed run's skipped ones too; not those still in flight when
    --max-tokens stops it: a few per worker)."""

    stopped: bool
    read_cpu: float


@dataclass(frozen=True)
class RunResult:
    manifest: Manifest
    thread_cpu: Optional[dict] = None  # CPU seconds of the threads that wrote ("write") and hashed ("hash") shards
    read_cpu: Optional[float] = None  # CPU seconds the workers' threads spent reading their tasks (None: no workers)


def run(job, log=print, progress=None, pool=None):
    """Run (or resume) a job; returns a RunResult.

    progress: optional object with start(initial_tokens, estimated_total), update(n), close(ok).
    pool: the tokenizer processes, started early (pool.WorkerPool.early, of the size the job asks for),
    or None to start them when the first batch is ready. Killed when the run ends, either way.
    """
    t0 = time.time()
    nprocs = usable_cpus() if job.nprocs is None else job.nprocs
    note = backend_note(job.spec, job.backend)
    if note:
        log(note)
    if pool is not None:  # the workers build their encoders while this process opens the output
        pool.setup(job.encoder_args(), job.source.fetchers(nprocs), log)
    with open_dir(job.out_dir, job.prefix, shard_bytes=job.shard_size * np.dtype(job.dtype).itemsize, log=log) as out:
        m = open_manifest(out, job, log)
        out.remove_temp_files()
        if m is None:
            if job.disk_check:
                out.check_space(max(0, job.estimate_tokens() or 0) * np.dtype(job.dtype).itemsize)
            m = Manifest(out.path, job.settings(), job.source.describe())
            m.save()  # before any shard: the directory is this run's from now on
            out.publish(m)
            keep, start = 0, None
        else:
            intact, problem = out.check_shards(m)
            p = plan(m.shards, intact, m.complete, m.max_tokens, job.shard_size, job.max_tokens)
            if problem:
                log(f"{out.label}: {problem}" + (f"; {p.message}" if p.action != DONE else ""))
            if p.action == ERROR:
                raise UserError(f"{out.label} {p.message}")
            if p.action == DONE:
                out.remove_parts(of=m)  # a multi-machine run stopped while removing them, after its manifest
                log(f"{out.label} {p.message}")
                return RunResult(m)
            keep, start = p.keep, p.start
            if job.disk_check:
                need = max(0, (job.estimate_tokens() or 0) - sum(s.tokens for s in m.shards[:keep]))
                out.check_space(need * np.dtype(job.dtype).itemsize)
            out.remove_unrecorded_next(m)
            out.remove_shards(m, p.drop)
            del m.shards[keep:]
            m.complete, m.max_tokens = False, None
            m.save()
            out.publish(m)
            if p.message and not problem:
                log(f"resuming {out.label}: {p.message}")
        written = m.tokens()
        sp = job.spec
        if sp.kind != "tiktoken" or sp.boundary.policy != "eot-before":  # GPT-2's usual [EOT]+text goes unsaid
            log(f"tokenizer {sp.name}" + (f" at {sp.revision[:12]}" if sp.revision else "") + f": {sp.describe_boundary()}")
        def on_shard(e):
            out.publish(m)
            log(f"wrote {e.file}: {e.tokens:,} tokens, {e.docs:,} docs")

        writer = ShardWriter(m, job.dtype, job.spec.boundary, on_shard=on_shard)
        progress = progress or NoProgress()
        progress.start(written, job.estimate_tokens())
        try:
            streamed = stream(job, writer, start, written, nprocs, progress, log, pool)
        except BaseException:
            writer.abandon()
            progress.close(ok=False)
            if not m.shards:  # stopped before its first shard: nothing of this run stays behind
                out.remove_run(m)
            raise
        progress.close(ok=True)
        if not m.shards:  # nothing at all came out of the input
            out.remove_run(m)
            raise UserError(f"no documents in the input ({describe_input(job)}); nothing was written")
        m.complete, m.max_tokens, m.seconds = True, job.max_tokens if streamed.stopped else None, round(time.time() - t0, 1)
        m.save()
        out.publish(m)
        return RunResult(m, writer.thread_cpu, streamed.read_cpu if nprocs else None)


def stream(job, writer, start, total, nprocs, progress, log, pool=None):
    """Source -> pool -> writer from `start` on: a Streamed."""
    skip, read_cpu = (start.skip if start else 0), 0.0
    batches = job.source.batches(start.pos if start else None)
    encoded = tokenize_in_order(batches, job.encoder_args(), nprocs, job.source.fetchers(nprocs), log, pool)
    with closing(batches), closing(encoded):
        for enc in encoded:
            lo = min(skip, len(enc.tokens))  # a resumed run: what the kept shards already hold
            skip -= lo
            hi = len(enc.tokens)
            stop = job.max_tokens is not None and total + hi - lo >= job.max_tokens
            if stop:
                hi = lo + job.max_tokens - total
            writer.add(enc, lo, hi)
            read_cpu += enc.read_cpu
            total += hi - lo
            progress.update(hi - lo)
            if stop:
                writer.finish()
                return Streamed(True, read_cpu)
    writer.finish()
    return Streamed(False, read_cpu)


def describe_input(job):
    files = getattr(job.source, "files", [])
    if getattr(job.source, "dataset", None):
        return f"{job.source.dataset} {job.source.config}"
    return files[0] if len(files) == 1 else f"{len(files)} files"


class NoProgress:
    def start(self, initial, total):
        pass

    def update(self, n):
        pass

    def close(self, ok=True):
        pass
