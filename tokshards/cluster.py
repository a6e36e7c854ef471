"""More than one machine: per-file tasks on Ray, or one rank of a Slurm array, then assembly.

    --engine ray                every source file is a Ray task (parts.tokenize_file), retried if
                                its worker or node dies; then the shards are assembled as Ray tasks.
    --rank R --world-size N     this process tokenizes files R, R+N, R+2N, ... (no engine at all);
                                `fineweb.py assemble DIR` cuts the shards once every rank is done.

Either way the output is byte-identical to a single-machine run of the same command. The output
directory must be shared by every machine (NFS, Lustre, a mounted bucket...). Ray is imported only
here, and only for --engine ray.
"""
import json
import logging
import os
import shutil
import socket
import time

from .assemble import assemble
from .errors import UserError
from .manifest import Manifest, atomic_write
from .parts import PARTS, load_done, run_settings, tokenize_file
from .tokenizer import Tokenizer

# Environment a Ray worker needs to see what this process sees (Hub endpoint and token, caches).
FORWARD_ENV = ("HF_", "HUGGING_FACE", "TIKTOKEN_", "FINEWEB_", "FASTOKENS_", "NO_PROXY", "no_proxy")


def prepare(job, world_size=None):
    """Check the output directory and record the run's plan in parts/job.json (every rank does;
    they write the same thing). Refuses to mix two different runs in one directory."""
    if job.max_tokens is not None:
        raise UserError("--max-tokens is for single-machine runs; drop it, or run without --engine/--rank")
    tok = Tokenizer(job.tokenizer, job.eot_token, job.backend, job.check_every, encode=False)
    m = Manifest.load(job.out_dir) if os.path.isdir(job.out_dir) else None
    parts_dir = os.path.join(job.out_dir, PARTS)
    if m is not None and not job.overwrite:
        if m.data["complete"]:  # (a parts/ left by a run stopped while removing it goes too)
            shutil.rmtree(parts_dir, ignore_errors=True)
            return None  # nothing to do
        if not os.path.isdir(parts_dir):
            raise UserError(f"{job.out_dir} holds an unfinished single-machine run; finish it without "
                            "--engine/--rank, or add --overwrite to start over")
    if job.overwrite:
        if world_size:
            raise UserError("--overwrite with --rank would delete the other ranks' work; "
                            f"delete {job.out_dir} yourself, then start every rank")
        shutil.rmtree(parts_dir, ignore_errors=True)
        from .pipeline import _remove_old_output

        if os.path.isdir(job.out_dir):
            _remove_old_output(job.out_dir, job.prefix)
    plan = {"settings": run_settings(job, tok), "source": job.source.describe(), "files": len(job.source.files),
            "world_size": world_size}
    path = os.path.join(parts_dir, "job.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        was = (old.get("source") or {}) if isinstance(old.get("source"), dict) else {}
        if isinstance(plan["source"], dict) and was.get("revision") != plan["source"].get("revision"):
            raise UserError(f"{job.out_dir}/{PARTS} was started at revision {was.get('revision')}, not "
                            f"{plan['source'].get('revision')}; add --revision {was.get('revision')}")
        for key in ("settings", "source", "files"):
            if old.get(key) != plan[key]:
                raise UserError(f"{job.out_dir}/{PARTS} holds parts of another run ({key} differs); "
                                "rerun with the same settings, or --overwrite to start over")
    os.makedirs(parts_dir, exist_ok=True)
    # every rank of an array may get here at the same moment: each writes under its own temporary name
    atomic_write(path, (json.dumps(plan, indent=1) + "\n").encode(), tag=f".{socket.gethostname()}.{os.getpid()}")
    return plan


def run_rank(job, rank, world_size, nprocs, log=print):
    """Tokenize this rank's files (files[rank::world_size]) into parts, skipping finished ones."""
    if not 0 <= rank < world_size:
        raise UserError(f"--rank {rank} is not in 0..{world_size - 1} (--world-size {world_size})")
    if prepare(job, world_size) is None:
        log(f"{job.out_dir} is already complete; nothing to do")
        return
    mine = list(range(rank, len(job.source.files), world_size))
    tokens = skipped = 0
    for n, i in enumerate(mine, 1):
        meta = tokenize_file(job, i, nprocs)
        tokens += meta["tokens"]
        skipped += meta["skipped"]
        log(f"rank {rank}: file {n}/{len(mine)} {_short(meta['file'])}: {meta['tokens']:,} tokens"
            + (" (already done)" if meta["skipped"] else ""))
    log(f"rank {rank} of {world_size}: {len(mine)} files ({skipped} already done), {tokens:,} tokens; "
        f"once every rank is done: python fineweb.py assemble {job.out_dir}")


def assemble_dir(out_dir, nprocs, log=print):
    return assemble(out_dir, log=log, workers=nprocs)


def run_ray(job, address=None, nprocs=None, log=print, progress=None):
    """Every file a Ray task, then every shard a Ray task; returns the Manifest."""
    t0 = time.time()
    if address is None:  # a cluster of this machine, before Ray reads its settings at import
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # node address 127.0.0.1, no probe of 8.8.8.8
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local only: no token file in ~/.ray
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install -r requirements-ray.txt") from None
    _absolute_paths(job)  # Ray workers do not run in this directory
    if prepare(job) is None:
        log(f"{job.out_dir} is already complete; nothing to do")
        return Manifest.load(job.out_dir)
    started = not ray.is_initialized()
    if started:
        _init_ray(ray, address, nprocs, log)
    try:
        job_ref = ray.put(job)
        tokenize = ray.remote(num_cpus=1, max_retries=3)(_tokenize_one_cpu)
        n = len(job.source.files)
        todo = sum(load_done(job.out_dir, i, check_sha=False) is None for i in range(n))
        log(f"ray: {todo} of {n} files to tokenize on {int(ray.cluster_resources().get('CPU', 0))} CPUs")
        if progress:
            from .pipeline import estimate_tokens

            progress.start(0, estimate_tokens(job))
        # every file goes out: a task checks a finished part's sha256 and returns at once
        for meta in _ray_map(ray, tokenize, [(job_ref, i) for i in range(n)]):
            if progress:
                progress.update(meta["tokens"])
            log(f"file {meta['index']} {_short(meta['file'])}: {meta['tokens']:,} tokens"
                + (" (already done)" if meta["skipped"] else ""))
        if progress:
            progress.close(ok=True)
        write = ray.remote(num_cpus=1, max_retries=3)(_write_shard)
        return assemble(job.out_dir, log=log, t0=t0,
                        map_fn=lambda fn, specs: _ray_map(ray, write, [(s,) for s in specs]))
    finally:
        if started:
            ray.shutdown()


def _absolute_paths(job):
    job.out_dir = os.path.abspath(job.out_dir)
    job.source.files = [f if str(f).startswith("hf://") else os.path.abspath(f) for f in job.source.files]
    if os.path.exists(job.tokenizer):  # a tokenizer.json
        job.tokenizer = os.path.abspath(job.tokenizer)


def _tokenize_one_cpu(job, i):
    """A Ray task holds one CPU: the fast tokenizer must not start a thread per core of the node."""
    os.environ["FASTOKENS_BPE_THREADS"] = os.environ["RAYON_NUM_THREADS"] = "1"
    return tokenize_file(job, i)


def _write_shard(spec):
    from .assemble import write_shard

    return write_shard(spec)


def _init_ray(ray, address, nprocs, log):
    here = os.path.dirname(os.path.abspath(__file__))
    if address is None:  # a cluster of this machine: workers inherit this environment
        paths = [os.path.dirname(here)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
        kw = {"address": "local", "num_cpus": nprocs}
    else:  # other machines: ship the package and the settings that matter (Hub endpoint/token, caches)
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARD_ENV)}
        kw = {"address": address, "runtime_env": {"py_modules": [here], "env_vars": env}}
    try:
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING, **kw)
    except ConnectionError as e:
        raise UserError(f"--ray-address {address}: cannot connect to a Ray cluster ({e})") from None


def _ray_map(ray, remote_fn, arg_tuples):
    """Submit every task, yield results as they finish; a task's UserError is raised as one line."""
    pending = [remote_fn.remote(*args) for args in arg_tuples]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            yield ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            raise


def _short(f):
    return os.path.basename(str(f))
