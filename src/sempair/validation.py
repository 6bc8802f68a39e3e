"""The data-validation gate after ingest: Great Expectations Core 1.x suites, written as code.

    result = validate_dataset("data/clips", "runs/validate", cfg.validate, reference=None)
    result.raise_for_failures()      # the caller decides; validation itself never raises on data

One function per suite below turns `ValidateConfig` into GX expectations, each with a
severity (`critical` stops the pipeline, `warning` is reported) and a human description.
Every suite runs on a pandas frame in one ephemeral GX context per call: the clip dataset's
tables, plus small frames derived from them (a recording's splits, an event's recording
duration). File integrity is plain Python, reported in the same list of checks.

Outputs in `out`: validation.json, validation.md, validation.html (one self-contained page)
and data_docs/ (the GX Data Docs site). See docs/validation.md.
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sempair import SempairError, json_safe
from sempair.annotations import BACKGROUND, EVENTS_FILE, MODALITIES
from sempair.annotations import COLUMNS as EVENT_COLUMNS
from sempair.config import ValidateConfig

__all__ = ["Check", "ValidationFailed", "ValidationResult", "validate_dataset"]

CRITICAL, WARNING = "critical", "warning"
STATS = ("audio_rms_dbfs", "audio_logmel_mean", "video_brightness", "video_contrast",
         "video_motion")
SPLITS = ("train", "val", "test")
STATUSES = ("ok", "partial", "quarantined")
EVENT_END_TOLERANCE = 0.5   # seconds an event may run past its recording's declared duration
FINITE = 1e30               # "finite": a statistic within ±FINITE (NaN is caught as null)
DRIFT_BINS = 10             # reference quantile bins per statistic for the KL divergence
DATA_DOCS_SITE = "sempair"
REINGEST = "re-run `sempair ingest` with this sempair version"


class ValidationFailed(SempairError):
    """Critical validation failures (or a folder that is no dataset); the message lists them."""


@dataclass(frozen=True)
class Check:
    suite: str         # recordings, clips, annotations, integrity or drift
    name: str
    severity: str      # critical or warning
    success: bool
    observed: str
    expected: str
    problem: str       # what failed, by how much, and the fix; "" on success


@dataclass(frozen=True)
class ValidationResult:
    dataset_id: str
    checksum: str
    reference_id: str | None
    checks: tuple[Check, ...]
    gx_version: str

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.success and c.severity == CRITICAL)

    @property
    def warnings(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.success and c.severity != CRITICAL)

    @property
    def passed(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise ValidationFailed listing every critical problem; return if there is none."""
        if self.failures:
            n = len(self.failures)
            raise ValidationFailed(
                f"validation failed for dataset {self.dataset_id}: {n} critical "
                f"problem{'s' if n > 1 else ''}:\n"
                + "\n".join(f"  - {c.suite}: {c.problem}" for c in self.failures))

    def to_dict(self) -> dict[str, Any]:
        return {"dataset_id": self.dataset_id, "checksum": self.checksum,
                "reference_id": self.reference_id, "gx_version": self.gx_version,
                "passed": self.passed, "counts": self._counts(),
                "checks": [asdict(c) for c in self.checks]}

    def summary_markdown(self) -> str:
        """Verdict, failed critical checks, then warnings (observed vs expected), counts."""
        counts = self._counts()
        lines = [f"## Validation: dataset `{self.dataset_id}` — "
                 f"{'PASSED' if self.passed else 'FAILED'}", "",
                 f"{counts['checks']} checks in {', '.join(_suites(self.checks))}: "
                 f"{counts['passed']} passed, {counts['failures']} critical failures, "
                 f"{counts['warnings']} warnings."
                 + (f" Drift reference: `{self.reference_id}`." if self.reference_id else ""),
                 ""]
        for title, checks in (("Critical failures", self.failures), ("Warnings", self.warnings)):
            if checks:
                lines += [f"### {title}", "", "| suite | check | observed | expected |",
                          "|---|---|---|---|"]
                lines += [f"| {c.suite} | {_md(c.name)} | {_md(c.observed)} | {_md(c.expected)} |"
                          for c in checks]
                lines += [""] + [f"- **{c.suite}: {_md(c.name)}**: {c.problem}" for c in checks]
                lines.append("")
        if not self.failures and not self.warnings:
            lines += ["Every check passed.", ""]
        lines.append(f"Great Expectations {self.gx_version}; every check and its result are in "
                     "validation.html, the GX Data Docs in data_docs/index.html.")
        return "\n".join(lines) + "\n"

    def summary_html(self) -> str:
        """One self-contained HTML page listing every check (the Kubeflow HTML artifact)."""
        return _html_page(self)

    def _counts(self) -> dict[str, int]:
        return {"checks": len(self.checks), "passed": sum(c.success for c in self.checks),
                "failures": len(self.failures), "warnings": len(self.warnings)}


