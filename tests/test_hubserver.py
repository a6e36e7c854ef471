"""The loopback Hub stand-in, checked directly over HTTP and through the real
`datasets.load_dataset(..., streaming=True)` path in a client subprocess."""

import glob
import http.client
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hub import FINEWEB_EDU, SERVER, hub_env, start_hub  # noqa: E402
from conftest import needs_data  # noqa: E402

pytestmark = needs_data  # serves the real documents of ../shared/data

REPO = "HuggingFaceFW/fineweb-edu"
REPOS = {REPO: FINEWEB_EDU, "someone/fineweb-copy": FINEWEB_EDU}
F1 = "sample/10BT/001_00000.parquet"  # first touched during iteration, after file 000's 892 rows
RESOLVE = f"/datasets/{REPO}/resolve/main/"

# Runs in a fresh interpreter, because HF_ENDPOINT is read when datasets is imported. Records
# every outgoing connect() so the test can prove nothing leaves the loopback server.
CLIENT = r"""
import json, socket, sys, time
spec = json.loads(sys.argv[1])
connects, lookups = [], []
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def connect(self, addr):
    connects.append(list(addr[:2]) if isinstance(addr, tuple) else str(addr))
    return _connect(self, addr)
def getaddrinfo(host, *args, **kw):
    lookups.append(host)
    return _getaddrinfo(host, *args, **kw)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

import datasets
for key, value in spec["config"].items():
    setattr(datasets.config, key, value)
out = {"ids": [], "error": None, "mro": []}
t0 = time.monotonic()
try:
    ds = datasets.load_dataset(spec["repo"], name=spec["name"], split="train", streaming=True)
    out["load_secs"] = time.monotonic() - t0
    for row in ds:
        out["ids"].append(row["id"])
        if len(out["ids"]) == spec["limit"]:
            break
except Exception as e:
    out.update(error=f"{type(e).__name__}: {e}"[:400], mro=[c.__name__ for c in type(e).__mro__])
out.update(secs=time.monotonic() - t0, connects=connects, lookups=sorted(set(lookups)))
print("RESULT " + json.dumps(out))
"""
# datasets' own retry sleeps default to 5-60 s; huggingface_hub's backoff (1, 2, 4, 8, 8 s) is fixed.
FAST_RETRIES = {
    "STREAMING_READ_RETRY_INTERVAL": 0.1,
    "STREAMING_READ_SERVER_UNAVAILABLE_RETRY_INTERVAL": 0.1,
    "STREAMING_READ_RATE_LIMIT_RETRY_INTERVAL": 0.1,
    "STREAMING_READ_MAX_RETRIES": 3,
    "STREAMING_OPEN_RETRY_INTERVAL": 0.1,
    "STREAMING_OPEN_MAX_RETRIES": 3,
}


def stream(hub, tmp_path, repo=REPO, name="sample-10BT", limit=None, env=None):
    spec = {"repo": repo, "name": name, "limit": limit, "config": FAST_RETRIES}
    proc = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(spec)], env=env or hub_env(hub, tmp_path),
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"client crashed:\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    out["stderr"] = proc.stderr
    return out


