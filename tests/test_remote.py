"""The real Hub path (`--remote`, `--dataset REPO`) against the project's loopback Hub (tests/hubserver.py).

Every test runs the real command in a subprocess with HF_ENDPOINT pointing at a server on 127.0.0.1
that the test starts and stops. Shards must be byte-identical to `--input` on the same parquet files,
whatever network fault is injected.
"""
import json
import os

import pytest

from conftest import FINEWEB_EDU, PARQUETS, REPO, needs_data, run_cli
from hub import hub_env, start_hub

pytestmark = needs_data
REPOS = {"HuggingFaceFW/fineweb-edu": str(FINEWEB_EDU), "someone/fineweb-copy": str(FINEWEB_EDU)}
SHARD = "500K"  # 3.5M tokens -> 8 shards: several shards per file, boundaries inside files


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same documents through --input: what every remote run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    r = run_cli("--input", *PARQUETS, "--shard-size", SHARD, "--prefix", "edufineweb", "--local-dir", out,
                "--quiet", "--nprocs", "1")
    assert r.returncode == 0, r.stderr
    return {f: (out / f).read_bytes() for f in os.listdir(out) if f.endswith(".bin")}


@pytest.fixture
def hub(tmp_path):
    with start_hub(REPOS, tmp_path) as h:
        yield h


def files_of(d):
    return {f: (d / f).read_bytes() for f in os.listdir(d) if f.endswith(".bin")}


def remote(hub, tmp_path, *args, env_extra=None):
    env = hub_env(hub, tmp_path, timeout=2)  # a stalled read times out after 2 s
    env["FINEWEB_RETRY_BASE_SECONDS"] = "0.05"
    env.update(env_extra or {})
    return run_cli("--shard-size", SHARD, "--nprocs", "1", *args, cwd=tmp_path, env=env)


def test_remote_sample_10BT_equals_input(hub, tmp_path, reference):
    r = remote(hub, tmp_path, "--remote", "sample-10BT")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "edu_fineweb10B"
    assert files_of(out) == reference
    m = json.loads((out / "manifest.json").read_text())
    sha = m["source"]["revision"]
    assert len(sha) == 40 and m["source"]["dataset"] == "HuggingFaceFW/fineweb-edu"
    # `main` was resolved once; every data file was read at that commit
    data_reads = [e["path"] for e in hub.log() if e["path"].endswith(".parquet")]
    assert data_reads and all(f"/resolve/{sha}/" in p for p in data_reads)
    assert all(e["client"].startswith("127.0.0.1") for e in hub.log())


@pytest.mark.parametrize("readers", [1, 3])
def test_readers_download_files_at_once_with_the_same_bytes(hub, tmp_path, reference, readers):
    """--readers 3: the three data files stream at the same time (a capped bandwidth makes each body
    take ~0.3 s), a failure in a file read ahead is retried there, and the shards do not change.
    --readers 1 is the control: one file after the other."""
    hub.faults(bandwidth=800_000, short_after=50_000, match="*002_00000.parquet", range_match="bytes=4-*")
    r = remote(hub, tmp_path, "--remote", "10BT", "--readers", readers)
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference
    assert r.stderr.count("network: ") == 1 and "streaming 002_00000.parquet" in r.stderr
    bodies = {}
    for e in hub.log():
        if e["path"].endswith(".parquet") and e["status"] == 206 and (e["range"] or "").startswith("bytes=4-"):
            bodies.setdefault(e["path"].rsplit("/", 1)[1], (e["t"], e["t_end"]))
    (s0, e0), (s1, e1) = bodies["000_00000.parquet"], bodies["001_00000.parquet"]
    overlapped = s1 < e0 and s0 < e1
    assert overlapped == (readers > 1), bodies


def test_any_dataset_repo_and_short_name(hub, tmp_path, reference):
    r = remote(hub, tmp_path, "--dataset", "someone/fineweb-copy", "--remote", "sample-10BT", "--prefix", "edufineweb")
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "fineweb_copy_sample-10BT") == reference


