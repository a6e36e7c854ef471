"""More than one machine: per-file tasks on Ray, or one rank of a Slurm array, then assembly.

    --engine ray                every source file is a Ray task (parts.tokenize_file), retried if
                                its worker or node dies; then the shards are assembled as Ray tasks.
    --rank R --world-size N     this process tokenizes files R, R+N, R+2N, ... (no engine at all);
                                `fineweb.py assemble DIR` cuts the shards once every rank is done.

Either way the output is byte-identical to a single-machine run of the same command. The output
directory must be one every machine sees: shared storage (NFS, Lustre), or a bucket URL (s3://...),
where the parts meet without any shared filesystem. Ranks share its lock (they work side by side);
the Ray driver and `assemble` hold it alone. Ray is imported only
here, and only for --engine ray.
"""
import json
import logging
import os
import time
from dataclasses import replace

from .assemble import assemble, read_plan, write_shard
from .bucket import open_dir
from .errors import UserError
from .manifest import source_mismatch
from .outdir import FOREIGN, PARTS, PARTS_STATE, RUN
from .parts import load_done, tokenize_file
from .storage import files_at, is_url

# Environment a Ray worker needs to see what this process sees (Hub endpoint and token, caches).
FORWARD_ENV = ("HF_", "HUGGING_FACE", "TIKTOKEN_", "FINEWEB_", "FASTOKENS_", "NO_PROXY", "no_proxy")


def prepare(job, out, world_size=None):
    """Check the output directory and record the run's plan in parts/job.json: created once, by
    whichever rank comes first (exclusively); the others check theirs against it. Refuses to mix two
    different runs in one directory. Returns the plan, or None if the run is already complete."""
    st = out.state()  # (the command line refused --max-tokens, and --overwrite with --rank)
    if job.overwrite:
        if st.kind == RUN:
            out.remove_run(st.manifest)
        out.remove_parts()
        st = out.state()
    if st.kind == FOREIGN:
        out.refuse_foreign(st)
    if st.kind == RUN:
        if st.manifest.complete:  # (a parts/ left by a run stopped while removing it goes too)
            out.remove_parts(of=st.manifest)
            return None  # nothing to do
        raise UserError(f"{job.out_dir} holds an unfinished single-machine run; finish it without "
                        "--engine/--rank, or add --overwrite to start over")
    plan = {"settings": job.settings(), "source": job.source.describe(), "files": len(job.source.files),
            "world_size": world_size}
    if st.kind != PARTS_STATE and files_at(job.out_dir).create_once(f"{PARTS}/job.json",
                                                                   (json.dumps(plan, indent=1) + "\n").encode()):
        return plan
    old = read_plan(job.out_dir)  # another rank was first: its plan is the run's
    was = old.get("source") if isinstance(old.get("source"), dict) else {}
    if isinstance(plan["source"], dict) and was.get("revision") != plan["source"].get("revision"):
        raise UserError(f"{job.out_dir}/{PARTS} was started at revision {was.get('revision')}, not "
                        f"{plan['source'].get('revision')}; add --revision {was.get('revision')}")
    if old.get("settings") != plan["settings"]:
        raise UserError(f"{job.out_dir}/{PARTS} holds parts of another run (settings differs); "
                        "rerun with the same settings, or --overwrite to start over")
    if isinstance(old.get("source"), list) and isinstance(plan["source"], list):
        problem = source_mismatch(job.out_dir, old["source"], plan["source"])
        if problem:
            raise UserError(problem)
    for key in ("source", "files"):
        if old.get(key) != plan[key] and not (key == "source" and isinstance(plan["source"], list)):
            raise UserError(f"{job.out_dir}/{PARTS} holds parts of another run ({key} differs); "
                            "rerun with the same settings, or --overwrite to start over")
    return old


def run_rank(job, rank, world_size, nprocs, log=print):
    """Tokenize this rank's files (files[rank::world_size]) into parts, skipping finished ones."""
    with open_dir(job.out_dir, job.prefix, shared=True, what=f"rank {rank}", log=log) as out:
        if prepare(job, out, world_size) is None:
            log(f"{job.out_dir} is already complete; nothing to do")
            return
        mine = list(range(rank, len(job.source.files), world_size))
        tokens = skipped = 0
        for n, i in enumerate(mine, 1):
            out.check_held()
            part = tokenize_file(job, i, nprocs, log)
            tokens += part.tokens
            skipped += part.skipped
            log(f"rank {rank}: file {n}/{len(mine)} {_short(part.file)}: {part.tokens:,} tokens"
                + (" (already done)" if part.skipped else ""))
    log(f"rank {rank} of {world_size}: {len(mine)} files ({skipped} already done), {tokens:,} tokens; "
        f"once every rank is done: python fineweb.py assemble {job.out_dir}")


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
    job = _absolute_paths(job)  # Ray workers do not run in this directory
    with open_dir(job.out_dir, job.prefix, what="ray driver", log=log) as out:
        if prepare(job, out) is None:
            log(f"{job.out_dir} is already complete; nothing to do")
            return out.state().manifest
        out.remove_temp_files()
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
                progress.start(0, job.estimate_tokens())
            # every file goes out: a task checks a finished part's sha256 and returns at once
            for part in _ray_map(ray, tokenize, [(job_ref, i) for i in range(n)]):
                if progress:
                    progress.update(part.tokens)
                log(f"file {part.index} {_short(part.file)}: {part.tokens:,} tokens"
                    + (" (already done)" if part.skipped else ""))
            if progress:
                progress.close(ok=True)
            write = ray.remote(num_cpus=1, max_retries=3)(write_shard)
            return assemble(out, log=log, t0=t0, map_fn=lambda fn, specs: _ray_map(ray, write, [(s,) for s in specs]))
        finally:
            if started:
                ray.shutdown()


def _absolute_paths(job):
    source = job.source.with_absolute_paths()
    spec = job.spec
    if spec.kind == "tokenizers":  # a tokenizer.json
        spec = replace(spec, name=os.path.abspath(spec.name))
    out_dir = job.out_dir if is_url(job.out_dir) else os.path.abspath(job.out_dir)
    return replace(job, out_dir=out_dir, source=source, spec=spec)


def _tokenize_one_cpu(job, i):
    """A Ray task holds one CPU: the fast tokenizer must not start a thread per core of the node."""
    os.environ["FASTOKENS_BPE_THREADS"] = os.environ["RAYON_NUM_THREADS"] = "1"
    return tokenize_file(job, i)


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
