"""DVC: dvc.yaml stays in step with the CLI, and a real repro -> push -> fresh clone -> pull
round trip restores byte-identical data from the S3 remote."""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sempair.cli import build_parser
from sempair.config import Config
from sempair.storage import sha256_file
from tests.conftest import ROOT, TRAIN_SMALL

DVC = str(Path(sys.executable).with_name("dvc"))
SEMPAIR_BIN = Path(sys.executable).parent
# tiny data and model: every stage's real code path in about a minute
TINY = [*TRAIN_SMALL, "train.epochs=2", "synth.recordings=5", "synth.seconds=10.0",
        "synth.width=96", "synth.height=72", "synth.fps=10", "synth.sample_rate=16000",
        "ingest.workers=1", "validate.min_train_clips=8", "validate.min_test_clips=4",
        "evaluate.map_method=pca", "evaluate.pair_batches=5"]


def test_every_stage_calls_a_real_command_with_real_params():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    parser = build_parser()
    sections = {f.name for f in dataclasses.fields(Config)}
    produced: set[str] = set()
    for name, stage in stages.items():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "sempair", name
        args = parser.parse_args(argv[1:])               # exits on an unknown command/flag
        assert args.params == Path("params.yaml"), f"{name} must read the tracked params"
        assert {p.split(".")[0] for p in stage["params"]} <= sections, name
        assert set(stage.get("deps", [])) <= produced, f"{name} depends on a later stage"
        produced |= set(stage["outs"])
    assert list(stages) == ["synth", "ingest", "validate", "train", "evaluate"]
    assert stages["evaluate"]["metrics"] == ["reports/evaluation/metrics.json"]


def test_the_committed_dvc_config_holds_no_endpoint_or_secret():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "s3://" in config
    for secret in ("access_key_id", "secret_access_key", "endpointurl", "session_token"):
        assert secret not in config, f".dvc/config must not commit {secret}"
    assert "/config.local" in (ROOT / ".dvc" / ".gitignore").read_text()


def _project(path: Path, env: dict) -> Path:
    """A git + DVC project holding this repo's pipeline files and tiny params."""
    path.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, path / name)
    (path / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, path / ".dvc" / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for item in TINY:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        params[section][name] = yaml.safe_load(value)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    (path / ".gitignore").write_text("/data\n/models\n/reports\n")
    _run(["git", "init", "-q", "-b", "main"], path, env)
    return path


def _run(argv: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _checksums(folder: Path) -> dict[str, str]:
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                sums[path.relative_to(folder).as_posix()] = sha256_file(handle)
    return sums


@pytest.mark.slow
def test_repro_push_and_a_fresh_clone_pulls_the_exact_data(tmp_path, s3_server, s3_env):
    env = {**os.environ, **s3_server.env, "PATH": f"{SEMPAIR_BIN}:{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site-cache"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    project = _project(tmp_path / "project", env)
    _run([DVC, "repro", "-q"], project, env)

    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert list(lock) == ["synth", "ingest", "validate", "train", "evaluate"]
    clips_md5 = lock["ingest"]["outs"][0]["md5"]
    card = json.loads((project / "models/encoders/model_card.json").read_text())
    assert card["validation"]["status"] == "passed"
    assert card["data"]["dvc"]["md5"] == clips_md5, "the card must name the DVC data version"
    metrics = json.loads(_run([DVC, "metrics", "show", "--json"], project, env))
    assert "localization_macro_f1" in json.dumps(metrics)

    # the remote: the committed url, pointed at this test's server and bucket, locally only
    remote = ["remote", "modify", "--local", "store"]
    _run([DVC, *remote, "url", f"s3://{s3_env}/dvc"], project, env)
    _run([DVC, *remote, "endpointurl", s3_server.endpoint], project, env)
    _run(["git", "add", "-A"], project, env)
    _run(["git", "commit", "-q", "-m", "tiny pipeline"], project, env)
    _run([DVC, "push", "-q"], project, env)

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path, env)
    assert not (clone / "data").exists() and not (clone / ".dvc" / "config.local").exists()
    _run([DVC, *remote, "url", f"s3://{s3_env}/dvc"], clone, env)
    _run([DVC, *remote, "endpointurl", s3_server.endpoint], clone, env)
    _run([DVC, "pull", "-q"], clone, env)
    for out in ("data/clips", "models/encoders", "reports/validation"):
        assert _checksums(clone / out) == _checksums(project / out), out
    for out in [f"reports/evaluation/{name}" for name in (
            "metrics.json", "evaluation.json", "probe.npz", "anomaly.npz", "report.html")]:
        assert (clone / out).read_bytes() == (project / out).read_bytes(), out
    status = _run([DVC, "status", "--json"], clone, env)
    assert json.loads(status) == {}, f"the pulled clone is not up to date: {status}"
