"""Throughput benchmark: this tool vs build-nanogpt's fineweb.py vs the hardware limit, in ONE run.

    python bench/bench.py                       # 300 MB of text, 3 repeats, one markdown table
    python bench/bench.py --quick               # 30 MB smoke run, 1 repeat
    python bench/bench.py --scale               # the tool at 30 MB / 300 MB / 1.5 GB: time and memory
    python bench/bench.py --help

Input: the real documents of --source (FineWeb-Edu sample parquet files) repeated until there
are --size-mb MB (10^6 bytes of UTF-8 text), written once to bench/data/ (git-ignored, reused) as
parquet (all columns, 1000-row row groups, files of equal size <= 256 MB of text) and as one plain-text file
(documents joined by a blank line). Every row runs on that same input; rows are interleaved within
each repeat and the table shows medians. See bench/README.md for what each row means.
"""
import argparse
import ctypes
import glob
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")
OUT = os.path.join(HERE, "out")
DEFAULT_SOURCE = os.environ.get(
    "FINEWEB_BENCH_SOURCE",
    os.path.join(os.path.dirname(ROOT), "shared", "data", "fineweb-edu", "sample", "10BT", "*.parquet"),
)
ROWS_PER_GROUP = 1000
FILE_TEXT_BYTES = 256_000_000
MiB = 1 << 20
INPUT_VERSION = 2


# ----------------------------------------------------------------------------- input generation


