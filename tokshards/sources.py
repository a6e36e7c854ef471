"""Stage 1: where documents come from.

A source yields Batch values in dataset order. Each batch carries the Position it starts at
(positions.py); opening the source again at that position yields that batch's documents and
everything after them again. That is the whole resume contract.

- LocalSource: .parquet, .jsonl/.json (also .gz/.zst) and plain text files, read in order; local
  files or objects in a bucket (objects.py: a URL, read with ranged GETs).
- HubSource (hub.py): a Hugging Face dataset, file by file.

A local input is identified by its path, size, modification time and a hash of sampled blocks of
its content (fingerprint()), an object by its URL, size, ETag and modification time: a resumed run
refuses an input that changed in between.
"""
import copy
import glob
import gzip
import hashlib
import io
import json
import os
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from . import objects
from .errors import UserError
from .objects import input_size, open_input
from .outdir import LOCK
from .positions import Position
from .storage import is_url
from .textfile import GiantDocument, iter_pieces, plan_ranges

BATCH_DOCS = 256  # documents per batch: big enough to amortise IPC, small enough to keep order cheap
BATCH_BYTES = 4 << 20

PARQUET = (".parquet",)
JSONL = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
TEXT = (".txt", ".text", ".md", ".txt.gz", ".txt.zst")


@dataclass(frozen=True)
class Batch:
    texts: object  # a list of str, or an Arrow string column; None when `task` says where a worker reads them
    start: Position  # of the first document (or fragment) of the batch
    first_continues: bool = False  # texts[0] continues a document begun in an earlier batch
    last_continues: bool = False  # the next batch continues texts[-1] (no ids after it: encoders.frame)
    token_counts: Optional[list] = None  # the source's own token_count column, when it has one
    task: object = None  # e.g. a ParquetTask: the worker reads, so text never crosses the process pipe


@dataclass(frozen=True)
class ParquetTask:
    """One row group of a parquet file (from row `skip` on), read by whichever process tokenizes it."""

    path: str
    row_group: int
    skip: int
    text_column: str
    with_counts: bool

    def read(self, log=None):
        cols = [self.text_column] + (["token_count"] if self.with_counts else [])
        try:
            with parquet_file(self.path) as pf:
                # one worker per core: pyarrow's own thread pool only competes with the other workers
                table = pf.read_row_group(self.row_group, columns=cols, use_threads=False).slice(self.skip)
        except UserError:  # the store failed (objects.py)
            raise
        except Exception as e:  # flipped bytes, a truncated file: said at once, with the file's name
            raise UserError(corrupt(self.path, f"row group {self.row_group}", e)) from None
        # the Arrow text column: pool.encode makes the strings (null text: an empty document)
        return table.column(0), (token_counts(table.column(1)) if self.with_counts else None)


class ReadOnlyFile:
    """What pyarrow needs of a Python file it reads at random (hub.SpanFile, hubrange.RangeFile): a size,
    a position, seek and tell."""

    closed = False

    def seek(self, pos, whence=0):
        pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.size + pos
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self.pos = pos
        return self.pos

    def tell(self):
        return self.pos

    def readable(self):
        return True

    def seekable(self):
        return True


@contextmanager
def parquet_file(path):
    """pyarrow's ParquetFile of a local file (its own reader), or of an object through ranged reads."""
    if not is_url(path):
        yield pq.ParquetFile(path)
        return
    with open_input(path) as f:
        yield pq.ParquetFile(f)


def check_text_type(path, column, typ):
    """The text column must hold text (a string column; null is an empty document)."""
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)):
        raise UserError(f"{path}: column {column!r} holds {typ}, not text; pick the text column with --text-column")


def token_counts(column):
    """The source's token_count column as a list of ints, or None when a count is missing (a null): the
    batch then goes uncounted, and its shard records no sum rather than part of one (writer.py).
    (Nothing that makes a pa.scalar, as fill_null does: that imports pandas, ~0.2 CPU s per worker.)"""
    return None if column.null_count else column.to_pylist()


def corrupt(path, where, e):
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{path}: cannot read {where} ({type(e).__name__}: {first}); the file looks corrupt: replace it"


@dataclass(frozen=True)
class TextTask:
    """A byte range of a plain-text file, cut by plan_ranges: whole documents, or a giant one's piece."""

    path: str
    start: int
    end: int
    cont: bool
    end_in_doc: bool
    sep: str

    def read(self, log=None):
        pieces = iter_pieces(self.path, self.start, self.cont, self.sep, end=self.end, end_in_doc=self.end_in_doc,
                             max_doc_bytes=1 << 62)  # the range is already bounded: never cut again
        try:
            return [text for _, text, _ in pieces], None
        except ValueError as e:  # invalid UTF-8: a one-line error from the worker
            raise UserError(str(e)) from None


