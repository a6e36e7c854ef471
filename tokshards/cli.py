"""The command line: flags (and TOML presets) -> a checked Job; subcommands for what comes after.

Every setting is checked here, before anything is read or written: a mistake costs one line and
exit code 1 at start, not a traceback hours in. Ctrl-C and SIGTERM end any command with one line
(exit 130 / 143) after its clean-up. The modules that read and tokenize (pyarrow, datasets, tiktoken:
seconds of imports) are imported only by the command that needs them, so `--help` and the one-line
errors about flags stay fast.
"""
import argparse
import codecs
import errno
import os
import re
import resource
import signal
import sys
import threading
import time
import tomllib

from .bucket import recorded
from .encoders import BACKENDS
from .errors import Interrupted, UserError
from .formats import FORMATS
from .job import usable_cpus
from .manifest import PREFIX_CHARS, valid_prefix
from .outdir import check_path, os_error_line
from .retry import retry_budget
from .storage import is_url, open_fs

DEFAULTS = {
    "dataset": "HuggingFaceFW/fineweb-edu", "remote": "sample-10BT", "input": None, "text_column": "text",
    "doc_separator": "\\n\\n", "local_dir": None, "prefix": None, "shard_size": "100M", "format": "bin",
    "tokenizer": "gpt2", "tokenizer_revision": None, "doc_boundary": None, "eot_token": None, "tokenizer_backend": "auto", "check_every": 1000, "nprocs": None, "max_tokens": None, "revision": None,
    "readers": None, "engine": "local", "ray_address": None, "rank": None, "world_size": None, "retries": 20, "retry_time": 1800, "quiet": False, "overwrite": False, "disk_check": True,
}

EXAMPLES = """examples:
  python fineweb.py                                   # FineWeb-Edu sample-10BT -> edu_fineweb10B/ (build-nanogpt)
  python fineweb.py --remote 100BT --format llmc      # sample-100BT -> edu_fineweb100B/, llm.c .bin files
  python fineweb.py --dataset HuggingFaceFW/fineweb --remote 10BT   # plain FineWeb -> fineweb10B/
  python fineweb.py --input train_fineweb.txt --shard-size 10M      # a local text file of any size
  python fineweb.py --config config/sample-10BT.toml --max-tokens 500M
  python fineweb.py verify edu_fineweb10B             # re-check every shard against manifest.json
  python fineweb.py inspect edu_fineweb10B            # the manifest in brief + the first documents as text
  python fineweb.py merge edu_fineweb10B --out data/fineweb_edu   # nanoGPT's train.bin + val.bin
  python fineweb.py merge edu_fineweb10B --format llmc            # convert every shard to another format
  python fineweb.py --remote 100BT --engine ray --ray-address auto  # one Ray task per Hub file
  python fineweb.py --remote 100BT --rank $SLURM_ARRAY_TASK_ID --world-size 64   # then:
  python fineweb.py assemble edu_fineweb100B          # cut the shards once every rank is done
Rerun the same command after a crash or Ctrl-C: it resumes after the last complete shard."""


# The type each setting has in a TOML preset (what its flag parses to); `overwrite` is not one:
# a preset that says it would turn every "rerun to resume" into "delete everything".
PRESET_TYPES = {
    "dataset": str, "remote": str, "input": (str, list), "text_column": str, "doc_separator": str,
    "local_dir": str, "prefix": str, "shard_size": (int, str), "format": str, "tokenizer": str, "tokenizer_revision": str,
    "doc_boundary": str, "eot_token": str, "tokenizer_backend": str, "check_every": int, "nprocs": int, "max_tokens": (int, str), "revision": str,
    "readers": int, "engine": str, "ray_address": str, "rank": int, "world_size": int, "retries": int,
    "retry_time": (int, float), "quiet": bool, "disk_check": bool,
}
ENGINES = ("local", "ray")
DOC_BOUNDARIES = ("eot-before", "bos-before", "eos-after", "bos-eos")  # tokspec.POLICIES (cheap to import here)
CHOICES = {"format": FORMATS, "tokenizer_backend": BACKENDS, "engine": ENGINES, "doc_boundary": DOC_BOUNDARIES}
STOP_WATCHDOG_SECONDS = 10  # after Ctrl-C/SIGTERM, the clean-up may take this long, never more


