"""Folders (datasets, models): copy a whole folder to or from a local path or s3:// URI, and
read, write or find small files. A folder is complete only once its marker file exists: it
is written last and checked first, so a reader never sees half a dataset."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from sempair.storage.s3 import (
    ObjectInfo,
    S3Store,
    S3Uri,
    StorageError,
    _local,
    is_remote,
    parse_s3_uri,
    unsafe_relative_key,
)
from sempair.storage.sources import default_cache_dir

MARKER = "meta.json"      # a folder is complete once this file exists


def upload_dir(local_dir: str | Path, uri: str, marker: str | None = MARKER,
               store: S3Store | None = None) -> None:
    """Make `uri` an exact copy of `local_dir` (objects the folder lacks are deleted).

    The old marker goes first and the new one last, so readers see either the old complete
    folder, an incomplete one (refused), or the new complete one.
    """
    local_dir, target = Path(local_dir), parse_s3_uri(uri)
    if not target.prefix:
        raise StorageError(f"{uri} is a whole bucket; publish to a prefix, s3://bucket/name")
    files = _files(local_dir)
    if marker is not None and marker not in files:
        raise StorageError(f"{local_dir} has no {marker}, so it is not complete; finish "
                           "writing it before publishing")
    store = store or S3Store(target.bucket)
    existing = {o.key for o in store.list(target.folder)}
    marker_key = target.key(marker) if marker else None
    if marker_key in existing:
        store.delete(marker_key)
    _parallel(store.transfer.workers, [
        (lambda rel=rel: store.upload(local_dir / rel, target.key(rel)))
        for rel in files if rel != marker])
    for stale in sorted(existing - {target.key(rel) for rel in files}):
        store.delete(stale)
    if marker_key:
        store.upload(local_dir / marker, marker_key)


def download_dir(uri: str, local_dir: str | Path, marker: str | None = MARKER,
                 store: S3Store | None = None) -> Path:
    """Download a complete folder (refused without its marker), every file verified, into a
    hidden sibling that then replaces `local_dir`."""
    source = parse_s3_uri(uri)
    store = store or S3Store(source.bucket)
    return _download(store, source, _complete_listing(store, source, marker), Path(local_dir))


def _download(store: S3Store, source: S3Uri, objects: list[ObjectInfo], local_dir: Path
              ) -> Path:
    """Download `objects` (a listing of `source`) into a hidden sibling of `local_dir`, every
    file verified, then swap it into place."""
    tmp = _sibling(local_dir, "partial")
    targets = [(o.key, tmp / _confined(source, o.key)) for o in objects]   # all, before any
    try:
        _parallel(store.transfer.workers, [
            (lambda key=key, path=path: store.download(key, path)) for key, path in targets])
        tmp.mkdir(parents=True, exist_ok=True)   # an empty folder (no marker rule) too
        _replace_dir(tmp, local_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local_dir


def publish(local_dir: str | Path, uri: str | Path, marker: str | None = MARKER) -> str:
    """Copy a finished folder to a local path or s3:// URI, replacing what was there."""
    if is_remote(uri):
        upload_dir(local_dir, str(uri), marker)
        return str(uri)
    src, dest = Path(local_dir).resolve(), _local(uri).absolute()
    if marker is not None and not (src / marker).is_file():
        raise StorageError(f"{src} has no {marker}, so it is not complete; finish writing it "
                           "before publishing")
    if dest.resolve() != src:
        tmp = _sibling(dest, "partial")
        try:
            shutil.copytree(src, tmp)
            _replace_dir(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def check_destination(uri: str | Path, marker: str = MARKER) -> None:
    """Fail now, not after hours of work, if s3:// `uri` cannot take a folder: the store
    must answer and the bucket must exist. A local path needs no check (its folder is
    created before any work)."""
    if is_remote(uri):
        target = parse_s3_uri(str(uri))
        S3Store(target.bucket).list(target.key(marker))   # one tiny listing; no bucket fails


def fetch(uri: str | Path, cache_dir: str | Path | None = None,
          marker: str | None = MARKER) -> Path:
    """A local folder with the contents of `uri`: a local path as-is; an s3:// folder is
    downloaded to cache_dir/bucket/prefix (default: the download cache), or reused when
    the remote listing is unchanged. Processes fetching the same folder at once (the ranks
    of a torchrun) take turns on a lock file: one downloads, the others reuse it."""
    if not is_remote(uri):
        return _local(uri)
    source = parse_s3_uri(str(uri))
    store = S3Store(source.bucket)
    local = Path(cache_dir or default_cache_dir()) / source.bucket / source.prefix
    record = local.parent / f".{local.name}.fetched.json"
    objects = _complete_listing(store, source, marker)   # listed once, marker checked
    listing = {o.key: [o.size, o.etag] for o in objects}
    local.parent.mkdir(parents=True, exist_ok=True)
    with open(local.parent / f".{local.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # released when the file closes
        if local.is_dir() and record.is_file() and json.loads(record.read_text()) == listing:
            return local
        _download(store, source, objects, local)
        record.write_text(json.dumps(listing, indent=1) + "\n")
    return local


def read_text(uri: str | Path) -> str:
    """A small text file from a local path or s3:// (NotFoundError, a FileNotFoundError,
    when there is none)."""
    if not is_remote(uri):
        return _local(uri).read_text()
    store, key = _object(str(uri))
    return store.read_text(key)


def write_text(uri: str | Path, text: str) -> None:
    """Write a small text file whole (atomically: readers see the old or the new text)."""
    if is_remote(uri):
        store, key = _object(str(uri))
        store.write_text(key, text)
        return
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _object(uri: str) -> tuple[S3Store, str]:
    target = parse_s3_uri(uri)
    if not target.prefix:
        raise StorageError(f"{uri} names a bucket, not a file; write s3://bucket/path/file")
    return S3Store(target.bucket), target.prefix


def find(uri_prefix: str | Path, name: str) -> list[str]:
    """The URIs (or paths) of every file called `name` under a prefix, sorted."""
    if not is_remote(uri_prefix):
        root = _local(uri_prefix)
        return sorted(str(p) for p in root.rglob(name) if p.is_file()) if root.is_dir() else []
    prefix = parse_s3_uri(str(uri_prefix))
    store = S3Store(prefix.bucket)
    return [store.uri(o.key) for o in store.list(prefix.folder)
            if PurePosixPath(o.key).name == name]


def _complete_listing(store: S3Store, source: S3Uri, marker: str | None) -> list[ObjectInfo]:
    objects = [o for o in store.list(source.folder) if not o.key.endswith("/")]
    if marker is not None and source.key(marker) not in {o.key for o in objects}:
        raise StorageError(f"{source} is incomplete: no {marker}; an upload is still running "
                           "or failed — re-run it")
    return objects


def _confined(source: S3Uri, key: str) -> PurePosixPath:
    """The local path, relative to the destination, of object `key` under `source`.

    Object keys are arbitrary strings chosen by whoever can write to the bucket: a key that
    would land outside the destination (an absolute path after the prefix, '..', '.', an
    empty segment, a backslash or NUL) refuses the whole fetch, naming the key.
    """
    relative = key.removeprefix(source.folder)
    if not key.startswith(source.folder) or unsafe_relative_key(relative):
        raise StorageError(
            f"refusing to fetch {source}: object key {key!r} would not land inside the "
            "destination folder (an absolute path, '..', '.', an empty segment, a backslash "
            "or NUL in it); nothing was downloaded. Delete or rename that object, and check "
            "who can write to the bucket")
    return PurePosixPath(*relative.split("/"))


def _files(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise StorageError(f"{folder} is not a folder; pass the folder to publish")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _parallel(workers: int, tasks: list[Callable[[], object]]) -> None:
    """Run tasks on a few threads; on a failure the rest are cancelled and it is raised."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _sibling(path: Path, kind: str) -> Path:
    """A fresh hidden sibling of `path` for this process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{kind}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Put a finished folder in place; an old one is swapped out first, then deleted."""
    if dest.exists():
        old = _sibling(dest, "old")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
