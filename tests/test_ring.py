"""ring.py: a worker's tokens reach the parent through shared memory, and a block is written again only
when the parent holds no array or view over it; where a batch does not fit, it goes over the pipe.
Either way the parent gets every token, in order, the same as encoding in its own process."""
import gc
import multiprocessing as mp
import os
import socket
import sys
from collections import deque

import numpy as np
import pytest

from tokshards import ring, tokspec
from tokshards.pool import EncoderArgs, WorkerPool, tokenize_in_order
from tokshards.positions import Position
from tokshards.sources import Batch

from conftest import needs_data, real_texts

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memfd_create is Linux's")


def pair(size):
    """(Writer, Ring) of one ring in this process (as after Ring.send and ring.receive)."""
    r = ring.create(size)
    w = ring.Writer(os.dup(r.fd), size)
    r.close_fd()
    return w, r


def tokens(n, seed):
    return np.random.default_rng(seed).integers(0, 50257, n, dtype=np.uint16)


@LINUX
def test_blocks_are_read_where_they_were_written_and_freed_with_their_last_view():
    w, r = pair(4096)
    a, b = tokens(500, 1), tokens(700, 2)  # 1,000 and 1,400 bytes: blocks of 1,024 and 1,408
    pa_, pb = w.put(a), w.put(b)
    assert (pa_, pb) == (0, 1024)
    got_a, got_b = r.take(pa_, 500, np.uint16), r.take(pb, 700, np.uint16)
    assert np.array_equal(got_a, a) and np.array_equal(got_b, b)
    view = np.ascontiguousarray(got_a[10:20])  # as the shard writer slices a batch
    del got_a
    gc.collect()
    assert r.free_upto() == 4096  # the view still holds block 0
    del got_b  # freed out of order: nothing below it is free yet
    gc.collect()
    assert r.free_upto() == 4096
    del view
    gc.collect()
    assert r.free_upto() == 4096 + 1024 + 1408


@LINUX
def test_a_full_ring_refuses_and_a_block_never_wraps():
    w, r = pair(4096)
    first = r.take(w.put(tokens(1000, 3)), 1000, np.uint16)  # 2,048 bytes at 0
    second = r.take(w.put(tokens(900, 4)), 900, np.uint16)  # 1,856 at 2,048; 192 left at the end
    w.free_upto = r.free_upto()
    assert w.put(tokens(200, 5)) is None  # 400 bytes: would wrap, and the beginning is still held
    del first
    gc.collect()
    w.free_upto = r.free_upto()
    c = tokens(200, 5)
    pos = w.put(c)
    assert pos == 4096  # the beginning again (position 4,096 = offset 0), the end skipped
    third = r.take(pos, 200, np.uint16)
    assert np.array_equal(third, c) and np.array_equal(second, tokens(900, 4))
    del second
    gc.collect()
    assert r.free_upto() == 4096 + 4096  # up to `third`: the end it skipped was free at once
    del third
    gc.collect()
    assert r.free_upto() == (4096 + 448) + 4096
    assert w.put(np.empty(0, dtype=np.uint16)) is None  # nothing to put: the pipe's empty message
    assert w.put(tokens(3000, 6)) is None  # bigger than the ring


def batches(texts, per):
    return [Batch(texts[i : i + per], Position(0, i)) for i in range(0, len(texts), per)]


@LINUX
@needs_data
@pytest.mark.parametrize("ring_bytes", [0, 256 << 10, ring.RING_BYTES])
def test_the_parent_gets_what_one_process_makes_with_any_ring(ring_bytes):
    """Batches of 7..200 documents (~10 KB to ~600 KB of tokens): with a 256 KiB ring some fit and the
    ring goes round, some go over the pipe. Each result is held while the next 8 come (as the shard
    writer's queue holds them) and checked again as it leaves: a block written again while the parent
    still held it would show as a difference."""
    texts = real_texts()[:1200]
    spec, prebuilt = tokspec.load("gpt2")
    args = EncoderArgs(spec, "auto", 1000, prebuilt)
    work = [b for per in (7, 200, 31) for b in batches(texts, per)]
    want = [e.tokens.copy() for e in tokenize_in_order(work, args, 0)]
    pool = WorkerPool(2, args, ring_bytes=ring_bytes)
    rings = pool.rings
    held, n, shared = deque(), 0, 0
    for g, w in zip(tokenize_in_order(work, args, 2, pool=pool), want):
        assert np.array_equal(g.tokens, w)
        n += 1
        shared += not g.tokens.flags.owndata  # over a ring's block (else received into its own array)
        held.append((g.tokens, w))
        if len(held) > 8:
            assert np.array_equal(*held.popleft())
    assert n == len(want)
    assert all(np.array_equal(g, w) for g, w in held)
    if ring_bytes == ring.RING_BYTES:
        assert shared == n  # room for all
    elif ring_bytes:  # some through the rings, one at least went round; the 200-document batches never fit
        assert max(r.end for r in rings) > ring_bytes and 0 < shared < n
    else:
        assert rings == [None, None] and shared == 0


@LINUX
def test_a_worker_that_gets_no_descriptor_sends_on_the_pipe():
    """Ring.send's one byte arrives without its descriptor (the worker is out of descriptors), or with
    one it cannot map: no ring there, every result on the pipe; the connection closed first: EOFError
    (the worker exits)."""
    a, b = mp.Pipe(duplex=True)
    r = ring.create(4096)
    r.send(a)
    w = ring.receive(b, 4096)
    assert w is not None and w.put(tokens(10, 1)) == 0
    r.close_fd()
    with socket.socket(fileno=a.fileno()) as s:
        socket.send_fds(s, [b"r"], [])
        s.detach()
    assert ring.receive(b, 4096) is None
    rfd, wfd = os.pipe()  # a descriptor that cannot be mapped: the pipe too, not a dead worker
    with socket.socket(fileno=a.fileno()) as s:
        socket.send_fds(s, [b"r"], [rfd])
        s.detach()
    assert ring.receive(b, 4096) is None
    os.close(rfd), os.close(wfd)
    a.close()
    with pytest.raises(EOFError):
        ring.receive(b, 4096)
