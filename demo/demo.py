"""`make demo`: the real pipeline, offline, on 150 real FineWeb-Edu documents bundled in demo/sample.jsonl.gz.

1. The Hub path for real: a loopback stand-in for huggingface.co (tests/hubserver.py) serves a repo laid
   out like HuggingFaceFW/fineweb-edu, and `fineweb.py --remote sample-10BT` streams it with `datasets`.
2. Crash-proof: a run stopped early (--max-tokens) is continued by rerunning; bytes are identical.
3. Two machines' worth of work: the Hub files split between --rank 0 and --rank 1 (as a Slurm array
   would), then `assemble`: the same bytes as step 1.
4. A local plain-text corpus, as llm.c shards.
5. verify, inspect, merge.
Everything goes to demo/out/ (deleted and rebuilt each time).
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo" / "out"
sys.path.insert(0, str(ROOT / "tests"))
from hub import hub_env, start_hub  # noqa: E402  (the test suite's loopback Hub)

CARD = """---
license: odc-by
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/*/*
  - config_name: sample-10BT
    data_files:
      - split: train
        path: sample/10BT/*
---
Demo mirror of HuggingFaceFW/fineweb-edu (150 documents; ODC-By 1.0, Hugging Face).
"""


def step(title):
    print(f"\n=== {title}", flush=True)


def fineweb(*args, env=None, check=True):
    shown = " ".join(str(a) for a in args)
    print(f"$ python fineweb.py {shown}", flush=True)
    r = subprocess.run([sys.executable, str(ROOT / "fineweb.py"), *map(str, args)], cwd=OUT, env=env)
    if check and r.returncode != 0:
        sys.exit(f"demo: the command above failed with exit code {r.returncode}")
    return r.returncode


def shard_bytes(d):
    return {f: (d / f).read_bytes() for f in sorted(os.listdir(d)) if f.endswith((".bin", ".npy"))}


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    with gzip.open(ROOT / "demo" / "sample.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    # a Hub-shaped repo: README with configs, sample/10BT/*.parquet, data/<dump>/*.parquet
    repo = OUT / "hub" / "fineweb-edu"
    for sub, part in (("sample/10BT/000_00000.parquet", rows[:75]), ("sample/10BT/001_00000.parquet", rows[75:]),
                      ("data/CC-MAIN-2024-10/000_00000.parquet", rows[:10])):
        (repo / sub).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part), repo / sub)
    (repo / "README.md").write_text(CARD)
    (OUT / "corpus.txt").write_text("\n\n".join(r["text"] for r in rows) + "\n")

    with start_hub({"HuggingFaceFW/fineweb-edu": str(repo)}, OUT) as hub:
        env = hub_env(hub, OUT)
        step(f"1. Stream sample-10BT from the Hub (a loopback stand-in at {hub.url}) into build-nanogpt .npy shards")
        fineweb("--remote", "sample-10BT", "--format", "npy", "--shard-size", "50K", env=env)
        step("2. Stop early, then rerun the same command: it resumes after the last complete shard")
        fineweb("--remote", "sample-10BT", "--format", "npy", "--shard-size", "50K", "--max-tokens", "60K",
                "--local-dir", "resumed", env=env)
        fineweb("--remote", "sample-10BT", "--format", "npy", "--shard-size", "50K", "--local-dir", "resumed", env=env)
        same = shard_bytes(OUT / "resumed") == shard_bytes(OUT / "edu_fineweb10B")
        print(f"resumed run byte-identical to the uninterrupted one: {same}")
        if not same:
            sys.exit("demo: resumed output differs")
        step("3. Split the Hub files between two ranks (a Slurm array of 2), then assemble the shards")
        for rank in (0, 1):
            fineweb("--remote", "sample-10BT", "--format", "npy", "--shard-size", "50K", "--local-dir", "ranks",
                    "--rank", rank, "--world-size", 2, env=env)
        fineweb("assemble", "ranks")
    same = shard_bytes(OUT / "ranks") == shard_bytes(OUT / "edu_fineweb10B")
    print(f"assembled from two ranks byte-identical to the single-machine run: {same}")
    if not same:
        sys.exit("demo: assembled output differs")

    step("4. A local text file (documents separated by a blank line) into llm.c .bin shards")
    fineweb("--input", "corpus.txt", "--format", "llmc", "--shard-size", "50K")
    step("5. Check every shard against its manifest, look inside, and merge for nanoGPT")
    fineweb("verify", "edu_fineweb10B")
    fineweb("inspect", "edu_fineweb10B", "--docs", "2", "--chars", "160")
    fineweb("merge", "corpus_shards", "--format", "bin", "--out", "nanogpt_shards")
    fineweb("merge", "nanogpt_shards", "--out", "nanogpt_data")
    print(f"\ndemo done: outputs in {OUT.relative_to(ROOT)}/ (edu_fineweb10B, resumed, ranks, corpus_shards, nanogpt_data)")


if __name__ == "__main__":
    main()
