"""Stage 1 (remote): a Hugging Face dataset, streamed with `datasets` (no multi-GB cache on disk).

- Names: `--remote 10BT` / `sample-10BT` / `default` / `CC-MAIN-2024-10` map to a config of
  HuggingFaceFW/fineweb-edu (or --dataset) and to the output directory build-nanogpt and
  llm.c use (edu_fineweb10B, fineweb100B, ...).
- Reproducible: `main` is resolved to a commit sha once, and every (re)open reads that sha.
- Resumable: a batch's position is `IterableDataset.state_dict()` taken before it.
- Survives the network: a transient failure the client libraries did not absorb re-opens the
  stream at the state after the last batch handed on, so no document is duplicated or lost.
"""
import copy
import os
import random
import re
import time

from .errors import UserError
from .sources import BATCH_DOCS, Batch

FINEWEB = {  # repo -> (file prefix, directory stem), as build-nanogpt and llm.c name them
    "HuggingFaceFW/fineweb-edu": ("edufineweb", "edu_fineweb"),
    "HuggingFaceFW/fineweb": ("fineweb", "fineweb"),
}
SAMPLES = ("10BT", "100BT", "350BT")
DUMP = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
VALID_HELP = "10BT, 100BT, 350BT (or sample-10BT, ...), default, or a dump such as CC-MAIN-2024-10"


def naming(dataset, remote):
    """(config name, file prefix, output directory) for --dataset/--remote."""
    key = dataset if dataset in FINEWEB else _fineweb_by_dirname(dataset)
    if key:
        prefix, stem = FINEWEB[key]
        short = remote[len("sample-") :] if remote.startswith("sample-") else remote
        if short in SAMPLES:
            return "sample-" + short, prefix, stem + short[:-1]  # 10BT -> edu_fineweb10B
        if remote == "default" or DUMP.match(remote):
            return remote, prefix, f"{stem}_{remote}"
        raise UserError(f"unknown --remote {remote!r} for {key}; valid: {VALID_HELP}")
    name = re.sub(r"[^0-9A-Za-z]+", "_", os.path.basename(dataset.rstrip("/"))).strip("_").lower() or "dataset"
    return remote, name, f"{name}_{remote}"


def _fineweb_by_dirname(dataset):
    """A local mirror laid out like the Hub repo (e.g. ../shared/data/fineweb-edu) is named like it."""
    if os.path.isdir(dataset):
        base = os.path.basename(os.path.abspath(dataset))
        return next((k for k in FINEWEB if k.split("/")[1] == base), None)
    return None


def _hf_errors():
    from huggingface_hub import errors

    return errors


def is_transient(exc):
    """Network trouble worth retrying, as opposed to a mistake retrying cannot fix."""
    errors = _hf_errors()
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError)):
        return False
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is None or status in (408, 429) or status >= 500
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True  # also pyarrow's "File too short" on a short body
    mod = type(exc).__module__ or ""
    if mod.startswith(("httpx", "httpcore", "aiohttp", "fsspec")):
        return True
    return type(exc).__name__ in ("ArrowInvalid", "ArrowIOError")  # a truncated parquet footer


def retry_after(exc):
    resp = getattr(exc, "response", None)
    try:
        return float(resp.headers.get("Retry-After"))
    except (AttributeError, TypeError, ValueError):
        return None


class Retrier:
    """Backoff with jitter for consecutive failures; progress resets the budget."""

    def __init__(self, attempts, seconds, log):
        self.attempts, self.seconds, self.log = attempts, seconds, log
        # 1 s, 2 s, 4 s ... 60 s. Tests shrink it; the client libraries' own waits come on top.
        self.base = float(os.environ.get("FINEWEB_RETRY_BASE_SECONDS", "1"))
        self.reset()

    def reset(self):
        self.failures, self.first_failure = 0, None

    def wait(self, exc, what):
        """Sleep before the next try, or raise UserError when the budget is spent."""
        now = time.monotonic()
        self.first_failure = self.first_failure or now
        self.failures += 1
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if self.failures > self.attempts or now - self.first_failure > self.seconds:
            raise UserError(
                f"{what} failed {self.failures} times in a row over {now - self.first_failure:.0f}s "
                f"(last: {cause}); rerun the same command to resume where it stopped"
            ) from exc
        delay = min(60.0, self.base * 2.0 ** (self.failures - 1)) * (0.5 + random.random())
        hinted = retry_after(exc)
        if hinted is not None:
            delay = max(delay, hinted)
        self.log(f"network: {cause}; retry {self.failures}/{self.attempts} in {delay:.1f}s")
        time.sleep(delay)


def _quiet_datasets_retries():
    """Let failures reach our logged, budgeted retry quickly instead of datasets' silent 20 x 60 s."""
    import datasets

    datasets.config.STREAMING_READ_MAX_RETRIES = 2
    datasets.config.STREAMING_READ_RETRY_INTERVAL = 1
    datasets.config.STREAMING_READ_SERVER_UNAVAILABLE_RETRY_INTERVAL = 2
    datasets.config.STREAMING_READ_RATE_LIMIT_RETRY_INTERVAL = 5
    datasets.config.STREAMING_OPEN_MAX_RETRIES = 2
    datasets.config.STREAMING_OPEN_RETRY_INTERVAL = 1


