"""The clip dataset: its on-disk format and a torch Dataset over it.

    DATASET/
      meta.json            feature parameters, counts, checksums; written last (commit marker)
      manifest.parquet     one row per clip: index, clip_id, recording, start, end, split,
                           shard, row, per-clip statistics, label/anomaly when annotated
      recordings.parquet   one row per source file: sha256, duration, codecs, status, error
      shards/NNNNNN-PPP.audio.npy   log-mel  [n, n_mels, mel_frames] float16
      shards/NNNNNN-PPP.video.npy   frames   [n, T, 3, H, W]         uint8

Shards are plain .npy files (np.load(..., mmap_mode="r") reads them without loading),
one or more per recording, so workers write them in parallel and millions of clips fit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sempair import SempairError
from sempair.storage.hashing import mismatched

FORMAT = "sempair-clips"
FORMAT_VERSION = 1
NPY_HEADER_BYTES = 128  # fixed header size, so the shape can be rewritten in place


class DatasetError(SempairError):
    """A folder that is not a complete clip dataset; the message says what to do."""


class NpyAppender:
    """Write a .npy file one batch at a time (bounded memory), fixing its shape on close."""

    def __init__(self, path: Path, item_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.item_shape, self.dtype = path, tuple(item_shape), np.dtype(dtype)
        self.rows = 0
        self.handle = open(path, "wb")  # noqa: SIM115 - open across appends, closed by close()
        self._write_header()

    def _write_header(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.item_shape)}
        text = repr(header).encode("latin1")
        prefix = b"\x93NUMPY\x01\x00"
        pad = NPY_HEADER_BYTES - len(prefix) - 2 - len(text) - 1
        assert pad >= 0, "npy header too long"
        body = text + b" " * pad + b"\n"
        self.handle.seek(0)
        self.handle.write(prefix + len(body).to_bytes(2, "little") + body)
        self.handle.seek(0, 2)

    def append(self, batch: np.ndarray) -> None:
        if batch.shape[1:] != self.item_shape or batch.dtype != self.dtype:
            raise ValueError(f"{self.path.name}: expected [n, {self.item_shape}] {self.dtype}, "
                             f"got {batch.shape} {batch.dtype}")
        self.handle.write(np.ascontiguousarray(batch).tobytes())
        self.rows += len(batch)

    def close(self) -> None:
        self._write_header()
        self.handle.close()


def read_meta(root: str | Path) -> dict:
    root = Path(root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        hint = ("it is an unfinished ingest (interrupted?): run `sempair ingest` again"
                if root.name.startswith(".") or any(root.glob("shards")) else
                "point at a folder written by `sempair ingest`")
        raise DatasetError(f"{root} is not a complete clip dataset (no meta.json): {hint}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{root}: format {meta.get('format')} v{meta.get('format_version')}"
                           f" is not {FORMAT} v{FORMAT_VERSION}; re-ingest with this version")
    return meta


def files_checksum(files: Mapping[str, str]) -> str:
    """The dataset checksum: sha256 over the "relative-path sha256" lines, in the order
    ingest listed them (meta.json keeps it)."""
    listing = "".join(f"{name} {digest}\n" for name, digest in files.items())
    return f"sha256:{hashlib.sha256(listing.encode()).hexdigest()}"


def verify_files(root: str | Path, meta: dict) -> None:
    """Every data file hashes to what meta.json recorded at ingest, and the dataset
    checksum covers that list: a tampered, truncated or missing file is named."""
    root, files = Path(root), meta.get("files", {})
    bad = mismatched(root, files)
    if bad or files_checksum(files) != meta.get("checksum"):
        what = (f"{len(bad)} of {len(files)} files changed or missing since ingest (e.g. "
                f"{', '.join(bad[:3])})" if bad else "meta.json's checksum does not match its "
                "file list (meta.json was edited)")
        raise DatasetError(f"{root}: {what}, so it is not dataset {meta.get('dataset_id')}; "
                           "`dvc pull` it again, fetch it again, or re-ingest")


def read_manifest(root: str | Path, split: str | None = None) -> pd.DataFrame:
    read_meta(root)
    manifest = pd.read_parquet(Path(root) / "manifest.parquet")
    if split is not None:
        known = sorted(manifest["split"].unique())
        if split not in known:
            raise DatasetError(f"split {split!r} is not in {root}; it has {known}")
        manifest = manifest[manifest["split"] == split].reset_index(drop=True)
    return manifest


class ClipDataset(torch.utils.data.Dataset):
    """Clips of an ingested dataset, read from memory-mapped shards.

    item = {"audio": float32 [n_mels, mel_frames], "video": uint8 [T, 3, H, W],
            "index": int (row in the whole manifest), "recording": str, "start": float}
    Video stays uint8 (4× less to copy); the model converts it to float. Opening checks
    every file against meta.json's checksums (`verify=False` skips the hashing) and every
    manifest row against its shard, so damage is named before any training step.
    """

    def __init__(self, root: str | Path, split: str | None = None, verify: bool = True):
        self.root = Path(root)
        self.meta = read_meta(self.root)
        if verify:
            verify_files(self.root, self.meta)
        self.manifest = read_manifest(self.root, split)
        self._check_rows()
        self._index = self.manifest["index"].to_numpy()
        self._shard = self.manifest["shard"].to_numpy()
        self._row = self.manifest["row"].to_numpy()
        self._recording = self.manifest["recording"].to_numpy()
        self._start = self.manifest["start"].to_numpy()
        self._arrays: dict[str, np.ndarray] = {}   # opened lazily, per process

    def __len__(self) -> int:
        return len(self.manifest)

    def _check_rows(self) -> None:
        """Each manifest row points inside a shard whose items have the recorded shape."""
        shapes = self.meta.get("shapes", {})
        for shard, rows in self.manifest.groupby("shard")["row"]:
            for kind in ("audio", "video"):
                path = self.root / "shards" / f"{shard}.{kind}.npy"
                shape = _npy_shape(path)
                if kind in shapes and list(shape[1:]) != shapes[kind]:
                    raise DatasetError(f"{path} holds items of shape {list(shape[1:])}, not "
                                       f"the {shapes[kind]} in meta.json; re-ingest {self.root}")
                if rows.min() < 0 or rows.max() >= shape[0]:
                    raise DatasetError(
                        f"{self.root / 'manifest.parquet'} points at rows {rows.min()}..."
                        f"{rows.max()} of {path}, which has {shape[0]}; the manifest or the "
                        "shard is damaged: re-ingest, or `dvc pull` the dataset again")

    def _array(self, shard: str, kind: str) -> np.ndarray:
        key = f"{shard}.{kind}"
        if key not in self._arrays:
            path = self.root / "shards" / f"{key}.npy"
            try:
                self._arrays[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise DatasetError(f"{path} cannot be read ({error}); it is truncated or "
                                   "damaged: re-ingest, or `dvc pull` the dataset again") from None
        return self._arrays[key]

    def __getitem__(self, i: int) -> dict:
        shard, row = self._shard[i], self._row[i]
        return {
            "audio": torch.from_numpy(self._array(shard, "audio")[row].astype(np.float32)),
            "video": torch.from_numpy(np.array(self._array(shard, "video")[row])),
            "index": int(self._index[i]),
            "recording": str(self._recording[i]),
            "start": float(self._start[i]),
        }

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions in this dataset [B] -> (audio [B, n_mels, T_a] float32,
        video [B, T, 3, H, W] uint8), read shard by shard (one fancy index per shard)."""
        items = np.asarray(items)
        shards, rows = self._shard[items], self._row[items]
        first_audio, first_video = self._array(shards[0], "audio"), self._array(shards[0], "video")
        audio = np.empty((len(items), *first_audio.shape[1:]), np.float32)
        video = np.empty((len(items), *first_video.shape[1:]), np.uint8)
        for shard in np.unique(shards):
            where = np.flatnonzero(shards == shard)
            order = np.argsort(rows[where])            # ascending rows read the memmap forward
            picked, pick_rows = where[order], rows[where][order]
            audio[picked] = self._array(shard, "audio")[pick_rows]
            video[picked] = self._array(shard, "video")[pick_rows]
        return torch.from_numpy(audio), torch.from_numpy(video)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = {}   # memory maps are reopened in each DataLoader worker
        return state


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape in a .npy header, checked against the file's size (a cut file is named)."""
    try:
        with open(path, "rb") as handle:
            read_header = (np.lib.format.read_array_header_1_0
                           if np.lib.format.read_magic(handle) == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            header = handle.tell()
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing; the manifest names a shard the dataset "
                           "does not have: re-ingest, or `dvc pull` the dataset again") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable .npy shard ({error}): re-ingest, or "
                           "`dvc pull` the dataset again") from None
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if path.stat().st_size < expected:
        raise DatasetError(f"{path} is truncated: {path.stat().st_size} bytes, its header "
                           f"promises {expected}; re-ingest, or `dvc pull` the dataset again")
    return tuple(shape)
