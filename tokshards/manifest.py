"""manifest.json: the record that makes a run resumable and verifiable.

It is rewritten atomically after every shard: the run's settings (what every shard was made with),
its source (the Hub dataset at a pinned commit, or each input file's size, time and sampled
content hash), and one entry per finished shard (shards.ShardEntry: name, counts, size, sha256,
and `end`, the source position where the next shard's first token comes from). Resuming means:
keep every full shard that is intact on disk, reopen the source at the last one's `end`, carry on;
the output is the same bytes as an uninterrupted run (resume.py decides, outdir.py checks disk).

Everything read back is checked against the shape this tool writes before it is used: a file name
from a manifest is used only if it is exactly the name this tool gives that shard.
"""
import json
import os

from .errors import UserError
from .formats import FORMATS
from .shards import ShardEntry

NAME = "manifest.json"
# 2: tokenizer content hash, input fingerprints, "tool"; 3: the document-boundary policy, megatron shards.
# Versions 1 and 2 are upgraded on load (they all put the end-of-text id before every document).
VERSION = 3
TOOL = "fineweb.py"
DTYPES = ("<u2", "<u4", "<i4")  # <i4: megatron shards of a vocabulary of 65,500 or more
POLICIES = ("eot-before", "bos-before", "eos-after", "bos-eos")  # tokspec.POLICIES (no import: tokspec is heavy)
# Settings the user chose come first in messages; eot, the boundary ids and dtype follow from --tokenizer.
ORDER = ("prefix", "tokenizer", "tokenizer_sha256", "doc_boundary", "format", "shard_size", "text_column", "doc_separator")
INFO = ("tokenizer_revision",)  # recorded, never compared: the tokenizer's content (its sha256) is what counts
PREFIX_CHARS = "letters, digits, '.', '_' and '-'"


def valid_prefix(prefix):
    return isinstance(prefix, str) and bool(prefix) and not prefix.startswith(".") and \
        all(c.isascii() and (c.isalnum() or c in "._-") for c in prefix)


def atomic_write(path, write, tag=""):
    """Write to a temporary name, fsync, rename, fsync the directory: a crash leaves old or new.

    `write` is the bytes, or a function that writes to the open file (its result is returned).
    `tag` makes the temporary name unique when several processes may write the same file."""
    tmp = temp_name(path, tag)
    try:
        with create_file(tmp) as f:
            result = write(f) if callable(write) else f.write(write)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces the name itself: a symlink planted there, never its target
    except BaseException:
        remove_file(tmp)
        raise
    fsync_dir(os.path.dirname(path) or ".")
    return result


def create_file(path):
    """A new file at `path`, open for writing (and reading): whatever was at that name (a stale
    temporary file, or a symlink planted there) is removed first, and the file is created exclusively,
    never through a link, so nothing outside the directory can be written through one of our names."""
    remove_file(path)
    return open(path, "x+b")  # O_CREAT | O_EXCL: fails on any name that exists, a symlink included


