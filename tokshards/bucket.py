"""An output directory in a bucket: `--local-dir s3://bucket/prefix` (AWS S3, or an S3-compatible
store with conditional writes) or `az://container/prefix` (Azure Blob Storage); the conditional
calls each store needs are conditional.py's. BucketDir is an outdir.OutputDir whose storage is a
bucket: the rules of what state the output is in and what may be deleted are outdir.py's, unchanged;
what differs is here:

- A one-machine run writes each shard into a local staging directory (a new temporary directory of
  this command under $TMPDIR) as into a local output directory, then publish() uploads it under its
  final name (storage.py: an object is visible only once complete) and, only after that, the
  manifest: a run killed at any moment leaves a manifest listing complete objects, and the same
  command continues after its last shard. The staging directory holds about two shards (checked);
  one a killed process left is removed by the next command on the machine.
- The lock is the object `.fineweb.lock`, holding the host, pid and what holds it. It is taken with a
  conditional PUT: If-None-Match where there is none, If-Match on the version read where it is
  released (empty) or stale (its process gone, same host; or not rewritten for LOCK_STALE seconds by
  the store's clock), so exactly one of many racing commands gets it. The holder rewrites it every
  LOCK_BEAT seconds on the same condition: if another command took it, this one stops at its next
  write and never touches the new holder's lock. Ranks of a multi-machine run work side by side,
  each holding a lease object (LEASE + host.pid); a command taking the lock checks the leases after
  taking it, a rank checks the lock after writing its lease, so one of the two always sees the other.
  At the end the lock is released but stays (as the local lock file does): the mark of this tool's
  output, which an --input over the bucket skips; a command that left nothing of a run removes the
  lock object it created.
- Temporary files are the unfinished multipart uploads of this tool's names on S3 (a kill
  mid-upload): invisible, but kept and billed by the store until aborted, which remove_temp_files
  does. (Azure discards a killed upload's staged blocks itself: conditional.py.)
"""
import json
import os
import shutil
import socket
import tempfile
import threading
import time

from .errors import UserError
from .manifest import NAME as MANIFEST, Manifest
from .outdir import LOCK, PART_FILE, PARTS, PARTS_FIXED, OutputDir, human_bytes
from .outdir import recorded as recorded_locally
from .shards import shard_pattern
from .storage import BucketFiles, check_output_store, is_url, pid_alive, remove_stale_staging, staging_prefix

LOCK_BEAT, LOCK_STALE = 30.0, 180.0
LEASE = ".fineweb.rank."  # + host.pid: a rank at work (ranks work side by side, each with its own)
RELEASED = b""  # the lock object's body when nobody holds it