def parse_size(text):
    """'100M', '1e8', '100000000', '1.5B', '500K' -> int."""
    s = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE]\d+)?)\s*([kKmMbBgGtT]?)", s)
    if not m:
        raise UserError(f"not a size: {text!r} (use e.g. 100M, 1e8, 100000000, 1.5B)")
    mult = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}[m.group(2).lower()]
    value = float(m.group(1)) * mult
    if value < 1 or not value < 2**63 or value != int(value):
        raise UserError(f"not a whole positive number of tokens below 2**63: {text!r}")
    return int(value)


def build_parser():
    S = argparse.SUPPRESS  # only flags actually given end up in the namespace; see merge()
    p = argparse.ArgumentParser(
        prog="fineweb.py",
        description="Stream FineWeb-Edu (any Hugging Face text dataset, or local files) into "
        "nanoGPT / build-nanogpt / llm.c token shards, in constant memory, resumable.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source (default: --remote sample-10BT of HuggingFaceFW/fineweb-edu)")
    src.add_argument("--remote", default=S, metavar="NAME",
                     help="config to stream: 10BT, 100BT, 350BT (or sample-10BT, ...), default, CC-MAIN-YYYY-WW")
    src.add_argument("--dataset", default=S, metavar="REPO",
                     help="Hub dataset id, or a local directory laid out like one (default HuggingFaceFW/fineweb-edu)")
    src.add_argument("--input", nargs="+", default=S, metavar="PATH",
                     help="local files, directories or globs, or s3://BUCKET/PREFIX or az://CONTAINER/PREFIX (an object, or "
                     "every object under the prefix), instead of the Hub: .parquet, .jsonl/.json (.gz/.zst), text")
    src.add_argument("--text-column", default=S, metavar="NAME", help="column/field holding the text (default text)")
    src.add_argument("--doc-separator", default=S, metavar="STR",
                     help="plain text: string between documents, backslash escapes allowed (default \\n\\n); "
                     "\\r\\n and \\r line endings are read as \\n, as Python's open() does")
    src.add_argument("--revision", default=S, help="Hub branch, tag or commit to read (default: main, pinned to its sha)")
    out = p.add_argument_group("output")
    out.add_argument("--local-dir", default=S, metavar="DIR",
                     help="output directory (default edu_fineweb10B etc. for the Hub, <input>_shards for --input), or "
                     "s3://BUCKET/NAME or az://CONTAINER/NAME")
    out.add_argument("--prefix", default=S, help="file name prefix (default edufineweb / fineweb / the input's name)")
    out.add_argument("--shard-size", default=S, metavar="N", help="tokens per shard: 100M, 1e8 or 100000000 (default 100M)")
    out.add_argument("--format", default=S, choices=FORMATS,
                     help="bin: raw uint16 (nanoGPT memmap); npy: build-nanogpt np.save; llmc: llm.c .bin with header; "
                     "megatron: Megatron-LM/NeMo .bin + .idx pairs, each shard whole documents")
    out.add_argument("--max-tokens", default=S, metavar="N", help="stop after this many tokens, e.g. 500M")
    out.add_argument("--overwrite", action="store_true", default=S, help="delete this tool's run in --local-dir (only the files its manifest accounts for; never "
                     "anyone else's) and start over")
    out.add_argument("--no-disk-check", dest="disk_check", action="store_false", default=S,
                     help="do not refuse to start when the disk looks too small for the run")
    tk = p.add_argument_group("tokenizer")
    tk.add_argument("--tokenizer", default=S,
                    help="tiktoken encoding (gpt2, r50k_base, cl100k_base, o200k_base), a tokenizer.json path, or a Hub "
                    "model repo OWNER/NAME with a tokenizer.json (HF_TOKEN for gated ones) (default gpt2)")
    tk.add_argument("--tokenizer-revision", default=S, metavar="REV",
                    help="Hub tokenizer: branch, tag or commit (default main; the commit sha is recorded)")
    tk.add_argument("--doc-boundary", default=S, choices=DOC_BOUNDARIES,
                    help="ids around every document: eot-before [EOT]+text (GPT-2, nanoGPT, llm.c), bos-before "
                    "[BOS]+text, eos-after text+[EOS] (Megatron --append-eod), bos-eos [BOS]+text+[EOS]; default: "
                    "eot-before for tiktoken, else by the tokenizer_config.json's BOS/EOS (see README)")
    tk.add_argument("--eot-token", default=S, metavar="STR",
                    help="the end-of-text token: the one put before (eot-before) or after (eos-after, bos-eos) every "
                    "document (default: <|endoftext|>, or the tokenizer_config.json's eos_token)")
    tk.add_argument("--tokenizer-backend", default=S, choices=BACKENDS,
                    help="gpt2/r50k_base: auto uses fastokens when installed and self-checked (same ids, ~5-10x "
                    "faster), else tiktoken; fast requires it; tiktoken never uses it (default auto)")
    tk.add_argument("--check-every", type=int, default=S, metavar="N",
                    help="fast backend: re-encode 1 document in N with tiktoken (documents 0, N, 2N, ... of each process), "
                    "stop on any difference (default 1000; 0 = off)")
    tk.add_argument("--nprocs", type=int, default=S, metavar="N",
                    help="tokenizer processes (default: the cores this process may use; 0 = in-process)")
    run = p.add_argument_group("running")
    run.add_argument("--config", default=S, metavar="FILE", help="TOML preset (see config/); flags given here win")
    run.add_argument("--readers", type=int, default=S, metavar="N",
                     help="Hub: parquet row groups downloaded at once, spread over the tokenizer processes "
                     "(default: each downloads its next two while it tokenizes one); other formats: data files "
                     "streamed at once (default: 1 per 4 cores, 1 to 8). Documents stay in dataset order")
    run.add_argument("--retries", type=int, default=S, metavar="N",
                     help="network: consecutive failed attempts before giving up (default 20)")
    run.add_argument("--retry-time", type=float, default=S, metavar="SECONDS",
                     help="network: give up after failing this long without progress (default 1800)")
    many = p.add_argument_group("more than one machine (the output directory must be shared by all)")
    many.add_argument("--engine", default=S, choices=ENGINES,
                      help="local: this machine (default); ray: one Ray task per source file, then the shards "
                      "are assembled; same bytes either way")
    many.add_argument("--ray-address", default=S, metavar="ADDR",
                      help="Ray cluster to use: auto, ray://host:10001, ... (default: start a local one)")
    many.add_argument("--rank", type=int, default=S, metavar="R",
                      help="tokenize only files R, R+N, R+2N, ... (a Slurm array task); then run `assemble DIR`")
    many.add_argument("--world-size", type=int, default=S, metavar="N", help="how many ranks share the files")
    run.add_argument("--quiet", action="store_true", default=S, help="print only errors")
    return p


