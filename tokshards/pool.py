"""The tokenizer processes: batches in, Encoded values out, in input order, with bounded memory.

Each worker is a process of its own ("spawn": it starts clean, without the parent's threads) with
one pipe to the parent. The parent hands out the next batch to the least busy worker, keeping a
few in flight per worker; results come back as values and are yielded in the order the batches
came in, so the shards never depend on --nprocs.

The parent stays off the data path: a batch is usually a task (a parquet row group, local or on
the Hub; a byte range of a text file) that the worker reads itself, `fetchers` tasks at a time in
threads while it tokenizes the one before (downloads overlap tokenizing); the tokens come back
through shared memory, read where the worker put them (ring.py), or where that is not to be had as
raw bytes on the pipe received straight into their array (no pickling either way); a task's log
lines (a retried network fault) come back through the same pipe.

Stopping is never a wait on a worker:
- the parent leaves the pool (an error, Ctrl-C, SIGTERM, the consumer stops): every worker is
  killed at once (they hold nothing but the batches in flight; nothing of theirs is on disk);
- the parent dies, even by SIGKILL: each worker gets SIGKILL from the kernel (Linux
  PR_SET_PDEATHSIG), and on any system it exits when its pipe to the parent closes;
- Ctrl-C and SIGTERM go to the parent only (workers ignore both): it prints the one line.
"""
import ctypes
import importlib
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import wait
from typing import Optional

import numpy as np

from . import fastgpt2, ring
from .encoders import MismatchError, make_encoder
from .errors import STOP_SIGNALS, UserError, signals_held
from .positions import Position
from .tokspec import TokenizerSpec



@dataclass(frozen=True)
class EncoderArgs:
    """What a process needs to build its encoder (encoders.make_encoder)."""

    spec: TokenizerSpec
    backend: str = "auto"
    check_every: int = 1000
    prebuilt: Optional[dict] = None  # tiktoken's Encoding arguments, built once by the parent

    def build(self):
        return make_encoder(self.spec, self.backend, self.check_every, self.prebuilt)


@dataclass(frozen=True)
class Encoded:
    """One batch, tokenized: its tokens (end-of-text before each document it begins), where it starts
    in the source, the source's token_count of each document it begins (or None), the backend, and the
    CPU its reading took in the worker."""

    start: Position
    first_continues: bool
    tokens: np.ndarray
    counts: Optional[list]
    backend: str
    docs: int  # end-of-text ids among the tokens, counted where they were made (not in the parent)
    read_cpu: float = 0.0  # CPU s of the worker's thread that read the batch's task (0: the parent read it)


def log_stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def read(batch, log):
    """(texts, counts) of a batch: a task (a row group, a byte range) is read here."""
    if batch.task is None:
        return batch.texts, batch.token_counts
    return batch.task.read(log)


def encode(encoder, batch, got):
    """(tokens, counts, end-of-text ids among the tokens) of a batch whose (texts, counts) are `got`."""
    texts, counts = got
    if not isinstance(texts, list):  # an Arrow string column (parquet): made into str here, not by the reader
        texts = [t if t is not None else "" for t in texts.to_pylist()]  # null text: empty document
    tokens = encoder.encode_batch(texts, batch.first_continues, batch.last_continues)
    return tokens, counts, int(np.count_nonzero(tokens == encoder.spec.eot))


def tokenize_in_order(batches, args, nprocs, fetchers=1, log=None, pool=None):
    """Yield an Encoded per batch, in input order. nprocs=0 encodes in this process; `fetchers`: the
    tasks each worker reads at once (in threads, while it tokenizes); log: for the tasks' log lines;
    pool: a WorkerPool started early (WorkerPool.early) and set up by the caller, used instead of a new
    one (its size is nprocs); killed when this ends, like one started here."""
    log = log or (lambda msg: None)
    if nprocs == 0:  # in this process: for debugging, for tiny inputs, and in a Ray task (one CPU)
        keep_freed_memory()
        encoder = args.build()
        for b in batches:
            try:
                tokens, counts, docs = encode(encoder, b, read(b, log))
            except MismatchError as e:
                raise UserError(str(e)) from None
            yield Encoded(b.start, b.first_continues, tokens, counts, encoder.backend, docs)
        return
    if pool is None:
        pool = WorkerPool(nprocs, args, fetchers, log)
    try:
        yield from pool.ordered(batches)
        pool.close()
    finally:
        pool.kill()  # nothing left to do after a clean close; otherwise no waiting on anyone


