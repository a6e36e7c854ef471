"""pool.WorkerPool.ordered: one slow batch (a Hub retry, a worker late to start) stops the handing out a
few batches after it, instead of the other workers' results piling up in the parent behind it; the
results still come in input order."""
import os
import threading
import time
from dataclasses import dataclass

from tokshards import tokspec
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
