"""Run the training pipeline DAG (ingest, validate, train, evaluate, gated release) locally.

    python -m pipelines.local --source DIR       # recordings you have (a folder or s3://)
    python -m pipelines.local --synth            # generate synthetic ones first (make demo)
    python -m pipelines.local --synth --s3       # ... through a local S3 server (make demo-s3)

Every task runs as a subprocess of this Python (SubprocessRunner(use_venv=False)): the
components need sempair importable here, and nothing is pip-installed per task. Outputs,
the kfp workspace and TMPDIR all live under --workdir, so nothing leaks into /tmp.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path


def run_local(source: str | Path, workdir: Path, overrides: list[str] | None = None, *,
              store: str = "", reference: str = "", deploy: str = "local") -> dict:
    """Execute the DAG on `source` (a folder or s3:// URI); returns the pipeline's outputs.
    `store` and `reference` are the pipeline's parameters of the same names; `deploy` its
    deploy_target. A local deployment's TorchServe keeps running in WORKDIR/torchserve:
    stop it with `sempair serve stop --workdir WORKDIR/torchserve` (or `stop_serving`)."""
    from kfp import local

    from pipelines.training import training_pipeline

    workdir = workdir.absolute()
    with _tmpdir(workdir / "tmp"), warnings.catch_warnings():
        # kfp warns that our image name has no "python" in it: the runner uses this env
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(workdir / "kfp"),
                   workspace_root=str(workdir / "workspace"), raise_on_error=True)
        run = training_pipeline(source=_absolute(source), store=_absolute(store),
                                reference=_absolute(reference), deploy_target=deploy,
                                serve_dir=str(serve_dir(workdir)),
                                overrides=list(overrides or []))
    return dict(run.outputs)


def serve_dir(workdir: Path) -> Path:
    """Where a local deployment runs TorchServe (config, model store, logs, token)."""
    return workdir.absolute() / "torchserve"


def stop_serving(workdir: Path) -> bool:
    """Stop the TorchServe a local deployment left running; False if there was none."""
    from sempair.serving.server import stop_server

    return stop_server(serve_dir(workdir))


def _absolute(uri: str | Path) -> str:
    """Task subprocesses run elsewhere: local paths must be absolute, URIs stay as they are."""
    from sempair.storage import is_remote

    return str(uri) if not uri or is_remote(uri) else str(Path(uri).absolute())


@contextlib.contextmanager
def _tmpdir(path: Path):
    """TMPDIR (for us and the task subprocesses) inside the workdir: kfp leaks temp dirs."""
    path.mkdir(parents=True, exist_ok=True)
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(path)
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The local run's options (also `sempair pipeline run --local`)."""
    parser.add_argument("--source", help="folder or s3:// URI of recordings (default with "
                        "--synth: WORKDIR/recordings)")
    parser.add_argument("--synth", action="store_true",
                        help="generate synthetic recordings (plus a few broken files) first")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"),
                        help="where recordings, pipeline outputs and temp files go")
    parser.add_argument("--recordings", type=int, default=None, help="synth.recordings")
    parser.add_argument("--seconds", type=float, default=None, help="synth.seconds")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="params.yaml overrides, passed to every step")
    parser.add_argument("--store", default="",
                        help="publish datasets, validation reports and models here "
                        "(s3://bucket or a folder; endpoint and keys from AWS_* variables)")
    parser.add_argument("--reference", default="",
                        help="a dataset (folder or URI) to measure drift against")
    parser.add_argument("--deploy", default="local", choices=("local", "none"),
                        help="after a passed gate: start TorchServe and predict a test "
                        "recording with it (local, stopped at the end), or only archive it")
    parser.add_argument("--s3", action="store_true",
                        help="start a throwaway S3-protocol server on 127.0.0.1, upload the "
                        "recordings to it and use it as source and store (needs moto, a dev "
                        "dependency; everything on it is gone when the run ends)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run_from_args(parser, parser.parse_args(argv))


def run_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Generate recordings if asked, run the DAG, print what it did and one served answer."""
    if not (args.source or args.synth):
        parser.error("give --source DIR, or --synth to generate recordings")
    if args.source and args.source.startswith("s3://") and (args.synth or args.s3):
        parser.error("--synth and --s3 work on a local folder of recordings; with an s3:// "
                     "--source, leave them out (the AWS_* variables name the server)")

    started = time.perf_counter()
    source = args.source or args.workdir / "recordings"    # a URI stays a string
    if args.synth:   # the `sempair synth` command, broken files included
        from sempair.cli import main as sempair

        sizes = [f"--{k}={v}" for k, v in (("recordings", args.recordings),
                                            ("seconds", args.seconds)) if v is not None]
        if sempair(["synth", str(source), "--bad-files", *sizes,
                    *[f"--set={s}" for s in args.set]]):
            raise SystemExit("synth failed: see the error above")

    with contextlib.ExitStack() as stack:
        store = args.store
        if args.s3:
            source, store = stack.enter_context(_on_local_s3(source, args.workdir))
        stack.callback(stop_serving, args.workdir)    # no TorchServe outlives the demo
        outputs = run_local(source, args.workdir, args.set, store=store,
                            reference=args.reference, deploy=args.deploy)
        print_summary(source, args.workdir, outputs, time.perf_counter() - started, store)
        print_served_prediction(args.workdir, source)


@contextlib.contextmanager
def _on_local_s3(recordings: Path, workdir: Path):
    """Serve S3 on loopback and copy the recordings into a bucket; yields (source URI,
    store URI) with the AWS_* variables set for this process and its tasks."""
    from pipelines.local_s3 import run_moto
    from sempair.storage import upload_dir

    workdir.mkdir(parents=True, exist_ok=True)
    with run_moto(workdir / "s3-server.log") as server:
        saved = {name: os.environ.get(name) for name in server.env}
        os.environ.update(server.env)
        try:
            server.client().create_bucket(Bucket=DEMO_BUCKET)
            upload_dir(recordings, f"s3://{DEMO_BUCKET}/recordings", marker=None)
            print(f"S3 server at {server.endpoint}: recordings uploaded to "
                  f"s3://{DEMO_BUCKET}/recordings")
            yield f"s3://{DEMO_BUCKET}/recordings", f"s3://{DEMO_BUCKET}"
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


DEMO_BUCKET = "sempair-demo"


def print_summary(source: Path | str, workdir: Path, outputs: dict, elapsed: float,
                  store: str = "") -> None:
    import pandas as pd

    from sempair.dataset import read_meta

    dataset = Path(outputs["dataset"].path)
    meta = read_meta(dataset)
    counts = meta["counts"]
    recordings = pd.read_parquet(dataset / "recordings.parquet")
    print("\n== sempair pipeline (local) ==")
    print(f"recordings   {counts['recordings']} in {source} ({counts['ok']} whole, "
          f"{counts['partial']} partial, {counts['quarantined']} quarantined)")
    for row in recordings[recordings["status"] != "ok"].itertuples():
        print(f"  {row.status:<11} {row.recording}: {row.error[:110]}")
    splits = ", ".join(f"{k} {v}" for k, v in counts["splits"].items())
    print(f"clips        {counts['clips']} ({splits})")
    print(f"dataset      {dataset} (id {meta['dataset_id']})")
    validation = Path(outputs["validation"].path)
    checked = json.loads((validation / "validation.json").read_text())
    warned = [c for c in checked["checks"] if not c["success"]]
    print(f"validation   passed {len(checked['checks'])} checks"
          + (f", {len(warned)} warnings: " + "; ".join(c["problem"] for c in warned)
             if warned else "") + f"; Data Docs {validation / 'data_docs' / 'index.html'}")
    model = Path(outputs["model"].path)
    trained = json.loads((model / "summary.json").read_text())
    config = json.loads((model / "config.json").read_text())["train"]
    quality = "" if trained["mined_precision"] is None else (
        f"; mined pairs {trained['mined_precision']:.2f} precise vs "
        f"{trained['base_rate']:.2f} for random pairs")
    print(f"model        {model} ({config['pairing']}, {config['loss']}: "
          f"{trained['epochs']} epochs, loss {trained['final_loss']:.3f}{quality})")
    evaluation = Path(outputs["evaluation"].path)
    m = json.loads((evaluation / "metrics.json").read_text())
    print(f"evaluation   localization accuracy {_fmt(m['localization_accuracy'])}, macro-F1 "
          f"{_fmt(m['localization_macro_f1'])}; anomaly AUC "
          f"{_fmt(m['anomaly_combined_auc'])}; search mAP a→v {_fmt(m['search_a2v_map'])}, "
          f"v→v {_fmt(m['search_v2v_map'])} ({m['clips_test']} test clips)")
    print(f"report       {evaluation / 'report.html'}")
    checks = json.loads((evaluation / "evaluation.json").read_text())["gate"]["checks"]
    print(f"gate         {'passed' if outputs['passed'] else 'failed'}: " + "; ".join(
        f"{c['metric']} {_fmt(c['value'])} {'>=' if c['passed'] else 'below'} "
        f"{c['threshold']}" for c in checks))
    bundles = sorted(Path(workdir, "kfp").glob("**/release.json"), key=os.path.getmtime)
    released = bundles and bundles[-1].stat().st_mtime >= time.time() - elapsed
    print("release      " + (str(bundles[-1].parent) if outputs["passed"] and released
                             else "held back by the gate (see evaluate.gate_* in params.yaml)"))
    card = json.loads((model / "model_card.json").read_text())
    print(f"model card   version {card['model']['version']}, validation "
          f"{card['validation']['status']}; `sempair audit {model}`")
    print(f"outputs      {workdir.absolute() / 'kfp'}")
    if store:
        from sempair.lineage import audit_store, format_audit

        print(f"store        {store}: `sempair audit --store {store}/models`")
        print("\n" + format_audit(audit_store(f"{store}/models")))
    print(f"elapsed      {elapsed:.1f} s")


def print_served_prediction(workdir: Path, source: Path | str) -> None:
    """The served model's answer for the recording the deploy step smoke-tested with (one
    it never trained on), checked against the source's events.csv when there is one."""
    from sempair.serving.client import format_prediction, predict_file, read_token
    from sempair.serving.server import server_status

    status = server_status(serve_dir(workdir))
    if not status:
        return
    smoke = sorted(Path(workdir, "kfp").glob("**/deploy/smoke"), key=os.path.getmtime)[-1]
    media = next(path for path in sorted(smoke.rglob("*")) if path.is_file())
    result = predict_file(media, status["inference_url"], read_token(serve_dir(workdir)),
                          status["model"])
    recording = media.relative_to(smoke).as_posix()
    print(f"\n== served prediction for {recording} (never trained on) from "
          f"{status['inference_url']} ==")
    print(format_prediction(result))
    truth = _ground_truth(source, recording, result["clips"])
    if truth:
        print(truth)


def _ground_truth(source: Path | str, recording: str, clips: list[dict]) -> str:
    """One line comparing the served answer with events.csv (the synthetic ground truth)."""
    import pandas as pd

    from sempair.annotations import EVENTS_FILE, label_clips, read_events
    from sempair.storage import open_source

    src = open_source(source)
    if not src.exists(EVENTS_FILE):
        return ""
    with src.local_copy(EVENTS_FILE) as path:
        events = read_events(path)
    table = pd.DataFrame({"recording": recording, "start": [c["start"] for c in clips],
                          "end": [c["end"] for c in clips]})
    truth = label_clips(table, events)
    right = sum(c["event"] == label for c, label in zip(clips, truth["label"], strict=True))
    flagged = {i for i, c in enumerate(clips) if c["anomalous"]}
    true = set(truth.index[truth["anomaly"] == 1])
    return (f"ground truth ({EVENTS_FILE}): {right}/{len(clips)} clips labelled right "
            f"({right / len(clips):.0%}); anomalous clips: {len(true)} true, {len(flagged)} "
            f"flagged, {len(true & flagged)} of them right")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
