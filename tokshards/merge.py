"""`fineweb.py merge DIR`: shards -> nanoGPT's train.bin + val.bin, or -> another shard format.

    python fineweb.py merge edu_fineweb10B --out data/fineweb_edu     # train.bin, val.bin (raw uint16)
    python fineweb.py merge edu_fineweb10B --format llmc              # convert every shard in place

Both stream shard by shard (constant memory), check each shard against the manifest's sha256 as
they read it, and write every file under a temporary name, fsync, rename. An interrupted
conversion is finished by running the same command again.
"""
import argparse
import copy
import hashlib
import os

from .errors import UserError
from .formats import FORMATS, header_bytes, open_tokens, sha256_file, write_shard
from .manifest import Manifest, _unlink, atomic_write
from .writer import shard_name

CHUNK = 1 << 24  # tokens copied at a time


def load_manifest(d):
    if not os.path.isdir(d):
        raise UserError(f"{d}: no such directory; give the --local-dir of a finished fineweb.py run")
    m = Manifest.load(d)
    if m is None:
        raise UserError(f"{d} has no manifest.json: not an output directory of fineweb.py (make one with it first)")
    if not m.data["complete"]:
        raise UserError(f"{d} holds an unfinished run ({len(m.shards)} shards); rerun the command that made it "
                        "to finish it, then merge")
    return m


def read_checked(m, s):
    """Yield a shard's tokens in chunks, checking its size and sha256 against the manifest entry."""
    st, path = m.data["settings"], os.path.join(m.out_dir, s["file"])
    try:
        if os.path.getsize(path) != s["bytes"]:
            raise ValueError(f"{os.path.getsize(path):,} bytes, manifest says {s['bytes']:,}")
        tokens = open_tokens(path, st["format"], st["dtype"])
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: {e}; check the directory with: python fineweb.py verify {m.out_dir}") from None
    h = hashlib.sha256(header_bytes(st["format"], tokens))
    for i in range(0, len(tokens), CHUNK):
        chunk = tokens[i : i + CHUNK]
        h.update(memoryview(chunk).cast("B"))
        yield chunk
    del tokens
    if h.hexdigest() != s["sha256"]:
        raise UserError(f"{path}: sha256 differs from the manifest; check the directory with: "
                        f"python fineweb.py verify {m.out_dir}")


def to_nanogpt(m, out_dir, say):
    """train.bin = every train shard in order, val.bin = the val shard(s): raw tokens, no header."""
    dtype = m.data["settings"]["dtype"]
    for split in ("val", "train"):
        shards = [s for s in m.shards if s["split"] == split]
        if not shards:
            raise UserError(f"{m.out_dir} has no {split} shard; make a longer run or use a smaller --shard-size")

        def write(f):
            n = 0
            for s in shards:
                for chunk in read_checked(m, s):
                    f.write(memoryview(chunk).cast("B"))
                    n += len(chunk)
            return n

        n = atomic_write(os.path.join(out_dir, f"{split}.bin"), write)
        say(f"wrote {os.path.join(out_dir, split + '.bin')}: {n:,} tokens from {len(shards)} shard(s)")
    np_name = "np.uint16" if dtype == "<u2" else "np.uint32"
    say(f"nanoGPT reads them with np.memmap(path, dtype={np_name}, mode='r')"
        + ("" if dtype == "<u2" else " (change its dtype=np.uint16: these tokens need 32 bits)"))


def convert(m, out_dir, fmt, say):
    """Rewrite every shard in format `fmt` into out_dir (which may be the same directory)."""
    old = m.data["settings"]["format"]
    in_place = os.path.exists(out_dir) and os.path.samefile(out_dir, m.out_dir)
    if in_place and old == fmt:
        say(f"{m.out_dir} is already in format {fmt}; nothing to do")
        return
    if not in_place and os.path.exists(os.path.join(out_dir, "manifest.json")):
        raise UserError(f"{out_dir} already holds a manifest.json; give an empty --out directory")
    os.makedirs(out_dir, exist_ok=True)
    new = copy.deepcopy(m.data)
    new["settings"]["format"] = fmt
    for s, e in zip(m.shards, new["shards"]):
        name = shard_name(new["settings"]["prefix"], s["index"], fmt)[0]
        src, dst = os.path.join(m.out_dir, s["file"]), os.path.join(out_dir, name)
        if in_place and _converted(src, dst, s, fmt, new["settings"]["dtype"]):
            e.update(file=name, bytes=os.path.getsize(dst), sha256=sha256_file(dst))  # done before a crash
        else:
            for _ in read_checked(m, s):  # check size, header and sha256 before writing anything from it
                pass
            tokens = open_tokens(src, old, m.data["settings"]["dtype"])
            nbytes, sha = atomic_write(dst, lambda f: write_shard(f, fmt, tokens))
            del tokens
            e.update(file=name, bytes=nbytes, sha256=sha)
        if in_place and name != s["file"]:
            _unlink(src)
        say(f"wrote {dst}")
    Manifest(out_dir, new).save()
    say(f"{len(new['shards'])} shards in format {fmt} in {out_dir}; "
        f"check them with: python fineweb.py verify {out_dir}")


def _converted(src, dst, s, fmt, dtype):
    """In-place rerun after a crash: is this shard already in the new format? (The old file, if
    still there, has the size the manifest says: bin and llmc sizes differ by the header.)"""
    if os.path.exists(src) and os.path.getsize(src) == s["bytes"]:
        return False
    return _opens(dst, fmt, dtype, s)


def _opens(path, fmt, dtype, s):
    try:
        return len(open_tokens(path, fmt, dtype)) == s["tokens"]
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
    m = load_manifest(args.dir)
    out_dir = args.out or args.dir
    say = (lambda msg: None) if args.quiet else print
    try:
        if args.format:
            convert(m, out_dir, args.format, say)
        else:
            os.makedirs(out_dir, exist_ok=True)
            to_nanogpt(m, out_dir, say)
    except ValueError as e:  # e.g. a shard too big for llm.c's int32 token count
        raise UserError(str(e)) from None
    return 0
