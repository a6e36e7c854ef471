"""--local-dir az://container/prefix and --input az://...: Azure Blob Storage through adlfs, against
Azurite (Microsoft's own emulator, from npm) on 127.0.0.1, started and stopped by PID here. The same
promises as for s3:// (test_bucket.py): byte-identical to the local run; a SIGKILL mid-upload (blocks
staged, never committed) or after it, then the same command, gives the same output and discards the
staged blocks; ranks with no shared path meet in the container; the lock is a conditional write that
exactly one of many racing commands wins; failures are one line. A store without conditional writes
(fsspec's memory://, and gs:// here) is refused as an output in one line."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import PARQUETS, REPO
from test_bucket import (ARGS, free_port, holders, killer, local_run, run, same_output, skewed_holder,  # noqa: F401
                         text, wait_port)

pytest.importorskip("adlfs", reason="adlfs is not installed (pip install -r requirements-dev.txt)")
AZURITE = shutil.which("azurite-blob") or str(REPO / ".venv" / "node" / "node_modules" / ".bin" / "azurite-blob")
pytestmark = pytest.mark.skipif(not os.path.exists(AZURITE), reason=(
    "Azurite is not installed (it comes from npm: npm install --prefix .venv/node azurite@3.37.0, as .ci/run does)"))
# Azurite's well-known development account (published in Microsoft's documentation; not a secret)
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port, key=KEY):
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    """Azurite's blob service on 127.0.0.1 (in memory), stopped by PID; yields (env, port)."""
    port = free_port()
    log_dir = tmp_path_factory.mktemp("azurite")
    log = open(log_dir / "azurite.log", "w")
    proc = subprocess.Popen([AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--skipApiVersionCheck", "--loose", "--silent"], stdout=log, stderr=log)
    try:
        wait_port(port, proc)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
        env.update(AZURE_STORAGE_CONNECTION_STRING=connection_string(port), NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost")
        yield env, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # (it waits for idle connections to close: not worth waiting for)
            proc.kill()
            proc.wait(timeout=10)
        log.close()


class Container:
    """The test's own view of a container (adlfs with the same account)."""

    def __init__(self, env, name):
        import adlfs

        self.name = name
        self.fs = adlfs.AzureBlobFileSystem(connection_string=env["AZURE_STORAGE_CONNECTION_STRING"],
                                            skip_instance_cache=True, use_listings_cache=False)
        self.fs.mkdir(name)

    def files(self, prefix="edu"):
        try:
            return {p.rsplit("/", 1)[-1]: self.fs.cat_file(p) for p in self.fs.ls(f"{self.name}/{prefix}", detail=False)
                    if self.fs.isfile(p)}
        except FileNotFoundError:
            return {}

    def staged(self):
        """The names under edu/ that hold only uncommitted blocks (an upload never finished, no blob)."""
        from fsspec.asyn import sync

        async def names(include):
            found = set()
            async for b in self.fs.service_client.get_container_client(self.name).list_blobs(
                    name_starts_with="edu/", **({"include": include} if include else {})):
                found.add(b.name)
            return found

        return sorted(sync(self.fs.loop, names, ["uncommittedblobs"]) - sync(self.fs.loop, names, None))


_containers = iter(range(10**6))


@pytest.fixture
def container(azure):
    return Container(azure[0], f"cont{next(_containers)}")


def test_a_run_into_a_container_is_the_local_run_and_reads_back(azure, container, tmp_path, text):
    env = {**azure[0], "TMPDIR": str(tmp_path)}
    url = f"az://{container.name}/edu"
    r = run(env, "--input", text, *ARGS, "--local-dir", url)
    assert r.returncode == 0, r.stderr
    got = container.files()
    same_output(got, local_run(tmp_path, text))
    assert len(got) >= 6 and got[".fineweb.lock"] == b""  # released, and kept
    assert [p for p in os.listdir(tmp_path) if p.startswith("fineweb-stage-")] == []
    v = run(env, "verify", url)
    assert v.returncode == 0 and "OK: every shard matches the manifest" in v.stdout, v.stdout + v.stderr
    again = run(env, "--input", text, *ARGS, "--local-dir", url)
    assert again.returncode == 0 and "already complete" in again.stderr, again.stderr
    assert container.files() == got
    local = tmp_path / "local"
    a, b = run(env, "inspect", url, "--shard", "2", "--docs", "3"), run(env, "inspect", local, "--shard", "2", "--docs", "3")
    assert a.returncode == 0 and a.stdout.replace(url, "DIR") == b.stdout.replace(str(local), "DIR"), a.stderr
    for src, out in ((url, tmp_path / "m-azure"), (local, tmp_path / "m-local")):  # nanoGPT's train.bin/val.bin
        assert run(env, "merge", src, "--out", out, "--quiet").returncode == 0
    assert [(tmp_path / "m-azure" / f).read_bytes() for f in ("train.bin", "val.bin")] == [
        (tmp_path / "m-local" / f).read_bytes() for f in ("train.bin", "val.bin")]


KILLER = killer("""
import adlfs
from fsspec.asyn import sync
def begin_upload(fs, path):  # blocks staged under the name, never committed
    container, name = path.split("/", 1)
    async def stage():
        async with fs.service_client.get_blob_client(container, name) as blob:
            await blob.stage_block("YmxvY2sw", b"x" * 1000)
    sync(fs.loop, stage)
""", "adlfs.AzureBlobFileSystem")


@pytest.mark.parametrize("where", ["mid-upload", "after-upload"])
def test_a_sigkill_while_uploading_then_the_same_command_gives_the_same_container(azure, container, tmp_path, text,
                                                                                  where):
    url = f"az://{container.name}/edu"
    for n in (1, 3):  # the first shard (val), a later one
        killed = subprocess.run([sys.executable, "-c", KILLER, "--input", str(text), *ARGS, "--local-dir", url],
                                env={**azure[0], "KILL_AT": f"{where}:{n}"}, cwd=REPO, capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if where == "mid-upload":
            assert container.staged(), "the kill left no staged blocks to discard"
        assert ".fineweb.lock" in container.files()  # left by the killed run
    r = run(azure[0], "--input", text, *ARGS, "--local-dir", url)
    assert r.returncode == 0, r.stderr
    assert "is stale (that process is gone)" in r.stderr, r.stderr
    same_output(container.files(), local_run(tmp_path, text))
    # the names the kills left staged blocks under hold their shards now (the service discards such
    # blocks when the name is written, and after 7 days: the tool leaves them to it)
    assert container.staged() == []


@pytest.mark.skipif(len(PARQUETS) < 3, reason="needs 3 real parquet files")
def test_ranks_with_no_shared_path_meet_in_the_container_and_assemble_is_one_machines_run(azure, container, tmp_path):
    url = f"az://{container.name}/edu"
    args = ["--input", *map(str, PARQUETS[:3]), "--shard-size", "400K", "--nprocs", "1"]
    ref = tmp_path / "ref"
    assert run(azure[0], *args, "--local-dir", ref).returncode == 0
    for rank in (2, 0, 1):
        cwd = tmp_path / f"rank{rank}"
        cwd.mkdir()
        r = subprocess.run([sys.executable, str(REPO / "fineweb.py"), *args, "--local-dir", url, "--rank", str(rank),
                            "--world-size", "3"], cwd=cwd, env=azure[0], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert os.listdir(cwd) == []  # nothing local: the parts went to the container
    assert {"job.json", "000000.json", "000000.tokens", "000002.json"} <= set(container.files("edu/parts"))
    r = run(azure[0], "assemble", url)
    assert r.returncode == 0, r.stderr
    same_output(container.files(), {f: (ref / f).read_bytes() for f in os.listdir(ref) if f[0] != "."})
    assert container.files("edu/parts") == {}  # parts/ went once the manifest was written


def test_the_lock_is_taken_by_exactly_one_of_many_and_a_live_one_is_refused(azure, container, text):
    env = azure[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for trial, pid in enumerate((None, int(dead.stdout))):  # no lock yet; a stale one (its process gone)
        url = f"az://{container.name}/race{trial}"
        if pid:
            container.fs.pipe_file(f"{container.name}/race{trial}/.fineweb.lock", json.dumps(
                {"host": socket.gethostname(), "pid": pid, "time": time.time()}).encode())
        said = holders(env, url, 4)
        assert sum(x == "held" for x in said) == 1, said
        assert all(x == "held" or x.startswith("refused:") and "is in use by" in x for x in said), said
    url = f"az://{container.name}/edu"
    container.fs.pipe_file(f"{container.name}/edu/.fineweb.lock", json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())  # this live process
    r = run(env, "--input", text, *ARGS, "--local-dir", url)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"fineweb.py: error: {url} is in use by fineweb.py run on host {socket.gethostname()}, pid {os.getpid()}"), r.stderr
    assert set(container.files()) == {".fineweb.lock"}


def test_a_lock_is_judged_by_the_stores_clock_not_this_machines(azure, container):
    """As for s3:// (test_bucket.py): a live holder on another host, this machine's clock 20 minutes
    off either way: the lock is not taken."""
    for trial, skew in enumerate((1200, -1200)):
        url = f"az://{container.name}/skew{trial}"
        container.fs.pipe_file(f"{container.name}/skew{trial}/.fineweb.lock", json.dumps(
            {"host": "another-host", "pid": 1, "time": time.time()}).encode())
        said = skewed_holder(azure[0], url, skew)
        assert said.startswith("refused:") and "is in use by fineweb.py run on host another-host" in said, said


@pytest.mark.skipif(len(PARQUETS) < 2, reason="needs 2 real parquet files")
def test_input_from_a_container_gives_the_local_shards(azure, container, tmp_path, text):
    for p in PARQUETS[:2]:
        container.fs.put_file(str(p), f"{container.name}/data/{p.name}")
    local = tmp_path / "local"
    assert run(azure[0], "--input", *map(str, PARQUETS[:2]), *ARGS, "--prefix", "edu", "--local-dir", local).returncode == 0
    out = tmp_path / "out"
    r = run(azure[0], "--input", f"az://{container.name}/data/", *ARGS, "--prefix", "edu", "--nprocs", "2",
            "--local-dir", out)
    assert r.returncode == 0, r.stderr
    names = sorted(f for f in os.listdir(local) if f.endswith(".bin"))
    assert names and sorted(f for f in os.listdir(out) if f.endswith(".bin")) == names
    assert all((out / f).read_bytes() == (local / f).read_bytes() for f in names)
    sources = json.loads((out / "manifest.json").read_bytes())["source"]
    assert [s["path"] for s in sources] == [f"az://{container.name}/data/{p.name}" for p in PARQUETS[:2]]
    assert all(s.get("etag") and s.get("last_modified") for s in sources)  # what tells a changed object


def test_one_line_for_a_missing_container_a_wrong_key_and_a_store_without_conditional_writes(azure, text):
    env, port = azure
    r = run(env, "--input", text, *ARGS, "--local-dir", "az://no-such-container/edu")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(
        "fineweb.py: error: az://no-such-container/edu: the container does not exist ("), r.stderr
    wrong = "A" * 86 + "=="
    r = run({**env, "AZURE_STORAGE_CONNECTION_STRING": connection_string(port, wrong)}, "--input", text, *ARGS,
            "--local-dir", "az://cont0/x")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(
        "fineweb.py: error: az://cont0/x: access refused (") and "AZURE_STORAGE_CONNECTION_STRING" in lines[0], lines
    assert wrong not in r.stderr and KEY not in r.stderr  # (a key is never printed)
    for url in ("memory://somewhere/edu", "gs://bucket/edu"):  # (gcsfs is not needed to be told so)
        r = run(env, "--input", text, *ARGS, "--local-dir", url)
        assert r.returncode == 1 and r.stderr.strip().splitlines() == [
            f"fineweb.py: error: {url}: writing there needs conditional writes (for the lock), which this tool uses "
            "on s3:// (AWS, or an S3-compatible store such as MinIO or R2) and az:// (Azure Blob Storage); use one of "
            "those or a local directory"], r.stderr


def test_one_line_for_a_wrong_account_a_bad_container_name_and_a_missing_container_everywhere(azure, container, text,
                                                                                             tmp_path):
    env, port = azure
    url = f"az://{container.name}@someoneelse.blob.core.windows.net/edu"
    r = run(env, "--input", text, *ARGS, "--local-dir", url)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"fineweb.py: error: {url} names the storage account someoneelse, but the credentials are for {ACCOUNT}; give "
        "az://CONTAINER/PATH with AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with "
        "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN for that account"], r.stderr
    assert container.files() == {}
    r = run(env, "--input", text, *ARGS, "--local-dir", "az://Not_A_Container/edu")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(
        "fineweb.py: error: az://Not_A_Container/edu: the store refused the request (") and lines[0].endswith(
        "check the URL (a container's name: 3-63 lowercase letters, digits and hyphens)"), lines
    for cmd in (["verify", "az://no-such-container/edu"], ["inspect", "az://no-such-container/edu"],
                ["--input", "az://no-such-container/data/", "--local-dir", tmp_path / "out"]):
        r = run(env, *cmd)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and "az://no-such-container/" in lines[0] and (
            "the container does not exist" in lines[0]), (cmd, lines)


def test_a_lease_on_the_lock_is_one_line_not_a_lost_race(azure, container, text):
    """Someone's lease on the lock blob (a 412 for another reason than the condition) is said in one
    line, not taken for a lock another command keeps taking."""
    from fsspec.asyn import sync

    container.fs.pipe_file(f"{container.name}/edu/.fineweb.lock", b"")  # a released lock of this tool

    async def lease():
        async with container.fs.service_client.get_blob_client(container.name, "edu/.fineweb.lock") as blob:
            await blob.acquire_lease(lease_duration=-1)

    sync(container.fs.loop, lease)
    r = run(azure[0], "--input", text, *ARGS, "--local-dir", f"az://{container.name}/edu")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "lease" in lines[0].lower(), lines
    assert "keep taking it" not in lines[0]


@pytest.mark.parametrize("kind, code, failed", [
    ("ResourceExistsError", "BlobAlreadyExists", True),  # If-None-Match: * on a blob that exists
    ("ResourceModifiedError", "ConditionNotMet", True),  # If-Match on another version
    ("ResourceExistsError", "LeaseAlreadyPresent", False),
    ("ResourceExistsError", "BlobImmutableDueToPolicy", False),
    ("ResourceExistsError", "ContainerBeingDeleted", False),
    ("ResourceModifiedError", "LeaseIdMissing", False),
    ("HttpResponseError", "ConditionNotMet", False),  # (only the SDK's own classes for those answers)
])
def test_only_a_failed_condition_is_a_lost_race(kind, code, failed):
    import azure.core.exceptions as errors
    from tokshards.conditional import AzureCalls

    e = getattr(errors, kind)(message=code)
    e.error_code = code
    assert AzureCalls(object()).failed_condition(e) is failed


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root with unshare and ip (a loopback-only network namespace)")
def test_an_account_without_credentials_is_one_line_at_once(tmp_path, text):
    """AZURE_STORAGE_ACCOUNT_NAME alone: adlfs asks azure-identity for a token (a managed identity on
    an Azure VM). Here no credential exists: one line naming the variables, not a page of the SDK's
    log, and no minutes of its retries. Run in a network namespace holding only lo, the managed
    identity's endpoint moved to a closed port of 127.0.0.1: nothing leaves this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
    env.update(AZURE_STORAGE_ACCOUNT_NAME=ACCOUNT, AZURE_POD_IDENTITY_AUTHORITY_HOST=f"http://127.0.0.1:{free_port()}",
               HOME=str(tmp_path))  # (no token cache, no az CLI login of this machine's user)
    t0 = time.monotonic()
    r = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable,
                        str(REPO / "fineweb.py"), "--input", str(text), *ARGS, "--local-dir", "az://cont0/edu"],
                       env=env, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith(
        "fineweb.py: error: az://cont0/edu: no credentials found; set AZURE_STORAGE_CONNECTION_STRING"), lines
    assert time.monotonic() - t0 < 60, "the SDK's own retries outlasted a minute"


def _status(status):
    from azure.core.exceptions import HttpResponseError

    e = HttpResponseError(message=f"status {status}")
    e.status_code = status
    return e


@pytest.mark.parametrize("make, transient", [
    (lambda: _status(503), True),  # ServerBusy
    (lambda: _status(500), True),  # InternalError, OperationTimedOut
    (lambda: _status(429), True),
    (lambda: _status(408), True),
    (lambda: _status(412), False),  # a failed condition
    (lambda: _status(409), False),  # BlobAlreadyExists
    (lambda: _status(403), False),  # AuthorizationFailure
    (lambda: _status(404), False),
    (lambda: _status(501), False),
    (lambda: __import__("azure.core.exceptions").core.exceptions.ServiceRequestError("no connection"), True),
    (lambda: __import__("azure.core.exceptions").core.exceptions.ServiceResponseError("dropped"), True),
    (lambda: __import__("azure.core.exceptions").core.exceptions.ClientAuthenticationError("refused"), False),
    (lambda: __import__("azure.core.exceptions").core.exceptions.ResourceNotFoundError("gone"), False),
])
def test_which_failures_of_azure_are_retried(make, transient):
    from tokshards.storage import is_transient

    assert is_transient(make()) is transient
