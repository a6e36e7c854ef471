#!/usr/bin/env python3
"""Where the CPU goes on the machine you rent: the main process vs the tokenizer processes, on the
local path and the Hub path (the loopback Hub of the tests), on the same files, in one run; and
what that implies for 8, 32 and 96 cores.

    python bench/parent_cost.py                # 40 parquet files of ~24 MB (~350M tokens), 2 workers, 3 repeats
    python bench/parent_cost.py --quick        # 16 files of ~4 MB, 1 repeat
    python bench/parent_cost.py --files 80 --file-mb 24 --nprocs 2 --repeat 3
    python bench/parent_cost.py --tiktoken     # also the tiktoken backend against its own ceiling

Rows, interleaved in each repeat (medians shown):
- ceiling: two processes that each read half of the same parquet files into str and tokenize them
  with the same fast tokenizer (bench/ceiling.py --include-read): no IPC, no writing;
- local: `fineweb.py --input FILES` (default backend, --nprocs N);
- local, page cache: the same with FINEWEB_DIRECT_IO=0 (shards written through the page cache, as
  before shardfile.py: what direct I/O saves the main process);
- local, pipe: the same with FINEWEB_TOKEN_RING=0 (tokens over the workers' pipes, as before
  tokshards/ring.py: what the shared-memory ring saves);
- hub: `fineweb.py --remote 10BT` against tests/hubserver.py serving the same files on 127.0.0.1,
  uncapped (the server runs on the same cores: its CPU is shown apart);
- with --tiktoken: the same ceiling with tiktoken (each process reads its half and encodes every
  document with tiktoken), and `fineweb.py --input FILES --tokenizer-backend tiktoken`.
After each Hub run, every row group's byte range is fetched once more in this process (bench/hub_fetch.py's
functions, with a worker's allocator settings): from the local files, through a minimal client of the
standard library's http.client (each body read into one buffer of its size) and through huggingface_hub's
HTTP client (as a Hub worker does, tokshards.hubrange.RangeFile). The last table splits the Hub run's wall time beyond the local run's into its
parts, and gives two estimates of what it would take with the local start-up and a client that cost no
more than that minimal one: on one machine the loopback server and TCP take CPU the local path spends tokenizing.
CPU seconds are the tool's own report on its last line: its main process (user + system; of it,
the threads that write and hash the shards) and the tokenizer processes it ran (of it, their threads
that read the row groups). The main process's cost per token is measured net of its fixed start-up
(imports, tokenizer, starting workers: the same run stopped after 1,000 tokens), which a long run pays
once; its three threads each have a core on a big machine, so the busiest one sets the bound.
Table -> bench/out/parent_cost.md.
"""
import argparse
import hashlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import bench  # noqa: E402  (make_input's sibling: the ceiling row, machine and code lines)
from hub import hub_env, start_hub  # noqa: E402  (the test suite's loopback Hub)
from hub_fetch import fetch_worker, fetch_http_client, fetch_local, spans_of  # noqa: E402  (the fetches alone)
from tokshards.pool import keep_freed_memory  # noqa: E402  (a worker's allocator, for the fetches here)
from hub_readers import check_card, make_repo  # noqa: E402

OUT = ROOT / "bench" / "out"
CPU = re.compile(r"done: ([\d,]+) tokens.*CPU: main process ([\d.]+) s(?: \(of it, writing ([\d.]+) s and hashing "
                 r"([\d.]+) s, in threads\))?, workers ([\d.]+) s(?: \(of it, reading ([\d.]+) s, in threads\))?")
LINK = 1e9  # bytes/s: the 1 GB/s link of the projection
BUILD_NANOGPT = (6e6, 9e6)  # tok/s its users report on big machines (README "Measured")


