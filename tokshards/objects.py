"""Inputs that are objects in a bucket: --input s3://BUCKET/PREFIX (or any fsspec URL whose package is
installed).

A prefix is read like a local directory: every object under it with a known ending, recursively, in
sorted order. An object is read with ranged GETs through fsspec (s3fs reads at most BLOCK bytes ahead
of what is asked, and pins the object's ETag when it opens it), so memory stays constant and no file
is downloaded whole; byte offsets and parquet row groups mean the same as in the local copy, so resume
positions do too. An object is identified between runs by its size, ETag and modification time.
Every call is storage.attempt: 5xx, SlowDown and dropped connections are retried with the logged,
budgeted retry; what is not worth retrying, or outlasts the budget, is one line, raised as a
UserError that pyarrow and the decompressors pass on unchanged.
"""
import io
import os

from .errors import UserError
from .outdir import LOCK
from .storage import attempt, error_line, is_url, no_bucket, no_bucket_line, open_fs

BLOCK = 4 << 20  # read ahead per GET: few requests for a stream, little memory held

def filesystem(url):
    """(filesystem, key "bucket/path") of a URL (one filesystem per process and store: open_fs)."""
    return open_fs(url, whole_bucket=True)


def expand(url, wanted, exclude=None):
    """The object `url`, or the URLs of the objects under the prefix `url` whose names `wanted`
    accepts, in sorted order: not under `exclude` (an output prefix inside it) nor in another output
    directory of this tool (a lock object beside them), as for a local directory."""
    fs, key = filesystem(url)
    protocol = str(url).split("://", 1)[0]
    if not is_prefix(url, fs, key):
        return [f"{protocol}://{key}"]
    found = attempt(url, fs.find, key)
    skip = filesystem(exclude)[1] + "/" if exclude and is_url(exclude) else None
    locked = {k.rsplit("/", 1)[0] + "/" for k in found if k.rsplit("/", 1)[-1] == LOCK} - {key + "/"}
    keys = sorted(k for k in found if wanted(k.rsplit("/", 1)[-1])
                  and not (skip and k.startswith(skip)) and not any(k.startswith(d) for d in locked))
    if not keys:
        raise UserError(f"--input {url}: no .parquet, .jsonl/.json or .txt objects under this prefix")
    return [f"{protocol}://{k}" for k in keys]


def is_prefix(url, fs, key):
    """True for a prefix with objects under it, False for an object; else one line."""
    try:
        return attempt(url, fs.info, key, keep=FileNotFoundError)["type"] == "directory"
    except FileNotFoundError as e:
        # s3fs says "The specified bucket does not exist" for a missing bucket, the key for a missing key;
        # adlfs names the path either way: ask whether the container is there
        if no_bucket(e):
            raise UserError(error_line(e, url)) from None
        bucket = key.split("/", 1)[0]
        if bucket != key and not attempt(url, fs.exists, bucket):
            raise UserError(no_bucket_line(url, bucket)) from None
        raise UserError(f"--input {url}: no such object or prefix") from None


def info(url):
    fs, key = filesystem(url)
    return attempt(url, fs.info, key)


def fingerprint(url):
    """What identifies an object between runs: its URL, size, ETag and modification time (the store's
    own: no content is read). An object written again gets a new ETag and time even at the same size."""
    d = info(url)
    etag = d.get("ETag") or d.get("etag")
    modified = d.get("LastModified") or d.get("last_modified") or d.get("mtime") or d.get("updated")  # s3fs, adlfs, ...
    out = {"path": str(url), "bytes": d["size"]}
    if etag is not None:
        out["etag"] = str(etag).strip('"')
    if modified is not None:
        out["last_modified"] = modified.isoformat() if hasattr(modified, "isoformat") else str(modified)
    return out


class ObjectFile(io.RawIOBase):
    """An object opened for ranged reads; every failure of the store is one line (UserError)."""

    def __init__(self, url):
        fs, key = filesystem(url)
        self.url = url
        self.f = attempt(url, fs.open, key, "rb", block_size=BLOCK, cache_type="readahead")

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        return attempt(self.url, self.f.readinto, b)

    def seek(self, pos, whence=io.SEEK_SET):
        return attempt(self.url, self.f.seek, pos, whence)

    def tell(self):
        return self.f.tell()

    def close(self):
        if not self.closed:
            self.f.close()
        super().close()


def open_input(path):
    """A local file or an object (a URL), opened for buffered binary reading."""
    if is_url(path):
        return io.BufferedReader(ObjectFile(path), buffer_size=1 << 20)
    return open(path, "rb")


def input_size(path):
    return info(path)["size"] if is_url(path) else os.path.getsize(path)
