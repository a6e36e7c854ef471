"""Stage 1 (remote): a Hugging Face dataset, streamed file by file (no multi-GB cache on disk).

- Names: `--remote 10BT` / `sample-10BT` / `default` / `CC-MAIN-2024-10` map to a config of
  HuggingFaceFW/fineweb-edu (or --dataset) and to the output directory build-nanogpt and
  llm.c use (edu_fineweb10B, fineweb100B, ...).
- Reproducible: `main` is resolved to a commit sha once, and every (re)open reads that sha.
- Resumable: a batch's position is (data file, row) for parquet, (data file, `state_dict()`) otherwise.
- Survives the network: a transient failure the client libraries did not absorb re-opens the
  stream at the state after the last batch handed on, so no document is duplicated or lost.
"""
import copy
import os
import queue
import random
import re
import sys
import threading
import time
from collections import deque

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .job import usable_cpus
from .positions import Position
from .sources import BATCH_DOCS, Batch, check_text_type, corrupt, parquet_batches

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


def is_data_error(exc):
    """pyarrow could not make sense of the bytes: a damaged file, or a body cut short on the way."""
    return type(exc).__name__ in ("ArrowInvalid", "ArrowIOError", "ArrowException") or (
        type(exc) is OSError and exc.errno is None)  # pyarrow's "Couldn't deserialize thrift", "File too short"


def is_transient(exc):
    """Trouble worth retrying (the network, or unreadable data that a re-download may fix), as
    opposed to a mistake retrying cannot fix."""
    errors = _hf_errors()
    if isinstance(exc, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.EntryNotFoundError)):
        return False
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is None or status in (408, 429) or status >= 500
    if isinstance(exc, (ConnectionError, TimeoutError)) or is_data_error(exc):
        return True
    mod = type(exc).__module__ or ""
    return mod.startswith(("httpx", "httpcore", "aiohttp", "fsspec", "requests", "urllib3"))


def retry_after(exc):
    resp = getattr(exc, "response", None)
    try:
        return float(resp.headers.get("Retry-After"))
    except (AttributeError, TypeError, ValueError):
        return None


# Unreadable data that a re-download does not fix is a damaged file, not the network: it is
# retried this many times (consecutive failures, whatever --retries says), then named as such.
DATA_RETRIES = 2
# Before the first successful contact with the Hub the budget is short: a machine with no route to
# it, a wrong HF_ENDPOINT or a proxy that is needed and not set must hear so in about a minute.
FIRST_CONTACT_RETRIES, FIRST_CONTACT_SECONDS = 4, 60.0
NO_CONTACT_HINT = ("check the network connection, HF_ENDPOINT (now {endpoint}), HF_HUB_OFFLINE and any proxy "
                   "(HTTPS_PROXY), then rerun")


class Retrier:
    """Backoff with jitter for consecutive failures; progress resets the budget."""

    def __init__(self, attempts, seconds, log):
        self.attempts, self.seconds, self.log = attempts, seconds, log
        # 1 s, 2 s, 4 s ... 60 s. Tests shrink it; the client libraries' own waits come on top.
        self.base = float(os.environ.get("FINEWEB_RETRY_BASE_SECONDS", "1"))
        self.reset()

    def reset(self):
        self.failures, self.first_failure, self.data_failures = 0, None, 0

    def wait(self, exc, what, advice="rerun the same command to resume where it stopped"):
        """Sleep before the next try, or raise UserError when the budget is spent."""
        now = time.monotonic()
        self.first_failure = self.first_failure or now
        self.failures += 1
        self.data_failures = self.data_failures + 1 if is_data_error(exc) else 0
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        if self.data_failures > min(DATA_RETRIES, self.attempts):
            raise UserError(
                f"{what} failed {self.failures} times in a row with data that cannot be read (last: {cause}); the "
                "file looks damaged or cut short on the server: rerun the same command to try again, and if it "
                "persists, report the file to the dataset's owners") from exc
        if self.failures > self.attempts or now - self.first_failure > self.seconds:
            raise UserError(
                f"{what} failed {self.failures} times in a row over {now - self.first_failure:.0f}s "
                f"(last: {cause}); {advice}"
            ) from exc
        delay = min(60.0, self.base * 2.0 ** (self.failures - 1)) * (0.5 + random.random())
        hinted = retry_after(exc)
        if hinted is not None:
            delay = max(delay, hinted)
        self.log(f"network: {what}: {cause}; retry {self.failures}/{self.attempts} in {delay:.1f}s")
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


