"""Parts -> shards + manifest: the last step of a multi-machine run (`fineweb.py assemble DIR`).

Once every source file's part is written, the token count of each is known, so every shard can be
written on its own, in parallel (threads here, Ray tasks with --engine ray). Which tokens go into
which shard, and each shard's resume position, come from shards.Cutter fed with the batches the
parts recorded: the same code that cuts a one-machine run, so the result is the same bytes and
the same manifest as a single-machine run of the same command.

Crash-safe: each finished shard is written under a temporary name and renamed, then recorded in
parts/assembled.json; a rerun keeps recorded shards. A part's tokens are deleted as soon as every
shard that needs them is recorded, so the disk never holds much more than one copy of the data;
parts/ goes once manifest.json is written. Only one assembly at a time: the output directory's lock.
"""
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .bucket import open_dir
from .errors import UserError
from .formats import header_for, megatron_index, whole_documents
from .manifest import Manifest, check_settings, check_source
from .outdir import PARTS, OutputDir, part_names
from .parts import load_done
from .positions import End
from .shards import Cutter, ShardEntry, make_entry, shard_files, shard_name
from .storage import files_at
from .tokspec import Boundary

CHUNK = 16 << 20  # tokens copied at a time: bounded memory whatever the shard size
ASSEMBLED = f"{PARTS}/assembled.json"


@dataclass(frozen=True)
class PartRange:
    """Tokens [a, b) of part `part`, inside the batch that starts at token `batch_token` (document `batch_doc`)."""

    part: int
    a: int
    b: int
    batch_token: int
    batch_doc: int


@dataclass(frozen=True)
class ShardSpec:
    """Everything needed to write one shard, anywhere (a thread, a Ray task)."""

    out_dir: str
    prefix: str
    fmt: str
    dtype: str
    eot: int
    index: int
    tokens: int
    pieces: tuple  # of PartRange
    with_counts: bool
    backends: frozenset
    end: Optional[End]
    doc_lengths: Optional[tuple] = None  # megatron: each document's tokens, for its .idx


def read_plan(out_dir):
    """parts/job.json: the run's settings, source and number of files, as the first rank recorded them."""
    path = f"{out_dir}/{PARTS}/job.json"
    try:
        body = files_at(out_dir).read(f"{PARTS}/job.json")
        if body is None:
            raise FileNotFoundError(path)
        plan = json.loads(body)
        check_settings(plan["settings"])
        check_source(plan["source"])
        if not isinstance(plan["files"], int) or not 1 <= plan["files"] <= 10**7:
            raise ValueError("files is not a count")
        if plan.get("world_size") is not None and (not isinstance(plan["world_size"], int) or plan["world_size"] < 1):
            raise ValueError("world_size is not a count")
    except FileNotFoundError:
        raise UserError(f"{out_dir} has no {PARTS}/job.json: run the per-file tokenizing first "
                        "(--engine ray, or every --rank of --world-size)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a plan this tool wrote ({e}); move it away") from None
    return plan


def load_parts(out_dir, plan):
    """Every part's record, in file order; names the files (and ranks) still missing."""
    parts, missing = [], []
    for i in range(plan["files"]):
        part = load_done(out_dir, i, check_sha=False)
        if part is None:
            missing.append(i)
        parts.append(part)
    if missing:
        ranks = ""
        if plan.get("world_size"):
            ranks = f" (ranks {', '.join(str(r) for r in sorted({i % plan['world_size'] for i in missing}))} " \
                    f"of --world-size {plan['world_size']})"
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"{out_dir}: {len(missing)} of {plan['files']} files are not tokenized yet{ranks}: "
                        f"files {shown}; run them first (rerunning a rank skips its finished files)")
    return parts


def boundary_of(settings):
    return Boundary(settings["doc_boundary"], tuple(settings["boundary_before"]), tuple(settings["boundary_after"]))