def read_preset(path):
    """A TOML preset's settings, each checked against its flag's type and choices."""
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: cannot read it ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--config {path}: invalid TOML ({e})") from None
    opts = {}
    for k, v in cfg.items():
        key = k.replace("-", "_")
        if key == "overwrite":
            raise UserError(f"--config {path}: 'overwrite' cannot be set in a preset (a rerun would delete the "
                            "run instead of resuming it); give --overwrite on the command line when you mean it")
        if key not in PRESET_TYPES:
            raise UserError(f"--config {path}: unknown setting {k!r} (known: {', '.join(sorted(PRESET_TYPES))})")
        want = PRESET_TYPES[key]
        wants = want if isinstance(want, tuple) else (want,)
        ok = isinstance(v, wants) and not (isinstance(v, bool) and bool not in wants)
        if ok and key == "input" and isinstance(v, list):
            ok = all(isinstance(x, str) for x in v)
        if not ok:
            names = " or ".join({str: "a string", int: "a whole number", float: "a number", bool: "true or false",
                                 list: "a list of strings"}[t] for t in wants)
            raise UserError(f"--config {path}: {k} = {v!r} should be {names}")
        if key in CHOICES and v not in CHOICES[key]:
            raise UserError(f"--config {path}: {k} = {v!r} is not one of {', '.join(CHOICES[key])}")
        opts[key] = v
    return opts