def validate_dataset(dataset: str | Path, out: str | Path, cfg: ValidateConfig,
                     reference: str | Path | None = None) -> ValidationResult:
    """Validate the clip dataset at `dataset` (drift against `reference` if given); write the
    reports into `out`. Never raises on bad data: see `ValidationResult.raise_for_failures`."""
    import great_expectations as gx

    data = _load(Path(dataset))
    ref = _load(Path(reference)) if reference is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = [*_recordings_suite(data, cfg), *_clips_suite(data, cfg),
              *_annotations_suite(data, cfg), *_drift_suite(data, ref, cfg)]
    checks = _integrity_checks(data) + _run_suites(tables, out / "data_docs",
                                                  run_name=data.meta["dataset_id"])
    result = ValidationResult(
        dataset_id=data.meta["dataset_id"], checksum=data.meta["checksum"],
        reference_id=ref.meta["dataset_id"] if ref else None, checks=tuple(checks),
        gx_version=gx.__version__)
    (out / "validation.md").write_text(result.summary_markdown())
    (out / "validation.html").write_text(result.summary_html())
    # last: its presence marks a complete report (the marker when published to a store)
    (out / "validation.json").write_text(json.dumps(json_safe(result.to_dict()), indent=2) + "\n")
    return result


# -- the dataset -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Dataset:
    folder: Path
    meta: dict
    recordings: pd.DataFrame
    clips: pd.DataFrame
    events: pd.DataFrame | None      # events.csv as written, with its line numbers


def _load(folder: Path) -> _Dataset:
    if not folder.is_dir():
        raise ValidationFailed(f"no dataset at {folder}: the folder does not exist; check the "
                               "path, or create the dataset with `sempair ingest`")
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ValidationFailed(f"{folder} is not a complete clip dataset: meta.json is missing "
                               "(ingest writes it last, so ingest was interrupted or this is "
                               "the wrong folder); re-run `sempair ingest` or `dvc pull` it")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as error:
        raise ValidationFailed(f"{meta_path} is not JSON ({error}); {REINGEST}") from error
    missing = [key for key in ("dataset_id", "checksum", "files") if key not in meta]
    if missing:
        raise ValidationFailed(f"{meta_path} lacks {', '.join(missing)}; {REINGEST}")
    for name in ("recordings.parquet", "manifest.parquet"):
        if not (folder / name).is_file():
            raise ValidationFailed(f"{folder} is incomplete: {name} is missing; re-run "
                                   "`sempair ingest` or `dvc pull` the dataset again")
    events = None
    if (folder / EVENTS_FILE).is_file():
        events = pd.read_csv(folder / EVENTS_FILE, dtype=str)   # an empty field is null
        for column in ("start", "end", "anomaly"):   # a non-number becomes null: reported
            if column in events:
                events[column] = pd.to_numeric(events[column], errors="coerce")
        events.insert(0, "line", np.arange(2, len(events) + 2))   # line 1 is the header
    return _Dataset(folder, meta, pd.read_parquet(folder / "recordings.parquet"),
                    pd.read_parquet(folder / "manifest.parquet"), events)


def _string_dtype() -> str:
    """The dtype name pandas gives text columns read from parquet: 'str' from pandas 3 on
    (GX's ExpectColumnValuesToBeInTypeList rejects it), 'object' before."""
    return str(pd.Series([""]).dtype)


# -- suites: each returns the frames to validate with their expectations --------------------

