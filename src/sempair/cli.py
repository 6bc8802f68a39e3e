"""The `sempair` command: one subcommand per pipeline step, each a thin call into the library.

Every subcommand reads params.yaml (`--params FILE`, default: the packaged one) and takes
`--set section.key=value` overrides, so the CLI, DVC stages and KFP components share one
configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from sempair import SempairError, __version__
from sempair.config import Config, ConfigError, load_config


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

    summary = ingest(args.source, args.out, _config(args), workers=args.workers,
                     overwrite=args.overwrite, progress=not args.quiet)
    print(summary)


def cmd_train(args: argparse.Namespace) -> None:
    from sempair.train import train

    summary = train(args.dataset, args.out, _config(args), resume=args.resume,
                    progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:   # one summary under torchrun
        print(summary)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from sempair.evaluate import evaluate

    summary = evaluate(args.model, args.dataset, args.out, _config(args),
                       report=not args.no_report)
    print(summary)


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
        "recordings: synthetic data, ingestion, training (temporal or embedding-based pair "
        "generation), evaluation and the experiment grid; serving next. Every command reads "
        "params.yaml; see "
        "`sempair COMMAND --help`.")
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
    ingest.add_argument("source", help="folder of recordings (a recording's id is its path "
                        "relative to this folder)")
    ingest.add_argument("out", help="dataset folder to create")
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
    train.add_argument("dataset", help="clip dataset folder (from `sempair ingest`)")
    train.add_argument("out", help="model folder to write")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in OUT from its last checkpoint")
    train.set_defaults(func=cmd_train)

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
    evaluate.add_argument("model", help="model folder (from `sempair train`)")
    evaluate.add_argument("dataset", help="labelled clip dataset (from `sempair ingest`)")
    evaluate.add_argument("out", help="folder for metrics and the report")
    evaluate.add_argument("--no-report", action="store_true",
                          help="metrics only: skip report.html and its figures")
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
