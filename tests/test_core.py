"""The core contract: exact token streams, file bytes, names, formats, and one-line errors."""
import gzip
import hashlib
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import zstandard

from conftest import FINEWEB_EDU, PARQUETS, needs_data, real_texts, run_cli
from tokshards.cli import main, parse_size
from tokshards.errors import UserError

ENC = tiktoken.get_encoding("gpt2")
EOT = ENC.eot_token


def expected_stream(texts):
    """The contract: for each document, <|endoftext|> then encode_ordinary(text)."""
    out = []
    for t in texts:
        out.append(EOT)
        out.extend(ENC.encode_ordinary(t))
    return np.array(out, dtype=np.uint16)


def build_nanogpt(texts, shard_size, out_dir):
    """karpathy/build-nanogpt fineweb.py's algorithm, verbatim in logic, on a list of texts."""
    def tokenize(doc):
        tokens = [EOT]
        tokens.extend(ENC.encode_ordinary(doc["text"]))
        tokens_np = np.array(tokens)
        assert (0 <= tokens_np).all() and (tokens_np < 2**16).all()
        return tokens_np.astype(np.uint16)

    shard_index, token_count = 0, 0
    all_tokens_np = np.empty((shard_size,), dtype=np.uint16)
    for tokens in map(tokenize, ({"text": t} for t in texts)):
        if token_count + len(tokens) < shard_size:
            all_tokens_np[token_count : token_count + len(tokens)] = tokens
            token_count += len(tokens)
        else:
            split = "val" if shard_index == 0 else "train"
            filename = os.path.join(out_dir, f"edufineweb_{split}_{shard_index:06d}")
            remainder = shard_size - token_count
            all_tokens_np[token_count : token_count + remainder] = tokens[:remainder]
            np.save(filename, all_tokens_np)
            shard_index += 1
            all_tokens_np[0 : len(tokens) - remainder] = tokens[remainder:]
            token_count = len(tokens) - remainder
    if token_count != 0:
        split = "val" if shard_index == 0 else "train"
        np.save(os.path.join(out_dir, f"edufineweb_{split}_{shard_index:06d}"), all_tokens_np[:token_count])


def shard_files(d):
    """Shard file names in stream order (by index: val_000000 comes before train_000001)."""
    names = [f for f in os.listdir(d) if f.endswith((".bin", ".npy"))]
    return sorted(names, key=lambda f: f.rsplit("_", 1)[1])


def read_stream(d, fmt, dtype=np.uint16):
    parts = []
    for f in shard_files(d):
        p = os.path.join(d, f)
        if fmt == "npy":
            parts.append(np.load(p))
        elif fmt == "llmc":
            parts.append(np.fromfile(p, dtype=dtype, offset=1024))
        else:
            parts.append(np.fromfile(p, dtype=dtype))
    return np.concatenate(parts)


