"""--input s3://bucket/prefix: objects read with ranged GETs, against moto's S3 server on 127.0.0.1 (the
fixtures and the faulty proxy of test_bucket.py). The shards are byte-identical to a run over the same
files copied locally, with any --nprocs, after a SIGKILL and a rerun, and through the store's faults; a
changed object, a missing prefix or bucket, missing credentials or a missing s3fs are each one line."""
import gzip
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import DATA, PARQUETS, REPO
from test_bucket import s3, bucket, Store, FaultyProxy, run  # noqa: F401

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -r requirements-dev.txt)")
pytest.importorskip("moto", reason="moto is not installed (pip install -r requirements-dev.txt)")

TXT = DATA / "train_fineweb.txt"
pytestmark = pytest.mark.skipif(not TXT.exists() or len(PARQUETS) < 2, reason=f"sample data not found in {DATA}")
ARGS = ["--shard-size", "100K"]
FORMATS = ("parquet", "jsonl", "txt")


def documents(start, size, sep=b"\n\n"):
    """Whole real documents (or paragraphs: sep "\n") from about `size` bytes of the sample text at `start`."""
    with open(TXT, "rb") as f:
        f.seek(start)
        data = f.read(size)
    return [d for d in data.split(sep)[1:-1] if d.strip()]


def jsonl(docs):
    return b"".join(json.dumps({"text": d.decode()}).encode() + b"\n" for d in docs)


def layout():
    """{relative path: bytes} of each format's input prefix: two files each (one in a subdirectory),
    and objects a prefix skips (unknown ending, a dot name). The second file of each text format holds
    more than one batch (256 JSON lines; 2 MB of text), so that a resume can start inside it."""
    parquet = {p.name: p.read_bytes() for p in PARQUETS[:2]}
    lines = {"a.jsonl.gz": gzip.compress(jsonl(documents(6_000_000, 500_000, b"\n")), mtime=0),
             "more/b.jsonl": jsonl(documents(7_000_000, 1_000_000, b"\n"))}
    txt = {"a.txt": b"\n\n".join(documents(0, 500_000)), "more/b.txt": b"\n\n".join(documents(1_000_000, 2_300_000)),
           "README": b"not an input", ".hidden.txt": b"not an input either"}
    return {"parquet": parquet, "jsonl": lines, "txt": txt}


@pytest.fixture(scope="module")
def inputs(s3, tmp_path_factory):
    """The same files in the bucket `inputs` under data/FORMAT/ and locally under DIR/data/FORMAT/;
    yields (store, local data directory) and the local run of each format (its output directory)."""
    store = Store(s3)
    store.fs.mkdir("inputs")
    root = tmp_path_factory.mktemp("local") / "data"
    for fmt, files in layout().items():
        for rel, body in files.items():
            store.fs.pipe_file(f"inputs/data/{fmt}/{rel}", body)
            (root / fmt / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / fmt / rel).write_bytes(body)
    out = tmp_path_factory.mktemp("local-runs")
    for fmt in FORMATS:
        r = run(os.environ, "--input", root / fmt, *ARGS, "--nprocs", "1", "--local-dir", out / fmt)
        assert r.returncode == 0, r.stderr
    return store, root, out


def same_output(got, want, sources):
    """The shard files byte for byte; the manifest but for the duration and the recorded sources,
    which are the objects' URLs (`sources`), in the local files' order."""
    names = sorted(os.listdir(want))
    assert sorted(os.listdir(got)) == names and len(names) >= 6
    for name in names:
        a, b = (got / name).read_bytes(), (want / name).read_bytes()
        if name != "manifest.json":
            assert a == b, name
            continue
        a, b = json.loads(a), json.loads(b)
        assert [s["path"] for s in a.pop("source")] == sources
        assert [os.path.basename(s["path"]) for s in b.pop("source")] == [u.rsplit("/", 1)[-1] for u in sources]
        a.pop("seconds"), b.pop("seconds")
        assert a == b


def urls(fmt):
    """The objects a run of prefix data/FMT/ reads, in order."""
    return [f"s3://inputs/data/{fmt}/{rel}" for rel in sorted(layout()[fmt]) if not rel.startswith((".", "R"))]