def run_tool(args, env, out, nprocs, logdir, tag):
    """One run of the tool: (wall s, tokens, main-process CPU s, workers CPU s, peak RSS of the process
    tree, of the main process, of the largest worker, the main process's writing and hashing threads' CPU
    s, the workers' reading threads' CPU s), the tree sampled every 0.1 s."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "fineweb.py"), *args, "--local-dir", str(out), "--nprocs", str(nprocs)]
    res = bench.run_command(cmd, str(logdir), tag, env)
    m = CPU.search(res["stdout"])
    if not m:
        sys.exit(f"parent_cost: {' '.join(cmd)}: no CPU report in its last line\n{res['stdout'][-2000:]}")
    return (res["wall"], int(m.group(1).replace(",", "")), float(m.group(2)), float(m.group(5)),
            res["peak_rss"], res["peak_main_rss"], res["peak_child_rss"], float(m.group(3) or 0),
            float(m.group(4) or 0), float(m.group(6) or 0))


med = statistics.median


def by_repeat(faster, slower):
    """'a / b / c': each repeat's ratio of two rows' walls (time of the faster over the slower)."""
    return " / ".join(f"{f[0] / s[0]:.2f}" for f, s in zip(faster, slower))


def idle_after_start(rows, name, fixed, fixed_workers, fixed_wall, cores):
    """Seconds a path's cores sat idle after its start-up: wall - start-up - its net CPU spread over them."""
    cpu = med(x[2] + x[3] for x in rows[name]) - fixed[name] - fixed_workers[name]
    return med(x[0] for x in rows[name]) - fixed_wall[name] - cpu / cores, cpu


def hub_against_local(rows, fixed, fixed_workers, fixed_wall, cores):
    """Lines: the Hub run's wall beyond the local run's, by part, and two estimates of what it would take
    with the local start-up and an HTTP client no dearer than the minimal one."""
    wall = {name: med(x[0] for x in rows[name]) for name in ("local", "hub")}
    main = {name: med(x[2] for x in rows[name]) - fixed[name] for name in ("local", "hub")}
    workers = {name: med(x[3] for x in rows[name]) - fixed_workers[name] for name in ("local", "hub")}
    server = (med(x[10] for x in rows["hub"]) - med(rows["fixed server"])) / cores
    local_read, minimal, hfh = (med(x[k] for x in rows["fetch"]) for k in range(3))
    tcp, client = (minimal - local_read) / cores, (hfh - minimal) / cores
    start = fixed_wall["hub"] - fixed_wall["local"]
    rest = (workers["hub"] - workers["local"]) / cores - tcp - client
    # the workers' CPU by thread, from the tool's last line: their reading threads (fetch, decompress, decode)
    # and the rest (the threads that tokenize); each net of its fixed run's, as `workers` is (a fixed run
    # counts the reading of the one batch it writes, not of the few still in flight when it stops)
    reading = {name: med(x[9] for x in rows[name]) - med(x[9] for x in rows[f"fixed {name}"]) for name in ("local", "hub")}
    reading = (reading["hub"] - reading["local"]) / cores
    others = (workers["hub"] - workers["local"]) / cores - reading
    main_extra = (main["hub"] - main["local"]) / cores
    diff = wall["hub"] - wall["local"]
    local_idle, hub_idle = (idle_after_start(rows, name, fixed, fixed_workers, fixed_wall, cores)[0]
                            for name in ("local", "hub"))
    # the local run's wall plus the Hub's extra work here (the server, TCP, the main process), the HTTP
    # client as cheap as the minimal one: `most`, the rest of the workers' extra CPU (`rest`: beyond what
    # the fetches alone cost) kept too and the cores idle as long as the local run's; `least`, that rest the
    # client's and the extra work filling as much of the local run's idle time as it can (never below the
    # local run's wall). A negative rest (the client cost less in the run than alone) puts `most` below
    # `least`: both are printed, not a range
    most = wall["local"] + server + tcp + main_extra + rest
    least = wall["local"] + max(0.0, server + tcp + main_extra - local_idle)
    return ["", f"The Hub run against the local one ({cores} cores; CPU net of each run's start-up, spread over "
            f"the cores). The same row groups' byte ranges fetched once more in this process (bench/hub_fetch.py's "
            f"functions): {local_read:.2f} CPU s from the local files (open() and read(); an --input worker reads "
            f"through pyarrow), {minimal:.2f} through a minimal client of the standard library's http.client (each body "
            f"read into one buffer of its size), {hfh:.2f} through huggingface_hub's HTTP client (as a Hub worker does).", "",
            "| part | s |", "|---|---|",
            f"| the Hub run's wall - the local run's | {diff:.2f} |",
            f"| start-up (revision, file listing, huggingface_hub's import) | {start:.2f} |",
            f"| the loopback server's CPU after start-up / cores (on loopback it also does part of the receiving "
            f"side's TCP work; on the real Hub it is another machine's) | {server:.2f} |",
            f"| the workers' reading threads' extra CPU (the tool's last line: reading) / cores | {reading:.2f} |",
            f"| - of it, the minimal http.client's CPU beyond reading the bytes from local files, fetched alone / "
            f"cores | ({tcp:.2f}) |",
            f"| - of it, huggingface_hub's client's CPU beyond the minimal one's, fetched alone / cores | "
            f"({client:.2f}) |",
            f"| - of it, the rest (the fetches costing more in the run than alone) / cores | "
            f"({reading - tcp - client:.2f}) |",
            f"| the workers' other extra CPU (the threads that tokenize) / cores | "
            f"{others:.2f} |",
            f"| the main process's extra CPU / cores | {main_extra:.2f} |",
            f"| the change in idle cores (the rest) | {diff - start - server - reading - others - main_extra:.2f} |",
            "", f"With the local run's start-up and a client that cost no more than the minimal one, the Hub run would "
            f"take {least:.1f} s ({wall['local'] / least:.2f} of the local path's speed) if the rest of the workers' "
            f"extra CPU were the client's too and the server's, TCP's and the main process's extra CPU filled what it can of the "
            f"{local_idle:.1f} s the local run's cores sat idle after start-up, and {most:.1f} s "
            f"({wall['local'] / most:.2f}) with that rest kept and the cores idle as long as the local run's; the "
            f"Hub run's cores sat idle {hub_idle:.1f} s after start-up, the server's CPU not counted; it took {wall['hub']:.1f} s "
            f"({wall['local'] / wall['hub']:.2f}; by repeat {by_repeat(rows['local'], rows['hub'])})."]


