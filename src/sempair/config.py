"""Configuration: params.yaml read into frozen dataclasses.

params.yaml is the one home of defaults: the dataclasses below declare names and types
only, so a value can never silently differ between the file and the code.

    cfg = load_config()                                   # the packaged params.yaml
    cfg = load_config("params.yaml", ["ingest.workers=2"])  # a file plus overrides
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAMS_ENV = "SEMPAIR_PARAMS"


@dataclass(frozen=True)
class SynthConfig:
    seed: int
    recordings: int
    seconds: float
    width: int
    height: int
    fps: int
    sample_rate: int
    channels: int
    events_per_minute: float
    anomaly_share: float


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int
    n_fft: int
    win_seconds: float
    hop_seconds: float
    n_mels: int
    f_min: float
    f_max: float
    fps: int
    height: int
    width: int

    @property
    def win_length(self) -> int:
        return round(self.win_seconds * self.sample_rate)

    @property
    def hop_length(self) -> int:
        return round(self.hop_seconds * self.sample_rate)


@dataclass(frozen=True)
class IngestConfig:
    clip_seconds: float
    hop_seconds: float
    val_fraction: float
    test_fraction: float
    split_seed: int
    workers: int
    shard_clips: int
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ValidateConfig:
    max_quarantined_share: float
    silence_dbfs: float
    max_silent_share: float
    black_brightness: float
    max_black_share: float
    loudness_dbfs: tuple[float, ...]
    brightness: tuple[float, ...]
    plausible_share: float
    min_train_clips: int
    min_test_clips: int
    labels: tuple[str, ...]
    drift_max_kl: float
    drift_fail: bool


@dataclass(frozen=True)
class ModelConfig:
    dim: int
    audio_widths: tuple[int, ...]
    video_widths: tuple[int, ...]


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_warmup_steps: int
    grad_clip: float
    temperature: float
    loss: str
    pairing: str
    temporal_tolerance: int
    rule: str
    k: int
    threshold: float
    candidates: str
    warmup_epochs: int
    refresh_every: int
    bank: str
    cross_recording_only: bool
    partners_per_anchor: int
    device: str
    compile: bool
    threads: int


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int
    probe_c: float
    anomaly_k: int
    pair_batches: int
    pair_batch_size: int
    map_method: str
    gate_macro_f1: float
    gate_search_map: float
    gate_anomaly_auc: float


@dataclass(frozen=True)
class ServeConfig:
    top_k: int
    anomaly_quantile: float
    max_request_mb: int
    max_media_seconds: float
    batch_size: int
    max_batch_delay_ms: int
    workers: int
    threads: int
    host: str
    inference_port: int
    management_port: int
    metrics_port: int
    startup_timeout: float
    kube_workload: str      # deployment/NAME or inferenceservice/NAME
    kube_namespace: str


@dataclass(frozen=True)
class ExperimentConfig:
    recordings: int
    seconds: float
    seeds: tuple[int, ...]
    epochs: int
    methods: tuple[str, ...]
    jobs: int


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    model_name: str
    base_image: str
    train_image: str
    s3_secret: str              # on a cluster: the Secret every task reads its S3 keys from
    settings_config_map: str    # ... and the ConfigMap with the endpoint and region
    run_as_user: int            # the images' non-root user


@dataclass(frozen=True)
class Config:
    synth: SynthConfig
    features: FeatureConfig
    ingest: IngestConfig
    validate: ValidateConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    serve: ServeConfig
    experiment: ExperimentConfig
    pipeline: PipelineConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples), so it survives a round trip to disk."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def check(self) -> Config:
        """Fail early, with the fix, on values that cannot work together."""
        f, i = self.features, self.ingest
        problems = []
        for name, seconds in (("clip_seconds", i.clip_seconds), ("hop_seconds", i.hop_seconds)):
            if seconds <= 0:
                problems.append(f"ingest.{name}={seconds} must be > 0")
            for rate_name, rate in (("features.sample_rate", f.sample_rate),
                                    ("features.fps", f.fps)):
                if abs(seconds * rate - round(seconds * rate)) > 1e-6:
                    problems.append(f"ingest.{name}={seconds} × {rate_name}={rate} is not a "
                                    "whole number of samples/frames; pick values that divide")
        if round(i.clip_seconds * f.sample_rate) % f.hop_length:
            problems.append("ingest.clip_seconds must hold a whole number of mel hops "
                            f"(features.hop_seconds={f.hop_seconds})")
        if f.win_length > f.n_fft:
            problems.append(f"features.win_seconds gives {f.win_length} samples > "
                            f"n_fft={f.n_fft}; raise n_fft")
        if not 0 <= f.f_min < f.f_max <= f.sample_rate / 2:
            problems.append(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f.f_min}, "
                            f"f_max={f.f_max}, sample_rate={f.sample_rate}")
        if not 0 <= i.val_fraction + i.test_fraction < 1:
            problems.append("ingest.val_fraction + ingest.test_fraction must be in [0, 1)")
        t = self.train
        for name, value, allowed in (
                ("loss", t.loss, ("infonce", "multipos_mean", "multipos_logsum")),
                ("pairing", t.pairing, ("temporal", "epg", "supervised")),
                ("rule", t.rule, ("topk", "threshold", "mutual_knn")),
                ("candidates", t.candidates, ("batch", "dataset")),
                ("bank", t.bank, ("passes", "recompute")),
                ("device", t.device, ("auto", "cpu", "cuda"))):
            if value not in allowed:
                problems.append(f"train.{name}={value!r}: choose one of {', '.join(allowed)}")
        if t.pairing != "temporal" and t.loss == "infonce":
            problems.append(f"train.loss=infonce uses one positive per anchor, so "
                            f"train.pairing={t.pairing}'s extra positives would be ignored; "
                            "use multipos_mean or multipos_logsum")
        if t.batch_size < 2 or t.temperature <= 0 or t.k < 1 or t.refresh_every < 1:
            problems.append("need train.batch_size >= 2, temperature > 0, k >= 1, "
                            "refresh_every >= 1")
        if min(t.partners_per_anchor, t.temporal_tolerance, t.lr_warmup_steps,
               t.warmup_epochs, t.threads) < 0 or t.epochs < 1:
            problems.append("train.partners_per_anchor, temporal_tolerance, lr_warmup_steps, "
                            "warmup_epochs and threads must be >= 0, and epochs >= 1")
        e = self.evaluate
        if min(e.batch_size, e.anomaly_k, e.pair_batches) < 1 or e.pair_batch_size < 2 \
                or e.probe_c <= 0:
            problems.append("need evaluate.batch_size, anomaly_k, pair_batches >= 1, "
                            "pair_batch_size >= 2 and probe_c > 0")
        if e.map_method not in ("tsne", "pca"):
            problems.append(f"evaluate.map_method={e.map_method!r}: choose tsne or pca")
        x = self.experiment
        if x.recordings < 3 or x.seconds <= 0 or not x.seeds or min(x.epochs, x.jobs) < 1:
            problems.append("experiment needs recordings >= 3 (train and test splits), "
                            "seconds > 0, at least one seed, epochs >= 1 and jobs >= 1")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
        return self


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message says how to fix it."""


