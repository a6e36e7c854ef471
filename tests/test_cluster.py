"""Issue "Beyond one machine": per-file parts on Ray or Slurm ranks, assembled into the very
shards (and manifest) a single-machine run writes.

Ray tests run `python fineweb.py --engine ray` inside a network namespace holding only `lo`
(Ray would otherwise listen on every interface and probe outside addresses) with a local
cluster; the namespace's processes are killed by session id when the test ends.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FINEWEB_EDU, PARQUETS, REPO, needs_data, run_cli

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

TXT = FINEWEB_EDU.parent / "train_fineweb.txt"


def outputs_equal(a, b):
    """Same shard files, byte for byte, and the same manifest but for the run time."""
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for n in names:
        if n != "manifest.json":
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    ma.pop("seconds", None), mb.pop("seconds", None)
    assert ma == mb


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Parquet files with token_count (small row groups), JSON lines, and plain text in which one
    document is larger than the 32 MB piece size, so a file's batches include fragments."""
    d = tmp_path_factory.mktemp("cluster_inputs")
    table = pa.concat_tables(pq.read_table(f, columns=["text", "id", "token_count"]) for f in PARQUETS)
    (d / "pq").mkdir()
    for i in range(4):
        part = table.slice(i * 600, 600 if i < 3 else None)
        pq.write_table(part, d / "pq" / f"part_{i}.parquet", row_group_size=100 + 50 * i)
    (d / "mixed").mkdir()
    with open(d / "mixed" / "a.jsonl", "w", encoding="utf-8") as f:
        for t in table.column("text").to_pylist()[:700]:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    text = TXT.read_bytes()
    giant = text.replace(b"\n\n", b"\n")  # one document of ~15 MB, three times over: > 32 MB
    (d / "mixed" / "b.txt").write_bytes(text[: 2 << 20] + b"\n\n" + giant * 3 + b"\n\n" + text[: 1 << 20])
    (d / "mixed" / "c.txt").write_bytes(text[-(3 << 20):])
    return d


