"""sha256 of a file, read in bounded blocks: the digest every transfer is checked against."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

HASH_BLOCK = 1 << 20  # read files in 1 MiB blocks: bounded memory whatever their size


def sha256_file(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := handle.read(HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return sha256_file(handle)


def mismatched(folder: str | Path, files: Mapping[str, str]) -> list[str]:
    """The names in `files` (name -> sha256) missing under `folder` or hashing otherwise."""
    folder = Path(folder)
    return [name for name, digest in files.items()
            if not (folder / name).is_file() or sha256_path(folder / name) != digest]