@dataclass(frozen=True)
class _Table:
    """One frame and its expectations: one GX data asset, suite and validation definition."""
    suite: str                  # the report's suite name
    name: str                   # GX asset and suite name
    frame: pd.DataFrame
    key: str                    # the column that names a row in failure messages
    expectations: list


def _recordings_suite(data: _Dataset, cfg: ValidateConfig) -> list[_Table]:
    """recordings.parquet: schema, unique content, decodable, sane media, quarantined share."""
    text = _string_dtype()
    types = {"recording": text, "status": text, "error": text, "size_bytes": "int64",
             "sha256": text, "container": text, "duration": "float64",
             "ingested_seconds": "float64", "clips": "int64", "video_codec": text,
             "width": "int64", "height": "int64", "fps": "float64", "audio_codec": text,
             "sample_rate": "int64", "channels": "int64", "split": text}
    return [_Table("recordings", "recordings", data.recordings, key="recording", expectations=[
        *_schema("recordings.parquet", types),
        _expect("ExpectColumnValuesToBeUnique", "recording unique", "one row per recording",
                "$count rows repeat a recording (e.g. $examples); " + REINGEST,
                column="recording"),
        _expect("ExpectColumnValuesToBeUnique", "content unique",
                "no two ingested recordings have the same sha256",
                "$count ingested recordings have the same content as another (e.g. "
                "$examples): one file copied under two names, so its clips count twice; "
                "delete the copies from the source and re-run ingest",
                column="sha256", **_ingested()),
        _expect("ExpectColumnValuesToBeInSet", "status known", f"status in {list(STATUSES)}",
                "$count recordings have an unknown status ($values); " + REINGEST,
                column="status", value_set=list(STATUSES)),
        _expect("ExpectColumnValuesToBeBetween", "duration > 0",
                "ingested recordings last longer than 0 s",
                "$count ingested recordings have a duration <= 0 (e.g. $examples): broken "
                "container headers; remux them (ffmpeg -i in -c copy out.mp4) and re-ingest",
                column="duration", min_value=0, strict_min=True, **_ingested()),
        *(_expect("ExpectColumnValuesToNotBeInSet", f"{kind} codec",
                  f"ingested recordings name their {kind} codec",
                  f"$count ingested recordings have no {kind} codec (e.g. $examples); "
                  + REINGEST, column=f"{kind}_codec", value_set=[""], **_ingested())
          for kind in ("video", "audio")),
        *(_expect("ExpectColumnValuesToBeBetween", f"{column} > 0",
                  f"ingested recordings have {column} > 0",
                  f"$count ingested recordings have no {column} (e.g. $examples): the "
                  f"stream header is broken; re-encode those files and re-ingest",
                  column=column, min_value=0, strict_min=True, **_ingested())
          for column in ("sample_rate", "fps")),
        _expect("ExpectColumnValuesToNotBeInSet", "quarantined share",
                f"at most {cfg.max_quarantined_share:.0%} of recordings quarantined",
                f"$pct of recordings are quarantined (e.g. $examples), more than "
                f"{cfg.max_quarantined_share:.0%} allowed: read their `error` in "
                "recordings.parquet (or the ingest summary), fix or remove those files and "
                "re-run ingest, or raise validate.max_quarantined_share",
                column="status", value_set=["quarantined"],
                mostly=_mostly(cfg.max_quarantined_share)),
    ])]


