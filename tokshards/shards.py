"""Shards: their names, where one token stream is cut into them, and their manifest entries.

One implementation for every engine: the one-machine writer (writer.py) feeds batches to a Cutter
as they are tokenized; the multi-machine assembly (assemble.py) feeds it the batches the parts
recorded. Same cuts, same names, same entries and resume positions, so "same bytes and the same
manifest on every engine" rests on this module alone.

Shard k holds tokens [k*S, (k+1)*S) of the stream: shard 0 is `val`, the rest `train`; documents
run on across shard boundaries, as in build-nanogpt and llm.c. A full shard records `end`, where
its successor's first token comes from (the batch holding the shard's last token, and how many
of that batch's tokens the shards so far hold); the short last shard records none.
"""
import re
from dataclasses import dataclass
from typing import Optional

from .formats import EXTENSION
from .positions import End


def shard_name(prefix, index, fmt):
    """(file name, split) of shard `index`."""
    split = "val" if index == 0 else "train"
    return f"{prefix}_{split}_{index:06d}{EXTENSION[fmt]}", split


def shard_pattern(prefix):
    """File names that look like shards of this prefix, in any format (ours or not)."""
    return re.compile(rf"^{re.escape(prefix)}_(val|train)_\d{{6}}\.(bin|npy)$")


@dataclass(frozen=True)
class ShardEntry:
    """A finished shard as the manifest records it."""

    file: str
    split: str
    index: int
    tokens: int
    docs: int
    bytes: int
    sha256: str
    token_count_sum: Optional[int]  # the source's token_count over documents begun in the shard
    backend: str  # the tokenizer backends that encoded its tokens
    end: Optional[End]

    def to_json(self):
        return {"file": self.file, "split": self.split, "index": self.index, "tokens": self.tokens,
                "docs": self.docs, "bytes": self.bytes, "sha256": self.sha256,
                "token_count_sum": self.token_count_sum, "backend": self.backend,
                "end": None if self.end is None else self.end.to_json()}

    @classmethod
    def from_json(cls, d, index, prefix, fmt):
        """An entry read from a manifest; raises ValueError unless it is exactly what this tool writes
        for shard `index` (its file name above all: names from a file are never used as paths unchecked)."""
        if not isinstance(d, dict):
            raise ValueError(f"shard entry {index} is not an object")
        name, split = shard_name(prefix, index, fmt)
        if d.get("file") != name or d.get("index") != index or d.get("split") != split:
            raise ValueError(f"shard entry {index} names {d.get('file')!r}, expected {name!r}")
        for key in ("tokens", "docs", "bytes"):
            if not isinstance(d.get(key), int) or isinstance(d.get(key), bool) or d[key] < 0:
                raise ValueError(f"shard entry {index}: {key} is not a count")
        if not isinstance(d.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", d["sha256"]):
            raise ValueError(f"shard entry {index}: sha256 is not a hex digest")
        tcs = d.get("token_count_sum")
        if tcs is not None and (not isinstance(tcs, int) or isinstance(tcs, bool)):
            raise ValueError(f"shard entry {index}: token_count_sum is not a count")
        if not isinstance(d.get("backend", ""), str):
            raise ValueError(f"shard entry {index}: backend is not text")
        return cls(name, split, index, d["tokens"], d["docs"], d["bytes"], d["sha256"], tcs, d.get("backend", ""),
                   End.from_json(d.get("end")))


def make_entry(prefix, fmt, index, tokens, docs, nbytes, sha256, count_sum, backends, end):
    name, split = shard_name(prefix, index, fmt)
    return ShardEntry(name, split, index, int(tokens), int(docs), int(nbytes), sha256,
                      None if count_sum is None else int(count_sum),
                      " + ".join(sorted(b for b in backends if b)), end)


@dataclass(frozen=True)
class Piece:
    """Tokens [lo, hi) of one batch that go into shard `shard`; `end` is set when they fill it."""

    shard: int
    lo: int
    hi: int
    end: Optional[End]


class Cutter:
    """Cuts a stream of batches into shards of `size` tokens, from shard `first` on."""

    def __init__(self, size, first=0):
        self.size, self.shard, self.filled = size, first, 0

    def add(self, start, lo, hi):
        """Tokens [lo, hi) of the batch that starts at `start` come next: the Pieces they make."""
        pieces = []
        while lo < hi:
            take = min(hi - lo, self.size - self.filled)
            self.filled += take
            full = self.filled == self.size
            pieces.append(Piece(self.shard, lo, lo + take, End(start, lo + take) if full else None))
            lo += take
            if full:
                self.shard, self.filled = self.shard + 1, 0
        return pieces

    def open_shard(self):
        """The index of the short shard the stream ended in, or None if the last shard is full."""
        return self.shard if self.filled else None
