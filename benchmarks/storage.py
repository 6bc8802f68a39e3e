"""S3 transfer, S3 ingest and validation cost against plain peers, in one run on one server.

    python benchmarks/storage.py            # writes the `## Storage` section of results.md
    python benchmarks/storage.py --quick    # a smoke run, prints only

Everything talks to one moto_server (`pipelines.local_s3.run_moto`) on 127.0.0.1. moto is a
Python server, so absolute MB/s are far below a real MinIO's; the figures that matter are
the ratios of our verified path to a peer that does the same transfer with no checks:

  upload    `storage.publish` (sha256 pass, upload with the digest as metadata, a HEAD per
            file to verify, marker last) vs boto3 `upload_file` of the same files
  download  `storage.fetch` into a fresh cache (listing, streamed sha256, temp name + rename)
            vs a boto3 listing + `download_file` of the same files
  big file  one random file through `S3Store.upload` / `download` (publish's and fetch's
            per-file path) vs boto3 `upload_file` / `download_file`, to show multipart

Two bare paths are timed beside them, to split the ratios into SDK and verification: the
minio SDK alone (`fput_object` with no metadata and no HEAD; `get_object` streamed to the
file with no hash and no rename), i.e. ours minus its checks, and for downloads boto3's
plain `get_object` streamed (s3transfer's `download_file` adds a HEAD and an I/O thread).
  ingest    `sempair.ingest` from s3:// vs the same recordings in a local folder, 1 worker
  validate  `validate_dataset` on the ingested dataset: GX import, first and second call

The peer gets the same file concurrency (`Transfer.workers` threads) and part size, and its
flexible checksums (CRC32, on by default in recent botocore) are turned off: no checks at all.
Timings are the best of `--repeats` (transfers: `--transfer-repeats`, they are short and
noisy), ours and the peer's interleaved.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from report import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(__file__).with_name(".work") / "storage"
BUCKET = "bench"
MIB = 1 << 20

VALIDATE = """
import json, sys, time
from sempair.config import load_config
from sempair.validation import validate_dataset
cfg = load_config().validate
started = time.perf_counter()
import great_expectations
imported = time.perf_counter()
first = validate_dataset(sys.argv[1], sys.argv[2] + '-1', cfg)
done_first = time.perf_counter()
validate_dataset(sys.argv[1], sys.argv[2] + '-2', cfg)
done_second = time.perf_counter()
print(json.dumps({'import': imported - started, 'first': done_first - imported,
                  'second': done_second - done_first, 'passed': first.passed,
                  'checks': len(first.checks)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no results file")
    parser.add_argument("--recordings", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each recording")
    parser.add_argument("--big-mib", type=int, default=64, help="size of the single large file")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for ingest")
    parser.add_argument("--transfer-repeats", type=int, default=7,
                        help="best of N for each transfer")
    args = parser.parse_args()
    if args.quick:
        args.recordings, args.seconds, args.big_mib = 2, 10.0, 24
        args.repeats = args.transfer_repeats = 1

    sys.path.insert(0, str(ROOT))   # pipelines/ is not an installed package
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "tmp").mkdir(parents=True)
    saved = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "TMPDIR")}
    os.environ["XDG_CACHE_HOME"] = str(WORK / "cache")
    os.environ["TMPDIR"] = tempfile.tempdir = str(WORK / "tmp")   # moto spills objects here
    try:
        report = run(args)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
        tempfile.tempdir = None
        _restore(saved)
    print(report)
    if not args.quick:
        write_section(report)


def _restore(saved: dict[str, str | None]) -> None:
    """Put environment variables back as they were (None: unset)."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def run(args) -> str:
    from pipelines.local_s3 import run_moto
    from sempair.config import load_config
    from sempair.ingest import ingest
    from sempair.synth import generate

    load = os.getloadavg()[0]   # before this run adds its own
    cfg = load_config()
    # the camera of benchmarks/ingest.py: 320×240 at 25 fps, 48 kHz stereo
    camera = dataclasses.replace(cfg.synth, recordings=args.recordings, seconds=args.seconds,
                                 width=320, height=240, fps=25, sample_rate=48000, channels=2)
    recordings, dataset = WORK / "recordings", WORK / "dataset"
    print(f"generating {camera.recordings} × {camera.seconds:.0f} s recordings", flush=True)
    generate(recordings, camera)
    summary = ingest(recordings, dataset, cfg, workers=1, overwrite=True)   # also warms up
    big = WORK / "big" / "big.bin"
    big.parent.mkdir()
    with open(big, "wb") as out:
        for _ in range(args.big_mib):
            out.write(os.urandom(MIB))
    sha_seconds = _sha256_seconds(dataset)

    with run_moto(WORK / "moto.log") as server:
        saved = {name: os.environ.get(name) for name in (*server.env, "AWS_SESSION_TOKEN")}
        os.environ.update(server.env)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        try:
            server.client().create_bucket(Bucket=BUCKET)
            rows = _transfers(args, dataset, big)
            ingest_rows = _ingests(args, recordings, cfg)
        finally:
            _restore(saved)
    validation = _validate(dataset)
    return _report(args, camera, summary, dataset, big, rows, ingest_rows, validation,
                   sha_seconds, load)


# -- transfers -------------------------------------------------------------------------

def _transfers(args, dataset: Path, big: Path) -> dict[str, float]:
    """Best seconds of each transfer, ours and the peer's, interleaved."""
    from boto3.s3.transfer import TransferConfig

    from sempair.storage import TRANSFER, S3Store, fetch, publish

    peer = _peer_client()
    transfer = TransferConfig(multipart_threshold=TRANSFER.part_size,
                              multipart_chunksize=TRANSFER.part_size)
    store = S3Store(BUCKET)
    files = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file())
    times: dict[str, list[float]] = {}

    def timed(name: str, action: Callable[[], object]) -> None:
        started = time.perf_counter()
        action()
        times.setdefault(name, []).append(time.perf_counter() - started)
        print(f"{name:24} {times[name][-1]:6.2f} s", flush=True)

    def each_file(prefix: str, action: Callable[[str, str], object]) -> None:
        """`action(relative path, key)` for every dataset file, TRANSFER.workers at once."""
        _threads(TRANSFER.workers, [(lambda rel=rel: action(rel, f"{prefix}/{rel}"))
                                    for rel in files])

    def listed(prefix: str, action: Callable[[str, Path], object], dest: Path) -> None:
        """A listing (boto3), then `action(key, local path)` for each object, in parallel."""
        keys = [o["Key"] for page in peer.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/") for o in page.get("Contents", [])]
        assert len(keys) == len(files), (len(keys), len(files))
        for key in keys:
            (dest / key.removeprefix(prefix + "/")).parent.mkdir(parents=True, exist_ok=True)
        _threads(TRANSFER.workers, [
            (lambda key=key: action(key, dest / key.removeprefix(prefix + "/")))
            for key in keys])

    def listed_minio(prefix: str, dest: Path) -> None:
        """The same with the minio SDK alone: its listing, then bare streamed GETs."""
        keys = [o.object_name for o in store.client.list_objects(
            BUCKET, prefix=prefix + "/", recursive=True)]
        assert len(keys) == len(files), (len(keys), len(files))
        for key in keys:
            (dest / key.removeprefix(prefix + "/")).parent.mkdir(parents=True, exist_ok=True)
        _threads(TRANSFER.workers, [
            (lambda key=key: _minio_get(store, key, dest / key.removeprefix(prefix + "/")))
            for key in keys])

    def peer_put(path: Path, key: str) -> None:
        peer.upload_file(str(path), BUCKET, key, Config=transfer)

    def peer_get(key: str, path: Path) -> None:
        peer.download_file(BUCKET, key, str(path), Config=transfer)

    def minio_put(path: Path, key: str) -> None:
        store.client.fput_object(BUCKET, key, str(path), part_size=TRANSFER.part_size)

    def interleaved(actions: dict[str, Callable[[int], object]],
                    after: Callable[[], object] = lambda: None) -> None:
        """Each action once per repeat, the order rotated: a warm server helps whoever
        goes second."""
        names = list(actions)
        for r in range(args.transfer_repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                timed(name, lambda name=name, r=r: actions[name](r))
                after()

    down = WORK / "down"
    interleaved({
        "upload ours": lambda r: publish(dataset, f"s3://{BUCKET}/ours/{r}"),
        "upload peer": lambda r: each_file(f"peer/{r}",
                                           lambda rel, key: peer_put(dataset / rel, key)),
        "upload minio": lambda r: each_file(f"minio/{r}",
                                            lambda rel, key: minio_put(dataset / rel, key))})
    interleaved({
        "download ours": lambda r: fetch(f"s3://{BUCKET}/ours/0", down),
        "download peer": lambda r: listed("peer/0", peer_get, down),
        "download boto3": lambda r: listed("peer/0", lambda key, path: _boto3_get(
            peer, key, path), down),
        "download minio": lambda r: listed_minio("minio/0", down)},
        after=lambda: shutil.rmtree(down))
    for prefix in ("ours/", "peer/", "minio/"):
        _delete(peer, prefix)

    dest = down / "big.bin"
    down.mkdir(parents=True, exist_ok=True)
    interleaved({"big upload ours": lambda r: store.upload(big, f"big/ours-{r}"),
                 "big upload peer": lambda r: peer_put(big, f"big/peer-{r}"),
                 "big upload minio": lambda r: minio_put(big, f"big/minio-{r}")})
    interleaved({"big download ours": lambda r: store.download("big/ours-0", dest),
                 "big download peer": lambda r: peer_get("big/peer-0", dest),
                 "big download boto3": lambda r: _boto3_get(peer, "big/peer-0", dest),
                 "big download minio": lambda r: _minio_get(store, "big/minio-0", dest)},
                after=dest.unlink)
    _delete(peer, "big/")
    return {name: min(values) for name, values in times.items()}


def _boto3_get(client, key: str, path: Path) -> None:
    """The least a boto3 download can do: one GET streamed into the file."""
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    with open(path, "wb") as out:
        for chunk in body.iter_chunks(MIB):
            out.write(chunk)


def _minio_get(store, key: str, path: Path) -> None:
    """The same with the minio SDK: what `S3Store.download` does, minus hash and rename."""
    response = store.client.get_object(BUCKET, key)
    try:
        with open(path, "wb") as out:
            for block in response.stream(MIB, decode_content=False):
                out.write(block)
    finally:
        response.close()
        response.release_conn()


def _peer_client():
    """boto3 as most code uses it, minus the default CRC32 checksums: no checks at all."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        region_name=os.environ["AWS_REGION"],
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required",
                                      max_pool_connections=32))


def _threads(workers: int, tasks: list[Callable[[], object]]) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(task) for task in tasks]:
            future.result()


def _delete(client, prefix: str) -> None:
    """Free the server's memory between phases."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _sha256_seconds(folder: Path) -> float:
    """What hashing the dataset once costs on its own (publish hashes each file before it
    uploads it)."""
    from sempair.storage import sha256_file

    started = time.perf_counter()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                sha256_file(handle)
    return time.perf_counter() - started


# -- ingest and validation -------------------------------------------------------------

def _ingests(args, recordings: Path, cfg) -> dict[str, float]:
    from sempair.ingest import ingest
    from sempair.storage import upload_dir

    upload_dir(recordings, f"s3://{BUCKET}/recordings", marker=None)
    sources = {"s3": f"s3://{BUCKET}/recordings", "local": recordings}
    times: dict[str, list[float]] = {}
    for r in range(args.repeats):
        for name in (("s3", "local") if r % 2 == 0 else ("local", "s3")):
            started = time.perf_counter()
            ingest(sources[name], WORK / f"ingest-{name}", cfg, workers=1, overwrite=True)
            times.setdefault(name, []).append(time.perf_counter() - started)
            print(f"ingest from {name:18} {times[name][-1]:6.2f} s", flush=True)
    return {name: min(values) for name, values in times.items()}


def _validate(dataset: Path) -> dict:
    """In a fresh process, once: the first call pays GX's one-off costs."""
    out = subprocess.run([sys.executable, "-c", VALIDATE, str(dataset), str(WORK / "gx")],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"validation failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"validate: {result}", flush=True)
    return result


# -- the report ------------------------------------------------------------------------

def _report(args, camera, summary, dataset: Path, big: Path, t: dict[str, float],
            ingest_times: dict[str, float], validation: dict, sha_seconds: float,
            load: float) -> str:
    from sempair.storage import TRANSFER

    files = [p for p in dataset.rglob("*") if p.is_file()]
    data_mb = sum(p.stat().st_size for p in files) / 1e6
    shards = [p for p in files if p.parent.name == "shards"]
    big_mb = big.stat().st_size / 1e6
    part = TRANSFER.part_size
    rec_mb = sum(p.stat().st_size for p in (WORK / "recordings").rglob("*") if p.is_file()) / 1e6

    def rows(what: str, key: str, mb: float, **paths: str) -> list[str]:
        """One row per path (ours, peer, bare ones), each with its ratio to the peer's time."""
        return [f"| {what} | {path} | {t[f'{key} {who}']:.2f} | {mb / t[f'{key} {who}']:.0f} | "
                f"{t[f'{key} {who}'] / t[f'{key} peer']:.2f}× |" for who, path in paths.items()]

    table = [
        "| transfer | path | seconds | MB/s | ratio to peer |",
        "|---|---|---:|---:|---:|",
        *rows(f"dataset upload ({len(files)} files, {data_mb:.0f} MB)", "upload", data_mb,
              ours="**`publish`**", peer="boto3 `upload_file`",
              minio="bare minio `fput_object`"),
        *rows("dataset download (same)", "download", data_mb, ours="**`fetch`**, fresh cache",
              peer="boto3 list + `download_file`", boto3="bare boto3 list + `get_object`",
              minio="bare minio list + `get_object`"),
        *rows(f"one file upload ({big_mb:.0f} MB, {math.ceil(big_mb * 1e6 / part)} parts)",
              "big upload", big_mb, ours="**`S3Store.upload`**", peer="boto3 `upload_file`",
              minio="bare minio `fput_object`"),
        *rows("one file download (same)", "big download", big_mb,
              ours="**`S3Store.download`**", peer="boto3 `download_file`",
              boto3="bare boto3 `get_object`", minio="bare minio `get_object`"),
    ]
    media = camera.recordings * camera.seconds
    s3, local = ingest_times["s3"], ingest_times["local"]
    ingest_table = [
        "| ingest source | seconds | clips/s | ratio to local |",
        "|---|---:|---:|---:|",
        f"| local folder | {local:.2f} | {summary.clips / local:.0f} | 1.00× |",
        f"| `s3://` (moto) | {s3:.2f} | {summary.clips / s3:.0f} | {s3 / local:.2f}× |",
    ]
    v = validation
    cold = v["import"] + v["first"]
    cmd = "python benchmarks/storage.py" + (" --quick" if args.quick else "")
    return "\n".join([
        "## Storage",
        "",
        f"`{cmd}` — every transfer against one `moto_server` on 127.0.0.1 "
        f"(`pipelines/local_s3.py`). **moto is a single Python process, so absolute MB/s are "
        "far below what MinIO or AWS S3 sustain; read the ratios**, measured back to back on "
        "the same server. Ours is the verified path (`sempair.storage`, minio SDK "
        f"{_version('minio')}): upload = a sha256 pass over the file, the upload with the "
        "digest as metadata, then a HEAD to check size and digest (`publish` writes the "
        "marker meta.json last); download = a listing, a streamed sha256 check, a temp name "
        f"renamed into place. The peer is boto3 {_version('boto3')} with no checks (its "
        "default CRC32 flexible checksums turned off), the same "
        f"{TRANSFER.workers} files at a time and the same {TRANSFER.part_size // MIB} MiB "
        f"parts. Dataset: {summary.recordings} synthetic recordings × {camera.seconds:.0f} s "
        f"(H.264 {camera.width}×{camera.height} @ {camera.fps} fps + AAC, {rec_mb:.0f} MB) "
        f"ingested at the default settings into {summary.clips} clips, {len(shards)} shards. "
        f"MB = 10⁶ bytes. Transfers best of {args.transfer_repeats}, ingest best of "
        f"{args.repeats}, the paths interleaved; client and server share "
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores; "
        f"Python {platform.python_version()}, moto {_version('moto')}, {date.today()}; 1-min "
        f"load average {load:.1f} at the start (this run keeps both client and server busy, "
        "so only the starting figure says whether other jobs were running).",
        "",
        *table,
        "",
        f"**Ratios to the peer: upload {t['upload ours'] / t['upload peer']:.2f}× (dataset), "
        f"{t['big upload ours'] / t['big upload peer']:.2f}× (one file); download "
        f"{t['download ours'] / t['download peer']:.2f}× (dataset), "
        f"{t['big download ours'] / t['big download peer']:.2f}× (one file)**. The checks "
        "alone, ours against the bare minio SDK: upload "
        f"{t['upload ours'] / t['upload minio']:.2f}× (dataset) and "
        f"{t['big upload ours'] / t['big upload minio']:.2f}× (one file), download "
        f"{t['download ours'] / t['download minio']:.2f}× and "
        f"{t['big download ours'] / t['big download minio']:.2f}×. On uploads that is a HEAD "
        "per file (plus the listing and the marker's PUT + HEAD after the rest), which is "
        "most of the cost for small files, and a sha256 pass before each upload; on downloads "
        "the sha256 in the download thread. Hashing alone runs at "
        f"{data_mb / sha_seconds:.0f} MB/s here ({sha_seconds:.3f} s for the dataset).",
        "",
        f"Ingest, 1 worker, the same {summary.recordings} recordings ({media:.0f} s of media): "
        "from `s3://` each recording is downloaded (verified) into the cache, decoded, and "
        "deleted.",
        "",
        *ingest_table,
        "",
        f"Validation (`validate_dataset`, {v['checks']} checks, "
        f"{'passed' if v['passed'] else 'FAILED'}) on the {summary.clips}-clip dataset, in a "
        f"fresh process: importing Great Expectations {v['import']:.2f} s, the first call "
        f"{v['first']:.2f} s, a second call {v['second']:.2f} s "
        f"({summary.clips / v['second']:.0f} clips/s warm; {summary.clips / cold:.0f} clips/s "
        f"cold, import included: {cold:.2f} s).",
        "",
    ])


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