def _clips_suite(data: _Dataset, cfg: ValidateConfig) -> list[_Table]:
    """manifest.parquet: schema, complete and plausible statistics, silent and black shares,
    no leak between splits, enough clips to train and test on, consistent labels."""
    text, clips = _string_dtype(), data.clips
    types = {"index": "int64", "clip_id": text, "recording": text, "clip": "int32",
             "start": "float64", "end": "float64", "split": text, "shard": text, "row": "int32",
             **dict.fromkeys(STATS, "float64")}
    if data.events is not None:
        types |= {"label": text, "anomaly": "int8"}
    lo_db, hi_db = cfg.loudness_dbfs
    lo_luma, hi_luma = cfg.brightness
    table = _Table("clips", "clips", clips, key="clip_id", expectations=[
        *_schema("manifest.parquet", types),
        *(_expect("ExpectColumnValuesToNotBeNull", f"{column} not null", f"no null {column}",
                  f"$count clips have no {column} (e.g. $examples): the features were "
                  "not computed; " + REINGEST, column=column)
          for column in types),
        *(_expect("ExpectColumnValuesToBeBetween", f"{column} finite", f"{column} is finite",
                  f"$count clips have an infinite {column} (e.g. $examples): a feature bug; "
                  "re-run ingest and report it if it persists",
                  column=column, min_value=-FINITE, max_value=FINITE)
          for column in STATS),
        _expect("ExpectColumnValuesToBeBetween", "loudness plausible",
                f"at least {cfg.plausible_share:.0%} of clips have RMS in "
                f"[{lo_db}, {hi_db}] dBFS",
                f"$pct of clips have an RMS outside [{lo_db}, {hi_db}] dBFS (e.g. $examples: "
                "$values), more than the "
                f"{1 - cfg.plausible_share:.0%} allowed: the audio is missing or broken; "
                "check those recordings' audio track, or widen validate.loudness_dbfs",
                column="audio_rms_dbfs", min_value=lo_db, max_value=hi_db,
                mostly=cfg.plausible_share),
        _expect("ExpectColumnValuesToBeBetween", "brightness plausible",
                f"at least {cfg.plausible_share:.0%} of clips have brightness in "
                f"[{lo_luma}, {hi_luma}]",
                f"$pct of clips have a mean brightness outside [{lo_luma}, {hi_luma}] (e.g. "
                f"$examples: $values), more than the {1 - cfg.plausible_share:.0%} allowed: "
                "the frames are not 8-bit video; " + REINGEST,
                column="video_brightness", min_value=lo_luma, max_value=hi_luma,
                mostly=cfg.plausible_share),
        _expect("ExpectColumnValuesToBeBetween", "silent share",
                f"at most {cfg.max_silent_share:.0%} of clips silent "
                f"(RMS < {cfg.silence_dbfs} dBFS)",
                f"$pct of clips are silent (RMS < {cfg.silence_dbfs} dBFS), more than "
                f"{cfg.max_silent_share:.0%} allowed (e.g. $examples): check the microphones "
                "and audio tracks of those recordings, or raise validate.max_silent_share",
                column="audio_rms_dbfs", min_value=cfg.silence_dbfs,
                mostly=_mostly(cfg.max_silent_share)),
        _expect("ExpectColumnValuesToBeBetween", "black share",
                f"at most {cfg.max_black_share:.0%} of clips black "
                f"(brightness < {cfg.black_brightness})",
                f"$pct of clips are black (mean brightness < {cfg.black_brightness}), more "
                f"than {cfg.max_black_share:.0%} allowed (e.g. $examples): a covered or dead "
                "camera, or night footage without IR; check those recordings, or raise "
                "validate.max_black_share",
                column="video_brightness", min_value=cfg.black_brightness,
                mostly=_mostly(cfg.max_black_share)),
        _expect("ExpectColumnValuesToBeUnique", "clip_id unique", "every clip_id is unique",
                "$count clips share a clip_id (e.g. $examples); " + REINGEST, column="clip_id"),
        _expect("ExpectColumnPairValuesAToBeGreaterThanB", "start < end",
                "every clip starts before it ends",
                "$count clips do not start before they end (e.g. $examples); " + REINGEST,
                column_A="end", column_B="start", or_equal=False),
        _expect("ExpectColumnValuesToBeInSet", "split known", f"split in {list(SPLITS)}",
                "$count clips have an unknown split ($values); " + REINGEST,
                column="split", value_set=list(SPLITS)),
        *(_expect("ExpectTableRowCountToBeBetween", f"{split} clips",
                  f"at least {least} {split} clips",
                  f"only $observed {split} clips, at least {least} needed: add recordings "
                  f"(or change ingest.test_fraction), or lower validate.min_{split}_clips",
                  min_value=least, row_condition=_where("split", split))
          for split, least in (("train", cfg.min_train_clips), ("test", cfg.min_test_clips))),
        *_clip_label_expectations(data, cfg),
    ])
    return [table, *_split_leak_tables(data)]