def make_input(size_mb, source, with_text=True, log=print):
    """Generate (or reuse) bench/data/fineweb_{size}MB/: parquet parts + text file. Returns meta dict."""
    name = f"fineweb_{size_mb:g}MB"
    d = os.path.join(DATA, name)
    meta_path = os.path.join(d, "meta.json")
    src = sorted(glob.glob(source))
    if not src:
        sys.exit(f"bench: no source parquet files match {source!r}; pass --source GLOB (FineWeb-Edu parquet files)")
    src_id = [[os.path.basename(f), os.path.getsize(f)] for f in src]
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        ok = meta.get("version") == INPUT_VERSION and meta.get("source") == src_id
        ok = ok and all(os.path.exists(os.path.join(d, p)) for p in meta["parquet"])
        if ok and (not with_text or (meta.get("text") and os.path.exists(os.path.join(d, meta["text"])))):
            return _absolute(meta, d)
    log(f"bench: generating {d}/ ({size_mb:g} MB of text from {len(src)} source files) ...")
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    table = pa.concat_tables([pq.read_table(f) for f in src], promote_options="default")
    texts = table.column("text").to_pylist()
    nbytes = np.array([len((t or "").encode("utf-8")) for t in texts], dtype=np.int64)
    target = int(size_mb * 1e6)
    reps = -(-target // int(nbytes.sum()))
    idx = np.tile(np.arange(len(texts)), reps)
    csum = np.cumsum(nbytes[idx])
    idx = idx[: int(np.searchsorted(csum, target)) + 1]
    csum = csum[: len(idx)]
    # split into parquet files of <= FILE_TEXT_BYTES of text
    nfiles = -(-int(csum[-1]) // FILE_TEXT_BYTES)
    cuts = sorted({0, len(idx)} | {int(np.searchsorted(csum, csum[-1] * k / nfiles)) for k in range(1, nfiles)})
    parts = []
    for i, (a, z) in enumerate(zip(cuts, cuts[1:])):
        p = f"part_{i:05d}.parquet"
        pq.write_table(table.take(pa.array(idx[a:z])), os.path.join(tmp, p), row_group_size=ROWS_PER_GROUP,
                       compression="snappy")
        parts.append(p)
    meta = {"version": INPUT_VERSION, "source": src_id, "docs": int(len(idx)), "text_bytes": int(csum[-1]),
            "parquet": parts, "parquet_bytes": sum(os.path.getsize(os.path.join(tmp, p)) for p in parts)}
    if with_text:
        # one plain-text file: documents joined by a blank line (the tool's default --doc-separator)
        with open(os.path.join(tmp, "text.txt"), "wb") as f:
            for a in range(0, len(idx), 1000):
                f.write(b"".join(texts[j].encode("utf-8") + b"\n\n" for j in idx[a : a + 1000]))
        meta["text"] = "text.txt"
        meta["text_file_bytes"] = os.path.getsize(os.path.join(tmp, "text.txt"))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(d, ignore_errors=True)
    os.rename(tmp, d)
    return _absolute(meta, d)


def _absolute(meta, d):
    meta = dict(meta)
    meta["dir"] = d
    meta["parquet_paths"] = [os.path.join(d, p) for p in meta["parquet"]]
    meta["text_path"] = os.path.join(d, meta["text"]) if meta.get("text") else None
    return meta


def warm_page_cache(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


# ----------------------------------------------------------------------------- measuring


def _busy_seconds():
    """CPU-seconds the whole machine has been busy (all cores, incl. steal), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _become_subreaper():
    """Orphaned descendants (forkserver, pool workers) get re-parented to us, so their CPU time is
    counted in RUSAGE_CHILDREN once reaped."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _reap_orphans(timeout=10.0):
    deadline = time.time() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.time() > deadline:
                return
            time.sleep(0.02)


class TreeSampler(threading.Thread):
    """RSS summed over the process trees of `pids` every `interval` s (read from /proc/PID/statm,
    cheap); the tree is re-listed and PSS (smaps_rollup, dearer) read every `slow` ticks. The
    sampler costs ~1% of one core."""

    def __init__(self, pids, interval=0.1, slow=5):
        super().__init__(daemon=True)
        self.roots = [psutil.Process(p) for p in pids]
        self.interval, self.slow = interval, slow
        self.stop_event = threading.Event()
        self.timeline = []  # (unix time, rss bytes, pss bytes or None, nprocs)
        self.peak_rss = self.peak_pss = self.peak_main = self.peak_child = 0
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self, pid):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * self.page
        except (OSError, ValueError, IndexError):
            return None

    def run(self):
        procs, tick, root_pids = [], 0, {r.pid for r in self.roots}
        while not self.stop_event.is_set():
            if tick % self.slow == 0:
                procs = []
                for root in self.roots:
                    try:
                        procs += [root] + root.children(recursive=True)
                    except psutil.Error:
                        pass
            rss = pss = nproc = 0
            for p in procs:
                r = self._rss(p.pid)
                if r is None:
                    continue
                if tick % self.slow == 0:
                    try:
                        pss += getattr(p.memory_full_info(), "pss", r)
                    except psutil.Error:
                        pss += r
                rss, nproc = rss + r, nproc + 1
                if p.pid in root_pids:
                    self.peak_main = max(self.peak_main, r)
                else:
                    self.peak_child = max(self.peak_child, r)
            if nproc:
                slow = tick % self.slow == 0
                self.timeline.append((time.time(), rss, pss if slow else None, nproc))
                self.peak_rss = max(self.peak_rss, rss)
                if slow:
                    self.peak_pss = max(self.peak_pss, pss)
            tick += 1
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join()


class Measure:
    """Wall time, CPU of all descendants, other load on the machine, and a tree sampler."""

    def start(self, procs):
        self.t0, self.c0, self.s0, self.b0 = time.time(), _children_cpu(), _self_cpu(), _busy_seconds()
        self.sampler = TreeSampler([p.pid for p in procs])
        self.sampler.start()
        return self

    def finish(self, t_start=None, t_end=None):
        t_end = t_end or time.time()
        self.sampler.stop()
        _reap_orphans()
        wall = t_end - (t_start or self.t0)
        cpu = _children_cpu() - self.c0
        res = {"wall": wall, "cpu_s": cpu, "peak_rss": self.sampler.peak_rss, "peak_pss": self.sampler.peak_pss,
               "peak_main_rss": self.sampler.peak_main, "peak_child_rss": self.sampler.peak_child,
               "timeline": self.sampler.timeline}
        b1 = _busy_seconds()
        if self.b0 is not None and b1 is not None:
            span = time.time() - self.t0
            res["other_load"] = max(0.0, (b1 - self.b0) - cpu - (_self_cpu() - self.s0)) / max(span, 1e-9)
        return res


def wait_for_quiet(max_wait, threshold=0.3, window=1.0):
    """Wait (at most max_wait s) until the machine's other load is below `threshold` cores for one
    `window`: on a shared machine this keeps runs from starting in the middle of someone's build."""
    t_end = time.time() + max_wait
    load = None
    while True:
        b0 = _busy_seconds()
        if b0 is None:
            return None
        time.sleep(window)
        load = (_busy_seconds() - b0) / window
        if load < threshold or time.time() >= t_end:
            return load


def child_env(extra=None):
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "0")
    env.update(extra or {})
    return env


def run_command(cmd, logdir, tag, env=None):
    os.makedirs(logdir, exist_ok=True)
    out_path, err_path = os.path.join(logdir, f"{tag}.out"), os.path.join(logdir, f"{tag}.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.time()
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env or child_env())
        m = Measure().start([p])
        m.t0 = t0
        rc = p.wait()
        res = m.finish()
    if rc != 0:
        tail = open(err_path, errors="replace").read()[-3000:]
        raise RuntimeError(f"{tag}: exit code {rc}: {shlex.join(cmd)}\n--- stderr tail ({err_path}) ---\n{tail}")
    res["stdout"] = open(out_path, errors="replace").read()
    return res


# ----------------------------------------------------------------------------- shard checks


def shard_files(out_dir):
    files = glob.glob(os.path.join(out_dir, "*_val_*.npy")) + glob.glob(os.path.join(out_dir, "*_train_*.npy"))
    return sorted(files, key=lambda f: int(re.search(r"_(\d{6})\.npy$", f).group(1)))


def stream_info(out_dir):
    """sha256 of the concatenated token bytes of all .npy shards, shard lengths, per-file sha256."""
    h, lengths, file_hashes = hashlib.sha256(), [], []
    for f in shard_files(out_dir):
        a = np.load(f, mmap_mode="r")
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
        lengths.append(int(len(a)))
        fh = hashlib.sha256()
        with open(f, "rb") as fp:
            while chunk := fp.read(16 * MiB):
                fh.update(chunk)
        file_hashes.append(fh.hexdigest())
    return {"stream_sha256": h.hexdigest(), "tokens": sum(lengths), "lengths": lengths, "file_sha256": file_hashes,
            "docs": None}


# ----------------------------------------------------------------------------- the rows


ONE_THREAD = {"RAYON_NUM_THREADS": "1", "FASTOKENS_BPE_THREADS": "1"}


def row_ceiling(meta, nparts, backend, logdir, tag, threads=None, include_read=False):
    """(a) nparts independent processes, each tokenizing its share of the texts in memory.
    threads=None: one thread per process (the library's threads off); else the library's default."""
    cmd = [sys.executable, os.path.join(HERE, "ceiling.py"), "--backend", backend, "--files", *meta["parquet_paths"]]
    if include_read:
        cmd.append("--include-read")
    env = child_env(ONE_THREAD if threads is None else {})
    procs = []
    for k in range(nparts):
        procs.append(subprocess.Popen(cmd + ["--part", str(k), "--of", str(nparts)], cwd=ROOT, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=open(os.path.join(logdir, f"{tag}.{k}.err"), "wb"),
                                      env=env, text=True))
    m = Measure().start(procs)
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{tag}: ceiling worker failed (see {logdir}/{tag}.*.err): {line!r}")
    t_go = time.time()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = []
    t_end = t_go
    for p in procs:
        outs.append(json.loads(p.stdout.readline()))
        t_end = max(t_end, time.time())
    for p in procs:
        p.wait()
    res = m.finish(t_start=t_go, t_end=t_end)
    res["cpu_s"] = sum(o["cpu_s"] for o in outs)  # the tokenizing part only
    res["tokens"] = sum(o["tokens"] for o in outs)
    res["docs"] = sum(o["docs"] for o in outs)
    res["text_bytes"] = sum(o["text_bytes"] for o in outs)
    res["stream_sha256"] = outs[0]["sha256"] if nparts == 1 else None
    return res


def row_nanogpt(meta, nprocs, logdir, tag):
    """(b) build-nanogpt's fineweb.py on the local parquet, with a fresh HF cache."""
    out_dir = os.path.join(OUT, "runs", tag)
    cache = os.path.join(DATA, "hf_cache_fresh")
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, os.path.join(HERE, "nanogpt_fineweb.py"), "--data-files", *meta["parquet_paths"],
           "--local-dir", out_dir, "--cache-dir", cache]
    if nprocs:
        cmd += ["--nprocs", str(nprocs)]
    env = child_env({"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": os.path.join(cache, "home"),
                     "HF_DATASETS_CACHE": cache})
    res = run_command(cmd, logdir, tag, env)
    shutil.rmtree(cache, ignore_errors=True)
    info = json.loads(res["stdout"].strip().splitlines()[-1])
    res.update(stream_info(out_dir))
    res["docs"], res["text_bytes"] = info["docs"], meta["text_bytes"]
    res["extra"] = f"load_dataset {info['load_s']:.1f}s"
    res["nprocs"] = info["nprocs"]
    return res