class WorkerPool:
    """n worker processes. Given `args`, they are set up at once; else they start (interpreter, imports,
    `warm` modules, the `preload`ed fast tokenizer) while the parent still plans the run, and setup()
    hands them their encoder's arguments later (WorkerPool.early)."""

    def __init__(self, n, args=None, fetchers=1, log=None, warm=(), preload=None, ring_bytes=None):
        """ring_bytes: each worker's shared-memory ring for its tokens (ring.py); None: ring.RING_BYTES,
        or 0 (the pipe only) with FINEWEB_TOKEN_RING=0 in the environment."""
        self.procs, self.conns, self.sending, self.rings = [], [], [], []
        if ring_bytes is None:
            ring_bytes = ring.RING_BYTES if os.environ.get("FINEWEB_TOKEN_RING", "1") != "0" else 0
        self.ring_bytes = ring_bytes
        self.log = log or (lambda msg: None)
        keep_freed_memory()  # this process's receive arrays, batch after batch
        ctx = mp.get_context("spawn")
        # multiprocessing starts its resource tracker on the first spawn and unblocks SIGINT/SIGTERM
        # as it does so (resource_tracker.ensure_running): start it first, or the first worker would
        # be born with both unblocked
        resource_tracker.ensure_running()
        try:
            # workers are born with Ctrl-C/SIGTERM blocked (a pending one is dropped when they ignore it),
            # and one that arrives meanwhile is acted on once every worker is started and known to kill()
            with signals_held():
                for _ in range(n):
                    parent_end, child_end = ctx.Pipe(duplex=True)
                    # only small arguments here: Process.start() blocks until the new interpreter has read
                    # them all (it imports what unpickling them needs first), so the encoder's arguments
                    # (~0.6 MB for GPT-2) would make each worker wait for the one before (setup())
                    p = ctx.Process(target=worker_main, args=(child_end, os.getpid(), tuple(warm), preload),
                                    daemon=True, name="fineweb-tokenizer")
                    p.start()
                    self.procs.append(p)
                    self.conns.append(parent_end)
                    child_end.close()
        except BaseException:
            self.kill()
            raise
        if args is not None:
            self.setup(args, fetchers, log)

    @classmethod
    def early(cls, n, tokenizer=None, backend="auto", warm=()):
        """n workers started before the job is known, for setup() once it is: their start-up (~0.5 s of
        CPU each: Python, numpy, pyarrow, and fastokens building GPT-2 when `tokenizer` is gpt2 or
        r50k_base and `backend` may use it) overlaps the parent's own (the tokenizer, the input's
        files and footers, the output directory)."""
        preload = tokenizer if tokenizer in fastgpt2.ENCODINGS and backend != "tiktoken" else None
        return cls(n, warm=warm, preload=preload)

    def setup(self, args, fetchers=1, log=None):
        """Give the workers their encoder's arguments: sent in threads (each message waits for its worker
        to take it), finished before the first batch is sent."""
        self.per_worker = fetchers + 1  # in flight per worker: `fetchers` being read, one being encoded
        self.dtype = args.spec.np_dtype
        if log is not None:
            self.log = log
        self.rings = [ring.create(self.ring_bytes) for _ in self.conns]  # None: that worker's tokens on its pipe
        self.sending = [threading.Thread(target=self._send_setup, args=(c, ("setup", args, fetchers), r), daemon=True)
                        for c, r in zip(self.conns, self.rings)]
        for t in self.sending:
            t.start()

    @staticmethod
    def _send_setup(conn, msg, shared):
        """The setup message (with the ring's size, 0 for none), then the ring's descriptor."""
        try:
            conn.send((*msg, shared.size if shared is not None else 0))
            if shared is not None:
                shared.send(conn)
        except Exception:  # the worker died, or the pool was killed: said when it is next sent to or heard from
            pass
        finally:
            if shared is not None:
                shared.close_fd()  # the worker has its own (or is gone); the mapping stays

    def _setup_sent(self):
        for t in self.sending:
            t.join()
        self.sending = []

    def ordered(self, batches):
        n = len(self.procs)
        busy = [0] * n  # batches in flight per worker
        order = deque()  # (seq, batch start, first_continues) in input order
        done = {}  # seq -> (tokens, counts, backend, docs, read CPU s)
        owner = {}  # seq -> worker
        # sent and not yet yielded, at most: one slow batch (a Hub retry, a worker late to start) stops
        # the handing out there, instead of the others' results piling up behind it in `done`
        window = 2 * n * self.per_worker
        seq, more = 0, True
        batches = iter(batches)
        while more or order:
            while more and min(busy) < self.per_worker and len(order) < window:
                b = next(batches, None)
                if b is None:
                    more = False
                    break
                w = busy.index(min(busy))
                self._send(w, (seq, b, self.rings[w] and self.rings[w].free_upto()))
                busy[w] += 1
                owner[seq] = w
                order.append((seq, b.start, b.first_continues))
                seq += 1
            while order and order[0][0] in done:
                s, start, first_continues = order.popleft()
                tokens, counts, backend, docs, read_cpu = done.pop(s)
                yield Encoded(start, first_continues, tokens, counts, backend, docs, read_cpu)
            if not order:
                continue
            for w, msg in self._receive([w for w in range(n) if busy[w]]):
                kind, s = msg[0], msg[1]
                if kind == "log":
                    self.log(msg[2])
                    continue
                if kind == "err":
                    raise msg[2]
                busy[owner.pop(s)] -= 1
                done[s] = msg[2:]

    def _send(self, w, item):
        if self.sending:  # the setup messages go first
            self._setup_sent()
        try:
            self.conns[w].send(item)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self._died(w)

    def _receive(self, waiting):
        """(worker, message) for each worker with a message ready; raises if a worker died."""
        conns = {self.conns[w]: w for w in waiting}
        sentinels = {self.procs[w].sentinel: w for w in range(len(self.procs))}
        ready = wait(list(conns) + list(sentinels))
        out = []
        for r in ready:
            if r in conns:
                w = conns[r]
                try:
                    msg = r.recv()
                    if msg[0] == "ok":  # ("ok", seq, n, counts, backend, docs, block in the ring or None, read CPU s)
                        if msg[6] is not None:
                            tokens = self.rings[w].take(msg[6], msg[2], self.dtype)
                        else:  # the n tokens' bytes follow on the pipe
                            tokens = np.empty(msg[2], dtype=self.dtype)
                            receive_into(r, memoryview(tokens).cast("B"))
                        msg = ("ok", msg[1], tokens, msg[3], msg[4], msg[5], msg[7])
                    out.append((w, msg))
                except (EOFError, OSError):
                    self._died(w)
        for r in ready:
            if r in sentinels and not any(w == sentinels[r] for w, _ in out):
                self.procs[sentinels[r]].join(0.5)
                if self.procs[sentinels[r]].exitcode is not None:
                    self._died(sentinels[r])
        return out

    def _died(self, w):
        p = self.procs[w]
        p.join(1)
        code = p.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise UserError(f"a tokenizer worker process died ({how}: killed, or out of memory?); "
                        "rerun the same command to resume")

    def close(self):
        """All work done: let the workers exit on their own."""
        for c in self.conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(5)

    def kill(self):
        self.sending = []  # a setup message cut short by the kill: its thread ends on the error (ignored)
        for p in self.procs:
            if p.exitcode is None:
                try:
                    p.kill()
                except (OSError, AttributeError):
                    pass
        for p in self.procs:
            try:
                p.join(2)
            except AssertionError:  # never started
                pass
        for c in self.conns:
            c.close()
        self.procs, self.conns, self.rings = [], [], []  # a ring's memory goes with the last array over it


