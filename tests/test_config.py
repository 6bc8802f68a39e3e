import dataclasses

import pytest
import yaml

from sempair.config import Config, ConfigError, load_config
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
