"""The `sempair` command: help that explains, errors that say how to fix, exit codes."""

import subprocess
import sys

import pandas as pd

from sempair.cli import main
from tests.conftest import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "sempair.cli", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_help_names_every_command_and_explains_ingest():
    assert {"synth", "ingest"} <= set(run("--help").stdout.split())
    text = run("ingest", "--help").stdout
    for words in ("quarantined", "truncated", "events.csv", "--overwrite", "--set"):
        assert words in text, words


def test_missing_source_is_exit_2_with_a_fix(tmp_path):
    result = run("ingest", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_bad_override_is_exit_2(tmp_path):
    result = run("ingest", str(tmp_path), str(tmp_path / "out"), "--set", "ingest.nope=1")
    assert result.returncode == 2 and "unknown key 'ingest.nope'" in result.stderr


def test_synth_then_ingest_end_to_end(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "rec"), "--recordings", "2", "--seconds", "6",
                 "--set", "synth.width=64", "--set", "synth.height=48", "-q",
                 "--bad-files"]) == 0
    assert main(["ingest", str(tmp_path / "rec"), str(tmp_path / "clips"), "-q",
                 "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "quarantined" in printed and "bad/empty.mp4" in printed
    recordings = pd.read_parquet(tmp_path / "clips" / "recordings.parquet")
    assert (recordings["status"] == "ok").sum() == 2
    assert main(["ingest", str(tmp_path / "rec"), str(tmp_path / "clips"), "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_nothing_ingestible_is_exit_1_listing_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.mp4").write_text("hello")
    result = run("ingest", str(tmp_path / "src"), str(tmp_path / "out"), "-q")
    assert result.returncode == 1
    assert "a.mp4: a text file" in result.stderr
