"""`fineweb.py merge DIR`: shards -> nanoGPT's train.bin + val.bin, or -> another shard format.

    python fineweb.py merge edu_fineweb10B --out data/fineweb_edu     # train.bin, val.bin (raw uint16)
    python fineweb.py merge edu_fineweb10B --format llmc              # convert every shard in place

Both stream shard by shard (constant memory), check each shard against the manifest's sha256 as
they read it, and write every file under a temporary name, fsync, rename.

A conversion keeps the target's manifest true after every file: it is marked `converting` (loaders
and verify refuse it until the conversion is finished), and each converted shard is recorded, with
its new name, size and sha256, as soon as it is in place. An interrupted conversion is finished by
running the same command again. train.bin / val.bin are recorded in `merge.json` beside them: a file
of that name this tool did not write is never replaced.
"""
import argparse
import hashlib
import json
import os
from dataclasses import replace

import numpy as np

from .bucket import manifest_at, open_dir
from .errors import UserError
from .formats import FORMATS, header_bytes, open_tokens, sha256_file, write_shard
from .manifest import Manifest, atomic_write, remove_file
from .outdir import EMPTY, FOREIGN, MERGED, RUN, OutputDir, merged_by_us, read_merged
from .retry import budget, retry_budget
from .shards import shard_name
from .storage import BucketFiles, RemoteTokens, is_url

CHUNK = 1 << 24  # tokens copied at a time


def load_manifest(d):
    if not is_url(d) and not os.path.isdir(d):
        raise UserError(f"{d}: no such directory; give the --local-dir of a finished fineweb.py run")
    m = manifest_at(d)
    if m is None:
        raise UserError(f"{d} has no manifest.json: not an output directory of fineweb.py (make one with it first)")
    return m


def check_finished(m):
    if m.converting:
        to = m.converting["to"]
        raise UserError(f"{m.out_dir} is being converted to {to} (an interrupted merge); finish it with: "
                        f"python fineweb.py merge {m.out_dir} --format {to}")
    if not m.complete:
        raise UserError(f"{m.out_dir} holds an unfinished run ({len(m.shards)} shards); rerun the command that made "
                        "it to finish it, then merge")


def read_checked(m, s):
    """Yield a shard's tokens in chunks, checking its size and sha256 against the manifest entry."""
    st, path = m.settings, os.path.join(m.out_dir, s.file)
    try:
        if is_url(m.out_dir):  # ranged GETs, a chunk at a time
            files = BucketFiles(m.out_dir)
            size = files.size(s.file)
            if size != s.bytes:
                raise ValueError("missing" if size is None else f"{size:,} bytes, manifest says {s.bytes:,}")
            tokens = RemoteTokens(files, s.file, st["dtype"], s.tokens, s.bytes)
        else:
            if os.path.getsize(path) != s.bytes:
                raise ValueError(f"{os.path.getsize(path):,} bytes, manifest says {s.bytes:,}")
            tokens = open_tokens(path, m.shard_format(s), st["dtype"])
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: {e}; check the directory with: python fineweb.py verify {m.out_dir}") from None
    h = hashlib.sha256(header_bytes(m.shard_format(s), tokens))
    for i in range(0, len(tokens), CHUNK):
        chunk = tokens[i : i + CHUNK]
        h.update(memoryview(chunk).cast("B"))
        yield chunk
    del tokens
    if h.hexdigest() != s.sha256:
        raise UserError(f"{path}: sha256 differs from the manifest; check the directory with: "
                        f"python fineweb.py verify {m.out_dir}")


