"""File integrity, plain Python: every file listed in meta.json, and its checksum."""

from __future__ import annotations

import hashlib

from sempair.dataset import files_checksum
from sempair.validation.result import CRITICAL, Check
from sempair.validation.suites import Dataset


def integrity_checks(data: Dataset) -> list[Check]:
    """Every file listed in meta.json exists with its sha256, and the checksum covers them."""
    files, expected = data.meta["files"], "every file listed in meta.json has its sha256"
    bad = []
    for rel, digest in files.items():
        path = data.folder / rel
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        else:
            with open(path, "rb") as handle:
                if hashlib.file_digest(handle, "sha256").hexdigest() != digest:
                    bad.append(f"{rel} (changed)")
    checksum = files_checksum(files)
    fix = "the dataset was modified or copied incompletely; `dvc pull` it again or re-ingest"
    return [
        Check("integrity", "files match meta.json", CRITICAL, not bad,
              f"{len(bad)} of {len(files)} files missing or changed" + _eg(bad), expected,
              f"{len(bad)} of {len(files)} dataset files are missing or changed since ingest"
              f"{_eg(bad)}: {fix}" if bad else ""),
        Check("integrity", "checksum", CRITICAL, checksum == data.meta["checksum"],
              data.meta["checksum"], f"{checksum} (sha256 of the file list)",
              "" if checksum == data.meta["checksum"] else
              f"meta.json's checksum does not match its file list: meta.json was edited; {fix}"),
    ]


def _eg(items: list[str]) -> str:
    return f" (e.g. {', '.join(items[:3])})" if items else ""
