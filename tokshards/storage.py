"""Files of an output directory by name, in a local directory or under a bucket prefix (s3://, or any
fsspec URL whose package is installed): what parts.py, assemble.py and cluster.py read and write,
the same way for both. Which of them may be deleted is decided by outdir.py alone.

A file becomes visible under its name only when complete: locally a temporary name, fsync and
rename; in a bucket the upload itself (an object store shows an object once its PUT, or the
completion of its multipart upload, succeeds; s3fs picks a part size under S3's 10,000 parts).

Credentials and endpoint come the usual way (AWS_* variables, profiles, AWS_ENDPOINT_URL for MinIO
or R2) and are never printed. Throttling, 5xx and dropped connections are retried by every call
(attempt) with the tool's logged, budgeted retry (retry.py, --retries/--retry-time), as the Hub's
are; botocore and s3fs are left one quick try each of their own (unless AWS_MAX_ATTEMPTS or
AWS_RETRY_MODE says otherwise). What is not worth retrying, or outlasts the budget, is one line.
"""
import logging
import os
import re
import shutil
import socket
import tempfile

import numpy as np

from .conditional import ConditionFailed, conditional_calls
from .errors import UserError
from .formats import sha256_file
from .manifest import atomic_write, create_file, fsync_dir, remove_file, temp_name
from .retry import FIRST_CONTACT_RETRIES, FIRST_CONTACT_SECONDS, Retrier, budget, log_line

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
STAGING = "fineweb-stage-"  # the local directories a bucket's files are written in before their upload
PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
# Calls that tidy up after the work (a lock's heartbeat, its release) try briefly: the work's own
# calls have the budget, and a command that failed must say so now, not after another half hour.
QUICK = (2, 20.0)
# The variables that say which store and whose credentials: a filesystem is made once per process
# for each URL authority (bucket, host) and each set of them.
IDENTITY_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCS", "FSSPEC_")
_filesystems = {}  # (process id, protocol, authority, identity variables) -> filesystem
_contact = set()  # the protocols that have answered this process


def is_url(path):
    return bool(URL.match(str(path)))


def open_fs(url, whole_bucket=False):
    """(filesystem, root "bucket/prefix") for a URL, or one line saying what is missing. whole_bucket:
    a bucket's root is accepted too (an input may be all of a bucket; an output needs a prefix)."""
    import fsspec  # here, not at the top: only a bucket needs it (and `--help` stays quick)

    protocol = str(url).split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        package = PACKAGES.get(protocol)
        raise UserError(f"{url}: {protocol}:// needs " + (f"the package {package}: pip install {package}" if package
                        else f"a package fsspec names: {e}")) from None
    except ValueError:
        raise UserError(f"{url}: fsspec knows no protocol {protocol}://; give a local directory or an "
                        "s3:// (gs://, az://, ...) URL") from None
    authority = str(url).split("://", 1)[1].split("/", 1)[0]  # (a host or account may come with the URL)
    slot = (os.getpid(), protocol, authority, tuple(sorted((k, v) for k, v in os.environ.items()
                                                           if k.startswith(IDENTITY_PREFIXES))))
    if slot not in _filesystems:  # (made once: each one looks up the credentials anew)
        quick = protocol in ("s3", "s3a") and not {"AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"} & set(os.environ)
        try:
            # listings are read fresh each time: another machine (or a killed run) may have changed them
            fs, root = fsspec.core.url_to_fs(str(url), use_listings_cache=False, skip_instance_cache=True,
                                             **({"config_kwargs": {"retries": {"max_attempts": 2,
                                                                               "mode": "standard"}}} if quick else {}))
        except (TypeError, ValueError) as e:  # a URL that lacks what its filesystem needs (a host, an account)
            hint = f"; set {CREDENTIALS[store_kind(url)]}" if store_kind(url) == "az" else ""
            raise UserError(f"{url}: {protocol}:// cannot be opened from this URL ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''}){hint}") from None
        if quick:  # one quick retry each in botocore and s3fs; the rest is attempt()'s, logged
            fs.retries = 2
        if store_kind(url) == "az":
            configure_azure(fs, url, authority)
        _filesystems[slot] = fs
    fs = _filesystems[slot]
    root = fsspec.core.strip_protocol(str(url)).rstrip("/")
    if "/" not in root and not whole_bucket:
        raise UserError(f"{url}: give a prefix inside the bucket ({protocol}://BUCKET/NAME), not the bucket's root")
    return fs, root


