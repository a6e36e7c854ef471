"""The calls a bucket's lock and its clean-up need that fsspec does not have: conditional writes and
deletes, a read with its version, and the uploads a killed command left unfinished. One class per
kind of store, all with the same methods; storage.BucketFiles calls them through its retry.

- S3 (and S3-compatible stores with conditional writes: MinIO, R2): If-None-Match / If-Match on
  PutObject, If-Match on DeleteObject, the ETag; unfinished multipart uploads, aborted.
- Azure Blob Storage (adlfs): the same conditions on the blob (If-None-Match: *, If-Match: ETag);
  a killed upload leaves uncommitted blocks on a name that has no blob yet, which are discarded by
  committing an empty block list there (only if there is still no blob) and deleting that.
- Google Cloud Storage has them only as generation preconditions; no emulator on the package
  registries implements those, so gs:// is not offered as an output (conditional_calls returns None).

A failed condition raises ConditionFailed; a missing object FileNotFoundError; every other failure
is the store's own exception, for storage.is_transient and storage.error_line to judge.
"""
import time


class ConditionFailed(Exception):
    """The store refused a conditional write or delete (412, or 409 for a blob that exists)."""


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


def _age(modified):
    """Seconds since the store's own modification time of an object (its clock, not ours alone)."""
    return time.time() - modified.timestamp()


class S3Calls:
    def __init__(self, fs):
        self.fs = fs

    def put(self, key, data, etag=None):
        """PUT only if the object is absent (etag None) or still the version `etag`; the new ETag."""
        bucket, name = key.split("/", 1)
        cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            return self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data, **cond)["ETag"]
        except OSError as e:  # s3fs: FileExistsError for If-None-Match, an OSError naming 412 for If-Match
            if isinstance(e, FileExistsError) or "pre-condition" in str(e) or "PreconditionFailed" in str(e):
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
            if not isinstance(e, FileNotFoundError) and ("pre-condition" in str(e) or "PreconditionFailed" in str(e)):
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

        return sync(self.fs.loop, read), r["ETag"], _age(r["LastModified"])

    def unfinished(self, root):
        """[(key, upload id)] of the multipart uploads under `root` ("bucket/prefix") never completed."""
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

    def _run(self, key, work):
        """work(blob client) on adlfs's event loop, with the store's answers turned into ours."""
        container, name = key.split("/", 1)

        async def run():
            async with self.fs.service_client.get_blob_client(container, name) as blob:
                return await work(blob)

        try:
            return sync(self.fs.loop, run)
        except (self.exists, self.modified) as e:  # 409 BlobAlreadyExists, 412 ConditionNotMet
            raise ConditionFailed(str(e).splitlines()[0]) from None
        except self.missing as e:  # (ContainerNotFound says so in its text: storage.no_bucket)
            raise FileNotFoundError(str(e).splitlines()[0]) from None

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
            d = await blob.download_blob()
            return await d.readall(), d.properties.etag, _age(d.properties.last_modified)

        return self._run(key, work)

    def unfinished(self, root):
        """[(key, None)] of the names under `root` that hold only uncommitted blocks (a killed upload)."""
        container, prefix = root.split("/", 1)

        async def names(include):
            found = set()
            async for b in self.fs.service_client.get_container_client(container).list_blobs(
                    name_starts_with=prefix + "/", **({"include": include} if include else {})):
                found.add(b.name)
            return found

        staged = sync(self.fs.loop, names, ["uncommittedblobs"]) - sync(self.fs.loop, names, None)
        return [(f"{container}/{name}", None) for name in sorted(staged)]

    def abort(self, key, upload):
        """Discard a name's uncommitted blocks: commit an empty block list only if there is still no
        blob there (If-None-Match: *), then delete that empty blob, only that version."""
        async def work(blob):
            made = await blob.commit_block_list([], match_condition=self.match.IfMissing)
            await blob.delete_blob(etag=made["etag"], match_condition=self.match.IfNotModified)

        try:
            self._run(key, work)
        except ConditionFailed:
            pass  # a blob was committed there meanwhile: not an unfinished upload after all
