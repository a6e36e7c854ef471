"""pool.WorkerPool.ordered: one slow batch (a Hub retry, a worker late to start) stops the handing out a
few batches after it, instead of the other workers' results piling up in the parent behind it; the
results still come in input order. And each result says the CPU its reading took in the worker, which
the run adds up."""
import os
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

from tokshards import tokspec
from tokshards.pipeline import NoProgress, stream
from tokshards.pool import EncoderArgs, WorkerPool, tokenize_in_order
from tokshards.positions import Position
from tokshards.sources import Batch


@dataclass(frozen=True)
class MarkedTask:
    """Read in a worker: leaves a file saying so; the first waits until the test lets it go."""

    where: str
    k: int

    def read(self, log=None):
        open(os.path.join(self.where, f"read-{self.k}"), "w").close()
        if self.k == 0:
            while not os.path.exists(os.path.join(self.where, "go")):
                time.sleep(0.02)
        return [f"document {self.k} " * 20], None


def test_a_slow_batch_holds_back_the_rest_not_the_parents_memory(tmp_path):
    spec, prebuilt = tokspec.load("gpt2")
    args = EncoderArgs(spec, "auto", 1000, prebuilt)
    work = [Batch(None, Position(0, k), task=MarkedTask(str(tmp_path), k)) for k in range(200)]
    pool = WorkerPool(2, args)  # one batch in flight per worker being read, one being encoded
    got = []
    t = threading.Thread(target=lambda: got.extend(tokenize_in_order(work, args, 2, pool=pool)))
    t.start()
    deadline = time.time() + 60
    while len(list(tmp_path.glob("read-*"))) < 2 and time.time() < deadline:  # both workers at work
        time.sleep(0.05)
    time.sleep(1.5)  # time enough for the other worker to read all the rest, were it let
    read_while_stuck = len(list(tmp_path.glob("read-*")))
    (tmp_path / "go").touch()
    t.join(120)
    # at most the window: 2 x workers x batches in flight per worker (one of the stuck worker's
    # waits unread behind the stuck one); without it the other worker read all 199
    assert 2 <= read_while_stuck <= 2 * 2 * 2
    assert [e.start.offset for e in got] == list(range(200))
    assert got[5].tokens[1:].tolist() == args.build().encode_batch(["document 5 " * 20])[1:].tolist()



@dataclass(frozen=True)
class TimedTask:
    """Read in a worker: 0.2 s of this thread's CPU (busy), or 0.3 s asleep (no CPU); then `docs` documents."""

    busy: bool
    docs: int = 1

    def read(self, log=None):
        if self.busy:
            end = time.thread_time() + 0.2
            while time.thread_time() < end:
                pass
        else:
            time.sleep(0.3)
        return [f"document {i}, and a few words of it" for i in range(self.docs)], None


def test_each_result_says_the_cpu_its_reading_took_in_the_worker():
    """Encoded.read_cpu: the CPU of the worker's thread that read the task, not the wall time the read took
    (one that sleeps), nor the CPU of the thread tokenizing the batch before it meanwhile (one worker reads
    the next task while it tokenizes one: here with tiktoken, document by document, ~0.2 s a batch)."""
    spec, prebuilt = tokspec.load("gpt2")
    args = EncoderArgs(spec, "tiktoken", 1000, prebuilt)
    work = [Batch(None, Position(0, k), task=TimedTask(k % 2 == 0, 30_000)) for k in range(6)]
    got = list(tokenize_in_order(work, args, 1))
    assert [e.start.offset for e in got] == list(range(6))
    busy, asleep = [e.read_cpu for e in got[0::2]], [e.read_cpu for e in got[1::2]]
    assert all(0.2 <= c < 0.5 for c in busy), busy
    assert all(c < 0.05 for c in asleep), asleep
    # read in this process (--nprocs 0): no worker read anything
    assert [e.read_cpu for e in tokenize_in_order(work[:2], args, 0)] == [0.0, 0.0]


class Source:
    def __init__(self, batches):
        self.list = batches

    def batches(self, pos=None):
        yield from self.list

    def fetchers(self, nprocs):
        return 1


def test_the_run_sums_the_reading_of_the_batches_it_writes():
    """pipeline.stream: the workers' reading over every batch written, which the last line prints."""
    spec, prebuilt = tokspec.load("gpt2")
    job = SimpleNamespace(source=Source([Batch(None, Position(0, k), task=TimedTask(True)) for k in range(3)]),
                          encoder_args=lambda: EncoderArgs(spec, "auto", 1000, prebuilt), max_tokens=None)
    written = []
    writer = SimpleNamespace(add=lambda enc, lo, hi: written.append(hi - lo), finish=lambda: None)
    got = stream(job, writer, None, 0, 2, NoProgress(), print)
    assert not got.stopped and len(written) == 3 and 0.6 <= got.read_cpu < 1.5, got
    # stopped by --max-tokens after the first batch: its reading only
    job.max_tokens = written[0]
    got = stream(job, writer, None, 0, 2, NoProgress(), print)
    assert got.stopped and 0.2 <= got.read_cpu < 0.4, got
