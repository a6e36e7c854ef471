"""Stage 3: one token stream -> shard files, on one machine.

Tokens go straight into the current shard's temporary file as they arrive (no shard-sized buffer in
memory, no pause to write a whole shard when it fills), with a running sha256 and document count.
Writing and hashing run in a thread each (both release the GIL), a few batches behind: the main
thread only receives tokens from the workers and hands them on, so on a machine with many cores
the three cost a core each instead of their sum on one.
Where the stream is cut and what the manifest records come from shards.py (the same as the
multi-machine assembly). Every file is written under a temporary name, fsynced and renamed, and only
then entered in the manifest, so a crash at any moment leaves either a complete, recorded shard or
nothing (perhaps a temporary file, or the one shard renamed but not yet recorded, which the next run
removes: outdir.py).
"""
import errno
import hashlib
import os
import queue
import threading
import time
import weakref
from contextlib import contextmanager

import numpy as np

from .errors import UserError, signals_held
from .formats import header_for, megatron_index, sha256_file, whole_documents
from .manifest import create_file, fsync_dir, remove_file, temp_name
from .shardfile import ShardFile
from .shards import Cutter, make_entry, shard_files, shard_name


def append_tokens(f, tokens):
    """Append tokens (contiguous, of the shard's dtype) to the open shard file."""
    f.write(memoryview(tokens).cast("B"))


WRITE_AHEAD = 8  # batches queued for the writing thread at most (bounded memory)


def _remove_unfinished(f, tmp):
    """An unfinished shard: close and remove its temporary file."""
    try:
        f.close()
    except Exception:  # (an OSError, or anything: the file goes all the same)
        pass
    remove_file(tmp)