def remove_file(path):
    """Remove a file this tool wrote (or a link at its name: the link goes, not what it points to). A
    directory at that name is someone else's: a one-line refusal, nothing removed."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise UserError(f"{path} is a directory, not a file this tool wrote; move it away and rerun")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def temp_name(path, tag=""):
    """The temporary name a file of this tool is written under before its rename: `.NAME[TAG].tmp`."""
    return os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}{tag}.tmp")


def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_settings(st):
    """Raise ValueError unless st is a settings object this tool writes."""
    if not isinstance(st, dict):
        raise ValueError("settings is not an object")
    if not valid_prefix(st.get("prefix")):
        raise ValueError(f"prefix {st.get('prefix')!r} is not a file name prefix")
    if st.get("format") not in FORMATS:
        raise ValueError(f"format {st.get('format')!r} is not one of {', '.join(FORMATS)}")
    if st.get("dtype") not in DTYPES:
        raise ValueError(f"dtype {st.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    for key in ("eot", "shard_size"):
        if not isinstance(st.get(key), int) or isinstance(st.get(key), bool) or st[key] < 0:
            raise ValueError(f"{key} is not a count")
    if st["shard_size"] < 1:
        raise ValueError("shard_size is not positive")
    if not isinstance(st.get("tokenizer"), str):
        raise ValueError("tokenizer is not text")
    if "doc_boundary" in st:
        if st["doc_boundary"] not in POLICIES:
            raise ValueError(f"doc_boundary {st['doc_boundary']!r} is not one of {', '.join(POLICIES)}")
        for key in ("boundary_before", "boundary_after"):
            ids = st.get(key)
            if not (isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
                raise ValueError(f"{key} is not a list of ids")
        if not (st["boundary_before"] or st["boundary_after"]):
            raise ValueError("the document boundary has no ids")
        marker = st["boundary_before"][0] if st["boundary_before"] else st["boundary_after"][-1]
        if st["eot"] != marker:
            raise ValueError("eot is not the boundary's marker id")
    if st["format"] == "megatron" and st["dtype"] == "<u4" or st["format"] != "megatron" and st["dtype"] == "<i4":
        raise ValueError(f"dtype {st['dtype']} is not one of format {st['format']}")


def check_source(src):
    """Raise ValueError unless src is a source this tool records: a Hub dataset, or local files."""
    if isinstance(src, dict):
        if not isinstance(src.get("dataset"), str) or not all(
                isinstance(src.get(k), (str, type(None))) for k in ("config", "revision")):
            raise ValueError("source is not a dataset")
        return
    if not isinstance(src, list) or not src:
        raise ValueError("source is neither a dataset nor a list of files")
    for f in src:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and _count(f.get("bytes"))
                and all(_count(f[k]) for k in ("mtime_ns",) if k in f)
                and all(isinstance(f[k], str) for k in ("sample_sha256",) if k in f)):
            raise ValueError(f"source file {f!r} is not a file record")


def _count(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**63


class Manifest:
    """The record of one output directory. `shards` holds ShardEntry values."""

    def __init__(self, out_dir, settings, source, shards=(), complete=False, max_tokens=None, seconds=None,
                 converting=None):
        self.out_dir, self.settings, self.source = out_dir, settings, source
        self.shards = list(shards)
        self.complete, self.max_tokens, self.seconds, self.converting = complete, max_tokens, seconds, converting

    @property
    def path(self):
        return os.path.join(self.out_dir, NAME)

    def tokens(self):
        return sum(s.tokens for s in self.shards)

    def to_json(self):
        d = {"version": VERSION, "tool": TOOL, "settings": self.settings, "source": self.source,
             "shards": [s.to_json() for s in self.shards], "complete": self.complete, "max_tokens": self.max_tokens}
        if self.seconds is not None:
            d["seconds"] = self.seconds
        if self.converting is not None:
            d["converting"] = self.converting
        return d

    def save(self):
        atomic_write(self.path, (json.dumps(self.to_json(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, out_dir):
        """The manifest in out_dir, or None if there is none. A manifest.json that is not this tool's
        (invalid JSON, another shape, another tool's) is refused in one line, never overwritten."""
        path = os.path.join(out_dir, NAME)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise UserError(f"{path} is a directory, not this tool's manifest; use another --local-dir") from None
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from None
        return cls.parse(out_dir, raw)

    @classmethod
    def parse(cls, out_dir, raw):
        """The manifest of out_dir (a directory, or a bucket URL it was read from) from its bytes."""
        path = os.path.join(out_dir, NAME)
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e}); it is not a manifest this tool can use: "
                            "move it away or use another --local-dir") from None
        try:
            return cls.from_json(out_dir, data)
        except ValueError as e:
            raise UserError(f"{path} is not a manifest of this tool ({e}): move it away, or use another "
                            "--local-dir") from None

    @classmethod
    def from_json(cls, out_dir, data):
        if not isinstance(data, dict) or "settings" not in data or "shards" not in data:
            raise ValueError("no settings and shards")
        version = data.get("version")
        if version not in (1, 2, VERSION):
            if isinstance(version, int) and version > VERSION:
                raise UserError(f"{os.path.join(out_dir, NAME)} was written by a newer fineweb.py (format "
                                f"{version}); use that version")
            raise ValueError(f"format version {version!r}")
        st = data["settings"]
        check_settings(st)
        if version == 1:  # recorded neither the tokenizer's content nor the inputs' fingerprints
            st = dict(st, tokenizer_sha256=None)
        elif not isinstance(st.get("tokenizer_sha256"), str):
            raise ValueError("tokenizer_sha256 is not text")
        if version < 3:  # every earlier run put its end-of-text id before every document
            if "doc_boundary" in st:
                raise ValueError(f"doc_boundary in a version {version} manifest")
            st = dict(st, doc_boundary="eot-before", boundary_before=[st["eot"]], boundary_after=[])
        elif "doc_boundary" not in st:
            raise ValueError("no doc_boundary")
        converting = data.get("converting")
        if converting is not None and not (
                isinstance(converting, dict) and converting.get("to") in FORMATS
                and isinstance(converting.get("done"), list) and all(isinstance(i, int) for i in converting["done"])):
            raise ValueError("converting is not a conversion")
        if not isinstance(data["shards"], list):
            raise ValueError("shards is not a list")
        done = set(converting["done"]) if converting else set()
        shards = [ShardEntry.from_json(e, i, st["prefix"], converting["to"] if i in done else st["format"])
                  for i, e in enumerate(data["shards"])]
        source = data.get("source")
        check_source(source)
        for key in ("complete",):
            if not isinstance(data.get(key), bool):
                raise ValueError(f"{key} is not true/false")
        mt = data.get("max_tokens")
        if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool) or mt < 1):
            raise ValueError("max_tokens is not a count")
        return cls(out_dir, st, source, shards, data["complete"], mt, data.get("seconds"), converting)

    def shard_format(self, entry):
        """The format one shard's file is in (a conversion in place changes them one by one)."""
        if self.converting and entry.index in self.converting["done"]:
            return self.converting["to"]
        return self.settings["format"]


