"""dvc.yaml stays in step with the CLI and params.yaml (DVC itself arrives with storage)."""

import dataclasses
import shlex

import yaml

from sempair.cli import build_parser
from sempair.config import Config
from tests.conftest import ROOT


def test_every_stage_calls_a_real_command_with_real_params():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    parser = build_parser()
    sections = {f.name for f in dataclasses.fields(Config)}
    produced: set[str] = set()
    for name, stage in stages.items():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "sempair", name
        parser.parse_args(argv[1:])                      # exits on an unknown command/flag
        assert set(stage["params"]) <= sections, name
        assert set(stage.get("deps", [])) <= produced, f"{name} depends on a later stage"
        produced |= set(stage["outs"])
    assert list(stages) == ["synth", "ingest", "train", "evaluate"]
    metrics = [next(iter(m)) for m in stages["evaluate"]["metrics"]]
    assert metrics == ["reports/evaluation/metrics.json"]