def merge(ns):
    """Defaults < --config file < command-line flags."""
    opts = dict(DEFAULTS)
    cfg_path = getattr(ns, "config", None)
    if cfg_path:
        opts.update(read_preset(cfg_path))
    opts.update({k: v for k, v in vars(ns).items() if k != "config"})
    if isinstance(opts["input"], str):
        opts["input"] = [opts["input"]]
    return opts


def check_opts(opts):
    """Every setting that can be judged without reading anything: one line for the first wrong one."""
    for key, low in (("nprocs", 0), ("check_every", 0), ("retries", 0), ("readers", 1), ("world_size", 1)):
        if opts[key] is not None and opts[key] < low:
            raise UserError(f"--{key.replace('_', '-')} {opts[key]}: must be {low} or more")
    if not opts["retry_time"] > 0:  # (also NaN)
        raise UserError(f"--retry-time {opts['retry_time']}: must be more than 0 seconds")
    if opts["nprocs"] is not None and opts["nprocs"] > 8 * usable_cpus():
        raise UserError(f"--nprocs {opts['nprocs']}: this machine has {usable_cpus()} usable cores; more than 8 "
                        "processes per core only slows the run down (the default is one per core)")
    if opts["prefix"] is not None and not valid_prefix(opts["prefix"]):
        raise UserError(f"--prefix {opts['prefix']!r}: a file name prefix of {PREFIX_CHARS}, "
                        "not starting with '.'")
    if opts["local_dir"] is not None:
        check_path(opts["local_dir"])
    for p in opts["input"] or ():
        if is_url(p):
            open_fs(p, whole_bucket=True)  # its package is installed (the objects are listed in make_job)
    try:
        sep = codecs.decode(opts["doc_separator"], "unicode_escape")
    except UnicodeDecodeError as e:
        raise UserError(f"--doc-separator {opts['doc_separator']!r}: not a valid escape sequence ({e.reason}); "
                        "write a newline as \\n, a tab as \\t") from None
    if not sep:
        raise UserError("--doc-separator must not be empty")
    try:
        sep.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"--doc-separator {opts['doc_separator']!r}: not valid text (a lone surrogate); "
                        "give characters UTF-8 can write") from None
    shard_size = parse_size(opts["shard_size"])
    if opts["format"] == "llmc" and shard_size >= 2**31:
        raise UserError(f"--shard-size {opts['shard_size']}: llm.c shards hold fewer than 2**31 tokens "
                        "(its header counts them in an int32); use a smaller --shard-size")
    max_tokens = parse_size(opts["max_tokens"]) if opts["max_tokens"] is not None else None
    return sep, shard_size, max_tokens


def pinned_revision(out_dir, opts):
    """A resumed Hub run reads the commit the run began with, even if `main` has moved since: one
    output never mixes two versions of a dataset. Later ranks read the commit the first one pinned."""
    if opts["overwrite"]:
        return None
    src = recorded(out_dir, "source")
    if isinstance(src, dict) and src.get("dataset") == opts["dataset"] and isinstance(src.get("revision"), str):
        return src["revision"]
    return None


def pinned_tokenizer_revision(out_dir, opts):
    """A resumed run with a Hub tokenizer reads it at the commit the run began with (from the local
    cache, so a resume needs no network for it); the content hash is compared all the same."""
    if opts["overwrite"]:
        return None
    st = recorded(out_dir, "settings")
    st = st if isinstance(st, dict) else None
    if st and st.get("tokenizer") == opts["tokenizer"] and isinstance(st.get("tokenizer_revision"), str):
        return st["tokenizer_revision"]
    return None


