"""Trust: the tool never deletes what it did not write, never hands out wrong tokens, refuses
mistakes in one line at start, and checks what is on disk before it calls a run done.

One test (or more) per numbered item of the two trust issues; each fails on the code before them.
"""
import fcntl
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import PARQUETS, REPO, SHARED, needs_data, real_texts, run_cli

TXT = SHARED / "data" / "train_fineweb.txt"


def one_line_error(r, *needles):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("fineweb.py: error: "), r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def snapshot(d):
    """Every file under d with its bytes and modification time (but the lock file's, which is no data)."""
    d = Path(d)
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".fineweb.lock"}


def shards_of(d):
    m = json.loads((Path(d) / "manifest.json").read_text())
    return [s["file"] for s in m["shards"]]


def tokens_of(d):
    """The token stream of an output directory in whatever format its manifest says."""
    from tokshards.formats import open_tokens

    m = json.loads((Path(d) / "manifest.json").read_text())
    st = m["settings"]
    return np.concatenate([np.asarray(open_tokens(Path(d) / s["file"], st["format"], st["dtype"]))
                           for s in m["shards"]])


def stream_of(d):
    """The token stream of an output directory (bin format), shard after shard."""
    return np.concatenate([np.fromfile(Path(d) / f, dtype=np.uint16) for f in shards_of(d)])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small plain-text input (~200 real documents) and its reference output, 20K-token shards."""
    d = tmp_path_factory.mktemp("small")
    text = "\n\n".join(real_texts()[:200]) if PARQUETS else "\n\n".join(f"document {i} " * 50 for i in range(400))
    (d / "small.txt").write_text(text, encoding="utf-8")
    r = run_cli("--input", d / "small.txt", "--local-dir", d / "ref", "--shard-size", "20K", "--nprocs", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    return d


def run_small(small, out, *extra):
    return run_cli("--input", small / "small.txt", "--local-dir", out, "--shard-size", "20K", "--nprocs", "0", *extra)


def same_as_ref(small, out):
    ref = small / "ref"
    assert shards_of(out) == shards_of(ref)
    for f in shards_of(ref):
        assert (Path(out) / f).read_bytes() == (ref / f).read_bytes(), f


# ------------------------------------------------------------------ 16.1 someone else's shards


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_foreign_build_nanogpt_shards_survive(tmp_path, small, extra):
    d = tmp_path / "edu_fineweb10B"
    d.mkdir()
    for i in range(3):  # what build-nanogpt's fineweb.py writes there
        np.save(d / f"edufineweb_{'val' if i == 0 else 'train'}_{i:06d}", np.arange(1000, dtype=np.uint16) + i)
    (d / "notes.txt").write_text("mine")
    before = snapshot(d)
    r = run_cli("--input", small / "small.txt", "--local-dir", d, "--prefix", "edufineweb", "--nprocs", "0", *extra)
    one_line_error(r, "did not write", "edufineweb_train_000001.npy", "--local-dir")
    assert snapshot(d) == before


def test_a_run_beside_other_files_touches_only_its_own(tmp_path, small):
    d = tmp_path / "shared_dir"
    d.mkdir()
    (d / "other_train_000001.bin").write_bytes(b"x" * 100)  # shards of another prefix: no collision
    (d / ".notes.tmp").write_text("a user's temporary file")
    (d / "train.bin").write_bytes(b"y" * 10)
    r = run_small(small, d)
    assert r.returncode == 0, r.stderr
    r = run_small(small, d, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (d / "other_train_000001.bin").read_bytes() == b"x" * 100
    assert (d / ".notes.tmp").read_text() == "a user's temporary file"
    assert (d / "train.bin").read_bytes() == b"y" * 10
    same_as_ref(small, d)


# ------------------------------------------------------------------ 16.2 interrupted in-place conversion

MERGE_DRIVER = r"""
import os, signal, sys, runpy
what, n = os.environ["KILL_AT"].split(":")
n, count = int(n), [0]
real_replace, real_unlink = os.replace, os.unlink
def replace(src, dst, *a, **k):
    r = real_replace(src, dst, *a, **k)
    if what == "rename" and not os.path.basename(str(dst)).startswith(("manifest", ".")):
        count[0] += 1
        if count[0] == n:  # the shard is in place in its new format; the manifest does not say so yet
            os.kill(os.getpid(), signal.SIGKILL)
    return r
def unlink(path, *a, **k):
    if what == "unlink" and not os.path.basename(str(path)).startswith("."):
        count[0] += 1
        if count[0] == n:  # the manifest lists the new file; the old one is not gone yet
            os.kill(os.getpid(), signal.SIGKILL)
    return real_unlink(path, *a, **k)
