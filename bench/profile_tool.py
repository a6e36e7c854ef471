"""Where does the tool spend its time? py-spy on the parent and on every worker, plus exact CPU.

    python bench/profile_tool.py [--size-mb 300] [--nprocs 2] [--rate 100]

Runs `python fineweb.py --input <bench parquet> --nprocs N --format npy --quiet` (the input of
bench.py --size-mb, generated if missing) and attaches `py-spy record --threads` to the parent and to
each worker as it appears (py-spy --subprocesses does not follow forkserver workers). Meanwhile it
samples per-process and per-thread CPU time with psutil. Writes bench/out/profile_<size>MB.md (the
summary printed here) and the raw py-spy stacks (bench/out/profile_*.raw, for flamegraph.pl).
Needs `pip install py-spy` and ptrace permission (root, or kernel.yama.ptrace_scope=0).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def role_of(p, parent_pid):
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return None
    if p.pid == parent_pid:
        return "parent"
    if "resource_tracker" in cmd:
        return "resource_tracker"
    if "forkserver" in cmd:
        # the forkserver itself is a child of the parent; workers are its children
        return "forkserver" if p.ppid() == parent_pid else "worker"
    return "other"


def summarize(raw_path, top=14):
    """py-spy raw lines: 'frame;frame;... count'. Returns per-thread totals, self and inclusive."""
    by_thread = collections.Counter()
    self_t = collections.Counter()
    incl = collections.Counter()
    total = 0
    if not os.path.exists(raw_path):
        return 0, by_thread, self_t, incl
    for line in open(raw_path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        n = int(n)
        frames = stack.split(";")
        # with --threads, the first frame is 'thread (0x...)' (possibly after 'process ...')
        frames = [f for f in frames if not f.startswith("process ")]
        thread = frames[0] if frames and frames[0].startswith("thread ") else "?"
        frames = frames[1:] if thread != "?" else frames
        total += n
        by_thread[thread] += n
        if frames:
            self_t[_short(frames[-1])] += n
        for f in set(_short(f) for f in frames):
            incl[f] += n
    return total, by_thread, self_t, incl


def _short(frame):
    # 'encode_batch (tokshards/tokenizer.py:105)' -> 'encode_batch (tokshards/tokenizer.py)'
    frame = re.sub(r":\d+\)$", ")", frame)
    frame = re.sub(r"\(/[^)]*/(site-packages|python3\.\d+)/", "(", frame)
    return frame


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=float, default=300)
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--input-kind", choices=["parquet", "text"], default="parquet")
    ap.add_argument("--alt-tool", default=None, metavar="DIR", help="profile DIR/fineweb.py instead (a patched checkout)")
    args = ap.parse_args()
    if not shutil.which("py-spy"):
        sys.exit("profile_tool: needs py-spy (pip install py-spy)")
    bench.preflight()
    meta = bench.make_input(args.size_mb, bench.DEFAULT_SOURCE, with_text=args.input_kind == "text")
    inputs = meta["parquet_paths"] if args.input_kind == "parquet" else [meta["text_path"]]
    bench.warm_page_cache(inputs)
    out = os.path.join(bench.OUT, "runs", "profile")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(bench.OUT, exist_ok=True)
    for f in os.listdir(bench.OUT):
        if f.startswith("profile_") and f.endswith(".raw"):
            os.unlink(os.path.join(bench.OUT, f))
    driver = os.path.join(os.path.abspath(args.alt_tool), "fineweb.py") if args.alt_tool else None
    cmd = bench.tool_command(inputs, out, args.nprocs, driver=driver) + ["--quiet"]
    t0 = time.time()
    tool = subprocess.Popen(cmd, cwd=bench.ROOT)
    spies, roles, cpu, threads = {}, {}, {}, collections.defaultdict(dict)
    root = psutil.Process(tool.pid)
    while tool.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            procs = []
        for p in procs:
            if p.pid not in roles:
                r = role_of(p, tool.pid)
                if r is None:
                    continue
                k = sum(1 for x in roles.values() if x == r)
                roles[p.pid] = r if r != "worker" else f"worker{k}"
                if r in ("parent", "worker"):
                    raw = os.path.join(bench.OUT, f"profile_{roles[p.pid]}_{p.pid}.raw")
                    spies[p.pid] = subprocess.Popen(
                        ["py-spy", "record", "--pid", str(p.pid), "--threads", "-r", str(args.rate), "-f", "raw",
                         "-o", raw], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                ct = p.cpu_times()
                cpu[p.pid] = ct.user + ct.system
                for t in p.threads():
                    threads[p.pid][t.id] = t.user_time + t.system_time
            except psutil.Error:
                pass
        time.sleep(0.1)
    wall = time.time() - t0
    for s in spies.values():
        try:
            s.wait(timeout=30)
        except subprocess.TimeoutExpired:
            s.terminate()
    if tool.returncode:
        sys.exit(f"profile_tool: the tool failed ({tool.returncode})")
    man = __import__("json").load(open(os.path.join(out, "manifest.json")))
    tokens = sum(s["tokens"] for s in man["shards"])
    lines = [f"`python bench/profile_tool.py --size-mb {args.size_mb:g} --nprocs {args.nprocs}"
             f"{' --input-kind text' if args.input_kind == 'text' else ''}"
             f"{' --alt-tool ' + args.alt_tool if args.alt_tool else ''}`", "",
             f"Command: `{' '.join(os.path.relpath(c, bench.ROOT) if c.startswith(bench.ROOT) else c for c in cmd)}`"
             f" (under py-spy, {args.rate} Hz: a few % slower than unprofiled)", "",
             f"{tokens / 1e6:.1f}M tokens in {wall:.1f} s = {tokens / wall / 1e6:.2f} Mtok/s.", "",
             "| process | CPU s (psutil) | CPU share of wall | per-thread CPU s |", "|---|---|---|---|"]
    for pid, r in sorted(roles.items(), key=lambda kv: kv[1]):
        th = ", ".join(f"{v:.1f}" for v in sorted(threads[pid].values(), reverse=True) if v >= 0.05)
        lines.append(f"| {r} ({pid}) | {cpu.get(pid, 0):.1f} | {cpu.get(pid, 0) / wall:.2f} | {th} |")
    for pid, r in sorted(roles.items(), key=lambda kv: kv[1]):
        if pid not in spies:
            continue
        raw = os.path.join(bench.OUT, f"profile_{r}_{pid}.raw")
        total, by_thread, self_t, incl = summarize(raw)
        if not total:
            continue
        lines += ["", f"### {r} ({pid}): {total} on-CPU samples = {total / args.rate:.1f} s", "",
                  "threads: " + ", ".join(f"{t} {n / total:.0%}" for t, n in by_thread.most_common(5)), "",
                  "| self time (leaf frame) | share | | inclusive | share |", "|---|---|---|---|---|"]
        st, it = self_t.most_common(14), [x for x in incl.most_common(40) if not x[0].startswith("<module>")][:14]
        for i in range(max(len(st), len(it))):
            a = st[i] if i < len(st) else ("", 0)
            b = it[i] if i < len(it) else ("", 0)
            lines.append(f"| {a[0]} | {a[1] / total:.1%} | | {b[0]} | {b[1] / total:.1%} |")
    text = "\n".join(lines)
    path = os.path.join(bench.OUT, f"profile_{args.size_mb:g}MB{'_alt' if args.alt_tool else ''}.md")
    open(path, "w").write(text + "\n")
    print(text)
    print(f"\n(written to {path}; raw stacks: {bench.OUT}/profile_*.raw)", file=sys.stderr)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
