"""Parts -> shards + manifest: the last step of a multi-machine run (`fineweb.py assemble DIR`).

Once every source file's part is written, the token count of each is known, so shard k is simply
tokens [k*S, (k+1)*S) of the parts' concatenation: every shard can be written on its own, in
parallel (threads here, Ray tasks with --engine ray). The result is the same bytes and the same
manifest as a single-machine run of the same command, because the parts hold the same tokens and
record where each source batch starts (the manifest's resume positions and backends come from them).

Crash-safe: each finished shard is written under a temporary name and renamed, then recorded in
parts/assembled.json; a rerun keeps recorded shards. A part's tokens are deleted as soon as every
shard that needs them is recorded, so the disk never holds much more than one copy of the data;
parts/ goes once manifest.json is written.
"""
import bisect
import hashlib
import json
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from .errors import UserError
from .formats import header_for
from .manifest import VERSION, Manifest, _unlink, atomic_write
from .parts import PARTS, load_done, part_paths
from .writer import shard_name

CHUNK = 16 << 20  # tokens copied at a time: bounded memory whatever the shard size


def read_plan(out_dir):
    path = os.path.join(out_dir, PARTS, "job.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{out_dir} has no {PARTS}/job.json: run the per-file tokenizing first "
                        "(--engine ray, or every --rank of --world-size)") from None


def load_parts(out_dir, plan):
    """Every part's record, in file order; names the files (and ranks) still missing."""
    metas, missing = [], []
    for i in range(plan["files"]):
        meta = load_done(out_dir, i, check_sha=False)
        if meta is None:
            missing.append(i)
        metas.append(meta)
    if missing:
        ranks = ""
        if plan.get("world_size"):
            ranks = f" (ranks {', '.join(str(r) for r in sorted({i % plan['world_size'] for i in missing}))} " \
                    f"of --world-size {plan['world_size']})"
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserError(f"{out_dir}: {len(missing)} of {plan['files']} files are not tokenized yet{ranks}: "
                        f"files {shown}; run them first (rerunning a rank skips its finished files)")
    return metas