def to_nanogpt(m, out, say):
    """train.bin = every train shard in order, val.bin = the val shard(s): raw tokens, no header."""
    dtype = m.settings["dtype"]
    record_path = os.path.join(out.path, MERGED)
    record = read_merged(out.path)
    for split in ("val", "train"):
        shards = [s for s in m.shards if s.split == split]
        if not shards:
            raise UserError(f"{m.out_dir} has no {split} shard; make a longer run or use a smaller --shard-size")
        name = f"{split}.bin"
        path = os.path.join(out.path, name)
        if os.path.lexists(path) and not merged_by_us(out.path, name):
            raise UserError(f"{path} exists and this tool did not write it; move it away or choose another --out")

        def write(f):
            n, h = 0, hashlib.sha256()
            for s in shards:
                for chunk in read_checked(m, s):
                    data = memoryview(chunk).cast("B")
                    f.write(data)
                    h.update(data)
                    n += len(chunk)
            return n, h.hexdigest()

        n, sha = atomic_write(path, write)
        st = os.stat(path)
        record[name] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha,
                        "from": m.out_dir if is_url(m.out_dir) else os.path.abspath(m.out_dir)}
        atomic_write(record_path, (json.dumps({"tool": "fineweb.py merge", "files": record}, indent=1) + "\n").encode())
        say(f"wrote {path}: {n:,} tokens from {len(shards)} shard(s)")
    np_name = "np.uint16" if dtype == "<u2" else "np.uint32"
    say(f"nanoGPT reads them with np.memmap(path, dtype={np_name}, mode='r')"
        + ("" if dtype == "<u2" else " (change its dtype=np.uint16: these tokens need 32 bits)"))


def convert_in_place(m, out, fmt, say):
    """Rewrite every shard of m in format fmt, in its own directory, the manifest true after every file."""
    if m.converting is None:
        if m.settings["format"] == fmt:
            say(f"{m.out_dir} is already in format {fmt}; nothing to do")
            return
        m.converting = {"to": fmt, "done": []}
        m.save()
    out.remove_temp_files()
    old_fmt, dtype, prefix = m.settings["format"], m.settings["dtype"], m.settings["prefix"]
    for i in m.converting["done"]:  # converted and recorded, but stopped before the old file went
        stale = shard_name(prefix, i, old_fmt)[0]
        if stale != m.shards[i].file:
            remove_file(os.path.join(m.out_dir, stale))
    for i, s in enumerate(m.shards):
        if i in m.converting["done"]:
            continue
        name = shard_name(prefix, i, fmt)[0]
        src, dst = os.path.join(m.out_dir, s.file), os.path.join(m.out_dir, name)
        src_there = os.path.exists(src) and (name != s.file or os.path.getsize(src) == s.bytes)
        if not src_there and _opens(dst, fmt, dtype, s):
            nbytes, sha = os.path.getsize(dst), sha256_file(dst)  # renamed into place just before a stop
        else:
            nbytes, sha = _convert_one(m, s, dst, fmt, old_fmt, dtype)
        m.shards[i] = replace(s, file=name, bytes=nbytes, sha256=sha)
        m.converting["done"].append(i)
        m.save()
        if name != s.file:
            remove_file(src)  # listed in the manifest until a moment ago: this tool's own file
        say(f"wrote {dst}")
    m.settings["format"], m.converting = fmt, None
    m.save()
    say(f"{len(m.shards)} shards in format {fmt} in {m.out_dir}; check them with: python fineweb.py verify {m.out_dir}")


def convert_to(m, out, fmt, say):
    """Write every shard of m in format fmt into another directory, with its own manifest."""
    st = out.state()
    src_abs = m.out_dir if is_url(m.out_dir) else os.path.abspath(m.out_dir)
    if st.kind == RUN and (st.manifest.converting or {}).get("from") == src_abs and st.manifest.converting["to"] == fmt:
        new = st.manifest  # an interrupted conversion of the same directory: go on
    elif st.kind == RUN and not st.manifest.converting and st.manifest.settings == dict(m.settings, format=fmt) \
            and st.manifest.source == m.source and [e.tokens for e in st.manifest.shards] == [e.tokens for e in m.shards]:
        say(f"{out.path} already holds these shards in format {fmt}; nothing to do")
        return
    elif st.kind == FOREIGN:
        out.refuse_foreign(st)
    elif st.kind != EMPTY:
        raise UserError(f"{out.path} already holds a manifest.json or a run; give an empty --out directory")
    else:
        new = Manifest(out.path, dict(m.settings, format=fmt), m.source, [], complete=False, max_tokens=m.max_tokens,
                       seconds=m.seconds, converting={"to": fmt, "done": [], "from": src_abs})
        new.save()
    out.remove_temp_files()
    dtype = m.settings["dtype"]
    for s in m.shards[len(new.shards):]:
        name = shard_name(m.settings["prefix"], s.index, fmt)[0]
        nbytes, sha = _convert_one(m, s, os.path.join(out.path, name), fmt, m.settings["format"], dtype)
        new.shards.append(replace(s, file=name, bytes=nbytes, sha256=sha))
        new.converting["done"].append(s.index)
        new.save()
        say(f"wrote {os.path.join(out.path, name)}")
    new.converting, new.complete = None, True
    new.save()
    say(f"{len(new.shards)} shards in format {fmt} in {out.path}; check them with: python fineweb.py verify {out.path}")


