"""sha256 of a file, read in bounded blocks: the digest every transfer is checked against."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

HASH_BLOCK = 1 << 20  # read files in 1 MiB blocks: bounded memory whatever their size


def sha256_file(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while block := handle.read(HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()
