"""Run the training pipeline DAG locally with kfp.local (no cluster, no Docker).

    python -m pipelines.local --source DIR       # recordings you have
    python -m pipelines.local --synth            # generate synthetic ones first (make demo)

Every task runs as a subprocess of this Python (SubprocessRunner(use_venv=False)): the
components need sempair importable here, and nothing is pip-installed per task. Outputs,
the kfp workspace and TMPDIR all live under --workdir, so nothing leaks into /tmp.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path


def run_local(source: str | Path, workdir: Path, overrides: list[str] | None = None) -> dict:
    """Execute the DAG on `source`; returns the pipeline's outputs."""
    workdir = workdir.absolute()
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(tmp)   # kfp leaks temp dirs otherwise

    from kfp import local

    from pipelines.training import training_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(workdir / "kfp"),
               workspace_root=str(workdir / "workspace"), raise_on_error=True)
    with warnings.catch_warnings():
        # kfp warns that our image name has no "python" in it: the runner uses this env
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        run = training_pipeline(source=str(Path(source).absolute()),
                                overrides=list(overrides or []))
    return dict(run.outputs)


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
    if args.synth:
        import dataclasses
        import shutil

        from sempair.config import load_config
        from sempair.synth import generate, write_bad_files

        cfg = load_config(None, args.set).synth
        cfg = dataclasses.replace(cfg, **{k: v for k, v in (
            ("recordings", args.recordings), ("seconds", args.seconds)) if v is not None})
        shutil.rmtree(source, ignore_errors=True)
        print(generate(source, cfg, progress=True))
        write_bad_files(source / "bad", seed=cfg.seed)

    outputs = run_local(source, args.workdir, args.set)
    dataset = outputs["dataset"]
    print("\n== sempair pipeline (local) ==")
    print(f"recordings   {dataset.metadata['recordings']} in {source}")
    print(f"clips        {outputs['clips']}  splits {dataset.metadata['splits']}")
    print(f"quarantined  {outputs['quarantined']} (reasons: recordings.parquet, the "
          "ingest log above)")
    print(f"dataset      {dataset.path}  (id {dataset.metadata['dataset_id']})")
    print(f"outputs      {args.workdir.absolute() / 'kfp'}")
    print(f"elapsed      {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
