"""Shards: their names, where one token stream is cut into them, and their manifest entries.

One implementation for every engine: the one-machine writer (writer.py) feeds batches to a Cutter
as they are tokenized; the multi-machine assembly (assemble.py) feeds it the batches the parts
recorded. Same cuts, same names, same entries and resume positions, so "same bytes and the same
manifest on every engine" rests on this module alone.

Shard k holds tokens [k*S, (k+1)*S) of the stream: shard 0 is `val`, the rest `train`; documents
run on across shard boundaries, as in build-nanogpt and llm.c. A full shard records `end`, where
its successor's first token comes from (the batch holding the shard's last token, and how many
of that batch's tokens the shards so far hold); the short last shard records none.
A format of whole documents (megatron) ends each shard at the first document start at or after S
tokens instead (formats.whole_documents): shards are S tokens or a little more.
"""
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .formats import EXTENSION, INDEX_EXTENSION
from .positions import End


def shard_name(prefix, index, fmt):
    """(file name, split) of shard `index`."""
    split = "val" if index == 0 else "train"
    return f"{prefix}_{split}_{index:06d}{EXTENSION[fmt]}", split


def shard_files(prefix, index, fmt):
    """Every file name shard `index` has, in the order they are put in place (a megatron .idx before its
    .bin, so that a reader finding the .bin finds its index)."""
    name, _ = shard_name(prefix, index, fmt)
    if fmt == "megatron":
        return [name[: -len(EXTENSION[fmt])] + INDEX_EXTENSION, name]
    return [name]


def shard_pattern(prefix):
    """File names that look like shards of this prefix, in any format (ours or not)."""
    return re.compile(rf"^{re.escape(prefix)}_(val|train)_\d{{6}}\.(bin|npy|idx)$")


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
    index_bytes: Optional[int] = None  # megatron: its .idx file's size and sha256 (`file` is the .bin)
    index_sha256: Optional[str] = None

    def to_json(self):
        d = {"file": self.file, "split": self.split, "index": self.index, "tokens": self.tokens,
             "docs": self.docs, "bytes": self.bytes, "sha256": self.sha256,
             "token_count_sum": self.token_count_sum, "backend": self.backend,
             "end": None if self.end is None else self.end.to_json()}
        if self.index_sha256 is not None:
            d["idx"] = {"bytes": self.index_bytes, "sha256": self.index_sha256}
        return d

    @property
    def index_file(self):
        """A megatron shard's .idx file name, else None."""
        return self.file[: -len(".bin")] + INDEX_EXTENSION if self.index_sha256 is not None else None

    @property
    def files(self):
        """Its file names, as shard_files gives them."""
        return [self.index_file, self.file] if self.index_file else [self.file]

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
        idx = d.get("idx")
        if (fmt == "megatron") != (idx is not None):
            raise ValueError(f"shard entry {index}: " + ("no idx for a megatron shard" if idx is None else
                                                         f"an idx, but the format is {fmt}"))
        if idx is not None and not (
                isinstance(idx, dict) and isinstance(idx.get("bytes"), int) and not isinstance(idx["bytes"], bool)
                and idx["bytes"] >= 0 and isinstance(idx.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", idx["sha256"])):
            raise ValueError(f"shard entry {index}: idx is not a size and a sha256")
        return cls(name, split, index, d["tokens"], d["docs"], d["bytes"], d["sha256"], tcs, d.get("backend", ""),
                   End.from_json(d.get("end")), idx and idx["bytes"], idx and idx["sha256"])


def make_entry(prefix, fmt, index, tokens, docs, nbytes, sha256, count_sum, backends, end, index_file=None):
    """index_file: a megatron shard's (bytes, sha256) of its .idx."""
    name, split = shard_name(prefix, index, fmt)
    ib, ih = index_file if index_file else (None, None)
    return ShardEntry(name, split, index, int(tokens), int(docs), int(nbytes), sha256,
                      None if count_sum is None else int(count_sum),
                      " + ".join(sorted(b for b in backends if b)), end, ib, ih)


@dataclass(frozen=True)
class Piece:
    """Tokens [lo, hi) of one batch that go into shard `shard`; `end` is set when they fill it."""

    shard: int
    lo: int
    hi: int
    end: Optional[End]


class Cutter:
    """Cuts a stream of batches into shards of `size` tokens, from shard `first` on; with whole_docs,
    each at the first document start at or after `size` tokens."""

    def __init__(self, size, first=0, whole_docs=False):
        self.size, self.shard, self.filled, self.whole_docs = size, first, 0, whole_docs

    def add(self, start, lo, hi, doc_starts=None):
        """Tokens [lo, hi) of the batch that starts at `start` come next: the Pieces they make.
        doc_starts (whole_docs only): the sorted offsets in the batch where a document begins."""
        if self.whole_docs:
            return self._add_whole(start, lo, hi, doc_starts)
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

    def _add_whole(self, start, lo, hi, doc_starts):
        pieces = []
        while lo < hi:
            # the earliest cut: where the shard reaches `size` (or here, if it already has)
            earliest = lo + max(self.size - self.filled, 0)
            k = int(np.searchsorted(doc_starts, earliest))
            if k < len(doc_starts) and doc_starts[k] <= hi:
                cut = int(doc_starts[k])  # > lo, or == lo only for a shard already past `size`
                pieces.append(Piece(self.shard, lo, cut, End(start, cut)))
                self.shard, self.filled, lo = self.shard + 1, 0, cut
            else:
                pieces.append(Piece(self.shard, lo, hi, None))
                self.filled += hi - lo
                lo = hi
        return pieces

    def open_shard(self):
        """The index of the short shard the stream ended in, or None if the last shard is full."""
        return self.shard if self.filled else None