def _skip_finished_file(state):
    """Don't let a resume re-download a file whose rows are all done.

    datasets keeps the position as (state before the current Arrow chunk, rows used of that chunk).
    When the chunk came from the next file, "before" points at the end of the previous file, and
    load_state_dict would stream that whole file (GBs on the Hub) only to skip all of it. The chunk
    then began at row 0 of the current file: say so, and the previous file is never touched.
    """
    state = copy.deepcopy(state)
    node = state.get("examples_iterable", {})
    while isinstance(node, dict):
        cur, prev = node.get("examples_iterable"), node.get("previous_state")
        if node.get("type") == "RebatchedArrowExamplesIterable" and isinstance(cur, dict) and isinstance(prev, dict):
            if cur.get("type") == prev.get("type") == "ArrowExamplesIterable" and prev["shard_idx"] < cur["shard_idx"]:
                node["previous_state"] = dict(prev, shard_idx=cur["shard_idx"], shard_example_idx=0)
            return state
        node = cur
    return state


class HubSource:
    """A dataset on the Hub (or a local directory laid out like one). Position: {"state": state_dict}."""

    def __init__(self, dataset, config, revision, text_column, retries=20, retry_seconds=1800, log=print):
        self.dataset, self.config, self.text_column = dataset, config, text_column
        self.local = os.path.isdir(dataset)
        self.sha = None
        self.retrier = Retrier(retries if not self.local else 0, retry_seconds, log)
        _quiet_datasets_retries()
        self.sha = None if self.local else self._with_retries(lambda: self._resolve(revision), "revision lookup")
        ds = self._with_retries(lambda: self._load(), "opening the dataset")
        names = list(ds.features) if ds.features else None
        if names is not None and text_column not in names:
            raise UserError(
                f"{dataset} ({config}) has no column {text_column!r} (columns: {', '.join(names)}); "
                "pick one with --text-column"
            )
        self.has_token_count = bool(names) and "token_count" in names

    def _with_retries(self, fn, what):
        while True:
            try:
                result = fn()
                self.retrier.reset()
                return result
            except Exception as e:
                self._raise_if_user_error(e)
                if not is_transient(e):
                    raise
                self.retrier.wait(e, what)

    def _raise_if_user_error(self, e):
        errors = _hf_errors()
        name = type(e).__name__
        where = f"{self.dataset!r}" + (f" at revision {self.sha}" if self.sha else "")
        if isinstance(e, errors.GatedRepoError) or (
            isinstance(e, errors.HfHubHTTPError) and getattr(e.response, "status_code", 0) in (401, 403)
            and not isinstance(e, errors.RepositoryNotFoundError)
        ):
            raise UserError(f"access to {where} was refused: accept its terms on the Hub and set HF_TOKEN") from None
        if isinstance(e, errors.RepositoryNotFoundError) or name == "DatasetNotFoundError":
            raise UserError(
                f"dataset {self.dataset!r} not found on the Hub (or it is private/gated: set HF_TOKEN); "
                "check --dataset"
            ) from None
        if isinstance(e, errors.RevisionNotFoundError):
            raise UserError(f"revision not found in {self.dataset!r}: check --revision") from None
        if isinstance(e, errors.OfflineModeIsEnabled) or "OfflineModeIsEnabled" in str(e):
            raise UserError("HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set: unset it to stream from the Hub") from None
        if isinstance(e, ValueError) and ("BuilderConfig" in str(e) or "config" in str(e).lower()):
            raise UserError(f"{self.dataset!r} has no config {self.config!r}: {str(e).splitlines()[0]}") from None
        if name == "DataFilesNotFoundError" or isinstance(e, FileNotFoundError) and self.local:
            raise UserError(f"{self.dataset} ({self.config}): no data files found: {e}") from None

    def _resolve(self, revision):
        from huggingface_hub import HfApi

        return HfApi().dataset_info(self.dataset, revision=revision or "main").sha

    def _load(self, state=None):
        import datasets

        ds = datasets.load_dataset(self.dataset, name=self.config, split="train", streaming=True, revision=self.sha)
        if ds.features and self.text_column in ds.features:
            keep = [self.text_column] + (["token_count"] if "token_count" in ds.features else [])
            ds = ds.select_columns(keep)
        if state is not None:
            ds.load_state_dict(_skip_finished_file(state))
        return ds

    def describe(self):
        return {"dataset": self.dataset, "config": self.config, "revision": self.sha}

    def input_bytes(self):
        return None

    def batches(self, pos=None):
        state = copy.deepcopy(pos["state"]) if pos else None
        while True:
            try:
                ds = self._load(state)
                for b in ds.iter(batch_size=BATCH_DOCS):
                    texts = [t or "" for t in b[self.text_column]]
                    counts = b.get("token_count") if self.has_token_count else None
                    yield Batch(texts, {"state": state}, False, counts)
                    # state_dict() is live: copy it, it is where the next batch starts
                    state = copy.deepcopy(ds.state_dict())
                    self.retrier.reset()
                return
            except Exception as e:
                self._raise_if_user_error(e)
                if not is_transient(e):
                    raise
                self.retrier.wait(e, "streaming")
