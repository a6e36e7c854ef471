"""A file of tokens (a shard's temporary file, a part), written past the page cache (O_DIRECT) where
the system allows it.

Through the page cache, the writing process pays for every byte twice: the kernel copies it into the
cache, then the cache is written back. Measured on this project's 2-core VM (ext4 on virtio): 2.44 CPU
s per GiB buffered against 0.04 direct (`python bench/parent_cost.py` shows the effect on a run).
Direct I/O needs the buffer, the file offset and the length aligned to the device's blocks, so the
bytes are gathered into a page-aligned buffer and written BLOCK bytes at a time; the last, partial
block goes through the page cache. Where O_DIRECT is refused (some filesystems, or a system without
it) every byte goes through the page cache: the same bytes either way. What was written directly is
not in the page cache afterwards: reading it back (a short last shard's hash, an assembly reading
parts, verify, training) reads the disk.

The file itself comes from manifest.create_file (created exclusively, never through a link).
"""
import errno
import fcntl
import mmap
import os

import numpy as np

from .manifest import create_file, remove_file

BLOCK = 8 << 20  # bytes per direct write: a multiple of any block size (512 B .. 64 KiB)
DIRECT = getattr(os, "O_DIRECT", 0)


class ShardFile:
    """Append-only writes, then finish(): nothing but the bytes given, in order."""

    def __init__(self, path):
        self.path = path
        self._f = create_file(path)
        self.fd = self._f.fileno()  # written with os.write only: the file object's buffer stays empty
        self.direct, self.buf, self.fill = False, None, 0
        try:
            if DIRECT and os.environ.get("FINEWEB_DIRECT_IO", "1") != "0":
                try:
                    fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | DIRECT)
                    self.direct = True
                except OSError:  # EINVAL: this filesystem has no direct I/O
                    pass
            if self.direct:
                self.buf = mmap.mmap(-1, BLOCK)  # page-aligned
                self._bytes = np.frombuffer(self.buf, dtype=np.uint8)  # (copied into by numpy: no GIL held)
        except BaseException:  # (no memory for the buffer, say): the file goes, not left half-made
            self._f.close()
            remove_file(path)
            raise

    def write(self, data):
        view = memoryview(data).cast("B")
        if not self.direct:
            self.flush()  # (bytes gathered before direct I/O was refused go first)
            _write_all(self.fd, view)
            return
        while len(view):
            take = min(len(view), BLOCK - self.fill)
            np.copyto(self._bytes[self.fill : self.fill + take], np.frombuffer(view[:take], dtype=np.uint8))
            self.fill, view = self.fill + take, view[take:]
            if self.fill == BLOCK:
                self._write_block()

    def _write_block(self):
        view, done = memoryview(self.buf)[: self.fill], 0
        while done < len(view):
            try:
                done += os.write(self.fd, view[done:])
            except OSError as e:
                if e.errno != errno.EINVAL or not self.direct:
                    raise
                # refused after all (a filesystem that takes the flag but not the write): the rest,
                # from where the file stands, through the page cache
                self._buffered()
        view.release()
        self.fill = 0

    @property
    def name(self):
        return self.path

    def flush(self):
        """Everything written so far into the file (from here on through the page cache)."""
        if self.fill:
            self._buffered()
            self._write_block()

    def _buffered(self):
        if self.direct:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~DIRECT)
            self.direct = False

    def finish(self, head=None):
        """Write what is left, put `head` (same length as the first bytes written) at the start if
        given, fsync and close."""
        self.flush()  # a partial block: through the page cache
        if head is not None:
            self._buffered()
            os.pwrite(self.fd, head, 0)
        os.fsync(self.fd)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self._f.close()  # (again after finish(): nothing happens)
        finally:
            if self.buf is not None:
                self._bytes = None
                try:
                    self.buf.close()
                except BufferError:  # a view of it still in use (a stopped run's write): freed with it
                    pass
                self.buf = None


def _write_all(fd, view):
    while len(view):
        n = os.write(fd, view)
        view = view[n:]
