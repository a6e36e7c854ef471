"""Read token shards back for training: (x, y) batches of B x T tokens, any format this tool writes.

    from tokshards.loader import ShardLoader
    train = ShardLoader("edu_fineweb10B", B=16, T=1024, split="train", rank=rank, world_size=world)
    x, y = train.next_batch()          # int64 arrays (B, T); torch=True gives torch.long tensors

Without a seed it is build-nanogpt's DataLoaderLite: rank r starts at B*T*r, steps by
B*T*world_size, and moves to the next shard when pos + B*T*world_size + 1 > len(shard), cycling
through the shards. Unlike it, a shard is memory-mapped (re-mapped per shard, nanoGPT#287), never
loaded into RAM. With seed=N the shard order (per epoch) and the sequence start positions (per
shard, windows at multiples of T, drawn without replacement; all ranks share one permutation and
take disjoint rows) are shuffled, deterministically. state_dict() is small and the same on every
rank; load_state_dict() continues with exactly the batches that would have come next.
"""
import os
import re

import numpy as np

from .formats import LLMC, LLMC_HEADER_BYTES, MEGATRON_CODES, MEGATRON_MAGIC, open_tokens
from .errors import UserError
from .manifest import Manifest
from .storage import is_url

SHARD_NAME = re.compile(r"_(val|train)_\d{6}\.(bin|npy)$")


def shard_format(path, dtype=None):
    """(format, dtype) of a shard file, from its extension and header (no manifest needed).

    A .bin file is Megatron's when an .idx of the same name beside it starts with MMIDIDX (its
    dtype code gives the dtype), llm.c's format when its header says so (magic, version and file
    size agree), else raw tokens of `dtype` (default uint16, nanoGPT's train.bin)."""
    if path.endswith(".npy"):
        return "npy", np.load(path, mmap_mode="r").dtype.str
    idx = path[:-len(".bin")] + ".idx"
    if path.endswith(".bin") and os.path.isfile(idx):
        with open(idx, "rb") as f:
            head = f.read(18)
        if head[:9] == MEGATRON_MAGIC:
            codes = {code: dt.str for dt, code in MEGATRON_CODES.items()}
            if head[17] not in codes:
                raise ValueError(f"{idx} is a Megatron index of dtype code {head[17]}, which this loader does not read")
            return "megatron", codes[head[17]]
    size = os.path.getsize(path)
    header = np.fromfile(path, dtype="<i4", count=3)
    if len(header) == 3:
        for llmc_dtype, magic_version in LLMC.items():
            if tuple(int(v) for v in header[:2]) == magic_version:
                if size == LLMC_HEADER_BYTES + int(header[2]) * llmc_dtype.itemsize:
                    return "llmc", llmc_dtype.str
                raise ValueError(f"{path} starts with llm.c's header but its size ({size:,} bytes) is not what the "
                                 f"header says ({int(header[2]):,} tokens): cut short? not read as raw tokens")
    return "bin", np.dtype(dtype or "<u2").str


def list_shards(data, split="train", dtype=None):
    """[(path, format, dtype)] of one split's shards, in order.

    `data` is an output directory (its manifest.json says everything), a directory without one
    (files named like *_train_000001.bin/.npy, or nanoGPT's train.bin, sorted by name; format
    from each file's header), one file, or a list of shard paths."""
    if isinstance(data, (str, os.PathLike)) and is_url(data):
        raise ValueError(f"{data}: the loader memory-maps local files; copy the shards first (aws s3 sync {data} DIR, "
                         "gsutil rsync, ...) and give DIR")
    if not isinstance(data, (str, os.PathLike)) or os.path.isfile(data):
        paths = [data] if isinstance(data, (str, os.PathLike)) else data
        return [(str(p), *shard_format(str(p), dtype)) for p in paths]
    try:
        m = Manifest.load(data)
    except UserError as e:
        raise ValueError(str(e)) from None
    if m is not None:
        if m.converting:
            raise ValueError(f"{data} is being converted to {m.converting['to']} (an interrupted merge); finish it "
                             f"with: python fineweb.py merge {data} --format {m.converting['to']}")
        out = []
        for s in m.shards:
            if s.split != split:
                continue
            path = os.path.join(data, s.file)
            size = os.path.getsize(path) if os.path.exists(path) else None
            if size != s.bytes:  # never read a shard the manifest does not describe (half, or another format)
                raise ValueError(f"{path} is {'missing' if size is None else f'{size:,} bytes'}, the manifest says "
                                 f"{s.bytes:,} bytes; check the directory with: python fineweb.py verify {data}")
            out.append((path, m.settings["format"], m.settings["dtype"]))
        return out
    names = sorted(f for f in os.listdir(data) if f.endswith((".bin", ".npy")) and not f.startswith("."))
    shards = [f for f in names if SHARD_NAME.search(f) and SHARD_NAME.search(f).group(1) == split]
    shards = shards or [f for f in names if f in (f"{split}.bin", f"{split}.npy")]
    return [(os.path.join(data, f), *shard_format(os.path.join(data, f), dtype)) for f in shards]