def test_resume_reads_the_pinned_sha_and_skips_done_files(hub, tmp_path, reference):
    """Extending a --max-tokens run resumes inside file 001: file 000 is not downloaded again."""
    r = remote(hub, tmp_path, "--remote", "10BT", "--max-tokens", "2700K")
    assert r.returncode == 0, r.stderr
    hub.reset()
    r = remote(hub, tmp_path, "--remote", "10BT")
    assert r.returncode == 0, r.stderr
    assert "keeping 5 complete shards" in r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference
    bodies = [e for e in hub.log() if e["path"].endswith(".parquet") and (e.get("range") or "").startswith("bytes=4-")]
    assert bodies and not any("000_00000" in e["path"] for e in bodies), [e["path"] for e in bodies]
    # `main` is not looked up again: the resumed run reads the commit recorded in the manifest
    sha = json.loads((tmp_path / "edu_fineweb10B" / "manifest.json").read_text())["source"]["revision"]
    paths = [e["path"] for e in hub.log()]
    assert not any("/main" in p for p in paths), [p for p in paths if "/main" in p]
    assert any(f"/revision/{sha}" in p for p in paths)


@pytest.mark.parametrize("fault,reaches_tool", [
    # pyarrow OSError "File too short": no client retries it
    (dict(match="*001_00000.parquet", short_after=50_000, range_match="bytes=4-*"), True),
    # a truncated footer: ArrowInvalid, no client retries it
    (dict(match="*001_00000.parquet", short_after=30_000, range_match="bytes=3*"), True),
    # 503 beyond huggingface_hub's 5 retries: datasets does not retry 503 at all
    (dict(match="*002_00000.parquet", status=503, status_count=7), True),
    # the revision lookup at start is never retried by the client
    (dict(api_status=503, api_count=2, api_match="/revision/"), True),
    # 500 beyond huggingface_hub's 5 retries: datasets raises at once
    (dict(match="*001_00000.parquet", status=500, status_count=7), True),
    # the tree listing at start, beyond huggingface_hub's retries
    (dict(api_status=503, api_count=6, api_match="%2F10BT"), True),
    # a connection closed early while Content-Length promised more; a stall past the read timeout
    # (False: the clients may absorb it; only the bytes are checked)
    (dict(match="*001_00000.parquet", trunc_after=5000, trunc_count=8), False),
    (dict(match="*002_00000.parquet", stall_after=1000, stall_secs=4, stall_count=1), False),
    # a connection dropped during the body (the tool's retry; huggingface_hub's own retries come before
    # the headers, as with the 429s): the bytes must not change
    (dict(match="*001_00000.parquet", drop_after=1000, drop_count=8), False),
    (dict(match="*002_00000.parquet", status=429, status_count=7, retry_after=0), False),
])
def test_faults_cost_nothing(hub, tmp_path, reference, fault, reaches_tool):
    hub.faults(**fault)
    r = remote(hub, tmp_path, "--remote", "10BT")
    assert r.returncode == 0, r.stderr
    assert sum(hub.fired().values()) > 0, "the fault never fired"
    if reaches_tool:  # the tool's own retry: one line saying what happened
        assert "network:" in r.stderr and "retry 1/20" in r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference


def test_exhausted_budget_exits_with_cause_then_resumes(hub, tmp_path, reference):
    hub.faults(match="*002_00000.parquet", short_after=1000, short_count=-1, range_match="bytes=4-*")
    r = remote(hub, tmp_path, "--remote", "10BT", "--retries", "2")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("fineweb.py: error: streaming 002_00000.parquet failed 3 times") and "rerun the same command" in last
    hub.faults()
    r = remote(hub, tmp_path, "--remote", "10BT")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference


def test_token_is_sent_when_set(tmp_path, reference):
    with start_hub(REPOS, tmp_path, require_token="sekrit") as hub:
        r = remote(hub, tmp_path, "--remote", "10BT", "--max-tokens", "1K")
        assert r.returncode == 1 and "HF_TOKEN" in r.stderr.strip().splitlines()[-1]
        r = remote(hub, tmp_path, "--remote", "10BT", env_extra={"HF_TOKEN": "sekrit"})
        assert r.returncode == 0, r.stderr
        assert files_of(tmp_path / "edu_fineweb10B") == reference