def tool_command(inputs, out_dir, nprocs, driver=None, extra=()):
    script = driver or os.path.join(ROOT, "fineweb.py")
    return [sys.executable, script, "--input", *inputs, "--local-dir", out_dir, "--prefix", "edufineweb",
            "--format", "npy", "--nprocs", str(nprocs), *extra]


def row_tool(meta, nprocs, kind, logdir, tag, extra=(), driver=None):
    """(c) python fineweb.py --input ... --nprocs N --format npy, end to end."""
    out_dir = os.path.join(OUT, "runs", tag)
    shutil.rmtree(out_dir, ignore_errors=True)
    inputs = meta["parquet_paths"] if kind == "parquet" else [meta["text_path"]]
    res = run_command(tool_command(inputs, out_dir, nprocs, driver=driver, extra=extra), logdir, tag)
    res.update(stream_info(out_dir))
    with open(os.path.join(out_dir, "manifest.json")) as f:
        man = json.load(f)
    res["docs"] = sum(s["docs"] for s in man["shards"])
    res["text_bytes"] = meta["text_bytes"] if kind == "parquet" else meta["text_file_bytes"]
    return res


# ----------------------------------------------------------------------------- reporting


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".2f", none="-"):
    return none if x is None else format(x, spec)


def usable_cpus():
    """The cores the tool would use by default (the tool's own rule: affinity and cgroup quota)."""
    sys.path.insert(0, ROOT)
    try:
        from tokshards.job import usable_cpus as tool_cpus
    finally:
        sys.path.remove(ROOT)
    return tool_cpus()