# What a user sets, by store: where the credentials come from, and the endpoint of a store that is not
# the cloud's own (MinIO, R2; Azurite). Never the values: they are not printed.
CREDENTIALS = {"s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
               "az": "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY "
                     "or AZURE_STORAGE_SAS_TOKEN"}
ENDPOINT = {"s3": "AWS_ENDPOINT_URL", "az": "the BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING"}
REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden",  # S3
           "AuthorizationFailure", "AuthenticationFailed", "AuthorizationPermissionMismatch")  # Azure


OUTPUT_STORES = ("s3", "az")  # the stores whose conditional writes the lock uses (conditional.py)


def check_output_store(url):
    """One line for an output URL in a store the lock cannot work in (said before asking for its package)."""
    if store_kind(url) not in OUTPUT_STORES:
        raise UserError(f"{str(url).rstrip('/')}: writing there needs conditional writes (for the lock), which this "
                        "tool uses on s3:// (AWS, or an S3-compatible store such as MinIO or R2) and az:// (Azure Blob "
                        "Storage); use one of those or a local directory")


def store_kind(url):
    """"s3", "az" or the URL's own protocol: which store's settings a line names."""
    protocol = str(url).split("://", 1)[0]
    return {"s3a": "s3", "abfs": "az", "abfss": "az"}.get(protocol, protocol)


def configure_azure(fs, url, authority):
    """Azure's SDK as s3fs above: one quick retry of its own (its default, 3 retries 15-60 s apart, hides
    a dead endpoint for minutes; the rest is attempt()'s, logged), and its log lines (azure-identity
    prints a block per credential it tried) not on the terminal: a failure is our one line. And an
    account named in the URL (CONTAINER@ACCOUNT...) must be the one the credentials are for: adlfs
    would write to the credentials' account whatever the URL says."""
    logging.getLogger("azure").setLevel(logging.ERROR)
    client = getattr(fs, "service_client", None)
    policy = getattr(getattr(client, "_config", None), "retry_policy", None)  # (the SDK's own object, shared
    for name, value in (("total_retries", 1), ("connect_retries", 1), ("read_retries", 1),  # by every blob
                        ("status_retries", 1), ("initial_backoff", 1), ("increment_base", 1)):  # client of it)
        if hasattr(policy, name):
            setattr(policy, name, value)
    if "@" in authority:
        named, have = authority.split("@", 1)[1].split(".", 1)[0], getattr(client, "account_name", None)
        if named != have:
            raise UserError(f"{url} names the storage account {named}, but the credentials are for {have}; "
                            f"give az://CONTAINER/PATH with {CREDENTIALS['az']} for that account")