def make_job(opts, log):
    # imported here, not at the top: reading the data needs numpy, pyarrow, datasets (slow to import)
    from .hub import HubSource, naming
    from .job import Job
    from .sources import LocalSource, expand_inputs
    from .tokspec import load

    sep, shard_size, max_tokens = check_opts(opts)
    config_name = None
    if opts["input"]:
        given = str(opts["input"][0])  # a path, or a URL: its last component names the output either way
        first = given.rstrip("/").rsplit("/", 1)[-1] if is_url(given) else os.path.basename(os.path.normpath(given))
        stem = re.sub(r"(\.(parquet|jsonl|json|txt|text|md|gz|zst))+$", "", first, flags=re.I)
        stem = re.sub(r"[^0-9A-Za-z]+", "_", stem).strip("_") or "input"
        prefix, local_dir = stem, f"{stem}_shards"
    else:
        config_name, prefix, local_dir = naming(opts["dataset"], opts["remote"])
    out_dir = opts["local_dir"] or local_dir
    spec, prebuilt = load(opts["tokenizer"], opts["eot_token"], opts["doc_boundary"],
                          opts["tokenizer_revision"] or pinned_tokenizer_revision(out_dir, opts))
    if opts["input"]:
        files = expand_inputs(opts["input"], exclude=out_dir)
        source = LocalSource(files, opts["text_column"], sep, spec.cut_rule, log)
    else:
        check_path(out_dir)
        if opts["quiet"]:  # the client libraries' own retry lines too
            from huggingface_hub.utils import logging as hub_logging

            hub_logging.set_verbosity_error()
            os.environ["DATASETS_VERBOSITY"] = "error"  # read as datasets is imported, if it is (hub.py)
        revision = opts["revision"] or pinned_revision(out_dir, opts)
        source = HubSource(opts["dataset"], config_name, revision, opts["text_column"],
                           opts["retries"], opts["retry_time"], log, opts["readers"])
    return Job(
        source=source, out_dir=out_dir, prefix=opts["prefix"] or prefix, spec=spec, prebuilt=prebuilt,
        fmt=opts["format"], backend=opts["tokenizer_backend"], check_every=opts["check_every"],
        shard_size=shard_size, max_tokens=max_tokens, nprocs=opts["nprocs"], text_column=opts["text_column"],
        doc_separator=sep, overwrite=opts["overwrite"], disk_check=opts["disk_check"], config_name=config_name,
    )


class TqdmProgress:
    """A live bar on a terminal."""

    def __init__(self, desc):
        self.desc, self.bar = desc, None

    def start(self, initial, total):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc=self.desc,
                        mininterval=0.5, smoothing=0.05, dynamic_ncols=True)

    def update(self, n):
        self.bar.update(n)

    def close(self, ok=True):
        if self.bar is not None:
            self.bar.leave = ok  # on an error, clear the bar so the error stays one line
            self.bar.close()


class LineProgress:
    """Plain lines every `every` seconds when stderr is a log file (nohup, CI, Slurm)."""

    def __init__(self, log, every=30.0):
        self.log, self.every = log, every

    def start(self, initial, total):
        self.n, self.total, self.t0, self.n0 = initial, total, time.time(), initial
        self.last = self.t0

    def update(self, n):
        self.n += n
        now = time.time()
        if now - self.last >= self.every:
            self.last = now
            rate = (self.n - self.n0) / max(now - self.t0, 1e-9)
            known = self.total and self.n < self.total  # the total is an estimate: past it, say nothing of it
            pct = f" ({100 * self.n / self.total:.1f}% of ~{self.total:,})" if known else ""
            eta = f", ~{(self.total - self.n) / rate / 3600:.1f} h left" if known and rate else ""
            self.log(f"progress: {self.n:,} tokens{pct}, {rate / 1e6:.2f}M tok/s{eta}")

    def close(self, ok=True):
        pass


def check_engine(opts, max_tokens):
    if opts["rank"] is not None or opts["world_size"] is not None:
        if opts["rank"] is None or opts["world_size"] is None:
            raise UserError("--rank R and --world-size N go together (0 <= R < N)")
        if not 0 <= opts["rank"] < opts["world_size"]:
            raise UserError(f"--rank {opts['rank']} is not in 0..{opts['world_size'] - 1} "
                            f"(--world-size {opts['world_size']})")
        if opts["engine"] != "local":
            raise UserError("--rank/--world-size split the files without an engine; drop --engine ray")
        if opts["overwrite"]:
            raise UserError("--overwrite with --rank would delete the other ranks' work; "
                            "delete the output directory yourself, then start every rank")
    if max_tokens is not None and (opts["rank"] is not None or opts["engine"] != "local"):
        raise UserError("--max-tokens is for single-machine runs; drop it, or run without --engine/--rank")