os.replace, os.unlink = replace, unlink
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("to,at", [("llmc", "rename"), ("npy", "rename"), ("npy", "unlink")])
def test_killed_in_place_merge_never_gives_wrong_tokens(tmp_path, small, to, at):
    from tokshards.loader import ShardLoader

    d = tmp_path / "run"
    shutil.copytree(small / "ref", d)
    want = stream_of(small / "ref")
    n = len(shards_of(d))
    for k in (1, n // 2, n):
        env = dict(os.environ, KILL_AT=f"{at}:{k}")
        p = subprocess.run([sys.executable, "-c", MERGE_DRIVER, str(REPO / "fineweb.py"), "merge", str(d),
                            "--format", to], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == -signal.SIGKILL, p.stderr
        # what a training job would do now: refused, never the header as tokens
        with pytest.raises(ValueError, match="being converted"):
            ShardLoader(str(d), B=1, T=8, split="train")
        r = run_cli("verify", d)
        assert r.returncode == 1 and "converting:" in r.stdout, r.stdout
        # and rerunning the command that made the directory does not call it complete
        r = run_small(small, d)
        one_line_error(r, "being converted", f"merge {d} --format {to}")
        r = run_cli("merge", d, "--format", to)
        assert r.returncode == 0, r.stderr
        assert run_cli("verify", d).returncode == 0  # no old-format file left beside the new ones ("extra")
        assert sorted(f for f in os.listdir(d) if not f.startswith(".")) == sorted(shards_of(d) + ["manifest.json"])
        assert np.array_equal(tokens_of(d), want)
        assert ShardLoader(str(d), B=1, T=8, split="train").next_batch()[0].shape == (1, 8)
        r = run_cli("merge", d, "--format", "bin")  # and back, for the next kill point
        assert r.returncode == 0, r.stderr
        assert np.array_equal(stream_of(d), want)


def test_loader_refuses_a_shard_whose_size_the_manifest_does_not_give(tmp_path, small):
    from tokshards.loader import ShardLoader

    d = tmp_path / "run"
    shutil.copytree(small / "ref", d)
    name = shards_of(d)[1]
    with open(d / name, "ab") as f:
        f.write(b"\0" * 1024)
    with pytest.raises(ValueError, match=f"{name} is .* bytes, the manifest says"):
        ShardLoader(str(d), B=1, T=8, split="train")


# ------------------------------------------------------------------ 16.4 / 16.6 / 16.7 / 17.7 settings at start


def test_llmc_shard_size_over_int32_is_refused_at_start(tmp_path, small):
    out = tmp_path / "o"
    r = run_cli("--input", small / "small.txt", "--format", "llmc", "--shard-size", "3B", "--local-dir", out)
    one_line_error(r, "2**31", "--shard-size")
    assert not out.exists()


@pytest.mark.parametrize("args,needles", [
    (["--nprocs", "-1"], ["--nprocs -1", "0 or more"]),
    (["--check-every", "-1"], ["--check-every -1", "0 or more"]),
    (["--readers", "0"], ["--readers 0"]),
    (["--doc-separator", "\\x"], ["--doc-separator", "escape"]),
    (["--prefix", "a/b"], ["--prefix 'a/b'"]),
    (["--prefix", "../up"], ["--prefix '../up'"]),
    (["--eot-token", "<|nope|>"], ["--eot-token '<|nope|>'", "gpt2"]),
    (["--eot-token", "."], ["--eot-token '.' is not a special token of gpt2"]),
    (["--eot-token", ""], ["--eot-token '' is not a special token of gpt2"]),
    (["--local-dir", "nosuch://bucket/x"], ["nosuch://bucket/x: writing there needs conditional writes", "s3://", "az://"]),
    (["--max-tokens", "0"], ["not a whole positive number"]),
    (["--shard-size", "1e400"], ["not a whole positive number"]),
    (["--max-tokens", "1e400"], ["not a whole positive number"]),
    (["--doc-separator", "\\ud800"], ["--doc-separator", "not valid text"]),
    (["--nprocs", "100000"], ["--nprocs 100000", "usable cores"]),
    (["--retry-time", "nan"], ["--retry-time nan"]),
])
def test_bad_settings_are_one_line_before_anything_is_written(tmp_path, small, args, needles):
    r = run_cli("--input", small / "small.txt", "--nprocs", "0", *args, cwd=tmp_path)
    one_line_error(r, *needles)
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)  # no s3: directory, no small_shards/


def test_local_dir_naming_a_file_is_one_line(tmp_path, small):
    f = tmp_path / "afile"
    f.write_text("keep me")
    one_line_error(run_small(small, f), "is a file, not a directory")
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("toml,needles", [
    ('nprocs = "two"', ["nprocs = 'two'", "a whole number"]),
    ("overwrite = true", ["'overwrite' cannot be set in a preset"]),
    ('overwrite = "false"', ["'overwrite' cannot be set in a preset"]),
    ("quiet = 1", ["quiet = 1", "true or false"]),
    ('format = "parquet"', ["format = 'parquet'", "bin, npy, llmc"]),
    ("shard_size = true", ["shard_size = True"]),
    ("input = [1, 2]", ["input = [1, 2]", "a list of strings"]),
])
def test_presets_are_type_checked(tmp_path, small, toml, needles):
    (tmp_path / "p.toml").write_text(toml + "\n")
    out = tmp_path / "o"
    shutil.copytree(small / "ref", out)
    before = snapshot(out)
    r = run_cli("--config", tmp_path / "p.toml", "--input", small / "small.txt", "--local-dir", out,
                "--shard-size", "20K", "--nprocs", "0")
    one_line_error(r, *needles)
    assert snapshot(out) == before


@pytest.mark.parametrize("line,needle", [
    ('{"text": 42}', "is int 42, not text"),
    ('{"text": false}', "is bool false, not text"),
    ('{"text": 0}', "is int 0, not text"),
    ('{"text": []}', "is list [], not text"),
    ('{"text": {}}', "is dict {}, not text"),
])
def test_jsonl_text_that_is_not_text_names_the_line(tmp_path, line, needle):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "fine"}\n' + line + "\n")
    r = run_cli("--input", f, "--nprocs", "0", "--local-dir", tmp_path / "o")
    one_line_error(r, str(f), "at byte 17", needle)