@pytest.fixture(scope="module")
def expected_ids():
    files = sorted(glob.glob(os.path.join(FINEWEB_EDU, "sample/10BT/*.parquet")))
    return [i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


@pytest.fixture
def hub(tmp_path):
    with start_hub(REPOS, tmp_path) as h:
        yield h


def request(hub, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


# ---- through datasets -------------------------------------------------------------------------

def test_streaming_reads_all_rows_in_order_from_loopback_only(hub, tmp_path, expected_ids):
    assert len(expected_ids) == 2454
    out = stream(hub, tmp_path)
    assert out["error"] is None, out["stderr"][-3000:]
    assert out["ids"] == expected_ids
    # Every socket the client opened went to our server (datasets-server lookup fails at DNS).
    assert {tuple(c) for c in out["connects"]} == {("127.0.0.1", hub.port)}
    log = hub.log()
    assert {(e["client"], e["host"], e["auth"]) for e in log} == {("127.0.0.1", f"127.0.0.1:{hub.port}", False)}
    assert {e["status"] for e in log} <= {200, 206, 404}
    assert all(e["note"] == "EntryNotFound" for e in log if e["status"] == 404)  # probes like dataset_infos.json
    # Parquet bytes come from ranged GETs only: sizes come from the tree listing, never a HEAD.
    parquet = [e for e in log if e["path"].endswith(".parquet")]
    assert parquet and all(e["method"] == "GET" and e["range"] for e in parquet)


def test_second_name_serves_same_data(hub, tmp_path, expected_ids):
    out = stream(hub, tmp_path, repo="someone/fineweb-copy", limit=5)
    assert out["error"] is None, out["stderr"][-3000:]
    assert out["ids"] == expected_ids[:5]


def test_unknown_repo_is_dataset_not_found(hub, tmp_path):
    out = stream(hub, tmp_path, repo="someone/missing", name=None)
    assert "DatasetNotFoundError" in out["mro"], out["error"]


def test_pagination_and_redirects(tmp_path, expected_ids):
    with start_hub(REPOS, tmp_path, page_size=2, redirect=True) as hub:
        out = stream(hub, tmp_path)
        assert out["error"] is None, out["stderr"][-3000:]
        assert out["ids"] == expected_ids
        notes = [e["note"] for e in hub.log()]
        assert "redirect" in notes and any("cursor=" in e["path"] for e in hub.log())


def test_token_is_required_and_sent(tmp_path, expected_ids):
    with start_hub(REPOS, tmp_path, require_token="sekret") as hub:
        assert "DatasetNotFoundError" in stream(hub, tmp_path, limit=1)["mro"]
        hub.reset()
        env = {**hub_env(hub, tmp_path), "HF_TOKEN": "sekret"}
        out = stream(hub, tmp_path, limit=3, env=env)
        assert out["error"] is None, out["stderr"][-3000:]
        assert out["ids"] == expected_ids[:3]
        assert all(e["auth"] for e in hub.log())


def test_503_twice_is_absorbed(hub, tmp_path, expected_ids):
    hub.faults(status=503, status_count=2, match=F1)
    out = stream(hub, tmp_path)
    assert out["error"] is None, out["stderr"][-3000:]
    assert out["ids"] == expected_ids
    assert hub.fired() == {f"status {F1}": 2}


@pytest.mark.parametrize("kind", ["drop", "trunc"])
def test_broken_body_once_is_absorbed(hub, tmp_path, expected_ids, kind):
    hub.faults(**{f"{kind}_after": 50_000, "match": F1})
    out = stream(hub, tmp_path)
    assert out["error"] is None, out["stderr"][-3000:]
    assert out["ids"] == expected_ids
    assert hub.fired() == {f"{kind} {F1}": 1}


def test_short_body_raises(hub, tmp_path, expected_ids):
    # Consistent headers for fewer bytes look like a valid answer, so nothing retries.
    hub.faults(short_after=30_000, match=F1)
    out = stream(hub, tmp_path)
    assert {"OSError", "ArrowInvalid"} & set(out["mro"]), out["error"]
    assert out["ids"] == expected_ids[:892]  # a clean prefix: all of file 000, nothing of 001


def test_hang_longer_than_timeout_is_absorbed(hub, tmp_path, expected_ids):
    hub.faults(hang_secs=2, match=F1)
    env = {**hub_env(hub, tmp_path, timeout=1)}
    out = stream(hub, tmp_path, env=env)
    assert out["error"] is None, out["stderr"][-3000:]
    assert out["ids"] == expected_ids
    assert "timed out" in out["stderr"]


def test_revision_api_503_raises(hub, tmp_path):
    # HfFileSystem's repo_info existence check has no retry.
    hub.faults(api_status=503, api_match="/revision/")
    out = stream(hub, tmp_path)
    assert "HfHubHTTPError" in out["mro"], out["error"]
    assert "503" in out["error"] and out["ids"] == []


# ---- direct HTTP ------------------------------------------------------------------------------

def test_repo_metadata_and_errors(hub):
    status, _, body = request(hub, "GET", f"/api/datasets/{REPO}")
    sha = json.loads(body)["sha"]
    assert status == 200 and len(sha) == 40 and int(sha, 16) >= 0
    assert json.loads(request(hub, "GET", "/api/datasets/someone/fineweb-copy")[2])["sha"] == sha  # same files
    for rev in ("main", "refs%2Fheads%2Fmain", sha):
        assert request(hub, "GET", f"/api/datasets/{REPO}/revision/{rev}")[0] == 200
        assert request(hub, "HEAD", f"/datasets/{REPO}/resolve/{rev}/README.md")[0] == 200
    status, headers, _ = request(hub, "GET", f"/api/datasets/{REPO}/revision/v1")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _ = request(hub, "HEAD", RESOLVE + "nope.py")
    assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", sha)
    status, headers, _ = request(hub, "GET", "/datasets/someone/missing/resolve/main/README.md")
    assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")
    assert json.loads(request(hub, "GET", "/api/agent-harnesses")[2]) == {"standardEnvVars": [], "harnesses": {}}

    status, headers, body = request(hub, "GET", f"/api/datasets/{REPO}/tree/{sha}/sample%2F10BT?recursive=false")
    assert headers["X-Repo-Commit"] == sha
    assert [e["path"] for e in json.loads(body)] == [f"sample/10BT/00{i}_00000.parquet" for i in range(3)]
    assert all("xetHash" not in e and e["lfs"]["size"] == e["size"] for e in json.loads(body))
    status, _, body = request(hub, "POST", f"/api/datasets/{REPO}/paths-info/main", body="paths=sample&paths=x",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert json.loads(body) == [{"type": "directory", "oid": json.loads(body)[0]["oid"], "size": 0, "path": "sample"}]


def test_ranges(hub):
    path, size = RESOLVE + F1, os.path.getsize(os.path.join(FINEWEB_EDU, F1))
    status, headers, _ = request(hub, "HEAD", path)
    assert status == 200 and headers["X-Linked-Size"] == headers["Content-Length"] == str(size)
    assert headers["ETag"] == headers["X-Linked-Etag"]
    status, headers, body = request(hub, "GET", path, {"Range": "bytes=0-3"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 0-3/{size}", b"PAR1")
    assert request(hub, "GET", path, {"Range": "bytes=-4"})[2] == b"PAR1"
    assert len(request(hub, "GET", path, {"Range": f"bytes={size - 10}-"})[2]) == 10
    status, headers, _ = request(hub, "GET", path, {"Range": f"bytes={size}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")


def test_body_faults_exact_semantics(hub):
    path = RESOLVE + F1
    hub.faults(short_after=100, match=F1)
    status, headers, body = request(hub, "GET", path, {"Range": "bytes=1000-99999"})
    assert (status, headers["Content-Length"], len(body)) == (206, "100", 100)
    assert headers["Content-Range"].startswith("bytes 1000-1099/")
    assert len(request(hub, "GET", path, {"Range": "bytes=1000-99999"})[2]) == 99000  # count spent

    hub.faults(trunc_after=100, match=F1)
    with pytest.raises(http.client.IncompleteRead) as exc:
        request(hub, "GET", path, {"Range": "bytes=0-99999"})
    assert len(exc.value.partial) == 100

    hub.faults(drop_after=100, match=F1)
    # A real kernel delivers the RST as ECONNRESET; gVisor reports it as a plain EOF.
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        request(hub, "GET", path, {"Range": "bytes=0-99999"})

    hub.faults(status=429, retry_after=3, status_count=-1, match="README.md")
    for _ in range(3):
        status, headers, _ = request(hub, "HEAD", RESOLVE + "README.md")
        assert (status, headers["Retry-After"]) == (429, "3")
    assert hub.fired() == {"status README.md": 3}

    hub.faults(api_status=500, api_match="/tree/", api_count=1)
    tree = f"/api/datasets/{REPO}/tree/main"
    assert [request(hub, "GET", tree)[0] for _ in range(2)] == [500, 200]


def test_slow_faults(hub):
    path, rng = RESOLVE + F1, {"Range": "bytes=0-199999"}
    for faults, low in [({"hang_secs": 0.5}, 0.5), ({"stall_after": 10, "stall_secs": 0.5}, 0.5),
                        ({"delay": 0.3}, 0.3), ({"bandwidth": 1_000_000}, 0.19)]:
        hub.faults(match=F1, **faults)
        t0 = time.monotonic()
        assert len(request(hub, "GET", path, rng)[2]) == 200_000
        assert low <= time.monotonic() - t0 < low + 1, faults
    hang = [e for e in hub.log() if "hang" in e["note"]]
    assert len(hang) == 1 and hang[0]["status"] == 206


def test_refuses_non_loopback_and_unknown_fault_keys(hub, tmp_path):
    proc = subprocess.run([sys.executable, str(SERVER), "--host", "0.0.0.0", "--repo", f"a/b={FINEWEB_EDU}"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "127.0.0.1" in proc.stderr
    with pytest.raises(ValueError, match="unknown fault keys"):
        hub.faults(stauts=503)
