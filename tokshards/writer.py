"""Stage 3: one token stream -> fixed-size shard files.

Tokens go straight into the current shard's temporary file as they arrive (no shard-sized buffer
in memory, no pause to write a whole shard when it fills), with a running sha256 and document
count. A full shard becomes `{prefix}_{split}_{index:06d}`: shard 0 is `val`, the rest `train`;
documents run on across shard boundaries, as in build-nanogpt and llm.c. Every file is written
under a temporary name, fsynced and renamed, and only then entered in the manifest, so a crash at
any moment leaves either a complete, recorded shard or nothing (perhaps a temporary file, which
the next run removes).
"""
import errno
import hashlib
import os
import re
import weakref
from contextlib import contextmanager

import numpy as np

from .errors import UserError
from .formats import EXTENSION, header_for, sha256_file
from .manifest import _unlink, fsync_dir


def shard_name(prefix, index, fmt):
    split = "val" if index == 0 else "train"
    return f"{prefix}_{split}_{index:06d}{EXTENSION[fmt]}", split


def shard_files_on_disk(out_dir, prefix):
    """Names in out_dir that look like this run's shards, recorded in the manifest or not."""
    pat = re.compile(rf"^{re.escape(prefix)}_(val|train)_\d{{6}}\.(bin|npy)$")
    return sorted(f for f in os.listdir(out_dir) if pat.match(f))


def append_tokens(f, h, tokens):
    """Append tokens (contiguous, of the shard's dtype) to the open shard file and its sha256."""
    data = memoryview(tokens).cast("B")
    f.write(data)
    h.update(data)


def _discard(f, tmp):
    """An unfinished shard: close and remove its temporary file."""
    try:
        f.close()
    except OSError:
        pass
    _unlink(tmp)


class ShardWriter:
    """The header of a full shard (n = shard_size) is written when a shard's file is opened and
    the sha256 runs over header + tokens as they arrive. Only a short last shard of a format with
    a header (npy, llmc: both hold the count) needs more: its header is rewritten in place with the
    real count and the file is hashed again (a sha256 cannot be changed at its start); that is one
    shard per run, read back from the page cache."""

    def __init__(self, manifest, prefix, fmt, dtype, shard_size, eot, on_shard=None):
        self.manifest = manifest
        self.backends = set()  # the tokenizer backends that encoded this shard's tokens
        self.prefix, self.fmt, self.shard_size, self.eot = prefix, fmt, shard_size, eot
        self.dtype = np.dtype(dtype)
        self.on_shard = on_shard or (lambda entry: None)
        try:
            self.head = header_for(fmt, self.dtype, shard_size)  # a full shard's header
        except ValueError:  # llmc and a shard size >= 2**31: fine while no shard is full (as before)
            self.head = header_for(fmt, self.dtype, 0)
        self.n = 0
        self.docs = 0  # end-of-text tokens in this shard
        self.count_sum = None  # sum of the source's token_count over documents begun in this shard
        self.stopped = False  # set when --max-tokens cut the stream
        self._f = self._h = self._tmp = self._cleanup = None

    @property
    def index(self):
        return len(self.manifest.shards)

    def add(self, tokens, pos, offset, counts=None, backend=None):
        """Append one batch's tokens; tokens[0] is token number `offset` of the batch at `pos`."""
        i, d = 0, 0
        while i < len(tokens):
            self.backends.add(backend)
            take = min(len(tokens) - i, self.shard_size - self.n)
            piece = np.ascontiguousarray(tokens[i : i + take], dtype=self.dtype)
            with self._writing():
                if self._f is None:
                    self._open()
                append_tokens(self._f, self._h, piece)
            k = int(np.count_nonzero(piece == self.eot))
            self.docs += k
            if counts is not None:
                self.count_sum = (self.count_sum or 0) + int(sum(counts[d : d + k]))
                d += k
            self.n += take
            i += take
            if self.n == self.shard_size:
                self.flush({"pos": pos, "skip": offset + i})

    def flush(self, end):
        """Finish the shard being written (if it holds anything) and record it."""
        if self.n == 0:
            return
        name, split = shard_name(self.prefix, self.index, self.fmt)
        path = os.path.join(self.manifest.out_dir, name)
        with self._writing():
            nbytes, sha = self._finish()
            self._f = None
            os.replace(self._tmp, path)
            self._cleanup.detach()
            fsync_dir(self.manifest.out_dir)
        entry = {
            "file": name, "split": split, "index": self.index, "tokens": int(self.n),
            "docs": self.docs, "bytes": nbytes, "sha256": sha,
            "token_count_sum": self.count_sum, "backend": " + ".join(sorted(b for b in self.backends if b)), "end": end,
        }
        self.manifest.shards.append(entry)
        self.manifest.save()
        self.n, self.docs, self.count_sum, self.backends = 0, 0, None, set()
        self.on_shard(entry)

    def _open(self):
        name, _ = shard_name(self.prefix, self.index, self.fmt)
        self._tmp = os.path.join(self.manifest.out_dir, f".{name}.tmp")  # manifest.atomic_write's name
        self._f = open(self._tmp, "w+b")
        # also removed if the run stops elsewhere (an exception, Ctrl-C) while a shard is open
        self._cleanup = weakref.finalize(self, _discard, self._f, self._tmp)
        self._f.write(self.head)
        self._h = hashlib.sha256(self.head)

    def _finish(self):
        """Complete the temporary file (final header, flush, fsync, close); its (bytes, sha256)."""
        f, size = self._f, self.n * self.dtype.itemsize
        head = header_for(self.fmt, self.dtype, self.n)
        if head == self.head:  # a full shard, or no header (bin): the running sha256 is the file's
            sha = self._h.hexdigest()
        else:  # a short last shard: its header holds the real count
            # same length: llmc's is fixed, np.save's is padded for a 21-digit count since numpy 1.24
            assert len(head) == len(self.head), "npy header length changed: install numpy >= 1.24"
            f.seek(0)
            f.write(head)
            f.flush()
            sha = sha256_file(self._tmp)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        return len(head) + size, sha

    @contextmanager
    def _writing(self):
        """Around each step on a shard file: on any failure its temporary file goes, and a full
        disk becomes the one-line error."""
        try:
            yield
        except BaseException as e:
            if self._cleanup is not None:
                self._cleanup()  # close and unlink the temporary file (nothing once renamed)
            self._f = None
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                name, _ = shard_name(self.prefix, self.index, self.fmt)
                raise UserError(
                    f"disk full while writing {os.path.join(self.manifest.out_dir, name)}; free space and "
                    f"rerun the same command to resume (kept {self.index} complete shards)"
                ) from None
            raise
