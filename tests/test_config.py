import dataclasses
import re
import typing

import pytest
import yaml

from sempair.cli import main
from sempair.config import RULES, Config, ConfigError, load_config
from tests.conftest import ROOT


def test_params_yaml_is_the_packaged_default_and_fills_every_field():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg == load_config()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(Config)}
    assert cfg.to_dict()["features"] == raw["features"]


def test_override_changes_one_value_and_keeps_types():
    cfg = load_config(None, ["ingest.workers=3", "features.f_max=7000"])
    assert cfg.ingest.workers == 3
    assert cfg.features.f_max == 7000.0 and isinstance(cfg.features.f_max, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ingest.workers = 1


@pytest.mark.parametrize("override, message", [
    ("ingest.wokers=2", "unknown key 'ingest.wokers'"),
    ("workers=2", "section.key=value"),
    ("ingest.workers=two", "expected int"),
    ("ingest.clip_seconds=0.55", "whole number"),
    ("features.win_seconds=0.1", "raise n_fft"),
])
def test_bad_overrides_say_what_to_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_params_file_missing_a_key_is_rejected(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["ingest"]["shard_clips"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="missing \\['shard_clips'\\]"):
        load_config(path)


def test_training_bounds_are_checked():
    with pytest.raises(ConfigError, match="must be >= 0"):
        load_config(None, ["train.partners_per_anchor=-1"])
    with pytest.raises(ConfigError, match="choose one of passes, recompute"):
        load_config(None, ["train.bank=fresh"])


# --- ranges (issue 13: items 3, 6, 12) --------------------------------------------------

NUMERIC = (int, float, tuple[int, ...], tuple[float, ...])


def test_every_numeric_field_has_a_range_and_the_packaged_params_pass_them():
    sections = typing.get_type_hints(Config)
    numeric = {f"{name}.{field}" for name, cls in sections.items()
               for field, hint in typing.get_type_hints(cls).items() if hint in NUMERIC}
    assert numeric == set(RULES)
    cfg = load_config()
    for key, rule in RULES.items():
        section, name = key.split(".")
        assert rule.problem(key, getattr(getattr(cfg, section), name)) is None, key


@pytest.mark.parametrize("override, message", [
    # counts and sizes: at least one (or two, for a contrastive batch)
    ("ingest.shard_clips=-3", r"ingest.shard_clips=-3 is out of range: must be >= 1 "
                              r"\(clips per shard file\)"),
    ("train.batch_size=1", "train.batch_size=1 is out of range: must be >= 2"),
    ("serve.workers=0", "serve.workers=0 is out of range: must be >= 1"),
    # rates and seconds: positive
    ("features.fps=0", "features.fps=0 is out of range: must be >= 1"),
    ("train.lr=0", r"train.lr=0.0 is out of range: must be > 0 \(learning rate\)"),
    ("serve.startup_timeout=-5", "must be > 0"),
    # non-negative, where 0 means off or auto
    ("train.threads=-1", r"must be >= 0 \(torch CPU threads; 0 = torch's default\)"),
    ("ingest.workers=-2", "must be >= 0"),
    # shares and probabilities
    ("validate.max_silent_share=1.5", r"must be in \[0, 1\]"),
    ("serve.anomaly_quantile=0", r"must be in \(0, 1\]"),
    ("ingest.test_fraction=1", r"must be in \[0, 1\)"),
    ("train.threshold=1.5", r"must be in \[-1, 1\]"),
    # never nan or infinite
    ("train.temperature=.nan", "train.temperature=nan is out of range"),
    ("serve.max_media_seconds=.inf", "serve.max_media_seconds=inf is out of range"),
    # lists: every item, and not empty
    ("model.video_widths=[8, 0]", r"model.video_widths=\[8, 0\] is out of range: every item"),
    ("experiment.seeds=[]", r"experiment.seeds=\[\] is empty"),
    # ports, and the user id of the pipeline's non-root tasks
    ("serve.metrics_port=70000", r"must be in \[1, 65535\]"),
    ("pipeline.run_as_user=0", "must be >= 1"),
])
def test_each_range_family_refuses_values_outside_it(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


@pytest.mark.parametrize("overrides, message", [
    (["ingest.val_fraction=0.5", "ingest.test_fraction=0.5"],
     r"val_fraction \+ ingest.test_fraction = 1 must be in \[0, 1\)"),
    (["features.f_max=8001"], "f_min < f_max <= sample_rate/2"),
    (["features.f_min=8000"], "f_min < f_max <= sample_rate/2"),
    (["features.win_seconds=0.005"], "need win >= hop"),
    (["features.hop_seconds=0.00001"], "under one sample"),
    (["validate.brightness=[0.8, 0.2]"], r"\[low, high\] with low < high"),
    (["validate.loudness_dbfs=[-120.0]"], r"\[low, high\] with low < high"),
    (["serve.metrics_port=8081"], "must differ"),
])
def test_values_that_must_agree_are_checked_together(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_zero_where_it_means_off_or_auto_is_accepted():
    cfg = load_config(None, ["train.threads=0", "ingest.workers=0", "serve.threads=0",
                             "train.partners_per_anchor=0", "train.warmup_epochs=0",
                             "validate.min_test_clips=0", "ingest.val_fraction=0"])
    assert cfg.train.threads == cfg.ingest.workers == cfg.serve.threads == 0


def test_shard_clips_zero_is_refused_before_any_file_is_written(tmp_path, capsys):
    source, out = tmp_path / "recordings", tmp_path / "clips"
    source.mkdir()
    assert main(["ingest", str(source), str(out), "-q", "--set", "ingest.shard_clips=0"]) == 2
    error = capsys.readouterr().err
    assert "ingest.shard_clips=0 is out of range: must be >= 1" in error
    assert "--set ingest.shard_clips=0" in error
    assert not out.exists()


def test_negative_grad_clip_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"train.grad_clip=-1.0 is out of range: must be > 0 "
                                          r"\(max global gradient norm") as caught:
        load_config(None, ["train.grad_clip=-1"])
    assert "--set train.grad_clip=-1" in str(caught.value)
    assert load_config(None, ["train.grad_clip=1e9"]).train.grad_clip == 1e9


def test_exponent_floats_are_floats_in_overrides_and_in_files(tmp_path):
    # YAML 1.1 reads 1e-3 (no dot) as a string
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 0.001
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["weight_decay"] = "1e-5"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_config(path).train.weight_decay == 1e-5


def test_int_fields_take_whole_floats_and_refuse_fractions_and_booleans():
    assert load_config(None, ["train.epochs=2.0"]).train.epochs == 2
    assert load_config(None, ["ingest.shard_clips=1e3"]).ingest.shard_clips == 1000
    with pytest.raises(ConfigError, match=r"train.epochs: expected int \(a whole number\)"):
        load_config(None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"train\.lr: expected float, got True"):
        load_config(None, ["train.lr=true"])


def test_a_bad_override_is_named_and_a_bad_file_value_names_the_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.lr=fast"])
    message = str(caught.value)
    assert "train.lr: expected float, got 'fast'" in message
    assert "--set train.lr=fast" in message and "params.yaml" not in message
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ingest"]["shard_clips"] = 0
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"set it with --set ingest.shard_clips=VALUE or in "
                                          f"{re.escape(str(path))}"):
        load_config(path)


def test_an_override_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match=r"--set model.audio_widths=\[8, 16: the value is "
                                          "not valid YAML"):
        load_config(None, ["model.audio_widths=[8, 16"])


def test_sections_check_their_ranges_however_they_are_made():
    cfg = load_config()
    with pytest.raises(ConfigError, match=r"ingest\.shard_clips=0 is out of range"):
        dataclasses.replace(cfg.ingest, shard_clips=0)


def test_the_command_line_reports_a_range_error_as_a_usage_error(tmp_path, capsys):
    out = tmp_path / "recordings"
    assert main(["synth", str(out), "-q", "--set", "synth.recordings=0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sempair synth: error: invalid configuration")
    assert "synth.recordings=0 is out of range" in error and "Traceback" not in error
    assert not out.exists()
