"""shardfile.ShardFile: the bytes given, in order, whether written past the page cache (O_DIRECT) or
through it, with a header put back at the start, and when direct I/O is refused part way."""
import errno
import os
import random

import pytest

from tokshards import shardfile
from tokshards.shardfile import BLOCK, ShardFile

SIZES = [1, 7, 4096, 100_000, BLOCK - 3, BLOCK, 3 * BLOCK + 5]


def write_random(path, seed, head=None):
    rng = random.Random(seed)
    want = bytearray(b"H" * 1024)
    f = ShardFile(str(path))
    f.write(b"H" * 1024)
    for _ in range(40):
        chunk = rng.randbytes(rng.choice(SIZES))
        f.write(chunk)
        want += chunk
    direct = f.direct
    f.finish(head)
    if head is not None:
        want[: len(head)] = head
    return bytes(want), direct


@pytest.mark.parametrize("direct_io", ["1", "0"])
@pytest.mark.parametrize("head", [None, b"X" * 1024])
def test_the_file_holds_exactly_the_bytes_given(tmp_path, monkeypatch, direct_io, head):
    monkeypatch.setenv("FINEWEB_DIRECT_IO", direct_io)
    want, direct = write_random(tmp_path / "s.bin.tmp", seed=len(direct_io) + (head is None), head=head)
    assert (tmp_path / "s.bin.tmp").read_bytes() == want
    if direct_io == "0":
        assert not direct


def test_a_filesystem_that_refuses_a_direct_write_gets_the_same_bytes_through_the_page_cache(tmp_path, monkeypatch):
    real = os.write
    refused = []

    def write(fd, data):
        if shardfile.DIRECT and os.get_blocking(fd) is not None and os.fstat(fd).st_size >= BLOCK \
                and fcntl_direct(fd):
            refused.append(1)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    def fcntl_direct(fd):
        import fcntl

        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & shardfile.DIRECT)

    monkeypatch.setattr(os, "write", write)
    want, direct = write_random(tmp_path / "s.bin.tmp", seed=3)
    assert (tmp_path / "s.bin.tmp").read_bytes() == want
    if direct:
        assert refused == [1]  # refused once, then every byte through the page cache


def test_it_never_writes_through_a_link_planted_at_its_name(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "s.bin.tmp").symlink_to(victim)
    f = ShardFile(str(tmp_path / "s.bin.tmp"))
    f.write(b"new")
    f.finish()
    assert victim.read_bytes() == b"keep" and (tmp_path / "s.bin.tmp").read_bytes() == b"new"


def test_a_direct_write_cut_short_then_refused_goes_on_from_where_the_file_stands(tmp_path, monkeypatch):
    if not shardfile.DIRECT:
        pytest.skip("no O_DIRECT on this system")
    import fcntl

    real, calls = os.write, []

    def write(fd, data):  # the first direct write takes 1 MiB only; the next is refused
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & shardfile.DIRECT)
        if direct:
            calls.append(len(data))
            if len(calls) == 1:
                return real(fd, memoryview(data)[: 1 << 20])
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    want, direct = write_random(tmp_path / "s.bin.tmp", seed=5)
    assert direct is False and len(calls) == 2  # (it went on through the page cache)
    assert (tmp_path / "s.bin.tmp").read_bytes() == want


def test_a_file_that_cannot_be_set_up_is_not_left_behind(tmp_path, monkeypatch):
    def no_memory(*a, **kw):
        raise OSError(errno.ENOMEM, "Cannot allocate memory")

    monkeypatch.setattr(shardfile.mmap, "mmap", no_memory)
    monkeypatch.setenv("FINEWEB_DIRECT_IO", "1")
    try:
        ShardFile(str(tmp_path / "s.bin.tmp"))
    except OSError:
        pass
    assert not (tmp_path / "s.bin.tmp").exists()
