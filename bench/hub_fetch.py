#!/usr/bin/env python3
"""What fetching a row group costs a worker, in CPU, on the Hub path against the local one.

    python bench/hub_fetch.py                       # 12 of parent_cost.py's 40 files, 3 repeats (~1 min)
    python bench/hub_fetch.py --read-bytes 1048576  # the HTTP client reading 1 MiB at a time, not 64 KiB

The same row groups' wanted columns (text, token_count: one byte range each, as a worker asks for them,
tokshards.hub.row_group_span) are fetched in one process three ways, and the CPU of the fetch alone is
timed (no parquet decoding, no tokenizing):
- local: the same byte ranges read from the files with open() and read() (from the page cache; an
  `--input` worker reads them through pyarrow's own reader);
- as a Hub worker: the tests' loopback Hub (tests/hubserver.py, on 127.0.0.1), one ranged GET per row
  group through huggingface_hub's HTTP client (tokshards.hubrange.RangeFile, tokshards.hub.read_span);
- HfFileSystem: the same through huggingface_hub's HfFileSystem, as a Hub worker did up to 269ef6e;
- http.client: the same requests with the standard library, each body read straight into a buffer
  allocated to its size: a minimal client to measure the others against, not something the tool should
  use (it would lose huggingface_hub's token, retries and redirects).
The loopback server's own CPU is not counted. Table -> bench/out/hub_fetch.md.
"""
import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import bench  # noqa: E402  (machine_line, code_state, code_line)
from hub import hub_env, start_hub  # noqa: E402  (the test suite's loopback Hub)
from hub_readers import make_repo  # noqa: E402
from tokshards.hub import read_footer, read_span, row_group_span  # noqa: E402
from tokshards.pool import keep_freed_memory  # noqa: E402

REPO = "HuggingFaceFW/fineweb-edu"
COLUMNS = ("text", "token_count")
OUT = ROOT / "bench" / "out"


def spans_of(files):
    """(file name, size, (start, end)) of every row group's wanted columns, from the local footers."""
    out = []
    for f in files:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            md = read_footer(fh, size)[1]
        out += [(f.name, size, row_group_span(md, rg, COLUMNS)) for rg in range(md.num_row_groups)]
    return out


def fetch_local(repo, spans):
    for name, size, span in spans:
        with open(repo / "sample" / "10BT" / name, "rb") as f:
            read_span(f, size, span)


def fetch_worker(repo, spans):
    from tokshards.hubrange import RangeFile, resolve_url  # imports huggingface_hub (see fetch_http_client)

    urls = {name: resolve_url(f"hf://datasets/{REPO}@main/sample/10BT/{name}") for name, _, _ in spans}
    for name, size, span in spans:
        with RangeFile(urls[name], size) as f:
            read_span(f, size, span)


def fetch_hffs(repo, spans):
    from huggingface_hub import HfFileSystem  # (see fetch_http_client)

    for name, size, span in spans:
        with HfFileSystem().open(f"datasets/{REPO}@main/sample/10BT/{name}", "rb", cache_type="none", size=size) as f:
            read_span(f, size, span)


def fetch_http_client(repo, spans):
    # imported here, not at the top: huggingface_hub reads HF_ENDPOINT (the loopback Hub's address) when
    # it is first imported, and the callers set it only once their server has started
    from huggingface_hub import hf_hub_url

    urls = {name: urlsplit(hf_hub_url(REPO, f"sample/10BT/{name}", repo_type="dataset", revision="main"))
            for name, _, _ in spans}
    host = next(iter(urls.values()))
    conn = http.client.HTTPConnection(host.hostname, host.port)
    try:
        for name, size, (start, end) in spans:
            conn.request("GET", urls[name].path, headers={"Range": f"bytes={start}-{end - 1}"})
            r = conn.getresponse()
            if r.status != 206:
                sys.exit(f"hub_fetch: {name}: HTTP {r.status}")
            buf = bytearray(end - start)
            if r.readinto(buf) != len(buf):
                sys.exit(f"hub_fetch: {name}: body cut short")
            r.read()
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=12, help="files fetched (of parent_cost.py's 40 of ~24 MB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--read-bytes", type=int,
                    help="the HTTP client's read size (httpcore's READ_NUM_BYTES, 64 KiB by default)")
    a = ap.parse_args()
    keep_freed_memory(one_arena=True)  # the allocator a worker has: a body's buffers are reused as there
    code = bench.code_state()
    repo = make_repo(40, 24)
    files = sorted((repo / "sample" / "10BT").glob("*.parquet"))[: a.files]
    spans = spans_of(files)
    nbytes = sum(end - start for _, _, (start, end) in spans)
    work = Path(tempfile.mkdtemp(prefix="hub_fetch-"))
    hub = start_hub({REPO: str(repo)}, work)
    os.environ.update(hub_env(hub, work, timeout=60))
    if a.read_bytes:
        import httpcore2._sync.http11 as http11  # huggingface_hub 2.x's HTTP stack (httpx2)

        http11.HTTP11Connection.READ_NUM_BYTES = a.read_bytes
    ways = {"local files": fetch_local, "huggingface_hub's HTTP client (as a Hub worker)": fetch_worker,
            "HfFileSystem (as a Hub worker did up to 269ef6e)": fetch_hffs,
            "http.client into a preallocated buffer": fetch_http_client}
    cpu = {k: [] for k in ways}
    try:
        fetch_worker(repo, spans[:1])  # the first contact (imports, connection) is not the steady cost
        fetch_hffs(repo, spans[:1])
        for _ in range(a.repeat):
            for name, fn in ways.items():
                t = time.process_time()
                fn(repo, spans)
                cpu[name].append(time.process_time() - t)
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)  # the server's files and the fresh HF_HOME, made here
    lines = ["`" + " ".join(["python bench/hub_fetch.py", *sys.argv[1:]]) + "`", "",
             bench.machine_line(), bench.code_line(code, code), "",
             f"{len(spans)} row groups of {len(files)} files, {nbytes / 1e6:.0f} MB fetched (text and token_count), "
             f"CPU s of the fetch alone, {a.repeat} repeats; the loopback server's CPU not counted.", "",
             "| fetched through | CPU s by repeat | median | CPU s per GB | vs local |", "|---|---|---|---|---|"]
    base = statistics.median(cpu["local files"])
    for name, cs in cpu.items():
        m = statistics.median(cs)
        lines.append(f"| {name} | {' / '.join(f'{c:.2f}' for c in cs)} | {m:.2f} | {m / nbytes * 1e9:.2f} "
                     f"| {m / base:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hub_fetch.md").write_text(text)


if __name__ == "__main__":
    main()
