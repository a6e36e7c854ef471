"""The output directory: the one owner of its state, its lock, and every file the tool deletes there.

States (OutputDir.state):
  empty    nothing of a run here (other files may be; none is named like a shard of the prefix)
  foreign  files named like shards of the prefix, but no manifest of this tool: someone else's
           (build-nanogpt and llm.c write exactly our default names); refused, never cleaned
  run      a manifest of this tool: a run in progress, complete, or a conversion in progress
  parts    a multi-machine run in progress (parts/job.json, no manifest yet)

The lock: `.fineweb.lock` in the directory, held with flock for the whole command (exclusive for a
run, assemble and merge; shared by the ranks of a multi-machine run, which work side by side). A
second command is refused in one line naming the holder's host and pid; a lock left by a dead
process is free (the kernel released it when it died). The file itself stays (empty).

What may be deleted, and nothing else, ever:
- files a manifest of this tool lists (a redone shard, a short last shard being rewritten, all of
  them with --overwrite): names are checked against this tool's naming before use (manifest.py);
- the shard renamed into place just before a crash, before the manifest listed it: only the name
  the next shard of this run gets;
- this tool's temporary files (`.NAME.tmp`, `.NAME.TAG.tmp` of the names above), and in parts/
  the files parts.py and assemble.py write there, by name;
- during an in-place conversion, a shard's old-format file once the manifest lists its new one.
"""
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass
from typing import Optional

from .errors import UserError
from .formats import check_file, sha256_file
from .manifest import NAME as MANIFEST, Manifest, create_file, fsync_dir, remove_file
from .shards import shard_files, shard_name, shard_pattern
from .storage import check_output_store, files_at, is_url, open_fs

LOCK = ".fineweb.lock"
PARTS = "parts"
MERGED = "merge.json"  # the train.bin / val.bin `merge` wrote here (merge.py)
EMPTY, FOREIGN, RUN, PARTS_STATE = "empty", "foreign", "run", "parts"
PART_FILE = re.compile(r"^\d{6}\.(tokens|counts|json|json\.used)$")
PARTS_FIXED = ("job.json", "assembled.json")


def recorded(path, key):
    """What the manifest (or, for ranks at work, parts/job.json) in `path` recorded under `key`, or None."""
    try:
        m = Manifest.load(path)
        if m is not None:
            return getattr(m, key)
        with open(os.path.join(path, PARTS, "job.json")) as f:
            return json.load(f).get(key)
    except (UserError, OSError, ValueError, AttributeError):
        return None


def part_names(i):
    """(tokens, counts, record) of source file i's part, relative to the output directory: the names
    parts.py writes, assemble.py reads."""
    base = f"{PARTS}/{i:06d}"
    return base + ".tokens", base + ".counts", base + ".json"


def part_paths(out_dir, i):
    """part_names(i) in a local output directory."""
    return tuple(os.path.join(out_dir, n) for n in part_names(i))


@dataclass(frozen=True)
class DirState:
    kind: str
    manifest: Optional[Manifest] = None
    foreign: tuple = ()  # names of shard-like files this tool did not write


def check_path(path, flag="--local-dir"):
    """A local directory path or a bucket URL whose package is installed; else a one-line refusal (an
    existing file, a URL of an unknown protocol or without its package)."""
    if is_url(path):
        check_output_store(path)  # a store the lock works in (s3://, az://),
        open_fs(path)  # whose package is installed; the URL names a prefix in a bucket
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a directory; give a directory")


