"""Compile the pipeline DAG to the YAML checked in beside it (a test keeps it fresh)."""

import argparse
from pathlib import Path

from kfp import compiler

from pipelines.training import training_pipeline

COMPILED = Path(__file__).with_name("training_pipeline.yaml")


def compile_pipeline(path: Path = COMPILED) -> Path:
    compiler.Compiler().compile(training_pipeline, str(path))
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=COMPILED)
    print(f"wrote {compile_pipeline(parser.parse_args().out)}")