# A row group larger than this (uncompressed) is read by the parent in batches instead, so that
# one task never holds more than this much text in a worker.
TASK_BYTES = 64 << 20


def batched(items, start_of):
    """Group (position, text, continues, token_count) items into Batches of ~BATCH_DOCS docs."""
    texts, counts, nbytes, start, first_cont = [], [], 0, None, False
    for pos, text, cont, count in items:
        if texts and (cont or len(texts) >= BATCH_DOCS or nbytes >= BATCH_BYTES):
            yield Batch(texts, start, first_cont, counts if counts[0] is not None else None)
            texts, counts, nbytes = [], [], 0
        if not texts:
            start, first_cont = start_of(pos, cont), cont
        texts.append(text)
        counts.append(count)
        nbytes += len(text)
    if texts:
        yield Batch(texts, start, first_cont, counts if counts[0] is not None else None)


def row_group_batches(pf, i, rg, first_row, start_row, columns):
    """Batches of ~BATCH_DOCS documents of row group rg (its first row is first_row in the file),
    from row start_row on. Only this row group is in memory: pyarrow's dataset scanner would read
    a slowly consumed file ahead without bound (apache/arrow#39808), ParquetFile does not."""
    at = first_row
    for b in pf.iter_batches(batch_size=BATCH_DOCS, row_groups=[rg], columns=columns, use_threads=False):
        lo, at = max(0, start_row - at), at + len(b)
        if lo < len(b):
            b = b.slice(lo)
            counts = token_counts(b.column(1)) if len(columns) > 1 else None
            # the Arrow column itself: pickling it to a worker is ~4x cheaper than building and
            # pickling 256 Python strings, and the worker makes the strings (tokenizer.encode)
            yield Batch(b.column(0), Position(i, at - len(b)), token_counts=counts)


def expand_inputs(paths, exclude=None):
    """Files in the order given; a directory or glob expands in sorted path order, a URL's prefix in
    sorted key order (objects.expand). Nothing under `exclude` (the output directory, when it lies
    inside an input directory) is ever an input."""
    skip = os.path.realpath(exclude) if exclude and not is_url(exclude) else None

    def inside(f):
        return skip is not None and os.path.commonpath([skip, os.path.realpath(f)]) == skip

    def walk(top):  # not into another output directory of this tool (its lock file says so)
        for d, dirs, fs in os.walk(top):
            if d != top and LOCK in fs:
                dirs[:] = []
                continue
            yield from (os.path.join(d, f) for f in fs if _kind(f) and not f.startswith("."))

    files = []
    for p in paths:
        if is_url(p):
            files += objects.expand(p, lambda name: _kind(name) and not name.startswith("."), exclude)
        elif os.path.isdir(p):
            found = sorted(walk(p))
            found = [f for f in found if not inside(f)]
            if not found:
                raise UserError(f"--input {p}: no .parquet, .jsonl/.json or .txt files in this directory")
            files += found
        elif os.path.isfile(p):
            if inside(p):
                raise UserError(f"--input {p} is inside the output directory {exclude}; give another --local-dir")
            files.append(p)
        else:
            matches = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m) and not inside(m))
            if not matches:
                raise UserError(f"--input {p}: no such file, directory or glob match")
            files += matches
    return files  # an unknown ending is read as plain text: what a user with "corpus.dat" wants


def _kind(name):
    n = name.lower()
    if n.endswith(PARQUET):
        return "parquet"
    if n.endswith(JSONL):
        return "jsonl"
    if n.endswith(TEXT):
        return "text"
    return None


SAMPLE_EDGE, SAMPLE_BLOCK, SAMPLE_BLOCKS = 64 << 10, 4 << 10, 32


