"""Recordings -> clip dataset (see `sempair.dataset` for the format).

One process per recording (from a forkserver, one decoder thread each) streams the file through
`ClipReader`, computes log-mel and clip statistics and appends them to its own shards.
The parent then joins the rows, assigns splits by recording, attaches labels when an
`events.csv` sits at the source root, and writes the tables and meta.json. Everything
goes to a hidden sibling folder that is renamed into place only when complete, so an
interrupted run never leaves a dataset that looks finished.

Bad files never stop the run and are never dropped silently: each one gets a row in
recordings.parquet with status `quarantined` (or `partial` when a decodable prefix was
kept) and a reason that says what is wrong and how to fix it. File-system oddities the
listing finds (broken or escaping symlinks, FIFOs, names that are not UTF-8) are
quarantined without being opened; reasons are deterministic (docs/data-format.md).

A store failure stops the run at once: the workers are killed and queued jobs dropped.
Workers exit by themselves when the ingest process dies (even by kill -9), and with
them the forkserver and the resource tracker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import select
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import psutil
import torch
from tqdm import tqdm

import sempair
from sempair import SempairError, annotations
from sempair.config import Config, FeatureConfig, IngestConfig
from sempair.dataset import FORMAT, FORMAT_VERSION, NpyAppender
from sempair.features import clip_stats, log_mel
from sempair.media import ClipReader, MediaError
from sempair.storage import (
    SourceFile,
    StorageError,
    listing_version,
    open_source,
    sha256_file,
)

OK, PARTIAL, QUARANTINED = "ok", "partial", "quarantined"
SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)


class IngestError(SempairError):
    """Nothing could be ingested, or the output cannot be written; says why and the fix."""


@dataclass(frozen=True)
class IngestSummary:
    out: Path
    dataset_id: str
    recordings: int                       # media files found
    clips: int
    splits: dict[str, int]                # clips per split
    problems: list[tuple[str, str, str]]  # (recording, status, reason) for partial/quarantined
    ignored: list[str]                    # files that are not media (by extension)
    media_seconds: float                  # recording time turned into clips
    elapsed_seconds: float
    source_version: str = ""              # the source listing's checksum (data version)

    @property
    def quarantined(self) -> list[tuple[str, str]]:
        return [(rec, why) for rec, status, why in self.problems if status == QUARANTINED]

    def __str__(self) -> str:
        lines = [f"ingested {self.recordings - len(self.quarantined)} of {self.recordings} "
                 f"recordings -> {self.clips} clips "
                 f"({', '.join(f'{k} {v}' for k, v in self.splits.items())}) "
                 f"in {self.elapsed_seconds:.1f} s "
                 f"({self.media_seconds / max(self.elapsed_seconds, 1e-9):.0f}× real time)",
                 f"dataset {self.dataset_id} at {self.out}"]
        for rec, status, why in self.problems:
            lines.append(f"  {status:<11} {rec}: {why}")
        if self.ignored:
            shown = ", ".join(self.ignored[:5]) + (" …" if len(self.ignored) > 5 else "")
            lines.append(f"  ignored {len(self.ignored)} non-media file(s): {shown}")
        return "\n".join(lines)

    def markdown(self) -> str:
        rows = "".join(f"| `{rec}` | {status} | {why} |\n" for rec, status, why in self.problems)
        table = ("| recording | status | reason |\n|---|---|---|\n" + rows) if rows else \
            "Every recording was ingested whole.\n"
        return (f"## Ingest: dataset `{self.dataset_id}`\n\n"
                f"{self.recordings} recordings, {self.clips} clips, splits {self.splits}, "
                f"{len(self.quarantined)} quarantined, {len(self.ignored)} non-media files "
                f"ignored.\n\n{table}")


def ingest(source: str | Path, out: str | Path, cfg: Config, *, workers: int | None = None,
           overwrite: bool = False, progress: bool = False) -> IngestSummary:
    """Turn the recordings under `source` into a clip dataset at `out` (an s3:// target is
    checked before any work by whoever publishes `out`: `storage.check_destination`)."""
    started = time.perf_counter()
    src, out = open_source(source), Path(out).absolute()
    if out.exists() and not overwrite:
        raise IngestError(f"{out} already exists; pass --overwrite to replace it, or choose "
                          "another output folder")
    files = src.list()
    exts = {e.lower().lstrip(".") for e in cfg.ingest.extensions}
    media = [f for f in files if _is_recording(f, exts)]
    ignored = [f.id for f in files if f not in media and f.id != annotations.EVENTS_FILE]
    if not media:
        raise IngestError(f"no recordings in {src.uri}: no file ends in one of "
                          f"{sorted(exts)} ({len(ignored)} other files); add recordings or "
                          "extend ingest.extensions")
    events = None
    if src.exists(annotations.EVENTS_FILE):
        with src.local_copy(annotations.EVENTS_FILE) as events_path:
            events = annotations.read_events(events_path)

    tmp = _fresh_tmp_dir(out)
    try:
        results = _run_workers(src.uri, media, tmp / "shards", cfg,
                               workers if workers is not None else cfg.ingest.workers, progress)
        recordings, manifest = _tables(results, cfg.ingest, events)
        if manifest.empty:
            reasons = "\n".join(f"  {r.recording}: {r.error}" for r in recordings.itertuples())
            raise IngestError(f"nothing in {src.uri} could be ingested:\n{reasons}")
        if events is not None:   # kept with the clips: validation and audits read them
            events.to_csv(tmp / annotations.EVENTS_FILE, index=False)
        meta = _write_tables(tmp, recordings, manifest, cfg, src.uri, events is not None,
                             source_version=listing_version(files))
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    problems = [(r.recording, r.status, r.error) for r in recordings.itertuples()
                if r.status != OK]
    return IngestSummary(
        out=out, dataset_id=meta["dataset_id"], recordings=len(recordings),
        clips=len(manifest), splits=meta["counts"]["splits"], problems=problems,
        ignored=ignored, media_seconds=float(recordings["ingested_seconds"].sum()),
        elapsed_seconds=time.perf_counter() - started, source_version=meta["source_version"])


def _is_recording(file: SourceFile, exts: set[str]) -> bool:
    """A media file by extension, or a folder that could not be read (it may hold some)."""
    return (PurePosixPath(file.id).suffix.lower().lstrip(".") in exts
            or bool(file.problem and file.id.endswith("/")))


# -- one recording, in a worker process ----------------------------------------------------

@dataclass
class _Job:
    source: str
    recording: str
    index: int                # position in the sorted recording list: names the shards
    shard_dir: str
    features: FeatureConfig
    ingest: IngestConfig
    threads: int


@dataclass
class _Result:
    recording: dict                              # one row of recordings.parquet
    clips: list[dict] = field(default_factory=list)
    shard_sha256: dict[str, str] = field(default_factory=dict)


def ingest_recording(job: _Job) -> _Result:
    """Decode one file into shards. Never raises for bad media: the row says what failed.

    A damaged file decoded with several threads is decoded again on one: frame-threaded
    decoding reports damage differently (and may keep another prefix), and the dataset must
    not depend on --workers (which sets the threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one core per recording; restored for an inline caller
    try:
        result = _ingest_recording(job)
        if result.recording["status"] != OK and job.threads != 1:
            result = _ingest_recording(dataclasses.replace(job, threads=1))
        return result
    finally:
        torch.set_num_threads(threads)


def _ingest_recording(job: _Job) -> _Result:
    src = open_source(job.source)
    result = _Result(_quarantined_row(job.recording, ""))
    row = result.recording
    _discard_shards(job)
    local = ""
    try:
        # an s3:// recording is downloaded (checksum verified) for the decoder, then deleted
        with src.local_copy(job.recording) as path:
            local = str(path)
            _decode_recording(path, job, result)
    except MediaError as error:
        row["error"] = str(error)
    except FileNotFoundError:   # a NotFoundError too: the object, not the store, is gone
        row["error"] = ("vanished from the source after it was listed (deleted or moved "
                        "while ingest ran); copy it back and re-run ingest")
    except StorageError:        # the store failed, not the file: stop, quarantine nothing
        raise
    except OSError as error:    # unreadable, or no longer a regular file
        row["error"] = (f"cannot read it ({error.strerror or error}); fix the file or its "
                        "permissions, or move it out of the source")
    except Exception as error:  # a decoder bug must not stop the other recordings
        log.error("unexpected failure on %s", job.recording, exc_info=True)
        # stable words only (no traceback, no temp path): the reason is part of the dataset
        message = str(error).replace(local, job.recording) if local else str(error)
        row["error"] = (f"unexpected failure ({type(error).__name__}: {message}); please "
                        "report it with this file (the traceback is in the ingest log)")
    if row["status"] == QUARANTINED:
        _discard_shards(job)
        result.clips, result.shard_sha256 = [], {}
    return result


def _quarantined_row(recording: str, reason: str) -> dict:
    """A recordings.parquet row for a file with no clips, `reason` saying why."""
    return {"recording": recording, "status": QUARANTINED, "error": reason, "size_bytes": 0,
            "sha256": "", "container": "", "duration": float("nan"), "ingested_seconds": 0.0,
            "clips": 0, "video_codec": "", "width": 0, "height": 0, "fps": float("nan"),
            "audio_codec": "", "sample_rate": 0, "channels": 0}


def _discard_shards(job: _Job) -> None:
    for path in Path(job.shard_dir).glob(f"{job.index:06d}-*"):
        path.unlink()


def _decode_recording(path: Path, job: _Job, result: _Result) -> None:
    """Hash, probe and cut one local file into shards; fills `result` in place."""
    row = result.recording
    with open(path, "rb") as handle:
        row["sha256"] = sha256_file(handle)
        row["size_bytes"] = handle.tell()
    if row["size_bytes"] == 0:
        row["error"] = "empty file (0 bytes): the copy or the recording failed; copy it again"
        return
    shards = _Shards(Path(job.shard_dir), job.index, job.ingest.shard_clips)
    with ClipReader(str(path), job.features, job.ingest.clip_seconds,
                    job.ingest.hop_seconds, threads=job.threads) as reader:
        row.update(asdict(reader.info))
        for batch in reader:
            logmel = log_mel(batch.audio, job.features).numpy()   # [B, n_mels, T_a]
            stats = clip_stats(batch.audio, logmel, batch.frames)
            places = shards.append(logmel.astype(np.float16), batch.frames)
            for j, (shard, shard_row) in enumerate(places):
                start = float(batch.starts[j])
                result.clips.append({
                    "clip": len(result.clips), "start": start,
                    "end": start + job.ingest.clip_seconds, "shard": shard,
                    "row": shard_row, **{k: float(v[j]) for k, v in stats.items()}})
        result.shard_sha256 = shards.close()
        row["ingested_seconds"] = reader.decoded_seconds
        problems = reader.problems
    row["clips"] = len(result.clips)
    if not result.clips:
        length = row["duration"]
        problems = problems or [f"shorter than one clip ({length:.2f} s < "
                                f"{job.ingest.clip_seconds} s)"]
        row["status"], row["error"] = QUARANTINED, "; ".join(problems)
    elif problems:
        row["status"] = PARTIAL
        row["error"] = "; ".join(problems) + (f"; ingested {len(result.clips)} clips "
                                              f"({reader.decoded_seconds:.1f} s)")
    else:
        row["status"] = OK


class _Shards:
    """One recording's shards: NNNNNN-PPP.{audio,video}.npy, a new part every max_rows."""

    def __init__(self, folder: Path, recording_index: int, max_rows: int):
        self.folder, self.recording_index, self.max_rows = folder, recording_index, max_rows
        self.part = -1
        self.open: tuple[NpyAppender, NpyAppender] | None = None
        self.sha256: dict[str, str] = {}

    @property
    def name(self) -> str:
        return f"{self.recording_index:06d}-{self.part:03d}"

    def append(self, audio: np.ndarray, video: np.ndarray) -> list[tuple[str, int]]:
        """Append a batch; returns each clip's (shard, row)."""
        places, start = [], 0
        while start < len(audio):
            if self.open is None or self.open[0].rows >= self.max_rows:
                self._roll(audio, video)
            rows = self.open[0].rows
            n = min(len(audio) - start, self.max_rows - rows)
            places += [(self.name, rows + j) for j in range(n)]
            for appender, array in zip(self.open, (audio, video), strict=True):
                appender.append(array[start:start + n])
            start += n
        return places

    def _roll(self, audio: np.ndarray, video: np.ndarray) -> None:
        self._close_part()
        self.part += 1
        self.open = tuple(NpyAppender(self.folder / f"{self.name}.{kind}.npy",
                                      array.shape[1:], array.dtype)
                          for kind, array in (("audio", audio), ("video", video)))

    def _close_part(self) -> None:
        for appender in self.open or ():
            appender.close()
            with open(appender.path, "rb") as handle:
                self.sha256[f"shards/{appender.path.name}"] = sha256_file(handle)
        self.open = None

    def close(self) -> dict[str, str]:
        self._close_part()
        return self.sha256


# -- the parent: workers, tables, commit ---------------------------------------------------

def _run_workers(source: str, media: list[SourceFile], shard_dir: Path, cfg: Config,
                 workers: int, progress: bool,
                 task: Callable[[_Job], _Result] | None = None) -> list[_Result]:
    """One result per entry of `media`, in order: entries the listing found unreadable are
    quarantined here, the rest run through `task` (ingest_recording) in `workers`
    processes. The first error (the store failed) stops every worker and is raised."""
    shard_dir.mkdir(parents=True)
    results: list[_Result | None] = [
        _Result(_quarantined_row(f.id, f.problem)) if f.problem else None for f in media]
    todo = [i for i, result in enumerate(results) if result is None]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    jobs = [_Job(source, media[i].id, i, str(shard_dir), cfg.features, cfg.ingest,
                 threads=0 if workers == 1 else 1) for i in todo]
    bar = tqdm(total=len(media), initial=len(media) - len(jobs), unit="rec", desc="ingest",
               disable=not progress)
    with bar, _pool(workers) as pool:
        futures = {pool.submit(task or ingest_recording, job): job.index for job in jobs}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
            bar.set_postfix(clips=sum(len(r.clips) for r in results if r))
    return results


@contextlib.contextmanager
def _pool(workers: int):
    """An executor of `workers` processes (or this one). On an error in the caller's block
    (a job's StorageError, Ctrl-C) the workers are killed and queued jobs dropped at once,
    instead of running every queued job (each retrying a lost store) first."""
    if workers == 1:
        yield _InlinePool()
        return
    # forkserver: safe with torch's thread pools (unlike fork), and its server imports
    # sempair once, so each worker starts in milliseconds (spawn re-imports torch: ~3 s)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sempair.ingest"])
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with,
                               initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued jobs and kill the running ones (their results are not wanted)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())   # no public API
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=10)


