"""Issue "Never lose work: exact resume after any crash".

Real crashes: `python fineweb.py ...` runs in its own process group and the whole group gets
SIGKILL at chosen moments, either from outside (as soon as a file shows up in the output
directory, or after a random delay) or from inside at an exact point of the write protocol
(DRIVER below: half-written shard temp file, shard renamed but not yet in the manifest,
manifest temp file written but not renamed, the last manifest save). After every crash the
directory must be consistent (verify reports only "incomplete", a leftover temp file or the
one shard renamed just before the crash, and every recorded shard already holds its final
bytes); the same command then finishes to an output byte-identical to an uninterrupted run.

Also: refused setting changes, --overwrite, --max-tokens extension, verify's problem report,
the disk-space check and disk-full handling (in-process, with monkeypatching).

Inputs larger than the shared sample are generated under pytest's tmp_path, never committed.
"""
import errno
import filecmp
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent
FINEWEB = REPO / "fineweb.py"
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else REPO.parent / "shared" / "data"
HUB_DIR = DATA / "fineweb-edu"
SAMPLE = sorted((HUB_DIR / "sample" / "10BT").glob("*.parquet"))
TXT = DATA / "train_fineweb.txt"
TIKTOKEN_CACHE = "/work/shared/tiktoken-cache"
if not os.path.isdir(TIKTOKEN_CACHE):
    TIKTOKEN_CACHE = str(REPO.parent / "shared" / "tiktoken-cache")

pytestmark = pytest.mark.skipif(not SAMPLE or not TXT.exists(), reason=f"real documents not found in {DATA}")

SHARD_RE = re.compile(r"_(?:val|train)_(\d{6})\.(?:bin|npy)(?:\.tmp)?$")
ALLOWED_AFTER_CRASH = ("incomplete:", "leftover temporary file:", "extra:")
TIMEOUT = 300