@needs_data
@pytest.mark.parametrize("kind", ["garbage.jsonl.zst", "garbage.jsonl.gz", "truncated.jsonl.gz"])
def test_damaged_compressed_input_is_one_line(tmp_path, kind):
    f = tmp_path / kind
    if kind.startswith("garbage"):
        f.write_bytes(os.urandom(5000))
    else:
        data = gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in real_texts()[:300]).encode())
        f.write_bytes(data[: len(data) // 2])
    for nprocs in ("0", "2"):
        r = run_cli("--input", f, "--nprocs", nprocs, "--local-dir", tmp_path / f"o{nprocs}")
        one_line_error(r, str(f), "cannot decompress")


@needs_data
@pytest.mark.parametrize("nprocs", ["0", "2"])
def test_parquet_with_flipped_bytes_is_named_as_corrupt_at_once(tmp_path, nprocs):
    f = tmp_path / "bad.parquet"
    data = bytearray(PARQUETS[0].read_bytes())
    for k in range(1000, len(data) // 2, 997):  # inside the data pages, not the footer
        data[k] ^= 0x5A
    f.write_bytes(bytes(data))
    t0 = time.monotonic()
    r = run_cli("--input", f, "--nprocs", nprocs, "--local-dir", tmp_path / "o")
    line = one_line_error(r, str(f), "corrupt")
    assert "network" not in line and time.monotonic() - t0 < 60


def test_read_only_output_directory_is_one_line(tmp_path, small):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare -rm (a user and mount namespace) for a read-only filesystem")
    ro = tmp_path / "ro"
    ro.mkdir()
    env = dict(os.environ)
    script = (f'mount -t tmpfs -o ro none "{ro}" && exec "{sys.executable}" "{REPO / "fineweb.py"}" '
              f'--input "{small / "small.txt"}" --nprocs 0 --local-dir "{ro / "out"}"')
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    one_line_error(r, str(ro / "out"), "Read-only file system", "another --local-dir")


@needs_data
def test_empty_input_is_one_line_and_writes_nothing(tmp_path):
    for name, content in (("empty.txt", ""), ("blank.txt", "\n\n\n\n"), ("empty.jsonl", "\n")):
        f = tmp_path / name
        f.write_text(content)
        out = tmp_path / f"o_{name}"
        r = run_cli("--input", f, "--nprocs", "0", "--local-dir", out)
        one_line_error(r, "no documents in the input", name)
        assert not out.exists()


# ------------------------------------------------------------------ 16.5 CRLF and CR line endings


@needs_data
def test_crlf_and_cr_text_give_the_documents_and_tokens_of_lf(tmp_path):
    lf = TXT.read_bytes()
    outs = {}
    for name, data in (("lf", lf), ("crlf", lf.replace(b"\n", b"\r\n")), ("cr", lf.replace(b"\n", b"\r"))):
        f = tmp_path / f"{name}.txt"
        f.write_bytes(data)
        out = tmp_path / f"out_{name}"
        r = run_cli("--input", f, "--local-dir", out, "--shard-size", "1M", "--prefix", "p", "--quiet")
        assert r.returncode == 0, r.stderr
        m = json.loads((out / "manifest.json").read_text())
        outs[name] = (sum(s["docs"] for s in m["shards"]), stream_of(out))
    assert outs["lf"][0] == 2454
    for name in ("crlf", "cr"):
        assert outs[name][0] == outs["lf"][0] and np.array_equal(outs[name][1], outs["lf"][1]), name


def test_a_giant_document_is_said_once(tmp_path):
    """One document over the giant size: a warning (it usually means a wrong --doc-separator), once."""
    f = tmp_path / "one.txt"
    line = b"word " * 2000 + b"\n"
    with open(f, "wb") as fh:
        for _ in range((33 << 20) // len(line) + 1):
            fh.write(line)
    r = run_cli("--input", f, "--local-dir", tmp_path / "o", "--shard-size", "2M", "--nprocs", "2")
    assert r.returncode == 0, r.stderr
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and "--doc-separator" in warnings[0] and "at byte 0" in warnings[0], r.stderr


# ------------------------------------------------------------------ 16.9 / 17.7 two at once: the lock


def hold_lock(d, holder="fineweb.py run on host elsewhere, pid 4242"):
    d.mkdir(parents=True, exist_ok=True)
    f = open(d / ".fineweb.lock", "a+")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.truncate(0)
    f.write(holder + "\n")
    f.flush()
    return f


def test_a_second_run_on_the_same_directory_is_refused_naming_the_holder(tmp_path, small):
    out = tmp_path / "o"
    shutil.copytree(small / "ref", out)
    before = snapshot(out)
    lock = hold_lock(out)
    try:
        for args in ([], ["--overwrite"]):
            r = run_small(small, out, *args)
            one_line_error(r, "is in use by fineweb.py run on host elsewhere, pid 4242")
        r = run_cli("merge", out, "--format", "npy")
        one_line_error(r, "is in use")
    finally:
        lock.close()
    assert snapshot(out) == before
    # the holder died (its lock went with it): the file it left is no obstacle
    r = run_small(small, out, "--overwrite")
    assert r.returncode == 0, r.stderr
    same_as_ref(small, out)


@needs_data
def test_two_real_runs_at_once_one_is_refused_and_the_other_finishes(tmp_path):
    out = tmp_path / "o"
    args = [sys.executable, str(REPO / "fineweb.py"), "--input", *map(str, PARQUETS), "--local-dir", str(out),
            "--shard-size", "200K", "--tokenizer-backend", "tiktoken", "--nprocs", "1"]
    a = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / ".fineweb.lock").exists() or not (out / ".fineweb.lock").read_text():
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.01)
    b = subprocess.run(args, capture_output=True, text=True, timeout=120)
    one_line_error(b, f"is in use by fineweb.py run on host {socket.gethostname()}, pid {a.pid}")
    _, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    assert run_cli("verify", out).returncode == 0


@needs_data
def test_two_assemblers_one_is_refused(tmp_path):
    out = tmp_path / "o"
    for rank in (0, 1):
        r = run_cli("--input", *PARQUETS, "--local-dir", out, "--shard-size", "500K", "--rank", rank,
                    "--world-size", 2, "--nprocs", "0")
        assert r.returncode == 0, r.stderr
    lock = hold_lock(out, f"fineweb.py assemble on host {socket.gethostname()}, pid 77")
    try:
        one_line_error(run_cli("assemble", out), "is in use by fineweb.py assemble", "pid 77")
        # a rank cannot start while an assembly holds the directory either
        r = run_cli("--input", *PARQUETS, "--local-dir", out, "--shard-size", "500K", "--rank", 0, "--world-size", 2)
        one_line_error(r, "is in use by fineweb.py assemble")
    finally:
        lock.close()
    assert run_cli("assemble", out).returncode == 0
    assert run_cli("verify", out).returncode == 0


@needs_data
def test_job_json_is_created_once_and_the_first_plan_wins(tmp_path):
    """Ranks that start together: exactly one creates parts/job.json (no rename race); a rank with
    other settings is refused against it."""
    from tokshards.storage import LocalFiles

    path = tmp_path / "job.json"
    results = [LocalFiles(tmp_path).create_once("job.json", f"writer {i}\n".encode()) for i in range(5)]
    assert results == [True, False, False, False, False] and path.read_text() == "writer 0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["job.json"]  # no temporary file left


def test_assembled_state_has_per_process_temp_names_and_used_markers_are_fsynced(tmp_path, monkeypatch):
    """Releasing a part: the .used marker is written and fsynced before its tokens are deleted."""
    from tokshards import outdir as O

    out = tmp_path / "o"
    (out / "parts").mkdir(parents=True)
    for suffix in (".tokens", ".counts", ".json"):
        (out / "parts" / f"000003{suffix}").write_bytes(b"x")
    events = []
    real_fsync, real_unlink = os.fsync, os.unlink
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "unlink", lambda p: (events.append(("unlink", os.path.basename(p))), real_unlink(p))[1])
    O.OutputDir(str(out)).release_part(3)
    assert "fsync" in events and ("unlink", "000003.tokens") in events
    assert events.index("fsync") < events.index(("unlink", "000003.tokens")), events
    assert (out / "parts" / "000003.json.used").exists() and (out / "parts" / "000003.json").exists()


# ------------------------------------------------------------------ 16.9 / 13 the tokenizer by content


def test_a_changed_tokenizer_json_at_the_same_path_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    def save(vocab_size):
        vocab = {f"w{i}": i for i in range(vocab_size)}
        vocab["[UNK]"] = vocab_size
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.add_special_tokens(["<|endoftext|>"])
        tok.save(str(tmp_path / "tokenizer.json"))

    (tmp_path / "t.txt").write_text("\n\n".join(f"w{i} w{i + 1} w{i + 2}" for i in range(300)))
    args = ["--input", tmp_path / "t.txt", "--tokenizer", tmp_path / "tokenizer.json", "--local-dir", tmp_path / "o",
            "--shard-size", "100", "--nprocs", "0", "--max-tokens", "500"]
    save(1000)
    assert run_cli(*args).returncode == 0
    before = snapshot(tmp_path / "o")
    save(1001)  # same path, another vocabulary
    one_line_error(run_cli(*args[:-2]), "another tokenizer file", "content differs", "--overwrite")
    assert snapshot(tmp_path / "o") == before


# ------------------------------------------------------------------ 16.8 no network at all


@needs_data
def test_no_route_to_the_hub_says_what_to_check_within_a_minute(tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 that nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_ETAG_TIMEOUT="2",
               HF_HUB_DOWNLOAD_TIMEOUT="2", FINEWEB_RETRY_BASE_SECONDS="0.2")
    env.pop("HF_HUB_OFFLINE", None)
    t0 = time.monotonic()
    r = run_cli("--remote", "10BT", "--local-dir", tmp_path / "o", "--retries", "20", "--retry-time", "1800",
                env=env, cwd=tmp_path, timeout=300)
    took = time.monotonic() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith("fineweb.py: error: reaching the Hub"), r.stderr
    for needle in ("HF_ENDPOINT", f"127.0.0.1:{port}", "HF_HUB_OFFLINE", "proxy"):
        assert needle in lines[-1], needle
    assert sum("retry" in x for x in lines[:-1]) <= 4 and took < 60, (took, r.stderr)


# ------------------------------------------------------------------ 17.1 a rerun checks what is on disk


def test_a_manifest_without_its_shards_is_not_complete(tmp_path, small):
    out = tmp_path / "o"
    out.mkdir()
    shutil.copy(small / "ref" / "manifest.json", out / "manifest.json")  # an interrupted rsync
    r = run_small(small, out)
    assert r.returncode == 0, r.stderr
    assert f"missing: {shards_of(small / 'ref')[0]}" in r.stderr and "redoing from shard 0" in r.stderr
    same_as_ref(small, out)


def test_deleted_and_truncated_shards_are_redone_from_the_last_good_one(tmp_path, small):
    out = tmp_path / "o"
    shutil.copytree(small / "ref", out)
    names = shards_of(out)
    os.unlink(out / names[5])
    with open(out / names[3], "r+b") as f:
        f.truncate(1000)
    r = run_small(small, out)
    assert r.returncode == 0, r.stderr
    assert f"truncated: {names[3]}" in r.stderr and "redoing from shard 3" in r.stderr, r.stderr
    same_as_ref(small, out)
    assert run_cli("verify", out).returncode == 0


def test_a_shard_changed_after_the_manifest_is_hashed_and_redone(tmp_path, small):
    out = tmp_path / "o"
    shutil.copytree(small / "ref", out)
    names = shards_of(out)
    with open(out / names[2], "r+b") as f:  # same size, same header: only its sha256 can tell
        f.seek(100)
        f.write(b"\xff\xff")
    r = run_small(small, out)
    assert r.returncode == 0 and f"corrupt: {names[2]} sha256 differs" in r.stderr, r.stderr
    same_as_ref(small, out)


# ------------------------------------------------------------------ 17.2 inputs are fingerprinted


@pytest.mark.parametrize("keep_time", [False, True])
def test_an_input_edited_at_the_same_size_is_refused(tmp_path, small, keep_time):
    f = tmp_path / "in.txt"
    shutil.copy(small / "small.txt", f)
    out = tmp_path / "o"
    r = run_cli("--input", f, "--local-dir", out, "--shard-size", "20K", "--nprocs", "0", "--max-tokens", "60K")
    assert r.returncode == 0, r.stderr
    before, st = snapshot(out), f.stat()
    data = bytearray(f.read_bytes())
    data[10:15] = b"XXXXX"  # same length, inside the first sampled block
    f.write_bytes(bytes(data))
    if keep_time:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run_cli("--input", f, "--local-dir", out, "--shard-size", "20K", "--nprocs", "0")
    one_line_error(r, f"input {f}", "its content differs" if keep_time else "differs", "--overwrite")
    assert snapshot(out) == before


def test_an_input_whose_time_changed_only_says_how_to_restore_it(tmp_path, small):
    f = tmp_path / "in.txt"
    shutil.copy(small / "small.txt", f)
    out = tmp_path / "o"
    r = run_cli("--input", f, "--local-dir", out, "--shard-size", "20K", "--nprocs", "0", "--max-tokens", "60K")
    assert r.returncode == 0
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a copy without -p
    r = run_cli("--input", f, "--local-dir", out, "--shard-size", "20K", "--nprocs", "0")
    one_line_error(r, "its modification time differs", "touch -d @")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_cli("--input", f, "--local-dir", out, "--shard-size", "20K", "--nprocs", "0").returncode == 0


# ------------------------------------------------------------------ 17.3 manifest names are confined


@pytest.mark.parametrize("name", ["../../victims/v2.txt", "/ABS/victim.txt", "small_train_000001.bin/../x"])
@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_a_crafted_manifest_deletes_nothing(tmp_path, small, name, extra):
    victims = tmp_path / "victims"
    victims.mkdir()
    (victims / "v2.txt").write_text("precious")
    (victims / "victim.txt").write_text("precious")
    out = tmp_path / "a" / "b" / "o"
    shutil.copytree(small / "ref", out)
    m = json.loads((out / "manifest.json").read_text())
    m["shards"][1]["file"] = name.replace("/ABS", str(victims))
    m["shards"][1]["tokens"] = 7  # would make a rerun drop it (and delete "its" file)
    (out / "manifest.json").write_text(json.dumps(m))
    before = snapshot(tmp_path)
    r = run_small(small, out, *extra)
    one_line_error(r, "not a manifest of this tool", "shard entry 1")
    assert snapshot(tmp_path) == before
    r = run_cli("verify", out)
    one_line_error(r, "not a manifest of this tool")


@pytest.mark.parametrize("content", ['{"version": 2}', "[]", '{"settings": 1, "shards": []}',
                                    '{"version": 1, "settings": {}, "shards": []}', "not json"])
def test_a_manifest_of_the_wrong_shape_is_one_line_in_run_and_verify(tmp_path, small, content):
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text(content)
    before = snapshot(out)
    one_line_error(run_small(small, out), "manifest", "move it away")
    one_line_error(run_small(small, out, "--overwrite"), "manifest", "move it away")
    assert snapshot(out) == before
    one_line_error(run_cli("verify", out), "manifest")


# ------------------------------------------------------------------ 17.8 smaller things


def test_input_dot_with_the_output_inside_never_reads_its_own_files(tmp_path, small):
    d = tmp_path / "corpus"
    d.mkdir()
    shutil.copy(small / "small.txt", d / "small.txt")
    for _ in range(2):  # the rerun must not find manifest.json (a .json: JSON lines) or shards as input
        r = run_cli("--input", ".", "--shard-size", "20K", "--nprocs", "0", cwd=d)
        assert r.returncode == 0, r.stderr
    out = d / "input_shards"
    m = json.loads((out / "manifest.json").read_text())
    assert [Path(s["path"]).name for s in m["source"]] == ["small.txt"]
    assert np.array_equal(stream_of(out), stream_of(small / "ref"))


@needs_data
def test_a_killed_assembly_leaves_nothing_that_fails_verify_after_the_rerun(tmp_path):
    out = tmp_path / "o"
    for rank in (0, 1):
        assert run_cli("--input", *PARQUETS, "--local-dir", out, "--shard-size", "500K", "--rank", rank,
                       "--world-size", 2, "--nprocs", "0").returncode == 0
    stray = out / ".000_00000_train_000002.bin.deadhost.12.tmp"  # a killed assembly's temporary shard
    stray.write_bytes(b"partial")
    assert run_cli("assemble", out).returncode == 0
    r = run_cli("verify", out)
    assert r.returncode == 0, r.stdout


def test_the_disk_check_says_sizes_in_units_that_show_them(tmp_path, small, monkeypatch, capsys):
    from tokshards.cli import main

    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 3000, 3000))
    rc = main(["--input", str(small / "small.txt"), "--local-dir", str(tmp_path / "o"), "--nprocs", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "but" in err and "3.0 kB free" in err and "0.0 GB" not in err, err


# ------------------------------------------------------------------ 17.5 / 17.6 signals

BIG_ARGS = ["--tokenizer-backend", "tiktoken", "--shard-size", "1M", "--nprocs", "2"]


@pytest.fixture(scope="module")
def big_text(tmp_path_factory):
    """~80 MB of real text: a run of several seconds with workers busy."""
    d = tmp_path_factory.mktemp("big")
    data = TXT.read_bytes() if TXT.exists() else b"\n\n".join(b"word " * 300 for _ in range(20000))
    with open(d / "big.txt", "wb") as f:
        for _ in range(5):
            f.write(data + b"\n\n")
    return d / "big.txt"


def tree_pids(pid):
    import psutil

    try:
        return {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pids):
    import psutil

    out = []
    for p in pids:
        try:
            if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def start(args, out, **kw):
    return subprocess.Popen([sys.executable, str(REPO / "fineweb.py"), *map(str, args), "--local-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def wait_for(p, cond, seen, timeout=120):
    deadline = time.monotonic() + timeout
    while not cond():
        seen |= tree_pids(p.pid)
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    seen |= tree_pids(p.pid)


MOMENTS = {
    # (before the interpreter has run a line of the tool's code, the system's defaults apply)
    "start-up": lambda out, p: True,
    "workers starting": lambda out, p: len(tree_pids(p.pid)) >= 2,
    "workers up": lambda out, p: len(tree_pids(p.pid)) >= 4,
    "mid-shard": lambda out, p: any(f.endswith(".bin.tmp") for f in os.listdir(out)) if out.exists() else False,
    "shard boundary": lambda out, p: out.exists() and len([f for f in os.listdir(out) if f.endswith(".bin")]) >= 2,
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_signal_at_any_moment_ends_the_run_in_seconds_with_one_line(tmp_path, big_text, sig, moment):
    out = tmp_path / "o"
    seen = set()
    for attempt in range(3 if moment == "start-up" else 1):
        p = start(["--input", big_text, *BIG_ARGS], out)
        if moment == "start-up":
            time.sleep(0.2 + 0.15 * attempt)
        wait_for(p, lambda: MOMENTS[moment](out, p), seen)
        os.killpg(p.pid, sig)  # as a terminal's Ctrl-C, or Slurm's scancel, reaches the whole group
        t0 = time.monotonic()
        try:
            _, err = p.communicate(timeout=15)
        finally:
            os.killpg(p.pid, signal.SIGKILL) if p.poll() is None else None
        took = time.monotonic() - t0
        assert took < 12, "the run did not end within seconds"
        code = 130 if sig == signal.SIGINT else 143
        lines = err.strip().splitlines()
        assert p.returncode == code, (p.returncode, err[-2000:])
        assert "Traceback" not in err and lines[-1].startswith(
            "fineweb.py: interrupted" if sig == signal.SIGINT else "fineweb.py: terminated (SIGTERM)"), err[-2000:]
        time.sleep(0.5)
        assert not alive(seen), f"processes of the run still alive: {alive(seen)}"
        if out.exists():  # (on failure: how long the stop took, and what it said)
            assert not [f for f in os.listdir(out) if f.endswith(".tmp")], (os.listdir(out), round(took, 1), err[-2000:])
            r = run_cli("verify", out)
            assert "corrupt" not in r.stdout and "extra" not in r.stdout, r.stdout


HUNG_CLEAN_UP = """
import sys, threading
from tokshards import cli, command, writer
cli.STOP_WATCHDOG_SECONDS = 1
held = threading.Lock()
held.acquire()
writer.ShardWriter.abandon = lambda self: held.acquire()  # as when the signal lands inside a queue's lock
sys.argv = ["fineweb.py", *sys.argv[1:]]
command.main()
"""


def test_a_clean_up_that_hangs_is_cut_short_with_the_same_one_line(tmp_path, big_text):
    out = tmp_path / "o"
    seen = set()
    p = subprocess.Popen([sys.executable, "-c", HUNG_CLEAN_UP, "--input", str(big_text), *BIG_ARGS, "--local-dir",
                          str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    wait_for(p, lambda: MOMENTS["mid-shard"](out, p), seen)
    os.killpg(p.pid, signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=15)
    finally:
        os.killpg(p.pid, signal.SIGKILL) if p.poll() is None else None
    assert p.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == ("fineweb.py: terminated (SIGTERM); the clean-up was cut short after 1 s; "
                                            "rerun the same command to resume"), err[-2000:]
    time.sleep(0.5)
    assert not alive(seen), f"processes of the run still alive: {alive(seen)}"
    r = run_cli("--input", big_text, *BIG_ARGS, "--local-dir", out)  # the same command resumes, as promised
    assert r.returncode == 0 and not [f for f in os.listdir(out) if f.endswith(".tmp")], (r.stderr, os.listdir(out))
    assert "OK" in run_cli("verify", out).stdout


def test_a_second_ctrl_c_during_the_clean_up_shows_no_traceback(tmp_path, big_text):
    out = tmp_path / "o"
    p = start(["--input", big_text, *BIG_ARGS], out)
    wait_for(p, lambda: MOMENTS["mid-shard"](out, p), set())
    for _ in range(5):
        os.killpg(p.pid, signal.SIGINT)
        time.sleep(0.01)
    _, err = p.communicate(timeout=15)
    assert p.returncode == 130 and "Traceback" not in err, err[-2000:]


def test_killing_the_parent_alone_leaves_no_worker_behind(tmp_path, big_text):
    out = tmp_path / "o"
    seen = set()
    p = start(["--input", big_text, *BIG_ARGS], out)
    wait_for(p, lambda: MOMENTS["workers up"](out, p), seen)
    for sig in (signal.SIGKILL,):
        os.kill(p.pid, sig)  # the parent only: not its group
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(seen - {p.pid}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(seen - {p.pid}), f"left behind: {alive(seen)}"


def test_a_pipeline_ends_when_the_parent_is_killed(tmp_path, big_text):
    """`fineweb.py ... | tee log`: the pipe closes once the parent dies (no worker holds it open)."""
    out = tmp_path / "o"
    cmd = (f'"{sys.executable}" "{REPO / "fineweb.py"}" --input "{big_text}" '
           + " ".join(BIG_ARGS) + f' --local-dir "{out}" 2>&1 | cat')
    p = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    parent = None
    while parent is None:
        import psutil

        for c in psutil.Process(p.pid).children(recursive=True):
            if "fineweb.py" in " ".join(c.cmdline()) and len(c.children()) >= 2:
                parent = c
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parent.kill()
    try:
        p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode is not None


# ------------------------------------------------------------------ from the hostile review


@pytest.mark.parametrize("name", [".fineweb.lock", ".manifest.json.tmp", ".small_val_000000.bin.tmp",
                                  ".small_train_000001.bin.tmp"])
def test_a_symlink_at_one_of_the_tools_names_never_writes_through(tmp_path, small, name):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "o"
    out.mkdir()
    (out / name).symlink_to(victim)
    r = run_small(small, out)
    if name == ".fineweb.lock":
        one_line_error(r, "is a symlink")
    else:
        assert r.returncode == 0, r.stderr
        same_as_ref(small, out)
    assert victim.read_text() == "precious"


def test_merge_never_writes_through_a_planted_temp_link(tmp_path, small):
    d = tmp_path / "run"
    shutil.copytree(small / "ref", d)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (d / ".train.bin.tmp").symlink_to(victim)
    assert run_cli("merge", d).returncode == 0
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / ".manifest.json.tmp").symlink_to(victim)
    assert run_cli("merge", d, "--out", tmp_path / "o3", "--format", "npy").returncode == 0
    assert victim.read_text() == "precious" and not (d / "train.bin").is_symlink()


def test_overwrite_and_merge_keep_a_train_bin_they_did_not_write(tmp_path, small):
    d = tmp_path / "run"
    shutil.copytree(small / "ref", d)
    assert run_cli("merge", d).returncode == 0
    (d / "train.bin").write_bytes(b"my own nanoGPT train.bin")  # replaced by the user after the merge
    one_line_error(run_cli("merge", d), "train.bin exists and this tool did not write it")
    assert run_small(small, d, "--overwrite").returncode == 0
    assert (d / "train.bin").read_bytes() == b"my own nanoGPT train.bin"
    assert not (d / "val.bin").exists()  # merge's own val.bin went with the shards it was made of


def test_a_finished_merge_out_rerun_has_nothing_to_do(tmp_path, small):
    assert run_cli("merge", small / "ref", "--out", tmp_path / "o", "--format", "llmc").returncode == 0
    r = run_cli("merge", small / "ref", "--out", tmp_path / "o", "--format", "llmc")
    assert r.returncode == 0 and "nothing to do" in r.stdout, (r.stdout, r.stderr)


@pytest.mark.parametrize("what", ["dir-at-next-shard", "dir-at-manifest-temp", "dir-at-shard-temp"])
def test_a_directory_at_one_of_the_tools_names_is_one_line(tmp_path, small, what):
    out = tmp_path / "o"
    assert run_small(small, out, "--max-tokens", "60K").returncode == 0
    name = {"dir-at-next-shard": "small_train_000003.bin", "dir-at-manifest-temp": ".manifest.json.tmp",
            "dir-at-shard-temp": ".small_train_000003.bin.tmp"}[what]
    (out / name).mkdir()
    before = snapshot(out)
    one_line_error(run_small(small, out), name, "is a directory", "move it away")
    assert snapshot(out) == before


def test_odd_inputs_are_one_line(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "a"}\n' + "[" * 100_000 + "\n")
    one_line_error(run_cli("--input", deep, "--local-dir", tmp_path / "o1", "--nprocs", "0"), "invalid JSON",
                   "at byte 14")
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), ints)
    one_line_error(run_cli("--input", ints, "--local-dir", tmp_path / "o2"), "column 'text' holds int64, not text")
    counts = tmp_path / "counts.parquet"  # a token_count with nulls: a cross-check only, never a traceback
    pq.write_table(pa.table({"text": ["a b", "c"], "token_count": pa.array([2, None], pa.int64())}), counts)
    r = run_cli("--input", counts, "--local-dir", tmp_path / "o3", "--nprocs", "0")
    assert r.returncode == 0, r.stderr
    # a missing count leaves the shard without a sum, not with part of one
    assert [s["token_count_sum"] for s in json.loads((tmp_path / "o3" / "manifest.json").read_text())["shards"]] == [None]


def test_an_input_deleted_during_the_run_is_one_line_and_resumable(tmp_path, big_text):
    f = tmp_path / "gone.txt"
    shutil.copy(big_text, f)
    out = tmp_path / "o"
    p = start(["--input", f, *BIG_ARGS], out)
    wait_for(p, lambda: out.exists() and len([x for x in os.listdir(out) if x.endswith(".bin")]) >= 1, set())
    os.unlink(f)
    _, err = p.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert p.returncode == 1 and lines[-1].startswith("fineweb.py: error: ") and str(f) in lines[-1], err[-2000:]
    assert "Traceback" not in err
    assert not [x for x in os.listdir(out) if x.endswith(".tmp")]


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m.update(source=[1]), "not a manifest of this tool"),
    (lambda m: m.update(source=["x"]), "not a manifest of this tool"),
    (lambda m: m["shards"][1]["end"]["pos"].update(offset=10**30), "not a manifest of this tool"),
    (lambda m: m["shards"][1]["end"]["pos"].update(file=5), "ends in input file 5"),
])
def test_a_tampered_manifest_is_one_line(tmp_path, small, edit, needle):
    out = tmp_path / "o"
    shutil.copytree(small / "ref", out)
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    before = snapshot(out)
    one_line_error(run_small(small, out), needle)
    assert snapshot(out) == before
    if "input file" not in needle:
        one_line_error(run_cli("inspect", out), needle)


@needs_data
@pytest.mark.parametrize("target,edit,needle", [
    ("job.json", lambda t: "not json", "is not a plan this tool wrote"),
    ("job.json", lambda t: json.dumps(dict(json.loads(t), source=[1, 2, 3])), "is not a plan this tool wrote"),
    ("job.json", lambda t: json.dumps(dict(json.loads(t), world_size="x")), "is not a plan this tool wrote"),
    ("job.json", lambda t: json.dumps(dict(json.loads(t), files=10**12)), "is not a plan this tool wrote"),
    ("000001.json", lambda t: json.dumps(dict(json.loads(t), tokens=json.loads(t)["tokens"] - 1000)), None),
    ("000001.json", lambda t: json.dumps(dict(json.loads(t), batches=[])), None),
])
def test_tampered_parts_records_are_refused_or_redone(tmp_path, target, edit, needle):
    out = tmp_path / "o"
    args = ["--input", *PARQUETS, "--local-dir", out, "--shard-size", "500K", "--nprocs", "0"]
    for rank in (0, 1):
        assert run_cli(*args, "--rank", rank, "--world-size", 2).returncode == 0
    f = out / "parts" / target
    f.write_text(edit(f.read_text()))
    if needle:
        one_line_error(run_cli("assemble", out), needle)
        one_line_error(run_cli(*args, "--rank", 0, "--world-size", 2), needle)
    else:  # a record that does not add up is not "done": assemble names it, its rank redoes it
        one_line_error(run_cli("assemble", out), "1 of 3 files are not tokenized yet", "files 1")
        assert run_cli(*args, "--rank", 1, "--world-size", 2).returncode == 0
        assert run_cli("assemble", out).returncode == 0
        assert run_cli("verify", out).returncode == 0
        ref = tmp_path / "ref"
        assert run_cli("--input", *PARQUETS, "--local-dir", ref, "--shard-size", "500K").returncode == 0
        assert [(out / f).read_bytes() for f in shards_of(out)] == [(ref / f).read_bytes() for f in shards_of(ref)]


def test_the_loader_refuses_a_cut_short_llmc_shard_without_a_manifest(tmp_path, small):
    from tokshards.loader import ShardLoader

    d = tmp_path / "llmc"
    assert run_cli("merge", small / "ref", "--out", d, "--format", "llmc").returncode == 0
    (d / "manifest.json").unlink()
    name = sorted(f for f in os.listdir(d) if "_train_" in f)[0]
    with open(d / name, "r+b") as f:
        f.truncate(5000)
    with pytest.raises(ValueError, match="starts with llm.c's header but its size"):
        ShardLoader(str(d), B=1, T=8, split="train")


def test_input_directories_never_read_another_output_of_this_tool(tmp_path, small):
    d = tmp_path / "corpus"
    d.mkdir()
    shutil.copy(small / "small.txt", d / "small.txt")
    assert run_cli("--input", ".", "--shard-size", "20K", "--nprocs", "0", cwd=d).returncode == 0  # input_shards/
    r = run_cli("--input", ".", "--shard-size", "20K", "--nprocs", "0", "--local-dir", tmp_path / "other", cwd=d)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "other" / "manifest.json").read_text())
    assert [Path(s["path"]).name for s in m["source"]] == ["small.txt"]


def test_only_this_tools_temporary_names_are_removed(tmp_path, small):
    out = tmp_path / "o"
    assert run_small(small, out, "--max-tokens", "60K").returncode == 0
    mine = [".small_val_000000.bin.mine.tmp", ".notes.tmp", ".small_val_000000.bin.tmp.bak"]
    ours = [".small_train_000003.bin.tmp", ".manifest.json.otherhost.4242.tmp"]
    for n in mine + ours:
        (out / n).write_text("x")
    assert run_small(small, out).returncode == 0
    left = set(os.listdir(out))
    assert set(mine) <= left and not set(ours) & left, left