def _exit_with(pid: int) -> None:
    """Worker initializer: exit as soon as process `pid` (the ingest) is gone, even killed
    with -9, instead of waiting forever for jobs. A worker's parent is the forkserver, not
    the ingest, so PR_SET_PDEATHSIG cannot watch it; a thread waits on a pidfd of `pid`
    (or polls it where there is none). Once the workers are gone the forkserver and the
    resource tracker exit by themselves: their pipes reach end-of-file."""
    threading.Thread(target=_wait_for_exit, args=(pid,), name="exit-with-ingest",
                     daemon=True).start()


def _wait_for_exit(pid: int) -> None:
    try:
        select.select([os.pidfd_open(pid)], [], [])   # readable once `pid` has exited
    except ProcessLookupError:
        pass                                          # gone already
    except (AttributeError, OSError):                 # no pidfd (not Linux 5.3+): poll
        while _alive(pid):
            time.sleep(0.5)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class _InlinePool:
    """The executor interface, run in this process: one worker needs no pool."""

    def submit(self, fn, *args):
        from concurrent.futures import Future
        future = Future()
        future.set_result(fn(*args))
        return future


def assign_splits(recordings: list[str], cfg: IngestConfig) -> dict[str, str]:
    """Deterministic split by recording key (ingest uses each file's sha256): order by a
    seeded hash, then cut by fraction. With 3+ keys every non-zero fraction gets one."""
    order = sorted(recordings, key=lambda r: hashlib.sha256(
        f"{cfg.split_seed}:{r}".encode()).hexdigest())
    n = len(order)
    n_test, n_val = round(cfg.test_fraction * n), round(cfg.val_fraction * n)
    if n >= 3:
        n_test = max(n_test, 1) if cfg.test_fraction > 0 else 0
        n_val = max(n_val, 1) if cfg.val_fraction > 0 else 0
    n_test, n_val = min(n_test, max(n - 1, 0)), min(n_val, max(n - 1 - n_test, 0))
    split = {r: "test" for r in order[:n_test]}
    split |= {r: "val" for r in order[n_test:n_test + n_val]}
    return split | {r: "train" for r in order[n_test + n_val:]}