def _clip_label_expectations(data: _Dataset, cfg: ValidateConfig) -> list:
    out = []
    if "label" in data.clips and cfg.labels:
        out.append(_expect(
            "ExpectColumnValuesToBeInSet", "labels known",
            "clip labels are background or in validate.labels",
            "$count clips have a label outside validate.labels ($values, e.g. $examples): "
            "fix the label in events.csv at the source and re-ingest, or add it to "
            "validate.labels", column="label", value_set=[*cfg.labels, BACKGROUND]))
    if "anomaly" in data.clips:
        out.append(_expect(
            "ExpectColumnValuesToBeInSet", "anomaly 0/1", "clip anomaly is 0 or 1",
            "$count clips have an anomaly flag other than 0/1 ($values); " + REINGEST,
            column="anomaly", value_set=[0, 1]))
    return out


def _split_leak_tables(data: _Dataset) -> list[_Table]:
    """A recording, or the same content under two names, must sit in one split only:
    otherwise test clips are (near-)copies of training clips."""
    clips, recordings = data.clips, data.recordings
    if not {"recording", "split"} <= set(clips) or "sha256" not in recordings:
        return []     # the schema check already fails
    pairs = clips[["recording", "split"]].drop_duplicates().reset_index(drop=True)
    content = (pairs.merge(recordings[["recording", "sha256"]], on="recording", how="left")
               .groupby(["sha256", "split"])["recording"].agg(", ".join).reset_index())
    fix = ("their clips leak between training and evaluation; re-run ingest, which splits "
           "by content")
    return [
        _Table("clips", "clips.recording_splits", pairs, key="recording", expectations=[
            _expect("ExpectColumnValuesToBeUnique", "recording in one split",
                    "each recording's clips are in one split",
                    f"recordings have clips in more than one split ($examples): {fix}",
                    column="recording")]),
        _Table("clips", "clips.content_splits", content, key="recording", expectations=[
            _expect("ExpectColumnValuesToBeUnique", "content in one split",
                    "identical recordings (same sha256) are in one split",
                    f"identical recordings are in more than one split ($examples): {fix}",
                    column="sha256")]),
    ]


def _annotations_suite(data: _Dataset, cfg: ValidateConfig) -> list[_Table]:
    """events.csv (when the source had one): known labels, recordings and modalities, and
    event times inside their recording."""
    if data.events is None:
        return []
    where = f"fix those rows in the source's {EVENTS_FILE} and re-ingest"
    return [_Table("annotations", "annotations", _with_recording_end(data), key="line",
                   expectations=[
        _expect("ExpectTableColumnsToMatchSet", "columns", f"columns {', '.join(EVENT_COLUMNS)}",
                f"{EVENTS_FILE} lacks columns $missing; the header must be "
                f"{','.join(EVENT_COLUMNS)}", column_set=EVENT_COLUMNS, exact_match=False),
        *(_expect("ExpectColumnValuesToNotBeNull", f"{column} given",
                  f"every event has a {column}",
                  f"$count events have an empty or non-numeric {column} (line $examples); "
                  + where, column=column)
          for column in EVENT_COLUMNS),
        *([_expect("ExpectColumnValuesToBeInSet", "labels known", "labels in validate.labels",
                   f"$count events have a label outside validate.labels ($values, line "
                   f"$examples): {where}, or add the label to validate.labels",
                   column="label", value_set=list(cfg.labels))] if cfg.labels else []),
        _expect("ExpectColumnPairValuesAToBeGreaterThanB", "start < end",
                "every event starts before it ends",
                f"$count events do not start before they end (line $examples); {where}",
                column_A="end", column_B="start", or_equal=False),
        _expect("ExpectColumnValuesToBeBetween", "start >= 0", "no event starts before 0 s",
                f"$count events start before 0 s (line $examples); {where}",
                column="start", min_value=0),
        _expect("ExpectColumnPairValuesAToBeGreaterThanB", "end within recording",
                f"events end by their recording's duration (+{EVENT_END_TOLERANCE} s)",
                f"$count events end after their recording does (line $examples): wrong "
                f"recording or times; {where}", column_A="recording_end", column_B="end",
                or_equal=True, ignore_row_if="either_value_is_missing"),
        _expect("ExpectColumnValuesToBeInSet", "recording known",
                "events name recordings of the dataset",
                f"$count events name recordings that are not in the dataset ($values, line "
                f"$examples): the paths must be relative to the source root; {where}",
                column="recording", value_set=sorted(data.recordings.get("recording", []))),
        _expect("ExpectColumnValuesToBeInSet", "modality known",
                f"modality in {sorted(MODALITIES)}",
                f"$count events have an unknown modality ($values, line $examples); {where}",
                column="modality", value_set=sorted(MODALITIES)),
        _expect("ExpectColumnValuesToBeInSet", "anomaly 0/1", "anomaly is 0 or 1",
                "$count events have an anomaly other than 0/1 ($values, line $examples); "
                + where, column="anomaly", value_set=[0, 1]),
    ])]