def fingerprint(path):
    """What identifies an input file between runs: path, size, modification time (ns) and the sha256 of
    sampled blocks (the first and last 64 KiB and 32 blocks of 4 KiB spread evenly; the whole file if
    it is smaller). Costs ~200 KiB of reading per file, whatever its size. An edit that keeps the size
    is caught by the time (an editor, a re-download) or by the sample (a copy that kept the time).
    An object (a URL): objects.fingerprint, the store's size, ETag and time."""
    if is_url(path):
        return objects.fingerprint(path)
    st = os.stat(path)
    h = hashlib.sha256()
    size = st.st_size
    with open(path, "rb") as f:
        if size <= 2 * SAMPLE_EDGE + SAMPLE_BLOCKS * SAMPLE_BLOCK:
            h.update(f.read())
        else:
            step = (size - 2 * SAMPLE_EDGE) // (SAMPLE_BLOCKS + 1)
            offsets = [0] + [SAMPLE_EDGE + step * (k + 1) for k in range(SAMPLE_BLOCKS)] + [size - SAMPLE_EDGE]
            for off, n in zip(offsets, [SAMPLE_EDGE] + [SAMPLE_BLOCK] * SAMPLE_BLOCKS + [SAMPLE_EDGE]):
                f.seek(off)
                h.update(f.read(n))
    return {"path": os.path.abspath(path), "bytes": size, "mtime_ns": st.st_mtime_ns, "sample_sha256": h.hexdigest()}


@contextmanager
def _open_binary(path):
    """A local file or an object, decompressed by its ending."""
    n = path.lower()
    with open_input(path) as raw:
        if n.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f
        elif n.endswith(".zst"):
            import zstandard

            yield io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=False))
        else:
            yield raw


# what a damaged or mislabelled .gz / .zst raises while it is being decompressed
def _decompress_errors():
    import zstandard

    return (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError)


def _skip(f, n):
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            return
        n -= len(chunk)


