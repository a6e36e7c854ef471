"""pool.send_raw / receive_into: a result's tokens after their message on the worker's connection,
received straight into their array: every byte, in order, whatever the socket's chunking; EOFError
if the worker's end closes part way (the parent then says the worker died)."""
import multiprocessing as mp
import threading

import numpy as np
import pytest

from tokshards.pool import receive_into, send_raw


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