def _with_recording_end(data: _Dataset) -> pd.DataFrame:
    """events + `recording_end`: the declared duration (or, when the container declares
    none, the decoded length) plus a tolerance; null for an unknown recording."""
    recordings = data.recordings
    if "recording" not in data.events or not {"recording", "duration"} <= set(recordings):
        return data.events
    length = recordings["duration"].fillna(recordings.get("ingested_seconds", np.nan))
    ends = dict(zip(recordings["recording"], length + EVENT_END_TOLERANCE, strict=True))
    return data.events.assign(recording_end=data.events["recording"].map(ends).astype(float))


def _drift_suite(data: _Dataset, reference: _Dataset | None,
                cfg: ValidateConfig) -> list[_Table]:
    """Each clip statistic's KL divergence from the reference dataset's distribution."""
    if reference is None:
        return []
    ref_id = reference.meta["dataset_id"]
    severity = CRITICAL if cfg.drift_fail else WARNING
    columns = [c for c in STATS if c in data.clips and c in reference.clips]
    table = _Table("drift", "drift", data.clips, key="clip_id", expectations=[
        _expect("ExpectColumnKLDivergenceToBeLessThan", f"drift of {column}",
                f"KL divergence from reference {ref_id} <= {cfg.drift_max_kl}",
                f"$column drifted from reference {ref_id}: KL divergence $observed > "
                f"{cfg.drift_max_kl} (new scenes, day/night, a changed camera or microphone?); "
                "inspect the clips and retrain if the change is real, or raise "
                "validate.drift_max_kl", severity=severity, column=column,
                partition_object=_partition(reference.clips[column].to_numpy(float)),
                threshold=cfg.drift_max_kl)
        for column in columns])
    return [table]


def _partition(values: np.ndarray) -> dict:
    """GX's continuous partition object for `values`: quantile bin edges, histogram weights
    and both tail weights, add-½ smoothed so that no weight is 0 (the KL divergence of new
    data falling where the reference had none stays finite)."""
    values = values[np.isfinite(values)]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, DRIFT_BINS + 1)))
    if len(edges) < 2:     # a constant statistic: one narrow bin around it
        pad = max(1e-6, 1e-3 * abs(edges[0]))
        edges = np.array([edges[0] - pad, edges[0] + pad])
    counts = np.r_[0, np.histogram(values, edges)[0], 0]        # [tail, bins…, tail]
    weights = (counts + 0.5) / (counts.sum() + 0.5 * len(counts))
    return {"bins": edges.tolist(), "weights": weights[1:-1].tolist(),
            "tail_weights": [float(weights[0]), float(weights[-1])]}


def _schema(file: str, types: dict[str, str]) -> list:
    """The columns must exist (extra ones are fine), each with its exact pandas dtype."""
    return [
        _expect("ExpectTableColumnsToMatchSet", "columns", f"columns {', '.join(types)}",
                f"{file} lacks columns $missing; " + REINGEST,
                column_set=list(types), exact_match=False),
        *(_expect("ExpectColumnTypeToBe", f"type of {column}", f"{column} is {dtype}",
                  f"{file} column {column} is $observed, not {dtype}: written by another "
                  "tool or version; " + REINGEST, column=column, type_=dtype)
          for column, dtype in types.items()),
    ]


def _expect(kind: str, check: str, expected: str, problem: str, *, severity: str = CRITICAL,
            **kwargs):
    """A GX expectation of class `kind`. `expected` is its description (Data Docs and the
    reports); `problem` is a string.Template for a failure's sentence, with $pct, $count,
    $total, $examples (row keys), $values, $observed, $missing and $column."""
    import great_expectations.expectations as gxe

    return getattr(gxe, kind)(severity=severity, description=expected,
                              meta={"check": check, "problem": problem}, **kwargs)


