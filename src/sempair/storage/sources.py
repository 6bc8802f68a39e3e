"""Recordings: a source is a root (a local folder or `s3://bucket/prefix`); a recording's id
is its path relative to that root, '/'-separated. Callers list, stat, open and hash by id."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from sempair.storage.s3 import S3Store, StorageError, _local, is_remote, parse_s3_uri


@dataclass(frozen=True)
class SourceFile:
    id: str          # path relative to the source root, '/'-separated
    size: int        # bytes
    tag: str = ""    # what changes when the content does: the S3 ETag, a local mtime (ns)


class Source(Protocol):
    uri: str

    def list(self) -> list[SourceFile]: ...
    def open(self, file_id: str) -> BinaryIO: ...
    def path(self, file_id: str) -> Path: ...
    def exists(self, file_id: str) -> bool: ...
    def local_copy(self, file_id: str) -> contextlib.AbstractContextManager[Path]: ...


class LocalSource:
    """A folder on a local (or mounted) filesystem. Hidden files and folders are skipped."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.uri = str(self.root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"source folder {root} does not exist (or is not a "
                                    "folder); pass the folder that holds the recordings")

    def list(self) -> list[SourceFile]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                file_id = PurePosixPath(path.relative_to(self.root)).as_posix()
                stat = path.stat()
                files.append(SourceFile(file_id, stat.st_size, str(stat.st_mtime_ns)))
        return sorted(files, key=lambda f: f.id)

    def open(self, file_id: str) -> BinaryIO:
        return open(self.path(file_id), "rb")

    def path(self, file_id: str) -> Path:
        path = (self.root / file_id).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{file_id!r} points outside the source {self.root}")
        return path

    def exists(self, file_id: str) -> bool:
        return self.path(file_id).is_file()

    @contextlib.contextmanager
    def local_copy(self, file_id: str) -> Iterator[Path]:
        """The file itself: it is local already."""
        path = self.path(file_id)
        if not path.is_file():
            raise FileNotFoundError(f"{file_id} is not in {self.uri}")
        yield path


class S3Source:
    """Objects under `s3://bucket/prefix`; ids are keys relative to the prefix. Names with a
    hidden (dot) component are skipped, as locally. Decoders get verified local copies."""

    def __init__(self, uri: str, cache_dir: str | Path | None = None,
                 store: S3Store | None = None):
        self.location = parse_s3_uri(uri)
        self.uri = str(self.location)
        self.store = store or S3Store(self.location.bucket)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._paths: dict[str, Path] = {}

    def list(self) -> list[SourceFile]:
        files = []
        for obj in self.store.list(self.location.folder):
            file_id = obj.key.removeprefix(self.location.folder)
            if file_id.endswith("/") or any(p.startswith(".") for p in file_id.split("/")):
                continue
            files.append(SourceFile(file_id, obj.size, obj.etag))
        return files

    def open(self, file_id: str) -> BinaryIO:
        return open(self.path(file_id), "rb")

    def path(self, file_id: str) -> Path:
        """A verified local copy in the cache folder, downloaded once per source object;
        prefer `local_copy`, which removes it afterwards."""
        path = self._paths.get(file_id)
        if path is None or not path.is_file():
            key = self.location.key(file_id)
            path = self.cache_dir / self.location.bucket / key
            self.store.download(key, path)
            self._paths[file_id] = path
        return path

    def exists(self, file_id: str) -> bool:
        return self.store.exists(self.location.key(file_id))

    @contextlib.contextmanager
    def local_copy(self, file_id: str) -> Iterator[Path]:
        """A verified download in a private temp folder under the cache, deleted on exit."""
        if file_id in self._paths and self._paths[file_id].is_file():
            yield self._paths[file_id]
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="copy-", dir=self.cache_dir) as folder:
            path = Path(folder) / PurePosixPath(file_id).name
            self.store.download(self.location.key(file_id), path)
            yield path


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/sempair/s3 (~/.cache/sempair/s3): where S3 downloads land."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sempair" / "s3"


def listing_version(files: list[SourceFile]) -> str:
    """The data version of a source: one checksum over every file's (id, size, tag). Any
    added, removed or rewritten recording (or events.csv) changes it; a listing is enough,
    nothing is read."""
    lines = sorted(f"{f.id}\t{f.size}\t{f.tag}\n" for f in files)
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def source_version(uri: str | Path) -> str:
    """listing_version of the recordings at `uri` (a folder or s3:// URI)."""
    return listing_version(open_source(uri).list())


def open_source(uri: str | Path) -> LocalSource | S3Source:
    """The Source behind a URI: `s3://bucket/prefix` (settings from the environment, so
    worker processes open it alike), else a local folder (`file://` allowed)."""
    if is_remote(uri):
        return S3Source(str(uri))
    try:
        return LocalSource(_local(uri))
    except StorageError as error:
        raise ValueError(str(error)) from None