class LocalSource:
    """Local files or objects in a bucket (URLs: objects.py), read in the order given.
    Positions: Position(file index, row or byte offset, cont)."""

    def __init__(self, files, text_column="text", doc_separator="\n\n", cut_rule=None, log=None):
        """cut_rule: the tokenizer's (tokspec.TokenizerSpec.cut_rule); None: a giant plain-text document
        stops the run instead of being cut. log: for the one warning about a giant document."""
        self.files = files
        self.text_column = text_column
        self.doc_separator = doc_separator
        self.cut = cut_rule
        self.log = log or (lambda msg: None)
        self.warned_giant = False
        self._described = None
        columns, checked_jsonl = {}, False
        for f in files:  # fail at once, not hours in, on a bad column
            if (_kind(f) or "text") == "parquet":
                schema = self._parquet_schema(f)
                names = columns[f] = schema.names
                if text_column not in names:
                    raise UserError(
                        f"{f}: no column {text_column!r} (columns: {', '.join(names)}); pick one with --text-column"
                    )
                check_text_type(f, text_column, schema.field(text_column).type)
                if "token_count" in names and not pa.types.is_integer(schema.field("token_count").type):
                    names = columns[f] = [n for n in names if n != "token_count"]  # not a count: not a cross-check
            elif _kind(f) == "jsonl" and not checked_jsonl:
                next(self._jsonl(f, 0), None)  # the first line shows a wrong --text-column now
                checked_jsonl = True
        # the source's token_count is kept only when every file has it (all parquet)
        self.has_token_count = bool(files) and all(f in columns and "token_count" in columns[f] for f in files)

    def __getstate__(self):  # sent to other processes (Ray tasks): without the log function
        return dict(self.__dict__, log=None)

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.log = self.log or (lambda msg: None)

    @staticmethod
    def _parquet_schema(path):
        try:
            with parquet_file(path) as pf:
                return pf.schema_arrow
        except UserError:  # the store failed (objects.py)
            raise
        except Exception as e:
            raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:200]})") from None

    def describe(self):
        """Each input's fingerprint, taken once per run (at its start: what the run reads)."""
        if self._described is None:
            self._described = [fingerprint(f) for f in self.files]
        return self._described

    def with_absolute_paths(self):
        """The same source with absolute paths (for processes that run elsewhere: Ray workers)."""
        other = copy.copy(self)
        other.files = [f if is_url(f) else os.path.abspath(f) for f in self.files]
        other._described = None
        return other

    def file_bytes(self, i):
        return input_size(self.files[i])

    def fetchers(self, nprocs):
        """Tasks each worker reads at once: one, the next, in a thread while it tokenizes the one before
        (a cold disk or a network filesystem: the read overlaps the tokenizing)."""
        return 1

    def batches(self, pos=None):
        first = pos.file if pos else 0
        for i in range(first, len(self.files)):
            yield from self.file_batches(i, pos if i == first else None)

    def file_batches(self, i, pos=None):
        """The batches of file i, from position `pos` (one of its batches' start) on."""
        offset, cont = (pos.offset, pos.cont) if pos else (0, False)
        path = self.files[i]
        kind = _kind(path) or "text"
        if kind == "parquet":
            yield from self._parquet(i, path, offset)
        elif kind == "jsonl":
            items = ((off, text, False, None) for off, text in self._jsonl(path, offset))
            yield from batched(items, lambda off, c: Position(i, off, c))
        else:
            yield from self._text(i, path, offset, cont)

    def _parquet(self, i, path, start_row):
        """One task per row group; a huge row group is read here, batch by batch."""
        with ExitStack() as opened:
            try:
                pf = opened.enter_context(parquet_file(path))
            except UserError:  # the store failed (objects.py)
                raise
            except Exception as e:
                raise UserError(corrupt(path, "its footer", e)) from None
            yield from self._row_groups(i, path, pf, start_row)

    def _row_groups(self, i, path, pf, start_row):
        cols = [self.text_column] + (["token_count"] if self.has_token_count else [])
        row = 0
        for rg in range(pf.num_row_groups):
            meta = pf.metadata.row_group(rg)
            n = meta.num_rows
            if row + n <= start_row or n == 0:
                row += n  # whole row group before the resume point: not even read
                continue
            skip = max(0, start_row - row)
            if meta.total_byte_size <= TASK_BYTES:
                task = ParquetTask(path, rg, skip, self.text_column, self.has_token_count)
                yield Batch(None, Position(i, row + skip), task=task)
            else:
                try:
                    yield from row_group_batches(pf, i, rg, row, row + skip, cols)
                except UserError:
                    raise
                except Exception as e:
                    raise UserError(corrupt(path, f"row group {rg}", e)) from None
            row += n

    def _jsonl(self, path, start):
        try:
            yield from self._jsonl_lines(path, start)
        except _decompress_errors() as e:
            raise UserError(f"{path}: cannot decompress it ({type(e).__name__}: {e}); the file is damaged or "
                            "not what its name says") from None

    def _jsonl_lines(self, path, start):
        with _open_binary(path) as f:
            if path.lower().endswith((".gz", ".zst")):
                _skip(f, start)  # compressed: decompress and drop what was already done
            else:
                f.seek(start)
            off = start
            for line in f:
                here = off
                off += len(line)
                if not line.strip():
                    continue
                if here == 0 and line.lstrip()[:1] == b"[":
                    raise UserError(f"{path}: a JSON array, not JSON lines; convert it to one object per line")
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError) as e:
                    raise UserError(f"{path}: invalid JSON in the line at byte {here} ({str(e)[:200]})") from None
                if not isinstance(obj, dict) or self.text_column not in obj:
                    keys = ", ".join(obj) if isinstance(obj, dict) else "not a JSON object"
                    raise UserError(
                        f"{path}: the line at byte {here} has no field {self.text_column!r} ({keys}); "
                        "pick the field with --text-column"
                    )
                text = obj[self.text_column]
                if text is not None and not isinstance(text, str):  # null: an empty document, as in parquet
                    raise UserError(f"{path}: in the line at byte {here}, {self.text_column!r} is "
                                    f"{type(text).__name__} {json.dumps(text)[:40]}, not text; fix the line or pick "
                                    "the text field with --text-column")
                yield here, text or ""

    def _text(self, i, path, offset, cont):
        """Byte ranges of whole documents; workers read and split them (no text through the pipe)."""
        if path.lower().endswith((".gz", ".zst")):
            raise UserError(f"{path}: compressed plain text is not supported; decompress it first")
        try:
            for start, end, c, in_doc in plan_ranges(path, offset, cont, self.doc_separator, cut=self.cut,
                                                      on_giant=self._giant):
                task = TextTask(path, start, end, c, in_doc, self.doc_separator)
                yield Batch(None, Position(i, start, c), first_continues=c, last_continues=in_doc, task=task)
        except GiantDocument as e:
            raise UserError(
                f"{e}: with this tokenizer a document is never cut (no cut rule is proven exact for it), so "
                f"it would be held whole in memory; if it is not one document, set --doc-separator "
                f"(now {self.doc_separator!r})") from None

    def _giant(self, path, offset, limit):
        if not self.warned_giant:
            self.warned_giant = True
            self.log(f"warning: {path}: the document at byte {offset} is larger than {limit:,} bytes; it is "
                     f"tokenized in exactly cut pieces, but it usually means that --doc-separator "
                     f"{self.doc_separator!r} is not what separates the documents")