def _temp_of(name):
    """The names a temporary file `.NAME.tmp` or `.NAME.HOST.PID.tmp` (manifest.temp_name with the tag
    of a process) may stand for."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return []
    inner = name[1:-4]
    m = re.fullmatch(r"(.+)\.[^/]+\.\d+", inner)
    return [inner] + ([m.group(1)] if m else [])


def _is_ours_temp(name, prefix):
    """A temporary file of this tool in the output directory."""
    pattern = shard_pattern(prefix)
    return any(b in (MANIFEST, MERGED, "train.bin", "val.bin") or pattern.match(b) for b in _temp_of(name))


def _is_ours_part_temp(name):
    """A temporary file of this tool in parts/."""
    return any(b in PARTS_FIXED or PART_FILE.match(b) for b in _temp_of(name))


class OutputDir:
    """An output directory, opened for one command. Use as a context manager: the lock is held inside."""

    MERGE_WRITES_HERE = True  # `merge` writes train.bin/val.bin and merge.json here (never into a bucket)

    def __init__(self, path, prefix=None, shared=False, create=True, what="run"):
        check_path(path)
        self.path, self.prefix, self.shared, self.create, self.what = str(path), prefix, shared, create, what
        self._lock_file = None
        self._made_dir = self._made_lock = False

    # --- the lock ---
    def __enter__(self):
        path = os.path.join(self.path, LOCK)
        try:
            if self.create and not os.path.isdir(self.path):
                os.makedirs(self.path)
                self._made_dir = True
            while True:
                self._made_lock = not os.path.lexists(path)
                # never through a symlink planted at the name: that would truncate its target
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
                f = os.fdopen(fd, "r+")
                if self._take(f) and os.path.lexists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break  # locked, and still the file at that name (not one a finishing command removed)
                f.close()
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UserError(f"{path} is a symlink, not this tool's lock file; remove it and rerun") from None
            raise UserError(os_error_line(e, self.path)) from None
        if not self.shared:
            f.seek(0)
            f.truncate()
            f.write(f"fineweb.py {self.what} on host {socket.gethostname()}, pid {os.getpid()}\n")
            f.flush()
        self._lock_file = f
        return self

    def _take(self, f):
        try:
            fcntl.flock(f.fileno(), (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            who = f"by {holder}" if holder else "by the ranks of a multi-machine run"
            raise UserError(f"{self.path} is in use {who}; wait for it to finish or stop it, "
                            "or use another --local-dir") from None

    def __exit__(self, *exc):
        f, self._lock_file = self._lock_file, None
        if f is None:
            return
        try:
            if not self.shared:
                f.truncate(0)
            # a command that wrote nothing (refused, or found nothing to do in a new directory) leaves
            # the directory as it found it (another command that opened the file meanwhile sees it
            # gone after taking the lock, and takes the new one: the check in __enter__)
            if self._made_lock and not self.shared and not any(
                    os.path.exists(os.path.join(self.path, n)) for n in (MANIFEST, PARTS)):
                os.unlink(os.path.join(self.path, LOCK))
                if self._made_dir:
                    os.rmdir(self.path)
        except OSError:
            pass
        finally:
            f.close()  # releases the lock

    @staticmethod
    def holder(path):
        """Who holds the lock of `path` now ("" for nobody), without taking it: for verify."""
        try:
            with open(os.path.join(path, LOCK)) as f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                    return ""
                except BlockingIOError:
                    return f.read().strip() or "the ranks of a multi-machine run"
        except OSError:
            return ""

    # --- the storage: what a bucket (bucket.BucketDir) does its own way; the rules below are the same ---
    def _exists(self):
        return os.path.isdir(self.path)

    def _names(self, sub=""):
        """The names in the directory (or in its subdirectory `sub`)."""
        d = os.path.join(self.path, sub)
        return os.listdir(d) if os.path.isdir(d) else []

    def _has(self, name):
        return os.path.exists(os.path.join(self.path, name))

    def _remove(self, name):
        _unlink(os.path.join(self.path, name))

    def _remove_dir(self, sub):
        try:
            os.rmdir(os.path.join(self.path, sub))
        except OSError:
            pass  # something else is in it: it stays

    def _mark(self, name):
        """An empty marker file, on disk before anything that relies on it happens."""
        with create_file(os.path.join(self.path, name)) as f:
            os.fsync(f.fileno())
        fsync_dir(os.path.dirname(os.path.join(self.path, name)))

    def _sync(self):
        fsync_dir(self.path)

    # --- the state ---
    def state(self):
        if not self._exists():
            return DirState(EMPTY)
        m = Manifest.load(self.path)
        if m is not None:
            return DirState(RUN, m)
        if self._has(f"{PARTS}/job.json"):
            return DirState(PARTS_STATE)
        foreign = tuple(sorted(f for f in self._names() if self.prefix and shard_pattern(self.prefix).match(f)))
        return DirState(FOREIGN, foreign=foreign) if foreign else DirState(EMPTY)

    def refuse_foreign(self, st):
        raise UserError(foreign_line(self.label, st.foreign))

    @property
    def label(self):
        """How messages name it (a bucket's is its URL)."""
        return self.path

    def check_held(self):
        """The lock is this command's for as long as it runs (the kernel's flock; a bucket's may be taken)."""

    def publish(self, manifest):
        """The manifest and the shards it lists are where readers find them already (a bucket uploads here)."""

    # --- what it may delete ---
    def remove_temp_files(self):
        """Temporary files this tool left (a crash, a kill): its own names only. Only with the lock held
        exclusively, so that no other process of ours is writing them."""
        assert not self.shared
        for name in os.listdir(self.path):
            if _is_ours_temp(name, self.prefix or "\0"):
                _unlink(os.path.join(self.path, name))
        parts = os.path.join(self.path, PARTS)
        if os.path.isdir(parts):
            for name in os.listdir(parts):
                if _is_ours_part_temp(name):
                    _unlink(os.path.join(parts, name))

    def remove_shards(self, manifest, indices):
        """Delete the files of these listed shards, last first: a crash in between leaves a manifest
        that lists files that are gone, which the next run's check on disk finds and redoes."""
        for i in sorted(indices, reverse=True):
            for name in reversed(manifest.shards[i].files):  # a megatron .bin before its .idx
                self._remove(name)

    def remove_unrecorded_next(self, manifest):
        """The shard renamed into place just before a crash, never entered in the manifest: the one
        name the run would have recorded next. The rerun writes it again, or (with a smaller
        --max-tokens) never does; either way it must not stay, or a loader that lists the directory reads it."""
        st = manifest.settings
        for name in reversed(shard_files(st["prefix"], len(manifest.shards), st["format"])):
            self._remove(name)

    def remove_run(self, manifest):
        """--overwrite: every file this run's manifest accounts for, then the manifest itself."""
        self.remove_temp_files()
        self.remove_shards(manifest, range(len(manifest.shards)))
        if manifest.converting:  # files of a conversion in place not yet recorded
            for e in manifest.shards:
                self._remove(shard_name(manifest.settings["prefix"], e.index, manifest.converting["to"])[0])
        self.remove_unrecorded_next(manifest)
        if self.MERGE_WRITES_HERE:
            for name in read_merged(self.path):  # made from the shards that just went (if still as merge left it)
                if merged_by_us(self.path, name):
                    self._remove(name)
            self._remove(MERGED)
        self._remove(MANIFEST)
        self._sync()

    def remove_parts(self, of=None):
        """parts/ and the files parts.py and assemble.py write in it, by name; anything else stays.
        of: the finished run's manifest, when the parts go because that run is complete: then only if
        parts/job.json says they were that run's (same settings), else they are left alone."""
        names = self._names(PARTS)
        if not names and not self._has(PARTS):
            return
        if of is not None:
            try:
                plan = json.loads(files_at(self.label).read(f"{PARTS}/job.json") or b"null")
                if not isinstance(plan, dict) or plan.get("settings") != of.settings:
                    return
            except ValueError:
                return
        for name in names:
            if name in PARTS_FIXED or PART_FILE.match(name) or _is_ours_part_temp(name):
                self._remove(f"{PARTS}/{name}")
        self._remove_dir(PARTS)

    def release_part(self, i):
        """A part whose tokens every shard that needs them has recorded: its record stays (marked
        used, fsynced first) for a rerun's plan; its tokens go."""
        tokens, counts, record = part_names(i)
        self._mark(record + ".used")
        self._remove(tokens)
        self._remove(counts)

    # --- what is on disk ---
    def check_shards(self, manifest):
        """(n, problem): the first n listed shards are on disk as the manifest says, and what is wrong
        with the next one ("" if none). Cheap: existence, size, header; the full sha256 only for a file
        changed after the manifest was written (its modification time), which the cheap check cannot judge."""
        try:
            since = os.stat(manifest.path).st_mtime_ns
        except FileNotFoundError:
            since = None
        st = manifest.settings
        for i, e in enumerate(manifest.shards):
            path = os.path.join(self.path, e.file)
            problem = check_file(path, manifest.shard_format(e), st["dtype"], e.bytes, e.tokens, e.index_bytes)
            if not problem and since is not None and os.stat(path).st_mtime_ns > since and sha256_file(path) != e.sha256:
                problem = f"corrupt: {e.file} sha256 differs from the manifest"
            idx = e.index_file and os.path.join(self.path, e.index_file)
            if not problem and idx and since is not None and os.stat(idx).st_mtime_ns > since and sha256_file(idx) != e.index_sha256:
                problem = f"corrupt: {e.index_file} sha256 differs from the manifest"
            if problem:
                return i, problem
        return len(manifest.shards), ""

    # --- space ---
    def check_space(self, need_bytes):
        free = shutil.disk_usage(self.path).free
        if need_bytes > free:
            raise UserError(
                f"this run will write about {human_bytes(need_bytes)} but {self.path} has {human_bytes(free)} free; "
                "free some space, limit the run with --max-tokens, or skip this check with --no-disk-check")


def foreign_line(where, names):
    """The refusal of a directory (or bucket prefix) holding shard-like files and no manifest of ours."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"{where} holds shard files this tool did not write ({shown}) and no manifest of its own; it never "
            "deletes files it did not write: use another --local-dir or --prefix, or move them away")


def read_merged(path):
    """{file name: {"bytes", "sha256", "from"}} of the train.bin / val.bin `merge` wrote in directory `path`."""
    try:
        with open(os.path.join(path, MERGED)) as f:
            files = json.load(f).get("files", {})
        return {k: v for k, v in files.items() if k in ("train.bin", "val.bin") and isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}


def merged_by_us(path, name):
    """Is `name` in directory `path` the train.bin / val.bin that `merge` wrote there, untouched since
    (its size and modification time as merge.json recorded them)? Nothing else is ever replaced or deleted."""
    rec = read_merged(path).get(name) or {}
    try:
        st = os.lstat(os.path.join(path, name))
    except FileNotFoundError:
        return False
    return (not os.path.islink(os.path.join(path, name)) and rec.get("bytes") == st.st_size
            and rec.get("mtime_ns") == st.st_mtime_ns)


def human_bytes(n):
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


_unlink = remove_file


def os_error_line(e, path):
    """The one line for an OSError met while creating or writing in the output directory."""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write to {path} ({e.strerror}); choose another --local-dir"
    if e.errno == errno.ENOSPC:
        return f"disk full at {path}; free space and rerun the same command"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{path}: a part of this path is a file, not a directory; give a directory"
    return f"cannot use {path} as the output directory ({e.strerror})"