class ShardWriter:
    """Writes shards from len(manifest.shards) on and records each in the manifest when it is complete.

    The header of a full shard (n = shard_size) is written when a shard's file is opened and the
    sha256 runs over header + tokens as they arrive. Only a short last shard of a format with a
    header (npy, llmc: both hold the count) needs more: its header is rewritten in place with the
    real count and the file is hashed again (a sha256 cannot be changed at its start); that is one
    shard per run, read back (from the disk for what went past the page cache: shardfile.py)."""

    def __init__(self, manifest, dtype, boundary, on_shard=None):
        """boundary: the tokspec.Boundary around every document (its marker counts documents)."""
        st = manifest.settings
        self.manifest, self.prefix, self.fmt = manifest, st["prefix"], st["format"]
        self.boundary, self.eot = boundary, boundary.marker
        self.dtype = np.dtype(dtype)
        self.whole_docs = whole_documents(self.fmt)
        self.cutter = Cutter(st["shard_size"], first=len(manifest.shards), whole_docs=self.whole_docs)
        self.on_shard = on_shard or (lambda entry: None)
        self.head = header_for(self.fmt, self.dtype, st["shard_size"])  # a full shard's header
        self._new_shard()
        self._f = self._h = self._tmp = self._cleanup = None
        self._threads = []  # (thread, its queue of (file, sha256, tokens)): one writes, one hashes
        self._error, self._discard = None, False
        self.thread_cpu = {"write": 0.0, "hash": 0.0}  # CPU seconds of those threads, once they have stopped

    def _new_shard(self):
        self.n, self.docs, self.count_sum, self.backends = 0, 0, None, set()
        self.uncounted = False  # a document begun here came without the source's count: no sum for the shard
        self.doc_starts = []  # whole_docs: where each document begins in the shard (arrays of offsets)

    def add(self, enc, lo, hi):
        """Append tokens [lo, hi) of an Encoded batch."""
        tokens = enc.tokens
        # the source's per-document token counts line up with markers only when a marker opens each document
        counts = enc.counts if self.boundary.before else None
        d = int(np.count_nonzero(tokens[:lo] == self.eot)) if counts is not None and lo else 0
        starts = self.boundary.doc_starts(tokens, enc.first_continues) if self.whole_docs else None
        for piece in self.cutter.add(enc.start, lo, hi, starts):
            if piece.hi > piece.lo:  # (a whole-documents shard may end right where a batch begins)
                self._add_piece(enc, piece, counts, d, starts)
                if counts is not None:
                    d += self._last_k
            if piece.end is not None:
                self._close(piece.end)

    def _add_piece(self, enc, piece, counts, d, starts):
        tokens = enc.tokens
        chunk = np.ascontiguousarray(tokens[piece.lo : piece.hi], dtype=self.dtype)
        with self._writing():
            if self._f is None:
                self._open()
            self._append(chunk)
        whole = piece.lo == 0 and piece.hi == len(tokens)  # the worker counted those
        k = enc.docs if whole else int(np.count_nonzero(chunk == self.eot))
        self.docs += k
        self._last_k = k
        if counts is not None:  # the source's count of each document begun in this piece
            self.count_sum = (self.count_sum or 0) + int(sum(counts[d : d + k]))
        elif k:
            self.uncounted = True
        if starts is not None:
            inside = starts[(starts >= piece.lo) & (starts < piece.hi)]
            self.doc_starts.append(inside - piece.lo + self.n)
        self.n += len(chunk)
        self.backends.add(enc.backend)

    def finish(self):
        """The stream ended: record the short last shard, if the stream ended inside one."""
        if self.cutter.open_shard() is not None:
            self._close(None)
        self._stop_thread()

    def _close(self, end):
        index = len(self.manifest.shards)
        name, _ = shard_name(self.prefix, index, self.fmt)
        path = os.path.join(self.manifest.out_dir, name)
        with self._writing():
            self._drain()
            nbytes, sha = self._finish_file()
        index_file, idx_tmp = None, None
        if self.fmt == "megatron":  # its .idx: one sequence per document, written beside, renamed first
            idx_path = os.path.join(self.manifest.out_dir, shard_files(self.prefix, index, self.fmt)[0])
            idx_tmp = temp_name(idx_path)
            data = megatron_index(self.document_lengths(), self.dtype)
            with self._writing():
                try:
                    with create_file(idx_tmp) as f:  # complete and fsynced under its temporary name
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                except BaseException:
                    remove_file(idx_tmp)
                    raise
            index_file = (len(data), hashlib.sha256(data).hexdigest())
        entry = make_entry(self.prefix, self.fmt, index, self.n, self.docs, nbytes, sha,
                           None if self.uncounted else self.count_sum,
                           self.backends, end, index_file)
        with signals_held(), self._writing():  # in place and recorded, or neither: Ctrl-C waits for both
            self._f = None
            if idx_tmp is not None:
                os.replace(idx_tmp, idx_path)
            os.replace(self._tmp, path)
            self._cleanup.detach()
            fsync_dir(self.manifest.out_dir)
            self.manifest.shards.append(entry)
            self.manifest.save()
        self._new_shard()
        self.on_shard(entry)

    def document_lengths(self):
        """Tokens of each document of the shard being closed (whole_docs): it begins with a document,
        whether or not a marker stands at its first token (an after-policy's first document has none)."""
        starts = np.concatenate(self.doc_starts) if self.doc_starts else np.empty(0, dtype=np.intp)
        if self.n and (not len(starts) or starts[0] != 0):
            starts = np.concatenate([[0], starts])
        return np.diff(np.append(starts, self.n))

    def _open(self):
        name, _ = shard_name(self.prefix, len(self.manifest.shards), self.fmt)
        self._tmp = temp_name(os.path.join(self.manifest.out_dir, name))
        with signals_held():  # (a Ctrl-C between the file's creation and its clean-up's would leave it)
            self._f = ShardFile(self._tmp)  # past the page cache where the filesystem allows (shardfile.py)
            # also removed if the run stops elsewhere (an exception, Ctrl-C) while a shard is open
            self._cleanup = weakref.finalize(self, _remove_unfinished, self._f, self._tmp)
        self._f.write(self.head)
        self._h = hashlib.sha256(self.head)

    def _finish_file(self):
        """Complete the temporary file (final header, flush, fsync, close); its (bytes, sha256)."""
        f, size = self._f, self.n * self.dtype.itemsize
        head = header_for(self.fmt, self.dtype, self.n)
        if head == self.head:  # a full shard, or no header (bin): the running sha256 is the file's
            sha = self._h.hexdigest()
        else:  # a short last shard: its header holds the real count
            # same length: llmc's is fixed, np.save's is padded for a 21-digit count since numpy 1.24
            assert len(head) == len(self.head), "npy header length changed: install numpy >= 1.24"
            f.finish(head)
            return len(head) + size, sha256_file(self._tmp)
        f.finish()
        return len(head) + size, sha

    # --- the writing and hashing threads ---
    def _append(self, chunk):
        if self._error is not None:
            raise self._error
        if not self._threads:
            for stage in (self._write, self._hash):
                q = queue.Queue(maxsize=WRITE_AHEAD)
                t = threading.Thread(target=self._stage_loop, args=(stage, q), daemon=True,
                                     name=f"fineweb-shard-{stage.__name__.strip('_')}")
                t.start()
                self._threads.append((t, q))
        for _, q in self._threads:
            q.put((self._f, self._h, chunk))

    @staticmethod
    def _write(f, h, chunk):
        append_tokens(f, chunk)

    @staticmethod
    def _hash(f, h, chunk):
        h.update(memoryview(chunk).cast("B"))

    def _stage_loop(self, stage, q):
        """One thread per stage, in batch order: the file's bytes, or its sha256 (both release the GIL)."""
        t0 = time.thread_time()
        while (item := q.get()) is not None:
            try:
                if self._error is None and not self._discard:
                    stage(*item)
            except BaseException as e:  # raised in the main thread at its next step
                self._error = e
            finally:
                q.task_done()
        q.task_done()
        self.thread_cpu[stage.__name__.strip("_")] += time.thread_time() - t0

    def _stop_thread(self):
        for t, q in self._threads:
            q.put(None)
        for t, q in self._threads:
            t.join()
        self._threads = []

    def _drain(self):
        """Wait until every queued batch is in the file and the hash; raise what went wrong there."""
        for _, q in self._threads:
            q.join()
        if self._error is not None:
            raise self._error

    def abandon(self):
        """The run stops: the shard being written is removed (nothing half-written stays)."""
        self._discard = True  # what is still queued is dropped, not written
        self._stop_thread()
        self._discard = False
        if self._cleanup is not None:
            self._cleanup()
        self._f = None

    @contextmanager
    def _writing(self):
        """Around each step on a shard file: on any failure its temporary file goes, and a full
        disk becomes the one-line error."""
        try:
            yield
        except BaseException as e:
            self.abandon()
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                name, _ = shard_name(self.prefix, len(self.manifest.shards), self.fmt)
                raise UserError(
                    f"disk full while writing {os.path.join(self.manifest.out_dir, name)}; free space and "
                    f"rerun the same command to resume (kept {len(self.manifest.shards)} complete shards)"
                ) from None
            raise
