"""Cross-modal neighbour mining time per refresh: faiss vs blockwise torch, in one run.

    python benchmarks/mining.py             # N = 10k, 100k, 1M; writes benchmarks/results.md
    python benchmarks/mining.py --quick     # a smoke run, prints only

Each refresh searches every clip's video embedding against all N audio embeddings and vice
versa (`sempair.knn.topk_inner_product`, exact, d=128, k=10). Synthetic L2-normalised
embeddings with cluster structure (recurring events) stand in for real ones. Exact search is
N² work, so past `--max-queries` clips only a subset of queries is timed (against all N keys)
and the time is scaled linearly to N queries; each query costs the same full scan, so the
scaling is exact up to timing noise. Each measurement runs in a fresh subprocess so its peak
RSS is its own; timings are the best of `--repeats`, the backends interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from report import write_section

ROOT = Path(__file__).resolve().parents[1]

SEARCH = """
import json, resource, sys, time
import torch
from sempair.knn import topk_inner_product
backend, n, queries, d, k, recording = sys.argv[1], *map(int, sys.argv[2:])
g = torch.Generator().manual_seed(0)
centres = torch.nn.functional.normalize(torch.randn(max(10, n // 100), d, generator=g), dim=1)
event = torch.randint(len(centres), (n,), generator=g)  # which recurring event each clip shows
def embed(ids):  # one modality's view of the clips: its event plus per-clip noise
    noise = torch.randn(len(ids), d, generator=g) * 0.8 / d ** 0.5
    return torch.nn.functional.normalize(centres[event[ids]] + noise, dim=1)
audio = torch.empty(n, d)
for i in range(0, n, 65536):  # in chunks, so generation does not set the peak RSS
    audio[i:i + 65536] = embed(torch.arange(i, min(n, i + 65536)))
video = embed(torch.arange(queries))
groups = dict(query_groups=torch.arange(queries) // recording,
              key_groups=torch.arange(n) // recording) if recording else {}
warm = {key: value[:100] for key, value in groups.items()}
topk_inner_product(video[:100], audio[:100], k, backend=backend, **warm)  # warm up
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
scores, indices = topk_inner_product(video, audio, k, backend=backend, **groups)
seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
assert scores.shape == (queries, k) and bool((indices >= 0).all())
cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
print(json.dumps({'seconds': seconds, 'cpu': cpu, 'peak_mb': after.ru_maxrss / 1024,
                  'search_mb': (after.ru_maxrss - before.ru_maxrss) / 1024}))
"""


def measure(backend: str, n: int, queries: int, recording: int, args) -> dict:
    out = subprocess.run([sys.executable, "-c", SEARCH, backend, *map(str, (
        n, queries, args.dim, args.k, recording))],
        cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{backend} search at N={n} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no results file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--max-queries", type=int, default=10_000,
                        help="time at most this many queries per search, then extrapolate")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--recording", type=int, default=3600,
                        help="clips per recording for the cross-recording rows (1 h of 1 s clips)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N searches")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.max_queries, args.repeats, args.recording = [2000, 20_000], 1000, 1, 500

    backends = ("faiss", "torch") if _version("faiss") != "not installed" else ("torch",)
    load = os.getloadavg()[0]
    rows = []
    for n in args.sizes:
        queries = min(n, args.max_queries)
        for across in (False, True):
            runs = {backend: [] for backend in backends}
            for _ in range(args.repeats):  # interleaved: other jobs' load hits both alike
                for backend in backends:
                    r = measure(backend, n, queries, args.recording if across else 0, args)
                    runs[backend].append(r)
                    print(f"N={n:>9,} {'across recordings' if across else 'all pairs':17} "
                          f"{backend:5}: {r['seconds']:.2f} s ({r['cpu']:.2f} s CPU) for "
                          f"{queries:,} queries, peak {r['peak_mb']:.0f} MB", flush=True)
            timed = {b: min(rs, key=lambda r: r["seconds"]) for b, rs in runs.items()}
            ratio = timed["faiss"]["seconds"] / timed["torch"]["seconds"] if (
                "faiss" in timed) else None
            for backend, r in timed.items():
                rows.append((n, across, backend, queries, r, ratio if backend == "faiss" else None))

    table = [
        "| N clips | pairs mined | backend | queries timed | timed (s) | CPU (s) | one direction "
        "| refresh (both directions) | peak RSS (MB) | search +MB | faiss / torch |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, across, backend, queries, r, ratio in rows:
        scale = n / queries
        one = r["seconds"] * scale
        mark = "" if scale == 1 else " *"
        table.append(
            f"| {n:,} | {'across recordings' if across else 'all'} | {backend} | "
            f"{queries:,}{' of ' + format(n, ',') if scale != 1 else ''} | "
            f"{r['seconds']:.2f} | {r['cpu']:.2f} | "
            f"{_duration(one)}{mark} | {_duration(2 * one)}{mark} | {r['peak_mb']:.0f} | "
            f"{r['search_mb']:.0f} | {f'{ratio:.2f}×' if ratio else ''} |")
    cmd = "python benchmarks/mining.py" + (" --quick" if args.quick else "")
    report = "\n".join([
        "## Mining",
        "",
        f"`{cmd}` — exact top-{args.k} inner-product search (`sempair.knn`), d={args.dim}, "
        "synthetic L2-normalised embeddings with recurring-event clusters (seeded). One "
        "direction = N video queries against N audio keys; a refresh mines both directions. "
        f"\"Across recordings\" excludes same-recording keys (recordings of {args.recording:,} "
        "clips). Rows marked * are **extrapolated**: only the first `queries timed` queries "
        "were searched (against all N keys) and the time scaled by N / queries; rows without "
        f"* are measured in full. Each search runs in a fresh subprocess; best of {args.repeats}, "
        "the backends interleaved. `CPU` is the search's own CPU time (≈ threads × wall when "
        "it has the cores to itself). Peak "
        "RSS includes torch and the embeddings, `search +MB` is the peak's rise during the "
        "search (faiss copies the keys into its index; a full run adds N·k·12 bytes of "
        f"results). {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))}"
        f" cores, {_threads()} threads, Python {platform.python_version()}, torch "
        f"{_version('torch')}, faiss {_version('faiss')}; 1-min load average {load:.1f} before "
        f"the run and {os.getloadavg()[0]:.1f} after (above ~{_threads()} means other jobs "
        "shared the cores).",
        "",
        *table,
        "",
    ])
    print(report)
    if not args.quick:
        write_section(report)


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s" if seconds < 120 else (
        f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    main()
