"""Ingest throughput and memory against PyAV's bare decode of the same files, in one run.

    python benchmarks/ingest.py                 # default size, writes benchmarks/results.md
    python benchmarks/ingest.py --quick         # a smoke run, prints only

The figure is the ratio: ingest time / decode-only time on the same files, both in one
process with the same decoder threading (aim: <= 2×). Each measurement runs in a fresh
subprocess so its peak RSS is its own. Synthetic generation speed is reported too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from report import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(__file__).with_name(".work")

DECODE_ONLY = """
import json, resource, sys, time
from pathlib import Path
import av
files = sorted(p for p in Path(sys.argv[1]).rglob('*.mp4'))
started, frames, samples = time.perf_counter(), 0, 0
for path in files:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        video.thread_type = 'AUTO'
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if packet.stream.type == 'video':
                    frames += 1
                else:
                    samples += frame.samples
print(json.dumps({'seconds': time.perf_counter() - started, 'frames': frames,
                  'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

INGEST = """
import json, resource, sys, time
from sempair.config import load_config
from sempair.ingest import ingest
started = time.perf_counter()
summary = ingest(sys.argv[1], sys.argv[2], load_config(), workers=int(sys.argv[3]),
                 overwrite=True)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({'seconds': time.perf_counter() - started, 'clips': summary.clips,
                  'media_seconds': summary.media_seconds,
                  'peak_mb': max(own, children) / 1024}))
"""


def measure(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny size, no results file")
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each timing")
    args = parser.parse_args()
    if args.quick:
        args.recordings, args.seconds, args.repeats = 2, 10.0, 1

    from sempair.config import load_config
    from sempair.synth import generate

    cfg = load_config()
    # a realistic camera: 320×240 at 25 fps, 48 kHz stereo
    camera = dataclasses.replace(cfg.synth, recordings=args.recordings, seconds=args.seconds,
                                 width=320, height=240, fps=25, sample_rate=48000, channels=2)
    source = WORK / "recordings"
    started = time.perf_counter()
    generate(source, camera)
    synth_seconds = time.perf_counter() - started
    media = camera.recordings * camera.seconds

    decode = min((measure(DECODE_ONLY, source) for _ in range(args.repeats)),
                 key=lambda r: r["seconds"])
    runs = {}
    for workers in (1, 2):
        runs[workers] = min((measure(INGEST, source, WORK / "dataset", workers)
                             for _ in range(args.repeats)), key=lambda r: r["seconds"])

    rows = [
        ("PyAV decode only (1 process)", decode["seconds"], decode["peak_mb"], 1.0),
        *[(f"sempair ingest, {w} worker{'s' * (w > 1)}", r["seconds"], r["peak_mb"],
           r["seconds"] / decode["seconds"]) for w, r in runs.items()],
    ]
    table = [
        "| run | seconds | clips/s | × real time | peak RSS (MB) | ratio to decode |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {name} | {sec:.2f} | {runs[1]['clips'] / sec:.0f} | {media / sec:.0f} | "
          f"{mb:.0f} | {ratio:.2f}× |" for name, sec, mb, ratio in rows],
    ]
    report = "\n".join([
        "## Ingest",
        "",
        f"`python benchmarks/ingest.py` — {camera.recordings} synthetic recordings × "
        f"{camera.seconds:.0f} s ({media:.0f} s of media), H.264 {camera.width}×"
        f"{camera.height} @ {camera.fps} fps + AAC {camera.sample_rate} Hz stereo → "
        f"{runs[1]['clips']} clips of {cfg.ingest.clip_seconds} s "
        f"({cfg.features.n_mels} mel × 100, {cfg.features.fps} frames of "
        f"{cfg.features.height}×{cfg.features.width}). Best of {args.repeats}; "
        f"{platform.processor() or platform.machine()}, {_cores()} cores, "
        f"Python {platform.python_version()}.",
        "",
        *table,
        "",
        f"**Ingest / decode (1 process): {runs[1]['seconds'] / decode['seconds']:.2f}×** "
        "(aim ≤ 2×). Peak RSS of ingest includes torch; with 2 workers it is the largest "
        "single process.",
        "",
        f"Synthetic generation (`sempair synth`, same recordings): {synth_seconds:.1f} s, "
        f"{media / synth_seconds:.1f}× real time.",
        "",
    ])
    print(report)
    if not args.quick:
        write_section(report)


def _cores() -> int:
    import os
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
