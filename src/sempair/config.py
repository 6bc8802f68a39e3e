"""Configuration: params.yaml read into frozen dataclasses.

params.yaml is the one home of defaults: the dataclasses below declare names and types
only, so a value can never silently differ between the file and the code. RULES gives every
numeric field its range, checked whenever a section is made; Config.check checks the values
that must agree. Errors name where a bad value came from: the --set override or the file.

    cfg = load_config()                                   # the packaged params.yaml
    cfg = load_config("params.yaml", ["ingest.workers=2"])  # a file plus overrides
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAMS_ENV = "SEMPAIR_PARAMS"

Problem = tuple[tuple[str, ...], str]      # (the keys at fault, what is wrong with them)


class ConfigError(ValueError):
    """A params file or override that cannot be used; the message says how to fix it.
    `problems` holds each fault with its keys, so load_config can name where it came from."""

    def __init__(self, message: str = "", problems: list[Problem] | tuple = ()):
        self.problems = tuple(problems)
        super().__init__(message or _explain(self.problems, "params.yaml", {}))


@dataclass(frozen=True)
class Range:
    """The values a numeric field (or each item of a list field) may take; always finite."""
    low: float = -math.inf
    high: float = math.inf
    what: str = ""              # what the field is, for the message
    low_open: bool = False      # low itself excluded
    high_open: bool = False
    nonempty: bool = False      # a list field needs at least one item

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return "a finite number"
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if math.isinf(self.low):
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}")

    def problem(self, key: str, value: Any) -> str | None:
        """What is wrong with `value` for `key`, or None."""
        items = value if isinstance(value, tuple) else (value,)
        if isinstance(value, tuple) and self.nonempty and not value:
            return f"{key}=[] is empty: give at least one value ({self.what})"
        if all(self.holds(v) for v in items if _is_number(v)):
            return None
        shown = list(value) if isinstance(value, tuple) else value
        every = "every item " if isinstance(value, tuple) else ""
        return f"{key}={shown} is out of range: {every}must be {self} ({self.what})"


def at_least(low: float, what: str, **kw: Any) -> Range:
    return Range(low=low, what=what, **kw)


def above(low: float, what: str) -> Range:
    return Range(low=low, low_open=True, what=what)


def share(what: str) -> Range:
    return Range(0, 1, what)


ANY = Range(what="any finite number")
SEED = at_least(0, "a random seed")
PORT = Range(1, 65535, "a TCP port")

# Every numeric field's range, in one place (cross-field rules: Config.check).
# 0 stays allowed where the code reads it as "off" or "auto" (said in `what`).
RULES: dict[str, Range] = {
    "synth.seed": SEED,
    "synth.recordings": at_least(1, "recordings to generate"),
    "synth.seconds": above(0, "seconds per recording"),
    "synth.width": at_least(16, "camera pixels; H.264 needs an even size >= 16"),
    "synth.height": at_least(16, "camera pixels; H.264 needs an even size >= 16"),
    "synth.fps": at_least(1, "camera frames per second"),
    "synth.sample_rate": at_least(1, "microphone samples per second"),
    "synth.channels": Range(1, 2, "audio channels: 1 = mono, 2 = stereo"),
    "synth.events_per_minute": at_least(0, "mean events per minute"),
    "synth.anomaly_share": share("share of recordings with anomalies"),
    "features.sample_rate": at_least(1, "audio samples per second"),
    "features.n_fft": at_least(1, "FFT size in samples"),
    "features.win_seconds": above(0, "analysis window, seconds"),
    "features.hop_seconds": above(0, "hop between analysis windows, seconds"),
    "features.n_mels": at_least(1, "mel bands"),
    "features.f_min": at_least(0, "lowest mel frequency, Hz"),
    "features.f_max": above(0, "highest mel frequency, Hz"),
    "features.fps": at_least(1, "video frames kept per second"),
    "features.height": at_least(1, "frame height, pixels"),
    "features.width": at_least(1, "frame width, pixels"),
    "ingest.clip_seconds": above(0, "clip length, seconds"),
    "ingest.hop_seconds": above(0, "step between clips, seconds"),
    "ingest.val_fraction": Range(0, 1, "share of recordings for validation", high_open=True),
    "ingest.test_fraction": Range(0, 1, "share of recordings for test", high_open=True),
    "ingest.split_seed": SEED,
    "ingest.workers": at_least(0, "processes; 0 = one per core"),
    "ingest.shard_clips": at_least(1, "clips per shard file"),
    "validate.max_quarantined_share": share("share of recordings that may be quarantined"),
    "validate.silence_dbfs": Range(high=0, what="RMS in dBFS below which a clip is silent"),
    "validate.max_silent_share": share("share of clips that may be silent"),
    "validate.black_brightness": share("mean luma (0..1) below which a clip is black"),
    "validate.max_black_share": share("share of clips that may be black"),
    "validate.loudness_dbfs": Range(high=0, what="plausible RMS range [low, high], dBFS"),
    "validate.brightness": share("plausible mean luma range [low, high]"),
    "validate.plausible_share": share("share of clips that must lie in the plausible ranges"),
    "validate.min_train_clips": at_least(0, "fewest train clips; 0 = no minimum"),
    "validate.min_test_clips": at_least(0, "fewest test clips; 0 = no minimum"),
    "validate.drift_max_kl": at_least(0, "KL divergence allowed per clip statistic"),
    "model.dim": at_least(1, "embedding size"),
    "model.audio_widths": at_least(1, "channels per audio conv block", nonempty=True),
    "model.video_widths": at_least(1, "channels per video conv block", nonempty=True),
    "model.bands": at_least(1, "frequency bands kept at the audio readout"),
    "model.grid": at_least(1, "grid × grid spatial cells kept at the video readout"),
    "train.seed": SEED,
    "train.epochs": at_least(1, "passes over the training clips"),
    "train.batch_size": at_least(2, "clips per step; a contrastive batch needs 2"),
    "train.lr": above(0, "learning rate"),
    "train.weight_decay": at_least(0, "AdamW weight decay"),
    "train.lr_warmup_steps": at_least(0, "linear warm-up steps; 0 = none"),
    "train.grad_clip": above(0, "max global gradient norm: 0 would zero every gradient; "
                                "a large value such as 1e9 clips nothing"),
    "train.temperature": above(0, "softmax temperature"),
    "train.temporal_tolerance": at_least(0, "windows apart that still count as positives"),
    "train.k": at_least(1, "neighbours for topk / mutual_knn"),
    "train.threshold": Range(-1, 1, "cosine similarity for the threshold rule"),
    "train.warmup_epochs": at_least(0, "temporal-only epochs before EPG; 0 = none"),
    "train.refresh_every": at_least(1, "epochs between bank refreshes"),
    "train.partners_per_anchor": at_least(0, "partners drawn per anchor; 0 = none"),
    "train.threads": at_least(0, "torch CPU threads; 0 = torch's default"),
    "augment.shift_pixels": at_least(0, "largest frame shift, pixels; 0 = none"),
    "augment.flip": share("probability of a horizontal flip"),
    "augment.gain_db": at_least(0, "largest audio gain change, dB; 0 = none"),
    "augment.audio_shift": at_least(0, "largest audio shift against the video, mel frames"),
    "augment.freq_mask": at_least(0, "widest SpecAugment frequency mask, mel bands"),
    "augment.time_mask": at_least(0, "widest SpecAugment time mask, mel frames"),
    "train.steps": at_least(0, "optimizer steps; 0 = train.epochs whole epochs"),
    "evaluate.batch_size": at_least(1, "clips per forward pass"),
    "evaluate.probe_c": above(0, "centre of the probe's inverse-L2 grid chosen on val"),
    "evaluate.anomaly_k": at_least(1, "nearest train clips behind the anomaly score"),
    "evaluate.pair_batches": at_least(1, "batches behind the false-negative rate"),
    "evaluate.pair_batch_size": at_least(2, "clips per such batch"),
    "evaluate.gate_macro_f1": ANY,      # metrics lie in [0, 1]: <= 0 passes all, > 1 none
    "evaluate.gate_search_map": ANY,
    "evaluate.gate_anomaly_auc": ANY,
    "serve.top_k": at_least(1, "similar clips returned per clip"),
    "serve.anomaly_quantile": Range(0, 1, "quantile of the training clips' anomaly scores",
                                    low_open=True),
    "serve.max_request_mb": at_least(1, "request body limit, MB"),
    "serve.max_media_seconds": above(0, "longest media per request, seconds"),
    "serve.batch_size": at_least(1, "requests per server-side batch"),
    "serve.max_batch_delay_ms": at_least(0, "milliseconds a batch may wait to fill"),
    "serve.workers": at_least(1, "TorchServe workers"),
    "serve.threads": at_least(0, "torch threads per worker; 0 = torch's default"),
    "serve.inference_port": PORT,
    "serve.management_port": PORT,
    "serve.metrics_port": PORT,
    "serve.startup_timeout": above(0, "seconds to wait for a healthy model"),
    "experiment.recordings": at_least(3, "synthetic recordings: train, val and test "
                                         "splits need 3"),
    "experiment.seconds": above(0, "seconds per recording"),
    "experiment.seeds": at_least(0, "training seeds", nonempty=True),
    "experiment.epochs": at_least(1, "epochs per training"),
    "experiment.steps": at_least(0, "optimizer steps per training; 0 = whole epochs"),
    "experiment.jobs": at_least(1, "trainings at once"),
    "pipeline.run_as_user": at_least(1, "the images' user id; tasks run as non-root"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checked:
    """Mixin for the section dataclasses: each numeric field is checked against RULES when
    the section is made, so dataclasses.replace cannot skip the checks either."""

    def __post_init__(self) -> None:
        section = SECTIONS[type(self)]
        problems = []
        for field in dataclasses.fields(self):
            key = f"{section}.{field.name}"
            text = RULES[key].problem(key, getattr(self, field.name)) if key in RULES else None
            if text:
                problems.append(((key,), text))
        if problems:
            raise ConfigError(problems=problems)


@dataclass(frozen=True)
class SynthConfig(_Checked):
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
class FeatureConfig(_Checked):
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
class IngestConfig(_Checked):
    clip_seconds: float
    hop_seconds: float
    val_fraction: float
    test_fraction: float
    split_seed: int
    workers: int
    shard_clips: int
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ValidateConfig(_Checked):
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
class ModelConfig(_Checked):
    dim: int
    audio_widths: tuple[int, ...]
    video_widths: tuple[int, ...]
    bands: int
    grid: int


@dataclass(frozen=True)
class TrainConfig(_Checked):
    seed: int
    epochs: int
    steps: int
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
class AugmentConfig(_Checked):
    enabled: bool
    shift_pixels: int
    flip: float
    gain_db: float
    audio_shift: int
    freq_mask: int
    time_mask: int


@dataclass(frozen=True)
class EvaluateConfig(_Checked):
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
class ServeConfig(_Checked):
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
class ExperimentConfig(_Checked):
    recordings: int
    seconds: float
    seeds: tuple[int, ...]
    epochs: int
    steps: int
    methods: tuple[str, ...]
    jobs: int


@dataclass(frozen=True)
class PipelineConfig(_Checked):
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
    augment: AugmentConfig
    evaluate: EvaluateConfig
    serve: ServeConfig
    experiment: ExperimentConfig
    pipeline: PipelineConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples), so it survives a round trip to disk."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def check(self) -> Config:
        """Fail early, with the fix, on values that cannot work together. Each field's own
        range (RULES) is checked when its section is made."""
        problems = [*_timing_problems(self.features, self.ingest), *_choice_problems(self),
                    *_pair_problems(self.validate, self.serve)]
        if problems:
            raise ConfigError(problems=problems)
        return self


SECTIONS = {hint: name for name, hint in typing.get_type_hints(Config).items()}


def _timing_problems(f: FeatureConfig, i: IngestConfig) -> list[Problem]:
    """Clips, mel windows and video frames must line up in whole samples and frames."""
    problems = []
    for name, seconds in (("clip_seconds", i.clip_seconds), ("hop_seconds", i.hop_seconds)):
        for rate_key, rate in (("features.sample_rate", f.sample_rate),
                               ("features.fps", f.fps)):
            if abs(seconds * rate - round(seconds * rate)) > 1e-6:
                problems.append(((f"ingest.{name}", rate_key),
                                 f"ingest.{name}={seconds} × {rate_key}={rate} is not a whole "
                                 "number of samples/frames; pick values that divide"))
    if f.hop_length < 1:
        problems.append((("features.hop_seconds", "features.sample_rate"),
                         f"features.hop_seconds={f.hop_seconds} is under one sample at "
                         f"sample_rate={f.sample_rate}; raise hop_seconds"))
    elif round(i.clip_seconds * f.sample_rate) % f.hop_length:
        problems.append((("ingest.clip_seconds", "features.hop_seconds"),
                         "ingest.clip_seconds must hold a whole number of mel hops "
                         f"(features.hop_seconds={f.hop_seconds})"))
    if f.win_length < f.hop_length:
        problems.append((("features.win_seconds", "features.hop_seconds"),
                         f"features.win_seconds={f.win_seconds} < hop_seconds={f.hop_seconds} "
                         "would skip the samples between windows; need win >= hop"))
    if f.win_length > f.n_fft:
        problems.append((("features.win_seconds", "features.n_fft"),
                         f"features.win_seconds gives {f.win_length} samples > "
                         f"n_fft={f.n_fft}; raise n_fft"))
    if not f.f_min < f.f_max <= f.sample_rate / 2:
        problems.append((("features.f_min", "features.f_max", "features.sample_rate"),
                         f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f.f_min}, "
                         f"f_max={f.f_max}, sample_rate={f.sample_rate}"))
    if not i.val_fraction + i.test_fraction < 1:
        problems.append((("ingest.val_fraction", "ingest.test_fraction"),
                         f"ingest.val_fraction + ingest.test_fraction = "
                         f"{i.val_fraction + i.test_fraction:g} must be in [0, 1): the rest "
                         "is the train split"))
    return problems


def _choice_problems(cfg: Config) -> list[Problem]:
    """Named choices, and the one combination of them that cannot work."""
    t, problems = cfg.train, []
    for key, value, allowed in (
            ("train.loss", t.loss, ("infonce", "multipos_mean", "multipos_logsum")),
            ("train.pairing", t.pairing, ("temporal", "epg", "supervised")),
            ("train.rule", t.rule, ("topk", "threshold", "mutual_knn")),
            ("train.candidates", t.candidates, ("batch", "dataset")),
            ("train.bank", t.bank, ("passes", "recompute")),
            ("train.device", t.device, ("auto", "cpu", "cuda")),
            ("evaluate.map_method", cfg.evaluate.map_method, ("tsne", "pca"))):
        if value not in allowed:
            problems.append(((key,), f"{key}={value!r}: choose one of {', '.join(allowed)}"))
    if t.pairing != "temporal" and t.loss == "infonce":
        problems.append((("train.loss", "train.pairing"),
                         f"train.loss=infonce uses one positive per anchor, so "
                         f"train.pairing={t.pairing}'s extra positives would be ignored; "
                         "use multipos_mean or multipos_logsum"))
    return problems


def _pair_problems(v: ValidateConfig, s: ServeConfig) -> list[Problem]:
    """[low, high] ranges must be ordered; the server's ports must differ."""
    problems = []
    for key, pair in (("validate.loudness_dbfs", v.loudness_dbfs),
                      ("validate.brightness", v.brightness)):
        if len(pair) != 2 or not pair[0] < pair[1]:
            problems.append(((key,), f"{key}={list(pair)} must be two values [low, high] "
                                     "with low < high"))
    ports = {"serve.inference_port": s.inference_port,
             "serve.management_port": s.management_port, "serve.metrics_port": s.metrics_port}
    if len(set(ports.values())) < len(ports):
        problems.append((tuple(ports), "serve.inference_port, management_port and "
                                       f"metrics_port must differ, got {list(ports.values())}"))
    return problems


