"""`fineweb.py inspect DIR` (or a bucket URL): the manifest in brief, then the first documents of a shard as text.

    python fineweb.py inspect edu_fineweb10B                     # shard 0, first 3 documents
    python fineweb.py inspect edu_fineweb10B --shard 5 --docs 10 --chars 200

Documents are split where the run's document-boundary policy puts its marker id (settings "eot"):
before every document (eot-before, bos-before, bos-eos) or after it (eos-after). Tokens before the
first document continue one begun in the previous shard. Each document is shown with its first and
last ids, boundary ids included, then as text.
"""
import argparse
import json
import os

import numpy as np

from .bucket import manifest_at
from .errors import UserError
from .formats import open_tokens
from .storage import BucketFiles, RemoteTokens, is_url

CHUNK = 1 << 20  # tokens scanned at a time for end-of-text ids


def summary(m, out_dir):
    st, shards = m.settings, m.shards
    val = [s for s in shards if s.split == "val"]
    train = [s for s in shards if s.split == "train"]
    src = m.source
    where = json.dumps(src) if isinstance(src, dict) else f"{len(src)} local file(s): {src[0]['path']}, ..."
    lines = [
        f"{out_dir}: {len(shards)} shards ({st['format']}, {np.dtype(st['dtype']).name}), "
        f"{sum(s.tokens for s in shards):,} tokens, {sum(s.docs for s in shards):,} documents"
        + ("" if m.complete else "  [unfinished run]"),
        f"  val: {len(val)} shard(s), {sum(s.tokens for s in val):,} tokens; "
        f"train: {len(train)} shard(s), {sum(s.tokens for s in train):,} tokens",
        f"  tokenizer: {st['tokenizer']}" + (f" at {st['tokenizer_revision']}" if st.get("tokenizer_revision") else "")
        + f", shard size {st['shard_size']:,}",
        f"  document boundary: {boundary_line(st)}",
        f"  source: {where}",
    ]
    if m.max_tokens:
        lines.append(f"  stopped at --max-tokens {m.max_tokens:,}")
    return lines


def boundary_line(st, names=None):
    """The policy and its ids, e.g. "bos-eos: [128000] + text + [128001]" (names: id -> token string)."""
    ids = lambda xs: "[" + ", ".join(f"{names[i]!r} {i}" if names and i in names else str(i) for i in xs) + "]"  # noqa: E731
    before = f"{ids(st['boundary_before'])} + " if st["boundary_before"] else ""
    after = f" + {ids(st['boundary_after'])}" if st["boundary_after"] else ""
    return f"{st['doc_boundary']}: {before}text{after} (documents counted by id {st['eot']})"


def eot_positions(tokens, eot, n):
    """Positions of the first n end-of-text ids (fewer if the shard has fewer), reading in chunks."""
    found = []
    for i in range(0, len(tokens), CHUNK):
        found += (np.flatnonzero(tokens[i : i + CHUNK] == eot) + i).tolist()
        if len(found) >= n:
            break
    return found[:n]


def show(tok, tokens, start, end, chars):
    """Text of tokens[start:end], at most `chars` characters (decodes only what that needs)."""
    text = tok.decode(tokens[start : min(end, start + 4 * chars + 16)])
    return text[:chars] + (" [...]" if len(text) > chars or end - start > 4 * chars + 16 else "")


def cmd_inspect(argv):
    p = argparse.ArgumentParser(prog="fineweb.py inspect",
                                description="Print the manifest summary and the first documents of a shard as text.")
    p.add_argument("dir", help="an output directory of fineweb.py (with manifest.json)")
    p.add_argument("--shard", type=int, default=0, metavar="N", help="shard index (default 0, the val shard)")
    p.add_argument("--docs", type=int, default=3, metavar="N", help="documents to show (default 3)")
    p.add_argument("--chars", type=int, default=300, metavar="N", help="characters of each to show (default 300)")
    args = p.parse_args(argv)
    remote = is_url(args.dir)
    if not remote and not os.path.isdir(args.dir):
        raise UserError(f"{args.dir}: no such directory; give the --local-dir of a fineweb.py run")
    m = manifest_at(args.dir)
    if m is None:
        raise UserError(f"{args.dir} has no manifest.json: not an output directory of fineweb.py")
    print("\n".join(summary(m, args.dir)))
    if not m.shards:
        return 0
    if not 0 <= args.shard < len(m.shards):
        raise UserError(f"--shard {args.shard}: {args.dir} has shards 0 to {len(m.shards) - 1}")
    from .encoders import make_encoder
    from .tokspec import load

    st, s = m.settings, m.shards[args.shard]
    spec, prebuilt = load(st["tokenizer"], revision=st.get("tokenizer_revision"))
    tok = make_encoder(spec, backend="tiktoken", prebuilt=prebuilt)
    try:
        if remote:  # read by ranged GETs, only what is shown
            tokens = RemoteTokens(BucketFiles(args.dir), s.file, st["dtype"], s.tokens, s.bytes)
        else:
            tokens = open_tokens(os.path.join(args.dir, s.file), m.shard_format(s), st["dtype"])
    except (OSError, ValueError) as e:
        raise UserError(f"{s.file}: {e}; check the directory with: python fineweb.py verify {args.dir}") from None
    print(f"\nshard {args.shard}: {s.file} ({s.split}), {len(tokens):,} tokens, {s.docs:,} documents")
    nb, na = len(st["boundary_before"]), len(st["boundary_after"])
    # where documents begin: at a marker (before-policies), or right after one (eos-after)
    starts = [p + (0 if nb else 1) for p in eot_positions(tokens, st["eot"], args.docs + 1)]
    if not nb and (args.shard == 0 or st["format"] == "megatron"):  # these begin with a document, marker or not
        starts = [0] + starts
    first = starts[0] if starts else len(tokens)
    if first:
        what = "continued from the previous shard" if nb else "the end of a document (perhaps begun in the previous shard)"
        print(f"\n--- {what}: {first:,} tokens ---")
        print(show(tok, tokens, 0, first - na, args.chars))
    last = args.shard == len(m.shards) - 1
    for j, start in enumerate(starts[: args.docs]):
        if start >= len(tokens):
            break
        end = starts[j + 1] if j + 1 < len(starts) else len(tokens)  # fewer found: the scan reached the end
        whole = end < len(tokens) or last or st["format"] == "megatron"
        note = "" if whole else " (continues in the next shard)"
        print(f"\n--- document {j + 1}: {end - start - nb - (na if whole else 0):,} tokens{note} ---")
        print(f"ids: {head_tail(tokens, start, end)}")
        print(show(tok, tokens, start + nb, end - na if whole else end, args.chars))
    return 0


def head_tail(tokens, start, end, k=6):
    """The first and last k ids of tokens[start:end], boundary ids included."""
    ids = lambda a: ", ".join(map(str, a.tolist()))  # noqa: E731
    if end - start <= 2 * k:
        return f"[{ids(tokens[start:end])}]"
    return f"[{ids(tokens[start : start + k])}, ..., {ids(tokens[end - k : end])}]"