def _tables(results: list[_Result], cfg: IngestConfig,
            events: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    recordings = pd.DataFrame([r.recording for r in results])
    clips = [dict(c, recording=r.recording["recording"]) for r in results for c in r.clips]
    manifest = pd.DataFrame(clips)
    # split by content, so byte-identical copies under two paths land in the same split
    by_content = assign_splits(sorted({r.recording["sha256"] for r in results if r.clips}), cfg)
    split = {r.recording["recording"]: by_content[r.recording["sha256"]]
             for r in results if r.clips}
    recordings["split"] = [split.get(r, "") for r in recordings["recording"]]
    if manifest.empty:
        return recordings, manifest
    manifest.insert(0, "index", np.arange(len(manifest), dtype=np.int64))
    manifest.insert(1, "clip_id", manifest["recording"] + "#" +
                    manifest["clip"].map("{:06d}".format))
    manifest["split"] = manifest["recording"].map(split)
    if events is not None:
        manifest = manifest.join(annotations.label_clips(manifest, events))
    columns = ["index", "clip_id", "recording", "clip", "start", "end", "split", "shard", "row"]
    manifest = manifest[columns + [c for c in manifest.columns if c not in columns]]
    manifest = manifest.astype({"clip": np.int32, "row": np.int32})
    return recordings, manifest


def _write_tables(tmp: Path, recordings: pd.DataFrame, manifest: pd.DataFrame, cfg: Config,
                  source: str, labelled: bool, source_version: str) -> dict:
    recordings.to_parquet(tmp / "recordings.parquet", index=False)
    manifest.to_parquet(tmp / "manifest.parquet", index=False)
    files = {}
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                files[path.relative_to(tmp).as_posix()] = sha256_file(handle)
    checksum = hashlib.sha256("".join(f"{k} {v}\n" for k, v in files.items()).encode())
    audio = np.load(tmp / "shards" / f"{manifest['shard'].iloc[0]}.audio.npy", mmap_mode="r")
    video = np.load(tmp / "shards" / f"{manifest['shard'].iloc[0]}.video.npy", mmap_mode="r")
    statuses = recordings["status"].value_counts()
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "dataset_id": checksum.hexdigest()[:12], "checksum": f"sha256:{checksum.hexdigest()}",
        "sempair_version": sempair.__version__, "source": source,
        "source_version": source_version,
        "features": asdict(cfg.features), "ingest": asdict(cfg.ingest),
        "shapes": {"audio": list(audio.shape[1:]), "video": list(video.shape[1:])},
        "dtypes": {"audio": str(audio.dtype), "video": str(video.dtype)},
        "counts": {
            "recordings": len(recordings), "clips": len(manifest),
            **{status: int(statuses.get(status, 0)) for status in (OK, PARTIAL, QUARANTINED)},
            "splits": {s: int((manifest["split"] == s).sum()) for s in SPLITS},
        },
        "labels": sorted(manifest["label"].unique()) if labelled else None,
        "files": files,
    }
    # meta.json is written last: its presence marks a complete dataset
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _fresh_tmp_dir(out: Path) -> Path:
    """A hidden sibling of `out`; leftovers of dead runs are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and psutil.pid_exists(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():   # --overwrite: swap, then delete the old one
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
