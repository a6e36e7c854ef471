"""--local-dir s3://bucket/prefix: a one-machine run into a bucket, against a real S3-protocol server on
127.0.0.1 (moto's standalone server, as s3fs's own tests use), started and stopped by PID here.
Byte-identical to the local run; resumes after a SIGKILL at any moment (mid-upload included); survives
the store's faults (a loopback proxy of ours answers 503 SlowDown or drops connections); refuses what
it must in one line; never touches objects it did not write."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import DATA, FINEWEB_EDU, PARQUETS, REPO
from tokshards.outdir import human_bytes

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -r requirements-dev.txt)")
pytest.importorskip("moto", reason="moto is not installed (pip install -r requirements-dev.txt)")

TXT = DATA / "train_fineweb.txt"
pytestmark = pytest.mark.skipif(not TXT.exists(), reason=f"sample text not found at {TXT}")
ARGS = ["--shard-size", "100K", "--nprocs", "1"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the S3 server did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the S3 server did not listen")


class Moto:
    """moto's S3 server on 127.0.0.1, stopped by PID; `env` is what a run needs to reach it."""

    def __init__(self, log_dir, **server_env):
        self.port = free_port()
        self.log = open(log_dir / f"moto{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=self.log, env={**os.environ, **server_env})
        wait_port(self.port, self.proc)
        self.env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
                    "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost",
                    "no_proxy": "127.0.0.1,localhost"}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = Moto(tmp_path_factory.mktemp("moto"))
    try:
        yield server.env
    finally:
        server.stop()


class Store:
    """The test's own view of the bucket (s3fs with the same environment)."""

    def __init__(self, env):
        import s3fs

        self.fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                                    endpoint_url=env["AWS_ENDPOINT_URL"], use_listings_cache=False,
                                    skip_instance_cache=True)

    def files(self, prefix):
        try:
            return {p.rsplit("/", 1)[-1]: self.fs.cat_file(p) for p in self.fs.ls(prefix, detail=False)}
        except FileNotFoundError:
            return {}

    def uploads(self, bucket):
        return self.fs.list_multipart_uploads(bucket)


_buckets = iter(range(10**6))


@pytest.fixture
def bucket(s3):
    """A new empty bucket: (its name, Store)."""
    store = Store(s3)
    name = f"bucket{next(_buckets)}"
    store.fs.mkdir(name)
    return name, store


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """~2 MB of real documents: about 5 shards of 100K tokens."""
    p = tmp_path_factory.mktemp("in") / "docs.txt"
    with open(TXT, "rb") as f:
        data = f.read(2_000_000)
    p.write_bytes(data[: data.rfind(b"\n\n")] + b"\n")
    return p


