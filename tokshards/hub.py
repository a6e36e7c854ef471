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
import re
import sys
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .job import usable_cpus
from .positions import Position
from .retry import FIRST_CONTACT_RETRIES, FIRST_CONTACT_SECONDS, Retrier, is_data_error
from .sources import (BATCH_DOCS, TASK_BYTES, Batch, ReadOnlyFile, check_text_type, corrupt, row_group_batches,
                      token_counts)

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


NO_CONTACT_HINT = ("check the network connection, HF_ENDPOINT (now {endpoint}), HF_HUB_OFFLINE and any proxy "
                   "(HTTPS_PROXY), then rerun")


def _datasets():
    """datasets, imported here, not at the top (~0.7 CPU s and ~60 MB, with pandas: only the cards hubfiles.py
    does not take and formats other than parquet need it), with its retries set so that failures reach
    our logged, budgeted retry quickly instead of datasets' silent 20 x 60 s."""
    import datasets

    datasets.config.STREAMING_READ_MAX_RETRIES = 2
    datasets.config.STREAMING_READ_RETRY_INTERVAL = 1
    datasets.config.STREAMING_READ_SERVER_UNAVAILABLE_RETRY_INTERVAL = 2
    datasets.config.STREAMING_READ_RATE_LIMIT_RETRY_INTERVAL = 5
    datasets.config.STREAMING_OPEN_MAX_RETRIES = 2
    datasets.config.STREAMING_OPEN_RETRY_INTERVAL = 1
    return datasets


def raise_if_user_error(e, dataset, config, sha, local, path=None):
    """Raise the one-line UserError for a mistake retrying cannot fix (access, names, offline mode,
    a damaged local file); return for anything else."""
    if local and is_data_error(e):  # a local mirror: no network to blame
        raise UserError(corrupt(path or dataset, "it", e)) from None
    errors = _hf_errors()
    name = type(e).__name__
    where = f"{dataset!r}" + (f" at revision {sha}" if sha else "")
    if isinstance(e, errors.GatedRepoError) or (
        isinstance(e, errors.HfHubHTTPError) and getattr(e.response, "status_code", 0) in (401, 403)
        and not isinstance(e, errors.RepositoryNotFoundError)
    ):
        raise UserError(f"access to {where} was refused: accept its terms on the Hub and set HF_TOKEN") from None
    if isinstance(e, errors.RepositoryNotFoundError) or name == "DatasetNotFoundError":
        raise UserError(
            f"dataset {dataset!r} not found on the Hub (or it is private/gated: set HF_TOKEN); check --dataset"
        ) from None
    if isinstance(e, errors.RevisionNotFoundError):
        raise UserError(f"revision not found in {dataset!r}: check --revision") from None
    if isinstance(e, errors.OfflineModeIsEnabled) or "OfflineModeIsEnabled" in str(e):
        raise UserError("HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set: unset it to stream from the Hub") from None
    if isinstance(e, ValueError) and ("BuilderConfig" in str(e) or "config" in str(e).lower()):
        raise UserError(f"{dataset!r} has no config {config!r}: {str(e).splitlines()[0]}") from None
    if name == "DataFilesNotFoundError" or isinstance(e, FileNotFoundError) and local:
        raise UserError(f"{dataset} ({config}): no data files found: {e}") from None
    status = getattr(getattr(e, "response", None), "status_code", None)
    if path and path.startswith("hf://") and (isinstance(e, errors.EntryNotFoundError) or status in (404, 416)):
        # a file listed at start, at this pinned revision: only a change on the Hub's side explains it
        raise UserError(f"the Hub no longer serves {path} as listed at start (HTTP {status}): check {dataset!r} "
                        "on the Hub, then rerun the same command") from None


def open_data_file(path):
    """A data file, for random access: byte ranges at the pinned revision (hf://...@sha/...), or a local file."""
    if not path.startswith("hf://"):
        return open(path, "rb")
    from .hubrange import open_hub_file  # here, not at the top: huggingface_hub, not for --input runs

    return open_hub_file(path)


def file_size(f):
    """The size of a file open_data_file opened."""
    return f.size if hasattr(f, "size") else os.fstat(f.fileno()).st_size


FOOTER_READ = 64 << 10  # the end of the file read at once, as pyarrow does: usually the whole footer