def _convert_one(m, s, dst, fmt, old_fmt, dtype):
    if is_url(m.out_dir):  # one shard in memory (checked as it arrives), then written
        tokens = np.concatenate(list(read_checked(m, s)) or [np.empty(0, dtype=dtype)])
        return atomic_write(dst, lambda f: write_shard(f, fmt, tokens))
    for _ in read_checked(m, s):  # check size, header and sha256 before writing anything from it
        pass
    src = os.path.join(m.out_dir, s.file)
    # the memory map lives only while the new file is written (it must be gone before the old file may go)
    return atomic_write(dst, lambda f: write_shard(f, fmt, open_tokens(src, old_fmt, dtype)))


def _opens(path, fmt, dtype, s):
    try:
        return len(open_tokens(path, fmt, dtype)) == s.tokens
    except (OSError, ValueError):
        return False


def cmd_merge(argv):
    p = argparse.ArgumentParser(
        prog="fineweb.py merge",
        description="Concatenate the shards of DIR into nanoGPT's train.bin and val.bin (raw uint16, or uint32 "
        "for vocabularies over 65536), or with --format convert every shard to another format.")
    p.add_argument("dir", help="an output directory of fineweb.py (with manifest.json)")
    p.add_argument("--out", metavar="OUTDIR", help="where to write (default: DIR itself)")
    p.add_argument("--format", metavar="FMT", help=f"convert the shards to {', '.join(FORMATS)} instead")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    args = p.parse_args(argv)
    if args.format is not None and args.format not in FORMATS:
        raise UserError(f"--format {args.format!r}: choose one of {', '.join(FORMATS)}")
    with retry_budget(*budget(), quiet=args.quiet):  # --quiet: no line per retry of a bucket's reads either
        return merge(args, (lambda msg: None) if args.quiet else print)


def merge(args, say):
    if is_url(args.dir) and (args.out is None or is_url(args.out)):
        raise UserError(f"merge from {args.dir} writes local files: give --out LOCAL_DIR")
    if args.out is not None and is_url(args.out):
        raise UserError(f"--out {args.out}: merge writes local files; give a local directory")
    m = load_manifest(args.dir)  # (one-line errors before anything is locked)
    out_dir = args.out or args.dir
    in_place = not is_url(args.dir) and os.path.isdir(out_dir) and os.path.samefile(out_dir, args.dir)
    fmt = m.settings["format"]
    if args.format and "megatron" in (args.format, fmt) and args.format != fmt:
        # megatron shards end at document starts, the others at exactly --shard-size tokens: another cut
        raise UserError(f"--format {args.format}: {fmt} shards cannot be converted to {args.format} one by one (megatron "
                        "shards hold whole documents, the others exactly --shard-size tokens); rerun the tokenizer "
                        f"with --format {args.format} into another --local-dir")
    if args.format is None and m.settings["dtype"] == "<i4":
        raise UserError("these megatron shards hold int32 ids (a vocabulary of 65,500 or more), not nanoGPT's "
                        "uint16/uint32; rerun with --format bin for a train.bin/val.bin")
    if args.format == "llmc" and m.settings["shard_size"] >= 2**31:
        raise UserError("llm.c shards hold fewer than 2**31 tokens; these shards are larger")
    with open_dir(args.dir, m.settings["prefix"], shared=not in_place, create=False, what="merge") as src:
        m = load_manifest(src.label)  # again, under the lock
        if not (in_place and m.converting and m.converting["to"] == args.format):
            check_finished(m)
        if in_place:
            if args.format:
                convert_in_place(m, src, args.format, say)
            else:
                to_nanogpt(m, src, say)
            return 0
        with OutputDir(out_dir, m.settings["prefix"], what="merge") as out:
            if args.format:
                convert_to(m, out, args.format, say)
            else:
                to_nanogpt(m, out, say)
    return 0
