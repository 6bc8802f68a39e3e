"""Recordings: a source is a root (a local folder or `s3://bucket/prefix`); a recording's id
is its path relative to that root, '/'-separated. Callers list, stat, open and hash by id."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISREG, S_ISSOCK
from typing import BinaryIO, Protocol

from sempair.storage.s3 import (
    S3Store,
    StorageError,
    _local,
    is_remote,
    parse_s3_uri,
    unsafe_relative_key,
)


@dataclass(frozen=True)
class SourceFile:
    id: str          # path relative to the source root, '/'-separated
    size: int        # bytes
    tag: str = ""    # what changes when the content does: the S3 ETag, a local mtime (ns)
    problem: str = ""   # why this entry cannot be read (never opened then); "" when fine


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
        """Every entry under the root. One that cannot be read as a regular file inside the
        root (a broken or escaping symlink, a FIFO, a name that is not UTF-8, a folder that
        cannot be entered) is listed with its `problem` and is never opened. Symlinked
        folders are not followed: inside the root their files are listed under their own
        path; one leaving the root is listed as `name/` with its problem."""
        files: list[SourceFile] = []

        def unreadable(error: OSError) -> None:
            files.append(self._folder_problem(Path(error.filename), (
                f"folder not read ({error.strerror}); fix its permissions, or move it out "
                "of the source")))

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=unreadable):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for folder in (Path(dirpath, name) for name in dirnames):
                if folder.is_symlink() and not self._inside(folder):
                    files.append(self._folder_problem(folder, _outside(folder)))
            for name in sorted(filenames):
                if not name.startswith("."):
                    files += self._entry(Path(dirpath, name))
        return sorted(files, key=lambda f: f.id)

    def _entry(self, path: Path) -> list[SourceFile]:
        """[the SourceFile at `path`], or [] if it vanished while listing."""
        file_id, problem = self._id(path)
        if path.is_symlink() and not self._inside(path):
            return [SourceFile(file_id, 0, problem=problem or _outside(path))]
        try:
            stat = path.stat()
        except FileNotFoundError:
            if not path.is_symlink():
                return []      # deleted between the walk and here: not in the source
            return [SourceFile(file_id, 0, problem=problem or (
                f"dangling symlink to {_target(path)} (nothing there); restore its target "
                "or delete the link"))]
        except OSError as error:
            return [SourceFile(file_id, 0, problem=problem or _unreadable(error))]
        if not S_ISREG(stat.st_mode):
            problem = problem or (f"{_kind(stat.st_mode)}, not a regular file: never opened "
                                  "(reading it could block); replace it with the recording "
                                  "itself, or move it out of the source")
        return [SourceFile(file_id, stat.st_size, str(stat.st_mtime_ns), problem)]

    def _id(self, path: Path) -> tuple[str, str]:
        """(id, problem): a name that is not UTF-8 cannot be stored (parquet, JSON), so it
        gets its bytes escaped (\\xNN) in the id and a problem."""
        file_id = PurePosixPath(path.relative_to(self.root)).as_posix()
        try:
            file_id.encode("utf-8")
        except UnicodeEncodeError:
            return _escaped(file_id), (
                "its name is not valid UTF-8 (shown with its bytes escaped), so it cannot be "
                "named in the dataset; rename it to UTF-8 (e.g. `convmv -f latin1 -t utf8 "
                "-r --notest FOLDER`)")
        return file_id, ""

    def _folder_problem(self, path: Path, problem: str) -> SourceFile:
        file_id, name_problem = self._id(path)
        return SourceFile(file_id + "/", 0, problem=name_problem or problem)

    def _inside(self, path: Path) -> bool:
        return Path(os.path.realpath(path)).is_relative_to(self.root)

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
        """The file itself: it is local already. OSError if it is no longer a regular file
        (it vanished, or became a FIFO, after it was listed): never opened then."""
        path = self.path(file_id)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise FileNotFoundError(f"{file_id} is not in {self.uri} (deleted or moved?); "
                                    "check the name, or copy the file back") from None
        if not S_ISREG(mode):
            raise IsADirectoryError(f"{file_id} is {_kind(mode)}, not a regular file")
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
            if file_id.endswith("/"):
                continue
            if unsafe_relative_key(file_id):      # never downloaded: it names no clean path
                files.append(SourceFile(file_id, obj.size, obj.etag, problem=(
                    "its object key is not a clean relative path (an empty segment, '.', "
                    "'..', a backslash or NUL): not read; rename the object")))
            elif not any(p.startswith(".") for p in file_id.split("/")):
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
            self.store.download(key, path, require_checksum=False)   # media: untrusted anyway
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
            self.store.download(self.location.key(file_id), path, require_checksum=False)
            yield path


def _outside(link: Path) -> str:
    # no absolute root in the words: the reason is part of the dataset, wherever mounted
    return (f"symlink to {_target(link)}, outside the source folder: not followed; copy "
            "what it points to into the source, or ingest that separately")


def _target(link: Path) -> str:
    return _escaped(os.readlink(link))


def _escaped(name: str) -> str:
    """`name` storable as UTF-8: bytes that are not UTF-8 written as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    kinds = ((S_ISFIFO, "a named pipe (FIFO)"), (S_ISSOCK, "a socket"),
             (S_ISCHR, "a character device"), (S_ISBLK, "a block device"),
             (S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _unreadable(error: OSError) -> str:
    """Why stat failed, without the path (a local path is no part of a stable reason)."""
    if error.errno == errno.ELOOP:
        return ("a symlink loop: the link leads back to itself; point it at the recording, "
                "or delete it")
    return (f"cannot read it ({error.strerror or type(error).__name__}); fix its "
            "permissions, or move it out of the source")


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