def shard_specs(out_dir, settings, metas):
    """What each shard is made of: byte ranges of parts, plus its manifest fields known in advance."""
    S, eot = settings["shard_size"], settings["eot"]
    cum = np.cumsum([0] + [m["tokens"] for m in metas]).tolist()
    total = cum[-1]
    starts_of = [[x[0] for x in m["batches"]] for m in metas]  # each part's batch start tokens
    counts = all(m["has_counts"] for m in metas)
    specs = []
    for k in range(-(-total // S)):
        lo, hi = k * S, min((k + 1) * S, total)
        pieces, backends = [], set()
        p = bisect.bisect_right(cum, lo) - 1
        while p < len(metas) and cum[p] < hi:
            m = metas[p]
            a, b = max(lo, cum[p]) - cum[p], min(hi, cum[p + 1]) - cum[p]
            if b > a:
                starts = starts_of[p]
                j = bisect.bisect_right(starts, a) - 1
                tok_path, counts_path, _ = part_paths(out_dir, m["index"])
                pieces.append([tok_path, counts_path if m["has_counts"] else None, a, b, starts[j], m["batches"][j][1]])
                for j2 in range(j, len(starts)):  # the batches this range touches: their backends
                    if starts[j2] >= b:
                        break
                    end_j = starts[j2 + 1] if j2 + 1 < len(starts) else m["tokens"]
                    if end_j > max(a, starts[j2]):
                        backends.add(m["batches"][j2][3])
            p += 1
        name, split = shard_name(settings["prefix"], k, settings["format"])
        specs.append({
            "index": k, "file": name, "split": split, "path": os.path.join(out_dir, name),
            "format": settings["format"], "dtype": settings["dtype"], "eot": eot, "tokens": hi - lo,
            "pieces": pieces, "counts": counts,
            "backend": " + ".join(sorted(b for b in backends if b)),
            "end": None if hi - lo < S else _end(metas, starts_of, cum, hi),
        })
    return specs


def _end(metas, starts_of, cum, e):
    """Where a single-machine run would resume after a shard ending at token e: the batch holding
    token e-1, and how many of its tokens the shards so far hold (pipeline.py's "end")."""
    p = bisect.bisect_right(cum, e - 1) - 1
    starts = starts_of[p]
    j = bisect.bisect_right(starts, e - 1 - cum[p]) - 1
    return {"pos": metas[p]["batches"][j][2], "skip": e - cum[p] - starts[j]}


def write_shard(spec):
    """Write one shard from its part ranges (engine-agnostic: a thread, or a Ray task); its manifest entry."""
    dtype, eot = np.dtype(spec["dtype"]), spec["eot"]

    def write(f):
        head = header_for(spec["format"], dtype, spec["tokens"])
        h = hashlib.sha256(head)
        f.write(head)
        docs, count_sum = 0, 0
        for tok_path, counts_path, a, b, batch_off, batch_docs in spec["pieces"]:
            toks = np.memmap(tok_path, dtype=dtype, mode="r")
            d0 = batch_docs + int(np.count_nonzero(toks[batch_off:a] == eot))  # documents before token a
            k = 0
            for x in range(a, b, CHUNK):
                chunk = np.ascontiguousarray(toks[x : min(b, x + CHUNK)])
                f.write(memoryview(chunk).cast("B"))
                h.update(memoryview(chunk).cast("B"))
                k += int(np.count_nonzero(chunk == eot))
            if counts_path is not None:
                count_sum += int(np.memmap(counts_path, dtype="<i8", mode="r")[d0 : d0 + k].sum()) if k else 0
            docs += k
            del toks
        return len(head) + spec["tokens"] * dtype.itemsize, h.hexdigest(), docs, count_sum

    nbytes, sha, docs, count_sum = atomic_write(spec["path"], write, tag=f".{socket.gethostname()}.{os.getpid()}")
    return {
        "file": spec["file"], "split": spec["split"], "index": spec["index"], "tokens": spec["tokens"],
        "docs": docs, "bytes": nbytes, "sha256": sha, "token_count_sum": count_sum if spec["counts"] else None,
        "backend": spec["backend"], "end": spec["end"],
    }


def local_map(fn, items, workers):
    """Run fn over items on a thread pool; yield results as they finish."""
    with ThreadPoolExecutor(max(1, workers)) as ex:
        for fut in as_completed([ex.submit(fn, x) for x in items]):
            yield fut.result()


def assemble(out_dir, log=print, map_fn=None, workers=2, t0=None):
    """Cut every shard from the parts, write manifest.json, remove parts/. Returns the Manifest."""
    t0 = t0 or time.time()
    done_manifest = Manifest.load(out_dir)
    if done_manifest is not None and done_manifest.data["complete"]:
        # parts/ still there: the last run stopped while removing it, after the manifest was written
        shutil.rmtree(os.path.join(out_dir, PARTS), ignore_errors=True)
        log(f"{out_dir} is already complete ({len(done_manifest.shards)} shards); nothing to do")
        return done_manifest
    plan = read_plan(out_dir)
    metas = load_parts(out_dir, plan)
    specs = shard_specs(out_dir, plan["settings"], metas)
    state_path = os.path.join(out_dir, PARTS, "assembled.json")
    done = {}
    if os.path.exists(state_path):
        with open(state_path) as f:
            for e in json.load(f):
                path = os.path.join(out_dir, e["file"])
                if os.path.exists(path) and os.path.getsize(path) == e["bytes"]:
                    done[e["index"]] = e
    # which shards need each part, to delete the part once they are all written
    needs = {m["index"]: set() for m in metas}
    for s in specs:
        for piece in s["pieces"]:
            needs[int(os.path.basename(piece[0])[:6])].add(s["index"])
    todo = [s for s in specs if s["index"] not in done]
    log(f"assembling {len(todo)} of {len(specs)} shards from {len(metas)} parts in {out_dir}")
    for entry in (map_fn or (lambda fn, xs: local_map(fn, xs, workers)))(write_shard, todo):
        done[entry["index"]] = entry
        atomic_write(state_path, json.dumps(list(done.values())).encode())
        log(f"wrote {entry['file']}: {entry['tokens']:,} tokens, {entry['docs']:,} docs")
        for i, ks in needs.items():
            if ks and ks <= done.keys():
                _release_part(out_dir, i)
                ks.clear()
    manifest = Manifest(out_dir, {
        "version": VERSION, "settings": plan["settings"], "source": plan["source"],
        "shards": [done[k] for k in range(len(specs))], "complete": True, "max_tokens": None,
        "seconds": round(time.time() - t0, 1),
    })
    manifest.save()
    shutil.rmtree(os.path.join(out_dir, PARTS), ignore_errors=True)
    return manifest


def _release_part(out_dir, i):
    tok_path, counts_path, meta_path = part_paths(out_dir, i)
    open(meta_path + ".used", "w").close()  # the record stays for a rerun's plan; its tokens may go
    _unlink(tok_path)
    _unlink(counts_path)
