"""The suites as code: one function per suite turns `ValidateConfig` into GX expectations
on the clip dataset's tables, each with a severity and a human description.

A suite returns `Table`s: a pandas frame (a table of the dataset, or a small frame derived
from one: a recording's splits, an event's recording duration) and its expectations. Each
expectation's `meta` carries the check's name and a template for its failure's sentence
(see `_expect`); gx.py runs the tables and turns the results into `Check`s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sempair.annotations import BACKGROUND, EVENTS_FILE, MODALITIES
from sempair.annotations import COLUMNS as EVENT_COLUMNS
from sempair.config import ValidateConfig
from sempair.validation.result import CRITICAL, WARNING, ValidationFailed

STATS = ("audio_rms_dbfs", "audio_logmel_mean", "video_brightness", "video_contrast",
         "video_motion")
SPLITS = ("train", "val", "test")
STATUSES = ("ok", "partial", "quarantined")
EVENT_END_TOLERANCE = 0.5   # seconds an event may run past its recording's declared duration
FINITE = 1e30               # "finite": a statistic within ±FINITE (NaN is caught as null)
DRIFT_BINS = 10             # reference quantile bins per statistic for the KL divergence
REINGEST = "re-run `sempair ingest` with this sempair version"


# -- the dataset -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    """An ingested clip dataset's metadata and tables, as validation reads them."""
    folder: Path
    meta: dict
    recordings: pd.DataFrame
    clips: pd.DataFrame
    events: pd.DataFrame | None      # events.csv as written, with its line numbers


def load(folder: Path) -> Dataset:
    """The clip dataset in `folder`; ValidationFailed, naming the fix, if it is none."""
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
    return Dataset(folder, meta, pd.read_parquet(folder / "recordings.parquet"),
                    pd.read_parquet(folder / "manifest.parquet"), events)


def _string_dtype() -> str:
    """The dtype name pandas gives text columns read from parquet: 'str' from pandas 3 on
    (GX's ExpectColumnValuesToBeInTypeList rejects it), 'object' before."""
    return str(pd.Series([""]).dtype)


# -- suites: each returns the frames to validate with their expectations --------------------

@dataclass(frozen=True)
class Table:
    """One frame and its expectations: one GX data asset, suite and validation definition."""
    suite: str                  # the report's suite name
    name: str                   # GX asset and suite name
    frame: pd.DataFrame
    key: str                    # the column that names a row in failure messages
    expectations: list


def recordings_suite(data: Dataset, cfg: ValidateConfig) -> list[Table]:
    """recordings.parquet: schema, unique content, decodable, sane media, quarantined share."""
    text = _string_dtype()
    types = {"recording": text, "status": text, "error": text, "size_bytes": "int64",
             "sha256": text, "container": text, "duration": "float64",
             "ingested_seconds": "float64", "clips": "int64", "video_codec": text,
             "width": "int64", "height": "int64", "fps": "float64", "audio_codec": text,
             "sample_rate": "int64", "channels": "int64", "split": text}
    return [Table("recordings", "recordings", data.recordings, key="recording", expectations=[
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


def clips_suite(data: Dataset, cfg: ValidateConfig) -> list[Table]:
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
    table = Table("clips", "clips", clips, key="clip_id", expectations=[
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


def _clip_label_expectations(data: Dataset, cfg: ValidateConfig) -> list:
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


def _split_leak_tables(data: Dataset) -> list[Table]:
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
        Table("clips", "clips.recording_splits", pairs, key="recording", expectations=[
            _expect("ExpectColumnValuesToBeUnique", "recording in one split",
                    "each recording's clips are in one split",
                    f"recordings have clips in more than one split ($examples): {fix}",
                    column="recording")]),
        Table("clips", "clips.content_splits", content, key="recording", expectations=[
            _expect("ExpectColumnValuesToBeUnique", "content in one split",
                    "identical recordings (same sha256) are in one split",
                    f"identical recordings are in more than one split ($examples): {fix}",
                    column="sha256")]),
    ]


def annotations_suite(data: Dataset, cfg: ValidateConfig) -> list[Table]:
    """events.csv (when the source had one): known labels, recordings and modalities, and
    event times inside their recording."""
    if data.events is None:
        return []
    where = f"fix those rows in the source's {EVENTS_FILE} and re-ingest"
    return [Table("annotations", "annotations", _with_recording_end(data), key="line",
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


def _with_recording_end(data: Dataset) -> pd.DataFrame:
    """events + `recording_end`: the declared duration (or, when the container declares
    none, the decoded length) plus a tolerance; null for an unknown recording."""
    recordings = data.recordings
    if "recording" not in data.events or not {"recording", "duration"} <= set(recordings):
        return data.events
    length = recordings["duration"].fillna(recordings.get("ingested_seconds", np.nan))
    ends = dict(zip(recordings["recording"], length + EVENT_END_TOLERANCE, strict=True))
    return data.events.assign(recording_end=data.events["recording"].map(ends).astype(float))


def drift_suite(data: Dataset, reference: Dataset | None,
                cfg: ValidateConfig) -> list[Table]:
    """Each clip statistic's KL divergence from the reference dataset's distribution."""
    if reference is None:
        return []
    ref_id = reference.meta["dataset_id"]
    severity = CRITICAL if cfg.drift_fail else WARNING
    columns = [c for c in STATS if c in data.clips and c in reference.clips]
    table = Table("drift", "drift", data.clips, key="clip_id", expectations=[
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


# -- expectations: the building blocks of every suite ----------------------------------------

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
