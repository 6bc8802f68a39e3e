"""One S3-compatible bucket through the `minio` SDK: settings from the environment, URIs,
errors that say what to fix, and `S3Store`, whose every transfer is verified against the
sha256 stored as object metadata and whose transient failures are retried with backoff."""

from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import io
import logging
import mimetypes
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

from sempair import SempairError
from sempair.storage.hashing import HASH_BLOCK, sha256_file

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB   # the S3 minimum for every multipart part but the last
SHA256_META = "sha256"    # stored as the object metadata header x-amz-meta-sha256
# opt-in to reading objects that carry no sha256 (written by another tool): unverified bytes
ALLOW_UNVERIFIED_ENV = "SEMPAIR_ALLOW_UNVERIFIED"

# S3 error codes worth another try; anything else the server says is final
TRANSIENT_CODES = frozenset({
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"})
CREDENTIAL_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed"})

log = logging.getLogger(__name__)
T = TypeVar("T")


class StorageError(SempairError):
    """The object store or a folder cannot be used as asked; the message says how to fix it."""


class NotFoundError(StorageError, FileNotFoundError):
    """No object (or file) at that URI: a FileNotFoundError too, whatever the backend."""


# -- settings --------------------------------------------------------------------------

@dataclass(frozen=True)
class S3Settings:
    """Where the object store is and who we are: from the environment, never from files."""

    endpoint: str                                        # http(s)://host[:port]
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    allow_unverified: bool = False    # read objects without a recorded sha256 (opt-in)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Read AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional
        AWS_SESSION_TOKEN and AWS_REGION (default us-east-1): the variables boto3 and DVC
        read, so one set (or one Kubernetes Secret) drives both. SEMPAIR_ALLOW_UNVERIFIED=1
        accepts objects that carry no sha256 (see `S3Store.download`)."""
        env = os.environ if env is None else env
        names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        missing = [name for name in names if not env.get(name)]
        if missing:
            raise StorageError(f"s3:// needs the object store's settings: set {', '.join(missing)}"
                               " in the environment (on Kubernetes, from the storage Secret)")
        return cls(env["AWS_ENDPOINT_URL"].rstrip("/"), env["AWS_ACCESS_KEY_ID"],
                   env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN") or None,
                   env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                   _flag(env, ALLOW_UNVERIFIED_ENV))

    def __post_init__(self):
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
            raise StorageError(f"AWS_ENDPOINT_URL={self.endpoint!r} is not an endpoint; set it "
                               "to http(s)://host[:port], e.g. http://minio.storage:9000")

    @property
    def secure(self) -> bool:
        return self.endpoint.startswith("https://")

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc


@dataclass(frozen=True)
class Transfer:
    """How hard to try and how big the pieces are."""

    retries: int = 5               # further attempts after a transient failure
    backoff: float = 0.5           # seconds before the first retry; doubles each time, jittered
    backoff_max: float = 20.0      # seconds, at most, between two attempts
    part_size: int = 16 * MIB      # multipart part size: larger files upload in parts
    connect_timeout: float = 10.0  # seconds
    read_timeout: float = 120.0    # seconds without a byte before a request counts as failed
    workers: int = 4               # files transferred at once by upload_dir / download_dir

    def __post_init__(self):
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size {self.part_size} is below S3's minimum of 5 MiB")

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, so clients spread out."""
        ceiling = min(self.backoff_max, self.backoff * 2 ** attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


TRANSFER = Transfer()


# -- URIs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str = ""   # no leading or trailing '/'; '' is the bucket's root

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, relative: str) -> str:
        """The object key of a path relative to this prefix (which it may not leave)."""
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or ".." in parts:
            raise ValueError(f"{relative!r} is not a path inside {self}")
        return "/".join(p for p in (self.prefix, *parts) if p)

    @property
    def folder(self) -> str:
        """The listing prefix of everything below: 'prefix/' ('' for the bucket)."""
        return f"{self.prefix}/" if self.prefix else ""


def unsafe_relative_key(relative: str) -> bool:
    """True when `relative` (an object key below a prefix) would not name a path inside a
    local folder: empty, absolute (an empty first segment), '..', '.', an empty segment,
    a backslash or NUL. Keys are chosen by whoever can write to the bucket."""
    return not relative or any(part in ("", ".", "..") or "\\" in part or "\0" in part
                               for part in relative.split("/"))


def is_remote(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> S3Uri:
    """`s3://bucket/some/prefix/` -> S3Uri('bucket', 'some/prefix')."""
    if not is_remote(uri):
        raise StorageError(f"{uri!r} is not an s3:// URI; write s3://bucket/prefix")
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket; write s3://bucket/prefix")
    try:
        check_bucket_name(bucket)
    except ValueError as error:
        raise StorageError(f"{uri!r}: {error}; a bucket name is 3-63 lowercase letters, "
                           "digits, dots and hyphens") from None
    return S3Uri(bucket, "/".join(p for p in prefix.split("/") if p))


def _local(uri: str | Path) -> Path:
    text = str(uri)
    scheme, sep, _ = text.partition("://")
    if sep and scheme != "file":
        raise StorageError(f"unsupported URI {text!r}: use a local path or s3://bucket/prefix")
    return Path(text.removeprefix("file://"))


# -- one bucket ------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    sha256: str | None = None   # from stat only: listings do not carry metadata


class S3Store:
    """One bucket: list, stat, transfer files and small texts, every transfer verified."""

    def __init__(self, bucket: str, settings: S3Settings | None = None,
                 transfer: Transfer = TRANSFER):
        self.bucket = bucket
        self.settings = settings or S3Settings.from_env()
        self.transfer = transfer
        self.client = Minio(self.settings.host, self.settings.access_key,
                            self.settings.secret_key, self.settings.session_token,
                            secure=self.settings.secure, region=self.settings.region,
                            http_client=_http_client(transfer))

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""
        objects = self._call(f"listing {self.uri(prefix)}", lambda: builtins.list(
            self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)))
        return sorted((ObjectInfo(o.object_name, o.size or 0, o.etag or "")
                       for o in objects if not o.is_dir), key=lambda o: o.key)

    def stat(self, key: str) -> ObjectInfo:
        stat = self._call(f"reading {self.uri(key)}",
                          lambda: self.client.stat_object(self.bucket, key))
        return ObjectInfo(key, stat.size or 0, stat.etag or "",
                          stat.metadata.get(f"x-amz-meta-{SHA256_META}"))

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFoundError:
            return False
        return True

    def ensure_bucket(self) -> bool:
        """Create the bucket if it does not exist; True if it was created."""
        if self._call(f"checking {self.uri()}", lambda: self.client.bucket_exists(self.bucket)):
            return False
        self._call(f"creating {self.uri()}", lambda: self.client.make_bucket(
            self.bucket, location=self.settings.region or None))
        return True

    def delete(self, key: str) -> None:
        self._call(f"deleting {self.uri(key)}",
                   lambda: self.client.remove_object(self.bucket, key))

    def upload(self, path: str | Path, key: str) -> str:
        """Upload a file (in parts when larger than part_size); returns its verified sha256."""
        path = Path(path)
        with open(path, "rb") as handle:
            digest = sha256_file(handle)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._call(f"uploading {path} to {self.uri(key)}", lambda: self.client.fput_object(
            self.bucket, key, str(path), content_type=content_type,
            metadata={SHA256_META: digest}, part_size=self.transfer.part_size))
        self._check_stored(key, path.stat().st_size, digest)
        return digest

    def download(self, key: str, dest: str | Path, require_checksum: bool = True) -> str:
        """Download to `dest` via a temp name, then rename; returns the verified sha256.

        An object without a recorded sha256 is refused unless `require_checksum` is False
        (recordings from cameras and other tools: media, decoded as untrusted input anyway)
        or the settings allow unverified objects ($SEMPAIR_ALLOW_UNVERIFIED=1).
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}")
        try:
            digest = self._call(f"downloading {self.uri(key)}", lambda: self._get(
                key, functools.partial(open, part, "wb"), require_checksum))
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
        return digest

    def read_bytes(self, key: str) -> bytes:
        def attempt() -> bytes:
            buffer = io.BytesIO()
            self._get(key, lambda: contextlib.nullcontext(buffer))
            return buffer.getvalue()

        return self._call(f"downloading {self.uri(key)}", attempt)

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream"
                    ) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._call(f"uploading to {self.uri(key)}", lambda: self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
            metadata={SHA256_META: digest}))
        self._check_stored(key, len(data), digest)
        return digest

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str) -> str:
        content_type = mimetypes.guess_type(key)[0] or "text/plain"
        return self.write_bytes(key, text.encode(), content_type)

    # -- verification ------------------------------------------------------------------

    def _get(self, key: str, open_out: Callable[[], contextlib.AbstractContextManager],
             require_checksum: bool = True) -> str:
        """One GET into a fresh output, hashed on the way; the stored sha256 must match,
        and must exist unless not required."""
        response = self.client.get_object(self.bucket, key)
        try:
            expected = response.headers.get(f"x-amz-meta-{SHA256_META}")
            if expected is None and require_checksum and not self.settings.allow_unverified:
                raise StorageError(
                    f"{self.uri(key)} has no sha256 metadata, so its bytes cannot be verified "
                    "(it was not written by sempair); refusing it. Publish it with sempair "
                    f"(which records x-amz-meta-{SHA256_META}), or, if you trust everyone who "
                    f"can write to the bucket, set {ALLOW_UNVERIFIED_ENV}=1")
            digest = hashlib.sha256()
            with open_out() as out:
                for block in response.stream(HASH_BLOCK, decode_content=False):
                    digest.update(block)
                    out.write(block)
        finally:
            response.close()
            response.release_conn()
        if expected and expected != digest.hexdigest():
            raise StorageError(f"{self.uri(key)} failed its checksum: its bytes hash to sha256 "
                               f"{digest.hexdigest()[:12]}…, not the {expected[:12]}… recorded "
                               "at upload; the object is corrupt: upload it again")
        return digest.hexdigest()

    def _check_stored(self, key: str, size: int, digest: str) -> None:
        stored = self.stat(key)
        if stored.size != size or stored.sha256 != digest:
            raise StorageError(f"{self.uri(key)} did not verify after upload (size "
                               f"{stored.size} vs {size}, sha256 {stored.sha256} vs {digest}); "
                               "something else wrote it meanwhile: upload it again")

    # -- retries and errors ------------------------------------------------------------

    def _call(self, what: str, action: Callable[[], T]) -> T:
        """Run `action` (one S3 operation), retrying transient failures; any failure
        becomes a StorageError that says what to fix."""
        for attempt in range(self.transfer.retries + 1):
            try:
                return action()
            except Exception as error:
                if not _transient(error) or attempt == self.transfer.retries:
                    explained = self._explain(error, what, attempts=attempt + 1)
                    if explained is error:
                        raise
                    raise explained from error
                delay = self.transfer.delay(attempt)
                log.warning("%s failed (%s); retry %d of %d in %.1f s", what, _short(error),
                            attempt + 1, self.transfer.retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _explain(self, error: Exception, what: str, attempts: int = 1) -> Exception:
        endpoint = self.settings.endpoint
        code = getattr(error, "code", None)
        if _is_connection_error(error):
            return StorageError(f"cannot reach the object store at {endpoint}: "
                                f"{_connection_reason(error)} ({attempts} attempts); check "
                                "AWS_ENDPOINT_URL and that the server runs")
        if isinstance(error, urllib3.exceptions.SSLError):
            return StorageError(f"TLS with {endpoint} failed ({error}); check the endpoint's "
                                "certificate, or point SSL_CERT_FILE at its CA bundle")
        if code in CREDENTIAL_CODES:
            return StorageError(f"the object store at {endpoint} rejected the credentials "
                                f"({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                                "(and AWS_SESSION_TOKEN if you use one)")
        if code == "NoSuchBucket":
            return StorageError(f"bucket '{self.bucket}' does not exist on {endpoint}; create "
                                "it (e.g. `mc mb`, or the k8s bucket Job)")
        if code == "NoSuchKey":
            return NotFoundError(f"{what}: no such object on {endpoint}")
        if code == "AccessDenied":
            return StorageError(f"{what}: access denied by {endpoint}; check the credentials "
                                f"and that they may read and write bucket '{self.bucket}'")
        if isinstance(error, S3Error):
            return StorageError(f"{what}: the object store said {code}: {error.message}"
                                + (f" ({attempts} attempts)" if attempts > 1 else ""))
        if isinstance(error, InvalidResponseError | ServerError):
            return StorageError(f"{what}: {endpoint} answered HTTP {_status(error)} "
                                f"({attempts} attempts) and not as an S3 server would; check "
                                "AWS_ENDPOINT_URL and the server's health")
        return error   # ours (a checksum) or a local problem (a missing file): already clear


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value not in ("", "0", "1", "false", "true", "no", "yes"):
        raise StorageError(f"{name}={env[name]!r} is not a yes/no value; set it to 1 or 0")
    return value in ("1", "true", "yes")


def _http_client(transfer: Transfer) -> urllib3.PoolManager:
    """urllib3 without its own retries: `S3Store._call` alone decides, predictably."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=transfer.connect_timeout, read=transfer.read_timeout),
        retries=False, maxsize=max(10, 3 * transfer.workers), cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where())


def _status(error: Exception) -> int:
    if isinstance(error, S3Error):
        return error.response.status
    if isinstance(error, ServerError):
        return error.status_code
    return getattr(error, "_code", 0)   # InvalidResponseError keeps the status private


def _is_connection_error(error: Exception) -> bool:
    permanent = urllib3.exceptions.SSLError | urllib3.exceptions.LocationValueError
    return (isinstance(error, urllib3.exceptions.HTTPError | ConnectionError)
            and not isinstance(error, permanent))


def _transient(error: Exception) -> bool:
    if _is_connection_error(error):
        return True
    if isinstance(error, S3Error):
        return error.code in TRANSIENT_CODES or (
            error.code not in CREDENTIAL_CODES and _status(error) in (429, *range(500, 600)))
    return isinstance(error, MinioException) and _status(error) in (429, *range(500, 600))


def _connection_reason(error: BaseException) -> str:
    chain = _chain(error)

    def seen(kind) -> bool:
        return any(isinstance(e, kind) for e in chain)

    if seen(ConnectionRefusedError):
        return "connection refused"
    if seen(urllib3.exceptions.NameResolutionError):
        return "the host name does not resolve"
    if any(isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError)
           and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "timed out"
    if seen(urllib3.exceptions.ProtocolError | ConnectionError):
        return "the connection was dropped"
    return _short(error)


def _chain(error: BaseException) -> list[BaseException]:
    """An error and its causes (urllib3 keeps some in `.reason`)."""
    chain: list[BaseException] = []
    todo: list[object] = [error]
    while todo:
        item = todo.pop()
        if isinstance(item, BaseException) and all(item is not e for e in chain):
            chain.append(item)
            todo += [getattr(item, "reason", None), item.__cause__, item.__context__]
    return chain


def _short(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return f"{type(error).__name__} {code}" if code else f"{type(error).__name__}: {error}"
