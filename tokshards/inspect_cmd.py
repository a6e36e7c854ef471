"""`fineweb.py inspect DIR`: the manifest in brief, then the first documents of a shard as text.

    python fineweb.py inspect edu_fineweb10B                     # shard 0, first 3 documents
    python fineweb.py inspect edu_fineweb10B --shard 5 --docs 10 --chars 200

Documents are split at the end-of-text id, which comes before every document; tokens before the
first one continue a document begun in the previous shard.
"""
import argparse
import json
import os

import numpy as np

from .errors import UserError
from .formats import open_tokens
from .manifest import Manifest

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
        f"  tokenizer: {st['tokenizer']} (end-of-text id {st['eot']}), shard size {st['shard_size']:,}",
        f"  source: {where}",
    ]
    if m.max_tokens:
        lines.append(f"  stopped at --max-tokens {m.max_tokens:,}")
    return lines


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
    if not os.path.isdir(args.dir):
        raise UserError(f"{args.dir}: no such directory; give the --local-dir of a fineweb.py run")
    m = Manifest.load(args.dir)
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
    tok = make_encoder(load(st["tokenizer"])[0], backend="tiktoken")
    try:
        tokens = open_tokens(os.path.join(args.dir, s.file), m.shard_format(s), st["dtype"])
    except (OSError, ValueError) as e:
        raise UserError(f"{s.file}: {e}; check the directory with: python fineweb.py verify {args.dir}") from None
    print(f"\nshard {args.shard}: {s.file} ({s.split}), {len(tokens):,} tokens, {s.docs:,} documents")
    eots = eot_positions(tokens, st["eot"], args.docs + 1)
    first = eots[0] if eots else len(tokens)
    if first:
        print(f"\n--- continued from the previous shard: {first:,} tokens ---")
        print(show(tok, tokens, 0, first, args.chars))
    last = args.shard == len(m.shards) - 1
    for j, start in enumerate(eots[: args.docs]):
        end = eots[j + 1] if j + 1 < len(eots) else len(tokens)  # fewer found: the scan reached the end
        note = "" if end < len(tokens) or last else " (continues in the next shard)"
        print(f"\n--- document {j + 1}: {end - start - 1:,} tokens{note} ---")
        print(show(tok, tokens, start + 1, end, args.chars))
    return 0
