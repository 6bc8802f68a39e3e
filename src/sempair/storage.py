"""Where recordings come from: one small interface over local folders (and, next, s3://).

A source is a root; a recording's id is its path relative to that root, with `/` as the
separator whatever the platform. Callers only list, stat, open and hash by id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

HASH_BLOCK = 1 << 20  # read files in 1 MiB blocks: bounded memory whatever their size


@dataclass(frozen=True)
class SourceFile:
    id: str          # path relative to the source root, '/'-separated
    size: int        # bytes


class Source(Protocol):
    uri: str

    def list(self) -> list[SourceFile]: ...
    def open(self, file_id: str) -> BinaryIO: ...


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
                files.append(SourceFile(file_id, path.stat().st_size))
        return sorted(files, key=lambda f: f.id)

    def open(self, file_id: str) -> BinaryIO:
        return open(self.path(file_id), "rb")

    def path(self, file_id: str) -> Path:
        path = (self.root / file_id).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{file_id!r} points outside the source {self.root}")
        return path


def open_source(uri: str | Path) -> LocalSource:
    """The Source behind a URI: a local path today; `s3://bucket/prefix` joins it here."""
    text = str(uri)
    scheme, sep, _ = text.partition("://")
    if sep and scheme != "file":
        raise ValueError(f"unsupported source {text!r}: only local folders are readable in "
                         "this version (s3:// support comes with the storage module's S3 "
                         "backend); copy the recordings to a local folder")
    return LocalSource(text.removeprefix("file://"))


def sha256_file(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := handle.read(HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()