def single(tmp_path, name, *args):
    out = tmp_path / name
    r = run_cli(*args, "--local-dir", out, "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def ranks(out, world, *args, order=None):
    for rank in order or range(world):
        r = run_cli(*args, "--local-dir", out, "--rank", rank, "--world-size", world)
        assert r.returncode == 0, r.stderr
        assert f"rank {rank} of {world}:" in r.stderr
    return out


CASES = {
    "parquet-npy": ("pq", ["--format", "npy", "--shard-size", "250K"]),
    "mixed-llmc": ("mixed", ["--format", "llmc", "--shard-size", "3M", "--tokenizer-backend", "auto"]),
    "parquet-bin-exact-shards": ("pq", ["--shard-size", "5K", "--nprocs", "0"]),
}


@needs_data
@pytest.mark.parametrize("case", CASES)
def test_ranks_then_assemble_is_byte_identical_to_one_machine(tmp_path, inputs, case):
    src, flags = CASES[case]
    args = ["--input", inputs / src, *flags]
    ref = single(tmp_path, "one", *args)
    out = tmp_path / "many"
    ranks(out, 3, *args, order=[2, 0, 1])
    r = run_cli("assemble", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("done: ") and "verify" in r.stdout
    outputs_equal(ref, out)
    assert not (out / "parts").exists()  # intermediates are gone
    assert run_cli("verify", out).returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and m["shards"][0]["split"] == "val"


@needs_data
def test_ranks_started_at_the_same_moment(tmp_path, inputs):
    """A Slurm array starts its tasks together: every rank writes parts/job.json at once."""
    args = ["--input", inputs / "pq", "--shard-size", "250K", "--nprocs", "0"]
    out = tmp_path / "o"
    procs = [subprocess.Popen([sys.executable, str(REPO / "fineweb.py"), *map(str, args), "--local-dir", str(out),
                               "--rank", str(r), "--world-size", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert run_cli("assemble", out).returncode == 0
    outputs_equal(single(tmp_path, "ref", *args), out)


@needs_data
def test_rank_run_twice_skips_done_files_and_assemble_names_missing_ranks(tmp_path, inputs):
    args = ["--input", inputs / "pq", "--shard-size", "250K"]
    out = tmp_path / "o"
    ranks(out, 2, *args, order=[1])
    part = out / "parts" / "000001.tokens"
    before = (part.stat().st_mtime_ns, part.read_bytes())
    r = run_cli(*args, "--local-dir", out, "--rank", 1, "--world-size", 2)
    assert r.returncode == 0
    assert r.stderr.count("(already done)") == 2 and "2 files (2 already done)" in r.stderr
    assert (part.stat().st_mtime_ns, part.read_bytes()) == before  # not rewritten

    r = run_cli("verify", out)
    assert r.returncode == 1 and r.stderr.strip() == (
        f"fineweb.py: error: {out} is a multi-machine run in progress (2 source files tokenized); "
        f"once every rank is done: python fineweb.py assemble {out}")
    r = run_cli("assemble", out)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"fineweb.py: error: {out}: 2 of 4 files are not tokenized yet (ranks 0 of "
                                "--world-size 2): files 0, 2; run them first (rerunning a rank skips its finished files)")
    # a part whose bytes changed on disk is not "done": its rank redoes it
    with open(part, "r+b") as f:
        f.write(b"\xff\xff")
    r = run_cli(*args, "--local-dir", out, "--rank", 1, "--world-size", 2)
    assert r.stderr.count("(already done)") == 1
    assert part.read_bytes() == before[1]
    ranks(out, 2, *args, order=[0])
    assert run_cli("assemble", out).returncode == 0
    outputs_equal(single(tmp_path, "ref", *args), out)
    r = run_cli("assemble", out)
    assert r.returncode == 0 and "already complete" in r.stderr


def dies_after(k):
    """An assembly's map that writes shards in order, one at a time, and is interrupted after k."""
    from tokshards.assemble import local_map

    def run(fn, specs):
        for n, entry in enumerate(local_map(fn, sorted(specs, key=lambda s: s.index), 1)):
            if n == k:
                raise KeyboardInterrupt
            yield entry

    return run


@needs_data
def test_interrupted_assembly_resumes_and_frees_parts_early(tmp_path, inputs):
    from tokshards.assemble import assemble

    args = ["--input", inputs / "pq", "--shard-size", "100K"]
    out = ranks(tmp_path / "o", 2, *args)

    with pytest.raises(KeyboardInterrupt):
        assemble(str(out), log=lambda m: None, map_fn=dies_after(12))
    state = json.loads((out / "parts" / "assembled.json").read_text())
    assert sorted(e["index"] for e in state) == list(range(12))
    assert not (out / "manifest.json").exists()
    # a part's tokens go once every shard that needs them is written (shards 0-11: 1.2M tokens)
    end = 0
    for i in range(4):
        end += json.loads((out / "parts" / f"{i:06d}.json").read_text())["tokens"]
        assert (out / "parts" / f"{i:06d}.tokens").exists() == (end > 1_200_000), i
    assert not (out / "parts" / "000000.tokens").exists()
    # rerunning the ranks now (as one would after a crash) must not redo the parts already used up
    for rank in (0, 1):
        r = run_cli(*args, "--local-dir", out, "--rank", rank, "--world-size", 2)
        assert r.returncode == 0 and r.stderr.count("(already done)") == 2, r.stderr
    assert not (out / "parts" / "000000.tokens").exists()
    r = run_cli("assemble", out)
    assert r.returncode == 0, r.stderr
    assert "assembling" in r.stderr and f"of {len(json.loads((out / 'manifest.json').read_text())['shards'])} shards" in r.stderr
    outputs_equal(single(tmp_path, "ref", *args), out)


@needs_data
def test_interrupted_megatron_assembly_keeps_its_parts_and_resumes(tmp_path, inputs):
    """Whole-document shards are cut where the parts' documents begin, which a rerun of the assembly
    reads again in every part: so no part's tokens go before the manifest is written."""
    from tokshards.assemble import assemble

    args = ["--input", inputs / "pq", "--shard-size", "100K", "--format", "megatron"]
    out = ranks(tmp_path / "o", 2, *args)

    with pytest.raises(KeyboardInterrupt):
        assemble(str(out), log=lambda m: None, map_fn=dies_after(6))
    assert len(json.loads((out / "parts" / "assembled.json").read_text())) == 6
    assert all((out / "parts" / f"{i:06d}.tokens").exists() for i in range(4))
    r = run_cli("assemble", out)
    assert r.returncode == 0, r.stderr
    outputs_equal(single(tmp_path, "ref", *args), out)
    assert not (out / "parts").exists()


@needs_data
def test_a_finished_run_with_parts_left_over_is_complete(tmp_path, inputs):
    """Stopped while removing parts/ (after the manifest was written): complete, nothing redone."""
    args = ["--input", inputs / "pq", "--shard-size", "1M"]
    out = ranks(tmp_path / "o", 2, *args)
    keep = tmp_path / "parts_copy"
    shutil.copytree(out / "parts", keep)
    assert run_cli("assemble", out).returncode == 0
    shutil.copytree(keep, out / "parts")
    r = run_cli(*args, "--local-dir", out, "--rank", 0, "--world-size", 2)
    assert r.returncode == 0 and "already complete" in r.stderr and "file 1/" not in r.stderr
    assert not (out / "parts").exists()
    shutil.copytree(keep, out / "parts")
    r = run_cli("assemble", out)
    assert r.returncode == 0 and "already complete" in r.stderr and not (out / "parts").exists()
    assert run_cli("verify", out).returncode == 0


@needs_data
def test_one_machine_run_over_parts_is_refused_and_ranks_share_the_revision(tmp_path):
    out = tmp_path / "o"
    assert run_cli("--input", *PARQUETS, "--local-dir", out, "--rank", 0, "--world-size", 2).returncode == 0
    r = run_cli("--input", *PARQUETS, "--local-dir", out)
    assert r.returncode == 1 and r.stderr.strip() == (
        f"fineweb.py: error: {out} holds a multi-machine run in progress ({out}/parts/); finish it with "
        f"python fineweb.py assemble {out}, or add --overwrite to start over")
    # a rank that starts later reads the commit the first one pinned, not `main` again
    from tokshards.cli import DEFAULTS, pinned_revision

    hub_out = tmp_path / "hub"
    (hub_out / "parts").mkdir(parents=True)
    sha = "0123456789abcdef0123456789abcdef01234567"
    (hub_out / "parts" / "job.json").write_text(json.dumps(
        {"source": {"dataset": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT", "revision": sha}}))
    assert pinned_revision(str(hub_out), dict(DEFAULTS)) == sha


JSONL_CARD = """---
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/*/*
---
"""


@pytest.fixture(scope="module")
def jsonl_hub(tmp_path_factory):
    """A local directory laid out like a Hub dataset of JSON lines files (read with datasets'
    streaming, not the parquet reader)."""
    d = tmp_path_factory.mktemp("jsonl_hub")
    texts = pa.concat_tables(pq.read_table(f, columns=["text"]) for f in PARQUETS).column(0).to_pylist()
    for i, chunk in enumerate((texts[:900], texts[900:1700], texts[1700:])):
        f = d / "data" / "part" / f"{i:03d}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in chunk), encoding="utf-8")
    (d / "README.md").write_text(JSONL_CARD)
    return d


@needs_data
@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_hub_layout_ranks_match_one_machine_including_positions(tmp_path, jsonl_hub, kind):
    """A Hub-laid-out dataset read file by file: parquet with pyarrow row groups (positions: rows),
    other formats with datasets' streaming (positions: its state_dict). The parts record those
    positions, so the assembled manifest, resume positions included, equals the one-machine one,
    and the tokens equal --input on the same files."""
    repo, config = (FINEWEB_EDU, "sample-10BT") if kind == "parquet" else (jsonl_hub, "default")
    args = ["--dataset", repo, "--remote", config, "--shard-size", "400K", "--format", "npy", "--prefix", "p"]
    ref = single(tmp_path, "one", *args)
    out = ranks(tmp_path / "many", 2, *args)
    assert run_cli("assemble", out).returncode == 0
    outputs_equal(ref, out)
    files = PARQUETS if kind == "parquet" else sorted((jsonl_hub / "data" / "part").glob("*.jsonl"))
    local = single(tmp_path, "local", "--input", *files, "--shard-size", "400K", "--format", "npy", "--prefix", "p")
    assert [(local / f).read_bytes() for f in sorted(os.listdir(local)) if f.endswith(".npy")] == \
        [(ref / f).read_bytes() for f in sorted(os.listdir(ref)) if f.endswith(".npy")]
    ends = [s["end"] for s in json.loads((out / "manifest.json").read_text())["shards"]]
    assert ends[-1] is None and len(ends) >= 4
    key = "offset" if kind == "parquet" else "state"
    assert all(set(e["pos"]) == {"file", key} | ({"cont"} if kind == "parquet" else set()) for e in ends[:-1])


@needs_data
@pytest.mark.parametrize("flags, message", [
    (["--rank", "0"], "--rank R and --world-size N go together (0 <= R < N)"),
    (["--rank", "2", "--world-size", "2"], "--rank 2 is not in 0..1 (--world-size 2)"),
    (["--rank", "0", "--world-size", "2", "--max-tokens", "1M"],
     "--max-tokens is for single-machine runs; drop it, or run without --engine/--rank"),
    (["--rank", "0", "--world-size", "2", "--engine", "ray"],
     "--rank/--world-size split the files without an engine; drop --engine ray"),
    (["--rank", "0", "--world-size", "2", "--overwrite"], "--overwrite with --rank would delete the other ranks' work"),
])
def test_rank_flag_mistakes_are_one_line(tmp_path, flags, message):
    r = run_cli("--input", PARQUETS[0], "--local-dir", tmp_path / "o", *flags)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"fineweb.py: error: {message}")


@needs_data
def test_parts_of_another_run_are_refused(tmp_path):
    out = tmp_path / "o"
    r = run_cli("--input", *PARQUETS, "--local-dir", out, "--rank", 0, "--world-size", 2)
    assert r.returncode == 0
    r = run_cli("--input", *PARQUETS, "--local-dir", out, "--rank", 1, "--world-size", 2, "--format", "llmc")
    assert r.returncode == 1
    assert r.stderr.strip() == (f"fineweb.py: error: {out}/parts holds parts of another run (settings differs); "
                                "rerun with the same settings, or --overwrite to start over")


# ---------------------------------------------------------------------------------------------
# Ray: a local 2-CPU cluster inside a loopback-only network namespace

def _ray_ready():
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (pip install -r requirements-ray.txt)"
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return "needs root with unshare and ip, to keep Ray inside a loopback-only network namespace"
    return None


needs_ray = pytest.mark.skipif(_ray_ready() is not None, reason=str(_ray_ready()))


def _session_pids(sid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    pids.append(int(d))
            except ProcessLookupError:
                pass
    return pids


class Isolated:
    """`python fineweb.py ARGS` in a new session and network namespace with only lo; every process
    of the session is killed when it ends (Ray agents can outlive their driver)."""

    def __init__(self, args, tmp_path, env=None, before=""):
        """before: shell commands run first inside the namespace (e.g. start a loopback Hub)."""
        self.raytmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
        env = dict(env or os.environ, RAY_TMPDIR=self.raytmp, PYTHONUNBUFFERED="1")
        self.out = open(tmp_path / f"isolated{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen(
            ["unshare", "-n", "sh", "-c", f'ip link set lo up && {before} exec "$0" "$@"',
             sys.executable, str(REPO / "fineweb.py"), *map(str, args)],
            stdout=self.out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait(self, timeout=300):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill_session()
        self.out.seek(0)
        return self.proc.returncode, self.out.read()

    def kill_session(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        deadline = time.monotonic() + 10
        while (pids := _session_pids(self.proc.pid)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        shutil.rmtree(self.raytmp, ignore_errors=True)


@needs_ray
@needs_data
@pytest.mark.parametrize("fmt", ["npy", "megatron"])
def test_ray_engine_is_byte_identical_to_local(tmp_path, inputs, fmt):
    """megatron: shards of whole documents, cut where the parts' documents begin, with their .idx files."""
    args = ["--input", inputs / "pq", "--format", fmt, "--shard-size", "250K"]
    ref = single(tmp_path, "one", *args)
    out = tmp_path / "ray"
    job = Isolated([*args, "--engine", "ray", "--nprocs", 2, "--local-dir", out], tmp_path)
    code, log = job.wait()
    assert code == 0, log
    assert "ray: 4 of 4 files to tokenize on 2 CPUs" in log and "done: " in log
    outputs_equal(ref, out)


@needs_ray
@needs_data
def test_ray_task_whose_worker_is_killed_is_retried(tmp_path, inputs):
    """SIGKILL the Ray worker in the middle of writing a part (found by the pid in its temporary
    file name): Ray reruns the task and the output is still identical to a local run."""
    d = tmp_path / "txt"
    d.mkdir()
    text = TXT.read_bytes()
    for i in range(3):
        (d / f"{i}.txt").write_bytes(text[i << 20 :] + text[: i << 20])  # 15 MB each: seconds per task
    args = ["--input", d, "--tokenizer-backend", "tiktoken", "--shard-size", "2M"]
    ref = single(tmp_path, "one", *args)
    out = tmp_path / "ray"
    job = Isolated([*args, "--engine", "ray", "--nprocs", 2, "--local-dir", out], tmp_path)
    killed, deadline = None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and job.proc.poll() is None:
        tmps = list((out / "parts").glob(".000001.tokens.*.tmp")) if (out / "parts").exists() else []
        if tmps:  # (its bytes may all wait in the 8 MiB block of a direct write: shardfile.py)
            killed = int(tmps[0].name.rsplit(".", 2)[-2])
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    code, log = job.wait()
    assert killed is not None, log
    assert code == 0, log
    assert f"Worker PID: {killed}" in log and "will be retried" in log  # Ray saw it die and reran it
    assert "8.8.8.8" not in log  # the local cluster did not probe outside addresses
    outputs_equal(ref, out)


@needs_ray
@needs_data
def test_ray_engine_streams_the_hub_with_the_shards_of_one_machine(tmp_path):
    """`--remote` on Ray: each task streams one data file from a loopback Hub (started inside the
    same namespace); the shards equal --input on the same files, the revision is pinned."""
    from hub import hub_env

    ref = single(tmp_path, "ref", "--input", *PARQUETS, "--prefix", "edufineweb", "--shard-size", "400K")
    port = 18080  # a fresh namespace: nothing else listens there
    env = hub_env(type("H", (), {"url": f"http://127.0.0.1:{port}"}), tmp_path)
    server = f"{sys.executable} {REPO / 'tests' / 'hubserver.py'} --port {port} --port-file {tmp_path / 'port'} " \
             f"--repo HuggingFaceFW/fineweb-edu={FINEWEB_EDU} > {tmp_path / 'hub.log'} 2>&1 &" \
             f" while [ ! -s {tmp_path / 'port'} ]; do sleep 0.1; done;"
    out = tmp_path / "edu"
    job = Isolated(["--remote", "10BT", "--engine", "ray", "--nprocs", 2, "--shard-size", "400K", "--local-dir", out],
                   tmp_path, env=env, before=server)
    code, log = job.wait()
    assert code == 0, log
    assert "ray: 3 of 3 files to tokenize" in log
    assert {f: (out / f).read_bytes() for f in os.listdir(out) if f.endswith(".bin")} == \
        {f: (ref / f).read_bytes() for f in os.listdir(ref) if f.endswith(".bin")}
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] and len(m["source"]["revision"]) == 40


def test_importing_the_tool_never_imports_ray(tmp_path):
    code = ("import sys; import tokshards.cli, tokshards.cluster, tokshards.assemble, tokshards.parts, "
            "tokshards.pipeline, tokshards.hub; tokshards.cli.build_parser(); print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@needs_data
def test_engine_ray_without_ray_installed_says_how_to_get_it(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    r = run_cli("--input", PARQUETS[0], "--local-dir", tmp_path / "o", "--engine", "ray", env=env)
    assert r.returncode == 1
    assert r.stderr == "fineweb.py: error: --engine ray needs Ray: pip install -r requirements-ray.txt\n"


@pytest.mark.skipif(not TXT.exists(), reason=f"sample text not found at {TXT}")
def test_a_rank_checks_the_room_for_its_part_before_tokenizing(tmp_path):
    """A rank writes each part into the output directory: with too little room there (the disk reports
    1,000 bytes free) it stops at once in one line, leaving no part; --no-disk-check goes on."""
    text = tmp_path / "docs.txt"
    with open(TXT, "rb") as f:
        text.write_bytes(f.read(300_000))
    small = ("import shutil, sys; real = shutil.disk_usage; "
             "shutil.disk_usage = lambda p: real(p)._replace(free=1000); "
             "sys.argv[0] = 'fineweb.py'; from tokshards import command; command.main()")
    out = tmp_path / "out"
    args = ["--input", str(text), "--shard-size", "100K", "--nprocs", "1", "--local-dir", str(out),
            "--rank", "0", "--world-size", "1"]
    r = subprocess.run([sys.executable, "-c", small, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    need = int(text.stat().st_size / 4.4) * 2 + (1 << 20)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"fineweb.py: error: the part of docs.txt is written in {out / 'parts'}: about {need / 1e6:.1f} MB needed, "
        "1.0 kB free; free some space, or skip this check with --no-disk-check"], r.stderr
    assert sorted(os.listdir(out / "parts")) == ["job.json"]
    r = subprocess.run([sys.executable, "-c", small, *args, "--no-disk-check"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "000000.json" in os.listdir(out / "parts")


@needs_data
def test_a_later_hub_file_without_the_text_field_is_one_line(tmp_path, jsonl_hub):
    """datasets' streaming path (not parquet): a later file without the text field stops the run with one
    line naming it, not a KeyError."""
    repo = tmp_path / "repo"
    shutil.copytree(jsonl_hub, repo)
    f = repo / "data" / "part" / "002.jsonl"
    f.write_text("".join(json.dumps({"body": json.loads(line)["text"]}) + "\n"
                         for line in f.read_text(encoding="utf-8").splitlines()), encoding="utf-8")
    r = run_cli("--dataset", repo, "--remote", "default", "--local-dir", tmp_path / "o", "--nprocs", "1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith("fineweb.py: error: "), r.stderr[-3000:]
    assert "002.jsonl" in lines[-1] and "'text'" in lines[-1], lines[-1]
    assert "Traceback" not in r.stderr