def code_state():
    """(git commit + dirty marker, fingerprint of the tool's code): to notice the tool changing mid-run."""
    h = hashlib.sha256()
    for f in sorted(glob.glob(os.path.join(ROOT, "tokshards", "*.py"))) + [os.path.join(ROOT, "fineweb.py")]:
        try:
            with open(f, "rb") as fh:
                h.update(f.encode() + b"\0" + fh.read())
        except OSError:
            pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "tokshards", "fineweb.py"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "?", ""
    return commit + (" + uncommitted changes" if dirty else ""), h.hexdigest()[:12]


def code_line(start, end):
    line = f"Tool code: commit {start[0]} (fingerprint {start[1]})"
    if start != end:
        line += (f". **WARNING: the tool's code changed during this run (now {end[0]}, fingerprint {end[1]}): "
                 "rows from different repeats may have run different code; rerun on a quiet tree.**")
    return line


def machine_line():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tiktoken
    import datasets

    return (f"{platform.node() or 'machine'}: {cpu}, {usable_cpus()} usable cores (os.cpu_count()={os.cpu_count()}), "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; Python {platform.python_version()}, "
            f"tiktoken {tiktoken.__version__}, numpy {np.__version__}, pyarrow {pa.__version__}, "
            f"datasets {datasets.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")