def error_line(e, url):
    """The one line for a failure the storage client gave up on (never with credentials in it)."""
    name = type(e).__name__
    text = str(e).splitlines()[0][:200] if str(e) else name
    kind = store_kind(url)
    credentials = CREDENTIALS.get(kind, "the credentials its fsspec package reads")
    endpoint = ENDPOINT.get(kind, "the endpoint")
    classes = {c.__name__ for c in type(e).__mro__}
    if (name in ("NoCredentialsError", "PartialCredentialsError", "CredentialUnavailableError")
            or "failed to retrieve a token" in text):  # (azure-identity: no credential of the kinds it tries)
        return f"{url}: no credentials found; set {credentials}" + (
            f" ({endpoint} for MinIO, R2 or another S3-compatible store)" if kind == "s3" else "")
    status = getattr(e, "status_code", None)
    if (isinstance(e, PermissionError) or status in (401, 403) or "ClientAuthenticationError" in classes
            or any(k in text for k in REFUSED)):
        return (f"{url}: access refused ({text}); check the credentials ({credentials}) and that they may read and "
                "write this bucket")
    if isinstance(e, FileNotFoundError) and no_bucket(e):
        return no_bucket_line(url, text)
    if status == 400:  # the store refused the request itself: the URL (a name the store does not allow)
        return f"{url}: the store refused the request ({name}: {text}); check the URL" + (
            " (a container's name: 3-63 lowercase letters, digits and hyphens)" if kind == "az" else "")
    return (f"{url}: the storage failed ({name}: {text}); check the endpoint and the network, then rerun the same "
            "command to resume")


def no_bucket_line(url, text):
    kind = store_kind(url)
    return (f"{url}: the {'container' if kind == 'az' else 'bucket'} does not exist ({text}); create it, or check the "
            f"name and {ENDPOINT.get(kind, 'the endpoint')}")


def no_bucket(e):
    """The store said the bucket (Azure: the container) does not exist: raised as a FileNotFoundError
    that says so, or whose cause does (adlfs raises one naming only the path, from the SDK's error)."""
    for _ in range(4):
        if e is None:
            return False
        text = f"{e} {getattr(e, 'error_code', '')} {getattr(getattr(e, 'error_code', None), 'value', '')}"
        if any(k in text for k in ("NoSuchBucket", "ContainerNotFound")) or any(
                k in text.lower() for k in ("bucket does not exist", "container does not exist")):
            return True
        e = e.__cause__ or e.__context__
    return False


def attempt(url, fn, *args, keep=(), quick=False, **kw):
    """fn(*args, **kw), retried while it fails for a reason worth retrying (is_transient), within the
    budget (quick: QUICK's), a line each time; any other failure is one line, but for the exceptions
    in `keep`, which the caller handles. fn must be safe to repeat (every call here is: a read, a
    whole upload, a delete or abort whose caller takes "not found" as done, a conditional PUT whose
    caller reads back what it finds)."""
    protocol = str(url).split("://", 1)[0]
    retrier = None
    while True:
        try:
            out = fn(*args, **kw)
            _contact.add(protocol)
            return out
        except UserError:
            raise
        except Exception as e:
            if not is_transient(e):
                if getattr(e, "response", None) is not None or isinstance(e, OSError):
                    _contact.add(protocol)  # the store answered (404, 403, 412 ...)
                if isinstance(e, keep):
                    raise
                raise UserError(error_line(e, url)) from None
            if retrier is None:
                attempts, seconds = QUICK if quick else budget()
                # (a short budget until the store has answered the command once: retry.FIRST_CONTACT_*;
                # only in the command's own process, as a worker or a Ray task starts after that)
                if protocol not in _contact and is_command_process():
                    attempts, seconds = min(attempts, FIRST_CONTACT_RETRIES), min(seconds, FIRST_CONTACT_SECONDS)
                retrier = Retrier(attempts, seconds, log_line)
            op = getattr(fn, "__name__", "a call").lstrip("_")
            retrier.wait(e, f"{url} ({op})", f"check the endpoint ({ENDPOINT.get(store_kind(url), 'its URL')}) and the "
                         "network, then rerun the same command to resume", data=False)


# botocore's codes for trouble on the store's side that passes (HTTP 5xx but 501 and 505, 408 and 429
# are too), or a body damaged on the way (a checksum the store refused: sent again, it passes)
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
                   "TooManyRequestsException", "RequestTimeout", "InternalError", "ServiceUnavailable",
                   "OperationAborted", "ConditionalRequestConflict", "BadDigest", "XAmzContentSHA256Mismatch"}
