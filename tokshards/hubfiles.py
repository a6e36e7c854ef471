"""The train split's parquet files of a Hub dataset config, listed without importing `datasets`.

`datasets.load_dataset_builder` is the reference: it is what HubSource used for every dataset, and
still uses for any card this module does not take. Importing it (and pandas with it) is ~0.7 CPU s and
~60 MB in the main process before the first token. For the cards FineWeb and most parquet datasets
have, its resolution is a plain lookup, done here step for step (datasets 5.x, load.py and
data_files.py):

- the card (README.md at the pinned commit) lists `configs`; the one named has `data_files` and no
  `data_dir`, and only a train split;
- each of its patterns, joined to hf://datasets/REPO@SHA/, is globbed by HfFileSystem as datasets does
  (the same call; directories and datasets' FILES_TO_IGNORE are skipped), in the order of the patterns;
- datasets picks the builder from the FIRST config's files: they must all be parquet too.

Anything else returns None and datasets does it: HF_DATASETS_OFFLINE set (datasets refuses to run), a
`.huggingface.yaml` or a dataset script in the repo, a config with `data_dir`, a config name given twice
or that datasets refuses (a character of INVALID_NAME), two default configs, a pattern that is a URL, is
absolute or has a ":" (hops, or a scheme to urlparse), a pattern that matches nothing, no pattern, a
match that is hidden or in a "__" directory (datasets' own rules decide those), a file that is not
NAME.parquet. tests/test_hubfiles.py compares both on the loopback Hub, case by case.

Not checked (datasets raises, the tool reads the files the card names): malformed metadata that does not
name files: `features` or `dataset_info` of the wrong type, a damaged legacy dataset_infos.json.
"""
import os
import re

from huggingface_hub import DatasetCard, HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

# datasets.data_files.FILES_TO_IGNORE: skipped unless the pattern names the file itself
FILES_TO_IGNORE = {"README.md", "config.json", "dataset_info.json", "dataset_infos.json", "dummy_data.zip",
                   "dataset_dict.json"}
SPLIT = re.compile(r"^\w+(\.\w+)*$")  # datasets.naming._split_re
INVALID_NAME = r"<>:/\|?*"  # datasets.naming.INVALID_WINDOWS_CHARACTERS_IN_PATH: a config name with one is refused


class NotPlain(Exception):
    """The card or the files need datasets' own rules."""


def train_files(dataset, config, sha):
    """["hf://datasets/REPO@SHA/PATH", ...]: the train split of `config` as datasets lists it, or None
    when datasets must decide (see the module's docstring)."""
    try:
        return _train_files(dataset, config, sha)
    except (NotPlain, EntryNotFoundError):  # EntryNotFoundError: no README.md
        return None


def _train_files(dataset, config, sha):
    if os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise NotPlain("offline")  # huggingface_hub does not read it; datasets refuses, with its own error
    api = HfApi()
    for name in (".huggingface.yaml", dataset.rsplit("/", 1)[-1] + ".py"):  # merged into the card; a script
        if api.file_exists(dataset, name, repo_type="dataset", revision=sha):
            raise NotPlain(name)
    card = DatasetCard.load(hf_hub_download(dataset, "README.md", repo_type="dataset", revision=sha)).data.to_dict()
    configs = card.get("configs")
    if not isinstance(configs, list) or not configs or not all(isinstance(c, dict) for c in configs):
        raise NotPlain("no configs")
    for c in configs:  # datasets checks every config's data_files, whichever is asked for
        if "data_files" in c:
            _patterns(c["data_files"])
    names = [c.get("config_name") for c in configs]
    if config not in names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise NotPlain("the config missing, a config without a name, or a name given twice")
    if any(ch in n for n in names for ch in INVALID_NAME):
        raise NotPlain("a config name datasets refuses")
    if len(configs) > 1 and sum(n == "default" or bool(c.get("default")) for n, c in zip(names, configs)) > 1:
        raise NotPlain("several default configs")
    ours = configs[names.index(config)]
    if any("data_dir" in c for c in configs) or "data_files" not in configs[0]:
        raise NotPlain("data_dir, or no data_files")
    splits = _patterns(ours.get("data_files"))
    if list(splits) != ["train"]:
        raise NotPlain("splits other than train")
    fs, base = HfFileSystem(), f"datasets/{dataset}@{sha}"
    files = _resolve(fs, base, splits["train"])
    if configs[0] is not ours:  # the builder datasets uses comes from the first config's files
        for patterns in _patterns(configs[0]["data_files"]).values():
            _resolve(fs, base, patterns)
    return files


def _patterns(data_files):
    """{split: [pattern, ...]} of a card's data_files, as datasets validates them (utils/metadata.py) and
    reads them (data_files.sanitize_patterns): a string, a list of strings, or a list of
    {split, path} entries with distinct split names. Anything else: datasets raises its own error."""
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, list) and data_files and all(isinstance(p, str) for p in data_files):
        return {"train": list(data_files)}
    if isinstance(data_files, list) and data_files and all(
            isinstance(p, dict) and set(p) == {"split", "path"} and isinstance(p["split"], str)
            and SPLIT.match(p["split"]) and isinstance(p["path"], (str, list)) for p in data_files):
        splits = [p["split"] for p in data_files]
        if len(set(splits)) == len(splits):
            return {p["split"]: p["path"] if isinstance(p["path"], list) else [p["path"]] for p in data_files}
    raise NotPlain("data_files in another shape")


def _resolve(fs, base, patterns):
    """The files the patterns match, pattern after pattern, as datasets.data_files.resolve_pattern lists them."""
    out = []
    for pattern in patterns:
        if not isinstance(pattern, str) or ":" in pattern or pattern.startswith("/"):
            raise NotPlain("not a relative pattern")
        ignore = FILES_TO_IGNORE - {pattern.rsplit("/", 1)[-1]}
        matched = []
        # datasets' call: expand_info=False skips the last-commit lookup per file
        for path, info in fs.glob(f"{base}/{pattern}", detail=True, expand_info=False).items():
            name = path.rsplit("/", 1)[-1]
            if info["type"] != "file" or name in ignore:
                continue
            rel = path[len(base) + 1 :].split("/")
            if any(part.startswith((".", "__")) for part in rel):
                raise NotPlain("hidden or special")
            if name.split(".")[1:] != ["parquet"]:
                raise NotPlain("not parquet")
            matched.append(f"hf://{path}")
        if not matched:
            raise NotPlain("no match")
        out += matched
    if not out:  # no pattern at all (`path: []`)
        raise NotPlain("no pattern")
    return out
