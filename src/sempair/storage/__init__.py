"""Where data lives: local folders and `s3://bucket/prefix`, behind one small interface.

Sources (recordings): a source is a root; a recording's id is its path relative to that root,
with `/` as the separator whatever the platform. Callers list, stat, open and hash by id;
`local_copy` gives a seekable local file (an S3 object is downloaded, verified, and deleted
afterwards).

Folders (datasets, models): `publish` / `fetch` copy a whole folder to or from a URI. A folder
is complete only once its marker file (meta.json) exists: it is written last and checked
first, so a reader never sees half a dataset.

S3 speaks to any S3-compatible server (MinIO, Ceph, AWS) through the `minio` SDK. Connection
settings come from the environment only (the variables boto3 and DVC read, see
`S3Settings.from_env`). Every transfer is verified against the sha256 stored as object
metadata at upload; transient failures are retried with exponential backoff and jitter.
See docs/storage.md.

Submodules: `s3` (settings, URIs, errors, the verified and retried `S3Store`), `sources`
(recordings), `folders` (publish / fetch behind the marker, small files), `hashing` (sha256).
"""

from sempair.storage.folders import (
    MARKER,
    check_destination,
    download_dir,
    fetch,
    find,
    publish,
    read_text,
    upload_dir,
    write_text,
)
from sempair.storage.hashing import HASH_BLOCK, mismatched, sha256_file, sha256_path
from sempair.storage.s3 import (
    CREDENTIAL_CODES,
    MIB,
    MIN_PART_SIZE,
    SHA256_META,
    TRANSFER,
    TRANSIENT_CODES,
    NotFoundError,
    ObjectInfo,
    S3Settings,
    S3Store,
    S3Uri,
    StorageError,
    Transfer,
    is_remote,
    parse_s3_uri,
)
from sempair.storage.sources import (
    LocalSource,
    S3Source,
    Source,
    SourceFile,
    default_cache_dir,
    listing_version,
    open_source,
    source_version,
)

__all__ = [
    "CREDENTIAL_CODES",
    "HASH_BLOCK",
    "MARKER",
    "MIB",
    "MIN_PART_SIZE",
    "SHA256_META",
    "TRANSFER",
    "TRANSIENT_CODES",
    "LocalSource",
    "NotFoundError",
    "ObjectInfo",
    "S3Settings",
    "S3Source",
    "S3Store",
    "S3Uri",
    "Source",
    "SourceFile",
    "StorageError",
    "Transfer",
    "check_destination",
    "default_cache_dir",
    "download_dir",
    "fetch",
    "find",
    "is_remote",
    "listing_version",
    "mismatched",
    "open_source",
    "parse_s3_uri",
    "publish",
    "read_text",
    "sha256_file",
    "sha256_path",
    "source_version",
    "upload_dir",
    "write_text",
]