# Runs fineweb.py as __main__ (so multiprocessing workers start as usual) after wrapping the
# write protocol so that the process group is SIGKILLed at one exact moment, chosen by
# TEST_CRASH=event[:shard index or shard count]. Only the parent process is wrapped. Events:
# shard_partial, shard_renamed, idx_renamed (megatron), manifest_tmp, final_manifest_tmp.
DRIVER = r"""
import json, os, re, runpy, signal, sys

event, _, arg = os.environ.get("TEST_CRASH", "").partition(":")
n = int(arg) if arg else None
SHARD = re.compile(r"_(?:val|train)_(\d{6})\.(?:bin|npy)(?:\.tmp)?$")

def index(path):
    m = SHARD.search(os.path.basename(str(path)))
    return int(m.group(1)) if m else None

def die():
    sys.stderr.flush()
    os.killpg(os.getpgid(0), signal.SIGKILL)

import tokshards.writer as W
_append_tokens = W.append_tokens
def append_tokens(f, tokens):  # the writer streams each batch's tokens into the shard's temp file
    if event == "shard_partial" and index(f.name) == n:  # header + half a batch in the temp file, then die
        _append_tokens(f, tokens[: len(tokens) // 2])
        f.flush()
        die()
    return _append_tokens(f, tokens)
W.append_tokens = append_tokens

_replace = os.replace
def replace(src, dst, *a, **kw):
    if os.path.basename(str(src)) == ".manifest.json.tmp":
        with open(src) as fh:
            data = json.load(fh)
        if event == "manifest_tmp" and len(data["shards"]) == n and not data["complete"]:
            die()  # the new manifest is written and fsynced under its temp name, not renamed
        if event == "final_manifest_tmp" and data["complete"]:
            die()
    result = _replace(src, dst, *a, **kw)
    if event == "shard_renamed" and index(dst) == n:
        die()  # the shard file is in place, the manifest does not list it yet
    m = re.search(r"_(?:val|train)_(\d{6})\.idx$", str(dst))
    if event == "idx_renamed" and m and int(m.group(1)) == n:
        die()  # a megatron shard's .idx is in place, its .bin is not
    return result
os.replace = replace

frag = os.environ.get("TEST_FRAGMENT")
if frag:  # small read chunks and document limit: plain text documents get cut into fragments
    import tokshards.textfile as T
    chunk, maxdoc = map(int, frag.split(","))
    # plan_ranges' chunk_bytes and max_doc_bytes defaults: where the parent cuts
    import inspect
    names = [p for p in inspect.signature(T.plan_ranges).parameters][-len(T.plan_ranges.__defaults__):]
    T.plan_ranges.__defaults__ = tuple(chunk if n == "chunk_bytes" else maxdoc if n == "max_doc_bytes" else d
                                       for n, d in zip(names, T.plan_ranges.__defaults__))

sys.argv = [os.path.join(os.getcwd(), "fineweb.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def subprocess_env(**extra):
    env = dict(os.environ)
    env.update(TIKTOKEN_CACHE_DIR=TIKTOKEN_CACHE, HF_HUB_DISABLE_TELEMETRY="1", HF_UPDATE_DOWNLOAD_COUNTS="0",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# ---------------------------------------------------------------- processes


@contextmanager
def started(args, log_dir, crash=None, fragment=None):
    """Start fineweb.py (through DRIVER when crash/fragment is given) in its own process group."""
    extra = {}
    if crash:
        extra["TEST_CRASH"] = crash
    if fragment:
        extra["TEST_FRAGMENT"] = fragment
    cmd = [sys.executable, "-c", DRIVER] if extra else [sys.executable, str(FINEWEB)]
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    k = len(list(log_dir.glob("*.err")))
    out_path, err_path = log_dir / f"{k:03d}.out", log_dir / f"{k:03d}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        p = subprocess.Popen(cmd + [str(a) for a in args], cwd=REPO, env=subprocess_env(**extra),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    p.out_path, p.err_path = out_path, err_path
    try:
        yield p
    finally:
        _kill_group(p)


def _kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)  # the parent, its forkserver and tokenizer workers
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def outputs(p):
    return p.out_path.read_text(errors="replace"), p.err_path.read_text(errors="replace")


def run(args, log_dir, crash=None, fragment=None, timeout=TIMEOUT):
    """Run to the end; returns (returncode, stdout, stderr)."""
    with started(args, log_dir, crash, fragment) as p:
        rc = p.wait(timeout=timeout)
        return (rc, *outputs(p))


def run_ok(args, log_dir, **kw):
    rc, out, err = run(args, log_dir, **kw)
    assert rc == 0, f"exit {rc}\n{err[-3000:]}"
    return out, err


def run_killed_at(args, log_dir, crash, fragment=None):
    """Run with an exact crash point; the run must die of SIGKILL there."""
    rc, out, err = run(args, log_dir, crash=crash, fragment=fragment)
    assert rc == -signal.SIGKILL, f"crash point {crash} was not reached (exit {rc})\n{err[-3000:]}"


def kill_when(args, log_dir, cond, poll=0.0005, fragment=None):
    """Start a run and SIGKILL its process group as soon as cond() is true. Returns whether it was."""
    with started(args, log_dir, fragment=fragment) as p:
        deadline = time.monotonic() + TIMEOUT
        while p.poll() is None:
            if cond():
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
                return True
            assert time.monotonic() < deadline, "run did not finish"
            time.sleep(poll)
        assert p.returncode == 0, f"exit {p.returncode}\n{outputs(p)[1][-3000:]}"
        return False


def verify_cli(d, log_dir):
    return run(["verify", d], log_dir)


# ---------------------------------------------------------------- inputs and references


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """Generated inputs: parquet twice the sample (two files, many row groups, token_count),
    the text file twice over, and the sample as JSON lines (non-ASCII kept as UTF-8)."""
    d = tmp_path_factory.mktemp("inputs")
    table = pa.concat_tables(pq.read_table(f, columns=["text", "id", "token_count"]) for f in SAMPLE)
    (d / "pq").mkdir()
    pq.write_table(table, d / "pq" / "part_0.parquet", row_group_size=300)  # row-group skipping on resume
    pq.write_table(table, d / "pq" / "part_1.parquet")
    text = TXT.read_bytes()
    (d / "corpus.txt").write_bytes(text + b"\n\n" + text)
    with open(d / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, (t, doc_id) in enumerate(zip(table.column("text").to_pylist(), table.column("id").to_pylist())):
            f.write(json.dumps({"id": doc_id, "text": t}, ensure_ascii=False) + "\n")
            if i % 500 == 499:
                f.write("\n")  # blank lines are skipped
    return d


def source_args(kind, inputs):
    if kind == "pq":
        return ["--input", inputs / "pq"]
    if kind == "txt":
        return ["--input", inputs / "corpus.txt"]
    if kind == "jsonl":
        return ["--input", inputs / "docs.jsonl"]
    if kind == "hub":  # a local directory laid out like the Hub repo: datasets streaming + state_dict resume
        return ["--dataset", HUB_DIR, "--remote", "sample-10BT"]
    raise ValueError(kind)


@pytest.fixture(scope="session")
def refs(tmp_path_factory, inputs):
    """ref(kind, *flags): the output directory of one uninterrupted run, made once per session."""
    root = tmp_path_factory.mktemp("refs")
    cache = {}

    def ref(kind, *flags):
        opts = dict(zip(map(str, flags[::2]), map(str, flags[1::2])))
        if opts.get("--format") == "bin":
            del opts["--format"]  # the default
        key = (kind, tuple(sorted(opts.items())))
        if key not in cache:
            out = root / f"ref{len(cache)}_{kind}"
            nprocs = "0" if "--max-tokens" in opts else "2"  # the output does not depend on it
            run_ok(source_args(kind, inputs) + ["--local-dir", out, "--nprocs", nprocs, "--quiet", *flags], root / "logs")
            m = load_manifest(out)
            assert m["complete"] and m["shards"]
            cache[key] = out
        return cache[key]

    return ref


def load_manifest(d):
    p = Path(d) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None


def shard_names(d):
    if not os.path.isdir(d):
        return []
    return sorted(f for f in os.listdir(d) if SHARD_RE.search(f) and not f.startswith("."))


def tmp_files(d):
    return sorted(glob.glob(os.path.join(d, ".*.tmp")))


# ---------------------------------------------------------------- checks


def check_crash_state(out, ref, same_positions=True):
    """What a crash may leave: verify finds only 'incomplete', leftover temp files and the one shard
    renamed just before the crash; every recorded shard already holds its final bytes."""
    from tokshards.verify import verify

    m = load_manifest(out)
    if m is None:  # killed before the first manifest save: nothing may be there
        assert not os.path.exists(out) or not shard_names(out), os.listdir(out)
        return None
    problems, _ = verify(str(out))
    bad = [x for x in problems if not x.startswith(ALLOWED_AFTER_CRASH)]
    assert not bad, problems
    ref_m = load_manifest(ref)
    assert m["settings"] == ref_m["settings"]
    n = len(m["shards"])
    strip = (lambda e: e) if same_positions else (lambda e: {k: v for k, v in e.items() if k != "end"})
    assert [strip(s) for s in m["shards"]] == [strip(s) for s in ref_m["shards"][:n]]
    for s in m["shards"]:
        assert filecmp.cmp(Path(out) / s["file"], Path(ref) / s["file"], shallow=False), s["file"]
    extra = [f for f in shard_names(out) if f not in {s["file"] for s in m["shards"]}]
    # a shard is renamed into place only when complete: at most the next one, with its final bytes
    assert len(extra) <= 1 and all(int(SHARD_RE.search(f).group(1)) == n for f in extra), extra
    for f in extra:
        assert filecmp.cmp(Path(out) / f, Path(ref) / f, shallow=False), f
    return m


def assert_same_output(out, ref, log_dir, same_positions=True, cli_verify=False):
    """Byte-identical to the uninterrupted run, no temp files, and verify exits 0.

    same_positions: also the same resume positions (`end`). Not for the Hub source: its position
    is datasets' state_dict, whose inner read-ahead state differs after a resume although it
    names the same place (load_state_dict goes by previous_state + chunk counts)."""
    names, ref_names = sorted(os.listdir(out)), sorted(os.listdir(ref))
    assert not tmp_files(out), tmp_files(out)
    assert names == ref_names
    for f in names:
        if f != "manifest.json":
            assert filecmp.cmp(Path(out) / f, Path(ref) / f, shallow=False), f
    m, r = load_manifest(out), load_manifest(ref)
    keys = ("file", "split", "index", "tokens", "docs", "bytes", "sha256", "token_count_sum")
    assert [{k: s[k] for k in keys} for s in m["shards"]] == [{k: s[k] for k in keys} for s in r["shards"]]
    if same_positions:
        assert [s["end"] for s in m["shards"]] == [s["end"] for s in r["shards"]]
    for k in ("settings", "source", "complete", "max_tokens", "version"):
        assert m[k] == r[k], k
    if cli_verify:
        rc, stdout, _ = verify_cli(out, log_dir)
        assert rc == 0, stdout
        assert "OK: every shard matches the manifest" in stdout
    else:
        from tokshards.verify import verify

        problems, _ = verify(str(out))
        assert not problems, problems


def one_line_error(rc, err, *needles, out=None):
    """Exit 1 and one line "fineweb.py: error: ..." matching every regex in needles (the output
    directory's path is left out of the search: it holds the test's name)."""
    assert rc == 1, (rc, err)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("fineweb.py: error: "), err
    text = lines[0].replace(str(out), "<out>") if out else lines[0]
    for n in needles:
        assert re.search(n, text), (n, lines[0])
    return lines[0]


def snapshot(d):
    """Names and bytes of everything in d (to prove a refused run changed nothing); the lock file says
    who holds the directory, not what is in it."""
    return {f: (Path(d) / f).read_bytes() for f in sorted(os.listdir(d)) if f != ".fineweb.lock"}


# ---------------------------------------------------------------- crash and resume

# kind, format, nprocs, shard size, crash points (the Hub case restarts slowly: importing datasets)
ALL_STEPS = ("early", "shard_partial", "shard_renamed", "manifest_tmp", "after_shard", "tmp_file", "final", "again")
CASES = [
    ("pq", "bin", "2", "300K", ALL_STEPS),
    ("txt", "llmc", "0", "200K", ALL_STEPS[:-1]),
    ("jsonl", "npy", "0", "200K", ALL_STEPS[:-1]),
    ("hub", "npy", "0", "200K", ("shard_renamed", "after_shard", "final")),
]


@pytest.mark.parametrize("kind,fmt,nprocs,size,steps", CASES, ids=[c[0] for c in CASES])
def test_crash_anywhere_then_rerun_is_byte_identical(tmp_path, inputs, refs, kind, fmt, nprocs, size, steps):
    flags = ["--shard-size", size, "--format", fmt]
    ref = refs(kind, *flags)
    ref_files = [s["file"] for s in load_manifest(ref)["shards"]]
    assert len(ref_files) >= 15, "input too small for this test"
    out = tmp_path / "out"
    logs = tmp_path / "logs"
    args = source_args(kind, inputs) + ["--local-dir", out, "--nprocs", nprocs, "--quiet", *flags]
    same = kind != "hub"  # see assert_same_output

    def check():
        return check_crash_state(out, ref, same_positions=same)

    def exists(i):
        return lambda: (out / ref_files[i]).exists()

    if "early" in steps:  # the manifest is there, no shard yet (reading / tokenizing the first documents)
        def early():
            if not (out / "manifest.json").exists():
                return False
            early.t = getattr(early, "t", None) or time.monotonic()
            return time.monotonic() - early.t > 0.1 or bool(shard_names(out))

        assert kill_when(args, logs, early)
        check()

    # exact moments of the write protocol
    if "shard_partial" in steps:  # half of shard 2 in its temp file
        run_killed_at(args, logs, "shard_partial:2")
        assert len(check()["shards"]) == 2
        assert [os.path.basename(t) for t in tmp_files(out)] == [f".{ref_files[2]}.tmp"]
    if "shard_renamed" in steps:  # shard 4 in place, not in the manifest
        run_killed_at(args, logs, "shard_renamed:4")
        assert len(check()["shards"]) == 4 and (out / ref_files[4]).exists()
    if "manifest_tmp" in steps:  # the manifest that lists shard 6 is written, not renamed
        run_killed_at(args, logs, "manifest_tmp:7")
        assert len(check()["shards"]) == 6 and (out / ".manifest.json.tmp").exists()

    if "after_shard" in steps:  # from outside, right after the file of shard 9 appears
        assert kill_when(args, logs, exists(9))
        assert len(check()["shards"]) >= 9

    if "tmp_file" in steps:  # from outside, while a temporary file (shard or manifest) exists once
        # shard 11 is there; at the latest when shard 13 appears
        assert kill_when(args, logs, lambda: (exists(11)() and bool(tmp_files(out))) or exists(13)())
        check()

    if "final" in steps:  # the last manifest save (complete=true) is written, not renamed
        run_killed_at(args, logs, "final_manifest_tmp")
        m = check()
        assert len(m["shards"]) == len(ref_files) and not m["complete"]

    run_ok(args, logs)
    assert_same_output(out, ref, logs, same_positions=same, cli_verify=True)
    if "again" in steps:  # a complete run is left as it is
        before = snapshot(out)
        _, err = run_ok(args[: -len(flags) - 1] + flags, logs)  # without --quiet
        assert "nothing to do" in err
        assert snapshot(out) == before


def test_random_kills_plain_text_nprocs_2(tmp_path, inputs, refs):
    """SIGKILL after random delays, several times in a row (nprocs 2; the reference ran with 2 too,
    the llmc text case above with 0: the output does not depend on it)."""
    flags = ["--shard-size", "200K", "--format", "llmc"]
    ref = refs("txt", *flags)
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("txt", inputs) + ["--local-dir", out, "--nprocs", "2", "--quiet", *flags]
    rng = random.Random(20240520)
    kills = 0
    for _ in range(4):
        delay = rng.uniform(0.0, 1.2)  # after the manifest appears: while reading, tokenizing, writing
        seen = []

        def cond():
            if not seen and (out / "manifest.json").exists():
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] > delay

        if not kill_when(args, logs, cond):
            break
        kills += 1
        check_crash_state(out, ref)
    assert kills >= 1
    run_ok(args, logs)
    assert_same_output(out, ref, logs)


def test_plain_text_fragments_resume(tmp_path, inputs, refs):
    """Documents longer than the (here tiny) document limit are cut into fragments; a shard may
    end inside one, so a resume position can be a fragment (cont=true). The output equals the
    uncut reference (cuts never change a token), before and after crashes."""
    flags = ["--shard-size", "200K", "--format", "llmc"]
    ref = refs("txt", *flags)
    frag = f"{48 << 10},{12 << 10}"  # read 48 KiB at a time, cut documents over 12 KiB
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("txt", inputs) + ["--local-dir", out, "--nprocs", "0", "--quiet", *flags]
    for crash in ("shard_renamed:3", "manifest_tmp:9", "shard_partial:14", "shard_renamed:20"):
        run_killed_at(args, logs, crash, fragment=frag)
        check_crash_state(out, ref, same_positions=False)
    run_ok(args, logs, fragment=frag)
    m = load_manifest(out)
    ends = [s["end"]["pos"] for s in m["shards"] if s["end"]]
    assert any(e["cont"] for e in ends), "no shard ended inside a fragmented document; adjust the limits"
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(ref))
    for f in names:
        if f != "manifest.json":
            assert filecmp.cmp(out / f, ref / f, shallow=False), f


def test_ctrl_c_then_rerun_is_byte_identical(tmp_path, inputs, refs):
    """SIGINT to the whole process group (Ctrl-C in a terminal), nprocs 2."""
    flags = ["--shard-size", "300K"]
    ref = refs("pq", *flags)
    ref_files = [s["file"] for s in load_manifest(ref)["shards"]]
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "2", "--quiet", *flags]
    with started(args, logs) as p:
        while not (out / ref_files[5]).exists():
            assert p.poll() is None, outputs(p)[1]
            time.sleep(0.0005)
        os.killpg(p.pid, signal.SIGINT)
        rc = p.wait(timeout=60)
        err = outputs(p)[1]
    assert rc == 130, err
    assert err.strip().splitlines()[-1] == "fineweb.py: interrupted; rerun the same command to resume"
    check_crash_state(out, ref)
    run_ok(args, logs)
    assert_same_output(out, ref, logs)


def test_ctrl_c_with_workers_prints_one_line(tmp_path, inputs):
    """Ctrl-C reaches the whole foreground process group, tokenizer workers included: the user
    should see the one-line "interrupted" message, not a KeyboardInterrupt traceback per worker."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "2", "--quiet", "--shard-size", "100K"]
    with started(args, logs) as p:
        while not shard_names(out):
            assert p.poll() is None, outputs(p)[1]
            time.sleep(0.0005)
        os.killpg(p.pid, signal.SIGINT)
        rc = p.wait(timeout=60)
        err = outputs(p)[1]
    assert rc == 130, err
    assert err.strip().splitlines() == ["fineweb.py: interrupted; rerun the same command to resume"], err