def shards_digest(out):
    h = hashlib.sha256()
    for f in sorted(out.glob("*.bin")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="16 files of ~4 MB, 1 repeat")
    ap.add_argument("--files", type=int, help="parquet files (default 40)")
    ap.add_argument("--file-mb", type=float, help="MB of parquet per file (default 24)")
    ap.add_argument("--nprocs", type=int, default=2, help="tokenizer processes (default 2)")
    ap.add_argument("--repeat", type=int, help="repeats (default 3)")
    ap.add_argument("--tiktoken", action="store_true", help="also the tiktoken backend against its own ceiling")
    a = ap.parse_args()
    nfiles, file_mb = a.files or (16 if a.quick else 40), a.file_mb or (4 if a.quick else 24)
    repeat = a.repeat or (1 if a.quick else 3)
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken-cache"))
    keep_freed_memory(one_arena=True)  # as in a worker, for the fetches in this process (children set their own)

    repo = make_repo(nfiles, file_mb)
    check_card(repo)
    files = sorted((repo / "sample" / "10BT").glob("*.parquet"))
    parquet_bytes = sum(f.stat().st_size for f in files)
    bench.warm_page_cache(files)
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="parent_cost-", dir=OUT))
    logdir = work / "logs"
    logdir.mkdir()
    code_start = bench.code_state()
    env_local = bench.child_env()
    hub = start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, work)
    server = psutil.Process(hub.proc.pid)
    # this process's own fetches below (huggingface_hub's client, hf_hub_url) reach only the loopback Hub: set
    # before huggingface_hub is first imported here, which reads them then
    if "huggingface_hub" in sys.modules:
        hub.stop()
        sys.exit("parent_cost: huggingface_hub was imported before the loopback Hub's address was set")
    os.environ.update(hub_env(hub, work, timeout=60))
    rows = {k: [] for k in ("ceiling", "local", "local, page cache", "local, pipe", "hub", "fixed local", "fixed hub",
                            "ceiling tiktoken", "tiktoken", "fixed tiktoken", "fixed server", "fetch")}
    spans = spans_of(files)  # every row group's wanted byte range, as a Hub worker asks for it
    digests = set()
    try:
        for r in range(repeat):
            bench.wait_for_quiet(30)
            res = bench.row_ceiling({"parquet_paths": [str(f) for f in files]}, a.nprocs, "fast", str(logdir),
                                    f"ceiling{r}", include_read=True)
            rows["ceiling"].append((res["wall"], res["tokens"], res["cpu_s"]))
            rows["fixed local"].append(run_tool(["--input", *map(str, files), "--max-tokens", "1000"], env_local,
                                                work / "fixed", a.nprocs, logdir, f"fixed-local{r}"))
            bench.wait_for_quiet(30)
            rows["local"].append(run_tool(["--input", *map(str, files), "--prefix", "edufineweb"], env_local,
                                          work / "local", a.nprocs, logdir, f"local{r}"))
            digests.add(shards_digest(work / "local"))
            bench.wait_for_quiet(30)
            rows["local, page cache"].append(run_tool(["--input", *map(str, files), "--prefix", "edufineweb"],
                                                      {**env_local, "FINEWEB_DIRECT_IO": "0"}, work / "local",
                                                      a.nprocs, logdir, f"local-cached{r}"))
            digests.add(shards_digest(work / "local"))
            bench.wait_for_quiet(30)
            rows["local, pipe"].append(run_tool(["--input", *map(str, files), "--prefix", "edufineweb"],
                                                {**env_local, "FINEWEB_TOKEN_RING": "0"}, work / "local",
                                                a.nprocs, logdir, f"local-pipe{r}"))
            digests.add(shards_digest(work / "local"))
            hub.reset()
            env = hub_env(hub, work, timeout=60)
            s0 = sum(server.cpu_times()[:2])
            rows["fixed hub"].append(run_tool(["--remote", "10BT", "--max-tokens", "1000"], env, work / "fixed",
                                              a.nprocs, logdir, f"fixed-hub{r}"))
            rows["fixed server"].append(sum(server.cpu_times()[:2]) - s0)  # the server's part of start-up
            shutil.rmtree(env["HF_HOME"], ignore_errors=True)
            env = hub_env(hub, work, timeout=60)  # the full run starts as cold as that one (no cached card)
            bench.wait_for_quiet(30)
            s0 = sum(server.cpu_times()[:2])
            got = run_tool(["--remote", "10BT"], env, work / "hub", a.nprocs, logdir, f"hub{r}")
            rows["hub"].append((*got, sum(server.cpu_times()[:2]) - s0))  # [10]: the server's CPU
            wall = got[0]
            digests.add(shards_digest(work / "hub"))
            shutil.rmtree(env["HF_HOME"], ignore_errors=True)
            # the same bytes fetched here three ways (bench/hub_fetch.py): from the local files, with a
            # minimal http.client and through huggingface_hub's client (as a Hub worker)
            bench.wait_for_quiet(30)
            fetch_http_client(repo, spans[:1])  # imports and first contact are not the cost
            fetch_worker(repo, spans[:1])
            cpu = []
            for fetch in (fetch_local, fetch_http_client, fetch_worker):
                t = time.process_time()
                fetch(repo, spans)
                cpu.append(time.process_time() - t)
            rows["fetch"].append(tuple(cpu))
            if a.tiktoken:
                bench.wait_for_quiet(30)
                res = bench.row_ceiling({"parquet_paths": [str(f) for f in files]}, a.nprocs, "tiktoken",
                                        str(logdir), f"ceiling-tiktoken{r}", include_read=True)
                rows["ceiling tiktoken"].append((res["wall"], res["tokens"]))
                tk = ["--input", *map(str, files), "--tokenizer-backend", "tiktoken"]
                rows["fixed tiktoken"].append(run_tool([*tk, "--max-tokens", "1000"], env_local, work / "fixed",
                                                       a.nprocs, logdir, f"fixed-tiktoken{r}"))
                bench.wait_for_quiet(30)
                rows["tiktoken"].append(run_tool([*tk, "--prefix", "edufineweb"], env_local, work / "tiktoken",
                                                 a.nprocs, logdir, f"tiktoken{r}"))
                digests.add(shards_digest(work / "tiktoken"))
            print(f"repeat {r + 1}/{repeat}: local {rows['local'][-1][0]:.1f} s, hub {wall:.1f} s, "
                  f"ceiling {rows['ceiling'][-1][0]:.1f} s", flush=True)
    finally:
        hub.stop()

    fixed = {name: med(x[2] for x in rows[f"fixed {name}"]) for name in ("local", "hub")}
    fixed_workers = {name: med(x[3] for x in rows[f"fixed {name}"]) for name in ("local", "hub")}
    fixed_wall = {name: med(x[0] for x in rows[f"fixed {name}"]) for name in ("local", "hub")}
    tokens = rows["local"][0][1]
    ceiling_rate = med(t / w for w, t, _ in rows["ceiling"])
    ceiling_wall, ceiling_cpu = med(x[0] for x in rows["ceiling"]), med(x[2] for x in rows["ceiling"])
    lines = ["`" + " ".join(["python bench/parent_cost.py", *sys.argv[1:]]) + "`", "",
             bench.machine_line(), bench.code_line(code_start, bench.code_state()), "",
             f"{nfiles} parquet files, {parquet_bytes / 1e6:.0f} MB ({tokens / 1e6:.1f}M GPT-2 tokens, "
             f"{parquet_bytes / tokens:.2f} bytes of parquet per token), default backend, --nprocs {a.nprocs}, "
             f"median of {repeat}. Fixed start-up (the same run stopped after its first 1,000 tokens): local "
             f"{fixed_wall['local']:.1f} s wall, main process {fixed['local']:.2f} CPU s, workers "
             f"{fixed_workers['local']:.2f} CPU s; hub {fixed_wall['hub']:.1f} s wall, {fixed['hub']:.2f} and "
             f"{fixed_workers['hub']:.2f} CPU s (it resolves the revision and lists the config's files). The costs per token "
             "are net of it; the steady rate is tokens / (wall - start-up wall): what a long run keeps up.", "",
             "| path | wall s | Mtok/s | of the ceiling (by repeat) | steady Mtok/s | main CPU s | workers CPU s "
             "| main CPU s per 1B tok: main thread + writing + hashing threads | the bound it sets | "
             "workers CPU s per 1B tok | peak RSS: tree / main / a worker | server CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    per = {}
    for name in ("local", "local, page cache", "local, pipe", "hub"):
        rs, path = rows[name], name.split(",")[0]
        wall, main_cpu, workers = med(x[0] for x in rs), med(x[2] for x in rs), med(x[3] for x in rs)
        write, hashing = med(x[7] for x in rs), med(x[8] for x in rs)
        thread_per = max(1e-9, main_cpu - write - hashing - fixed[path]) / tokens * 1e9
        write_per, hash_per = write / tokens * 1e9, hashing / tokens * 1e9
        main_per = max(thread_per, write_per, hash_per)  # three threads, a core each: the busiest is the bound
        work_per = max(1e-9, workers - fixed_workers[path]) / tokens * 1e9
        per[name] = (main_per, work_per)
        server_cpu = f"{med(x[10] for x in rs):.1f}" if name == "hub" else "-"
        mem = " / ".join(f"{med(x[k] for x in rs) / 2**20:.0f}" for k in (4, 5, 6)) + " MiB"
        steady = tokens / max(wall - fixed_wall[path], 1e-9)
        lines.append(f"| {name} | {wall:.1f} | {tokens / wall / 1e6:.1f} | {tokens / wall / ceiling_rate:.2f} ({by_repeat(rows['ceiling'], rs)}) | "
                     f"{steady / 1e6:.1f} ({steady / ceiling_rate:.2f}) | {main_cpu:.1f} | {workers:.1f} | "
                     f"{thread_per + write_per + hash_per:.1f}: {thread_per:.1f} + {write_per:.1f} + {hash_per:.1f} | "
                     f"{1e9 / main_per / 1e6:.0f}M tok/s | "
                     f"{work_per:.0f} | {mem} | {server_cpu} |")
    lines.append(f"| ceiling (2 processes read + tokenize, no IPC, no writing) | {med(x[0] for x in rows['ceiling']):.1f} "
                 f"| {ceiling_rate / 1e6:.1f} | 1.00 | | | | | | | | |")
    if a.tiktoken:
        tk_ceiling = med(t / w for w, t in rows["ceiling tiktoken"])
        tk_wall, tk_fixed = med(x[0] for x in rows["tiktoken"]), med(x[0] for x in rows["fixed tiktoken"])
        tk_steady = tokens / max(tk_wall - tk_fixed, 1e-9)
        lines += ["", f"The tiktoken backend (`--tokenizer-backend tiktoken`, local; start-up {tk_fixed:.1f} s wall):", "",
                  "| row | wall s | Mtok/s | of the tiktoken ceiling | steady Mtok/s |", "|---|---|---|---|---|",
                  f"| local, tiktoken backend | {tk_wall:.1f} | {tokens / tk_wall / 1e6:.1f} | "
                  f"{tokens / tk_wall / tk_ceiling:.2f} | {tk_steady / 1e6:.1f} ({tk_steady / tk_ceiling:.2f}) |",
                  f"| ceiling, tiktoken (2 processes read + tokenize, no IPC, no writing) | "
                  f"{med(x[0] for x in rows['ceiling tiktoken']):.1f} | {tk_ceiling / 1e6:.1f} | 1.00 | |"]
    lines += ["", "shards: " + ("identical in every run and on both paths" if len(digests) == 1
                               else "**DIFFERENT between runs or paths**"), ""]
    # projection: one core for the main process, the rest tokenize at the measured per-worker rate
    link_rate = LINK / (parquet_bytes / tokens)
    lines += ["Projection from these rates (three cores for the main process's threads, the others tokenizing "
              "at the measured per-worker rate; a 1 GB/s link carries "
              f"{link_rate / 1e6:.0f}M tok/s of this parquet); build-nanogpt's users report "
              f"{BUILD_NANOGPT[0] / 1e6:.0f}-{BUILD_NANOGPT[1] / 1e6:.0f}M tok/s on big machines:", "",
              "| cores | path | workers' rate | main-process bound | 1 GB/s link | expected | the limit |",
              "|---|---|---|---|---|---|---|"]
    for cores in (8, 32, 96):
        for name in ("local", "hub"):
            main_per, work_per = per[name]
            workers_rate = (cores - 3) * 1e9 / work_per
            bounds = {"workers": workers_rate, "main process": 1e9 / main_per}
            if name == "hub":
                bounds["link"] = link_rate
            limit = min(bounds, key=bounds.get)
            lines.append(f"| {cores} | {name} | {workers_rate / 1e6:.0f}M | {1e9 / main_per / 1e6:.0f}M | "
                         f"{f'{link_rate / 1e6:.0f}M' if name == 'hub' else '-'} | {bounds[limit] / 1e6:.0f}M tok/s | "
                         f"{limit} |")
    # where the wall time beyond the ceiling's goes: each run's CPU spread over the cores, and what is left
    lines += ["", f"Where the difference from the ceiling goes ({a.nprocs} cores; CPU of every process of the tool, net of "
              "its start-up; the ceiling's CPU is its timed part): the tool's wall - the ceiling's = start-up + "
              "extra CPU / cores + the tool's waits (cores idle after start-up) - the ceiling's own waits "
              f"(ceiling: {ceiling_cpu:.1f} CPU s in {ceiling_wall:.1f} s).", "",
              "| path | wall - ceiling s | start-up s | extra CPU s / cores | waits s | the ceiling's waits s |",
              "|---|---|---|---|---|---|"]
    for name in ("local", "hub"):
        wall = med(x[0] for x in rows[name])
        waits, cpu = idle_after_start(rows, name, fixed, fixed_workers, fixed_wall, a.nprocs)
        extra = (cpu - ceiling_cpu) / a.nprocs
        lines.append(f"| {name} | {wall - ceiling_wall:.2f} | {fixed_wall[name]:.2f} | {extra:.2f} | {waits:.2f} | "
                     f"{ceiling_wall - ceiling_cpu / a.nprocs:.2f} |")
    lines += hub_against_local(rows, fixed, fixed_workers, fixed_wall, a.nprocs)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (OUT / "parent_cost.md").write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    if len(digests) != 1:
        sys.exit("parent_cost: FAIL: the shards differ")


if __name__ == "__main__":
    main()