def read_footer(f, size):
    """(raw footer bytes, parsed FileMetaData) of an open parquet file of `size` bytes: one read of
    its last 64 KiB, and a second one only for a footer larger than that."""
    k = min(size, FOOTER_READ)
    f.seek(size - k)
    tail = f.read(k)
    if len(tail) != k or tail[-4:] != b"PAR1":
        raise OSError("not a parquet file (no PAR1 at its end), or cut short")
    n = int.from_bytes(tail[-8:-4], "little")
    if n + 8 > size:
        raise OSError("parquet footer length beyond the file: damaged")
    if n + 8 > k:
        f.seek(size - 8 - n)
        raw = f.read(n + 8 - k) + tail[:-8]
    else:
        raw = tail[-8 - n : -8]
    if len(raw) != n:
        raise OSError("parquet footer cut short")
    return raw, parse_footer(raw)


def parse_footer(raw):
    """A FileMetaData from a footer's bytes alone (the offsets in it still point into the real file)."""
    return pq.read_metadata(pa.BufferReader(b"PAR1" + raw + len(raw).to_bytes(4, "little") + b"PAR1"))


class FooterSpool:
    """The footers of the Hub parquet files being read, written once by the parent into a private
    temporary directory, for the workers: a FineWeb file's footer is ~5 KB per row group (~3 MB for a
    2 GB file), too much to send with every row-group task or for every worker to download again.
    Footers of files `keep` files behind the newest are deleted; a worker that still needs one reads
    it from the Hub (a fallback, never a failure)."""

    def __init__(self, keep=16):
        self.dir, self.keep = tempfile.mkdtemp(prefix="fineweb-footers-"), keep
        # removed at exit or when dropped, should nothing close it
        self.remove = weakref.finalize(self, shutil.rmtree, self.dir, ignore_errors=True)

    def put(self, i, raw):
        path = os.path.join(self.dir, f"{i:06d}.footer")
        with open(path + ".tmp", "wb") as f:
            f.write(raw)
        os.replace(path + ".tmp", path)
        old = os.path.join(self.dir, f"{i - self.keep:06d}.footer")
        if i >= self.keep and os.path.exists(old):
            os.unlink(old)
        return path

    def close(self):
        self.remove()


FOOTERS_KEPT = 4  # parsed footers a worker keeps, by file
_footers = OrderedDict()  # (in a worker) path -> FileMetaData


def footer_of(path, spooled, f, size):
    """The FileMetaData of data file `path` in a worker: parsed once per file, from the spool when it is
    still there, else from the file itself (open as f)."""
    md = _footers.get(path)
    if md is None:
        try:
            with open(spooled, "rb") as fs:
                md = parse_footer(fs.read())
        except (OSError, TypeError):
            md = read_footer(f, size)[1]
        _footers[path] = md
        while len(_footers) > FOOTERS_KEPT:
            _footers.popitem(last=False)
    _footers.move_to_end(path)
    return md


# What may lie between a row group's wanted column chunks and still be read with them in one request
# (FineWeb: text is the first column, token_count the eighth; the six between are ~3% of the bytes).
SPAN_SLACK = 1.25


def row_group_span(md, row_group, columns):
    """(start, end) of the one byte range that holds `columns` of row group `row_group`, or None when
    one request for them all would read much more than they are (SPAN_SLACK) or the footer lacks one."""
    rg, chunks = md.row_group(row_group), []
    for j in range(rg.num_columns):
        c = rg.column(j)
        if c.path_in_schema in columns:
            start = c.dictionary_page_offset if c.has_dictionary_page and c.dictionary_page_offset else c.data_page_offset
            chunks.append((start, start + c.total_compressed_size))
    if len(chunks) != len(columns) or not chunks:
        return None
    start, end = min(a for a, _ in chunks), max(b for _, b in chunks)
    return (start, end) if end - start <= SPAN_SLACK * sum(b - a for a, b in chunks) else None


class SpanFile(ReadOnlyFile):
    """An open file whose bytes [start, start + len(data)) are already in memory: pyarrow's reads in
    that range are served from it, any other read goes to the file (correct whatever the footer says)."""

    def __init__(self, f, size, start, data):
        self.f, self.size, self.start, self.data, self.pos = f, size, start, memoryview(data), 0

    def read(self, n=-1):
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        a = self.pos - self.start
        if 0 <= a and a + n <= len(self.data):
            out = self.data[a : a + n]
        else:
            self.f.seek(self.pos)
            out = self.f.read(n)
        self.pos += len(out)
        return out