@pytest.mark.parametrize("nprocs", ["0", "2"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_prefix_gives_the_shards_of_its_local_copy(s3, inputs, tmp_path, fmt, nprocs):
    _, _, local = inputs
    r = run(s3, "--input", f"s3://inputs/data/{fmt}/", *ARGS, "--nprocs", nprocs, "--local-dir", tmp_path / fmt)
    assert r.returncode == 0, r.stderr
    same_output(tmp_path / fmt, local / fmt, urls(fmt))
    manifest = json.loads((tmp_path / fmt / "manifest.json").read_text())
    store = Store(s3)
    for rec in manifest["source"]:  # what identifies an object: the store's size, ETag and time
        info = store.fs.info(rec["path"])
        assert rec == {"path": rec["path"], "bytes": info["size"], "etag": info["ETag"].strip('"'),
                       "last_modified": info["LastModified"].isoformat()}


def test_one_object_names_the_output_after_itself(s3, inputs, tmp_path):
    _, root, _ = inputs
    want = tmp_path / "want"
    r = run(os.environ, "--input", root / "parquet" / PARQUETS[0].name, *ARGS, "--nprocs", "1", "--local-dir", want)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, str(REPO / "fineweb.py"), "--input", f"s3://inputs/data/parquet/{PARQUETS[0].name}",
                        *ARGS, "--nprocs", "1"], env=s3, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stem = PARQUETS[0].name.removesuffix(".parquet")
    assert sorted(os.listdir(tmp_path)) == sorted([f"{stem}_shards", "want"])
    assert (tmp_path / f"{stem}_shards" / f"{stem}_val_000000.bin").exists()
    same_output(tmp_path / f"{stem}_shards", want, [f"s3://inputs/data/parquet/{PARQUETS[0].name}"])


# SIGKILL itself right after the manifest first lists KILL_AT shards (a mid-run kill, reads in flight)
KILLER = """
import os, signal, sys
from tokshards import command, manifest
real = manifest.Manifest.save
def save(self):
    real(self)
    if len(self.shards) >= int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
manifest.Manifest.save = save
sys.argv = ["fineweb.py", *sys.argv[1:]]
command.main()
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_sigkill_mid_run_then_the_same_command_gives_the_same_shards(s3, inputs, tmp_path, fmt):
    _, _, local = inputs
    ends = [s["end"]["pos"] if s["end"] else None for s in json.loads((local / fmt / "manifest.json").read_text())["shards"]]
    # killed once the first shard is recorded whose successor starts inside the second file (parquet:
    # at its start, with tokens to skip: a file is one row group); the rerun resumes from there
    kill_at = next(i + 1 for i, e in enumerate(ends) if e and e["file"] == 1 and (e["offset"] > 0 or fmt == "parquet"))
    out = tmp_path / fmt
    cmd = ["--input", f"s3://inputs/data/{fmt}/", *ARGS, "--nprocs", "1", "--local-dir", str(out)]
    killed = subprocess.run([sys.executable, "-c", KILLER, *cmd], env={**s3, "KILL_AT": str(kill_at)},
                            cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    kept = json.loads((out / "manifest.json").read_text())["shards"]
    assert len(kept) == kill_at < len(ends)
    r = run(s3, *cmd)
    assert r.returncode == 0, r.stderr
    same_output(out, local / fmt, urls(fmt))


def test_an_object_changed_between_runs_is_refused_in_one_line(s3, bucket, tmp_path):
    name, store = bucket
    body = b"\n\n".join(documents(0, 400_000))
    store.fs.pipe_file(f"{name}/in/a.txt", body)
    cmd = ["--input", f"s3://{name}/in", *ARGS, "--nprocs", "0", "--local-dir", tmp_path / "out"]
    assert run(s3, *cmd).returncode == 0
    before = {f: (tmp_path / "out" / f).read_bytes() for f in os.listdir(tmp_path / "out")}
    store.fs.pipe_file(f"{name}/in/a.txt", body.replace(b"the", b"THE", 1))  # the same size
    r = run(s3, *cmd)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"fineweb.py: error: input s3://{name}/in/a.txt changed since {tmp_path / 'out'} was started (its ETag "
        "differs); resuming would mix two versions of it: restore it, or add --overwrite to start over"], r.stderr
    assert {f: (tmp_path / "out" / f).read_bytes() for f in os.listdir(tmp_path / "out")} == before


@pytest.mark.parametrize("drop", [False, True], ids=["503 SlowDown", "dropped connection"])
def test_the_stores_faults_are_retried_and_the_shards_are_the_same(s3, inputs, tmp_path, drop):
    _, _, local = inputs
    _, _, local = inputs
    proxy = FaultyProxy(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), every=4, drop=drop)
    try:
        env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "AWS_RETRY_MODE": "standard",
               "AWS_MAX_ATTEMPTS": "6"}
        r = run(env, "--input", "s3://inputs/data/parquet", *ARGS, "--nprocs", "2", "--local-dir", tmp_path / "out")
    finally:
        proxy.close()
    assert r.returncode == 0, r.stderr
    assert proxy.faults >= 3
    same_output(tmp_path / "out", local / "parquet", urls("parquet"))


class FailingFrom(FaultyProxy):
    """Requests pass until the n-th; from it on, every one is answered 503 SlowDown."""

    def __init__(self, upstream_port, n):
        self.n = n
        super().__init__(upstream_port)

    @property
    def every(self):  # what FaultyProxy divides its count by: 1 is a fault each time
        return 1 if self.count >= self.n else self.count + 1

    @every.setter
    def every(self, value):
        pass


@pytest.mark.parametrize("nprocs", ["0", "2"])
def test_a_store_that_fails_mid_read_is_one_line(s3, inputs, tmp_path, nprocs):
    proxy = FailingFrom(int(s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]), n=12)
    try:
        env = {**s3, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "FINEWEB_RETRY_BASE_SECONDS": "0.05"}
        r = run(env, "--input", "s3://inputs/data/parquet/", *ARGS, "--nprocs", nprocs, "--retries", 2,
                "--local-dir", tmp_path / "out", timeout=120)
    finally:
        proxy.close()
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    # an object's read (not the listing), named: retried twice with a line each (per worker reading), then one line
    obj = r"s3://inputs/data/parquet/00[01]_00000\.parquet \(\w+\)"
    tries = [re.fullmatch(rf"network: {obj}: .+; retry (\d)/2 in [\d.]+s", line) for line in lines[:-1]]
    assert all(tries) and {m.group(1) for m in tries} == {"1", "2"}, r.stderr
    assert re.fullmatch(rf"fineweb\.py: error: {obj} failed 3 times in a row over \d+s \(last: .+\); check the "
                        r"endpoint \(AWS_ENDPOINT_URL\) and the network, then rerun the same command to resume",
                        lines[-1]), r.stderr


def test_one_line_for_a_missing_prefix_bucket_credentials_or_s3fs(s3, inputs, bucket, tmp_path):
    def error(env, *input_args):
        r = run(env, "--input", *input_args, *ARGS, "--local-dir", tmp_path / "out")
        assert r.returncode == 1, r.stderr
        assert not (tmp_path / "out").exists()
        return r.stderr.strip().splitlines()

    assert error(s3, "s3://inputs/data/nothing/") == [
        "fineweb.py: error: --input s3://inputs/data/nothing/: no such object or prefix"]
    assert error(s3, f"s3://{bucket[0]}/data/") == [  # (a bucket named "bucket...": still the prefix missing)
        f"fineweb.py: error: --input s3://{bucket[0]}/data/: no such object or prefix"]
    assert error(s3, "s3://inputs/data/txt/README.md") == [
        "fineweb.py: error: --input s3://inputs/data/txt/README.md: no such object or prefix"]
    Store(s3).fs.pipe_file("inputs/other/notes.bin", b"x")
    assert error(s3, "s3://inputs/other") == [
        "fineweb.py: error: --input s3://inputs/other: no .parquet, .jsonl/.json or .txt objects under this prefix"]
    assert error(s3, "s3://no-such-bucket/data") == [
        "fineweb.py: error: s3://no-such-bucket/data: the bucket does not exist (The specified bucket does not "
        "exist); create it, or check the name and AWS_ENDPOINT_URL"]
    bare = {k: v for k, v in s3.items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    bare.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"))
    lines = error(bare, "s3://inputs/data/txt/")
    assert len(lines) == 1 and lines[0].startswith(
        "fineweb.py: error: s3://inputs/data/txt/: no credentials found; set AWS_ACCESS_KEY_ID"), lines
    no_s3fs = "import sys; sys.modules['s3fs'] = None; sys.argv[0] = 'fineweb.py'; from tokshards import command; command.main()"
    r = subprocess.run([sys.executable, "-c", no_s3fs, "--input", "s3://inputs/data/txt/", "--local-dir",
                        str(tmp_path / "out")], env=s3, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "fineweb.py: error: s3://inputs/data/txt/: s3:// needs the package s3fs: pip install s3fs"], r.stderr


def _client_error(code, status):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def _translated(code, status):
    """As s3fs raises it: an OSError (or FileNotFoundError, PermissionError...) caused by the ClientError."""
    from s3fs.errors import translate_boto_error

    return translate_boto_error(_client_error(code, status))


@pytest.mark.parametrize("make, transient", [
    (lambda: _client_error("SlowDown", 503), True),
    (lambda: _translated("SlowDown", 503), True),
    (lambda: _translated("InternalError", 500), True),
    (lambda: _translated("503", 503), True),  # a HEAD's answer: a status, no code of its own
    (lambda: _translated("TooManyRequests", 429), True),
    (lambda: _translated("RequestTimeout", 400), True),
    (lambda: __import__("botocore.exceptions").exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
    (lambda: __import__("botocore.exceptions").exceptions.ConnectionClosedError(endpoint_url="http://x"), True),
    (lambda: __import__("aiohttp").ServerDisconnectedError(), True),
    (lambda: _translated("NoSuchKey", 404), False),
    (lambda: _translated("NoSuchBucket", 404), False),
    (lambda: _translated("AccessDenied", 403), False),
    (lambda: _translated("PreconditionFailed", 412), False),
    (lambda: _translated("InvalidBucketName", 400), False),
    (lambda: __import__("botocore.exceptions").exceptions.NoCredentialsError(), False),
    (lambda: ValueError("not the store"), False),
    (lambda: _translated("NotImplemented", 501), False),  # a store without conditional writes: never passes
    (lambda: _translated("ConditionalRequestConflict", 409), True),  # a racing conditional write: AWS says retry
    (lambda: _translated("BadDigest", 400), True),  # a body damaged on the way
    (lambda: __import__("botocore.exceptions").exceptions.SSLError(endpoint_url="https://x", error="bad cert"), False),
    (lambda: type("Odd", (Exception,), {"response": {"ResponseMetadata": None, "Error": "x"}})(), False),
])
def test_which_failures_of_a_store_are_retried(make, transient):
    from tokshards.storage import is_transient

    assert is_transient(make()) is transient
