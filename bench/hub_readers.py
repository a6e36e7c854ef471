#!/usr/bin/env python3
"""`--readers N` against a bandwidth-capped Hub: throughput rises with concurrent file streams
until tokenizing is the bound, and the shards stay byte-identical.

    python bench/hub_readers.py                  # 16 files of ~10 MB, cap 3 MB/s, readers 1,2,4,8 (~3 min)
    python bench/hub_readers.py --quick          # 8 files of ~4 MB, readers 1,2,4 (~1 min)
    python bench/hub_readers.py --cap 2 --files 16 --file-mb 10 --readers 1,2,4,8

The loopback Hub of the tests (tests/hubserver.py) caps every response body, i.e. every
connection, at --cap MB/s: a stand-in for a cloud machine where one HTTP stream, not the CPU,
is the limit. Each row runs `fineweb.py --remote 10BT --readers N` into a fresh directory with a
fresh HF_HOME; the last row has no cap (the tokenizing bound). Table -> bench/out/hub_readers.md.
Two limits the curve meets besides tokenizing: a file's first batch comes only once its whole
coalesced range (up to 32 MiB) has arrived, so any run first waits one file's download (10 MB at
3 MB/s = 3.3 s); and pyarrow's I/O pool (8 threads, ARROW_IO_THREADS) allows 8 bodies at once.
"""
import argparse
import fnmatch
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT.parent / "shared" / "data" / "fineweb-edu"
DATA, OUT = ROOT / "bench" / "data", ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "tests"))
from hub import hub_env, start_hub  # noqa: E402  (the test suite's loopback Hub)

ROWS_PER_GROUP = 1000  # as FineWeb's own files


