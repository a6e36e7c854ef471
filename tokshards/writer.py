"""Stage 3: one token stream -> fixed-size shard files.

A preallocated buffer of `shard_size` tokens (200 MB for 100M uint16 tokens) fills up and is
written as `{prefix}_{split}_{index:06d}`: shard 0 is `val`, the rest `train`; documents run on
across shard boundaries, as in build-nanogpt and llm.c. Every file is written under a temporary
name, fsynced and renamed, and only then entered in the manifest, so a crash at any moment
leaves either a complete, recorded shard or nothing.
"""
import errno
import os
import re

import numpy as np

from .errors import UserError
from .formats import EXTENSION, write_shard
from .manifest import atomic_write


def shard_name(prefix, index, fmt):
    split = "val" if index == 0 else "train"
    return f"{prefix}_{split}_{index:06d}{EXTENSION[fmt]}", split


def shard_files_on_disk(out_dir, prefix):
    """Names in out_dir that look like this run's shards, recorded in the manifest or not."""
    pat = re.compile(rf"^{re.escape(prefix)}_(val|train)_\d{{6}}\.(bin|npy)$")
    return sorted(f for f in os.listdir(out_dir) if pat.match(f))


class ShardWriter:
    def __init__(self, manifest, prefix, fmt, dtype, shard_size, eot, on_shard=None):
        self.manifest = manifest
        self.backends = set()  # the tokenizer backends that encoded this shard's tokens
        self.prefix, self.fmt, self.shard_size, self.eot = prefix, fmt, shard_size, eot
        self.on_shard = on_shard or (lambda entry: None)
        self.buf = np.empty(shard_size, dtype=dtype)
        self.n = 0
        self.count_sum = None  # sum of the source's token_count over documents begun in this shard
        self.stopped = False  # set when --max-tokens cut the stream

    @property
    def index(self):
        return len(self.manifest.shards)

    def add(self, tokens, pos, offset, counts=None, backend=None):
        """Append one batch's tokens; tokens[0] is token number `offset` of the batch at `pos`."""
        i, d = 0, 0
        while i < len(tokens):
            self.backends.add(backend)
            take = min(len(tokens) - i, self.shard_size - self.n)
            piece = tokens[i : i + take]
            self.buf[self.n : self.n + take] = piece
            if counts is not None:
                k = int(np.count_nonzero(piece == self.eot))
                self.count_sum = (self.count_sum or 0) + int(sum(counts[d : d + k]))
                d += k
            self.n += take
            i += take
            if self.n == self.shard_size:
                self.flush({"pos": pos, "skip": offset + i})

    def flush(self, end):
        """Write the buffer as the next shard (if it holds anything) and record it."""
        if self.n == 0:
            return
        name, split = shard_name(self.prefix, self.index, self.fmt)
        path = os.path.join(self.manifest.out_dir, name)
        tokens = self.buf[: self.n]
        try:
            nbytes, sha = atomic_write(path, lambda f: write_shard(f, self.fmt, tokens))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UserError(
                    f"disk full while writing {path}; free space and rerun the same command to resume "
                    f"(kept {self.index} complete shards)"
                ) from None
            raise
        entry = {
            "file": name, "split": split, "index": self.index, "tokens": int(self.n),
            "docs": int(np.count_nonzero(tokens == self.eot)), "bytes": nbytes, "sha256": sha,
            "token_count_sum": self.count_sum, "backend": " + ".join(sorted(b for b in self.backends if b)), "end": end,
        }
        self.manifest.shards.append(entry)
        self.manifest.save()
        self.n, self.count_sum, self.backends = 0, None, set()
        self.on_shard(entry)