def default_params_path() -> Path:
    """$SEMPAIR_PARAMS if set, else the params.yaml shipped with the package."""
    return Path(os.environ.get(PARAMS_ENV) or Path(__file__).with_name("params.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Read params.yaml (or `path`), apply `section.key=value` overrides, validate."""
    path = Path(path) if path else default_params_path()
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; pass --params FILE or set "
                          f"{PARAMS_ENV}")
    raw = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        _apply_override(raw, item)
    return _build(Config, raw, where=str(path)).check()


def _apply_override(raw: dict, item: str) -> None:
    key, sep, value = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"override {item!r} must look like section.key=value, "
                          "e.g. ingest.workers=2")
    if section not in raw or name not in raw[section]:
        raise ConfigError(f"override {item!r}: unknown key {key!r}; known keys in "
                          f"{section!r}: {sorted(raw.get(section, {}))}")
    raw[section][name] = yaml.safe_load(value)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    missing, unknown = fields.keys() - raw.keys(), raw.keys() - fields.keys()
    if missing or unknown:
        raise ConfigError(f"{where}: {cls.__name__} is missing {sorted(missing)} and has "
                          f"unknown keys {sorted(unknown)}; compare with the packaged "
                          "params.yaml")
    values = {}
    for name in fields:
        hint, value, here = hints[name], raw[name], f"{where}:{name}"
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, here)
        else:
            values[name] = _coerce(hint, value, here)
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type, _) = typing.get_args(hint)
        return tuple(_coerce(item_type, v, where) for v in value)
    if isinstance(hint, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in configs")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