def shard_specs(out_dir, settings, parts):
    """What each shard is made of: the parts' batches fed, in order, to the Cutter a one-machine run uses.
    A format of whole documents (megatron) needs where documents begin: each part's tokens are read
    once more here, to find them (its shards' cuts and each document's length come from that)."""
    whole = whole_documents(settings["format"])
    cutter = Cutter(settings["shard_size"], whole_docs=whole)
    boundary = boundary_of(settings)
    files = files_at(out_dir)
    pieces, backends, ends, starts, filled = {}, {}, {}, {}, {}
    for p in parts:
        for j, b in enumerate(p.batches):
            n = (p.batches[j + 1].token if j + 1 < len(p.batches) else p.tokens) - b.token
            doc_starts = None
            if whole:
                toks = files.read_array(part_names(p.index)[0], settings["dtype"], b.token, b.token + n)
                doc_starts = boundary.doc_starts(np.asarray(toks), b.start.cont)
            for piece in cutter.add(b.start, 0, n, doc_starts):
                if piece.hi > piece.lo:
                    pieces.setdefault(piece.shard, []).append(
                        PartRange(p.index, b.token + piece.lo, b.token + piece.hi, b.token, b.doc))
                    backends.setdefault(piece.shard, set()).add(b.backend)
                    if whole:  # the documents that begin in this piece, in shard coordinates
                        inside = doc_starts[(doc_starts >= piece.lo) & (doc_starts < piece.hi)]
                        at = filled.get(piece.shard, 0)
                        starts.setdefault(piece.shard, []).append(inside - piece.lo + at)
                        filled[piece.shard] = at + piece.hi - piece.lo
                ends[piece.shard] = piece.end
    # the source's per-document counts line up with markers only when a marker opens each document; a
    # shard with any range of a part without counts records no sum (as writer.py), never part of one
    counted = {p.index: p.has_counts and bool(boundary.before) for p in parts}
    specs = []
    for k in sorted(pieces):
        with_counts = all(counted[r.part] for r in pieces[k])
        tokens = sum(r.b - r.a for r in pieces[k])
        lengths = None
        if whole:  # a shard begins with a document, whether or not a marker stands at its first token
            st = np.concatenate(starts[k])
            if not len(st) or st[0] != 0:
                st = np.concatenate([[0], st])
            lengths = tuple(np.diff(np.append(st, tokens)).tolist())
        specs.append(ShardSpec(out_dir, settings["prefix"], settings["format"], settings["dtype"], settings["eot"], k,
                               tokens, tuple(pieces[k]), with_counts, frozenset(backends[k]), ends[k], lengths))
    return specs


def write_shard(spec):
    """Write one shard from its part ranges (engine-agnostic: a thread, or a Ray task); its ShardEntry."""
    dtype, eot = np.dtype(spec.dtype), spec.eot
    files = files_at(spec.out_dir)

    def write(f):
        head = header_for(spec.fmt, dtype, spec.tokens)
        h = hashlib.sha256(head)
        f.write(head)
        docs, count_sum = 0, 0
        for r in spec.pieces:
            tok_name, counts_name, _ = part_names(r.part)
            before = files.read_array(tok_name, dtype, r.batch_token, r.a)
            d0 = r.batch_doc + int(np.count_nonzero(before == eot))  # documents before token a
            k = 0
            for x in range(r.a, r.b, CHUNK):
                chunk = np.ascontiguousarray(files.read_array(tok_name, dtype, x, min(r.b, x + CHUNK)))
                f.write(memoryview(chunk).cast("B"))
                h.update(memoryview(chunk).cast("B"))
                k += int(np.count_nonzero(chunk == eot))
            if spec.with_counts and k:
                count_sum += int(files.read_array(counts_name, "<i8", d0, d0 + k).sum())
            docs += k
        return len(head) + spec.tokens * dtype.itemsize, h.hexdigest(), docs, count_sum

    name, _ = shard_name(spec.prefix, spec.index, spec.fmt)
    index_file = None
    if spec.doc_lengths is not None:  # megatron: the .idx is in place before its .bin
        data = megatron_index(spec.doc_lengths, dtype)
        files.write(shard_files(spec.prefix, spec.index, spec.fmt)[0], data)
        index_file = (len(data), hashlib.sha256(data).hexdigest())
    nbytes, sha, docs, count_sum = files.write(name, write)
    return make_entry(spec.prefix, spec.fmt, spec.index, spec.tokens, docs, nbytes, sha,
                      count_sum if spec.with_counts else None, spec.backends, spec.end, index_file)


