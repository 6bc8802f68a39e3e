"""Synthetic surveillance recordings with ground truth: `sempair synth`.

    summary = generate(Path("data/raw"), load_config().synth)
    print(summary)

writes cam01/…mp4, cam02/…mp4 (H.264 + AAC), events.csv (what happens where, the
evaluation ground truth) and scenes.json (the drift: start hour, rain, seeds). Modules,
top to bottom: scene (the plan), sounds (audio), draw (frames), writer (PyAV), render
(one recording, chunked), faults (broken files for ingest tests).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .faults import write_bad_files
from .render import render_recording
from .scene import AV, CLASS, Recording, background_seconds, check_size, plan, rows
from .writer import write_recording

__all__ = ["SynthSummary", "generate", "write_bad_files", "write_recording"]

EVENTS_HEADER = ("recording", "start", "end", "label", "modality", "anomaly")
MAX_WORKERS: int | None = None   # processes rendering recordings; None = one per core


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    recordings: list[str]                 # ids: paths relative to out_dir
    seconds_total: float
    events_per_class: dict[str, int]      # events present in the media, by label
    background_share: float               # share of time with no audiovisual event
    anomalies: int
    anomalous_recordings: int
    elapsed_seconds: float

    def __str__(self) -> str:
        n_av = sum(1 for k in self.events_per_class if CLASS[k].modality == AV)
        counts = ", ".join(f"{k} {v}" for k, v in self.events_per_class.items())
        return (f"synth: {len(self.recordings)} recordings, {self.seconds_total / 60:.1f} min "
                f"in {self.out_dir} ({self.elapsed_seconds:.1f} s)\n"
                f"  {sum(self.events_per_class.values())} events of "
                f"{len(self.events_per_class)} classes ({n_av} audiovisual); background "
                f"{self.background_share:.0%} of the time; anomalies: {self.anomalies} in "
                f"{self.anomalous_recordings} of {len(self.recordings)} recordings\n"
                f"  {counts}")


def generate(out_dir: Path, cfg, progress: bool = False) -> SynthSummary:
    """Plan, render and write every recording plus events.csv and scenes.json."""
    began = time.perf_counter()
    _check(cfg)
    out_dir = Path(out_dir)
    recs = plan(cfg)
    _remove_stale(out_dir, {r.id for r in recs})
    for r in recs:
        (out_dir / r.id).parent.mkdir(parents=True, exist_ok=True)
    _render_all(out_dir, recs, cfg, progress)
    table = sorted((row for r in recs for row in rows(r)), key=lambda row: (row[0], row[1]))
    with open(out_dir / "events.csv", "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(EVENTS_HEADER)
        out.writerows((r, f"{s:.2f}", f"{e:.2f}", lab, mod, a) for r, s, e, lab, mod, a in table)
    scenes = {"seed": cfg.seed, "config": asdict(cfg),
              "recordings": {r.id: r.scene_json() for r in recs}}
    (out_dir / "scenes.json").write_text(json.dumps(scenes, indent=1) + "\n")
    main_rows = [row for row in table if row[4] == CLASS[row[3]].modality]   # not lead-ins
    seconds = sum(r.seconds for r in recs)
    anomalous = {row[0] for row in main_rows if row[5]}
    return SynthSummary(
        out_dir=out_dir, recordings=[r.id for r in recs], seconds_total=seconds,
        events_per_class=dict(sorted(Counter(row[3] for row in main_rows).items())),
        background_share=sum(background_seconds(r) for r in recs) / seconds,
        anomalies=sum(row[5] for row in main_rows), anomalous_recordings=len(anomalous),
        elapsed_seconds=time.perf_counter() - began)


def _check(cfg) -> None:
    check_size(cfg.width, cfg.height)
    problems = []
    if cfg.channels not in (1, 2):
        problems.append(f"synth.channels={cfg.channels} must be 1 or 2")
    for name in ("recordings", "seconds", "fps", "sample_rate"):
        if getattr(cfg, name) <= 0:
            problems.append(f"synth.{name}={getattr(cfg, name)} must be > 0")
    if cfg.events_per_minute < 0 or not 0 <= cfg.anomaly_share <= 1:
        problems.append("need synth.events_per_minute >= 0 and 0 <= synth.anomaly_share <= 1")
    if problems:
        raise ValueError("invalid synth config: " + "; ".join(problems))


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Delete recordings a previous run listed in scenes.json that this plan no longer has."""
    old = out_dir / "scenes.json"
    if old.is_file():
        for rid in json.loads(old.read_text()).get("recordings", {}):
            if rid not in keep:
                (out_dir / rid).unlink(missing_ok=True)


def _render_all(out_dir: Path, recs: list[Recording], cfg, progress: bool) -> None:
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(recs), unit="rec", desc="synth")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(len(recs), MAX_WORKERS or cores or 1)
    try:
        if workers <= 1:
            for r in recs:
                render_recording(out_dir / r.id, r, cfg)
                bar and bar.update()
            return
        ctx = multiprocessing.get_context("spawn")
        try:
            with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                jobs = [pool.submit(render_recording, out_dir / r.id, r, cfg) for r in recs]
                for job in cf.as_completed(jobs):
                    job.result()
                    bar and bar.update()
        except cf.process.BrokenProcessPool as e:
            raise RuntimeError(
                "a synth worker process died. If generate() is called from a script, put "
                "the call under `if __name__ == '__main__':` (workers are spawned and "
                "re-import the script), or set sempair.synth.MAX_WORKERS = 1") from e
    finally:
        bar and bar.close()