def read_span(f, size, span):
    """`f` with the byte range `span` read in one request (a row group's wanted columns), or f itself."""
    if span is None:
        return f
    f.seek(span[0])
    data = f.read(span[1] - span[0])
    if len(data) != span[1] - span[0]:  # a body cut short: a data error (retry.is_data_error), retried
        raise OSError(f"read {len(data)} of {span[1] - span[0]} bytes at {span[0]}: cut short")
    return SpanFile(f, size, span[0], data)


@dataclass(frozen=True)
class HubRowGroup:
    """One row group of a Hub parquet file (from row `skip` on), read by the worker that tokenizes it:
    byte-range GETs at the pinned revision, with the file's size and footer from the parent (no API
    call for them), and the same logged, budgeted retry as the parent's reads, per task."""

    path: str  # hf://datasets/REPO@SHA/FILE, or a local mirror's file
    url: str  # its download URL (hubrange.resolve_url), None for a local file
    size: int
    footer: str  # the parent's spooled copy of the file's footer
    row_group: int
    skip: int
    columns: tuple
    dataset: str
    config: str
    sha: str
    retries: int
    retry_seconds: float

    def read(self, log):
        local = not self.path.startswith("hf://")
        if self.url:
            from .hubrange import RangeFile  # here, not at the top: huggingface_hub, not for --input runs
        retrier = Retrier(self.retries, self.retry_seconds, log)
        while True:
            try:
                with RangeFile(self.url, self.size) if self.url else open(self.path, "rb") as f:
                    md = footer_of(self.path, self.footer, f, self.size)
                    # the wanted columns in one request (pyarrow would make one per column chunk)
                    src = read_span(f, self.size, row_group_span(md, self.row_group, self.columns))
                    pf = pq.ParquetFile(src, metadata=md, pre_buffer=True)
                    # one worker per core: pyarrow's own thread pool only competes with the other workers
                    table = pf.read_row_group(self.row_group, columns=list(self.columns), use_threads=False)
                table = table.slice(self.skip)
                return table.column(0), (token_counts(table.column(1)) if len(self.columns) > 1 else None)
            except Exception as e:
                raise_if_user_error(e, self.dataset, self.config, self.sha, local, self.path)
                if not is_transient(e):
                    raise
                retrier.wait(e, f"streaming {os.path.basename(self.path)}")