def test_crash_then_rerun_with_smaller_max_tokens_leaves_no_unrecorded_shard(tmp_path, inputs, refs):
    """A crash right after shard 3 is renamed (before the manifest lists it), then the run is
    finished with --max-tokens 900K (= the 3 recorded shards): the finished directory must hold
    exactly the manifest's shards (a loader that globs the directory would read the stray one)."""
    flags = ["--shard-size", "300K"]
    ref = refs("pq", *flags)
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "0", "--quiet", *flags]
    run_killed_at(args, logs, "shard_renamed:3")
    check_crash_state(out, ref)
    run_ok(args + ["--max-tokens", "900K"], logs)
    m = load_manifest(out)
    assert m["complete"] and sum(s["tokens"] for s in m["shards"]) == 900_000
    assert shard_names(out) == sorted(s["file"] for s in m["shards"])
    rc, stdout, _ = verify_cli(out, logs)
    assert rc == 0, stdout


# ---------------------------------------------------------------- settings, --overwrite, --max-tokens


@pytest.fixture(scope="session")
def tiny_tokenizer_json(tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "the": 1, "a": 2}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="session")
def crashed_run(tmp_path_factory, inputs):
    """A pq run with 100K shards that crashed after shard 8 was renamed (8 recorded, 9 files)."""
    out = tmp_path_factory.mktemp("crashed") / "out"
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "0", "--quiet", "--shard-size", "100K"]
    run_killed_at(args, out.parent / "logs", "shard_renamed:8")
    assert len(load_manifest(out)["shards"]) == 8 and len(shard_names(out)) == 9
    return out