PERMANENT_STATUS = (501, 505)  # Not Implemented (a store without conditional writes), HTTP version
PERMANENT_CLASSES = {"SSLError", "InvalidProxiesConfigError", "ProxyConnectionError"}  # settings, not the weather
# exception classes (by name: botocore, aiohttp and fsspec are imported only with a bucket) of a
# connection that failed, dropped or timed out, or an answer cut short
TRANSIENT_CLASSES = {"HTTPClientError", "ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError",
                     "ClientOSError", "IncompleteRead", "FSTimeoutError", "ResponseParserError",
                     "ResponseStreamingError", "ConnectionError", "TimeoutError",
                     # azure-core's: no answer, or an answer cut short (its subclasses for timeouts too)
                     "ServiceRequestError", "ServiceResponseError", "IncompleteReadError"}


def is_transient(e):
    """A store's failure worth retrying: throttling, 5xx, a dropped or timed-out connection. Not a
    missing object or bucket, refused credentials, or a failed condition (412)."""
    seen = 0
    while e is not None and seen < 6:
        if isinstance(e, (FileNotFoundError, PermissionError, FileExistsError)):
            return False
        names = {c.__name__ for c in type(e).__mro__}
        if names & PERMANENT_CLASSES:
            return False
        if names & TRANSIENT_CLASSES:
            return True
        response = getattr(e, "response", None)
        if isinstance(response, dict):  # a botocore ClientError: what the store answered
            meta, error = response.get("ResponseMetadata"), response.get("Error")
            status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
            status = status if isinstance(status, int) else 0
            code = error.get("Code") if isinstance(error, dict) else None
            if status in PERMANENT_STATUS or code == "NotImplemented":
                return False
            return code in TRANSIENT_CODES or status >= 500 or status in (408, 429)
        status = getattr(e, "status_code", None)
        if "AzureError" in names and isinstance(status, int):  # an azure-core HttpResponseError: the answer
            return status not in PERMANENT_STATUS and (status >= 500 or status in (408, 429))
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def is_command_process():
    """This process is the command itself, not a worker or a Ray task it started (retry.retry_budget)."""
    return os.environ.get("FINEWEB_COMMAND_PID", str(os.getpid())) == str(os.getpid())


def files_at(root):
    """The files under `root`: a local directory, or a bucket URL."""
    return BucketFiles(root) if is_url(root) else LocalFiles(root)


def _tag():
    """Unique per process: a task that Ray retries may overlap a lost node's attempt still running."""
    return f".{socket.gethostname()}.{os.getpid()}"


def staging_prefix():
    """The name of a local staging directory of this process: its pid says when it is left over."""
    return f"{STAGING}{os.getpid()}-"


def remove_stale_staging():
    """Staging directories of this tool (by name) whose process is gone (a SIGKILL): they may hold a
    shard or a part each. Only this machine's temporary directory, only those names."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        m = re.match(rf"^{re.escape(STAGING)}(\d+)-", name)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _discard(local):
    """A local copy that has done its work, and the directory staging() made for it once empty."""
    try:
        os.unlink(local)
    except FileNotFoundError:
        pass
    d = os.path.dirname(local)
    if os.path.basename(d).startswith(STAGING):
        try:
            os.rmdir(d)
        except OSError:
            pass  # not empty: a run's staging directory, which its owner removes


class LocalFiles:
    def __init__(self, root):
        self.root = str(root)

    def path(self, name):
        return os.path.join(self.root, name)

    def size(self, name):
        try:
            return os.path.getsize(self.path(name))
        except OSError:
            return None

    def read(self, name):
        """The file's bytes, or None if there is none."""
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_array(self, name, dtype, a, b):
        """Items [a, b) of a file of `dtype` values (memory-mapped: nothing is read until used)."""
        if b <= a:
            return np.empty(0, dtype=dtype)
        return np.memmap(self.path(name), dtype=dtype, mode="r")[a:b]

    def sha256(self, name):
        return sha256_file(self.path(name))

    def discard(self, local):
        remove_file(local)

    def staging_space(self, name):
        """(the local directory staging(name) writes in, its free bytes)."""
        d = os.path.dirname(self.path(name))
        while not os.path.isdir(d) and os.path.dirname(d) != d:  # (parts/ is made on the first write)
            d = os.path.dirname(d)
        return d, shutil.disk_usage(d).free

    def staging(self, name):
        """A new local file for `name` to be written to, then given to put(); its directory exists."""
        path = temp_name(self.path(name), _tag())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def put(self, local, name):
        """A complete, fsynced local file from staging() takes its name."""
        os.replace(local, self.path(name))

    def synced(self, sub):
        fsync_dir(self.path(sub))

    def write(self, name, write):
        """Write a file atomically: `write` is bytes or a function of the open file (its result is returned)."""
        os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
        return atomic_write(self.path(name), write, tag=_tag())

    def create_once(self, name, data):
        """Write `name` only if it does not exist yet, atomically (a hard link of a complete temporary
        file: exactly one of many processes racing wins). True if this process created it."""
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = temp_name(path, _tag())
        with create_file(tmp) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            fsync_dir(os.path.dirname(path))
            return True
        except FileExistsError:
            return False
        finally:
            remove_file(tmp)