def settings_mismatch(out_dir, old, new):
    """A one-line refusal if a run with settings `new` would mix into one made with `old`, else None.
    A value the old manifest did not record (None: an earlier version) is not a mismatch."""
    keys = sorted(set(new) | set(old), key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    for key in (k for k in keys if k not in INFO):
        was, now = old.get(key), new.get(key)
        if was != now and not (was is None and key == "tokenizer_sha256"):
            what = f"{key}={was!r}, not {now!r}"
            if key == "tokenizer_sha256":
                what = f"another tokenizer file at the same name {new.get('tokenizer')!r} (content differs)"
            return (f"{out_dir} holds a run with {what}; rerun with the same settings to resume it, "
                    "or add --overwrite to start over")
    return None


def source_mismatch(out_dir, old, new):
    """A one-line refusal if `new` (source.describe()) is not the input `old` recorded, else None.
    Each local file is compared by path, size, sampled content hash and modification time, an object
    in a bucket by URL, size, ETag and modification time; a value the old manifest did not record (an
    earlier version) is not compared."""
    if isinstance(old, dict) or isinstance(new, dict):
        if old != new:
            return (f"{out_dir} was made from other input ({_short(old)}); use another --local-dir, "
                    "or --overwrite to start over")
        return None
    if [f.get("path") for f in old] != [f["path"] for f in new]:
        return (f"{out_dir} was made from other input files ({_short(old)}); use another --local-dir, "
                "or --overwrite to start over")
    for was, now in zip(old, new):
        for key, what in (("bytes", "its size"), ("sample_sha256", "its content"), ("etag", "its ETag"),
                          ("mtime_ns", "its modification time"), ("last_modified", "its modification time")):
            if key in was and was[key] != now.get(key):
                hint = "" if key != "mtime_ns" else (
                    f" (same size and sampled content: if it is an unchanged copy, give it back its time with "
                    f"touch -d @{was['mtime_ns'] / 1e9:.9f} {now['path']})")
                return (f"input {now['path']} changed since {out_dir} was started ({what} differs){hint}; "
                        "resuming would mix two versions of it: restore it, or add --overwrite to start over")
    return None


def _short(source):
    s = json.dumps(source)
    return s if len(s) < 120 else s[:117] + "..."
