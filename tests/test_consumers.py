"""The shards as the trainers read them: each consumer's own reading code (nanoGPT, build-nanogpt,
llm.c in C, modded-nanogpt) must see exactly [eot] + encode_ordinary(text) for every document in
order. Plus `fineweb.py merge` (train.bin/val.bin, format conversion) and `fineweb.py inspect`."""

import glob
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import FINEWEB_EDU as DATA, REPO  # noqa: E402  (also sets TIKTOKEN_CACHE_DIR offline)
from tokshards import cli  # noqa: E402
from tokshards.formats import FORMATS  # noqa: E402
from tokshards.inspect_cmd import cmd_inspect  # noqa: E402
from tokshards.manifest import Manifest  # noqa: E402
from tokshards.merge import cmd_merge  # noqa: E402
from tokshards.verify import verify  # noqa: E402

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"sample data not found at {DATA}")

SHARD, MAX = 50_000, 290_000  # 1 val + 4 full train shards + one of 40,000 tokens
EOT = 50256


def make_run(out, fmt):
    argv = ["--dataset", str(DATA), "--local-dir", str(out), "--format", fmt, "--shard-size", str(SHARD),
            "--max-tokens", str(MAX), "--nprocs", "0", "--quiet"]
    assert cli.main(argv) == 0
    return str(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("consumers")
    return {fmt: make_run(base / fmt, fmt) for fmt in FORMATS}


@pytest.fixture(scope="module")
def docs():
    """The first documents of the sample, in file order, enough for MAX tokens."""
    import pyarrow.parquet as pq

    texts = []
    for f in sorted(glob.glob(str(DATA / "sample" / "10BT" / "*.parquet"))):
        texts += pq.read_table(f, columns=["text"]).column("text").to_pylist()
    return texts


@pytest.fixture(scope="module")
def expected(docs):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    parts, n = [], 0
    for text in docs:
        parts.append([EOT] + enc.encode_ordinary(text))
        n += len(parts[-1])
        if n >= MAX:
            return np.concatenate([np.array(p, dtype=np.int64) for p in parts])[:MAX]
    raise AssertionError("sample data holds fewer tokens than the test needs")


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    """merge and inspect as the lead registers them in cli.COMMANDS."""
    monkeypatch.setitem(cli.COMMANDS, "merge", cmd_merge)
    monkeypatch.setitem(cli.COMMANDS, "inspect", cmd_inspect)


def shard_paths(d, split=None):
    return [os.path.join(d, s.file) for s in Manifest.load(d).shards if split in (None, s.split)]


# --- nanoGPT: train.py get_batch on raw uint16 .bin ---

def get_batch(path, block_size, batch_size, rng):
    """nanoGPT train.py's get_batch, numpy in place of torch (a new memmap per batch, nanoGPT#287)."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    ix = rng.integers(len(data) - block_size, size=batch_size)
    x = np.stack([(data[i : i + block_size]).astype(np.int64) for i in ix])
    y = np.stack([(data[i + 1 : i + 1 + block_size]).astype(np.int64) for i in ix])
    return x, y, ix


def test_nanogpt_reads_bin_shards_and_merged_train_bin(runs, expected, tmp_path):
    paths = shard_paths(runs["bin"])
    assert np.array_equal(np.concatenate([np.memmap(p, dtype=np.uint16, mode="r") for p in paths]), expected)
    assert cli.main(["merge", runs["bin"], "--out", str(tmp_path / "data"), "--quiet"]) == 0
    rng = np.random.default_rng(0)
    for split, offset in [("train", SHARD), ("val", 0)]:
        for _ in range(20):
            x, y, ix = get_batch(str(tmp_path / "data" / f"{split}.bin"), 256, 8, rng)
            for row, i in enumerate(ix):
                assert np.array_equal(x[row], expected[offset + i : offset + i + 256])
                assert np.array_equal(y[row], expected[offset + i + 1 : offset + i + 257])


# --- build-nanogpt: train_gpt2.py load_tokens + its shard listing on .npy ---

def load_tokens(filename):
    npt = np.load(filename)
    npt = npt.astype(np.int32)  # added after video
    try:
        import torch
    except ImportError:
        return npt
    return torch.tensor(npt, dtype=torch.long)


def test_build_nanogpt_load_tokens_on_npy(runs, expected):
    data_root = runs["npy"]
    streams = []
    for split in ("val", "train"):
        shards = os.listdir(data_root)
        shards = [s for s in shards if split in s]
        shards = sorted(shards)
        shards = [os.path.join(data_root, s) for s in shards]
        assert len(shards) > 0, f"no shards found for split {split}"
        streams += [np.asarray(load_tokens(s), dtype=np.int64) for s in shards]
    assert [len(s) for s in streams] == [SHARD] * 5 + [MAX - 5 * SHARD]
    assert np.array_equal(np.concatenate(streams), expected)


# --- llm.c: the C loader's header checks, in C ---

@pytest.fixture(scope="module")
def llmc_check(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH: cannot build tests/llmc_check.c")
    exe = tmp_path_factory.mktemp("cc") / "llmc_check"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(REPO / "tests" / "llmc_check.c")], check=True)
    return str(exe)


def test_llmc_c_reader(runs, expected, llmc_check, tmp_path):
    paths = shard_paths(runs["llmc"])
    out = subprocess.run([llmc_check, *paths], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")[:-1]
    assert len(lines) == len(paths) == 6
    start = 0
    for line in lines:
        ntok, total, weighted = (int(v) for v in line.split())
        part = expected[start : start + ntok].astype(np.uint64)
        assert total == int(part.sum(dtype=np.uint64))
        assert weighted == int((part * np.arange(1, ntok + 1, dtype=np.uint64)).sum(dtype=np.uint64))
        start += ntok
    assert start == MAX
    # the checks bite: a truncated shard, and a raw .bin shard with no header
    bad = tmp_path / "truncated.bin"
    bad.write_bytes(Path(paths[1]).read_bytes()[:-2])
    out = subprocess.run([llmc_check, str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and "file size is not as expected" in out.stderr
    out = subprocess.run([llmc_check, shard_paths(runs["bin"])[0]], capture_output=True, text=True)
    assert out.returncode == 1 and "Bad magic" in out.stderr


# --- modded-nanogpt: train_gpt.py _load_data_shard ---

def _load_data_shard(file):
    header = np.fromfile(file, dtype=np.int32, count=256)  # header is 256 int32
    assert header[0] == 20240520, "magic number mismatch in the data .bin file"
    assert header[1] == 1, "unsupported version"
    num_tokens = int(header[2])  # number of tokens (claimed)
    with open(file, "rb", buffering=0) as f:
        tokens = np.empty(num_tokens, dtype=np.uint16)
        f.seek(256 * 4)
        nbytes = f.readinto(tokens)
        assert nbytes == 2 * num_tokens, "number of tokens read does not match header"
    return tokens


def test_modded_nanogpt_load_data_shard(runs, expected):
    val = sorted(glob.glob(os.path.join(runs["llmc"], "edufineweb_val_*.bin")))
    train = sorted(glob.glob(os.path.join(runs["llmc"], "edufineweb_train_*.bin")))
    tokens = np.concatenate([_load_data_shard(f) for f in val + train]).astype(np.int64)
    assert np.array_equal(tokens, expected)
    assert tokens[0] == EOT  # BOS-aligned batches start at an end-of-text token: one leads every document
    bos_idx = np.flatnonzero(tokens == EOT)
    assert len(bos_idx) == sum(s.docs for s in Manifest.load(runs["llmc"]).shards)


# --- fineweb.py merge ---

def test_merge_writes_train_and_val_bin(runs, tmp_path):
    out = tmp_path / "nanogpt"
    assert cli.main(["merge", runs["npy"], "--out", str(out), "--quiet"]) == 0
    # no temporary files left behind; merge.json records what merge wrote (it never replaces another's train.bin)
    assert sorted(os.listdir(out)) == ["merge.json", "train.bin", "val.bin"]
    raw = {p: np.load(p).tobytes() for p in shard_paths(runs["npy"])}
    assert (out / "val.bin").read_bytes() == b"".join(raw[p] for p in shard_paths(runs["npy"], "val"))
    assert (out / "train.bin").read_bytes() == b"".join(raw[p] for p in shard_paths(runs["npy"], "train"))
    # the default --out is the directory itself, which then still verifies
    d = tmp_path / "inplace"
    shutil.copytree(runs["llmc"], d)
    assert cli.main(["merge", str(d), "--quiet"]) == 0
    assert (d / "train.bin").read_bytes() == (out / "train.bin").read_bytes()
    assert verify(str(d))[0] == []


def same_output(a, b):
    """Byte-identical shards, and manifests equal but for the run time."""
    ma, mb = Manifest.load(a).to_json(), Manifest.load(b).to_json()
    ma.pop("seconds", None), mb.pop("seconds", None)
    assert ma == mb
    for s in ma["shards"]:
        assert Path(a, s["file"]).read_bytes() == Path(b, s["file"]).read_bytes(), s["file"]


def test_convert_round_trip_equals_direct_runs(runs, tmp_path):
    d = str(tmp_path / "conv")
    assert cli.main(["merge", runs["bin"], "--out", d, "--format", "llmc", "--quiet"]) == 0
    same_output(d, runs["llmc"])
    assert verify(d)[0] == []
    assert cli.main(["merge", d, "--format", "npy", "--quiet"]) == 0  # in place
    same_output(d, runs["npy"])
    assert sorted(os.listdir(d)) == sorted(os.listdir(runs["npy"]))  # the .bin files are gone
    assert verify(d)[0] == []
    assert cli.main(["verify", d]) == 0
    assert cli.main(["merge", d, "--format", "bin", "--quiet"]) == 0
    same_output(d, runs["bin"])


def test_interrupted_in_place_conversion_finishes_on_rerun(runs, tmp_path):
    d = tmp_path / "half"
    shutil.copytree(runs["bin"], d)
    name = Manifest.load(runs["bin"]).shards[1].file
    shutil.copy(os.path.join(runs["llmc"], name), d / name)  # killed after converting one shard
    assert cli.main(["merge", str(d), "--format", "llmc", "--quiet"]) == 0
    same_output(str(d), runs["llmc"])


def test_merge_refuses_corrupt_shards_and_bad_arguments(runs, tmp_path, capsys):
    d = tmp_path / "corrupt"
    shutil.copytree(runs["bin"], d)
    shard = Path(shard_paths(str(d), "train")[2])
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["npy"], unfinished)
    m = Manifest.load(str(unfinished))
    m.complete = False
    m.save()
    cases = [
        (["merge", str(d), "--out", str(tmp_path / "o1")], "sha256 differs"),
        (["merge", str(unfinished)], "unfinished run"),
        (["merge", str(d), "--format", "npy"], "sha256 differs"),
        (["merge", str(tmp_path / "nope")], "no such directory"),
        (["merge", str(tmp_path)], "no manifest.json"),
        (["merge", runs["bin"], "--format", "parquet"], "choose one of bin, npy, llmc"),
        (["merge", runs["bin"], "--out", runs["npy"], "--format", "llmc"], "already holds a manifest.json"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("fineweb.py: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o1" / "train.bin").exists()
    assert not glob.glob(str(tmp_path / "o1" / ".*.tmp")) and not glob.glob(str(d / ".*.tmp"))
    assert Manifest.load(str(d)).settings["format"] == "bin"


# --- fineweb.py inspect ---

def test_inspect_shows_first_documents(runs, docs, capsys):
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    assert cli.main(["inspect", runs["llmc"], "--docs", "2", "--chars", "60"]) == 0
    out = capsys.readouterr().out
    assert "6 shards (llmc, uint16), 290,000 tokens" in out
    assert "tokenizer: gpt2, shard size 50,000" in out
    assert "document boundary: eot-before: [50256] + text (documents counted by id 50256)" in out
    assert "ids: [50256, " in out  # each document's first ids, its end-of-text first
    for i in range(2):
        assert f"document {i + 1}: {len(enc.encode_ordinary(docs[i])):,} tokens" in out
        assert docs[i][:60] in out
    assert docs[0][:61] not in out  # cut at --chars
    # a later shard starts inside a document
    assert cli.main(["inspect", runs["npy"], "--shard", "2", "--docs", "1"]) == 0
    assert "continued from the previous shard" in capsys.readouterr().out
    assert cli.main(["inspect", runs["npy"], "--shard", "9"]) == 1
