#!/usr/bin/env python3
"""Two checkouts of the tool side by side on the same files: the local path and the Hub path (the
tests' loopback Hub, uncapped), each checkout run in turn, round after round, so that both see the
same machine. Prints the wall seconds and the tool's own CPU report of every run.

    git worktree add /tmp/before <commit>
    python bench/ab_paths.py --before /tmp/before            # --after defaults to this checkout
    python bench/ab_paths.py --before /tmp/before --rounds 5 --files 40 --file-mb 24
    python bench/ab_paths.py --before /tmp/before --delay 0.03   # + the Hub with 30 ms before each data request
    python bench/ab_paths.py --before /tmp/before --max-tokens 1000 --rounds 8   # start-up alone

The input is parent_cost.py's (40 parquet files of ~24 MB, made once under bench/data/, git-ignored).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import bench  # noqa: E402  (wait_for_quiet, child_env)
from hub import hub_env, start_hub  # noqa: E402  (the test suite's loopback Hub)
from hub_readers import make_repo  # noqa: E402
from parent_cost import CPU  # noqa: E402  (the tool's last line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="a checkout of the tool (its fineweb.py)")
    ap.add_argument("--after", default=str(ROOT), help="another (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--file-mb", type=float, default=24)
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--delay", type=float, default=0,
                    help="also run the Hub path with this many seconds' wait before every request for a data "
                         "file (the server's 'delay' fault): a stand-in for a far Hub's round trip")
    ap.add_argument("--max-tokens", help="stop each run after this many tokens (1000: its fixed start-up alone)")
    a = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken-cache"))
    repo = make_repo(a.files, a.file_mb)
    files = sorted((repo / "sample" / "10BT").glob("*.parquet"))
    work = Path(tempfile.mkdtemp(prefix="ab_paths-"))
    hub = start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, work)
    paths = ("local", "hub") + ((f"hub, {a.delay * 1000:g} ms per request",) if a.delay else ())
    print("| round | checkout | path | wall s | tokens | main process CPU s | writing, hashing threads | workers CPU s "
          "| requests to the Hub |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for r in range(a.rounds):
            for name, tree in (("before", a.before), ("after", a.after)):
                for path in paths:
                    bench.wait_for_quiet(20)
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    if path.startswith("hub"):
                        hub.reset()  # the log, and any delay of the round before
                        if path != "hub":
                            hub.faults(delay=a.delay, match="*.parquet")
                        env, args = hub_env(hub, work, timeout=60), ["--remote", "10BT"]
                    else:
                        env, args = bench.child_env(), ["--input", *map(str, files)]
                    t0 = time.time()
                    stop = ["--max-tokens", a.max_tokens] if a.max_tokens else []
                    p = subprocess.run([sys.executable, str(Path(tree) / "fineweb.py"), *args, *stop, "--local-dir",
                                        str(out), "--nprocs", str(a.nprocs)], env=env, capture_output=True, text=True)
                    wall = time.time() - t0
                    m = CPU.search(p.stdout + p.stderr)
                    if p.returncode or not m:
                        sys.exit(f"ab_paths: {name} {path} failed:\n{p.stderr[-2000:]}")
                    tokens, main_cpu, write, sha, workers, _ = m.groups()
                    requests = len(hub.log()) if path.startswith("hub") else "-"
                    print(f"| {r + 1} | {name} | {path} | {wall:.1f} | {tokens} | {main_cpu} | {write or '-'}, {sha or '-'} "
                          f"| {workers} | {requests} |", flush=True)
                    if path.startswith("hub"):
                        shutil.rmtree(env["HF_HOME"], ignore_errors=True)
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