@needs_data
def test_npy_is_byte_identical_to_build_nanogpt(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    build_nanogpt(real_texts(), 100_000, ref)
    out = tmp_path / "out"
    r = run_cli("--input", *PARQUETS, "--format", "npy", "--shard-size", "100K", "--prefix", "edufineweb",
                "--local-dir", out, "--nprocs", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert shard_files(out) == shard_files(ref)
    assert len(shard_files(out)) == 36  # 3,508,382 tokens -> 35 full shards + a short last one
    for f in shard_files(ref):
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and sum(s["tokens"] for s in m["shards"]) == 3_508_382
    assert sum(s["docs"] for s in m["shards"]) == 2454


@needs_data
@pytest.mark.parametrize("fmt", ["bin", "llmc"])
def test_bin_and_llmc_hold_the_same_stream(tmp_path, fmt):
    out = tmp_path / fmt
    assert main(["--input", str(PARQUETS[0]), "--format", fmt, "--shard-size", "300K",
                 "--local-dir", str(out), "--nprocs", "0", "--quiet"]) == 0
    texts = pq.read_table(PARQUETS[0], columns=["text"]).column(0).to_pylist()
    want = expected_stream(texts)
    assert np.array_equal(read_stream(out, fmt), want)
    names = shard_files(out)
    assert names[0] == "000_00000_val_000000.bin" and names[1] == "000_00000_train_000001.bin"
    for name in names:
        raw = (out / name).read_bytes()
        if fmt == "llmc":
            header = np.frombuffer(raw[:1024], dtype="<i4")
            assert list(header[:3]) == [20240520, 1, (len(raw) - 1024) // 2]
            assert not header[3:].any() and len(raw) == 1024 + 2 * header[2]
        else:
            assert len(raw) % 2 == 0


@needs_data
def test_no_workers_no_reading_in_the_last_line(tmp_path, capsys):
    """--nprocs 0 reads and tokenizes in the main process: the last line claims no workers' reading."""
    assert main(["--input", str(PARQUETS[0]), "--local-dir", str(tmp_path / "o"), "--nprocs", "0"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    cpu = re.search(r"^done: .*; CPU: (.*, workers [\d.]+ s)\); check with", line)
    assert cpu and "reading" not in cpu.group(1), line


@needs_data
def test_local_hub_layout_goes_through_datasets_and_matches_input(tmp_path):
    """--dataset DIR (README with configs:) streams with `datasets`; same bytes as --input of its files."""
    r = run_cli("--dataset", FINEWEB_EDU, "--remote", "10BT", "--shard-size", "1M", "--nprocs", "1",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hub = tmp_path / "edu_fineweb10B"
    assert shard_files(hub) == ["edufineweb_val_000000.bin", "edufineweb_train_000001.bin",
                               "edufineweb_train_000002.bin", "edufineweb_train_000003.bin"]
    assert "done: 3,508,382 tokens, 2,454 documents, 4 shards" in r.stdout
    # the worker's CPU, and of it what its threads spent reading the row groups
    cpu = re.search(r"workers ([\d.]+) s \(of it, reading ([\d.]+) s, in threads\)\); check with", r.stdout)
    assert cpu and float(cpu.group(2)) <= float(cpu.group(1)), r.stdout
    local = tmp_path / "local"
    r = run_cli("--input", *PARQUETS, "--shard-size", "1M", "--prefix", "edufineweb", "--local-dir", local,
                "--quiet")
    assert r.returncode == 0, r.stderr
    for f in shard_files(hub):
        assert (hub / f).read_bytes() == (local / f).read_bytes()


@needs_data
def test_text_jsonl_gz_zst_give_the_parquet_stream(tmp_path):
    texts = real_texts()[:300]
    want = expected_stream(texts)
    (tmp_path / "docs.txt").write_text("\n\n".join(texts) + "\n")
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)).encode()
    (tmp_path / "docs.jsonl").write_bytes(lines)
    (tmp_path / "docs.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    for name in ("docs.txt", "docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst"):
        out = tmp_path / ("out_" + name)
        assert main(["--input", str(tmp_path / name), "--local-dir", str(out), "--nprocs", "0", "--quiet"]) == 0
        assert np.array_equal(read_stream(out, "bin"), want), name


@needs_data
def test_train_fineweb_txt_matches_the_parquet_documents(tmp_path):
    out = tmp_path / "txt"
    r = run_cli("--input", FINEWEB_EDU.parent / "train_fineweb.txt", "--local-dir", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(read_stream(out, "bin"), expected_stream(real_texts()))


def test_inputs_read_in_given_order_and_directories_sorted(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "b.txt").write_text("second\n\nthird")
    (d / "a.txt").write_text("first")
    (tmp_path / "z.jsonl").write_text(json.dumps({"text": "zero"}) + "\n")
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "z.jsonl"), str(d), "--local-dir", str(out), "--nprocs", "0",
                 "--quiet"]) == 0
    assert list(read_stream(out, "bin")) == list(expected_stream(["zero", "first", "second", "third"]))


def test_doc_separator_flag(tmp_path):
    (tmp_path / "c.txt").write_text("one<|endoftext|>two words<|endoftext|>\n\nthree\n")
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "c.txt"), "--doc-separator", "<|endoftext|>", "--local-dir", str(out),
                 "--nprocs", "0", "--quiet"]) == 0
    assert list(read_stream(out, "bin")) == list(expected_stream(["one", "two words", "three"]))


def test_literal_endoftext_in_text_is_plain_text(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "a <|endoftext|> b"}) + "\n")
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "d.jsonl"), "--local-dir", str(out), "--nprocs", "0", "--quiet"]) == 0
    stream = list(read_stream(out, "bin"))
    assert stream == [EOT] + ENC.encode_ordinary("a <|endoftext|> b") and stream.count(EOT) == 1