class HubSource:
    """A dataset on the Hub (or a local directory laid out like one), read file by file.

    Its data files are listed once (datasets' own config resolution, at the pinned sha). Reading
    file by file gives three things: a unit of work for other machines (cluster.py), several files
    read at once while documents still come out in dataset order (`readers`), and a resume
    position that never touches a finished file.

    - Parquet (FineWeb and most Hub datasets): huggingface_hub's HfFileSystem (token, pinned
      revision, its HTTP retries) with pyarrow's ParquetFile, one row group in memory at a time.
      Not datasets' streaming reader: its pyarrow scanner reads a file ahead without bound while
      the consumer is slower than the network (apache/arrow#39808; measured here: the parent held
      1.2 GB for one 369 MB file, 2.3 GB for two), and a FineWeb file is 2 GB. Position:
      Position(file, row), as for local parquet.
    - Other formats (JSON lines, ...): `datasets.load_dataset(<builder>, data_files=[file],
      streaming=True)`. Position: Position(file, state=IterableDataset.state_dict()).
    """

    def __init__(self, dataset, config, revision, text_column, retries=20, retry_seconds=1800, log=print,
                 readers=1):
        self.dataset, self.config, self.text_column, self.readers = dataset, config, text_column, max(1, readers)
        self.local = os.path.isdir(dataset)
        self.retries, self.retry_seconds, self.log = retries if not self.local else 0, retry_seconds, log
        self.sha, self.has_token_count = None, None
        _quiet_datasets_retries()
        # the first contact: a short budget, and a line that says what to check (NO_CONTACT_HINT)
        self.sha = None if self.local else self._with_retries(
            lambda: self._resolve(revision), "revision lookup", first_contact=True)
        self.builder, self.files = self._with_retries(self._list_files, "listing the dataset's files")
        names = self._with_retries(self._columns, "opening the dataset", path=self.files[0])
        if names is not None and text_column not in names:
            raise UserError(
                f"{dataset} ({config}) has no column {text_column!r} (columns: {', '.join(names)}); "
                "pick one with --text-column"
            )
        if names and names[text_column] is not None:
            check_text_type(f"{dataset} ({config})", text_column, names[text_column])
        counts_type = (names or {}).get("token_count", "absent")
        self.has_token_count = counts_type != "absent" and (counts_type is None or pa.types.is_integer(counts_type))
        self.columns = [text_column] + (["token_count"] if self.has_token_count else [])

    def __getstate__(self):  # sent to other processes (cluster.py): without the log function
        return dict(self.__dict__, log=None)

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.log = self.log or _log_stderr
        _quiet_datasets_retries()

    def _with_retries(self, fn, what, first_contact=False, path=None):
        if first_contact:
            retrier = Retrier(min(self.retries, FIRST_CONTACT_RETRIES), min(self.retry_seconds, FIRST_CONTACT_SECONDS),
                              self.log)
            advice = NO_CONTACT_HINT.format(endpoint=_endpoint())
            what = f"reaching the Hub: {what}"
        else:
            retrier, advice = Retrier(self.retries, self.retry_seconds, self.log), None
        while True:
            try:
                return fn()
            except Exception as e:
                self._raise_if_user_error(e, path)
                if not is_transient(e):
                    raise
                retrier.wait(e, what, *([advice] if advice else []))

    def _raise_if_user_error(self, e, path=None):
        if self.local and is_data_error(e):  # a local mirror: no network to blame
            raise UserError(corrupt(path or self.dataset, "it", e)) from None
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

    def _list_files(self):
        """(builder module, the train split's files in dataset order), as load_dataset resolves them."""
        import datasets

        b = datasets.load_dataset_builder(self.dataset, name=self.config, revision=self.sha)
        files = (b.config.data_files or {}).get("train")
        if not files:
            raise UserError(f"{self.dataset} ({self.config}) has no train split files")
        return b.name, [str(f) for f in files]

    def _columns(self):
        """{column: pyarrow type, or None when datasets does not say} of the first data file."""
        if self.builder == "parquet":
            with self._open_file(0) as f:
                schema = pq.ParquetFile(f).schema_arrow
            return {name: schema.field(name).type for name in schema.names}
        ds = self._open(0)
        return {name: None for name in ds.features} if ds.features else None

    def _open_file(self, i):
        """A data file, for random access: ranged GETs at the pinned revision (or a local file)."""
        path = self.files[i]
        if not path.startswith("hf://"):
            return open(path, "rb")
        from huggingface_hub import HfFileSystem

        # no read-ahead cache: pyarrow asks for exactly the byte ranges it needs
        return HfFileSystem().open(path[len("hf://") :], "rb", cache_type="none")

    def _open(self, i, state=None):
        import datasets

        ds = datasets.load_dataset(self.builder, data_files=[self.files[i]], split="train", streaming=True)
        if ds.features and self.text_column in ds.features:
            keep = [self.text_column] + (["token_count"] if "token_count" in ds.features else [])
            ds = ds.select_columns(keep)
        if state is not None:
            ds.load_state_dict(copy.deepcopy(state))
        return ds

    def describe(self):
        return {"dataset": self.dataset, "config": self.config, "revision": self.sha}

    def with_absolute_paths(self):
        """The same source with absolute paths for a local mirror (hf:// files stay as they are)."""
        other = copy.copy(self)
        other.files = [f if str(f).startswith("hf://") else os.path.abspath(f) for f in self.files]
        return other

    def input_bytes(self):
        return None

    def file_batches(self, i, pos=None):
        """The batches of file i, from position `pos` (one of its batches' start) on. A transient
        failure re-opens the file where the last batch handed on ended."""
        read = self._parquet_batches if self.builder == "parquet" else self._datasets_batches
        retrier = Retrier(self.retries, self.retry_seconds, self.log)
        while True:
            try:
                for b, pos in read(i, pos):
                    yield b
                    retrier.reset()
                return
            except Exception as e:
                self._raise_if_user_error(e, self.files[i])
                if not is_transient(e):
                    raise
                retrier.wait(e, f"streaming {os.path.basename(self.files[i])}")

    def _parquet_batches(self, i, pos):
        """(batch, position after it) from position pos: Position(file, row)."""
        with self._open_file(i) as f:
            for b in parquet_batches(pq.ParquetFile(f), i, pos.offset if pos else 0, self.columns):
                yield b, Position(i, b.start.offset + len(b.texts))

    def _datasets_batches(self, i, pos):
        """(batch, position after it) from position pos: Position(file, state=the dataset's state_dict)."""
        state = pos.state if pos else None
        ds = self._open(i, state)
        for b in ds.iter(batch_size=BATCH_DOCS):
            texts = [t or "" for t in b[self.text_column]]
            counts = [c or 0 for c in b.get("token_count")] if self.has_token_count else None
            # state_dict() is live: copy it, it is where the next batch starts
            after = Position(i, None, False, copy.deepcopy(ds.state_dict()))
            yield Batch(texts, Position(i, None, False, state), False, counts), after
            state = after.state

    def batches(self, pos=None):
        if pos is not None and self.builder == "parquet" and pos.state is not None:
            raise UserError("this output was started by an older fineweb.py (another resume position); "
                            "rerun with --overwrite")
        first = pos.file if pos else 0
        streams = (self.file_batches(i, pos if i == first else None) for i in range(first, len(self.files)))
        return read_ahead(streams, self.readers)