def make_repo(nfiles, mb):
    """bench/data/hub_<n>x<mb>MB/: the real repo's README and data/ file, plus sample/10BT/ with
    `nfiles` parquet files of ~`mb` MB of the real documents repeated (all columns)."""
    d = DATA / f"hub_{nfiles}x{mb:g}MB"
    if (d / "README.md").exists():
        return d
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(SRC / "data", tmp / "data")
    shutil.copy(SRC / "README.md", tmp / "README.md")
    table = pa.concat_tables([pq.read_table(f) for f in sorted((SRC / "sample" / "10BT").glob("*.parquet"))])
    sink = pa.BufferOutputStream()  # parquet bytes per row, to size the files
    pq.write_table(table, sink, row_group_size=ROWS_PER_GROUP)
    rows = int(mb * 1e6 * table.num_rows / sink.getvalue().size)
    (tmp / "sample" / "10BT").mkdir(parents=True)
    for k in range(nfiles):
        # each file starts elsewhere in the document cycle, so files differ and a reader
        # that emitted them out of order would change the shards
        idx = (np.arange(rows) + k * table.num_rows // nfiles) % table.num_rows
        pq.write_table(table.take(pa.array(idx)), tmp / "sample" / "10BT" / f"{k:03d}_00000.parquet",
                       row_group_size=ROWS_PER_GROUP)
    tmp.rename(d)
    return d


def check_card(repo):
    """datasets resolves the builder from the FIRST config (default: data/*/*), then ours."""
    card = yaml.safe_load((repo / "README.md").read_text().split("---")[1])
    paths = {c["config_name"]: c["data_files"][0]["path"] for c in card["configs"]}
    files = [p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()]
    first = card["configs"][0]["config_name"]
    for name in (first, "sample-10BT"):
        if not any(fnmatch.fnmatch(f, paths[name]) for f in files):
            sys.exit(f"hub_readers: config {name} ({paths[name]}) matches no file in {repo}")
    assert paths["sample-10BT"] == "sample/10BT/*", paths["sample-10BT"]


def run_tool(hub, work, readers, cap, timeout):
    """One timed run; returns (wall s, tokens, parquet bytes served, sha256 of the shards)."""
    hub.reset()  # clears the request log too, so the byte count below is this run's
    hub.faults(bandwidth=cap)
    out = work / f"r{readers}_cap{cap}"
    env = hub_env(hub, work, timeout=60)  # fresh HF_HOME; a long read timeout: slow is not dead
    cmd = [sys.executable, "fineweb.py", "--remote", "10BT", "--readers", str(readers),
           "--local-dir", str(out), "--format", "npy", "--quiet"]
    t0 = time.monotonic()
    # own session: an interrupt or timeout stops the tool and its workers, and only them
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, text=True)
    try:
        log, _ = p.communicate(timeout=timeout)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    wall = time.monotonic() - t0
    if p.returncode:
        sys.exit(f"hub_readers: exit code {p.returncode}: {' '.join(cmd)}\n{log[-3000:]}")
    served = sum(int(m.group(2)) - int(m.group(1)) + 1 for e in hub.log() if e["path"].endswith(".parquet")
                 for m in [re.match(r"bytes (\d+)-(\d+)/", e["note"] or "")] if m and e["method"] == "GET")
    shards = sorted(out.glob("*.npy"), key=lambda f: int(re.search(r"_(\d{6})\.npy$", f.name).group(1)))
    sha, tokens = hashlib.sha256(), 0
    for f in shards:
        sha.update(f.read_bytes())
        tokens += np.load(f, mmap_mode="r").size
    shutil.rmtree(out)
    shutil.rmtree(env["HF_HOME"], ignore_errors=True)
    return wall, tokens, served, sha.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 files of ~4 MB, readers 1,2,4")
    ap.add_argument("--files", type=int, help="parquet files in sample/10BT (default 16)")
    ap.add_argument("--file-mb", type=float, help="MB of parquet per file (default 10)")
    ap.add_argument("--cap", type=float, default=3.0, help="MB/s per connection (default 3)")
    ap.add_argument("--readers", help="comma-separated (default 1,2,4,8)")
    a = ap.parse_args()
    nfiles = a.files or (8 if a.quick else 16)
    file_mb = a.file_mb or (4 if a.quick else 10)
    readers = [int(r) for r in (a.readers or ("1,2,4" if a.quick else "1,2,4,8")).split(",")]
    cap = int(a.cap * 1e6)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken-cache"))

    repo = make_repo(nfiles, file_mb)
    check_card(repo)
    mb = sum(f.stat().st_size for f in (repo / "sample" / "10BT").glob("*.parquet")) / 1e6
    timeout = 3 * mb * 1e6 / (cap or 1e8) + 300  # a run 3x slower than one stream is hung, not slow
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hub_readers-", dir=OUT))
    hub = start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, work)
    rows = []
    try:
        # the capped runs, then one uncapped with the most readers: what tokenizing alone allows
        for n, c in [(n, cap) for n in readers] + [(max(readers), 0)]:
            wall, tokens, served, sha = run_tool(hub, work, n, c, timeout)
            rows.append((n, c, wall, tokens, served, sha))
            print(f"readers {n} cap {c / 1e6:g} MB/s: {wall:.1f} s, {tokens / wall / 1e6:.2f} Mtok/s", flush=True)
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)

    base = rows[0][2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    same = len({r[5] for r in rows}) == 1
    lines = ["`" + " ".join(["python bench/hub_readers.py", *sys.argv[1:]]) + "`", "",
             f"{nfiles} parquet files, {mb:.0f} MB in all ({rows[0][3] / 1e6:.1f}M tokens), loopback Hub, "
             f"{os.cpu_count()} cores, default --nprocs; tool at commit {commit}.", "",
             "| readers | cap per connection | wall s | Mtok/s | MB/s parquet downloaded | speed-up vs readers=1 | shards sha256 |",
             "|---|---|---|---|---|---|---|"]
    for n, c, wall, tokens, served, sha in rows:
        lines.append(f"| {n} | {f'{c / 1e6:g} MB/s' if c else 'none'} | {wall:.1f} | {tokens / wall / 1e6:.2f} | "
                     f"{served / wall / 1e6:.1f} | {base / wall:.2f}x | {sha[:12]} |")
    lines += ["", "shards: " + ("identical in every row" if same else "**DIFFERENT: --readers changed the output**")]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (OUT / "hub_readers.md").write_text(text)
    if not same or len({r[3] for r in rows}) != 1:
        sys.exit("hub_readers: FAIL: the shards differ between rows")


if __name__ == "__main__":
    main()
