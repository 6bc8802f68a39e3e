"""The `sempair` command: one subcommand per pipeline step, each a thin call into the library.

Every subcommand reads params.yaml (`--params FILE`, default: the packaged one) and takes
`--set section.key=value` overrides, so the CLI, DVC stages and KFP components share one
configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from sempair import SempairError, __version__
from sempair.config import Config, ConfigError, load_config
from sempair.storage import check_destination, fetch, is_remote, publish


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.params, args.set)


def cmd_synth(args: argparse.Namespace) -> None:
    from sempair.synth import generate, write_bad_files

    cfg = _config(args).synth
    cfg = dataclasses.replace(cfg, **{k: v for k, v in (
        ("seed", args.seed), ("recordings", args.recordings), ("seconds", args.seconds))
        if v is not None})
    summary = generate(Path(args.out), cfg, progress=not args.quiet)
    print(summary)
    if args.bad_files:
        kinds = write_bad_files(Path(args.out) / "bad", seed=cfg.seed)
        print(f"wrote {len(kinds)} broken files for the quarantine to catch: "
              + ", ".join(f"bad/{name} ({kind})" for name, kind in kinds.items()))


def cmd_ingest(args: argparse.Namespace) -> None:
    from sempair.ingest import ingest

    with _output(args.out, marker="meta.json") as out:
        summary = ingest(args.source, out, _config(args), workers=args.workers,
                         overwrite=args.overwrite or is_remote(args.out),
                         progress=not args.quiet)
    print(summary)


def cmd_validate(args: argparse.Namespace) -> None:
    from sempair.validation import validate_dataset

    dataset = _input(args.dataset, marker="meta.json")
    reference = _input(args.reference, marker="meta.json") if args.reference else None
    with _output(args.out, marker="validation.json") as out:
        result = validate_dataset(dataset, out, _config(args).validate, reference=reference)
    print(result.summary_markdown())
    print(f"report: {args.out}/validation.html, Great Expectations Data Docs: "
          f"{args.out}/data_docs/index.html")
    result.raise_for_failures()


def cmd_train(args: argparse.Namespace) -> None:
    from sempair.train import train

    if args.resume and is_remote(args.out):
        raise SempairError("--resume needs a local OUT (the checkpoint lives there): train "
                           "into a folder, then `sempair`-publish it or copy it to the store")
    dataset = _input(args.dataset, marker="meta.json")
    validation = _input(args.validation, marker="validation.json") if args.validation else None
    main_rank = int(os.environ.get("RANK", "0")) == 0   # under torchrun: rank 0 publishes
    with _output(args.out, marker="model_card.json", publish_here=main_rank) as out:
        summary = train(dataset, out, _config(args), resume=args.resume,
                        progress=not args.quiet, validation=validation,
                        dataset_uri=args.dataset if is_remote(args.dataset) else None)
    if main_rank:   # one summary under torchrun
        print(summary)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sempair.evaluate import evaluate

    model = _input(args.model, marker="model_card.json")
    dataset = _input(args.dataset, marker="meta.json")
    with _output(args.out, marker="evaluation.json") as out:
        summary = evaluate(model, dataset, out, _config(args), report=not args.no_report)
    print(summary)


def cmd_audit(args: argparse.Namespace) -> None:
    from sempair import lineage

    if bool(args.model) == bool(args.store):
        raise SempairError("give a MODEL folder/URI, or --store URI for every model in a "
                           "models prefix (not both)")
    if args.model:
        card = lineage.read_card(args.model)
        print(json.dumps(card, indent=2) if args.json
              else lineage.format_rows(lineage.card_rows(card)))
        return
    entries = lineage.audit_store(args.store)
    print(json.dumps([dataclasses.asdict(e) | {"flagged": e.flagged} for e in entries],
                     indent=2) if args.json else lineage.format_audit(entries))


def cmd_serve(args: argparse.Namespace) -> None:
    from sempair.serving.server import server_status, start_server, stop_server

    if args.action == "pull":
        cmd_pull(args)
        return
    workdir = Path(args.workdir)
    if args.action == "start":
        if not args.model:
            raise SempairError("serve start needs MODEL: a release folder (from the pipeline "
                               "or `sempair`'s release step), its serving/ bundle, or a .mar")
        served = start_server(_servable(args.model), workdir, _config(args).serve,
                              ports={"inference": args.port} if args.port else None)
        print(f"serving {served.model_name} (pid {served.pid})\n"
              f"  predictions  POST {served.inference_url}/predictions/{served.model_name}\n"
              f"  health       GET  {served.inference_url}/ping\n"
              f"  metrics      GET  {served.metrics_url}/metrics (Prometheus)\n"
              f"  token        {workdir / 'key_file.json'} (inference key; send as "
              "`Authorization: Bearer ...`)\n"
              f"  try          sempair predict FILE --workdir {workdir}\n"
              f"  stop         sempair serve stop --workdir {workdir}")
    elif args.action == "stop":
        print("stopped" if stop_server(workdir) else f"nothing was running in {workdir}")
    else:
        status = server_status(workdir)
        print(json.dumps(status, indent=2) if status else f"not running ({workdir})")


def _servable(uri: str) -> Path:
    """A release folder -> its serving bundle; a bundle or .mar as is. An s3:// URI must be
    a release (STORE/models/<name>/<version>/release): it is fetched and verified."""
    if uri.endswith(".mar"):
        if is_remote(uri):
            raise SempairError(f"{uri}: serve an s3:// release folder (…/<version>/release), "
                               "or copy the .mar to a local path first")
        return Path(uri)
    path = _input(uri, marker="release.json" if is_remote(uri) else "")
    return path / "serving" if (path / "serving").is_dir() else path


def cmd_predict(args: argparse.Namespace) -> None:
    from sempair.serving.client import format_prediction, predict_file, read_token
    from sempair.serving.server import server_status

    url, model, token = args.url, args.model, args.token
    if not url:
        status = server_status(Path(args.workdir))
        if not status:
            raise SempairError(f"no server running in {args.workdir}; start one with "
                               "`sempair serve start MODEL` or pass --url and --token")
        url, model = status["inference_url"], model or status["model"]
    token = token or read_token(Path(args.workdir))
    result = predict_file(Path(args.file), url, token, model, top_k=args.top_k,
                          embeddings=args.embeddings)
    print(json.dumps(result, indent=2) if args.json else format_prediction(result))


def cmd_pull(args: argparse.Namespace) -> None:
    from sempair.serving.deploy import pull_archive

    uri = args.uri or os.environ.get("SEMPAIR_MODEL_URI", "")
    sha256 = args.sha256 or os.environ.get("SEMPAIR_MODEL_SHA256", "")
    path = pull_archive(uri, sha256, Path(args.out), name=_config(args).pipeline.model_name)
    print(f"pulled {uri} -> {path} (sha256 {sha256} verified)")


def cmd_buckets(args: argparse.Namespace) -> None:
    from sempair.storage import S3Store

    for bucket in args.buckets:
        created = S3Store(bucket).ensure_bucket()
        print(f"{'created' if created else 'exists '} s3://{bucket}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    if args.action == "compile":
        from pipelines.compile import compile_pipeline

        print(f"wrote {compile_pipeline(Path(args.out))}")
    elif args.action == "run":
        from pipelines.local import run_from_args

        if not args.local:
            args.parser.error("`run` executes the DAG on this machine: add --local (on a "
                              "cluster: `sempair pipeline submit --host URL`)")
        run_from_args(args.parser, args)
    else:
        _cluster_pipeline(args)


def _cluster_pipeline(args: argparse.Namespace) -> None:
    from pipelines.cluster import RunRequest, schedule, submit

    request = RunRequest(source=args.source, store=args.store, reference=args.reference,
                         deploy_target=args.deploy_target, overrides=tuple(args.set),
                         experiment=args.experiment, service_account=args.service_account,
                         namespace=args.namespace)
    if args.action == "schedule":
        job = schedule(args.host, args.cron, request, name=args.name,
                       max_concurrency=args.max_concurrency, catchup=args.catchup)
        print(f"scheduled recurring run {job.recurring_run_id} at cron '{job.cron}' "
              f"(seconds first): {job.link}")
        return
    done = submit(args.host, request, data_version=args.data_version,
                  if_changed=args.if_changed, run_name=args.name)
    print(f"data version {done.data_version} ({args.source})")
    print(f"submitted run {done.run_id}: {done.link}" if done.run_id else
          f"nothing submitted: {done.reason}")


def _input(uri: str, marker: str) -> Path:
    """A local folder for URI: itself, or a verified download of an s3:// folder."""
    return fetch(uri, marker=marker)