def cmd_run(argv):
    ns = build_parser().parse_args(argv)
    opts = merge(ns)
    check_engine(opts, check_opts(opts)[2])
    with retry_budget(opts["retries"], opts["retry_time"], opts["quiet"]):  # for every process of the run
        return run_opts(opts)


def run_opts(opts):
    quiet = opts["quiet"]
    from tqdm import tqdm

    log = (lambda msg: None) if quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))
    t0 = time.time()
    pool = early_workers(opts)
    try:
        return run_job(opts, log, t0, pool)
    finally:
        if pool is not None:
            pool.kill()  # unused (an error, a finished output) or already ended by the run: no waiting


def early_workers(opts):
    """The tokenizer processes of a one-machine run, started before the job is planned: their start-up
    (Python, numpy, pyarrow, the fast tokenizer: ~0.7 s each) overlaps the parent's (the tokenizer, the
    input's files, the Hub's listing, the output directory). None when the run has no pool of its own."""
    nprocs = usable_cpus() if opts["nprocs"] is None else opts["nprocs"]
    if opts["engine"] != "local" or opts["rank"] is not None or nprocs == 0:
        return None
    from .pool import WorkerPool

    # what a worker's first task imports (ParquetTask / HubRowGroup, and its HTTP client unless the
    # "Hub" is a local mirror, --dataset DIR)
    warm = (("tokshards.sources",) if opts["input"] else ("tokshards.hub",) if os.path.isdir(opts["dataset"])
            else ("tokshards.hub", "tokshards.hubrange"))
    return WorkerPool.early(nprocs, opts["tokenizer"], opts["tokenizer_backend"], warm)


def run_job(opts, log, t0, pool):
    quiet = opts["quiet"]
    job = make_job(opts, log)
    progress = None if quiet else TqdmProgress(job.out_dir) if sys.stderr.isatty() else LineProgress(log)
    if opts["rank"] is not None:
        from .cluster import run_rank

        run_rank(job, opts["rank"], opts["world_size"], usable_cpus() if job.nprocs is None else job.nprocs, log=log)
        return 0
    thread_cpu = read_cpu = None
    if opts["engine"] == "ray":
        from .cluster import run_ray

        m = run_ray(job, opts["ray_address"], job.nprocs, log=log, progress=progress)
    else:
        from .pipeline import run

        result = run(job, log=log, progress=progress, pool=pool)
        m, thread_cpu, read_cpu = result.manifest, result.thread_cpu, result.read_cpu
    tokens, docs, secs = m.tokens(), sum(s.docs for s in m.shards), time.time() - t0
    if not quiet:
        print(f"done: {tokens:,} tokens, {docs:,} documents, {len(m.shards)} shards in {job.out_dir}/ "
              f"({secs:.1f}s, {tokens / max(secs, 1e-9) / 1e6:.2f}M tok/s; CPU: {cpu_seconds(thread_cpu, read_cpu)}); "
              f"check with: python fineweb.py verify {job.out_dir}")
    return 0


