"""A worker's tokens to the parent through shared memory: the parent reads them where the worker put them.

Over the worker's pipe (a Unix socket) each token is copied twice by the kernel, into the socket by the
worker and out of it by the parent, and a result larger than the socket's buffer goes across in many
wake-ups of both. Here each worker has a ring of anonymous shared memory (Linux memfd_create: no name
in /dev/shm to leak, not limited by /dev/shm's size; its pages count towards the memory of the tool's
processes, shown in both the parent's and the worker's RSS). The parent creates it and sends its file
descriptor to the worker right after the setup message (each side keeps one open while it is mapped);
the worker copies a batch's tokens into a free block and says where in its result message; the parent
takes them as an array over that block, and the block is free again when that array and every view of
it are gone (a weakref finalizer: numpy makes that array the base of each view, because its own base is
not a numpy array, so no view outlives it).

Blocks are handed out by position, a byte count that only grows (position % size is the offset). The
worker takes blocks (Writer); the parent frees them in any order (Ring) and sends how far the ring is
free (`free_upto`) with each task it gives that worker. The worker writes only below the last figure
it received: a stale one means less room, never a block still being read. A block never wraps past
the end of the ring: it starts again at the beginning, and the end it skipped is free at once. Where a
batch does not fit, or the system has no memfd_create, the tokens go over the pipe: the same bytes
either way.
"""
import mmap
import os
import socket
import threading
import weakref

import numpy as np

RING_BYTES = 16 << 20  # per worker: ~6 FineWeb-Edu parquet row groups (~2.4 MB of tokens each); measured on
# 1.04B tokens at 2 workers, 1 result in 840 did not fit (8 MiB: 207; 32 MiB: none)
ALIGN = 64  # a block starts on a cache line


def block_size(nbytes):
    return -(-nbytes // ALIGN) * ALIGN


def create(size=RING_BYTES):
    """A new Ring, or None where there is none to be had (no memfd_create, refused, out of descriptors)."""
    if size <= 0 or not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create("fineweb-tokens")  # close-on-exec
    except OSError:  # ENOSYS, a seccomp filter, EMFILE
        return None
    try:
        os.ftruncate(fd, size)
        return Ring(fd, mmap.mmap(fd, size))  # (the mapping keeps a descriptor of its own)
    except (OSError, ValueError):
        os.close(fd)
        return None


def _on_socket(conn, act):
    """act(socket) on a multiprocessing connection's socket, without a descriptor of its own."""
    s = socket.socket(fileno=conn.fileno())
    try:
        return act(s)
    finally:
        s.detach()  # the connection's descriptor stays open, the connection's


class Ring:
    """The parent's side of one worker's ring."""

    def __init__(self, fd, mem):
        self.fd, self.mem, self.size = fd, mem, len(mem)
        self.end = 0  # where the worker's last block ended (its results arrive in the order it wrote them)
        self.freed, self.done = 0, {}  # everything below `freed` is free; done: blocks freed beyond it
        self.lock = threading.RLock()  # blocks are freed in whichever thread drops the last view

    def send(self, conn):
        """The descriptor to the worker, right after the setup message: a one-byte message with the
        descriptor attached."""
        _on_socket(conn, lambda s: socket.send_fds(s, [b"r"], [self.fd]))

    def close_fd(self):
        """Once sent (or not to be): the mapping has a descriptor of its own."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def take(self, pos, count, dtype):
        """The `count` tokens of `dtype` at block `pos`, as an array that frees the block when it and
        its views are gone. What the worker skipped before it (the rest of a lap) is free at once:
        no position below this block's is written again."""
        dtype = np.dtype(dtype)
        if pos > self.end:
            self._free(self.end, pos)
        self.end = pos + block_size(count * dtype.itemsize)
        tokens = np.frombuffer(self.mem, dtype=dtype, count=count, offset=pos % self.size)
        weakref.finalize(tokens, self._free, pos, self.end)
        return tokens

    def _free(self, begin, end):
        with self.lock:
            self.done[begin] = end
            while self.freed in self.done:
                self.freed = self.done.pop(self.freed)

    def free_upto(self):
        """The position below which the worker may write."""
        with self.lock:
            return self.freed + self.size


def receive(conn, size):
    """The worker's Writer for the ring whose descriptor Ring.send sent (the next thing on the
    connection), or None if no descriptor came with it (this process is out of descriptors) or it
    cannot be mapped here (no memory): then every result goes over the pipe. EOFError if the
    connection closed first."""
    data, fds, _, _ = _on_socket(conn, lambda s: socket.recv_fds(s, 1, 1))
    if not data:
        raise EOFError
    if not fds:
        return None
    try:
        return Writer(fds[0], size)
    except (OSError, ValueError):  # (Writer has closed the descriptor)
        return None


class Writer:
    """The worker's side: put() a batch's tokens in a free block."""

    def __init__(self, fd, size):
        try:
            self.mem = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps a descriptor of its own
        self.size, self.head, self.free_upto = size, 0, size  # free_upto: from the parent, with each task

    def put(self, data):
        """The block's position after copying data (a contiguous array) into it, or None if it does
        not fit now (the caller sends it over the pipe)."""
        n = block_size(data.nbytes)
        pos = self.head
        if pos % self.size + n > self.size:  # no wrapping: the block starts at the ring's beginning
            pos += self.size - pos % self.size
        if not data.nbytes or pos + n > self.free_upto:
            return None
        off = pos % self.size
        np.copyto(np.frombuffer(self.mem, dtype=np.uint8, count=data.nbytes, offset=off),
                  np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8))
        self.head = pos + n
        return pos