def partial_run(tmp_path, inputs, crashed_run):
    """A copy of crashed_run in tmp_path (the manifest names no paths of its own directory)."""
    out, logs = tmp_path / "out", tmp_path / "logs"
    shutil.copytree(crashed_run, out)
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "0", "--quiet", "--shard-size", "100K"]
    return out, logs, args


@pytest.mark.parametrize("change,needle", [
    (["--shard-size", "200K"], "shard.size"),
    (["--format", "llmc"], "format"),
    (["--format", "npy"], "format"),
    (["--tokenizer", "r50k_base"], "tokenizer"),
])
def test_changed_setting_is_refused_and_changes_nothing(tmp_path, inputs, crashed_run, change, needle):
    out, logs, args = partial_run(tmp_path, inputs, crashed_run)
    before = snapshot(out)
    rc, _, err = run(args + change, logs)  # the later flag wins
    one_line_error(rc, err, needle, "--overwrite", out=out)
    assert snapshot(out) == before


def test_changed_tokenizer_json_is_refused_naming_the_tokenizer(tmp_path, inputs, crashed_run, tiny_tokenizer_json):
    """A tokenizer.json also changes the end-of-text id (and maybe the dtype): the message must
    still name the setting the user changed, --tokenizer."""
    out, logs, args = partial_run(tmp_path, inputs, crashed_run)
    before = snapshot(out)
    rc, _, err = run(args + ["--tokenizer", tiny_tokenizer_json], logs)
    one_line_error(rc, err, "tokenizer", out=out)
    assert snapshot(out) == before