def cpu_seconds(thread_cpu=None, read_cpu=None):
    """CPU time of this process (and of its shard writing and hashing threads) and of the tokenizer
    processes it ran (user + system; and of it, their threads reading their tasks: a parquet row group,
    local or over the network, decompressed and decoded, or a byte range of a text file; 0 where this
    process reads, as for JSON lines), for the last line: where the time went, on whatever machine this is.
    The reading counts the batches taken from the workers: those in flight when --max-tokens stops a run
    are left out."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    threads = ""
    if thread_cpu:
        threads = f" (of it, writing {thread_cpu['write']:.1f} s and hashing {thread_cpu['hash']:.1f} s, in threads)"
    reading = f" (of it, reading {read_cpu:.1f} s, in threads)" if read_cpu is not None else ""
    return f"main process {me.ru_utime + me.ru_stime:.1f} s{threads}, workers {kids.ru_utime + kids.ru_stime:.1f} s{reading}"


def cmd_assemble(argv):
    p = argparse.ArgumentParser(prog="fineweb.py assemble",
                                description="Cut the shards from the parts every --rank wrote, write manifest.json.")
    p.add_argument("dir")
    p.add_argument("--nprocs", type=int, default=None, metavar="N", help="shards written at once (default: cores)")
    args = p.parse_args(argv)
    check_path(args.dir, "assemble")
    if not is_url(args.dir) and not os.path.isdir(args.dir):
        raise UserError(f"{args.dir}: no such directory; give the --local-dir of the ranks")
    from .assemble import assemble

    t0 = time.time()
    m = assemble(args.dir, log=lambda msg: print(msg, file=sys.stderr), workers=args.nprocs or usable_cpus())
    print(f"done: {m.tokens():,} tokens, {sum(s.docs for s in m.shards):,} documents, {len(m.shards)} shards in "
          f"{args.dir}/ ({time.time() - t0:.1f}s); check with: python fineweb.py verify {args.dir}")
    return 0


def cmd_verify(argv):
    p = argparse.ArgumentParser(prog="fineweb.py verify",
                                description="Re-read every shard and check it against manifest.json.")
    p.add_argument("dir")
    args = p.parse_args(argv)
    from .verify import verify

    problems, summary = verify(args.dir)
    print("\n".join(summary))
    if problems:
        print(f"{len(problems)} problem(s):")
        print("\n".join("  " + x for x in problems))
        return 1
    print("OK: every shard matches the manifest")
    return 0


def cmd_merge(argv):
    from .merge import cmd_merge

    return cmd_merge(argv)


def cmd_inspect(argv):
    from .inspect_cmd import cmd_inspect

    return cmd_inspect(argv)


COMMANDS = {"assemble": cmd_assemble, "verify": cmd_verify, "merge": cmd_merge, "inspect": cmd_inspect}


def _stop(signum, frame):
    """The first Ctrl-C or SIGTERM: stop where we are and clean up; a second one is ignored (it must
    not interrupt the clean-up with a traceback), and the clean-up gets a few seconds at most."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    watchdog = threading.Timer(STOP_WATCHDOG_SECONDS, _cut_short, (signum,))
    watchdog.daemon = True
    watchdog.start()
    _watchdogs.append(watchdog)
    raise Interrupted(signum)


_watchdogs = []


def _cut_short(signum):
    """The clean-up after a stop signal did not end in time (the signal can land inside a lock the
    clean-up then waits for): end anyway, with the same one line. What is on disk is resumable as
    after a SIGKILL: complete shards are in the manifest, a temporary file is removed by the rerun."""
    what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"fineweb.py: {what}; the clean-up was cut short after {STOP_WATCHDOG_SECONDS} s; "
                f"rerun the same command to resume\n".encode())
    os._exit(128 + signum)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cmd = COMMANDS.get(argv[0]) if argv else None
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return cmd(argv[1:]) if cmd else cmd_run(argv)
    except UserError as e:
        print(f"fineweb.py: error: {e}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as e:
        if getattr(e, "signum", signal.SIGINT) == signal.SIGTERM:
            print("fineweb.py: terminated (SIGTERM); rerun the same command to resume", file=sys.stderr)
            return 143
        print("fineweb.py: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"fineweb.py: error: disk full ({e}); free space and rerun the same command to resume",
                  file=sys.stderr)
            return 1
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and e.filename:
            print(f"fineweb.py: error: {os_error_line(e, e.filename)}", file=sys.stderr)
            return 1
        # a file that went away or changed under the run, an I/O error: the system's words, one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"fineweb.py: error: {where}{e.strerror or e}; fix that and rerun the same command to resume",
              file=sys.stderr)
        return 1
    finally:
        if not _watchdogs:  # after a stop signal they stay ignored while the process exits
            for sig, h in handlers.items():
                signal.signal(sig, h)