# --- in the worker process ---

# glibc's defaults give large freed blocks back to the kernel: munmap above its mmap threshold (128 KiB,
# raised only as large blocks are freed) and a trim of the heap's top above twice that. With them, the
# buffers fastokens allocates while it encodes a row group (~20 MB) came back as fresh zeroed pages in
# every batch: ~1,300 page faults per million tokens, 29% of fastokens' CPU (measured per thread:
# 0.84 -> 0.59 s on 43M tokens; tests/test_pool_transfer.py counts the faults). Fixed thresholds keep
# freed blocks up to KEEP_FREED for the next batch; a process still holds no more than its peak working
# set. 32 MiB is the largest mmap threshold glibc accepts on 64-bit (on 32-bit the call is refused).
# A worker has one arena for all its threads: else each (a fetcher reading a row group, the thread
# encoding it) keeps what it freed for itself, and a Hub worker peaked at ~400 MiB instead of ~330. Not
# in a process that encodes in-process (--nprocs 0): there fastokens may run a thread per core, which
# one arena's lock would serialize.
KEEP_FREED = 32 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt(3)


def keep_freed_memory(one_arena=False):
    """Tell glibc's malloc to keep freed blocks up to KEEP_FREED for reuse (in one arena for all the
    process's threads: one_arena, a worker), and pyarrow to allocate from it (elsewhere: nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its own policy stays
        return
    if mallopt(M_MMAP_THRESHOLD, KEEP_FREED):  # only if accepted: a trim threshold alone changes little
        mallopt(M_TRIM_THRESHOLD, 2 * KEEP_FREED)
        if one_arena:
            mallopt(M_ARENA_MAX, 1)
        arrow_uses_malloc()


# pyarrow allocates from its own mimalloc, which gives freed memory back to the kernel: the buffers a
# parquet row group is read into (~6 MB of text, decompressed) came back as fresh transparent huge
# pages, zeroed again for every row group: 3-5% of a run's CPU (perf: clear_page_erms under snappy's
# decompression), gone with glibc's malloc set as above. ARROW_DEFAULT_MEMORY_POOL is read once, when
# pyarrow is loaded: set here, it reaches a later import and the workers this process starts; a process
# that has pyarrow already gets it as pyarrow's default pool. A choice of the user's stands.
def arrow_uses_malloc():
    if os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system") == "system" and "pyarrow" in sys.modules:
        pa = sys.modules["pyarrow"]
        pa.set_memory_pool(pa.system_memory_pool())


def _die_with_parent(parent_pid):
    """SIGKILL from the kernel when the parent dies, whatever kills it (Linux)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # it died before that: nobody will read our results
        os._exit(0)