@pytest.mark.parametrize("args,env,needle", [
    (["--dataset", "nobody/missing"], {}, "not found on the Hub"),
    (["--remote", "10BT", "--revision", "v9.9"], {}, "revision not found"),
    (["--remote", "10BT"], {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
    (["--dataset", "someone/fineweb-copy", "--remote", "nosuch"], {}, "no config 'nosuch'"),
    (["--remote", "10BT", "--text-column", "body"], {}, "no column 'body'"),
])
def test_user_errors_are_one_line(hub, tmp_path, args, env, needle):
    r = remote(hub, tmp_path, *args, env_extra=env)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fineweb.py: error: ") and needle in lines[0], r.stderr


def test_a_slow_consumer_does_not_make_the_reader_download_ahead(tmp_path):
    """Tokenizing is slower than the network: the reader must fetch one row group at a time, not
    the whole file in the background (datasets' streaming reader did: apache/arrow#39808)."""
    import shutil
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "repo"
    shutil.copytree(FINEWEB_EDU / "data", repo / "data")
    shutil.copy(FINEWEB_EDU / "README.md", repo / "README.md")
    (repo / "sample" / "10BT").mkdir(parents=True)
    table = pa.concat_tables(pq.read_table(f) for f in PARQUETS)
    path = repo / "sample" / "10BT" / "000_00000.parquet"
    pq.write_table(table, path, row_group_size=100)  # 25 row groups of ~140 KB
    size = path.stat().st_size
    code = """if 1:
        import sys, time
        from tokshards.hub import HubSource
        src = HubSource("HuggingFaceFW/fineweb-edu", "sample-10BT", None, "text", retries=0)
        batches = src.file_batches(0)
        next(batches)
        print("first batch", flush=True)
        time.sleep(3)  # a slow consumer
        print("woke", flush=True)
        """
    with start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, tmp_path) as hub:
        r = subprocess.run([sys.executable, "-c", code], env=hub_env(hub, tmp_path), cwd=str(REPO),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "woke" in r.stdout, r.stderr
        got = 0
        for e in hub.log():
            if e["path"].endswith("000_00000.parquet") and e["method"] == "GET" and e["status"] == 206:
                a, b = (int(x) for x in e["note"].split()[1].split("/")[0].split("-"))
                got += b - a + 1
    assert 0 < got < size / 4, (got, size)  # the footer and the first row group or two, not the file


def test_quiet_silences_the_client_libraries_retry_lines_too(hub, tmp_path, reference):
    """--quiet: only errors. huggingface_hub logs its own retries ("Retrying in 1s [Retry 1/5]");
    those are silenced with the tool's."""
    hub.faults(match="*001_00000.parquet", status=503, status_count=2)
    r = remote(hub, tmp_path, "--remote", "10BT")
    assert r.returncode == 0 and "Retry" in r.stderr, r.stderr  # the fault is seen without --quiet
    hub.faults(match="*002_00000.parquet", status=503, status_count=2)
    r = remote(hub, tmp_path, "--remote", "10BT", "--quiet", "--local-dir", tmp_path / "q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert sum(hub.fired().values()) > 0
    assert files_of(tmp_path / "q") == reference


# ---- row groups read by the workers themselves (the main process reads only footers) ----

@pytest.mark.parametrize("nprocs,readers", [(2, None), (2, 3), (0, None)])
def test_workers_read_row_groups_with_the_bytes_of_input(hub, tmp_path, reference, nprocs, readers):
    extra = ["--readers", readers] if readers else []
    r = run_cli("--shard-size", SHARD, "--nprocs", nprocs, "--remote", "10BT", *extra, cwd=tmp_path,
                env=dict(hub_env(hub, tmp_path, timeout=2), FINEWEB_RETRY_BASE_SECONDS="0.05"))
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference


@pytest.mark.parametrize("fault", [
    dict(match="*001_00000.parquet", status=503, status_count=7, range_match="bytes=4-*"),
    dict(match="*002_00000.parquet", drop_after=1000, drop_count=8, range_match="bytes=4-*"),
    dict(match="*000_00000.parquet", short_after=50_000, range_match="bytes=4-*"),
    dict(match="*001_00000.parquet", norange=True, norange_count=2, range_match="bytes=4-*"),
])
def test_a_fault_in_a_workers_row_group_read_is_retried_there(hub, tmp_path, reference, fault):
    """The data ranges (bytes=4-...) are read by the worker processes: a fault there is retried in the
    worker, logged through the main process in one line, and costs nothing."""
    hub.faults(**fault)
    r = run_cli("--shard-size", SHARD, "--nprocs", 2, "--remote", "10BT", cwd=tmp_path,
                env=dict(hub_env(hub, tmp_path, timeout=2), FINEWEB_RETRY_BASE_SECONDS="0.05"))
    assert r.returncode == 0, r.stderr
    assert sum(hub.fired().values()) > 0
    name = fault["match"].lstrip("*")
    lines = [x for x in r.stderr.splitlines() if x.startswith("network: ")]
    if "short_after" in fault or "norange" in fault:  # no client retries these: the tool's retry, in the worker
        assert lines and all(f"streaming {name}" in x for x in lines), r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference


def test_a_worker_killed_mid_task_is_one_line_and_the_rerun_resumes(hub, tmp_path, reference):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    hub.faults(bandwidth=400_000)  # slow bodies: the workers are busy downloading
    env = dict(hub_env(hub, tmp_path, timeout=20), FINEWEB_RETRY_BASE_SECONDS="0.05")
    cmd = [sys.executable, str(REPO / "fineweb.py"), "--shard-size", SHARD, "--nprocs", "2", "--remote", "10BT"]
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        workers = [c for c in psutil.Process(p.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        if len(workers) == 2 and (tmp_path / "edu_fineweb10B" / "manifest.json").exists():
            break
        assert p.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    workers[0].send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert p.returncode == 1 and lines[-1].startswith("fineweb.py: error: a tokenizer worker process died"), err
    assert "Traceback" not in err
    hub.faults()
    r = run_cli(*cmd[2:], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference


def test_a_row_group_is_one_request(hub, tmp_path, reference):
    """pyarrow asks for each column chunk apart (text, then token_count): a request each, and on the real
    Hub each request is a redirect as well. A worker reads the row group's wanted columns in one GET."""
    import pyarrow.parquet as pq

    from tokshards.hub import row_group_span

    r = remote(hub, tmp_path, "--remote", "10BT", "--nprocs", 2)
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference
    files = sorted((FINEWEB_EDU / "sample" / "10BT").glob("*.parquet"))
    for path in files:
        md = pq.ParquetFile(path).metadata
        ranges = [e["range"] for e in hub.log() if e["path"].endswith("/" + path.name) and e["range"]]
        starts = [int(x.split("=")[1].split("-")[0]) for x in ranges]
        for k in range(md.num_row_groups):
            a, b = row_group_span(md, k, ("text", "token_count"))
            assert ranges.count(f"bytes={a}-{b - 1}") == 1, (path.name, ranges)
            assert not [s for s in starts if a < s < b - 64 * 1024], (path.name, ranges)  # no chunk read apart
    assert len(files) > 1


def test_the_hub_is_asked_for_each_thing_once(hub, tmp_path, reference):
    """The revision, each directory's listing and each file's footer are asked for once in a run (by the
    main process), however many workers and fetch threads read the row groups: the Hub rate-limits API
    calls, and a worker's HfFileSystem would look the revision up and list the directory in each thread."""
    import pyarrow.parquet as pq

    r = remote(hub, tmp_path, "--remote", "10BT", "--nprocs", 2, "--readers", 4)
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "edu_fineweb10B") == reference
    log = hub.log()
    asked = [" ".join((e["method"], e["path"], e["range"] or "")) for e in log]
    assert sorted(a for a in asked if asked.count(a) > 1) == [], asked
    assert len([a for a in asked if "/revision/" in a]) == 2, asked  # `main`, then the sha it resolved to
    for path in (FINEWEB_EDU / "sample" / "10BT").glob("*.parquet"):
        reads = [e for e in log if e["path"].endswith("/" + path.name)]
        assert len(reads) == 1 + pq.ParquetFile(path).metadata.num_row_groups, reads  # a footer, each row group


def test_a_download_url_is_the_one_hffilesystem_reads(tmp_path):
    """resolve_url makes, without a request, the URL HfFileSystem reads a file at, for names that need
    quoting too; RangeFile reads the file's bytes there, one GET per read; a server that ignores the
    range is found out from its status, before the whole file comes down."""
    import subprocess
    import sys

    repo = tmp_path / "repo"
    names = ["d/plain.parquet", "d/with space+plus#.parquet", "d/é~ü(1)%25.parquet", "d/big.parquet"]
    for i, name in enumerate(names):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(bytes(range(256)) * (4000 if name.endswith("big.parquet") else i + 3))
    code = f"""
import json, time
from huggingface_hub import HfApi, HfFileSystem
from tokshards.hubrange import RangeFile, open_hub_file, resolve_url
sha = HfApi().dataset_info("o/odd").sha
paths = [f"hf://datasets/o/odd@{{sha}}/{{name}}" for name in {names!r}]
urls = [resolve_url(p) for p in paths]  # before HfFileSystem is asked anything
print(json.dumps([u == HfFileSystem().url(p[len("hf://"):]) for u, p in zip(urls, paths)]))
for p in paths[:3]:
    with open_hub_file(p) as f:
        f.seek(250)
        print(json.dumps([f.url, f.size, list(f.read(10)), f.tell()]))
print("FAULTS", flush=True)
input()
t = time.monotonic()
try:
    RangeFile(urls[3], 256 * 4000).read(10)
except OSError as e:
    print(json.dumps([str(e), time.monotonic() - t]))
"""
    with start_hub({"o/odd": str(repo)}, tmp_path) as h:
        p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=hub_env(h, tmp_path), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        for line in p.stdout:
            if line.startswith("FAULTS"):
                before = h.log()
                h.reset()
                h.faults(match="*big.parquet", norange=True, norange_count=-1, bandwidth=20_000)  # 51 s whole
                p.stdin.write("\n")
                p.stdin.flush()
                continue
            lines.append(json.loads(line))
        err = p.stderr.read()
        assert p.wait(timeout=120) == 0, err
        assert lines[0] == [True] * 4
        assert [row[1:] for row in lines[1:4]] == [[256 * (i + 3), list(range(250, 256)) + [0, 1, 2, 3], 260]
                                                   for i in range(3)]
        assert len({row[0] for row in lines[1:4]}) == 3
        ranges = [e["range"] for e in before if "/resolve/" in e["path"] and e["path"].endswith(".parquet")]
        assert ranges == ["bytes=250-259"] * 3  # one GET per read, and no other download of the files
        message, seconds = lines[4]
        assert "bytes=0-9" in message and "HTTP 200" in message and "not honoured" in message and seconds < 10
        reads = [e for e in h.log() if e["path"].endswith("big.parquet")]
        assert len(reads) == 1 and reads[0]["range"] == "bytes=0-9", reads  # no client retry of a 200


def test_a_range_read_that_goes_wrong_fails_once_and_says_how(hub, tmp_path):
    """RangeFile against a server (on 127.0.0.1, in this process) that answers badly: an error whose body
    is cut off is the network's error, raised once (not huggingface_hub's "generator didn't stop after
    throw()"); other bytes than asked for are unreadable data; a data file gone at its pinned revision
    is the one-line UserError."""
    import http.server
    import subprocess
    import sys
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            status, headers, body = {
                "/cut404": (404, {"Content-Length": "1000"}, b'{"error": "'),  # then the connection closes
                "/shifted": (206, {"Content-Range": "bytes 101-110/1000", "Content-Length": "10"}, bytes(10)),
                "/gone": (404, {"Content-Length": "2"}, b"{}"),
            }[self.path]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    code = f"""
import json
from tokshards.errors import UserError
from tokshards.hub import is_transient, raise_if_user_error
from tokshards.hubrange import RangeFile
from tokshards.retry import is_data_error
for name in ["cut404", "shifted", "gone"]:
    f = RangeFile("http://127.0.0.1:{server.server_port}/" + name, 1000)
    f.seek(100)
    try:
        f.read(10)
    except Exception as e:
        try:
            raise_if_user_error(e, "o/d", None, "abc", False, "hf://datasets/o/d@abc/d.parquet")
            line = None
        except UserError as u:
            line = str(u)
        print(json.dumps([type(e).__name__, str(e), is_transient(e), is_data_error(e), line, f.tell()]))
"""
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=hub_env(hub, tmp_path, timeout=5),
                           capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 0, r.stderr
    cut, shifted, gone = [json.loads(x) for x in r.stdout.splitlines()]
    assert cut[0] != "RuntimeError" and cut[2] and not cut[3] and cut[4] is None, cut  # the network: retried
    assert shifted[:4] == ["OSError", "asked for bytes=100-109 of 1000 bytes, got bytes 101-110/1000", True, True]
    assert gone[4] == ("the Hub no longer serves hf://datasets/o/d@abc/d.parquet as listed at start (HTTP 404): "
                       "check 'o/d' on the Hub, then rerun the same command"), gone
    assert [row[5] for row in (cut, shifted, gone)] == [100] * 3  # nothing read
    assert seen == ["/cut404", "/shifted", "/gone"]  # one request each: no retry inside the client


def test_a_data_file_gone_from_the_hub_is_one_line(hub, tmp_path):
    """A row group's read answered 404 (in a worker) ends the run in one line, not retried."""
    hub.faults(match="*001_00000.parquet", status=404, status_count=-1, range_match="bytes=4-*")
    r = remote(hub, tmp_path, "--remote", "10BT", "--nprocs", "2")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith("fineweb.py: error: the Hub no longer serves hf://"), r.stderr
    assert "001_00000.parquet" in lines[-1] and "(HTTP 404)" in lines[-1], lines[-1]
    assert "Traceback" not in r.stderr and not any(x.startswith("network: ") for x in lines), r.stderr
    assert hub.fired() == {"status sample/10BT/001_00000.parquet": 1}, hub.fired()


def test_a_span_file_serves_its_range_and_reads_the_rest(tmp_path):
    """SpanFile: pyarrow reads of the row group's span come from memory, any other from the file; a
    span that would read far more than the wanted columns (a big column between them) is not taken."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokshards.hub import read_span, row_group_span

    path = tmp_path / "t.parquet"
    n = 3000
    pq.write_table(pa.table({"text": [f"doc {i} " * 3 for i in range(n)], "big": [os.urandom(200) for _ in range(n)],
                             "token_count": list(range(n))}), path, row_group_size=1000)
    pf = pq.ParquetFile(path)
    md, size = pf.metadata, path.stat().st_size
    assert row_group_span(md, 1, ("text", "token_count")) is None  # "big" between them: two requests stay
    a, b = row_group_span(md, 1, ("text", "big"))
    want = pf.read_row_group(1, columns=["text", "big"])

    class Counting(io.FileIO):
        reads = 0

        def read(self, n=-1):
            Counting.reads += 1
            return super().read(n)

    with Counting(path, "rb") as f:
        src = read_span(f, size, (a, b))
        assert Counting.reads == 1
        assert pq.ParquetFile(src, metadata=md, pre_buffer=True).read_row_group(1, columns=["text", "big"]).equals(want)
        assert Counting.reads == 1  # all of it from the span
        assert pq.ParquetFile(src, metadata=md).read_row_group(2, columns=["text"]).equals(
            pf.read_row_group(2, columns=["text"]))
        assert Counting.reads > 1  # another row group: from the file
        src.seek(a - 2)
        assert bytes(src.read(4)) == path.read_bytes()[a - 2 : a + 2]  # across the span's edge: the file's bytes
    with open(path, "rb") as f, pytest.raises(OSError, match="cut short"):
        read_span(f, size, (size - 10, size + 10))  # fewer bytes than asked: a data error, retried


def test_footers_are_read_whole_however_large(tmp_path):
    """read_footer: one read of the last 64 KiB, and one more for a larger footer (many row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokshards.hub import parse_footer, read_footer

    for rows, per_group in ((100, 100), (3000, 1)):  # a 1-group file; 3000 groups: a footer far over 64 KiB
        path = tmp_path / f"f{per_group}.parquet"
        pq.write_table(pa.table({"text": [f"document {i} " * 5 for i in range(rows)]}), path, row_group_size=per_group)
        want = pq.ParquetFile(path).metadata
        with open(path, "rb") as f:
            raw, md = read_footer(f, path.stat().st_size)
        assert md.equals(want) and parse_footer(raw).equals(want)
        assert (len(raw) > 64 << 10) == (per_group == 1), len(raw)
    with open(path, "rb") as f:  # a file cut short: a data error (retried, then named as damaged)
        data = f.read()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with open(tmp_path / "cut.parquet", "rb") as f, pytest.raises(OSError, match="no PAR1"):
        read_footer(f, len(data) // 2)


def test_a_file_that_never_reads_is_named_as_damaged_after_three_tries(hub, tmp_path):
    """Unreadable data (here: every body of 002 cut short, as a damaged file on the server would be)
    is not retried for --retries 20 / 30 minutes as a network fault: three tries, then one line."""
    hub.faults(match="*002_00000.parquet", short_after=1000, short_count=-1, range_match="bytes=4-*")
    r = remote(hub, tmp_path, "--remote", "10BT")  # the default --retries 20 --retry-time 1800
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith("fineweb.py: error: streaming 002_00000.parquet failed 3 times")
    assert "data that cannot be read" in lines[-1] and "damaged" in lines[-1], lines[-1]
    assert sum(x.startswith("network: ") for x in lines) == 2, r.stderr


def repo_with_file_changed(tmp_path, name, change):
    """A copy of the FineWeb-Edu repo whose data file `name` is rewritten as change(table) makes it."""
    import shutil

    import pyarrow.parquet as pq

    repo = tmp_path / "repo"
    shutil.copytree(FINEWEB_EDU, repo)
    path = repo / "sample" / "10BT" / name
    pq.write_table(change(pq.read_table(path)), path)
    return repo


def test_a_later_file_without_token_count_is_read_and_its_shards_record_no_sum(tmp_path):
    """The columns are checked on the first file; a later file without token_count (the cross-check
    column) is read without it, and a shard holding any of its documents records no sum rather than a
    part of one. The bytes are those of --input on the same files."""
    repo = repo_with_file_changed(tmp_path, "001_00000.parquet", lambda t: t.drop_columns(["token_count"]))
    with start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, tmp_path) as hub:
        r = remote(hub, tmp_path, "--remote", "10BT")
    assert r.returncode == 0, r.stderr
    local = tmp_path / "local"
    files = sorted((repo / "sample" / "10BT").glob("*.parquet"))
    assert run_cli("--input", *files, "--shard-size", SHARD, "--prefix", "edufineweb", "--local-dir", local,
                   "--quiet", "--nprocs", "1").returncode == 0
    assert files_of(tmp_path / "edu_fineweb10B") == files_of(local)
    whole = tmp_path / "whole"  # the unchanged files: every shard's true sum
    assert run_cli("--input", *PARQUETS, "--shard-size", SHARD, "--local-dir", whole, "--quiet",
                   "--nprocs", "1").returncode == 0
    got = [s["token_count_sum"] for s in json.loads((tmp_path / "edu_fineweb10B" / "manifest.json").read_text())["shards"]]
    true = [s["token_count_sum"] for s in json.loads((whole / "manifest.json").read_text())["shards"]]
    assert len(got) == len(true) and all(g is None or g == t for g, t in zip(got, true)), (got, true)
    assert None in got and any(g is not None for g in got), got


def test_a_later_file_without_the_text_column_is_one_line(tmp_path):
    repo = repo_with_file_changed(tmp_path, "002_00000.parquet", lambda t: t.rename_columns(
        ["body" if c == "text" else c for c in t.column_names]))
    with start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, tmp_path) as hub:
        r = remote(hub, tmp_path, "--remote", "10BT")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines[-1].startswith("fineweb.py: error: "), r.stderr
    assert "002_00000.parquet" in lines[-1] and "no column 'text'" in lines[-1], lines[-1]
    assert "Traceback" not in r.stderr


def test_ranks_over_a_later_file_without_token_count_assemble_the_same_shards(tmp_path):
    """--rank/--world-size write a part per file: the file without token_count gives a part without
    counts, and the assembled shards are byte-identical to one machine's; a shard with a range of that
    part records no sum, the others the one machine's."""
    repo = repo_with_file_changed(tmp_path, "001_00000.parquet", lambda t: t.drop_columns(["token_count"]))
    with start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, tmp_path) as hub:
        one = remote(hub, tmp_path, "--remote", "10BT", "--local-dir", tmp_path / "one")
        ranks = [remote(hub, tmp_path, "--remote", "10BT", "--local-dir", tmp_path / "ranks", "--rank", r,
                        "--world-size", 2) for r in (0, 1)]
    assert one.returncode == 0 and all(r.returncode == 0 for r in ranks), one.stderr + "".join(r.stderr for r in ranks)
    r = run_cli("assemble", tmp_path / "ranks")
    assert r.returncode == 0, r.stderr
    assert files_of(tmp_path / "ranks") == files_of(tmp_path / "one")
    got = [s["token_count_sum"] for s in json.loads((tmp_path / "ranks" / "manifest.json").read_text())["shards"]]
    one = [s["token_count_sum"] for s in json.loads((tmp_path / "one" / "manifest.json").read_text())["shards"]]
    assert len(got) == len(one) and all(g is None or g == o for g, o in zip(got, one)), (got, one)
    assert None in got and any(g is not None for g in got), got