def run(env, *args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "fineweb.py"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def local_run(tmp_path, text, *extra):
    out = tmp_path / "local"
    r = run(os.environ, "--input", text, *ARGS, *extra, "--local-dir", out)
    assert r.returncode == 0, r.stderr
    return {f: (out / f).read_bytes() for f in os.listdir(out) if not f.startswith(".")}


def same_output(got, want):
    """The shard files byte for byte, and the manifest but for the run's duration. The bucket's lock
    object stays, released (empty), as the local lock file does: the mark of this tool's output."""
    assert got.get(".fineweb.lock", b"") == b""
    got = {k: v for k, v in got.items() if k != ".fineweb.lock"}
    assert sorted(got) == sorted(want)
    for name in want:
        if name == "manifest.json":
            a, b = json.loads(got[name]), json.loads(want[name])
            a.pop("seconds", None), b.pop("seconds", None)
            assert a == b
        else:
            assert got[name] == want[name], name


@pytest.mark.parametrize("fmt", ["bin", "megatron"])
def test_a_run_into_a_bucket_is_the_local_run(s3, bucket, tmp_path, text, fmt):
    name, store = bucket
    stage = tmp_path / "stage"
    stage.mkdir()
    env = {**s3, "TMPDIR": str(stage)}
    r = run(env, "--input", text, *ARGS, "--format", fmt, "--local-dir", f"s3://{name}/edu")
    assert r.returncode == 0, r.stderr
    got = store.files(f"{name}/edu")
    same_output(got, local_run(tmp_path, text, "--format", fmt))
    assert len(got) >= 6 and got[".fineweb.lock"] == b""  # released, and kept
    assert os.listdir(stage) == []  # the staging directory went with the run
    v = run(env, "verify", f"s3://{name}/edu")
    assert v.returncode == 0 and "OK: every shard matches the manifest" in v.stdout, v.stdout + v.stderr
    again = run(env, "--input", text, *ARGS, "--format", fmt, "--local-dir", f"s3://{name}/edu")
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr
    assert store.files(f"{name}/edu") == got


def killer(begin_upload, put_file_of):
    """A fineweb.py that SIGKILLs itself at its n-th upload (KILL_AT=WHERE:N): "mid-upload", once
    `begin_upload` (code defining begin_upload(fs, path)) has left an upload begun, never completed;
    or "after-upload", the shard in the bucket, the manifest not yet. `put_file_of`: the filesystem
    class whose put_file is wrapped."""
    return f"""
import os, signal, sys
from tokshards import command
{begin_upload}
where, n = os.environ["KILL_AT"].split(":")
n = int(n)
seen = []
real_put = {put_file_of}.put_file
def put_file(self, lpath, rpath, *a, **kw):
    seen.append(rpath)
    if where == "mid-upload" and len(seen) == n:
        begin_upload(self, rpath)
        os.kill(os.getpid(), signal.SIGKILL)
    out = real_put(self, lpath, rpath, *a, **kw)
    if where == "after-upload" and len(seen) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
{put_file_of}.put_file = put_file
sys.argv = ["fineweb.py", *sys.argv[1:]]
command.main()
"""


KILLER = killer("""
import s3fs
def begin_upload(fs, path):  # a multipart upload begun, never completed
    bucket, key = path.split("/", 1)
    fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
""", "s3fs.S3FileSystem")


@pytest.mark.parametrize("where", ["mid-upload", "after-upload"])
def test_a_sigkill_while_uploading_then_the_same_command_gives_the_same_bucket(s3, bucket, tmp_path, text, where):
    name, store = bucket
    url = f"s3://{name}/edu"
    for n in (1, 3):  # the first shard (val), a later one
        killed = subprocess.run([sys.executable, "-c", KILLER, "--input", str(text), *ARGS, "--local-dir", url],
                                env={**s3, "KILL_AT": f"{where}:{n}"}, cwd=REPO, capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if where == "mid-upload":
            assert store.uploads(name), "the kill left no unfinished upload to clean"
        assert ".fineweb.lock" in store.files(f"{name}/edu")  # left by the killed run
    r = run(s3, "--input", text, *ARGS, "--local-dir", url)
    assert r.returncode == 0, r.stderr
    assert "is stale (that process is gone)" in r.stderr, r.stderr
    same_output(store.files(f"{name}/edu"), local_run(tmp_path, text))
    assert store.uploads(name) == []  # the unfinished uploads of its names were aborted


def test_killed_at_random_moments_the_bucket_ends_identical(s3, bucket, tmp_path, text):
    import random

    name, store = bucket
    url = f"s3://{name}/edu"
    rng = random.Random(7)
    for _ in range(4):
        p = subprocess.Popen([sys.executable, str(REPO / "fineweb.py"), "--input", str(text), *ARGS,
                              "--local-dir", url], env=s3, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(1.0, 4.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
    r = run(s3, "--input", text, *ARGS, "--local-dir", url)
    assert r.returncode == 0, r.stderr
    same_output(store.files(f"{name}/edu"), local_run(tmp_path, text))


class FaultyProxy:
    """A loopback HTTP proxy in front of the S3 server: every `every`-th request (or, with `burst`
    = (first, n), requests first .. first+n-1) is answered with a 503 SlowDown, or its connection is
    dropped without an answer; the others pass through."""

    def __init__(self, upstream_port, every=4, drop=False, burst=None):
        self.upstream, self.every, self.drop, self.count, self.faults = upstream_port, every, drop, 0, 0
        self.burst = burst
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                if "chunked" not in self.headers.get("Transfer-Encoding", ""):
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = []
                while (n := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    parts.append(self.rfile.read(n))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)

            def _any(self):
                body = self._body()
                with lock:
                    proxy.count += 1
                    if proxy.burst:
                        fault = proxy.burst[0] <= proxy.count < proxy.burst[0] + proxy.burst[1]
                    else:
                        fault = proxy.count % proxy.every == 0
                    proxy.faults += fault
                if fault and proxy.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault:
                    err = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(err)))
                    self.end_headers()
                    if self.command != "HEAD":  # (a HEAD's answer has no body)
                        self.wfile.write(err)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding", "expect", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                # (a HEAD's answer says the object's length, with no body)
                self.send_header("Content-Length", resp.getheader("Content-Length", "0") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("drop", [False, True], ids=["503 SlowDown", "dropped connection"])
def test_the_stores_faults_are_retried_and_the_output_is_the_same(s3, bucket, tmp_path, text, drop):
    name, store = bucket
    proxy = FaultyProxy(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), every=5, drop=drop)
    try:
        env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "AWS_RETRY_MODE": "standard",
               "AWS_MAX_ATTEMPTS": "6"}
        r = run(env, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu")
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr
    assert proxy.faults >= 3
    same_output(store.files(f"{name}/edu"), local_run(tmp_path, text))


@pytest.mark.parametrize("drop", [False, True], ids=["503 SlowDown", "dropped connection"])
def test_a_burst_of_faults_outlasting_the_clients_retries_is_retried_with_a_line_each_time(
        s3, bucket, tmp_path, text, drop):
    """botocore and s3fs keep one quick retry each; what outlasts them is the tool's logged retry."""
    name, store = bucket
    proxy = FaultyProxy(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), drop=drop, burst=(25, 12))
    try:
        env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "FINEWEB_RETRY_BASE_SECONDS": "0.05"}
        r = run(env, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu")
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr
    assert proxy.faults == 12
    retries = [line for line in r.stderr.splitlines() if line.startswith(f"network: s3://{name}/edu (")]
    assert 1 <= len(retries) <= 12 and "; retry 1/20 in " in retries[0], r.stderr
    assert all(("Service Unavailable" in line or "reduce your request rate" in line) != drop for line in retries)
    same_output(store.files(f"{name}/edu"), local_run(tmp_path, text))


def test_merge_quiet_prints_no_retry_lines(s3, bucket, tmp_path, text):
    name, store = bucket
    url = f"s3://{name}/edu"
    assert run(s3, "--input", text, *ARGS, "--local-dir", url).returncode == 0
    said = {}
    for quiet in ([], ["--quiet"]):
        proxy = FaultyProxy(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), burst=(3, 6))
        try:
            env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "FINEWEB_RETRY_BASE_SECONDS": "0.05"}
            r = run(env, "merge", url, "--out", tmp_path / f"m{len(quiet)}", *quiet)
        finally:
            proxy.close()
        assert r.returncode == 0 and proxy.faults == 6, r.stderr
        said[bool(quiet)] = r.stderr + r.stdout
    assert f"network: {url} (" in said[False]
    assert said[True] == ""
    assert (tmp_path / "m0" / "train.bin").read_bytes() == (tmp_path / "m1" / "train.bin").read_bytes()


