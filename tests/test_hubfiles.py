"""hubfiles.train_files lists a config's train files without importing datasets: it must give exactly
what datasets.load_dataset_builder gives for every card it takes, and take none of the cards whose
rules it does not reproduce (None: datasets decides). Both run against the loopback Hub, one repo per
card layout; and a --remote run of FineWeb-Edu imports neither datasets nor pandas."""
import json
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FINEWEB_EDU, PARQUETS, REPO, needs_data, run_cli
from hub import hub_env, start_hub

pytestmark = needs_data


def card(configs):
    return "---\nconfigs:\n" + "".join(
        "- " + json.dumps(c) + "\n" for c in configs) + "---\n# a dataset\n"


def parquet(path, n=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": [f"{path.name} doc {i}" for i in range(n)]}), path)


# repo name -> (README.md text or None, files, {config: True if hubfiles takes it, False if datasets must})
LAYOUTS = {
    "t/list": (card([{"config_name": "main", "data_files": [{"split": "train", "path": ["b/*.parquet", "a/x.parquet"]}]}]),
               ["a/x.parquet", "b/2.parquet", "b/1.parquet", "b/sub/3.parquet", "b/README.md"], {"main": True}),
    "t/str": (card([{"config_name": "all", "data_files": "data/**/*.parquet"}]),
              ["data/x/1.parquet", "data/y/z/2.parquet", "data/0.parquet", "other/9.parquet"], {"all": True}),
    "t/strs": (card([{"config_name": "d", "data_files": ["d/*", "e/1.parquet"]}]),
               ["d/b.parquet", "d/a.parquet", "d/README.md", "e/1.parquet"], {"d": True}),
    "t/second": (card([{"config_name": "every", "data_files": "*/*.parquet"},
                       {"config_name": "one", "data_files": [{"split": "train", "path": "one/*.parquet"}]}]),
                 ["one/1.parquet", "two/2.parquet"], {"one": True, "every": True}),
    "t/overlap": (card([{"config_name": "o", "data_files": ["p/*.parquet", "p/1.parquet"]}]),
                  ["p/1.parquet", "p/2.parquet"], {"o": True}),
    # datasets' own rules: hidden files, other formats, other splits, a standalone yaml, data_dir
    "t/hidden": (card([{"config_name": "h", "data_files": "h/*"}]), ["h/.x.parquet", "h/y.parquet"], {"h": False}),
    "t/special": (card([{"config_name": "s", "data_files": "s/**/*.parquet"}]),
                  ["s/__pycache__/x.parquet", "s/y.parquet"], {"s": False}),
    "t/json": (card([{"config_name": "j", "data_files": "j/*.jsonl"}]), ["j/a.jsonl"], {"j": False}),
    "t/splits": (card([{"config_name": "tt", "data_files": [{"split": "train", "path": "tr/*.parquet"},
                                                             {"split": "test", "path": "te/*.parquet"}]}]),
                 ["tr/1.parquet", "te/1.parquet"], {"tt": False}),
    "t/yaml": (card([{"config_name": "y", "data_files": "y/*.parquet"}]), ["y/1.parquet", ".huggingface.yaml"],
               {"y": False}),
    "t/dict": (card([{"config_name": "d", "data_files": {"train": "d/*"}}]), ["d/1.parquet"], {"d": False}),
    "t/badother": (card([{"config_name": "ok", "data_files": "ok/*.parquet"},
                         {"config_name": "bad", "data_files": [{"split": "a-b", "path": "x"}]}]), ["ok/1.parquet"],
                   {"ok": False}),
    "t/emptypath": (card([{"config_name": "e", "data_files": [{"split": "train", "path": []}]}]), ["e/1.parquet"],
                    {"e": False}),
    "t/twodefaults": (card([{"config_name": "a", "default": True, "data_files": "a/*.parquet"},
                            {"config_name": "b", "default": True, "data_files": "a/*.parquet"}]), ["a/1.parquet"],
                      {"a": False}),
    "t/badname": (card([{"config_name": "a", "data_files": "a/*.parquet"},
                        {"config_name": "b:c", "data_files": "a/*.parquet"}]), ["a/1.parquet"], {"a": False}),
    "t/siblingdir": (card([{"config_name": "a", "data_files": "a/*.parquet"},
                           {"config_name": "b", "data_dir": "nothere"}]), ["a/1.parquet"], {"a": False}),
    "t/colon": (card([{"config_name": "a", "data_files": "x:y/*.parquet"}]), ["x:y/1.parquet"], {"a": False}),
    "t/datadir": (card([{"config_name": "dd", "data_dir": "x", "data_files": "*.parquet"}]), ["x/1.parquet"],
                  {"dd": False}),
    "t/firstjson": (card([{"config_name": "js", "data_files": "js/*.jsonl"},
                          {"config_name": "pq", "data_files": "pq/*.parquet"}]), ["js/a.jsonl", "pq/1.parquet"],
                    {"pq": False}),
    "t/nocard": (None, ["data/train-00000-of-00001.parquet"], {"default": False}),
}

COMPARE = """
import json, sys
sys.path.insert(0, {root!r})
from huggingface_hub import HfApi
from tokshards.hubfiles import train_files
out = {{}}
for repo, configs in {todo!r}.items():
    sha = HfApi().dataset_info(repo).sha
    for config in configs:
        fast = train_files(repo, config, sha)
        import datasets
        try:
            b = datasets.load_dataset_builder(repo, name=config, revision=sha)
            out[repo + ":" + config] = [fast, b.name, [str(f) for f in b.config.data_files["train"]]]
        except Exception as e:  # datasets refuses the card: hubfiles must have left it alone
            out[repo + ":" + config] = [fast, type(e).__name__, str(e)[:200]]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    repos = {}
    for name, (readme, files, _) in LAYOUTS.items():
        d = root / name.replace("/", "_")
        for f in files:
            if f.endswith(".parquet"):
                parquet(d / f)
            else:
                (d / f).parent.mkdir(parents=True, exist_ok=True)
                (d / f).write_text('{"text": "a"}\n' if f.endswith(".jsonl") else "configs: []\n" if f.endswith(".yaml")
                                   else "# readme\n")
        if readme is not None:
            (d / "README.md").write_text(readme)
        repos[name] = str(d)
    fineweb = root / "fineweb-edu"
    shutil.copytree(FINEWEB_EDU, fineweb)
    repos["HuggingFaceFW/fineweb-edu"] = str(fineweb)
    return root, repos


def test_the_listing_is_datasets_own_or_none(layouts, tmp_path):
    root, repos = layouts
    todo = {name: list(cfgs) for name, (_, _, cfgs) in LAYOUTS.items()}
    todo["HuggingFaceFW/fineweb-edu"] = ["sample-10BT", "default"]
    with start_hub(repos, tmp_path) as hub:
        r = subprocess.run([sys.executable, "-c", COMPARE.format(root=str(REPO), todo=todo)], capture_output=True,
                           text=True, env=hub_env(hub, tmp_path, timeout=10), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    takes = {f"{name}:{c}": t for name, (_, _, cfgs) in LAYOUTS.items() for c, t in cfgs.items()}
    takes.update({"HuggingFaceFW/fineweb-edu:sample-10BT": True, "HuggingFaceFW/fineweb-edu:default": True})
    for key, (fast, builder, reference) in got.items():
        if takes[key]:
            assert builder == "parquet" and fast == reference, (key, fast, reference)
        else:
            assert fast is None, (key, fast, builder, reference)
    # the cases are what they say: the layouts that hubfiles leaves to datasets differ in what it does
    assert len(got["t/list:main"][0]) == 3 and got["t/overlap:o"][0][0] == got["t/overlap:o"][0][-1]
    assert [f.rsplit("/", 1)[1] for f in got["t/hidden:h"][2]] == ["y.parquet"]
    assert got["t/json:j"][1] == "json"
    assert got["t/twodefaults:a"][1] == "ValueError" and got["t/badname:a"][1] == "InvalidConfigName"


def test_datasets_offline_is_still_refused(tmp_path):
    """HF_DATASETS_OFFLINE is datasets' setting, not huggingface_hub's: a run that no longer imports
    datasets must refuse it as before, in one line."""
    with start_hub({"HuggingFaceFW/fineweb-edu": str(FINEWEB_EDU)}, tmp_path) as hub:
        env = dict(hub_env(hub, tmp_path, timeout=10), HF_DATASETS_OFFLINE="1")
        r = run_cli("--remote", "10BT", "--nprocs", 1, cwd=tmp_path, env=env)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "HF_DATASETS_OFFLINE is set" in last and "Traceback" not in r.stderr, r.stderr


def test_a_fineweb_run_imports_neither_datasets_nor_pandas(tmp_path):
    """datasets (and pandas with it) cost the main process ~0.7 CPU s and ~60 MB before the first token;
    a worker once imported pandas through pyarrow's pa.scalar (token_count's nulls). An --input run's
    main process does not even import huggingface_hub."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import atexit, os, sys\n"
        "def _seen():\n"
        f"    with open({str(tmp_path / 'modules')!r} + '.' + str(os.getpid()), 'w') as f:\n"
        "        f.write(' '.join(m for m in ('datasets', 'pandas', 'pyarrow', 'fastokens', 'huggingface_hub')\n"
        "                         if m in sys.modules))\n"
        "atexit.register(_seen)\n")
    with start_hub({"HuggingFaceFW/fineweb-edu": str(FINEWEB_EDU)}, tmp_path) as hub:
        env = hub_env(hub, tmp_path, timeout=10)
        env["PYTHONPATH"] = str(site)
        r = run_cli("--remote", "10BT", "--nprocs", 2, "--shard-size", "1M", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    seen = [p.read_text().split() for p in tmp_path.glob("modules.*")]
    tokenizing = [s for s in seen if "fastokens" in s]  # the main process builds none; the workers do
    assert len(tokenizing) >= 2 and all("pyarrow" in s for s in seen if s), seen
    assert not any("datasets" in s or "pandas" in s for s in seen), seen
    for p in tmp_path.glob("modules.*"):
        p.unlink()
    r = run_cli("--input", *PARQUETS, "--nprocs", 2, "--local-dir", tmp_path / "local", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    seen = {p.name: p.read_text().split() for p in tmp_path.glob("modules.*")}
    main = [s for s in seen.values() if "fastokens" not in s]  # the main process (and the resource tracker)
    assert main and not any("huggingface_hub" in s or "datasets" in s or "pandas" in s for s in main), seen