def test_overwrite_starts_over_like_a_fresh_run(tmp_path, inputs, refs, crashed_run):
    out, logs, args = partial_run(tmp_path, inputs, crashed_run)
    # same format, other shard size: 4 new shards replace 9 old files (5 of them must go)
    new = ["--shard-size", "300K", "--max-tokens", "1M"]
    run_ok(args + new + ["--overwrite"], logs)
    assert_same_output(out, refs("pq", *new), logs)
    # other format (.npy instead of .bin): every old .bin goes
    new = ["--shard-size", "300K", "--max-tokens", "1M", "--format", "npy"]
    run_ok(args + new + ["--overwrite"], logs)
    assert_same_output(out, refs("pq", *new), logs)
    # --overwrite over a crashed run with leftovers (a temp file): back to the first settings
    run_killed_at(args + ["--overwrite"], logs, "shard_partial:3")
    assert tmp_files(out)
    run_ok(args + ["--overwrite", "--max-tokens", "1M"], logs)
    assert_same_output(out, refs("pq", "--shard-size", "100K", "--max-tokens", "1M"), logs)


def test_max_tokens_extend_and_finish(tmp_path, inputs, refs):
    """300K shards: 1M and 2M both end in a short shard, which an extension rewrites."""
    flags = ["--shard-size", "300K"]
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "0", "--quiet", *flags]

    run_ok(args + ["--max-tokens", "1M"], logs)
    assert_same_output(out, refs("pq", *flags, "--max-tokens", "1M"), logs)
    m = load_manifest(out)
    assert [s["tokens"] for s in m["shards"]] == [300_000] * 3 + [100_000] and m["max_tokens"] == 1_000_000

    before = snapshot(out)
    run_ok(args + ["--max-tokens", "1M"], logs)  # the same command again: nothing to do
    assert snapshot(out) == before

    # extend to 2M, crashing once on the way (shard 5 renamed, not recorded)
    run_killed_at(args + ["--max-tokens", "2M"], logs, "shard_renamed:5")
    check_crash_state(out, refs("pq", *flags, "--max-tokens", "2M"))
    run_ok(args + ["--max-tokens", "2M"], logs)
    ref2 = refs("pq", *flags, "--max-tokens", "2M")
    assert_same_output(out, ref2, logs)

    before = snapshot(out)
    rc, _, err = run(args + ["--max-tokens", "1M"], logs)  # smaller than what is there
    one_line_error(rc, err, "max-tokens", "--overwrite")
    assert snapshot(out) == before

    # no --max-tokens: the whole input, as an uninterrupted full run
    run_ok(args, logs)
    assert_same_output(out, refs("pq", *flags), logs)
    before = snapshot(out)
    for smaller in ("2M", "1M"):
        rc, _, err = run(args + ["--max-tokens", smaller], logs)
        one_line_error(rc, err, "max-tokens", "--overwrite")
    assert snapshot(out) == before