def local_map(fn, items, workers):
    """Run fn over items on a thread pool; yield results as they finish."""
    with ThreadPoolExecutor(max(1, workers)) as ex:
        for fut in as_completed([ex.submit(fn, x) for x in items]):
            yield fut.result()


def assemble(out, log=print, map_fn=None, workers=2, t0=None):
    """Cut every shard from the parts, write manifest.json, remove parts/. Returns the Manifest.

    out: an OutputDir held by the caller (--engine ray), or a path or bucket URL: then it is locked here."""
    if not isinstance(out, OutputDir):
        with open_dir(out, create=False, what="assemble", log=log) as held:
            return assemble(held, log, map_fn, workers, t0)
    t0 = t0 or time.time()
    st = out.state()
    if st.manifest is not None and st.manifest.complete:
        # parts/ still there: the last run stopped while removing it, after the manifest was written
        out.remove_parts(of=st.manifest)
        log(f"{out.label} is already complete ({len(st.manifest.shards)} shards); nothing to do")
        return st.manifest
    if st.manifest is not None:
        raise UserError(f"{out.label} holds a single-machine run, not parts to assemble; finish it with the "
                        "command that started it")
    where = out.label  # a local directory, or the bucket URL: where the parts and shards are
    plan = read_plan(where)
    settings = plan["settings"]
    out.prefix = settings["prefix"]
    out.remove_temp_files()  # of an assembly (or a rank) that was killed
    parts = load_parts(where, plan)
    specs = shard_specs(where, settings, parts)
    files = files_at(where)
    done = load_assembled(files, settings)
    # which shards need each part, to delete the part once they are all written
    needs = {p.index: set() for p in parts}
    for s in specs:
        for r in s.pieces:
            needs[r.part].add(s.index)
    todo = [s for s in specs if s.index not in done]
    log(f"assembling {len(todo)} of {len(specs)} shards from {len(parts)} parts in {where}")
    # a format of whole documents finds document starts in every part (shard_specs): a rerun of a
    # killed assembly needs them all again, so its parts stay until the manifest is written
    release = not whole_documents(settings["format"])
    for entry in (map_fn or (lambda fn, xs: local_map(fn, xs, workers)))(write_shard, todo):
        out.check_held()
        done[entry.index] = entry
        files.write(ASSEMBLED, json.dumps([e.to_json() for e in done.values()]).encode())
        log(f"wrote {entry.file}: {entry.tokens:,} tokens, {entry.docs:,} docs")
        for i, ks in needs.items():
            if release and ks and ks <= done.keys():
                out.release_part(i)
                ks.clear()
    manifest = Manifest(out.path, settings, plan["source"], [done[k] for k in range(len(specs))], complete=True,
                        seconds=round(time.time() - t0, 1))
    manifest.save()
    out.publish(manifest)
    out.remove_parts(of=manifest)
    return manifest


def load_assembled(files, settings):
    """The shards an earlier assembly recorded and that are still there at their recorded size."""
    done = {}
    body = files.read(ASSEMBLED)
    if body is None:
        return done
    try:
        entries = json.loads(body)
    except ValueError:
        return done  # written atomically, so never half; unreadable means tampered: redo every shard
    for e in entries if isinstance(entries, list) else []:
        try:
            entry = ShardEntry.from_json(e, e.get("index"), settings["prefix"], settings["format"])
        except (ValueError, AttributeError, TypeError):
            continue
        sizes = [(entry.file, entry.bytes)] + ([(entry.index_file, entry.index_bytes)] if entry.index_file else [])
        if all(files.size(f) == n for f, n in sizes):
            done[entry.index] = entry
    return done