class BucketDir(OutputDir):
    """An output directory in a bucket, opened for one command. `path` is the local staging directory
    the writer and the manifest work in; `label` is the URL."""

    MERGE_WRITES_HERE = False

    def __init__(self, url, prefix=None, shared=False, create=True, what="run", shard_bytes=0, log=print):
        check_output_store(url)  # (s3:// or az://: stores with the conditional writes the lock needs)
        self.files = BucketFiles(url)
        self.tidy = BucketFiles(url, quick=True)  # the heartbeat's and the release's calls: a short budget
        self.url, self.prefix, self.shared, self.what = self.files.url, prefix, shared, what
        self.shard_bytes, self.log = shard_bytes, log
        self.path = None
        self._uploaded = {}  # name -> size of the shard files known to be in the bucket
        self._held = None  # (name, ETag) of the lock or lease object this command holds
        self._lost = None  # who took it from this command, if someone did
        self._beat = None
        self._stop_beat = threading.Event()
        self._me = {"host": socket.gethostname(), "pid": os.getpid(), "what": what}
        self._created = False  # this command created the lock object (it was not there)
        self._marker = None  # the ETag of the released lock object a rank created as the mark

    @property
    def label(self):
        return self.url

    # --- the lock ---
    def __enter__(self):
        remove_stale_staging()
        try:
            self._take_lease() if self.shared else self._take_lock()  # the first write: a missing bucket or
            self.path = tempfile.mkdtemp(prefix=staging_prefix())      # refused credentials say so here
            body = self.files.read(MANIFEST)
            if body is not None:
                with open(os.path.join(self.path, MANIFEST), "wb") as f:
                    f.write(body)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _lock_state(self, name):
        """(holder line or "" if free or stale, ETag or None if absent) of the lock or a lease object."""
        holder, etag, stale = lock_state(self.files, name)
        if stale:
            self.log(f"{self.url}: {stale}")
        return holder, etag

    def _take_lock(self):
        """The lock: created, or taken from a released or stale holder by a write conditional on the
        version read, so exactly one of many racing commands gets it. Then no rank may be at work."""
        for _ in range(10):
            holder, etag = self._lock_state(LOCK)
            if holder:
                raise UserError(f"{self.url} is in use by {holder}; wait for it to finish or stop it, "
                                "or use another --local-dir")
            new = self.files.put_if(LOCK, self._body(), etag)
            if new is not None:
                self._created = etag is None
                self._hold(LOCK, new)
                break
        else:
            raise UserError(f"{self.url}: could not take the lock {LOCK}; other commands keep taking it")
        for name in self._names():
            if name.startswith(LEASE):
                holder, _ = self._lock_state(name)
                if holder:
                    raise UserError(f"{self.url} is in use by the ranks of a multi-machine run ({holder}); wait "
                                    "for them to finish or stop them, or use another --local-dir")
                self.files.remove(name)  # a stale lease of this tool (a rank killed long ago, or gone)

    def _take_lease(self):
        """A rank's own lease object, then the check that no command holds the lock (that one checks
        the leases after taking it: one of the two always sees the other)."""
        self._marker = self.files.put_if(LOCK, RELEASED)  # the mark of this tool's output, if there is none yet
        name = f"{LEASE}{self._me['host']}.{self._me['pid']}"
        self._hold(name, self.files.put_bytes(name, self._body()))  # (its name is this process's own)
        holder, _ = self._lock_state(LOCK)
        if holder:
            raise UserError(f"{self.url} is in use by {holder}; wait for it to finish or stop it, "
                            "or use another --local-dir")

    def _body(self):
        return json.dumps({**self._me, "time": time.time()}).encode()

    def _hold(self, name, etag):
        self._held = (name, etag)
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="fineweb-bucket-lock")
        self._beat.start()

    def _heartbeat(self):
        """Rewrite the object every LOCK_BEAT s, only while it is still the version this command wrote:
        if another command took it (it judged this one stale), this one stops at its next write."""
        while not self._stop_beat.wait(LOCK_BEAT):
            name, etag = self._held
            try:
                new = self.tidy.put_if(name, self._body(), etag)
                if new is None:
                    self._lost = lock_state(self.tidy, name)[0] or "another command"
                    return
            except Exception:  # (a UserError: the store failed; anything else is not worth a dead thread)
                continue  # the next beat tries again; a run that cannot write fails on its own
            self._held = (name, new)

    def __exit__(self, *exc):
        if self._beat is not None:
            self._stop_beat.set()
            self._beat.join(LOCK_BEAT)  # (a beat in flight tries briefly; a lock left held goes stale)
            self._beat = None
        try:  # briefly (self.tidy): a command that failed says so now, and the lock goes stale anyway
            # a command that left nothing of a run (refused, or nothing to do in a new prefix) leaves the
            # prefix as it found it: the lock object it created goes; else it stays, released
            ran = bool({MANIFEST, PARTS} & set(self.tidy.listing())) if (self._created or self._marker) else True
            if self._held is not None and not self._lost:
                name, etag = self._held  # only the version this command wrote: never another command's lock
                if name != LOCK:
                    self.tidy.delete_if(name, etag)
                elif ran:
                    self.tidy.put_if(LOCK, RELEASED, etag)
                else:
                    self.tidy.delete_if(LOCK, etag)
            if self._marker and not ran:
                self.tidy.delete_if(LOCK, self._marker)
        except UserError:
            pass  # left behind: the next command finds this process gone (same host) or stale, and takes it
        self._held = self._marker = None
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)  # the staging directory this command made
            self.path = None

    # --- the storage (outdir.OutputDir's rules use these) ---
    def _exists(self):
        return True  # a prefix exists as soon as an object does; state() reads what is there

    def _names(self, sub=""):
        return list(self.files.listing(sub))

    def _has(self, name):
        sub, _, base = name.rpartition("/")
        return base in self.files.listing(sub)

    def _remove(self, name):
        """One of this tool's objects, and its copy in the staging directory."""
        self.files.remove(name)
        self._uploaded.pop(name, None)
        try:
            os.unlink(os.path.join(self.path, name))
        except (FileNotFoundError, IsADirectoryError):
            pass

    def _remove_dir(self, sub):
        pass  # a folder in a bucket is only the prefix of its objects

    def _mark(self, name):
        self.files.put_bytes(name, b"")

    def _sync(self):
        pass

    def remove_temp_files(self):
        """The unfinished uploads of this tool's names under the prefix (parts/ included), once the prefix
        holds this tool's run (a manifest, or parts/job.json: both are written before any shard or part):
        before that, an upload under a shard's name is another writer's."""
        assert not self.shared
        if MANIFEST not in self.files.listing() and "job.json" not in self.files.listing(PARTS):
            return
        pattern = shard_pattern(self.prefix or "\0")

        def ours(name):
            sub, _, base = name.rpartition("/")
            if sub == PARTS:
                return base in PARTS_FIXED or bool(PART_FILE.match(base))
            return not sub and (base == MANIFEST or bool(pattern.match(base)))

        for key, upload in self.files.unfinished_uploads(ours):
            self.files.abort_upload(key, upload)

    # --- what is there ---
    def check_shards(self, manifest):
        """(n, problem) as OutputDir.check_shards: an object exists only complete, so its size tells."""
        names = self.files.listing()
        for i, e in enumerate(manifest.shards):
            for name, size in ((e.file, e.bytes), (e.index_file, e.index_bytes)):
                if name is None:
                    continue
                have = names.get(name)
                if have is None:
                    return i, f"missing: {name}"
                if have != size:
                    return i, f"corrupt: {name} is {have:,} bytes, the manifest says {size:,}"
                self._uploaded[name] = size
        return len(manifest.shards), ""

    def check_space(self, need_bytes):
        """The bucket holds what it is given; the staging directory needs about two shards."""
        need = 2 * self.shard_bytes + (1 << 20)
        free = shutil.disk_usage(self.path).free
        if need > free:
            raise UserError(f"writing to {self.url} stages each shard in {os.path.dirname(self.path)}, which has "
                            f"{human_bytes(free)} free for about {human_bytes(need)} (two shards); set TMPDIR to a "
                            "disk with more space, or use a smaller --shard-size")

    # --- into the bucket ---
    def check_held(self):
        """Raise if another command took this one's lock or lease (it judged this one stale)."""
        if self._lost:
            raise UserError(f"{self.url}: {self._lost} took this command's lock (it judged this one stale); "
                            "stopped: rerun the same command once that one is done")

    def publish(self, manifest):
        """Upload the listed shard files not yet in the bucket (each removed from the staging directory
        once the store holds its size), then the manifest: it never lists an object that is not complete.
        A listed file not in the staging directory was written to the bucket directly (assembly)."""
        self.check_held()
        listing = None
        for e in manifest.shards:
            for name, size in ((e.index_file, e.index_bytes), (e.file, e.bytes)):  # a .idx before its .bin
                if name is None or self._uploaded.get(name) == size:
                    continue
                local = os.path.join(self.path, name)
                if os.path.exists(local):
                    self.files.put(local, name)
                else:
                    listing = self.files.listing() if listing is None else listing
                    if listing.get(name) != size:
                        raise UserError(f"{self.url}/{name} is not in the bucket as the manifest says; rerun the "
                                        "same command to resume")
                self._uploaded[name] = size
        with open(manifest.path, "rb") as f:
            self.files.put_bytes(MANIFEST, f.read())