class HubSource:
    """A dataset on the Hub (or a local directory laid out like one), read file by file.

    Its data files are listed once (datasets' own config resolution, at the pinned sha). Reading
    file by file gives three things: a unit of work for other machines (cluster.py), several files
    read at once while documents still come out in dataset order (`readers`), and a resume
    position that never touches a finished file.

    - Parquet (FineWeb and most Hub datasets): byte ranges at the pinned revision through
      huggingface_hub's HTTP client (hubrange.py: token, its retries) with pyarrow's ParquetFile, one
      row group in memory at a time.
      This process reads only each file's footer; every row group is a task (HubRowGroup) that the
      worker tokenizing it downloads and decodes itself, so the parent stays off the data path.
      Not datasets' streaming reader: its pyarrow scanner reads a file ahead without bound while
      the consumer is slower than the network (apache/arrow#39808; measured here: the parent held
      1.2 GB for one 369 MB file, 2.3 GB for two), and a FineWeb file is 2 GB. Position:
      Position(file, row), as for local parquet.
    - Other formats (JSON lines, ...): `datasets.load_dataset(<builder>, data_files=[file],
      streaming=True)`. Position: Position(file, state=IterableDataset.state_dict()).
    """

    def __init__(self, dataset, config, revision, text_column, retries=20, retry_seconds=1800, log=print,
                 readers=None):
        self.dataset, self.config, self.text_column, self.readers = dataset, config, text_column, readers
        self.local = os.path.isdir(dataset)
        self.retries, self.retry_seconds, self.log = retries if not self.local else 0, retry_seconds, log
        self.sha, self.has_token_count = None, None
        # the first contact: a short budget, and a line that says what to check (NO_CONTACT_HINT)
        self.sha = None if self.local else self._with_retries(
            lambda: self._resolve(revision), "revision lookup", first_contact=True)
        self.builder, self.files = self._with_retries(self._list_files, "listing the dataset's files")
        names, self.first_footer = self._with_retries(self._columns, "opening the dataset", path=self.files[0])
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

    def __getstate__(self):  # sent to other processes (cluster.py): without the log function and first footer
        return dict(self.__dict__, log=None, first_footer=None)

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.log = self.log or _log_stderr

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
        raise_if_user_error(e, self.dataset, self.config, self.sha, self.local, path)

    def _resolve(self, revision):
        from huggingface_hub import HfApi

        return HfApi().dataset_info(self.dataset, revision=revision or "main").sha

    def _list_files(self):
        """(builder module, the train split's files in dataset order), as load_dataset resolves them:
        for a plain parquet card without datasets (hubfiles.py), else by datasets itself."""
        from .hubfiles import train_files  # here, not at the top: huggingface_hub, not for --input runs

        files = None if self.local else train_files(self.dataset, self.config, self.sha)
        if files is not None:
            return "parquet", files
        datasets = _datasets()
        b = datasets.load_dataset_builder(self.dataset, name=self.config, revision=self.sha)
        files = (b.config.data_files or {}).get("train")
        if not files:
            raise UserError(f"{self.dataset} ({self.config}) has no train split files")
        return b.name, [str(f) for f in files]

    def _columns(self):
        """({column: pyarrow type, or None when datasets does not say} of the first data file, and for
        parquet its footer: (raw bytes, FileMetaData), which its reading then uses, or None)."""
        if self.builder == "parquet":
            with self._open_file(0) as f:
                footer = read_footer(f, file_size(f))
                schema = pq.ParquetFile(f, metadata=footer[1]).schema_arrow
            return {name: schema.field(name).type for name in schema.names}, footer
        ds = self._open(0)
        return ({name: None for name in ds.features} if ds.features else None), None

    def _open_file(self, i):
        return open_data_file(self.files[i])

    def _open(self, i, state=None):
        datasets = _datasets()
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

    def file_bytes(self, i):
        return os.path.getsize(self.files[i]) if self.local else None  # (the Hub is not asked before the read)

    def fetchers(self, nprocs):
        """Row groups each worker downloads at once: --readers spread over the workers (at least one,
        the next, while it tokenizes the one before), by default HUB_FETCHERS. Other formats are read
        by this process."""
        if self.builder != "parquet":
            return 1
        if not self.readers:
            return HUB_FETCHERS
        return max(1, -(-self.readers // max(1, nprocs)))

    def file_batches(self, i, pos=None):
        """The batches of file i, from position `pos` (one of its batches' start) on."""
        spool = self._spool()
        return spooled(self._file_batches(i, pos, spool), spool)

    def _spool(self):
        """A FooterSpool for one stream of batches (parquet), else None."""
        return FooterSpool() if self.builder == "parquet" else None

    def _file_batches(self, i, pos, spool):
        """As file_batches, the footers into `spool` (parquet). A transient failure re-opens the file where
        the last batch handed on ended."""
        retrier = Retrier(self.retries, self.retry_seconds, self.log)
        parquet = self.builder == "parquet"
        while True:
            try:
                read = self._parquet_batches(i, pos, spool) if parquet else self._datasets_batches(i, pos)
                for b, pos in read:
                    yield b
                    retrier.reset()
                return
            except Exception as e:
                self._raise_if_user_error(e, self.files[i])
                if not is_transient(e):
                    raise
                retrier.wait(e, f"streaming {os.path.basename(self.files[i])}")

    def _parquet_batches(self, i, pos, spool):
        """(batch, position after it) from position pos: Position(file, row). A row group is a task
        for a worker (HubRowGroup: this process reads only the footer); one too large for that is
        read here, batch by batch."""
        start_row = pos.offset if pos else 0
        with self._open_file(i) as f:
            size, url = file_size(f), getattr(f, "url", None)  # a Hub file's download URL (hubrange.RangeFile)
            if i == 0 and self.first_footer:  # read at start to check its columns; needed once (~3 MB)
                (raw, md), self.first_footer = self.first_footer, None
            else:
                raw, md = read_footer(f, size)
            pf = pq.ParquetFile(f, metadata=md)
            columns = self._file_columns(i, pf.schema_arrow)
            footer = spool.put(i, raw)
            row = 0
            for rg in range(pf.num_row_groups):
                meta = pf.metadata.row_group(rg)
                n = meta.num_rows
                if row + n <= start_row or n == 0:
                    row += n
                    continue
                skip = max(0, start_row - row)
                if meta.total_byte_size <= TASK_BYTES:
                    task = HubRowGroup(self.files[i], url, size, footer, rg, skip, tuple(columns), self.dataset,
                                       self.config, self.sha, self.retries, self.retry_seconds)
                    yield Batch(None, Position(i, row + skip), task=task), Position(i, row + n)
                else:
                    for b in row_group_batches(pf, i, rg, row, row + skip, columns):
                        yield b, Position(i, b.start.offset + len(b.texts))
                row += n

    def _file_columns(self, i, schema):
        """The columns to read from data file i: the first file's, checked against this one's schema (a
        dataset's files can differ); without token_count where this file has none, so that its documents
        go uncounted (the writer then records no sum for their shards, not a part of one)."""
        names = schema.names
        if self.text_column not in names:
            raise self._unlike_the_first(i, names)
        check_text_type(self.files[i], self.text_column, schema.field(self.text_column).type)
        counted = "token_count" in names and pa.types.is_integer(schema.field("token_count").type)
        return self.columns if counted else [self.text_column]

    def _unlike_the_first(self, i, names):
        """The one line for a later data file without the text column the first file has."""
        return UserError(f"{self.files[i]}: no column {self.text_column!r} (columns: {', '.join(names)}), "
                         f"unlike the first file of {self.dataset} ({self.config}): the files differ")

    def _datasets_batches(self, i, pos):
        """(batch, position after it) from position pos: Position(file, state=the dataset's state_dict)."""
        state = pos.state if pos else None
        ds = self._open(i, state)
        for b in ds.iter(batch_size=BATCH_DOCS):
            if self.text_column not in b:
                raise self._unlike_the_first(i, list(b))
            texts = [t or "" for t in b[self.text_column]]
            counts = b.get("token_count") if self.has_token_count else None  # (absent from this file: None)
            counts = None if counts is None or None in counts else counts  # a missing count: uncounted
            # state_dict() is live: copy it, it is where the next batch starts
            after = Position(i, None, False, copy.deepcopy(ds.state_dict()))
            yield Batch(texts, Position(i, None, False, state), False, counts), after
            state = after.state

    def batches(self, pos=None):
        if pos is not None and self.builder == "parquet" and pos.state is not None:
            raise UserError("this output was started by an older fineweb.py (another resume position); "
                            "rerun with --overwrite")
        first, spool = pos.file if pos else 0, self._spool()
        if first > 0:  # the first file's footer, read at start, is not needed
            self.first_footer = None
        streams = (self._file_batches(i, pos if i == first else None, spool) for i in range(first, len(self.files)))
        # parquet: the next file's footer is read while this one's row groups go out;
        # other formats: --readers files streamed at once by this process
        return spooled(read_ahead(streams, 2 if spool else self.readers or default_readers()), spool)


def spooled(stream, spool):
    """`stream`, owning `spool` (None: nothing to own) until it is closed."""
    return stream if spool is None else SpooledStream(stream, spool)


class SpooledStream:
    """An iterator of batches whose row-group tasks read their footers from `spool`, which it removes on
    close(), not when the batches run out: the workers are still reading the last row groups handed
    out then (a small input's every one), and would download their footers again. The pipeline closes
    it once every result is in."""

    def __init__(self, stream, spool):
        self.stream, self.spool = stream, spool

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.stream)

    def close(self):  # twice is harmless: a generator's close and the spool's are both idempotent
        try:
            self.stream.close()
        finally:
            self.spool.close()


# Row groups a worker downloads at once by default. One (the next, while it tokenizes one) left the cores
# idle for a third of a Hub run: a row group of FineWeb tokenizes in ~30-40 ms with fastokens, about a
# request's round trip through huggingface_hub's client and the server (bench/parent_cost.py, loopback Hub,
# 2 workers, measured with HfFileSystem's reads: 12.9 s with one, 10.0 s with two, 10.6 s with three).
# Costs one more row group in each worker's memory.
HUB_FETCHERS = 2


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
