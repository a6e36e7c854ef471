"""The calls a bucket's lock and its clean-up need that fsspec does not have: conditional writes and
deletes, a read with its version, and the uploads a killed command left unfinished. One class per
kind of store, all with the same methods; storage.BucketFiles calls them through its retry.

- S3 (and S3-compatible stores with conditional writes: MinIO, R2): If-None-Match / If-Match on
  PutObject, If-Match on DeleteObject, the ETag; unfinished multipart uploads, aborted.
- Azure Blob Storage (adlfs): the same conditions on the blob (If-None-Match: *, If-Match: ETag).
  A killed upload leaves uncommitted blocks under its name: invisible, discarded by the service when
  the name is next written (the rerun writes it) and after 7 days in any case. They are left to that:
  discarding them ourselves would take a visible empty blob under a shard's name (an empty commit,
  then a delete), which a kill or a failed delete in between would leave behind.
- Google Cloud Storage has them only as generation preconditions; no emulator on the package
  registries implements those, so gs:// is not offered as an output (conditional_calls returns None).

A failed condition raises ConditionFailed; a missing object FileNotFoundError; every other failure
is the store's own exception, for storage.is_transient and storage.error_line to judge. A lock's age
is measured by the store's clock alone: the answer's Date less the object's Last-Modified.
"""
import time
from email.utils import parsedate_to_datetime


class ConditionFailed(Exception):
    """The store refused a conditional write or delete because its condition failed (S3: 412; Azure:
    ConditionNotMet, or BlobAlreadyExists for If-None-Match)."""


def conditional_calls(fs):
    """The conditional calls for this filesystem's store, or None if it has none here."""
    if hasattr(fs, "call_s3"):
        return S3Calls(fs)
    if type(fs).__name__ == "AzureBlobFileSystem":
        return AzureCalls(fs)
    return None


def sync(loop, fn, *args):
    """fn(*args) on the filesystem's event loop. (fsspec is imported here, not at the top: storage.py
    imports this module for every run, and only a bucket needs fsspec, ~0.1 s of start-up.)"""
    from fsspec.asyn import sync as run

    return run(loop, fn, *args)


def _age(date, modified):
    """Seconds from an object's Last-Modified to the Date of the answer that read it: both stamped by
    the store, so a client whose clock is wrong judges a lock's age right. (No Date: this machine's clock.)"""
    try:
        now = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        now = time.time()
    return now - modified.timestamp()


def _s3_condition_failed(e):
    """S3 answered 412 PreconditionFailed: s3fs raises FileExistsError for If-None-Match, an OSError
    naming the 412 for If-Match. (A missing object is a FileNotFoundError, never this.)"""
    return isinstance(e, FileExistsError) or "pre-condition" in str(e) or "PreconditionFailed" in str(e)


class S3Calls:
    def __init__(self, fs):
        self.fs = fs

    def put(self, key, data, etag=None):
        """PUT only if the object is absent (etag None) or still the version `etag`; the new ETag."""
        bucket, name = key.split("/", 1)
        cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            return self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data, **cond)["ETag"]
        except OSError as e:
            if _s3_condition_failed(e):
                raise ConditionFailed(str(e)) from None
            raise

    def put_bytes(self, key, data):
        bucket, name = key.split("/", 1)
        return self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data)["ETag"]

    def delete(self, key, etag):
        """Delete only if still the version `etag` (a store without conditional deletes deletes anyway)."""
        bucket, name = key.split("/", 1)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=name, IfMatch=etag)
        except OSError as e:
            if _s3_condition_failed(e):
                raise ConditionFailed(str(e)) from None
            raise

    def get(self, key):
        """(bytes, ETag, age in seconds) of an object: the answer and its body in one call, so that a
        body cut short is retried with its GET."""
        bucket, name = key.split("/", 1)
        r = self.fs.call_s3("get_object", Bucket=bucket, Key=name)

        async def read():  # aiobotocore's streaming body, read on s3fs's event loop
            async with r["Body"] as stream:
                return await stream.read()

        date = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return sync(self.fs.loop, read), r["ETag"], _age(date, r["LastModified"])

    def unfinished(self, root):
        """[(key, upload id)] of the multipart uploads under `root` ("bucket/prefix") never completed:
        kept, and billed, by the store until aborted."""
        bucket, prefix = root.split("/", 1)
        return [(f"{bucket}/{up['Key']}", up["UploadId"]) for up in self.fs.list_multipart_uploads(bucket)
                if up.get("Key", "").startswith(prefix + "/")]

    def abort(self, key, upload):
        bucket, name = key.split("/", 1)
        self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=name, UploadId=upload)


class AzureCalls:
    def __init__(self, fs):
        from azure.core import MatchConditions  # (adlfs brings azure-core and azure-storage-blob)
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        self.fs, self.match = fs, MatchConditions
        self.exists, self.modified, self.missing = ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        # the store's answers that mean "the condition failed": any other 409 or 412 (a blob under a
        # legal hold or another's lease, a container being deleted) is a failure to report, not a race lost
        self.failed_conditions = ("BlobAlreadyExists", "ConditionNotMet")

    def failed_condition(self, e):
        """Did the store refuse a write or delete because its condition failed (and for no other reason)?"""
        return isinstance(e, (self.exists, self.modified)) and e.error_code in self.failed_conditions

    def _run(self, key, work):
        """work(blob client) on adlfs's event loop, with the store's answers turned into ours."""
        container, name = key.split("/", 1)

        async def run():
            async with self.fs.service_client.get_blob_client(container, name) as blob:
                return await work(blob)

        try:
            return sync(self.fs.loop, run)
        except (self.exists, self.modified) as e:
            if self.failed_condition(e):
                raise ConditionFailed(str(e).splitlines()[0]) from None
            raise
        except self.missing as e:  # (a missing container says ContainerNotFound: storage.no_bucket)
            code = getattr(e.error_code, "value", e.error_code)  # (an enum of the SDK's, or a str)
            raise FileNotFoundError(f"{code}: {str(e).splitlines()[0]}") from None

    def put(self, key, data, etag=None):
        cond = ({"overwrite": True, "etag": etag, "match_condition": self.match.IfNotModified} if etag
                else {"overwrite": False})

        async def work(blob):
            return (await blob.upload_blob(data, **cond))["etag"]

        return self._run(key, work)

    def put_bytes(self, key, data):
        async def work(blob):
            return (await blob.upload_blob(data, overwrite=True))["etag"]

        return self._run(key, work)

    def delete(self, key, etag):
        async def work(blob):
            await blob.delete_blob(etag=etag, match_condition=self.match.IfNotModified)

        return self._run(key, work)

    def get(self, key):
        async def work(blob):
            dates = []  # the Date of the answer (the SDK keeps only the blob's own properties)
            d = await blob.download_blob(raw_response_hook=lambda r: dates.append(r.http_response.headers.get("Date")))
            return await d.readall(), d.properties.etag, _age(dates[-1] if dates else None, d.properties.last_modified)

        return self._run(key, work)

    def unfinished(self, root):
        """Nothing: staged blocks are discarded by the service (the module's docstring)."""
        return []

    def abort(self, key, upload):
        raise AssertionError("an Azure upload is never aborted (unfinished() lists none)")