def test_max_tokens_run_killed_at_its_last_manifest_save(tmp_path, inputs, refs):
    """The trailing short shard is written but the manifest does not say complete yet: a rerun
    with a larger --max-tokens rewrites that shard and matches a direct run."""
    flags = ["--shard-size", "300K"]
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = source_args("pq", inputs) + ["--local-dir", out, "--nprocs", "0", "--quiet", *flags]
    run_killed_at(args + ["--max-tokens", "1M"], logs, "final_manifest_tmp")
    m = check_crash_state(out, refs("pq", *flags, "--max-tokens", "1M"))
    assert len(m["shards"]) == 4 and not m["complete"]
    run_ok(args + ["--max-tokens", "2M"], logs)
    assert_same_output(out, refs("pq", *flags, "--max-tokens", "2M"), logs)


# ---------------------------------------------------------------- verify


def test_verify_lists_every_problem(tmp_path, refs):
    ref = refs("pq", "--shard-size", "300K")
    logs = tmp_path / "logs"
    rc, stdout, _ = verify_cli(ref, logs)
    assert rc == 0, stdout
    assert re.search(r"source token_count: sum [\d,]+ \+ [\d,]+ boundary ids = [\d,]+; written differs by", stdout)

    d = tmp_path / "bad"
    shutil.copytree(ref, d)
    files = [s["file"] for s in load_manifest(d)["shards"]]
    os.unlink(d / files[3])
    with open(d / files[5], "r+b") as f:
        f.truncate(1000)
    with open(d / files[7], "r+b") as f:
        f.seek(123_457)
        b = f.read(1)
        f.seek(123_457)
        f.write(bytes([b[0] ^ 0x55]))
    with open(d / files[9], "ab") as f:
        f.write(b"\0\0")
    shutil.copy(d / files[1], d / files[-1].replace(files[-1][-10:-4], "000099"))
    (d / ".x.tmp").write_bytes(b"partial")
    rc, stdout, _ = verify_cli(d, logs)
    assert rc == 1, stdout
    problems = [x.strip() for x in stdout.splitlines() if x.startswith("  ")]
    assert "6 problem(s):" in stdout
    extra_name = files[-1].replace(files[-1][-10:-4], "000099")
    expected = [
        f"missing: {files[3]}",
        f"truncated: {files[5]} is 1,000 bytes, manifest says 600,000",
        f"corrupt: {files[7]} sha256 differs from the manifest",
        f"too long: {files[9]} is 600,002 bytes, manifest says 600,000",
        f"extra: {extra_name} is not in the manifest",
        "leftover temporary file: .x.tmp",
    ]
    for e in expected:
        assert any(p.startswith(e) for p in problems), (e, problems)
    assert len(problems) == len(expected), problems


