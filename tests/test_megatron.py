"""--format megatron: Megatron-LM's indexed dataset (.bin + .idx per shard), issue 13 item 1.

The shards are read back two ways: by megatron-core's own IndexedDataset (needs torch; skipped with
the reason where it is not installed: `pip install "torch==2.13.0+cpu" megatron-core` gives both on
a CPU machine), and by this file's reading of the .idx layout, so the format is checked either way.
Every document must come back as one sequence equal to the reference encoding with the policy's ids.
"""
import json
import struct

import numpy as np
import pytest

from conftest import needs_data, real_texts, run_cli
from test_boundaries import gpt2_reference, jsonl_files, llama_reference, ok, one_line_error
from test_resume import run_killed_at, run_ok

try:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    WHY_NOT = None
except Exception as e:  # ImportError, or torch missing underneath
    IndexedDataset, WHY_NOT = None, f"megatron-core not importable ({type(e).__name__}: {e}); pip install " \
                                    '"torch==2.13.0+cpu" megatron-core to run it'


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    texts = real_texts()[:200]
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path, texts


def read_index(idx):
    """(dtype code, sequence lengths, pointers, document indices) of a .idx, read by its documented layout."""
    raw = idx.read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", raw[9:17]) == (1,)
    code, n, ndocs = raw[17], *struct.unpack("<QQ", raw[18:34])
    lengths = np.frombuffer(raw, "<i4", n, 34)
    pointers = np.frombuffer(raw, "<i8", n, 34 + 4 * n)
    doc_idx = np.frombuffer(raw, "<i8", ndocs, 34 + 12 * n)
    assert len(raw) == 34 + 12 * n + 8 * ndocs
    return code, lengths, pointers, doc_idx


def sequences(out):
    """Every shard's sequences as lists, read through the .idx layout; and the manifest."""
    m = json.loads((out / "manifest.json").read_text())
    seqs, dtype = [], np.dtype(m["settings"]["dtype"])
    for s in m["shards"]:
        code, lengths, pointers, doc_idx = read_index(out / (s["file"][:-4] + ".idx"))
        assert code == {np.dtype("<u2"): 8, np.dtype("<i4"): 4}[dtype]
        assert doc_idx.tolist() == list(range(len(lengths) + 1))  # each document one sequence
        tokens = np.fromfile(out / s["file"], dtype=dtype)
        assert pointers.tolist() == (np.cumsum(np.r_[0, lengths[:-1]]) * dtype.itemsize).tolist()
        assert int(lengths.sum()) == len(tokens) == s["tokens"]
        seqs.append([tokens[p // dtype.itemsize : p // dtype.itemsize + n].tolist() for p, n in zip(pointers, lengths)])
    return seqs, m


def run_megatron(path, out, *flags, shard_size="20K", **kw):
    return ok(run_cli("--input", path, "--local-dir", out, "--format", "megatron", "--shard-size", shard_size, *flags, **kw))


@needs_data
@pytest.mark.parametrize("tokenizer", ["gpt2", "llama"])
def test_every_document_is_one_sequence_and_shards_hold_whole_documents(tmp_path, docs, llama_dir, tokenizer):
    path, texts = docs
    out = tmp_path / "out"
    if tokenizer == "gpt2":
        run_megatron(path, out, "--nprocs", 2)
        want, dtype = gpt2_reference(texts, "eot-before"), "<u2"
    else:
        run_megatron(path, out, "--nprocs", 2, "--tokenizer", llama_dir / "tokenizer.json")
        want, dtype = llama_reference(llama_dir, texts, "bos-eos"), "<i4"  # Megatron: int32 at >= 65,500 ids
    seqs, m = sequences(out)
    assert [d for shard in seqs for d in shard] == want
    assert m["settings"]["dtype"] == dtype
    sizes = [s["tokens"] for s in m["shards"]]
    assert len(sizes) >= 3 and all(n >= 20_000 for n in sizes[:-1])
    # cut at the first document start at or after 20K tokens: without its last document a shard is short
    assert all(n - len(shard[-1]) < 20_000 for n, shard in zip(sizes[:-1], seqs[:-1]))
    assert [s["docs"] for s in m["shards"]] == [len(x) for x in seqs]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", ".fineweb.lock"] + [f for s in m["shards"] for f in (s["file"], s["file"][:-4] + ".idx")])
    assert ok(run_cli("verify", out)).stdout.strip().endswith("OK: every shard matches the manifest")


@needs_data
@pytest.mark.skipif(IndexedDataset is None, reason=WHY_NOT or "")
@pytest.mark.parametrize("policy", ["bos-eos", "eos-after"])
def test_megatron_cores_indexed_dataset_reads_every_document(tmp_path, docs, llama_dir, policy):
    path, texts = docs
    out = tmp_path / "out"
    run_megatron(path, out, "--tokenizer", llama_dir / "tokenizer.json", "--doc-boundary", policy)
    m = json.loads((out / "manifest.json").read_text())
    got = []
    for s in m["shards"]:
        ds = IndexedDataset(str(out / s["file"][:-4]))  # the --data-path prefix Megatron-LM is given
        assert len(ds) == s["docs"] and ds.document_indices.tolist() == list(range(len(ds) + 1))
        got += [ds[i].tolist() for i in range(len(ds))]
    assert got == llama_reference(llama_dir, texts, policy)


@needs_data
@pytest.mark.parametrize("crash", ["shard_partial:1", "idx_renamed:1", "shard_renamed:1", "manifest_tmp:2",
                                   "final_manifest_tmp"])
def test_a_kill_at_any_point_then_the_same_command_gives_the_same_files(tmp_path, docs, crash):
    path, _ = docs
    args = ["--input", path, "--format", "megatron", "--shard-size", "20K", "--doc-boundary", "eos-after", "--nprocs", 1]
    ref, out = tmp_path / "ref", tmp_path / "out"
    run_ok(args + ["--local-dir", ref], tmp_path / "logs")
    run_killed_at(args + ["--local-dir", out], tmp_path / "logs", crash)
    after = run_cli("verify", out).stdout  # incomplete, perhaps a leftover: but no recorded shard is wrong
    assert "corrupt" not in after and "truncated" not in after and "missing" not in after, after
    run_ok(args + ["--local-dir", out], tmp_path / "logs")
    names = sorted(p.name for p in ref.iterdir() if p.suffix in (".bin", ".idx"))
    assert names == sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".idx"))
    for n in names:
        assert (ref / n).read_bytes() == (out / n).read_bytes(), n
    a, b = (json.loads((d / "manifest.json").read_text())["shards"] for d in (ref, out))
    assert a == b
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@needs_data
def test_ranks_and_assemble_cut_the_same_whole_document_shards(tmp_path, llama_dir):
    """Each rank tokenizes its files into parts; assemble finds where documents begin and cuts the
    one-machine shards, .idx files and manifest entries, byte for byte."""
    texts = real_texts()[:150]
    files = jsonl_files(tmp_path, texts, 3)
    common = ["--input", *files, "--format", "megatron", "--shard-size", "15K", "--prefix", "p",
              "--tokenizer", llama_dir / "tokenizer.json", "--doc-boundary", "eos-after"]
    ok(run_cli(*common, "--local-dir", tmp_path / "one", "--nprocs", 1))
    for rank in range(2):
        ok(run_cli(*common, "--local-dir", tmp_path / "many", "--nprocs", 1, "--rank", rank, "--world-size", 2))
    ok(run_cli("assemble", tmp_path / "many", "--nprocs", 2))
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "many"))
    assert a["shards"] == b["shards"] and len(a["shards"]) >= 3
    for s in a["shards"]:
        for f in (s["file"], s["file"][:-4] + ".idx"):
            assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "many" / f).read_bytes(), f
    seqs, _ = sequences(tmp_path / "many")
    assert [d for shard in seqs for d in shard] == llama_reference(llama_dir, texts, "eos-after")
    assert ok(run_cli("verify", tmp_path / "many")).stdout.strip().endswith("OK: every shard matches the manifest")


