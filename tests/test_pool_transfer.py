"""pool.send_raw / receive_into: a result's tokens after their message on the worker's connection,
received straight into their array: every byte, in order, whatever the socket's chunking; EOFError
if the worker's end closes part way (the parent then says the worker died). And how the processes are
set up for speed and memory, each measured: glibc's malloc keeps freed memory in one arena, pyarrow
allocates from it, numpy's BLAS threads are off."""
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tokshards.pool import receive_into, send_raw

ROOT = str(Path(__file__).resolve().parent.parent)  # for the scripts run in subprocesses
GLIBC = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="keep_freed_memory tunes glibc's malloc only")


@pytest.mark.parametrize("n", [0, 1, 3, 65_537, 3_000_001])
def test_every_byte_arrives_in_order_after_its_message(n):
    a, b = mp.Pipe(duplex=True)
    tokens = np.random.default_rng(n).integers(0, 50257, n, dtype=np.uint16)

    def worker():
        a.send(("ok", 7, n))
        send_raw(a, memoryview(tokens).cast("B"))
        a.send(("next", 8))

    t = threading.Thread(target=worker)
    t.start()
    msg = b.recv()
    got = np.empty(msg[2], dtype=np.uint16)
    receive_into(b, memoryview(got).cast("B"))
    assert msg == ("ok", 7, n) and np.array_equal(got, tokens) and b.recv() == ("next", 8)
    t.join()


def test_a_connection_closed_part_way_is_eof():
    a, b = mp.Pipe(duplex=True)
    send_raw(a, b"\x01\x02\x03")
    a.close()
    got = bytearray(10)
    with pytest.raises(EOFError):
        receive_into(b, memoryview(got))



FAULTS = """
import os, resource, sys
os.environ["RAYON_NUM_THREADS"] = os.environ["FASTOKENS_BPE_THREADS"] = "1"  # as in a worker
sys.path.insert(0, {root!r})
import tiktoken
from tokshards import fastgpt2
from tokshards.pool import keep_freed_memory
if {keep}:
    keep_freed_memory()
fast = fastgpt2.load("gpt2", tiktoken.get_encoding("gpt2"))
texts = [" ".join(f"document {{d}} says {{w}} things about item{{w * d % 977}}." for w in range(400)) for d in range(500)]
fast.encode_batch_flat(texts)  # the first batch's pages are new either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # the next batches, as a worker encodes row group after row group
    fast.encode_batch_flat(texts)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@GLIBC
def test_a_workers_batch_buffers_are_reused_not_faulted_in_again():
    """fastokens allocates ~20 MB while it encodes a row group and frees it: with glibc's defaults each
    batch gets it back as fresh zeroed pages (measured: 29% of its CPU); kept, the pages are reused."""

    def faults(keep):
        out = subprocess.run([sys.executable, "-c", FAULTS.format(root=ROOT, keep=keep)], capture_output=True,
                             text=True, check=True)
        return int(out.stdout)

    assert faults(False) > 5 * 1000  # glibc's defaults: thousands of pages faulted in again per batch
    assert faults(True) < 500


ARENAS = """
import ctypes, os, sys, threading
sys.path.insert(0, {root!r})
from tokshards.pool import M_ARENA_MAX, keep_freed_memory
keep_freed_memory(one_arena=True)  # as a worker does
if {per_thread}:  # the control: glibc's default, an arena per thread
    ctypes.CDLL(None).mallopt(M_ARENA_MAX, 64)


def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


turns = [threading.Event() for _ in range(6)]


def work(k):  # as a worker's threads: alive together, each allocating and freeing a row group's worth
    bytearray(4096)  # the thread takes its arena with its first allocation
    turns[k].wait()
    blocks = [bytearray(1 << 20) for _ in range(24)]  # 24 MiB in blocks under the mmap threshold
    del blocks
    turns[k + 1].set()
    turns[5].wait()


before = rss()
threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
turns[0].set()
turns[4].wait()
print((rss() - before) >> 20)
turns[5].set()
"""


@GLIBC
def test_threads_reuse_the_memory_each_other_freed():
    """A worker's kept freed memory is shared by all its threads (one arena): four threads that each
    allocate and free 24 MiB in turn leave ~24 MiB, where an arena per thread (the control) keeps ~96."""

    def growth_mib(per_thread):
        out = subprocess.run([sys.executable, "-c", ARENAS.format(root=ROOT, per_thread=per_thread)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return int(out.stdout)

    assert growth_mib(True) > 80
    assert growth_mib(False) < 40


ARROW_POOL = """
import multiprocessing as mp, sys
sys.path.insert(0, {root!r})
import pyarrow as pa
from tokshards.pool import keep_freed_memory


def child(q):
    import pyarrow as pa
    q.put(pa.default_memory_pool().backend_name)


if __name__ == "__main__":
    keep_freed_memory()  # as WorkerPool does before it starts the workers, and each worker first thing
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    print(pa.default_memory_pool().backend_name, q.get())
    p.join()
"""


@GLIBC
@pytest.mark.parametrize("user, expected", [(None, "system system"), ("mimalloc", "mimalloc mimalloc")])
def test_pyarrow_allocates_from_the_kept_malloc_here_and_in_the_workers(tmp_path, user, expected):
    """pyarrow's own mimalloc handed each row group's buffers back to the kernel (fresh huge pages, zeroed
    again: 3-5% of a run's CPU): the process that has pyarrow loaded, and the workers it starts, allocate
    from glibc's malloc instead; ARROW_DEFAULT_MEMORY_POOL set by the user stands."""
    script = tmp_path / "pools.py"
    script.write_text(ARROW_POOL.format(root=ROOT))
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if user:
        env["ARROW_DEFAULT_MEMORY_POOL"] = user
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected.split()


BLAS_AT_IMPORT = """
import builtins, os, sys
sys.path.insert(0, {root!r})
seen = []
real_import = builtins.__import__


def spy(name, *args, **kwargs):
    if name == "numpy" and not seen and "numpy" not in sys.modules:
        seen.append(os.environ.get("OPENBLAS_NUM_THREADS"))
    return real_import(name, *args, **kwargs)


builtins.__import__ = spy
sys.argv = ["fineweb.py", "--input", {text!r}, "--local-dir", {out!r}, "--nprocs", "0", "--quiet"]
from tokshards import command
try:
    command.main()
finally:
    print(seen)
"""


@pytest.mark.parametrize("user, expected", [(None, "1"), ("3", "3")])
def test_numpys_blas_threads_are_off_before_numpy_loads(tmp_path, user, expected):
    """numpy's OpenBLAS starts a spinning thread per core as numpy loads (~0.2 CPU s of a 2-core run's
    start-up, in every process): the command sets OPENBLAS_NUM_THREADS=1 before its first import of
    numpy (the workers inherit it); a value of the user's stands."""
    text = tmp_path / "in.txt"
    text.write_text("one document\n")
    script = tmp_path / "blas.py"
    script.write_text(BLAS_AT_IMPORT.format(root=ROOT, text=str(text), out=str(tmp_path / "out")))
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if user:
        env["OPENBLAS_NUM_THREADS"] = user
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == repr([expected])
