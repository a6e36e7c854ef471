"""An output directory in a bucket: `--local-dir s3://bucket/prefix` (or any fsspec URL whose package
is installed: gs://, az://, ...) for a one-machine run. It keeps the promises of outdir.py without a
POSIX directory, and offers the same methods, so pipeline.py runs unchanged:

- Shards are written into a local staging directory (a new temporary directory of this command under
  $TMPDIR) exactly as into a local output directory, then uploaded under their final names. An object
  store shows an object only once its upload is complete (one PUT, or the CompleteMultipartUpload of
  a multipart one, whose part size s3fs chooses to stay under S3's 10,000 parts), so no reader ever
  sees half a shard, and no rename is needed.
- manifest.json in the bucket is replaced only after every shard file it lists is uploaded and its
  size read back: a run killed at any moment leaves a manifest that lists complete objects only, and
  the same command continues after its last shard.
- The staging directory holds the shard being written and the one being uploaded, then each goes: the
  local space needed is about two shards, checked at start.
- The lock is the object `.fineweb.lock`, created only where none exists (a conditional PUT,
  If-None-Match), holding the host, pid and a time the run rewrites every LOCK_BEAT seconds. A lock of
  a process that is gone (same host) or not rewritten for LOCK_STALE seconds (another host) is taken
  over, saying so; any other is refused in one line.
- What may be deleted is what outdir.py may delete, by the same names: files its manifest lists, the
  names the next shard gets (uploaded just before a crash, never recorded), its manifest and its lock;
  and the unfinished multipart uploads of exactly those names. Nothing else under the prefix.
- Credentials and endpoint come the usual way (AWS_* variables, profiles, AWS_ENDPOINT_URL for MinIO
  or R2); they are never printed or recorded. Faults are retried by botocore and s3fs; what they give
  up on becomes one line, and the state in the bucket stays resumable.
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
from .outdir import EMPTY, FOREIGN, LOCK, PARTS, PARTS_STATE, RUN, URL, DirState, OutputDir, foreign_line, human_bytes
from .shards import shard_files, shard_pattern

LOCK_BEAT, LOCK_STALE = 30.0, 180.0


def is_url(path):
    return bool(URL.match(str(path)))


def open_fs(url, whole_bucket=False):
    """(filesystem, root "bucket/prefix") for a URL, or one line saying what is missing. whole_bucket:
    a bucket's root is accepted too (an input may be all of a bucket; an output needs a prefix)."""
    import fsspec  # here, not at the top: only a bucket run needs it (and `--help` stays quick)

    protocol = str(url).split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(protocol)
        raise UserError(f"{url}: {protocol}:// needs " + (f"the package {package}: pip install {package}" if package
                        else f"a package fsspec names: {e}")) from None
    except ValueError:
        raise UserError(f"{url}: fsspec knows no protocol {protocol}://; give a local directory or an "
                        "s3:// (gs://, az://, ...) URL") from None
    # listings are read fresh each time: another machine (or a killed run) may have changed them
    fs, root = fsspec.core.url_to_fs(str(url), use_listings_cache=False, skip_instance_cache=True)
    root = root.rstrip("/")
    if "/" not in root and not whole_bucket:
        raise UserError(f"{url}: give a prefix inside the bucket (s3://BUCKET/NAME), not the bucket's root")
    return fs, root