def default_params_path() -> Path:
    """$SEMPAIR_PARAMS if set, else the params.yaml shipped with the package."""
    return Path(os.environ.get(PARAMS_ENV) or Path(__file__).with_name("params.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Read params.yaml (or `path`), apply `section.key=value` overrides, validate. An error
    names where each bad value came from: the override (--set) or the file."""
    path = Path(path) if path else default_params_path()
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; pass --params FILE or set "
                          f"{PARAMS_ENV}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({error}); fix the file or pass "
                          "--params with another") from None
    given = {_apply_override(raw, item): item for item in overrides or ()}
    try:
        return _build(Config, raw, where=str(path)).check()
    except ConfigError as error:
        if not error.problems:
            raise
        raise ConfigError(_explain(error.problems, path, given), error.problems) from None


def _explain(problems: tuple[Problem, ...], path: str | Path, given: dict[str, str]) -> str:
    """One line per problem, each with where its value came from and how to change it."""
    lines = [f"{text}; {_how_to_fix(keys, path, given)}" for keys, text in problems]
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _how_to_fix(keys: tuple[str, ...], path: str | Path, given: dict[str, str]) -> str:
    overrides = [f"--set {given[key]}" for key in keys if key in given]
    if overrides:
        return (f"it came from {' and '.join(overrides)}: change "
                + ("that override" if len(overrides) == 1 else "those overrides"))
    if len(keys) == 1:
        return f"set it with --set {keys[0]}=VALUE or in {path}"
    return f"set them with --set KEY=VALUE or in {path}"


def _apply_override(raw: dict, item: str) -> str:
    """Put one `section.key=value` into raw; returns the key."""
    key, sep, value = item.partition("=")
    key = key.strip()
    section, dot, name = key.partition(".")
    if not sep or not dot:
        raise ConfigError(f"override {item!r} must look like section.key=value, "
                          "e.g. ingest.workers=2")
    known = raw.get(section) if isinstance(raw.get(section), dict) else {}
    if name not in known:
        raise ConfigError(f"override {item!r}: unknown key {key!r}; known keys in "
                          f"{section!r}: {sorted(known)}")
    try:
        known[name] = yaml.safe_load(value)
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise ConfigError(f"override --set {item}: the value is not valid YAML ({problem}); "
                          "quote strings and close brackets") from None
    return key


def _build(cls: type, raw: Any, where: str, prefix: str = "") -> Any:
    """cls from its raw mapping; `prefix` is the section's name plus a dot."""
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
        hint, value = hints[name], raw[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{where}:{name}", prefix=f"{name}.")
        else:
            values[name] = _coerce(hint, value, prefix + name)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, list | tuple):
            raise _type_error(key, "a list, e.g. [1, 2]", value)
        (item_type, _) = typing.get_args(hint)
        return tuple(_coerce(item_type, v, key) for v in value)
    if isinstance(hint, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    if hint in (int, float):
        return _number(hint, value, key)
    if not isinstance(value, hint):
        quote = "; quote it, e.g. '...'" if hint is str else ""
        raise _type_error(key, hint.__name__ + quote, value)
    return value


def _number(hint: type, value: Any, key: str) -> int | float:
    """An int or float field's value. YAML 1.1 reads 1e-3 as a string, so a numeric string
    counts; an int field takes a whole float (2.0) but refuses 2.5; booleans are refused."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if not _is_number(number):
        raise _type_error(key, hint.__name__, value)
    if hint is float:
        return float(number)
    if isinstance(number, float):
        if not number.is_integer():
            raise _type_error(key, "int (a whole number)", value)
        return int(number)
    return number


def _type_error(key: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(problems=[((key,), f"{key}: expected {expected}, got {value!r}")])