class ShardLoader:
    def __init__(self, data, B, T, split="train", rank=0, world_size=1, seed=None, torch=False, dtype=None):
        assert 0 <= rank < world_size, "need 0 <= rank < world_size"
        self.B, self.T, self.rank, self.world, self.seed, self.split = B, T, rank, world_size, seed, split
        self.torch = torch
        self.shards = list_shards(data, split, dtype)
        if not self.shards:
            raise ValueError(f"no {split} shards in {data}")
        # Open every shard once, as llm.c does: checks each header now, not hours into training.
        self.lengths = [len(open_tokens(*s)) for s in self.shards]
        need = B * T * world_size + 1
        for (path, _, _), n in zip(self.shards, self.lengths):
            if n < need:
                raise ValueError(f"{path} holds {n:,} tokens, fewer than B*T*world_size+1 = {need:,}; "
                                 "use a smaller B or T, or a larger --shard-size")
        self.reset()

    # --- where the batches come from: a pure function of (epoch, shard, step) ---
    def _order(self, epoch):
        n = len(self.shards)
        return np.arange(n) if self.seed is None else np.random.default_rng([self.seed, epoch]).permutation(n)

    def _num_batches(self, shard):
        """Batches this rank takes from a shard before moving on."""
        B, T, W, n = self.B, self.T, self.world, self.lengths[shard]
        if self.seed is None:  # DataLoaderLite: the batch at pos, then as long as pos + B*T*W + 1 <= n
            return max(1, (n - 1 - B * T * self.rank) // (B * T * W))
        return (n - 1) // T // (B * W)

    def _row_starts(self, epoch, shard):
        """(num_batches, B) start positions of this rank's rows in one shard."""
        B, T, W = self.B, self.T, self.world
        k = np.arange(self._num_batches(shard))
        if self.seed is None:
            return B * T * self.rank + (k * B * T * W)[:, None] + T * np.arange(B)
        perm = np.random.default_rng([self.seed, epoch, shard]).permutation((self.lengths[shard] - 1) // T)
        return T * perm[: len(k) * B * W].reshape(len(k), W, B)[:, self.rank, :]

    def _load_shard(self):
        shard = int(self.order[self.pos])
        self.tokens = None  # drop the old map first: RSS must not grow shard after shard
        self.tokens = open_tokens(*self.shards[shard])
        self.starts = self._row_starts(self.epoch, shard)

    def _seek(self, batches):
        """Position as if `batches` batches had been taken since the start."""
        self.batches, self.epoch, self.pos, self.step = batches, 0, 0, 0
        self.order = self._order(0)
        left = batches
        while left >= (n := self._num_batches(int(self.order[self.pos]))):
            left -= n
            self._next_shard()
        self.step = left
        self._load_shard()

    def _next_shard(self):
        self.pos, self.step = self.pos + 1, 0
        if self.pos == len(self.order):
            self.epoch, self.pos = self.epoch + 1, 0
            self.order = self._order(self.epoch)

    def reset(self):
        self._seek(0)

    def next_batch(self):
        T = self.T
        buf = np.stack([self.tokens[s : s + T + 1] for s in self.starts[self.step]]).astype(np.int64)
        x, y = np.ascontiguousarray(buf[:, :-1]), np.ascontiguousarray(buf[:, 1:])
        self.batches, self.step = self.batches + 1, self.step + 1
        if self.step == len(self.starts):
            self._next_shard()
            self._load_shard()
        if self.torch:
            import torch

            return torch.from_numpy(x), torch.from_numpy(y)
        return x, y

    def __iter__(self):
        while True:
            yield self.next_batch()

    # --- resuming ---
    def state_dict(self):
        """Batches taken so far, and what they depend on; the same on every rank and in every format."""
        names = [os.path.splitext(os.path.basename(p))[0] for p, _, _ in self.shards]
        return {"batches": self.batches, "B": self.B, "T": self.T, "world_size": self.world, "seed": self.seed,
                "split": self.split, "shards": [[name, n] for name, n in zip(names, self.lengths)]}

    def load_state_dict(self, state):
        mine = self.state_dict()
        for key in ("B", "T", "world_size", "seed", "split", "shards"):
            if state[key] != mine[key]:
                raise ValueError(f"loader state has {key}={state[key]!r}, this loader {mine[key]!r}")
        self._seek(state["batches"])