def error_line(e, url):
    """The one line for a failure the storage client gave up on (never with credentials in it)."""
    name = type(e).__name__
    text = str(e).splitlines()[0][:200] if str(e) else name
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return (f"{url}: no credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                "(AWS_ENDPOINT_URL for MinIO, R2 or another S3-compatible store)")
    if isinstance(e, PermissionError) or any(k in text for k in ("InvalidAccessKeyId", "SignatureDoesNotMatch",
                                                                "AccessDenied", "Forbidden")):
        return (f"{url}: access refused ({text}); check the credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE) and "
                "that they may read and write this bucket")
    if isinstance(e, FileNotFoundError) and "bucket" in text.lower():
        return f"{url}: the bucket does not exist ({text}); create it, or check the name and AWS_ENDPOINT_URL"
    return (f"{url}: the storage failed ({name}: {text}); check the endpoint and the network, then rerun the same "
            "command to resume")


class Bucket:
    """A prefix in a bucket, for reading and for the owner below: objects by name, failures as one line."""

    def __init__(self, url):
        self.url = str(url).rstrip("/")
        self.fs, self.root = open_fs(self.url)

    def key(self, name):
        return f"{self.root}/{name}"

    def call(self, fn, *args, keep=(), **kw):
        """fn(*args, **kw); what the client gave up on (botocore and s3fs retry what is worth retrying)
        becomes one line, but for the exceptions in `keep`, which the caller handles."""
        try:
            return fn(*args, **kw)
        except keep:
            raise
        except UserError:
            raise
        except Exception as e:
            raise UserError(error_line(e, self.url)) from None

    def listing(self):
        """{name: size} of the objects directly under the prefix."""
        try:
            entries = self.call(self.fs.ls, self.root, detail=True, keep=FileNotFoundError)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: (e.get("size") if e.get("type") != "directory" else None)
                for e in entries}

    def read(self, name):
        """An object's bytes, or None if there is none."""
        try:
            return self.call(self.fs.cat_file, self.key(name), keep=FileNotFoundError)
        except FileNotFoundError:
            return None

    def get(self, name, local):
        self.call(self.fs.get_file, self.key(name), local)

    def remove(self, name):
        try:
            self.call(self.fs.rm_file, self.key(name), keep=FileNotFoundError)
        except FileNotFoundError:
            pass

    def unfinished_uploads(self, ours):
        """[(key, upload id)] of the multipart uploads under the prefix never completed, of names `ours` accepts."""
        if not hasattr(self.fs, "list_multipart_uploads"):
            return []
        bucket, prefix = self.root.split("/", 1)
        out = []
        for up in self.call(self.fs.list_multipart_uploads, bucket):
            name = up.get("Key", "")[len(prefix) + 1:]
            if up.get("Key", "").startswith(prefix + "/") and "/" not in name and ours(name):
                out.append((up["Key"], up["UploadId"]))
        return out

    def holder(self):
        """Who holds the lock ("" for nobody): for verify."""
        body = self.read(LOCK)
        try:
            h = json.loads(body)
            return f"fineweb.py on host {h['host']}, pid {h['pid']}"
        except (TypeError, ValueError, KeyError):
            return ""