def test_max_tokens_stops_exactly(tmp_path):
    (tmp_path / "t.txt").write_text("\n\n".join(f"document number {i} " * 20 for i in range(200)))
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "t.txt"), "--max-tokens", "1234", "--shard-size", "500",
                 "--local-dir", str(out), "--nprocs", "0", "--quiet"]) == 0
    assert [os.path.getsize(out / f) for f in shard_files(out)] == [1000, 1000, 468]
    texts = [f"document number {i} " * 20 for i in range(200)]
    assert np.array_equal(read_stream(out, "bin"), expected_stream(texts)[:1234])


def test_nprocs_2_equals_in_process(tmp_path):
    text = "\n\n".join(f"Doc {i}: " + "naïve café – 漢字 emoji 🎉 " * (i % 17 + 1) for i in range(3000))
    (tmp_path / "t.txt").write_text(text)
    outs = []
    for n in ("0", "2"):
        out = tmp_path / f"n{n}"
        assert main(["--input", str(tmp_path / "t.txt"), "--shard-size", "20K", "--local-dir", str(out),
                     "--nprocs", n, "--quiet"]) == 0
        outs.append({f: (out / f).read_bytes() for f in shard_files(out)})
    assert outs[0] == outs[1] and len(outs[0]) > 3


def test_config_preset_and_flags_win(tmp_path):
    (tmp_path / "t.txt").write_text("alpha\n\nbeta\n\ngamma")
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'input = ["{tmp_path / "t.txt"}"]\nformat = "npy"\nshard_size = "1e3"\nprefix = "x"\n')
    out = tmp_path / "out"
    assert main(["--config", str(cfg), "--format", "llmc", "--local-dir", str(out), "--nprocs", "0", "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["settings"]["format"] == "llmc" and m["settings"]["shard_size"] == 1000
    assert shard_files(out) == ["x_val_000000.bin"]


def test_parse_size():
    assert parse_size("100M") == parse_size("1e8") == parse_size("100000000") == 100_000_000
    assert parse_size("1.5B") == 1_500_000_000 and parse_size("500K") == 500_000 and parse_size(42) == 42
    for bad in ("ten", "0", "1.5", "-3M"):
        with pytest.raises(UserError):
            parse_size(bad)


def one_line_error(r, *needles):
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("fineweb.py: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_user_errors_are_one_line_and_leave_no_shards(tmp_path):
    (tmp_path / "ok.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "good.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    table = pa.table({"content": ["a", "b"]})
    pq.write_table(table, tmp_path / "p.parquet")
    (tmp_path / "bad.txt").write_bytes(b"fine\n\n\xff\xfe broken")
    (tmp_path / "bad.toml").write_text("nosuch = 1\n")
    cases = [
        (["--remote", "20BT"], ["unknown --remote '20BT'", "10BT, 100BT, 350BT", "CC-MAIN-2024-10"]),
        (["--input", tmp_path / "missing.txt"], ["no such file"]),
        (["--input", tmp_path / "ok.jsonl"], ["no field 'text'", "body", "--text-column"]),
        (["--input", tmp_path / "p.parquet"], ["no column 'text'", "content", "--text-column"]),
        (["--input", tmp_path / "bad.txt"], ["invalid UTF-8 at byte 6"]),
        (["--input", tmp_path / "good.jsonl", "--shard-size", "lots"], ["not a size"]),
        (["--input", tmp_path / "good.jsonl", "--tokenizer", "nope"], ["unknown tokenizer 'nope'"]),
        (["--config", tmp_path / "bad.toml"], ["unknown setting 'nosuch'"]),
        (["--config", tmp_path / "nofile.toml"], ["no such file"]),
    ]
    for i, (args, needles) in enumerate(cases):
        out = tmp_path / f"out{i}"
        r = run_cli(*args, "--local-dir", out, "--nprocs", "0")
        one_line_error(r, *needles)
        assert not out.exists() or not shard_files(out), args


@pytest.mark.parametrize("cached", ["none", "damaged"])
def test_a_vocabulary_that_cannot_be_read_is_one_line(tmp_path, cached):
    """gpt2's files neither in tiktoken's cache nor downloadable (a proxy on a closed loopback port: no
    traffic leaves the machine), or in it damaged (tiktoken checks their sha256 and downloads again)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    if cached == "damaged":  # named as tiktoken names its cache entries: the sha1 of the address
        for name in ("encoder.json", "vocab.bpe"):
            url = f"https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{name}"
            (cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"damaged")
    (tmp_path / "t.txt").write_text("hello")
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
    r = run_cli("--input", tmp_path / "t.txt", "--local-dir", tmp_path / "o", "--nprocs", "0", env=env)
    one_line_error(r, "could not load tiktoken encoding 'gpt2'", "set TIKTOKEN_CACHE_DIR")
    assert not (tmp_path / "o").exists()


def test_help_documents_every_flag():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--remote", "--dataset", "--input", "--text-column", "--doc-separator", "--local-dir", "--prefix",
                 "--shard-size", "--format", "--tokenizer", "--nprocs", "--max-tokens", "--revision", "--config",
                 "--quiet", "--overwrite", "--eot-token", "--retries", "--retry-time", "--no-disk-check"):
        assert flag in r.stdout, flag


def test_large_vocab_tokenizer_json_switches_to_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["[UNK]"] = 70_000
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    (tmp_path / "t.txt").write_text("w1 w69999 w65536\n\nw7 <|endoftext|>")
    for fmt in ("bin", "llmc"):
        out = tmp_path / fmt
        assert main(["--input", str(tmp_path / "t.txt"), "--tokenizer", str(path), "--format", fmt,
                     "--local-dir", str(out), "--nprocs", "0", "--quiet"]) == 0
        eot = 70_001
        got = read_stream(out, fmt, dtype="<u4")
        # the literal "<|endoftext|>" inside the text stays text ([UNK] pieces), never the delimiter
        assert list(got[:4]) == [eot, 1, 69999, 65536] and list(got).count(eot) == 2
        m = json.loads((out / "manifest.json").read_text())
        assert m["settings"]["dtype"] == "<u4"
        if fmt == "llmc":
            header = np.fromfile(out / shard_files(out)[0], dtype="<i4", count=3)
            assert list(header) == [20240801, 7, len(got)]


def test_remote_names_map_to_configs_and_directories():
    from tokshards.hub import naming

    edu, fw = "HuggingFaceFW/fineweb-edu", "HuggingFaceFW/fineweb"
    assert naming(edu, "10BT") == naming(edu, "sample-10BT") == ("sample-10BT", "edufineweb", "edu_fineweb10B")
    assert naming(edu, "100BT") == ("sample-100BT", "edufineweb", "edu_fineweb100B")
    assert naming(edu, "sample-350BT") == ("sample-350BT", "edufineweb", "edu_fineweb350B")
    assert naming(edu, "default") == ("default", "edufineweb", "edu_fineweb_default")
    assert naming(edu, "CC-MAIN-2024-10") == ("CC-MAIN-2024-10", "edufineweb", "edu_fineweb_CC-MAIN-2024-10")
    assert naming(fw, "10BT") == ("sample-10BT", "fineweb", "fineweb10B")
    assert naming("someone/My.Data", "en") == ("en", "my_data", "my_data_en")
    for bad in ("20BT", "CC-MAIN-24-10", "sample-10B"):
        with pytest.raises(UserError, match="valid: 10BT, 100BT, 350BT"):
            naming(edu, bad)


@needs_data
def test_row_groups_read_by_workers_or_by_the_parent_give_the_same_bytes(tmp_path, monkeypatch):
    """Small row groups are tokenized by a worker that reads them itself; huge ones are read by the
    parent in batches. Several row groups per file, a shard boundary inside many of them."""
    from tokshards import sources

    table = pq.read_table(PARQUETS[0])
    pq.write_table(table, tmp_path / "rg.parquet", row_group_size=100)
    outs = {}
    for name, limit in (("task", sources.TASK_BYTES), ("parent", 0)):
        monkeypatch.setattr(sources, "TASK_BYTES", limit)
        out = tmp_path / name
        assert main(["--input", str(tmp_path / "rg.parquet"), "--shard-size", "70K", "--local-dir", str(out),
                     "--nprocs", "0", "--quiet"]) == 0
        m = json.loads((out / "manifest.json").read_text())
        outs[name] = ({f: (out / f).read_bytes() for f in shard_files(out)},
                      [s["token_count_sum"] for s in m["shards"]])
    assert outs["task"] == outs["parent"]
    texts = table.column("text").to_pylist()
    assert np.array_equal(read_stream(tmp_path / "task", "bin"), expected_stream(texts))
    assert sum(outs["task"][1]) == sum(table.column("token_count").to_pylist())