@needs_data
def test_a_damaged_index_is_found_and_redone(tmp_path, docs):
    path, _ = docs
    out = tmp_path / "out"
    run_megatron(path, out)
    m = json.loads((out / "manifest.json").read_text())
    idx = out / (m["shards"][1]["file"][:-4] + ".idx")
    good = idx.read_bytes()
    raw = bytearray(good)
    raw[40] ^= 1  # a sequence length
    idx.write_bytes(bytes(raw))
    r = run_cli("verify", out)
    assert r.returncode == 1 and f"corrupt: {idx.name}" in r.stdout, r.stdout
    idx.unlink()
    assert f"missing: {idx.name}" in run_cli("verify", out).stdout
    r = run_megatron(path, out)  # the rerun checks every shard's pair and redoes from the first bad one
    assert f"missing: {idx.name}" in r.stderr and "redoing from shard 1" in r.stderr
    assert idx.read_bytes() == good


@needs_data
def test_what_megatron_shards_cannot_do_is_refused_in_one_line(tmp_path, docs):
    path, _ = docs
    meg, binary = tmp_path / "meg", tmp_path / "bin"
    run_megatron(path, meg, "--max-tokens", "30K")
    ok(run_cli("--input", path, "--local-dir", binary, "--shard-size", "20K", "--max-tokens", "30K"))
    one_line_error(run_cli("merge", binary, "--format", "megatron"), "cannot be converted to megatron")
    one_line_error(run_cli("merge", meg, "--format", "bin"), "megatron shards cannot be converted to bin")
    # a uint16 megatron run still merges into nanoGPT's train.bin / val.bin
    ok(run_cli("merge", meg, "--out", tmp_path / "nano"))
    seqs, _ = sequences(meg)
    val = np.fromfile(tmp_path / "nano" / "val.bin", dtype="<u2")
    assert val.tolist() == [t for d in seqs[0] for t in d]