@contextlib.contextmanager
def _output(uri: str, marker: str, publish_here: bool = True):
    """Write into a local folder; for an s3:// URI, a staging folder published at the end
    (MARKER last, so readers never see half a folder) unless publish_here is False (a DDP
    rank other than 0: its staging folder is discarded)."""
    if not is_remote(uri):
        yield Path(uri)
        return
    check_destination(uri, marker)          # a missing bucket fails before the work
    with tempfile.TemporaryDirectory(prefix="sempair-out-") as staging:
        out = Path(staging) / "out"
        yield out
        if publish_here:
            publish(out, uri, marker=marker)
            print(f"published {uri}")


def cmd_experiment(args: argparse.Namespace) -> None:
    from sempair.experiment import run_experiment

    results = args.results or (None if args.quick else Path("docs/results.md"))
    result = run_experiment(args.out, args.params, args.set, quick=args.quick,
                            results=results, progress=not args.quiet)
    print(result.table)
    print(f"\n{len(result.runs)} runs in {result.seconds / 60:.1f} min; table written to "
          f"{results or Path(args.out) / 'results.md'}")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", type=Path, default=None,
                        help="params.yaml to read (default: $SEMPAIR_PARAMS, else the "
                             "packaged one)")
    common.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one value of params.yaml; repeatable, e.g. "
                             "--set features.fps=4")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    parser = argparse.ArgumentParser(
        prog="sempair", description="Audio-visual representation learning for surveillance "
        "recordings: synthetic data, ingestion, validation, training (temporal or "
        "embedding-based pair generation), evaluation, lineage audit and the experiment "
        "grid. Paths may be s3:// URIs (endpoint and credentials from the AWS_* environment "
        "variables). Every command reads params.yaml; see `sempair COMMAND --help`.")
    parser.add_argument("--version", action="version", version=f"sempair {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser(
        "synth", parents=[common], help="write synthetic surveillance recordings + events.csv",
        description="Write synthetic surveillance recordings (H.264 + AAC .mp4 of a fixed "
        "camera scene) with ground truth in events.csv: recurring audio-visual events, "
        "audio-only and visual-only distractors, audio that leads video, day/night and "
        "rain drift, rare anomalies. Deterministic from the seed. Sizes, rates and channels "
        "come from the `synth` section of params.yaml (override with --set synth.KEY=VALUE).",
        epilog="Example, a 320×240 camera with a 48 kHz stereo microphone: sempair synth "
        "data/rec --recordings 12 --seconds 120 --set synth.width=320 --set synth.height=240 "
        "--set synth.sample_rate=48000 --set synth.channels=2")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--seed", type=int, help="random seed (default: synth.seed)")
    synth.add_argument("--recordings", type=int, help="number of recordings (synth.recordings)")
    synth.add_argument("--seconds", type=float, help="length of each recording (synth.seconds)")
    synth.add_argument("--bad-files", action="store_true",
                       help="also write one broken file of each kind under OUT/bad/ (empty, "
                       "garbage, text, no audio, no video, truncated) to see the quarantine")
    synth.set_defaults(func=cmd_synth)

    ingest = sub.add_parser(
        "ingest", parents=[common], help="recordings -> clip dataset",
        description="Cut every recording under SOURCE into clips of ingest.clip_seconds: "
        "log-mel audio (mono, features.sample_rate) and RGB frames (features.fps, "
        "features.height × width), in memory-mappable shards with manifest.parquet, "
        "recordings.parquet and meta.json. Any container FFmpeg reads; any resolution, "
        "frame rate, sample rate and channel count. Broken files are quarantined with a "
        "reason (recordings.parquet and the printed summary), never dropped silently; a "
        "truncated file keeps its decodable prefix. An events.csv at the source root adds "
        "per-clip labels for evaluation. The output appears only when complete.",
        epilog="Example, 2 s clips every second at 4 fps: sempair ingest data/rec "
        "data/clips --set ingest.clip_seconds=2.0 --set features.fps=4")
    ingest.add_argument("source", help="folder or s3://bucket/prefix of recordings (a "
                        "recording's id is its path relative to it)")
    ingest.add_argument("out", help="dataset folder (or s3:// URI) to create")
    ingest.add_argument("--workers", type=int, default=None,
                        help="processes, one recording each (default: ingest.workers; 0 = "
                        "one per core)")
    ingest.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ingest.set_defaults(func=cmd_ingest)

    train = sub.add_parser(
        "train", parents=[common], help="self-supervised training (temporal or EPG)",
        description="Train the audio and video encoders on DATASET's train split with "
        "audio-visual contrastive learning. train.pairing=temporal uses exact-time pairs "
        "(± train.temporal_tolerance windows); train.pairing=epg adds embedding-based "
        "positives after train.warmup_epochs, mined in the batch or over a dataset-wide "
        "bank (train.candidates), by train.rule. Writes OUT/model.pt, config.json, "
        "dataset.json (the data's id and checksum), log.jsonl and a checkpoint per epoch. "
        "Runs on CUDA when available; for DDP start it with `torchrun --nproc_per_node N "
        "-m sempair.cli train ...`. Labels, if any, are only used for log diagnostics.")
    train.add_argument("dataset", help="clip dataset folder or s3:// URI (from `sempair "
                       "ingest`)")
    train.add_argument("out", help="model folder (or s3:// URI) to write")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in OUT from its last checkpoint")
    train.add_argument("--validation", metavar="DIR",
                       help="`sempair validate` output for DATASET: its verdict goes into "
                       "the model card (without it the card says validation was skipped, "
                       "and `sempair audit` flags the model)")
    train.set_defaults(func=cmd_train)

    validate = sub.add_parser(
        "validate", parents=[common], help="Great Expectations checks of a clip dataset",
        description="Check DATASET with Great Expectations suites kept in sempair: the "
        "recordings table (schema, duplicate checksums, durations, codecs and rates, "
        "quarantine share), the clips (schema, nulls, finite statistics, plausible loudness "
        "and brightness, silent and black shares, no recording in two splits, enough clips "
        "per split), the annotations (known labels, start < end within the recording) and "
        "file integrity against meta.json; with --reference, drift of the clip statistics. "
        "Thresholds are the `validate` section of params.yaml. Writes OUT/validation.json, "
        "validation.md, validation.html and the Data Docs site OUT/data_docs/. Exits 1 and "
        "lists the problems when a critical check fails; warnings only print.")
    validate.add_argument("dataset", help="clip dataset folder or s3:// URI")
    validate.add_argument("out", help="folder (or s3:// URI) for the validation report")
    validate.add_argument("--reference", metavar="DATASET",
                          help="an earlier dataset version to measure drift against")
    validate.set_defaults(func=cmd_validate)

    serve = sub.add_parser(
        "serve", parents=[common], help="run a released model in a local TorchServe",
        description="start: build the TorchServe archive of MODEL (a release folder, its "
        "serving/ bundle or a .mar; s3:// URIs are fetched) and start TorchServe in WORKDIR "
        "with the hardened config (127.0.0.1, token auth, no model API, bounded requests, "
        "serve.* in params.yaml), wait until the model answers and print the endpoints. "
        "stop: stop it, leaving no process behind. status: is it running and healthy. "
        "pull: download and verify the archive a cluster rollout points at (the serving "
        "pods' init container).",
        epilog="Example: sempair serve start runs/release && sempair predict clip.mp4")
    serve.add_argument("action", choices=("start", "stop", "status", "pull"))
    serve.add_argument("model", nargs="?", help="release folder, bundle folder or .mar (start)")
    serve.add_argument("--workdir", default=".sempair/serve",
                       help="TorchServe's folder: config, model store, logs, token, pid")
    serve.add_argument("--port", type=int, help="inference port (default serve.inference_port)")
    pulling = serve.add_argument_group(
        "pull", "the serving pods' init step (k8s/): fetch the archive a rollout points at")
    pulling.add_argument("--uri", help="STORE/models/<name>/<version>/serving (default: "
                         "$SEMPAIR_MODEL_URI, from the pod's sempair.dev/model-uri)")
    pulling.add_argument("--sha256", help="the .mar's expected sha256 (default: "
                         "$SEMPAIR_MODEL_SHA256)")
    pulling.add_argument("--out", default="model-store", help="the model store to write "
                         "<pipeline.model_name>.mar into")
    serve.set_defaults(func=cmd_serve)

    predict = sub.add_parser(
        "predict", help="send a recording to the served model",
        description="POST FILE (any container FFmpeg reads) to the model served by `sempair "
        "serve start` and print, per clip: the event and its probability, the anomaly score "
        "and flag, and the most similar past clip. The URL, model and token are read from "
        "WORKDIR unless given.")
    predict.add_argument("file", help="media file to send")
    predict.add_argument("--workdir", default=".sempair/serve",
                         help="the `sempair serve` folder to read the URL and token from")
    predict.add_argument("--url", help="inference URL, e.g. http://127.0.0.1:8080")
    predict.add_argument("--model", help="model name (default: the served one)")
    predict.add_argument("--token", help="inference token (default: WORKDIR/key_file.json)")
    predict.add_argument("--top-k", type=int, help="similar past clips per clip")
    predict.add_argument("--embeddings", action="store_true", help="also return embeddings")
    predict.add_argument("--json", action="store_true", help="the raw JSON answer")
    predict.set_defaults(func=cmd_predict)

    audit = sub.add_parser(
        "audit", help="which data trained a model, and did it pass validation",
        description="Print a model's card: its dataset (id, checksum, DVC version), source "
        "and recordings digest, validation verdict, config, code version and metrics. With "
        "--store, list every model under a models prefix with the data version it was "
        "trained on, flagging models whose data failed or skipped validation.",
        epilog="Examples: sempair audit models/encoders; sempair audit --store "
        "s3://sempair/models")
    audit.add_argument("model", nargs="?", help="model or release folder, or its s3:// URI")
    audit.add_argument("--store", metavar="URI", help="a models prefix (s3:// or a folder)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=cmd_audit)

    pipeline = sub.add_parser(
        "pipeline", help="the Kubeflow DAG: compile, run here, submit or schedule on a cluster",
        description="compile: write the DAG's KFP YAML (with its Kubernetes config). run "
        "--local: execute it on this machine (each task a subprocess). submit: start one "
        "run on a Kubeflow Pipelines server, passing the data version (a checksum of the "
        "source's listing) and the parameters; --if-changed submits only when the data "
        "changed since the last submission from --store. schedule: a KFP recurring run.",
        epilog="Examples: sempair pipeline run --local --synth; sempair pipeline submit "
        "--host http://localhost:8080 --source s3://sempair-recordings/ --store s3://sempair; "
        "sempair pipeline schedule --host URL --cron '0 0 3 * * *' --source ... --store ...")
    actions = pipeline.add_subparsers(dest="action", required=True, metavar="ACTION")
    compiling = actions.add_parser("compile", help="write the KFP YAML")
    compiling.add_argument("--out", default="pipelines/training_pipeline.yaml")
    running = actions.add_parser("run", help="execute the DAG here (--local)")
    running.add_argument("--local", action="store_true", help="run on this machine")
    from pipelines.local import add_arguments as add_local_arguments

    add_local_arguments(running)
    running.set_defaults(parser=running)
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("--host", required=True, help="the KFP API, e.g. "
                         "http://ml-pipeline.kubeflow.svc.cluster.local:8888")
    cluster.add_argument("--source", required=True, help="s3:// URI of the recordings")
    cluster.add_argument("--store", default="", help="s3:// bucket for datasets and models")
    cluster.add_argument("--reference", default="", help="dataset to measure drift against")
    cluster.add_argument("--deploy-target", default="kubernetes",
                         choices=("kubernetes", "none"), help="after a passed gate: roll the "
                         "TorchServe Deployment, or only publish the archive")
    cluster.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="params.yaml overrides for every task")
    cluster.add_argument("--experiment", default="sempair", help="KFP experiment")
    cluster.add_argument("--service-account", default="sempair-pipeline",
                         help="the run's pods' service account (k8s/ creates it)")
    cluster.add_argument("--namespace", help="multi-user Kubeflow: the profile namespace")
    cluster.add_argument("--name", default="", help="run or recurring run name")
    submitting = actions.add_parser("submit", parents=[cluster], help="start one run")
    submitting.add_argument("--data-version", default="",
                            help="default: the checksum of the source's current listing")
    submitting.add_argument("--if-changed", action="store_true", help="submit only if the "
                            "data version differs from the last one submitted from --store")
    scheduling = actions.add_parser("schedule", parents=[cluster],
                                    help="create a recurring run")
    scheduling.add_argument("--cron", required=True, help="six fields, seconds first: "
                            "'0 0 3 * * *' is daily at 03:00:00")
    scheduling.add_argument("--max-concurrency", type=int, default=1)
    scheduling.add_argument("--catchup", action="store_true",
                            help="make up runs missed while paused")
    pipeline.set_defaults(func=cmd_pipeline)

    buckets = sub.add_parser(
        "buckets", help="create the object store's buckets",
        description="Create each BUCKET that does not exist yet at $AWS_ENDPOINT_URL "
        "(idempotent; the k8s bucket Job runs it).")
    buckets.add_argument("action", choices=("create",))
    buckets.add_argument("buckets", nargs="+", metavar="BUCKET")
    buckets.set_defaults(func=cmd_buckets)

    evaluate = sub.add_parser(
        "evaluate", parents=[common], help="score frozen encoders on the test split",
        description="Evaluate the frozen encoders in MODEL on DATASET (which needs labels: "
        "an events.csv at ingest): audio-visual event localization (linear probe on "
        "[audio ; video], fitted on train, scored on test: accuracy, macro-F1, confusion), "
        "anomaly detection (kNN distance to training clips, audio-video disagreement, "
        "combined: ROC-AUC, AP), event search (test queries against the train archive, "
        "audio→video, video→audio, video→video: mAP, Recall@1/10) and pair quality "
        "(temporal vs EPG positives at the model's embeddings). Writes OUT/metrics.json, "
        "evaluation.json (with the deploy gate's decision; thresholds are evaluate.gate_*), "
        "probe.npz, anomaly.npz and report.html.")
    evaluate.add_argument("model", help="model folder or s3:// URI (from `sempair train`)")
    evaluate.add_argument("dataset", help="labelled clip dataset folder or s3:// URI")
    evaluate.add_argument("out", help="folder (or s3:// URI) for metrics and the report")
    evaluate.add_argument("--no-report", action="store_true",
                          help="metrics only: skip report.html and its figures (the run "
                               "can still be released)")
    evaluate.set_defaults(func=cmd_evaluate)

    experiment = sub.add_parser(
        "experiment", parents=[common], help="the science grid: EPG vs baselines, seeds",
        description="Synthesise a benchmark (experiment.recordings × experiment.seconds), "
        "ingest it once, then train and score every method over experiment.seeds on the "
        "same split: hand-made features, random encoders, exact-time InfoNCE, ±1-window "
        "temporal pairs, EPG and its loss/rule ablations, and a supervised upper bound. "
        "Writes the mean ± std table into a generated block of --results, keeping the text "
        "around it. Finished runs under OUT are reused, so an interrupted grid resumes. "
        "The default size takes under an hour on 2 CPU cores.")
    experiment.add_argument("out", help="work folder: recordings, dataset, one folder per run")
    experiment.add_argument("--quick", action="store_true",
                            help="tiny data, model and schedule (seconds, not an hour): "
                            "checks the machinery, measures nothing")
    experiment.add_argument("--results", type=Path, default=None,
                            help="markdown file for the table (default: docs/results.md; "
                            "with --quick: OUT/results.md)")
    experiment.set_defaults(func=cmd_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"sempair {args.command}: error: {error}", file=sys.stderr)
        return 2
    except SempairError as error:
        print(f"sempair {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