def test_a_store_that_keeps_failing_ends_in_one_line_and_stays_resumable(s3, bucket, tmp_path, text):
    name, store = bucket
    proxy = FaultyProxy(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), every=1)  # every request: 503
    try:
        env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "FINEWEB_RETRY_BASE_SECONDS": "0.05"}
        r = run(env, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu", "--retries", 3, timeout=120)
    finally:
        proxy.close()
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert [line.split("; retry ")[1].split(" in ")[0] for line in lines[:-1]] == ["1/3", "2/3", "3/3"], r.stderr
    assert lines[-1].startswith(f"fineweb.py: error: s3://{name}/edu (") and "failed 4 times in a row" in lines[-1]
    assert lines[-1].endswith("then rerun the same command to resume"), lines[-1]
    r = run(s3, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu")
    assert r.returncode == 0, r.stderr
    same_output(store.files(f"{name}/edu"), local_run(tmp_path, text))


def test_a_store_failing_mid_run_ends_in_one_line_after_a_brief_tidy_up(s3, bucket, tmp_path, text):
    """Every request from the 30th on fails: the run's call spends --retries (3), then the release of
    the lock tries only briefly (2 retries) before the one line; the rerun resumes."""
    name, store = bucket
    proxy = FaultyProxy(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), burst=(30, 10**9))
    try:
        env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "FINEWEB_RETRY_BASE_SECONDS": "0.05"}
        r = run(env, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu", "--retries", 3, timeout=120)
    finally:
        proxy.close()
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("wrote ")]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    budgets = [line.split("; retry ")[1].split(" in ")[0] for line in lines[:-1]]
    assert budgets[:3] == ["1/3", "2/3", "3/3"] and set(budgets[3:]) <= {"1/2", "2/2"} and budgets[3:], r.stderr
    assert lines[-1].startswith(f"fineweb.py: error: s3://{name}/edu (") and "failed 4 times in a row" in lines[-1]
    r = run(s3, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu")
    assert r.returncode == 0, r.stderr
    same_output(store.files(f"{name}/edu"), local_run(tmp_path, text))


def test_a_rank_checks_the_room_to_stage_its_part_before_tokenizing(s3, bucket, tmp_path, text):
    """A rank writing to a bucket stages each part locally before its upload: with too little room
    there (the disk reports 1,000 bytes free) it stops at once in one line; --no-disk-check goes on."""
    name, store = bucket
    small = ("import shutil, sys; real = shutil.disk_usage; "
             "shutil.disk_usage = lambda p: real(p)._replace(free=1000); "
             "sys.argv[0] = 'fineweb.py'; from tokshards import command; command.main()")
    args = ["--input", str(text), *map(str, ARGS), "--local-dir", f"s3://{name}/edu", "--rank", "0", "--world-size", "1"]
    r = subprocess.run([sys.executable, "-c", small, *args], env=s3, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"fineweb.py: error: the part of docs.txt is written in {tempfile.gettempdir()} before its upload to "
        f"s3://{name}/edu: about {human_bytes(int(text.stat().st_size / 4.4) * 2 + (1 << 20))} needed, 1.0 kB free; "
        "set TMPDIR to a disk with more space, or skip this check with --no-disk-check"], r.stderr
    assert not [k for k in store.files(f"{name}/edu/parts") if k != "job.json"]
    r = subprocess.run([sys.executable, "-c", small, *args, "--no-disk-check"], env=s3, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "000000.json" in store.files(f"{name}/edu/parts")


def test_objects_it_did_not_write_are_refused_or_left_alone(s3, bucket, text):
    name, store = bucket
    theirs = {"edufineweb_train_000001.npy": b"build-nanogpt's shard", "notes.txt": b"mine"}
    for k, v in theirs.items():
        store.fs.pipe_file(f"{name}/edu/{k}", v)
    r = run(s3, "--input", text, *ARGS, "--prefix", "edufineweb", "--local-dir", f"s3://{name}/edu")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"fineweb.py: error: s3://{name}/edu holds shard files this tool did not write (edufineweb_train_000001.npy) "
        "and no manifest of its own; it never deletes files it did not write: use another --local-dir or --prefix, "
        "or move them away"]
    assert store.files(f"{name}/edu") == theirs
    # beside them, under another prefix of names: a run, then --overwrite, leave them as they were
    for extra in ([], ["--overwrite"]):
        r = run(s3, "--input", text, *ARGS, *extra, "--local-dir", f"s3://{name}/edu")
        assert r.returncode == 0, r.stderr
        got = store.files(f"{name}/edu")
        assert {k: got[k] for k in theirs} == theirs and "manifest.json" in got


def test_an_upload_under_a_shard_name_before_this_tool_wrote_there_is_not_aborted(s3, bucket, text):
    """Unfinished uploads are this tool's only once the prefix holds its manifest (written before any
    shard): one already there when a first run starts is another writer's, in progress."""
    name, store = bucket
    key = "edu/docs_train_000009.bin"
    upload = store.fs.call_s3("create_multipart_upload", Bucket=name, Key=key)["UploadId"]
    r = run(s3, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu")
    assert r.returncode == 0, r.stderr
    assert [(u["Key"], u["UploadId"]) for u in store.uploads(name)] == [(key, upload)]


def test_another_runs_output_and_a_live_lock_are_refused(s3, bucket, text):
    name, store = bucket
    url = f"s3://{name}/edu"
    assert run(s3, "--input", text, *ARGS, "--local-dir", url).returncode == 0
    before = store.files(f"{name}/edu")
    r = run(s3, "--input", text, "--shard-size", "70K", "--nprocs", "1", "--local-dir", url)
    assert r.returncode == 1 and "holds a run with shard_size=100000, not 70000" in r.stderr, r.stderr
    store.fs.pipe_file(f"{name}/edu/.fineweb.lock", json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())  # this live process
    r = run(s3, "--input", text, *ARGS, "--overwrite", "--local-dir", url)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"fineweb.py: error: {url} is in use by fineweb.py run on host {socket.gethostname()}, pid {os.getpid()}"), r.stderr
    after = store.files(f"{name}/edu")
    assert {k: v for k, v in after.items() if k != ".fineweb.lock"} == {k: v for k, v in before.items() if k != ".fineweb.lock"}


def test_one_line_for_a_missing_bucket_bad_or_no_credentials_and_no_s3fs(s3, bucket, text, tmp_path):
    r = run(s3, "--input", text, *ARGS, "--local-dir", "s3://no-such-bucket/edu")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "fineweb.py: error: s3://no-such-bucket/edu: the bucket does not exist (The specified bucket does not "
        "exist); create it, or check the name and AWS_ENDPOINT_URL"], r.stderr
    strict = Moto(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0")  # checks every request's key against its IAM
    try:
        r = run({**strict.env, "AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "wrong"}, "--input", text,
                *ARGS, "--local-dir", "s3://bucket0/x")
    finally:
        strict.stop()
    lines = r.stderr.strip().splitlines()  # (the store's reason: a HEAD's answer has no text, a GET's has)
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(
        "fineweb.py: error: s3://bucket0/x: access refused (") and lines[0].endswith(
        "); check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that they may "
        "read and write this bucket"), lines
    assert "wrong" not in r.stderr  # (the secret is never printed)
    bare = {k: v for k, v in s3.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    bare.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    r = run(bare, "--input", text, *ARGS, "--local-dir", "s3://bucket0/x")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "fineweb.py: error: s3://bucket0/x: no credentials found; set AWS_ACCESS_KEY_ID"), r.stderr
    no_s3fs = "import sys; sys.modules['s3fs'] = None; sys.argv[0] = 'fineweb.py'; from tokshards import command; command.main()"
    r = subprocess.run([sys.executable, "-c", no_s3fs, "--input", str(text), "--local-dir", "s3://bucket0/x"], env=s3,
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "fineweb.py: error: s3://bucket0/x: s3:// needs the package s3fs: pip install s3fs"], r.stderr
    for cmd, says in ((["assemble"], "has no parts/job.json"), (["merge", "--out", tmp_path / "m"], "has no manifest.json"),
                      (["inspect"], "has no manifest.json"), (["verify"], "has no manifest.json")):
        r = run(s3, cmd[0], f"s3://{bucket[0]}/x", *cmd[1:])
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr


@pytest.mark.skipif(not PARQUETS, reason=f"real documents not found in {FINEWEB_EDU}")
def test_ranks_with_no_shared_path_meet_in_the_bucket_and_assemble_is_one_machines_run(s3, bucket, tmp_path):
    """3 ranks, each in its own empty working directory and HF_HOME, reading the (loopback) Hub and
    writing parts to the bucket; `assemble s3://...` from a fourth directory: the one-machine bytes."""
    from hub import hub_env, start_hub

    name, store = bucket
    url = f"s3://{name}/edu"
    args = ["--remote", "10BT", "--shard-size", "400K", "--nprocs", "1"]
    with start_hub({"HuggingFaceFW/fineweb-edu": str(FINEWEB_EDU)}, tmp_path) as hub:
        def env():
            return {**hub_env(hub, tmp_path), **{k: v for k, v in s3.items() if k.startswith(("AWS_", "NO_", "no_"))}}

        one = tmp_path / "one"
        one.mkdir()
        r = subprocess.run([sys.executable, str(REPO / "fineweb.py"), *args, "--local-dir", "ref"], cwd=one,
                           env=env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        for rank in (2, 0, 1):
            cwd = tmp_path / f"rank{rank}"
            cwd.mkdir()
            r = subprocess.run([sys.executable, str(REPO / "fineweb.py"), *args, "--local-dir", url, "--rank",
                                str(rank), "--world-size", "3"], cwd=cwd, env=env(), capture_output=True, text=True,
                               timeout=600)
            assert r.returncode == 0, r.stderr
            assert os.listdir(cwd) == []  # nothing local: the parts went to the bucket
        parts = store.files(f"{name}/edu/parts")
        assert {"job.json", "000000.json", "000000.tokens", "000002.json"} <= set(parts)
        cwd = tmp_path / "assembler"
        cwd.mkdir()
        r = subprocess.run([sys.executable, str(REPO / "fineweb.py"), "assemble", url], cwd=cwd, env=env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    ref = one / "ref"
    same_output(store.files(f"{name}/edu"), {f: (ref / f).read_bytes() for f in os.listdir(ref) if f[0] != "."})
    assert store.files(f"{name}/edu/parts") == {}  # parts/ went once the manifest was written


RAY_DRIVER = """
import os, socket, subprocess, sys, time
port, out, repo = int(sys.argv[1]), sys.argv[2], sys.argv[3]
moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    import s3fs
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    fs.mkdir("bucket-ray")
    r = subprocess.run([sys.executable, os.path.join(repo, "fineweb.py"), *sys.argv[4:]])
    os.makedirs(out)
    for p in fs.find("bucket-ray/edu"):  # the bucket lives only inside this namespace: copy it out
        fs.get_file(p, os.path.join(out, p[len("bucket-ray/edu/"):].replace("/", "__")))
    sys.exit(r.returncode)
finally:
    moto.terminate()
"""


def test_ray_engine_into_a_bucket_is_the_local_run(tmp_path, text):
    """--engine ray with --local-dir s3://...: every file a Ray task writing its part into the bucket,
    then the shards assembled as Ray tasks into it. Ray, and so the S3 server, run inside a network
    namespace holding only lo (as the other Ray tests do)."""
    test_cluster = pytest.importorskip("test_cluster")
    why = test_cluster._ray_ready()
    if why:
        pytest.skip(why)
    d = tmp_path / "in"
    d.mkdir()
    data = text.read_bytes()
    for i in range(3):
        (d / f"{i}.txt").write_bytes(data[i * 600_000 : (i + 1) * 600_000])
    args = ["--input", d, *ARGS]
    want = local_run(tmp_path, d)
    out = tmp_path / "got"
    driver = tmp_path / "driver.py"
    driver.write_text(RAY_DRIVER)
    port = 18090  # a fresh namespace: nothing else listens there
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"}

    class Job(test_cluster.Isolated):
        def __init__(self):
            self.raytmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
            self.out = open(tmp_path / "ray.log", "w+")
            self.proc = subprocess.Popen(
                ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, str(driver),
                 str(port), str(out), str(REPO), *map(str, args), "--engine", "ray", "--nprocs", "2",
                 "--local-dir", "s3://bucket-ray/edu"],
                stdout=self.out, stderr=subprocess.STDOUT, env=dict(env, RAY_TMPDIR=self.raytmp, PYTHONUNBUFFERED="1"),
                start_new_session=True)

    code, log = Job().wait()
    assert code == 0, log
    assert "ray: 3 of 3 files to tokenize on 2 CPUs" in log and "done: " in log
    same_output({f: (out / f).read_bytes() for f in os.listdir(out)}, want)


def test_inspect_merge_and_the_loader_on_a_bucket(s3, bucket, tmp_path, text):
    name, store = bucket
    url = f"s3://{name}/edu"
    assert run(s3, "--input", text, *ARGS, "--format", "npy", "--local-dir", url).returncode == 0
    local = tmp_path / "local"
    assert run(s3, "--input", text, *ARGS, "--format", "npy", "--local-dir", local).returncode == 0
    for shard in ("0", "3"):
        a = run(s3, "inspect", url, "--shard", shard, "--docs", "4", "--chars", "120")
        b = run(s3, "inspect", local, "--shard", shard, "--docs", "4", "--chars", "120")
        assert a.returncode == 0 and b.returncode == 0, a.stderr
        assert a.stdout.replace(url, "DIR") == b.stdout.replace(str(local), "DIR")
    # nanoGPT's train.bin/val.bin, and another format, into a local directory: the local run's bytes
    for extra in ([], ["--format", "llmc"]):
        a, b = tmp_path / f"from-bucket{len(extra)}", tmp_path / f"from-local{len(extra)}"
        assert run(s3, "merge", url, "--out", a, *extra).returncode == 0
        assert run(s3, "merge", local, "--out", b, *extra).returncode == 0
        files = sorted(f for f in os.listdir(b) if f.endswith(".bin"))
        assert files and sorted(f for f in os.listdir(a) if f.endswith(".bin")) == files
        assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    r = run(s3, "merge", url)
    assert r.returncode == 1 and r.stderr.strip() == f"fineweb.py: error: merge from {url} writes local files: give --out LOCAL_DIR"
    from tokshards.loader import ShardLoader

    with pytest.raises(ValueError, match="copy the shards first"):
        ShardLoader(url, 4, 32)


HOLDER = """
import sys, time
from tokshards.bucket import BucketDir
from tokshards.errors import UserError
try:
    with BucketDir(sys.argv[1], what=sys.argv[2], log=lambda m: None):
        print("held", flush=True)
        time.sleep(float(sys.argv[3]))
except UserError as e:
    print("refused:", e, flush=True)
"""


def holders(env, url, n, seconds=2.0, what="run"):
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, url, what, str(seconds)], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [p.communicate(timeout=120)[0].strip() for p in procs]


def test_a_stale_lock_is_taken_by_exactly_one_of_many(s3, bucket):
    name, store = bucket
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for trial in range(3):
        url = f"s3://{name}/race{trial}"
        store.fs.pipe_file(f"{name}/race{trial}/.fineweb.lock", json.dumps(
            {"host": socket.gethostname(), "pid": int(dead.stdout), "time": time.time()}).encode())
        said = holders(s3, url, 4)
        assert sum(x == "held" for x in said) == 1, said
        assert all(x == "held" or x.startswith("refused:") and "is in use by" in x for x in said), said


def skewed_holder(env, url, skew):
    """What HOLDER says, taking the lock at `url` with this machine's clock `skew` seconds off."""
    skewed = f"import time; real = time.time; time.time = lambda: real() + {skew}\n" + HOLDER
    r = subprocess.run([sys.executable, "-c", skewed, url, "run", "0"], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    return r.stdout + r.stderr


def test_a_lock_is_judged_by_the_stores_clock_not_this_machines(s3, bucket):
    """A live holder on another host, its lock just rewritten; this machine's clock 20 minutes fast
    (or slow): the lock's age is the store's Date less its Last-Modified, so it is not taken."""
    name, store = bucket
    for trial, skew in enumerate((1200, -1200)):
        url = f"s3://{name}/skew{trial}"
        store.fs.pipe_file(f"{name}/skew{trial}/.fineweb.lock", json.dumps(
            {"host": "another-host", "pid": 1, "time": time.time()}).encode())
        said = skewed_holder(s3, url, skew)
        assert said.startswith("refused:") and "is in use by fineweb.py run on host another-host" in said, said


def test_a_command_whose_lock_was_taken_stops_and_never_removes_the_new_holders_lock(s3, bucket, monkeypatch):
    """Another command judged this one stale and took the lock (a conditional write on the version it
    read): this one's next heartbeat fails its condition, it stops at its next write, and on its way
    out leaves the other's lock alone."""
    from tokshards import bucket as B
    from tokshards.errors import UserError

    for k, v in s3.items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setattr(B, "LOCK_BEAT", 0.2)
    name, store = bucket
    url = f"s3://{name}/taken"
    out = B.BucketDir(url, log=lambda m: None)
    with pytest.raises(UserError, match="took this command's lock"):
        with out:
            theirs = json.dumps({"host": "elsewhere", "pid": 1, "time": time.time(), "what": "run"}).encode()
            store.fs.pipe_file(f"{name}/taken/.fineweb.lock", theirs)
            time.sleep(1.0)
            out.check_held()
    assert store.fs.cat_file(f"{name}/taken/.fineweb.lock") == theirs


def test_ranks_at_work_keep_a_run_and_an_assembly_out(s3, bucket, text, tmp_path):
    name, store = bucket
    url = f"s3://{name}/ranks"
    script = HOLDER.replace("BucketDir(sys.argv[1], what", "BucketDir(sys.argv[1], shared=True, what")
    rank = subprocess.Popen([sys.executable, "-c", script, url, "rank 0", "8"], env=s3, cwd=REPO,
                            stdout=subprocess.PIPE, text=True)  # a rank's hold on the prefix, for 8 s
    try:
        assert rank.stdout.readline().strip() == "held"
        for args in (["--input", text, *ARGS, "--overwrite", "--local-dir", url], ["assemble", url]):
            r = run(s3, *args)
            assert r.returncode == 1 and "is in use by the ranks of a multi-machine run (fineweb.py rank 0 on host" \
                in r.stderr, r.stderr
    finally:
        rank.kill()
        rank.wait()


def test_overwrite_and_reruns_leave_what_they_did_not_write(s3, bucket, text):
    """merge.json (merge never writes into a bucket) and a parts/ that no multi-machine run of these
    settings made stay through a rerun of a finished run and through --overwrite."""
    name, store = bucket
    url = f"s3://{name}/edu"
    assert run(s3, "--input", text, *ARGS, "--local-dir", url).returncode == 0
    theirs = {"merge.json": b"{}", "parts/000000.json": b"{}", "parts/job.json": b'{"settings": {}}'}
    for k, v in theirs.items():
        store.fs.pipe_file(f"{name}/edu/{k}", v)
    for extra in ([], ["--overwrite"]):
        r = run(s3, "--input", text, *ARGS, *extra, "--local-dir", url)
        assert r.returncode == 0, r.stderr
        assert all(store.fs.cat_file(f"{name}/edu/{k}") == v for k, v in theirs.items())


def test_a_finished_bucket_output_is_not_read_as_input(s3, bucket, tmp_path, text):
    name, store = bucket
    store.fs.put_file(str(text), f"{name}/raw/docs.txt")
    assert run(s3, "--input", f"s3://{name}/raw", *ARGS, "--local-dir", f"s3://{name}/shards").returncode == 0
    r = run(s3, "--input", f"s3://{name}/", *ARGS, "--local-dir", f"s3://{name}/shards2")
    assert r.returncode == 0, r.stderr
    source = json.loads(store.fs.cat_file(f"{name}/shards2/manifest.json"))["source"]
    assert [f["path"] for f in source] == [f"s3://{name}/raw/docs.txt"]


def test_the_staging_directory_of_a_killed_run_is_removed_by_the_next(s3, bucket, tmp_path, text):
    name, store = bucket
    stage = tmp_path / "stage"
    stage.mkdir()
    env = {**s3, "TMPDIR": str(stage)}
    killed = subprocess.run([sys.executable, "-c", KILLER, "--input", str(text), *ARGS, "--local-dir",
                             f"s3://{name}/edu"], env={**env, "KILL_AT": "after-upload:2"}, cwd=REPO,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL and os.listdir(stage), killed.stderr
    mine = stage / "fineweb-stage-notapid"  # not a name this tool gives: it stays
    mine.mkdir()
    assert run(env, "--input", text, *ARGS, "--local-dir", f"s3://{name}/edu").returncode == 0
    assert os.listdir(stage) == [mine.name]
