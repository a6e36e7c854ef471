"""tokshards.loader: the batches build-nanogpt's DataLoaderLite would give, from memory-mapped
shards of every format; deterministic shuffling; exact resume from state_dict()."""

import glob
import json
import os

import numpy as np
import pytest

from conftest import FINEWEB_EDU as DATA  # noqa: E402  (also sets TIKTOKEN_CACHE_DIR offline)
from tokshards import cli  # noqa: E402
from tokshards.formats import FORMATS, megatron_index, whole_documents, write_shard  # noqa: E402
from tokshards.loader import ShardLoader, list_shards, shard_format  # noqa: E402

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data not found at {DATA}")

SHARD, MAX = 50_000, 290_000  # 1 val + 4 full train shards + one of 40,000 tokens


def make_run(out, fmt):
    argv = ["--dataset", str(DATA), "--local-dir", str(out), "--format", fmt, "--shard-size", str(SHARD),
            "--max-tokens", str(MAX), "--nprocs", "0", "--quiet"]
    assert cli.main(argv) == 0
    return str(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("loader")
    return {fmt: make_run(base / fmt, fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def expected():
    """The token stream of the first MAX tokens: [eot] + encode_ordinary(text) per document."""
    import pyarrow.parquet as pq
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    parts, n = [], 0
    for f in sorted(glob.glob(str(DATA / "sample" / "10BT" / "*.parquet"))):
        for text in pq.read_table(f, columns=["text"]).column("text").to_pylist():
            ids = [50256] + enc.encode_ordinary(text)
            parts.append(ids)
            n += len(ids)
            if n >= MAX:
                return np.concatenate([np.array(p, dtype=np.int64) for p in parts])[:MAX]
    raise AssertionError("sample data holds fewer tokens than the test needs")


def split_shards(stream, fmt):
    """The expected stream cut into the shards the run writes (val first, then train): every SHARD
    tokens, or for whole-document formats at the first document start (an <|endoftext|>) at or
    after SHARD tokens into the shard."""
    if not whole_documents(fmt):
        return [stream[i : i + SHARD] for i in range(0, len(stream), SHARD)]
    starts, cuts = np.flatnonzero(stream == 50256), [0]
    while (k := np.searchsorted(starts, cuts[-1] + SHARD)) < len(starts):
        cuts.append(int(starts[k]))
    return [stream[a:b] for a, b in zip(cuts, cuts[1:] + [len(stream)])]


class DataLoaderLite:
    """build-nanogpt's train_gpt2.py DataLoaderLite, verbatim but for numpy arrays instead of files."""

    def __init__(self, B, T, process_rank, num_processes, shards):
        self.B, self.T = B, T
        self.process_rank, self.num_processes = process_rank, num_processes
        self.shards = shards
        self.reset()

    def reset(self):
        self.current_shard = 0
        self.tokens = self.shards[self.current_shard]
        self.current_position = self.B * self.T * self.process_rank

    def next_batch(self):
        B, T = self.B, self.T
        buf = self.tokens[self.current_position : self.current_position + B * T + 1]
        x = (buf[:-1]).reshape(B, T)
        y = (buf[1:]).reshape(B, T)
        self.current_position += B * T * self.num_processes
        if self.current_position + (B * T * self.num_processes + 1) > len(self.tokens):
            self.current_shard = (self.current_shard + 1) % len(self.shards)
            self.tokens = self.shards[self.current_shard]
            self.current_position = B * T * self.process_rank
        return x, y


def take(loader, n):
    return [loader.next_batch() for _ in range(n)]


def same(a, b):
    pairs = zip(a, b)
    return len(a) == len(b) and all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in pairs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_lists_shards_in_order(runs, expected, fmt):
    val, train = list_shards(runs[fmt], "val"), list_shards(runs[fmt], "train")
    assert [os.path.basename(p) for p, _, _ in val] == [f"edufineweb_val_000000{'.npy' if fmt == 'npy' else '.bin'}"]
    assert [os.path.basename(p)[:23] for p, _, _ in train] == [f"edufineweb_train_{i:06d}" for i in range(1, 6)]
    assert {(f, d) for _, f, d in val + train} == {(fmt, "<u2")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_batches_equal_dataloaderlite(runs, expected, fmt):
    shards = split_shards(expected, fmt)
    assert fmt != "megatron" or any(len(s) != SHARD for s in shards[:-1])  # the two cuts differ here
    B, T = 4, 32
    for world, rank in [(1, 0), (2, 0), (2, 1), (3, 2)]:
        ref = DataLoaderLite(B, T, rank, world, shards[1:])
        mine = ShardLoader(runs[fmt], B, T, rank=rank, world_size=world)
        n = 2000 // world  # more than one pass over the 5 train shards
        got = take(mine, n)
        assert same(got, take(ref, n)), (world, rank)
        assert got[0][0].dtype == np.int64 and got[0][0].shape == (B, T)
    val = ShardLoader(runs[fmt], B, T, split="val")
    assert same(take(val, 300), take(DataLoaderLite(B, T, 0, 1, shards[:1]), 300))


def test_shuffle_is_deterministic_and_differs_by_seed(runs):
    def first(seed, rank=0):
        return take(ShardLoader(runs["bin"], 4, 32, rank=rank, world_size=2, seed=seed), 40)

    assert same(first(1), first(1))
    assert not same(first(1), first(2))
    assert not same(first(1), first(None))
    assert not same(first(1, rank=0), first(1, rank=1))


def write_toy(d, fmt, lengths=(9000, 12001, 7777)):
    """Shards whose token values say where they are: shard k holds k*20000 + position."""
    d.mkdir()
    ext = ".npy" if fmt == "npy" else ".bin"
    for k, n in enumerate(lengths):
        with open(d / f"toy_train_{k + 1:06d}{ext}", "wb") as f:
            write_shard(f, fmt, (k * 20000 + np.arange(n)).astype("<u2"))
        if fmt == "megatron":  # its .idx beside the .bin says what the .bin is
            (d / f"toy_train_{k + 1:06d}.idx").write_bytes(megatron_index([n], "<u2"))
    (d / f"notes{ext}").write_bytes(b"not a shard")  # ignored: not named like a shard
    return str(d), lengths


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_manifest_reads_format_from_headers(tmp_path, fmt):
    d, lengths = write_toy(tmp_path / fmt, fmt)
    assert [(os.path.basename(p), f, t) for p, f, t in list_shards(d)] == [
        (f"toy_train_{k:06d}{'.npy' if fmt == 'npy' else '.bin'}", fmt, "<u2") for k in (1, 2, 3)]
    shards = [(k * 20000 + np.arange(n)).astype(np.int64) for k, n in enumerate(lengths)]
    assert same(take(ShardLoader(d, 8, 16, rank=1, world_size=2), 400), take(DataLoaderLite(8, 16, 1, 2, shards), 400))


def test_shuffled_rows_are_disjoint_windows_covering_each_shard(tmp_path):
    d, lengths = write_toy(tmp_path / "toy", "llmc")
    B, T, W = 4, 16, 2
    per_shard = [(n - 1) // T // (B * W) for n in lengths]  # steps per shard and epoch
    loaders = [ShardLoader(d, B, T, rank=r, world_size=W, seed=7) for r in range(W)]
    for epoch in range(2):
        starts = []
        for _ in range(sum(per_shard)):
            for loader in loaders:
                x, y = loader.next_batch()
                assert np.array_equal(y, x + 1)  # every row is one contiguous window, y shifted by one
                starts += x[:, 0].tolist()
        assert len(set(starts)) == len(starts)  # no window twice in an epoch, on any rank
        assert all(s % 20000 % T == 0 for s in starts)
        for k, n in enumerate(per_shard):
            assert sum(s // 20000 == k for s in starts) == n * B * W
        if epoch == 0:
            first_epoch = starts
    assert first_epoch != starts  # each epoch draws a new order


@pytest.mark.parametrize("seed", [None, 5])
def test_state_dict_resumes_exactly(runs, seed):
    B, T, W = 4, 32, 2
    for skip in [0, 1, 195, 1170, 2500]:  # start, inside a shard, near a shard end, past one epoch
        for rank in range(W):
            a = ShardLoader(runs["npy"], B, T, rank=rank, world_size=W, seed=seed)
            take(a, skip)
            state = json.loads(json.dumps(a.state_dict()))  # a checkpoint is plain JSON
            after = take(a, 300)
            b = ShardLoader(runs["npy"], B, T, rank=rank, world_size=W, seed=seed)
            take(b, 17)
            b.load_state_dict(state)
            assert same(take(b, 300), after), (skip, rank)
    # the state does not depend on the format or the rank: rank 0's checkpoint serves every rank
    c = ShardLoader(runs["llmc"], B, T, rank=1, world_size=W, seed=seed)
    c.load_state_dict(ShardLoader(runs["bin"], B, T, rank=0, world_size=W, seed=seed).state_dict())
    with pytest.raises(ValueError, match="T="):
        ShardLoader(runs["bin"], B, 64, seed=seed).load_state_dict(c.state_dict())


def test_too_small_shards_and_missing_split(tmp_path, runs):
    with pytest.raises(ValueError, match="fewer than B\\*T\\*world_size\\+1"):
        ShardLoader(runs["bin"], 64, 256, world_size=4)  # 65,537 > the last shard's 40,000
    with pytest.raises(ValueError, match="no train shards"):
        ShardLoader(str(tmp_path), 4, 32)


def test_single_file_and_raw_uint32(tmp_path):
    path = tmp_path / "train.bin"
    (np.arange(5000, dtype="<u4") + 70000).tofile(path)
    assert shard_format(str(path), dtype="<u4") == ("bin", "<u4")
    x, y = ShardLoader(str(path), 2, 8, dtype="<u4").next_batch()
    assert x[0, 0] == 70000 and y[1, 7] == 70016


def test_torch_tensors(runs):
    torch = pytest.importorskip("torch", reason="torch is optional; install it to test torch=True")
    x, y = ShardLoader(runs["llmc"], 4, 32, torch=True).next_batch()
    assert x.dtype == torch.long and y.dtype == torch.long and tuple(x.shape) == (4, 32)
    x2, y2 = ShardLoader(runs["llmc"], 4, 32).next_batch()
    assert np.array_equal(x.numpy(), x2) and np.array_equal(y.numpy(), y2)