class BucketDir:
    """An output directory in a bucket, opened for one run. Use as a context manager: the lock is held
    inside. `path` is the local staging directory the writer and the manifest work in; `label` is the URL."""

    shared = False

    def __init__(self, url, prefix, shard_bytes, log=print):
        self.bucket = Bucket(url)
        self.url, self.prefix, self.shard_bytes, self.log = self.bucket.url, prefix, shard_bytes, log
        self.label = self.url
        self.fs, self.root = self.bucket.fs, self.bucket.root
        self.path = None
        self._uploaded = {}  # name -> size of the shard files this run has in the bucket
        self._beat = None
        self._stop_beat = threading.Event()

    # --- the lock ---
    def __enter__(self):
        self._take_lock()  # the first write: a missing bucket or refused credentials say so here
        try:
            self.path = tempfile.mkdtemp(prefix="fineweb-stage-")
            body = self.bucket.read(MANIFEST)
            if body is not None:
                with open(os.path.join(self.path, MANIFEST), "wb") as f:
                    f.write(body)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _take_lock(self):
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(5):
            try:
                self.bucket.call(self.fs.pipe_file, self.bucket.key(LOCK), self._lock_body(me), mode="create",
                                 keep=FileExistsError)
                break
            except FileExistsError:
                pass
            held = self.bucket.read(LOCK)
            try:
                holder = json.loads(held)
                age = time.time() - float(holder["time"])
                host, pid = str(holder["host"]), int(holder["pid"])
            except (TypeError, ValueError, KeyError):
                raise UserError(f"{self.url}/{LOCK} is not this tool's lock; remove it and rerun") from None
            gone = host == me["host"] and not _alive(pid)
            if not gone and age < LOCK_STALE:
                raise UserError(f"{self.url} is in use by fineweb.py on host {host}, pid {pid} (seen {age:.0f}s ago); "
                                "wait for it to finish or stop it, or use another --local-dir")
            self.log(f"{self.url}: taking over the lock of fineweb.py on host {host}, pid {pid} "
                     f"({'that process is gone' if gone else f'not seen for {age:.0f}s'})")
            self.bucket.remove(LOCK)
        else:
            raise UserError(f"{self.url}: could not take the lock {LOCK}; another run keeps taking it")
        self._me = me
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="fineweb-bucket-lock")
        self._beat.start()

    def _lock_body(self, me):
        return json.dumps({**me, "time": time.time(), "what": "fineweb.py run"}).encode()

    def _heartbeat(self):
        while not self._stop_beat.wait(LOCK_BEAT):
            try:
                self.fs.pipe_file(self.bucket.key(LOCK), self._lock_body(self._me))
            except Exception:
                pass  # the next beat tries again; a run that cannot write will fail on its own

    def __exit__(self, *exc):
        if self._beat is not None:
            self._stop_beat.set()
            self._beat.join()
            self._beat = None
            try:
                self.bucket.remove(LOCK)
            except Exception:
                pass  # left behind: the next run on this host finds this process gone and takes it over
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)  # the staging directory this command made
            self.path = None

    # --- the state ---
    def state(self):
        names = self.bucket.listing()
        if MANIFEST in names:
            return DirState(RUN, Manifest.load(self.path))
        if PARTS in names:
            return DirState(PARTS_STATE)
        foreign = tuple(sorted(n for n in names if self.prefix and shard_pattern(self.prefix).match(n)))
        return DirState(FOREIGN, foreign=foreign) if foreign else DirState(EMPTY)

    def refuse_foreign(self, st):
        raise UserError(foreign_line(self.url, st.foreign))

    # --- what it may delete ---
    def _delete(self, name):
        """One of this run's objects, and its copy in the staging directory."""
        self.bucket.remove(name)
        self._uploaded.pop(name, None)
        try:
            os.unlink(os.path.join(self.path, name))
        except FileNotFoundError:
            pass

    def _ours(self, name):
        return name == MANIFEST or bool(self.prefix and shard_pattern(self.prefix).match(name))

    def remove_temp_files(self):
        """The unfinished multipart uploads of this tool's names under the prefix (a kill mid-upload):
        invisible, but kept and billed by the store until aborted."""
        bucket = self.root.split("/", 1)[0]
        for key, upload in self.bucket.unfinished_uploads(self._ours):
            self.bucket.call(self.fs.call_s3, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload)

    def remove_shards(self, manifest, indices):
        for i in sorted(indices, reverse=True):
            for name in reversed(manifest.shards[i].files):
                self._delete(name)

    def remove_unrecorded_next(self, manifest):
        st = manifest.settings
        for name in reversed(shard_files(st["prefix"], len(manifest.shards), st["format"])):
            self._delete(name)

    def remove_run(self, manifest):
        self.remove_temp_files()
        self.remove_shards(manifest, range(len(manifest.shards)))
        self.remove_unrecorded_next(manifest)
        self._delete(MANIFEST)

    def remove_parts(self):
        pass  # a multi-machine run does not write into a bucket yet (refused at start)

    # --- what is there ---
    def check_shards(self, manifest):
        """(n, problem) as OutputDir.check_shards: an object exists only complete, so its size tells."""
        names = self.bucket.listing()
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
    def publish(self, manifest):
        """Upload the listed shard files not yet in the bucket (each removed from the staging directory
        once its size is read back), then the manifest: it never lists an object that is not complete."""
        for e in manifest.shards:
            for name in e.files:  # a megatron .idx before its .bin, as locally
                local = os.path.join(self.path, name)
                size = os.path.getsize(local) if os.path.exists(local) else None
                if name in self._uploaded and (size is None or self._uploaded[name] == size):
                    continue
                self.bucket.call(self.fs.put_file, local, self.bucket.key(name))
                have = self.bucket.call(self.fs.info, self.bucket.key(name)).get("size")
                if have != size:
                    raise UserError(f"{self.url}/{name}: uploaded {size:,} bytes but the store holds {have}; rerun "
                                    "the same command to resume")
                self._uploaded[name] = size
                os.unlink(local)
        with open(manifest.path, "rb") as f:
            self.bucket.call(self.fs.pipe_file, self.bucket.key(MANIFEST), f.read())


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recorded(url, key):
    """What the bucket's manifest recorded under `key` ("source", "settings"), or None; a read without
    the lock, for pinning the Hub revisions before the run begins (the run checks again)."""
    try:
        fs, root = open_fs(url)
        data = json.loads(fs.cat_file(f"{root}/{MANIFEST}"))
        return data.get(key)
    except Exception:
        return None


def open_output(out_dir, prefix, shard_bytes, log=print):
    """The output directory of a one-machine run: local (outdir.OutputDir) or in a bucket."""
    if is_url(out_dir):
        return BucketDir(out_dir, prefix, shard_bytes, log)
    return OutputDir(out_dir, prefix)