def test_verify_llmc_header_and_missing_manifest(tmp_path, refs):
    ref = refs("txt", "--shard-size", "200K", "--format", "llmc")
    logs = tmp_path / "logs"
    rc, stdout, _ = verify_cli(ref, logs)
    assert rc == 0 and "token_count" not in stdout, stdout  # text input: no source counts
    d = tmp_path / "bad"
    shutil.copytree(ref, d)
    name = load_manifest(d)["shards"][2]["file"]
    with open(d / name, "r+b") as f:
        f.seek(8)  # header[2], the token count
        f.write((7).to_bytes(4, "little"))
    rc, stdout, _ = verify_cli(d, logs)
    assert rc == 1 and f"corrupt header: {name}" in stdout and "1 problem(s):" in stdout, stdout
    os.unlink(d / "manifest.json")
    rc, _, err = verify_cli(d, logs)
    one_line_error(rc, err, "no manifest.json")


# ---------------------------------------------------------------- disk space (in-process)


def fake_free(monkeypatch, free):
    real = shutil.disk_usage

    def disk_usage(path):
        u = real(path)
        return type(u)(u.total, u.total - free, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


@pytest.fixture
def cli(monkeypatch, capsys):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", TIKTOKEN_CACHE)
    from tokshards.cli import main

    def call(*args):
        rc = main([str(a) for a in args])
        cap = capsys.readouterr()
        return rc, cap.out, cap.err

    return call


@pytest.mark.parametrize("extra", [[], ["--max-tokens", "1M"]], ids=["estimate-from-input", "max-tokens"])
def test_disk_check_refuses_before_writing_anything(tmp_path, inputs, cli, monkeypatch, extra):
    fake_free(monkeypatch, 500_000)  # 0.5 MB: less than 1M uint16 tokens, far less than the input
    out = tmp_path / "out"
    rc, _, err = cli(*source_args("pq", inputs), "--local-dir", out, "--nprocs", "0", "--quiet",
                     "--shard-size", "200K", *extra)
    one_line_error(rc, err, "500.0 kB free", "--no-disk-check", "--max-tokens")
    assert not out.exists() or os.listdir(out) == [], os.listdir(out)


def test_refused_disk_check_does_not_lock_the_settings(tmp_path, inputs, cli, monkeypatch):
    """After a refusal for lack of space, the user may pick other settings for the same directory."""
    fake_free(monkeypatch, 500_000)
    out = tmp_path / "out"
    base = [*source_args("pq", inputs), "--local-dir", out, "--nprocs", "0", "--quiet", "--max-tokens", "100K"]
    rc, _, err = cli(*base, "--shard-size", "200K", "--max-tokens", "1M")
    assert rc == 1, err
    rc, _, err = cli(*base, "--shard-size", "50K", "--format", "llmc")
    assert rc == 0, err


def test_no_disk_check_skips_it(tmp_path, inputs, cli, monkeypatch):
    fake_free(monkeypatch, 500_000)
    out = tmp_path / "out"
    rc, _, err = cli(*source_args("pq", inputs), "--local-dir", out, "--nprocs", "0", "--quiet",
                     "--shard-size", "200K", "--max-tokens", "1M", "--no-disk-check")
    assert rc == 0, err
    m = load_manifest(out)
    assert m["complete"] and sum(s["tokens"] for s in m["shards"]) == 1_000_000


def test_a_commands_retry_budget_is_its_own_and_ends_with_it(tmp_path, inputs, cli, monkeypatch):
    """--retries/--retry-time/--quiet reach the run's processes through FINEWEB_* variables, set for
    the command and put back after it (another command in the same process, or a test, sees its own)."""
    monkeypatch.setenv("FINEWEB_RETRIES", "7")
    monkeypatch.delenv("FINEWEB_QUIET", raising=False)
    seen = {}
    import tokshards.pipeline as P

    real = P.run

    def run(job, **kw):
        seen.update({k: os.environ.get(k) for k in ("FINEWEB_RETRIES", "FINEWEB_RETRY_TIME", "FINEWEB_QUIET",
                                                     "FINEWEB_COMMAND_PID")})
        return real(job, **kw)

    monkeypatch.setattr(P, "run", run)
    rc, _, err = cli(*source_args("pq", inputs), "--local-dir", tmp_path / "out", "--nprocs", "0", "--quiet",
                     "--shard-size", "200K", "--max-tokens", "300K", "--retries", "2", "--retry-time", "9")
    assert rc == 0, err
    assert seen == {"FINEWEB_RETRIES": "2", "FINEWEB_RETRY_TIME": "9.0", "FINEWEB_QUIET": "1",
                    "FINEWEB_COMMAND_PID": str(os.getpid())}
    assert os.environ.get("FINEWEB_RETRIES") == "7" and "FINEWEB_QUIET" not in os.environ
    assert "FINEWEB_COMMAND_PID" not in os.environ


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_while_writing_a_shard(tmp_path, inputs, refs, cli, monkeypatch, where):
    """ENOSPC while streaming tokens into shard 4's temp file, or from its fsync (delayed allocation)."""
    import tokshards.writer as W
    from tokshards.verify import verify

    flags = ["--shard-size", "300K"]
    ref = refs("pq", *flags)
    out = tmp_path / "out"
    args = [*source_args("pq", inputs), "--local-dir", out, "--nprocs", "0", "--quiet", *flags]
    real_append, real_fsync = W.append_tokens, os.fsync

    def append_tokens(f, tokens):
        if "_000004." in os.path.basename(f.name):
            real_append(f, tokens[: len(tokens) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(f, tokens)

    def fsync(fd):
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            name = ""
        if "_000004." in name and name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    if where == "write":
        monkeypatch.setattr(W, "append_tokens", append_tokens)
    else:
        monkeypatch.setattr(os, "fsync", fsync)
    rc, _, err = cli(*args)
    one_line_error(rc, err, "disk full while writing", "_000004\\.bin", "rerun the same command")
    assert not tmp_files(out)
    problems, _ = verify(str(out))
    assert len(problems) == 1 and problems[0].startswith("incomplete:"), problems
    assert len(load_manifest(out)["shards"]) == 4
    monkeypatch.setattr(W, "append_tokens", real_append)
    monkeypatch.setattr(os, "fsync", real_fsync)
    rc, _, err = cli(*args)
    assert rc == 0, err
    assert_same_output(out, ref, tmp_path / "logs")


def test_disk_full_while_writing_the_manifest(tmp_path, inputs, refs, cli, monkeypatch):
    """ENOSPC from fsync of the manifest's temp file (as delayed allocation reports it)."""
    from tokshards.verify import verify

    flags = ["--shard-size", "300K"]
    ref = refs("pq", *flags)
    out = tmp_path / "out"
    args = [*source_args("pq", inputs), "--local-dir", out, "--nprocs", "0", "--quiet", *flags]
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd):
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            name = ""
        if name == ".manifest.json.tmp":
            calls["n"] += 1
            if calls["n"] == 7:  # the save that would record shard 5
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc, _, err = cli(*args)
    one_line_error(rc, err, "disk full", "rerun the same command")
    assert not tmp_files(out)
    problems, _ = verify(str(out))
    m = load_manifest(out)
    assert len(m["shards"]) == 5
    # only "incomplete", plus the shard renamed just before the failed manifest save
    assert problems[-1].startswith("incomplete:") and all(
        p.startswith(("incomplete:", f"extra: {m['shards'][-1]['file'][:-10]}")) for p in problems), problems
    monkeypatch.setattr(os, "fsync", real)
    rc, _, err = cli(*args)
    assert rc == 0, err
    assert_same_output(out, ref, tmp_path / "logs")


# ---------------------------------------------------------------- the streaming shard writer (in-process)


@pytest.mark.parametrize("fmt", ["bin", "npy", "llmc"])
def test_streamed_shards_equal_whole_shard_writes(tmp_path, fmt):
    """Tokens stream into the shard's temp file under a full shard's header; the short last shard
    gets its own header (npy, llmc: the count) and a sha256 over its final bytes. Every file and
    entry must equal formats.write_shard's."""
    import numpy as np
    import tokshards.writer as W
    from tokshards.formats import write_shard
    from tokshards.manifest import Manifest
    from tokshards.pool import Encoded
    from tokshards.positions import Position
    from tokshards.tokspec import Boundary

    settings = {"prefix": "t", "format": fmt, "dtype": "<u2", "shard_size": 1000, "eot": 7}
    m = Manifest(str(tmp_path), settings, [])
    w = W.ShardWriter(m, "<u2", Boundary("eot-before", (7,), ()))
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 40, 3456).astype("<u2")
    cuts = [0, 10, 900, 1000, 2600, 2601, 3456]  # batches within, across and over shards
    for a, b in zip(cuts, cuts[1:]):
        w.add(Encoded(Position(0, a), False, tokens[a:b], None, "x", int(np.count_nonzero(tokens[a:b] == 7))), 0, b - a)
    w.finish()
    assert [s.tokens for s in m.shards] == [1000, 1000, 1000, 456]
    for s, a in zip(m.shards, range(0, 3456, 1000)):
        t = tokens[a : a + 1000]
        head = W.header_for(fmt, t.dtype, len(t))
        data = (tmp_path / s.file).read_bytes()
        assert data == head + t.tobytes(), s
        assert (s.bytes, s.sha256, s.docs) == (len(data), hashlib.sha256(data).hexdigest(),
                                               int(np.count_nonzero(t == 7))), s
        with open(tmp_path / "ref", "wb") as f:
            assert write_shard(f, fmt, t) == (s.bytes, s.sha256)
        assert (tmp_path / "ref").read_bytes() == data
    assert not tmp_files(tmp_path)