def default_readers(nprocs=None):
    """One download stream per 4 tokenizer processes: one stream feeds ~4 cores of tokenizing
    (a fast core takes ~25 MB/s of text), and more streams cost memory (a row group each)."""
    cpus = usable_cpus() if nprocs is None else nprocs
    return max(1, min(8, cpus // 4))


def _endpoint():
    from huggingface_hub import constants

    return constants.ENDPOINT


def _log_stderr(msg):
    print(msg, file=sys.stderr, flush=True)


_DONE = object()


def read_ahead(streams, readers, depth=4):
    """Chain the iterators in `streams`, running up to `readers` of them at once in threads.

    One stream per file: while the consumer takes file i's batches, files i+1 .. i+readers-1 are
    already downloading, each into a queue of at most `depth` batches (bounded memory). Output
    order is exactly the order of the streams, so the shards do not change with `readers`."""
    if readers <= 1:
        for s in streams:
            yield from s
        return
    stop = threading.Event()
    running = deque()

    def put(q, item):  # False once the consumer has stopped
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def pump(stream, q):
        try:
            for item in stream:
                if not put(q, item):
                    return
            put(q, _DONE)
        except BaseException as e:  # handed to the consumer, raised there
            put(q, e)
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()

    def start_next():
        s = next(streams, None)
        if s is not None:
            q = queue.Queue(depth)
            t = threading.Thread(target=pump, args=(s, q), daemon=True)
            t.start()
            running.append((t, q))

    try:
        for _ in range(readers):
            start_next()
        while running:
            t, q = running[0]
            item = q.get()
            if item is _DONE:
                running.popleft()
                start_next()
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for t, q in running:
            t.join(timeout=1)  # one stuck in a network read is a daemon thread: it does not hold up exit