def _read_pipe(conn, setup, inbox, order):
    """Take the setup message (and the ring's descriptor), then batches, off the pipe as they come (the
    parent never blocks sending); exit when it closes. Each batch says how far the ring is free."""
    try:
        item = conn.recv()
        if item is None:  # the pool was closed before it was set up: nothing to do
            os._exit(0)
        _, args, fetchers, ring_bytes = item
        shared = ring.receive(conn, ring_bytes) if ring_bytes else None  # None: results on the pipe
    except (EOFError, OSError):
        os._exit(0)
    setup.put((args, fetchers, shared))
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nobody will read our results
        if item is not None and shared is not None:
            shared.free_upto = item[2]
        order.put(None if item is None else item[0])
        inbox.put(item)
        if item is None:
            return


def worker_main(conn, parent_pid, warm=(), preload=None):
    _die_with_parent(parent_pid)
    keep_freed_memory(one_arena=True)
    for s in STOP_SIGNALS:  # the parent handles both and then kills us; a pending one is dropped
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    # one process per core already: the fast tokenizer must not start threads of its own
    os.environ["FASTOKENS_BPE_THREADS"] = os.environ["RAYON_NUM_THREADS"] = "1"
    setup, inbox, order = queue.Queue(), queue.Queue(), queue.Queue()  # the encoder's arguments; batches; their seqs
    threading.Thread(target=_read_pipe, args=(conn, setup, inbox, order), daemon=True).start()
    # while the parent is still planning the run: the slow half of building the encoder, and the imports
    # the first task would otherwise wait for (pyarrow, huggingface_hub)
    if preload:
        fastgpt2.preload(preload)
    for name in warm:
        try:
            importlib.import_module(name)
        except Exception:  # only a head start: the task that needs it says what is wrong
            pass
    args, fetchers, shared = setup.get()
    try:
        encoder, error = args.build(), None
    except UserError as e:  # e.g. --tokenizer-backend fast failing its self-check: said from the first batch
        encoder, error = None, e
    sending = threading.Lock()  # results (this thread) and log lines (the fetchers) share the pipe

    def send(msg, data=None):
        with sending:
            try:
                conn.send(msg)
                if data is not None:
                    send_raw(conn, data)
            except OSError:  # the parent is gone (a cut-short stop: its end closes before the kernel kills us)
                os._exit(0)  # nobody will read our results; no traceback on the terminal it shares

    def read_here(seq, batch):
        try:
            return read(batch, lambda msg: send(("log", seq, msg)))
        except Exception as e:
            return e

    def finish(seq, batch, got, read_cpu):
        try:
            if error is not None:
                raise error
            if isinstance(got, Exception):
                raise got
            tokens, counts, docs = encode(encoder, batch, got)
        except MismatchError as e:
            send(("err", seq, UserError(str(e))))
        except Exception as e:
            send(("err", seq, _sendable(e)))
        else:
            tokens = np.ascontiguousarray(tokens)
            pos = shared.put(tokens) if shared is not None else None  # else over the pipe, after the message
            send(("ok", seq, len(tokens), counts, encoder.backend, docs, pos, read_cpu),
                 None if pos is not None else memoryview(tokens).cast("B"))

    fetched, arrived = {}, threading.Condition()  # seq -> (batch, (texts, counts) or an exception, its CPU s)

    def fetch():
        while (item := inbox.get()) is not None:
            t0 = time.thread_time()  # this thread's own CPU: the reading, not the tokenizing beside it
            got = read_here(item[0], item[1])
            with arrived:
                fetched[item[0]] = (item[1], got, time.thread_time() - t0)
                arrived.notify_all()
        inbox.put(None)  # for the next fetcher

    for _ in range(fetchers):
        threading.Thread(target=fetch, daemon=True).start()
    while (seq := order.get()) is not None:
        with arrived:
            arrived.wait_for(lambda: seq in fetched)
            batch, got, read_cpu = fetched.pop(seq)
        finish(seq, batch, got, read_cpu)


# The tokens follow their message as raw bytes on the connection's socket (POSIX): received straight
# into their array by os.readv, one copy, where Connection.recv_bytes_into makes three (a bytes object
# per read, a BytesIO, the array). Elsewhere, framed messages (send_bytes / recv_bytes_into).
RAW = os.name == "posix" and hasattr(os, "readv")


def send_raw(conn, data):
    if not RAW:
        conn.send_bytes(data)
        return
    view, fd = memoryview(data).cast("B"), conn.fileno()
    while len(view):
        view = view[os.write(fd, view):]


def receive_into(conn, view):
    """The len(view) bytes send_raw sent, into view; EOFError if the connection closes first."""
    if not RAW:
        if len(view):
            conn.recv_bytes_into(view)
        else:
            conn.recv_bytes()
        return
    fd, got = conn.fileno(), 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError
        got += n


def _sendable(e):
    """The exception itself if it survives pickling, else its text (the parent shows one line)."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")