def main_table(args, rows, results, meta, cmdline):
    n = args.nprocs
    rounds = max(len(v) for v in results.values())

    def ratio(key, ref):
        if key not in results or ref not in results:
            return None
        return med([x["rate"] / y["rate"] for x, y in zip(results[key], results[ref])])

    lines = [f"`{cmdline}`", "",
             f"{machine_line()}.", "", code_line(args.code_start, code_state()) + ".", "",
             f"Input: {meta['docs']:,} documents, {meta['text_bytes'] / 1e6:.0f} MB of text (FineWeb-Edu sample "
             f"documents repeated), as {len(meta['parquet'])} parquet file(s) ({meta['parquet_bytes'] / 1e6:.0f} MB) "
             f"and as one text file ({meta.get('text_file_bytes', 0) / 1e6:.0f} MB, documents joined by a blank line). "
             f"{rounds} repeat(s), rows interleaved; medians (min-max). Ratios are medians of per-repeat ratios.", "",
             "| row | what | Mtok/s median (min-max) | MB text/s | wall s | tokens | CPU s per Mtok | peak RSS MiB, "
             f"process tree (largest process) | peak PSS MiB, tree | of {n}-core ceiling, same tokenizer | vs b | "
             f"vs b{n} | other load (cores) | token stream |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ref_key = next((k for k in ("b", "t1", "a1") if results.get(k) and results[k][0].get("stream_sha256")), None)
    ref_hash = results[ref_key][0]["stream_sha256"] if ref_key else None
    for key, label in rows:
        rs = results.get(key)
        if not rs:
            continue
        rates = [r["rate"] for r in rs]
        mb = med([r["text_bytes"] / r["wall"] / 1e6 for r in rs])
        cpu = med([r["cpu_s"] / (r["tokens"] / 1e6) for r in rs])
        rss = med([r["peak_rss"] for r in rs]) / MiB
        big = med([max(r["peak_main_rss"], r["peak_child_rss"]) for r in rs]) / MiB
        pss = med([r["peak_pss"] for r in rs]) / MiB
        hashes = {r.get("stream_sha256") for r in rs}
        tokens = rs[0]["tokens"]
        if None in hashes:
            stream = "-"
        elif len(hashes) > 1:
            stream = "DIFFERS BETWEEN REPEATS"
        else:
            h = hashes.pop()
            stream = h[:8]
            if ref_hash and key != ref_key:
                if h == ref_hash:
                    stream += f" = {ref_key}"
                    fh = rs[0].get("file_sha256")
                    if fh and fh == results[ref_key][0].get("file_sha256"):
                        stream += " (files byte-identical)"
                else:
                    stream += f" **differs from {ref_key}**"
        extra = rs[0].get("extra")
        ceil = args.ceiling_of.get(key)
        lines.append(
            f"| {show_key(key, n)} | {label}{' (' + extra + ')' if extra else ''} | {med(rates) / 1e6:.2f} "
            f"({min(rates) / 1e6:.2f}-{max(rates) / 1e6:.2f}) | {mb:.1f} | {med([r['wall'] for r in rs]):.1f} | "
            f"{tokens / 1e6:.1f}M | {cpu:.3f} | {rss:.0f} ({big:.0f}) | {pss:.0f} | "
            f"{fmt(ratio(key, ceil)) + ' (' + show_key(ceil, n) + ')' if ceil and ratio(key, ceil) is not None else '-'} | "
            f"{fmt(ratio(key, 'b'))} | {fmt(ratio(key, 'bn'))} | {fmt(med([r.get('other_load') for r in rs]))} | "
            f"{stream} |")
    lines += ["", f"Targets (issue): the tool (c{n}) >= 0.85 of the {n}-core ceiling of its tokenizer, >= 1.6x "
              "build-nanogpt, peak RSS < 1 GiB. The input repeats the same documents, which flatters tokenizers with a "
              "pre-token cache (fastokens: ~2x on warm text, per shared/notes/fast-tokenizers.md) but not tiktoken."]
    return "\n".join(lines)


def fast_backend_available():
    """Does the tool's default (auto) backend use the fast GPT-2 path here?"""
    try:
        sys.path.insert(0, ROOT)
        import tiktoken
        from tokshards import fastgpt2

        fastgpt2.load("gpt2", tiktoken.get_encoding("gpt2"))
        return True
    except Exception:  # noqa: BLE001 (no fastokens, no fastgpt2 module, failed self-check)
        return False
    finally:
        sys.path.remove(ROOT)


def define_rows(args, meta):
    """[(key, label, ceiling key for "of ceiling", run function)] in display order."""
    n = args.nprocs
    shipped = max(1, (os.cpu_count() or 1) // 2)
    fast = fast_backend_available()
    tb = "fastokens" if fast else "tiktoken"  # the tool's default backend here
    ceil_tool = "a2" if fast else "t2"
    rows = []
    if fast:
        rows += [
            ("a1", "ceiling, tool's backend (fastokens): 1 process, 1 thread, texts in memory, no IPC", "a2",
             lambda ld, tag: row_ceiling(meta, 1, "fast", ld, tag)),
            ("a2", f"ceiling, fastokens: {n} independent processes, 1 thread each, 1/{n} of the texts each", "a2",
             lambda ld, tag: row_ceiling(meta, n, "fast", ld, tag)),
            ("a2r", f"as a{n}, but each process also reads its half of the parquet (pyarrow -> str): no IPC", "a2",
             lambda ld, tag: row_ceiling(meta, n, "fast", ld, tag, include_read=True)),
            ("aT", "fastokens: 1 process, the library's own threads (Rayon default), texts in memory", "a2",
             lambda ld, tag: row_ceiling(meta, 1, "fast", ld, tag, threads="default")),
        ]
    rows += [
        ("t1", "ceiling, tiktoken: 1 process, texts in memory, no IPC", "t2",
         lambda ld, tag: row_ceiling(meta, 1, "tiktoken", ld, tag)),
        ("t2", f"ceiling, tiktoken: {n} independent processes, 1/{n} of the texts each", "t2",
         lambda ld, tag: row_ceiling(meta, n, "tiktoken", ld, tag)),
        ("b", f"build-nanogpt fineweb.py as shipped (tiktoken): Pool(cpu_count//2 = {shipped}), datasets read", "t2",
         lambda ld, tag: row_nanogpt(meta, None, ld, tag)),
        ("bn", f"build-nanogpt fineweb.py with Pool({n})", "t2",
         lambda ld, tag: row_nanogpt(meta, n, ld, tag)),
        ("c1", f"this tool ({tb}), parquet, --nprocs 1", ceil_tool,
         lambda ld, tag: row_tool(meta, 1, "parquet", ld, tag)),
        ("cn", f"this tool ({tb}), parquet, --nprocs {n}", ceil_tool,
         lambda ld, tag: row_tool(meta, n, "parquet", ld, tag)),
        ("ct", f"this tool ({tb}), plain text, --nprocs {n}", ceil_tool,
         lambda ld, tag: row_tool(meta, n, "text", ld, tag)),
    ]
    if args.alt_tool:
        alt = os.path.join(os.path.abspath(args.alt_tool), "fineweb.py")
        rows += [
            ("c1x", f"--alt-tool {args.alt_tool}, parquet, --nprocs 1", ceil_tool,
             lambda ld, tag: row_tool(meta, 1, "parquet", ld, tag, driver=alt)),
            ("cnx", f"--alt-tool {args.alt_tool}, parquet, --nprocs {n}", ceil_tool,
             lambda ld, tag: row_tool(meta, n, "parquet", ld, tag, driver=alt)),
            ("ctx", f"--alt-tool {args.alt_tool}, plain text, --nprocs {n}", ceil_tool,
             lambda ld, tag: row_tool(meta, n, "text", ld, tag, driver=alt)),
        ]
    if fast:
        rows.append(("cnT", f"this tool, --tokenizer-backend tiktoken, parquet, --nprocs {n}", "t2",
                     lambda ld, tag: row_tool(meta, n, "parquet", ld, tag, extra=("--tokenizer-backend", "tiktoken"))))
        rows.append(("ctT", f"this tool, --tokenizer-backend tiktoken, plain text, --nprocs {n}", "t2",
                     lambda ld, tag: row_tool(meta, n, "text", ld, tag, extra=("--tokenizer-backend", "tiktoken"))))
    if shipped == n:
        rows = [r for r in rows if r[0] != "bn"]
    if args.only:
        keep = set(args.only.split(","))
        rows = [r for r in rows if r[0] in keep or show_key(r[0], n) in keep]
    return rows


def show_key(k, n):
    return {"a2": f"a{n}", "a2r": f"a{n}r", "bn": f"b{n}", "cn": f"c{n}", "cnT": f"c{n}T", "cnx": f"c{n}x"}.get(k, k)


def run_main(args, cmdline):
    meta = make_input(args.size_mb, args.source, with_text=True)
    warm_page_cache(meta["parquet_paths"] + [meta["text_path"]])
    specs = define_rows(args, meta)
    rows = [(k, label) for k, label, _, _ in specs]
    run_fn = {k: fn for k, _, _, fn in specs}
    args.ceiling_of = {k: c for k, _, c, _ in specs}
    logdir = os.path.join(OUT, "logs")
    os.makedirs(logdir, exist_ok=True)
    results = {k: [] for k, _ in rows}
    for r in range(args.repeat):
        order = rows[r % len(rows):] + rows[: r % len(rows)]  # rotate, so no row always runs first
        for key, label in order:
            tag = f"{key}_r{r}"
            wait_for_quiet(args.settle)
            t = time.time()
            res = run_fn[key](logdir, tag)
            res["rate"] = res["tokens"] / res["wall"]
            res["kind"] = "text" if key in ("ct", "ctx", "ctT") else "parquet"
            res["key"] = key
            if not args.keep_outputs and key[0] in "bc":
                shutil.rmtree(os.path.join(OUT, "runs", tag), ignore_errors=True)
            res.pop("stdout", None)
            results[key].append(res)
            with open(os.path.join(OUT, f"bench_{args.size_mb:g}MB.partial.json"), "w") as f:  # survives a kill
                json.dump({k: [{kk: vv for kk, vv in x.items() if kk != "timeline"} for x in v]
                           for k, v in results.items()}, f)
            print(f"bench: repeat {r + 1}/{args.repeat} {key:3s} {res['rate'] / 1e6:6.2f} Mtok/s  wall {res['wall']:6.1f}s  "
                  f"peak RSS {res['peak_rss'] / MiB:6.0f} MiB  other load {fmt(res.get('other_load'))}  "
                  f"({time.time() - t:.0f}s)", file=sys.stderr, flush=True)
    table = main_table(args, rows, results, meta, cmdline)
    os.makedirs(OUT, exist_ok=True)
    stem = os.path.join(OUT, f"bench_{args.size_mb:g}MB")
    with open(stem + ".md", "w") as f:
        f.write(table + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"cmdline": cmdline, "meta": meta, "results": {
            k: [{kk: vv for kk, vv in r.items() if kk != "timeline"} for r in v] for k, v in results.items()}}, f, indent=1)
    print(table)
    print(f"\n(written to {stem}.md and .json; logs in {logdir}/)", file=sys.stderr)


# ----------------------------------------------------------------------------- --scale


def run_scale(args, cmdline):
    sizes = [float(s) for s in args.scale_sizes.split(",")]
    metas = {s: make_input(s, args.source, with_text=False) for s in sizes}
    for m in metas.values():
        warm_page_cache(m["parquet_paths"])
    n = args.nprocs
    logdir = os.path.join(OUT, "logs")
    os.makedirs(logdir, exist_ok=True)
    tools = [("this tool", ROOT)] + ([("alt", os.path.abspath(args.alt_tool))] if args.alt_tool else [])
    results = {(t, s): [] for t, _ in tools for s in sizes}
    for r in range(args.repeat):
        for s in sizes:
            for t, root in tools:
                meta = metas[s]
                tag = f"scale_{'alt_' if t == 'alt' else ''}{s:g}MB_r{r}"
                wait_for_quiet(args.settle)
                out_dir = os.path.join(OUT, "runs", tag)
                shutil.rmtree(out_dir, ignore_errors=True)
                prog = os.path.join(logdir, f"{tag}.progress")
                cmd = tool_command(meta["parquet_paths"], out_dir, n, driver=os.path.join(HERE, "tool_progress.py"))
                res = run_command(cmd, logdir, tag, child_env({"BENCH_PROGRESS_FILE": prog, "BENCH_TOOL_ROOT": root}))
                with open(os.path.join(out_dir, "manifest.json")) as f:
                    man = json.load(f)
                res["tokens"] = sum(x["tokens"] for x in man["shards"])
                res["shards"] = len(man["shards"])
                res["rate"] = res["tokens"] / res["wall"]
                res["progress"] = [tuple(map(float, line.split())) for line in open(prog) if line.strip()]
                if not args.keep_outputs:
                    shutil.rmtree(out_dir, ignore_errors=True)
                res.pop("stdout", None)
                results[(t, s)].append(res)
                print(f"bench: scale repeat {r + 1}/{args.repeat} {t} {s:g} MB: {res['rate'] / 1e6:.2f} Mtok/s, wall "
                      f"{res['wall']:.1f}s, peak RSS {res['peak_rss'] / MiB:.0f} MiB, other load "
                      f"{fmt(res.get('other_load'))}", file=sys.stderr, flush=True)

    lines = [f"`{cmdline}`", "", f"{machine_line()}.", "", code_line(args.code_start, code_state()) + ".", "",
             f"This tool end to end (`fineweb.py --input <parquet> --nprocs {n} --format npy`, progress bar replaced by "
             f"a recorder), {args.repeat} repeat(s), medians. The fit (least squares on the medians) splits wall time "
             "into a fixed start/stop cost and a marginal cost per token; 'steady' is the rate between 10% and 90% of "
             "the tokens (from the recorder).", ""]
    fits = {}
    for t, root in tools:
        xs = np.array([results[(t, s)][0]["tokens"] for s in sizes], dtype=float)
        ys = np.array([med([r["wall"] for r in results[(t, s)]]) for s in sizes])
        slope, icpt = np.polyfit(xs, ys, 1) if len(sizes) > 1 else (ys[0] / xs[0], 0.0)
        fits[t] = (xs, ys, slope, icpt)
        lines.append(f"- {t}{' (' + root + ')' if t == 'alt' else ''}: wall = {icpt:.2f} s + {slope * 1e8:.2f} s per "
                     f"100M tokens (marginal rate {1 / slope / 1e6:.1f} Mtok/s).")
    lines += ["", "| tool | input MB of text | docs | tokens | shards | wall s median | Mtok/s | steady Mtok/s | "
              "s per 100M tokens | fit residual | peak RSS MiB, tree (largest process) | peak PSS MiB, tree | "
              "other load (cores) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for t, _ in tools:
        xs, ys, slope, icpt = fits[t]
        for s, x, y in zip(sizes, xs, ys):
            rs = results[(t, s)]
            pred = icpt + slope * x
            lines.append(
                f"| {t} | {s:g} | {metas[s]['docs']:,} | {x / 1e6:.1f}M | {rs[0]['shards']} | {y:.1f} | "
                f"{med([r['rate'] for r in rs]) / 1e6:.2f} | {fmt(med([steady_rate(r) / 1e6 for r in rs if steady_rate(r)]), '.1f')} | "
                f"{y / x * 1e8:.1f} | {(y - pred) / pred * 100:+.1f}% | "
                f"{med([r['peak_rss'] for r in rs]) / MiB:.0f} "
                f"({med([max(r['peak_main_rss'], r['peak_child_rss']) for r in rs]) / MiB:.0f}) | "
                f"{med([r['peak_pss'] for r in rs]) / MiB:.0f} | {fmt(med([r.get('other_load') for r in rs]))} |")
        peaks = [med([r["peak_rss"] for r in results[(t, s)]]) for s in sizes]
        notes.append(f"{t}: peak RSS largest/smallest input {max(peaks) / min(peaks):.2f}x for "
                     f"{xs.max() / xs.min():.0f}x the tokens.")
    lines += [""] + notes + ["(A tool with a shard-sized buffer grows until its first shard is full: "
                             "up to 2 bytes x --shard-size, 191 MiB for 100M uint16 tokens; then it stays flat.)"]
    table = "\n".join(lines)
    os.makedirs(OUT, exist_ok=True)
    png = os.path.join(OUT, "scale.png")
    plot_scale(sizes, tools, results, fits, png)
    with open(os.path.join(OUT, "scale.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(OUT, "scale.json"), "w") as f:
        json.dump({"cmdline": cmdline, "results": {f"{t} {s:g}": [{k: v for k, v in r.items() if k not in ("timeline", "progress")}
                                                                 for r in rs] for (t, s), rs in results.items()}}, f, indent=1)
    print(table)
    print(f"\n(plot: {png}; table: {OUT}/scale.md)", file=sys.stderr)


def steady_rate(r):
    pr = r.get("progress") or []
    if len(pr) < 3 or not pr[-1][1]:
        return None
    total = pr[-1][1]
    a = next(t for t, k in pr if k >= 0.1 * total)
    b = next(t for t, k in pr if k >= 0.9 * total)
    return 0.8 * total / (b - a) if b > a else None


def plot_scale(sizes, tools, results, fits, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(1, 3, figsize=(17, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ti, (t, _) in enumerate(tools):
        ls = "-" if ti == 0 else "--"
        for si, s in enumerate(sizes):
            rs = results[(t, s)]
            r = sorted(rs, key=lambda r: r["wall"])[len(rs) // 2]  # the median run
            t0 = r["timeline"][0][0] if r["timeline"] else r["progress"][0][0]
            pr = np.array(r["progress"]) if r["progress"] else np.zeros((0, 2))
            label = f"{t}, {s:g} MB"
            if len(pr) > 1:
                edges = np.arange(0, pr[-1, 0] - t0 + 0.5, 0.5)  # tokens/s in 0.5-second bins
                cum = np.interp(edges + t0, pr[:, 0], pr[:, 1], left=0)
                ax[0].plot(edges[1:], np.diff(cum) / 0.5 / 1e6, ls, color=colors[si % len(colors)], label=label, lw=1)
            tl = np.array([(tt - t0, rss) for tt, rss, _, _ in r["timeline"]])
            if len(tl):
                ax[1].plot(tl[:, 0], tl[:, 1] / MiB, ls, color=colors[si % len(colors)], label=label, lw=1)
        xs, ys, slope, icpt = fits[t]
        ax[2].plot(xs / 1e6, ys, "o" if ti == 0 else "s", color=colors[ti], label=f"{t}: median wall")
        xx = np.linspace(0, xs.max(), 50)
        ax[2].plot(xx / 1e6, icpt + slope * xx, ls, color=colors[ti], lw=1,
                   label=f"{t}: {icpt:.1f} s + {slope * 1e8:.1f} s/100M tok")
    ax[0].set(title="tokens/s over the run (0.5 s bins)", xlabel="seconds since start", ylabel="M tokens/s")
    ax[1].set(title="RSS of the process tree (sum)", xlabel="seconds since start", ylabel="MiB")
    ax[1].axhline(1024, color="r", ls=":", lw=1, label="1 GiB")
    ax[2].set(title="wall time vs tokens", xlabel="M tokens", ylabel="seconds")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


# ----------------------------------------------------------------------------- main


def preflight():
    try:
        import tiktoken

        tiktoken.get_encoding("gpt2")
    except Exception as e:  # noqa: BLE001
        sys.exit(f"bench: cannot load tiktoken's gpt2 vocabulary ({type(e).__name__}); on a machine without network "
                 "set TIKTOKEN_CACHE_DIR to a directory holding it")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=300, help="MB (10^6 bytes) of text in the input (default 300)")
    p.add_argument("--repeat", type=int, default=None, help="runs of every row; medians are reported (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 30 MB, 1 repeat (unless given)")
    p.add_argument("--nprocs", type=int, default=None,
                   help="cores for the ceiling and the multi-process rows (default: usable cores, at most 2)")
    p.add_argument("--scale", action="store_true", help="run the tool at --scale-sizes instead; writes bench/out/scale.png")
    p.add_argument("--scale-sizes", default="30,300,1500", help="MB of text for --scale (default 30,300,1500)")
    p.add_argument("--source", default=DEFAULT_SOURCE, help=f"parquet glob of real documents (default {DEFAULT_SOURCE})")
    p.add_argument("--only", default=None, help="comma-separated rows to run (a1,a2,b,bn,c1,cn,ct)")
    p.add_argument("--settle", type=float, default=60,
                   help="before each run wait up to this many seconds for the machine to be idle (default 60)")
    p.add_argument("--alt-tool", default=None, metavar="DIR",
                   help="also run another checkout's fineweb.py (rows c1x, c2x, ctx; with --scale: every size), side by side")
    p.add_argument("--keep-outputs", action="store_true", help="keep the shards written in bench/out/runs/")
    args = p.parse_args(argv)
    cmdline = "python bench/bench.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    if args.quick:
        args.size_mb = 30
        args.repeat = args.repeat or 1
    args.repeat = args.repeat or 3
    args.nprocs = args.nprocs or min(2, usable_cpus())
    preflight()
    args.code_start = code_state()
    _become_subreaper()
    if args.scale:
        run_scale(args, cmdline)
    else:
        run_main(args, cmdline)


if __name__ == "__main__":
    main()