def _where(column: str, value: str):
    """A GX row condition `column == value` (GX 1.9+ deprecates pandas query strings)."""
    from great_expectations.expectations.row_conditions import Column

    return Column(column) == value


def _ingested() -> dict:
    """Restricts an expectation to the recordings that were ingested (not quarantined)."""
    from great_expectations.expectations.row_conditions import Column

    return {"row_condition": Column("status") != "quarantined"}


def _mostly(max_share: float) -> float:
    """GX `mostly` for "at most `max_share` of the rows fail" (rounded: 1 - 0.7 != 0.3)."""
    return round(1.0 - max_share, 12)


# -- integrity: plain Python ----------------------------------------------------------------

def _integrity_checks(data: _Dataset) -> list[Check]:
    """Every file listed in meta.json exists with its sha256, and the checksum covers them."""
    files, expected = data.meta["files"], "every file listed in meta.json has its sha256"
    bad = []
    for rel, digest in files.items():
        path = data.folder / rel
        if not path.is_file():
            bad.append(f"{rel} (missing)")
        else:
            with open(path, "rb") as handle:
                if hashlib.file_digest(handle, "sha256").hexdigest() != digest:
                    bad.append(f"{rel} (changed)")
    listing = "".join(f"{k} {v}\n" for k, v in files.items())
    checksum = f"sha256:{hashlib.sha256(listing.encode()).hexdigest()}"
    fix = "the dataset was modified or copied incompletely; `dvc pull` it again or re-ingest"
    return [
        Check("integrity", "files match meta.json", CRITICAL, not bad,
              f"{len(bad)} of {len(files)} files missing or changed" + _eg(bad), expected,
              f"{len(bad)} of {len(files)} dataset files are missing or changed since ingest"
              f"{_eg(bad)}: {fix}" if bad else ""),
        Check("integrity", "checksum", CRITICAL, checksum == data.meta["checksum"],
              data.meta["checksum"], f"{checksum} (sha256 of the file list)",
              "" if checksum == data.meta["checksum"] else
              f"meta.json's checksum does not match its file list: meta.json was edited; {fix}"),
    ]


# -- running GX -----------------------------------------------------------------------------

def _run_suites(tables: list[_Table], docs: Path, run_name: str) -> list[Check]:
    """Validate every table in one ephemeral context, then build the Data Docs into `docs`."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(docs)
    source = context.data_sources.add_pandas("dataset")
    run_id = RunIdentifier(run_name=run_name)
    checks = []
    for table in tables:
        batch = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=table.name,
                                                       expectations=table.expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=table.name, data=batch, suite=suite))
        result = definition.run(
            batch_parameters={"dataframe": table.frame}, run_id=run_id,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20,
                           "unexpected_index_column_names": [table.key]})
        order = [e.meta["check"] for e in table.expectations]   # GX reorders its results
        for r in sorted(result.results, key=lambda r: order.index(r.expectation_config.meta
                                                                   ["check"])):
            checks.append(_check(table, r))
    context.build_data_docs(site_names=[DATA_DOCS_SITE])
    return checks


def _context(docs: Path):
    """An ephemeral GX context: no progress bars, one filesystem Data Docs site at `docs`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    shutil.rmtree(docs, ignore_errors=True)    # no stale pages from an earlier run
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(DATA_DOCS_SITE, {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs.absolute())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    return context


def _check(table: _Table, r) -> Check:
    config = r.expectation_config
    values = _observations(r.result, table.key) | {"column": config.kwargs.get("column", "")}
    error = _exception(r)
    observed = f"error: {error}" if error else values["observed"]
    if r.success:
        problem = ""
    elif error:
        problem = (f"{config.meta['check']} could not be checked ({error}); a column is "
                   "probably missing or mistyped: see the schema checks; " + REINGEST)
    else:
        problem = string.Template(config.meta["problem"]).safe_substitute(values)
    return Check(table.suite, config.meta["check"], config.severity.value, bool(r.success),
                 observed, config.description or "", problem)


def _observations(result: dict, key: str) -> dict[str, str]:
    """GX's result dict -> the strings the problem templates use."""
    count, total = result.get("unexpected_count"), result.get("element_count")
    pct = result.get("unexpected_percent") or 0.0
    missing = ((result.get("details") or {}).get("mismatched") or {}).get("missing") or []
    keys = [row.get(key) for row in result.get("partial_unexpected_index_list") or []
            if isinstance(row, dict)]
    values = {
        "count": str(count), "total": str(total), "pct": f"{pct:.3g}%",
        "examples": ", ".join(map(str, _unique(keys)[:3])) or "none shown",
        "values": ", ".join(map(_fmt, _unique(result.get("partial_unexpected_list") or [])[:5])),
        "missing": ", ".join(missing)}
    if "observed_value" in result and not isinstance(result["observed_value"], list):
        values["observed"] = _fmt(result["observed_value"])
    elif "mismatched" in (result.get("details") or {}):
        values["observed"] = f"missing {values['missing']}" if missing else "all present"
    elif count is not None:
        values["observed"] = (f"{count} of {total} rows ({pct:.3g}%)"
                              + (f", e.g. {values['examples']}" if count else ""))
    else:
        values["observed"] = _fmt(result.get("observed_value", ""))
    return values


def _exception(r) -> str:
    """The first exception GX caught while computing this result's metrics, or ""."""
    info = r.exception_info or {}
    for item in [info] if "raised_exception" in info else info.values():
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "unknown error").splitlines()[0]
    return ""