def lock_state(files, name=LOCK):
    """(who holds the lock or lease object `name`: a line, or "" if nobody does; its ETag, or None if
    there is none; a line saying why a holder is stale, or ""). Released (empty) and stale are free:
    a stale one's process is gone (same host) or it was not rewritten for LOCK_STALE seconds."""
    got = files.read_versioned(name)
    if got is None:
        return "", None, ""
    body, etag, age = got
    h = _parse_lock(body, files.url)
    if h is None:  # released: the object stays as the mark of this tool's output (as the local lock file)
        return "", etag, ""
    who = f"fineweb.py {h['what']} on host {h['host']}, pid {h['pid']}"
    gone = h["host"] == socket.gethostname() and not pid_alive(h["pid"])
    if gone or age >= LOCK_STALE:
        return "", etag, f"the lock of {who} is stale ({'that process is gone' if gone else f'not seen for {age:.0f}s'})"
    return f"{who} (seen {age:.0f}s ago)", etag, ""


def _parse_lock(body, url):
    """The holder a lock or lease object names, or None for a released lock."""
    if body == RELEASED:
        return None
    try:
        h = json.loads(body)
        return {"host": str(h["host"]), "pid": int(h["pid"]), "time": float(h["time"]), "what": str(h.get("what", "run"))}
    except (TypeError, ValueError, KeyError):
        raise UserError(f"{url}/{LOCK} is not this tool's lock; remove it and rerun") from None


def recorded(where, key):
    """What the manifest (or parts/job.json) of a local directory or a bucket recorded under `key`
    ("source", "settings"), or None; a read without the lock, for pinning the Hub revisions before the
    run begins (it checks again)."""
    if not is_url(where):
        return recorded_locally(where, key)
    files = BucketFiles(where)  # (a store that fails is one line here already: the run could not go on)
    body = files.read(MANIFEST) or files.read(f"{PARTS}/job.json")
    try:
        return json.loads(body).get(key)
    except (TypeError, ValueError, AttributeError):
        return None


def manifest_at(where):
    """The Manifest of a local output directory or a bucket URL (None if it has none), for reading only."""
    if not is_url(where):
        return Manifest.load(where)
    body = BucketFiles(where).read(MANIFEST)
    return None if body is None else Manifest.parse(str(where).rstrip("/"), body)


def open_dir(path, prefix=None, shared=False, create=True, what="run", shard_bytes=0, log=print):
    """The output directory at `path`: local (outdir.OutputDir), or in a bucket (a URL)."""
    if is_url(path):
        return BucketDir(path, prefix, shared, create, what, shard_bytes, log)
    return OutputDir(path, prefix, shared, create, what)
