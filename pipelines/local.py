"""Run the training pipeline DAG (ingest, train, evaluate, gated release) with kfp.local.

    python -m pipelines.local --source DIR       # recordings you have
    python -m pipelines.local --synth            # generate synthetic ones first (make demo)

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


def run_local(source: str | Path, workdir: Path, overrides: list[str] | None = None) -> dict:
    """Execute the DAG on `source`; returns the pipeline's outputs."""
    from kfp import local

    from pipelines.training import training_pipeline

    workdir = workdir.absolute()
    with _tmpdir(workdir / "tmp"), warnings.catch_warnings():
        # kfp warns that our image name has no "python" in it: the runner uses this env
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(workdir / "kfp"),
                   workspace_root=str(workdir / "workspace"), raise_on_error=True)
        run = training_pipeline(source=str(Path(source).absolute()),
                                overrides=list(overrides or []))
    return dict(run.outputs)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="folder of recordings (default with --synth: "
                        "WORKDIR/recordings)")
    parser.add_argument("--synth", action="store_true",
                        help="generate synthetic recordings (plus a few broken files) first")
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"),
                        help="where recordings, pipeline outputs and temp files go")
    parser.add_argument("--recordings", type=int, default=None, help="synth.recordings")
    parser.add_argument("--seconds", type=float, default=None, help="synth.seconds")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="params.yaml overrides, passed to every step")
    args = parser.parse_args()
    if not (args.source or args.synth):
        parser.error("give --source DIR, or --synth to generate recordings")

    started = time.perf_counter()
    source = Path(args.source or args.workdir / "recordings")
    if args.synth:   # the `sempair synth` command, broken files included
        from sempair.cli import main as sempair

        sizes = [f"--{k}={v}" for k, v in (("recordings", args.recordings),
                                            ("seconds", args.seconds)) if v is not None]
        if sempair(["synth", str(source), "--bad-files", *sizes,
                    *[f"--set={s}" for s in args.set]]):
            raise SystemExit("synth failed: see the error above")

    outputs = run_local(source, args.workdir, args.set)
    print_summary(source, args.workdir, outputs, time.perf_counter() - started)


def print_summary(source: Path, workdir: Path, outputs: dict, elapsed: float) -> None:
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
    print(f"outputs      {workdir.absolute() / 'kfp'}")
    print(f"elapsed      {elapsed:.1f} s")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