def _fmt(value) -> str:
    if value is None:
        return "inf"     # GX reports an infinite KL divergence as None
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


def _eg(items: list[str]) -> str:
    return f" (e.g. {', '.join(items[:3])})" if items else ""


# -- reports --------------------------------------------------------------------------------

def _suites(checks) -> list[str]:
    return list(dict.fromkeys(c.suite for c in checks))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}.verdict{font-size:1.4em;font-weight:bold;padding:.5em}
.pass{background:#e6f4e6}.fail{background:#fbe3e3}.warn{background:#fff4d6}
.problems li{margin-bottom:.4em}code{background:#f3f3f3;padding:0 3px}"""


def _html_page(result: ValidationResult) -> str:
    esc = html.escape
    counts = result._counts()
    verdict = "PASSED" if result.passed else "FAILED"
    problems = "".join(f"<li><b>{esc(c.suite)}: {esc(c.name)}</b> ({esc(c.severity)}): "
                       f"{esc(c.problem)}</li>"
                       for c in (*result.failures, *result.warnings))
    sections = []
    for suite in _suites(result.checks):
        rows = "".join(
            f"<tr class='{_row_class(c)}'><td>{'pass' if c.success else 'FAIL'}</td>"
            f"<td>{esc(c.name)}</td><td>{esc(c.severity)}</td><td>{esc(c.observed)}</td>"
            f"<td>{esc(c.expected)}</td></tr>"
            for c in result.checks if c.suite == suite)
        sections.append(f"<h2>{esc(suite)}</h2><table><tr><th>result</th><th>check</th>"
                        f"<th>severity</th><th>observed</th><th>expected</th></tr>{rows}"
                        "</table>")
    reference = (f", drift reference <code>{esc(result.reference_id)}</code>"
                 if result.reference_id else "")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Validation "
            f"{esc(result.dataset_id)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Validation of dataset <code>{esc(result.dataset_id)}</code></h1>"
            f"<div class='verdict {'pass' if result.passed else 'fail'}'>{verdict}</div>"
            f"<p>{counts['checks']} checks: {counts['passed']} passed, {counts['failures']} "
            f"critical failures, {counts['warnings']} warnings{reference}. "
            f"Checksum <code>{esc(result.checksum)}</code>, Great Expectations "
            f"{esc(result.gx_version)}. The GX Data Docs are in "
            "<code>data_docs/index.html</code> next to this page.</p>"
            + (f"<h2>Problems</h2><ul class='problems'>{problems}</ul>" if problems else "")
            + "".join(sections) + "</body></html>\n")


def _row_class(check: Check) -> str:
    if check.success:
        return "pass"
    return "fail" if check.severity == CRITICAL else "warn"
