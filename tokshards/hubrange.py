"""Byte ranges of Hub data files: the one way this tool reads them, in the main process (footers, a row
group too large to be a task) and in the workers (row groups).

One ranged GET per read, at a URL made once from hf://TYPE/REPO@SHA/FILE, through huggingface_hub's HTTP
client: the call HfFileSystem's own reads make (HF_TOKEN, HF_ENDPOINT, redirects to the CDN, its retries on
408, 429, 500, 502-504 and connections that fail before the answer's headers; the body is streamed, so a
connection dropped during it is retried by the caller's Retrier, with a line in the log), without what
HfFileSystem does first in every thread that
opens a file (it keeps one instance per thread): a revision lookup, and a listing of the file's
directory, scanned again on every read. In the workers' fetch threads that was a revision lookup per
thread and a listing per thread and directory (~190 of each at start on 96 cores; the Hub rate-limits
API calls), for what the main process had resolved once: the revision, the files, their sizes.

Imported only by Hub runs (hub.py imports it where it reads): huggingface_hub's HTTP stack is ~0.1 s.
"""
from huggingface_hub import constants, hf_hub_url
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff, parse_hf_uri

from .sources import ReadOnlyFile


def resolve_url(path):
    """The download URL of hf://TYPE/REPO@SHA/FILE (its revision pinned), made without a request: the one
    HfFileSystem reads it at."""
    u = parse_hf_uri(path)
    return hf_hub_url(u.id, u.path_in_repo, repo_type=u.type, revision=u.revision)


def open_hub_file(path):
    """RangeFile of hf://...: its size from HfFileSystem's listing of its directory, which the file list
    (hubfiles.py, or datasets) filled in this process: no request. Only the main process opens files
    this way; a worker is handed the URL and size, and does not import HfFileSystem (fsspec, ~0.1 s)."""
    from huggingface_hub import HfFileSystem

    return RangeFile(resolve_url(path), HfFileSystem().info(path[len("hf://") :])["size"])


class RangeIgnored(ConnectionError):
    """A server, or something between it and us, did not answer the byte range asked for: retried as
    the network is (a proxy's fault may pass), and named in the line that ends the run."""


class RangeFile(ReadOnlyFile):
    """A Hub data file of known size at its download URL (resolve_url): each read one ranged GET."""

    def __init__(self, url, size):
        self.url, self.size, self.pos = url, size, 0
        self.headers, self.timeout = build_hf_headers(), constants.HF_HUB_DOWNLOAD_TIMEOUT

    def read(self, n=-1):
        if self.closed:
            raise ValueError("read of a closed file")
        n = self.size - self.pos if n is None or n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        rng = f"bytes={self.pos}-{self.pos + n - 1}"
        data, failed = b"", None
        with http_stream_backoff("GET", self.url, headers={"range": rng, **self.headers}, timeout=self.timeout) as r:
            # Nothing may be raised out of this block: http_stream_backoff would catch a network error (a
            # connection dropped during the body, or during the error body hf_raise_for_status reads),
            # retry, and then fail to yield again ("generator didn't stop after throw()"). Raised below.
            try:
                hf_raise_for_status(r)
                self.check_range(r, rng, n)
                data = r.read()  # (a refused range is not read: the response is closed unread)
            except Exception as e:
                failed = e
        if failed is not None:
            raise failed
        if len(data) != n:  # a body cut short: unreadable data, retried
            raise OSError(f"asked for {n} bytes at {self.pos}, got {len(data)}")
        self.pos += n
        return data

    def check_range(self, r, rng, n):
        """Raise unless `r` answers `rng` of this file (or is the whole file, asked for)."""
        if r.status_code == 206:
            got = r.headers.get("content-range", "")
            if got != f"bytes {self.pos}-{self.pos + n - 1}/{self.size}":
                # other bytes, or a file of another size than listed: unreadable data, retried, then
                # named as a damaged file
                raise OSError(f"asked for {rng} of {self.size} bytes, got {got or 'no Content-Range'}")
        elif n != self.size:
            # e.g. a proxy that ignores Range would send the whole file (~2 GB for FineWeb): found out
            # from the headers, before the body
            raise RangeIgnored(f"asked for {rng}, got HTTP {r.status_code}: the range was not honoured "
                               "(check any proxy, HTTPS_PROXY, and HF_ENDPOINT)")

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