class BucketFiles:
    """A prefix in a bucket: objects by name, every failure as one line."""

    def __init__(self, url, quick=False):
        """quick: every call with a short budget of retries (storage.QUICK), for tidying up."""
        self.url, self.quick = str(url).rstrip("/"), quick
        self.fs, self.root = open_fs(self.url)
        self.calls = conditional_calls(self.fs)  # the lock's conditional writes (s3://, az://: check_output_store)

    def key(self, name):
        return f"{self.root}/{name}"

    def call(self, fn, *args, keep=(), **kw):
        return attempt(self.url, fn, *args, keep=keep, quick=self.quick, **kw)

    def listing(self, sub=""):
        """{name: size} of the objects directly under the prefix (or its `sub` folder)."""
        where = self.key(sub) if sub else self.root
        try:
            entries = self.call(self.fs.ls, where, detail=True, keep=FileNotFoundError)
        except FileNotFoundError:
            return {}
        return {e["name"].rstrip("/").rsplit("/", 1)[-1]: (e.get("size") if e.get("type") != "directory" else None)
                for e in entries}

    def size(self, name):
        try:
            return self.call(self.fs.info, self.key(name), keep=FileNotFoundError).get("size")
        except FileNotFoundError:
            return None

    def sha256(self, name):
        return None  # not read back: an object exists only complete, and its size is checked

    def discard(self, local):
        _discard(local)

    def read(self, name):
        try:
            return self.call(self.fs.cat_file, self.key(name), keep=FileNotFoundError)
        except FileNotFoundError as e:
            if no_bucket(e):
                raise UserError(error_line(e, self.url)) from None
            return None

    def get(self, name, local):
        """Download an object to a local file."""
        self.call(self.fs.get_file, self.key(name), local)

    def read_array(self, name, dtype, a, b, offset=0):
        """Items [a, b) of an object of `dtype` values after `offset` bytes (a header): one ranged GET."""
        dtype = np.dtype(dtype)
        if b <= a:
            return np.empty(0, dtype=dtype)
        start, end = offset + a * dtype.itemsize, offset + b * dtype.itemsize
        data = self.call(self.fs.cat_file, self.key(name), start=start, end=end)
        if len(data) != end - start:
            raise UserError(f"{self.url}/{name}: read {len(data):,} bytes at {start:,}, expected {end - start:,}; "
                            f"was it changed? check it with: python fineweb.py verify {self.url}")
        return np.frombuffer(data, dtype=dtype)

    def staging_space(self, name):
        """(the local directory staging(name) writes in, its free bytes)."""
        d = tempfile.gettempdir()
        return d, shutil.disk_usage(d).free

    def staging(self, name):
        d = tempfile.mkdtemp(prefix=staging_prefix())
        return os.path.join(d, os.path.basename(name))

    def put(self, local, name):
        """Upload a complete local file under its name, check the size the store holds, and remove the
        local file (and the directory staging() made for it, once empty)."""
        size = os.path.getsize(local)
        try:
            self.call(self.fs.put_file, local, self.key(name))
            have = self.call(self.fs.info, self.key(name)).get("size")
            if have != size:
                raise UserError(f"{self.url}/{name}: uploaded {size:,} bytes but the store holds {have}; rerun "
                                "the same command to resume")
        finally:
            _discard(local)

    def synced(self, sub):
        pass  # an object is durable once its upload returned

    def write(self, name, write):
        local = self.staging(name)
        try:
            result = atomic_write(local, write)
        except BaseException:
            _discard(local)
            raise
        self.put(local, name)
        return result

    def create_once(self, name, data):
        """A conditional PUT (If-None-Match): True if this process created the object."""
        return self.put_if(name, data) is not None

    def put_if(self, name, data, etag=None):
        """PUT only if the object is absent (etag None) or still the version `etag`: a conditional
        write, which exactly one of many racing writers wins. The new ETag, or None if the condition failed."""
        try:
            return self.call(self.calls.put, self.key(name), data, etag, keep=ConditionFailed)
        except ConditionFailed:
            pass
        # the condition failed: lost to another writer, or this PUT succeeded before its answer was lost
        # and a retry found its own object (a holder's data is unique: host, pid, time; an empty
        # body is not, and is never taken for this process's own)
        now = self.read_versioned(name) if data else None
        return now[1] if now is not None and now[0] == data else None

    def put_bytes(self, name, data):
        """An unconditional PUT; the new ETag."""
        return self.call(self.calls.put_bytes, self.key(name), data)

    def delete_if(self, name, etag):
        """Delete the object only if it is still the version `etag` (a store without conditional
        deletes deletes it anyway: used for this command's own objects only)."""
        try:
            self.call(self.calls.delete, self.key(name), etag, keep=(ConditionFailed, FileNotFoundError))
        except (ConditionFailed, FileNotFoundError):
            pass  # another version now, or gone already (a retry whose first try's answer was lost)

    def read_versioned(self, name):
        """(bytes, ETag, age in seconds by the store's clock stamp) of an object, or None if there is none."""
        try:
            return self.call(self.calls.get, self.key(name), keep=FileNotFoundError)
        except FileNotFoundError as e:
            if no_bucket(e):
                raise UserError(error_line(e, self.url)) from None
            return None

    def remove(self, name):
        try:
            self.call(self.fs.rm_file, self.key(name), keep=FileNotFoundError)
        except FileNotFoundError:
            pass

    def unfinished_uploads(self, ours):
        """[(key, upload id)] of the uploads under the prefix never completed (S3's multipart uploads;
        none on Azure: conditional.py) whose name (relative to the prefix) `ours` accepts."""
        start = len(self.root) + 1
        return [(key, upload) for key, upload in self.call(self.calls.unfinished, self.root) if ours(key[start:])]

    def abort_upload(self, key, upload):
        try:
            self.call(self.calls.abort, key, upload, keep=FileNotFoundError)
        except FileNotFoundError:
            pass  # aborted already (a retry whose first try's answer was lost), or completed meanwhile


class RemoteTokens:
    """A shard's tokens in a bucket, read by ranged GETs as they are sliced: what open_tokens'
    memory map is for a local shard (len() and slices of it)."""

    def __init__(self, files, name, dtype, tokens, nbytes):
        self.files, self.name, self.dtype, self.n = files, name, np.dtype(dtype), tokens
        self.offset = nbytes - tokens * self.dtype.itemsize  # the header, if the format has one

    def __len__(self):
        return self.n

    def __getitem__(self, sl):
        a, b, step = sl.indices(self.n)
        assert step == 1, "slices only"
        return self.files.read_array(self.name, self.dtype, a, b, self.offset)
