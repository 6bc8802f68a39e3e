"""Optional event annotations (`events.csv`) and the per-clip labels derived from them.

Labels are for evaluation only; training never reads them. The rule (DESIGN §2): a
clip's label is the `audiovisual` event covering most of it, if that covers at least
half the clip, else `background`; a clip is anomalous if any anomaly event overlaps it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

EVENTS_FILE = "events.csv"
COLUMNS = ["recording", "start", "end", "label", "modality", "anomaly"]
MODALITIES = {"audio", "visual", "audiovisual"}
BACKGROUND = "background"
MIN_COVER = 0.5  # share of a clip an audiovisual event must cover to label it


class AnnotationError(ValueError):
    """An events.csv that cannot be used; the message names the rows and the fix."""


def read_events(path: str | Path) -> pd.DataFrame:
    """Read and check an events.csv; raises AnnotationError naming the bad rows."""
    events = pd.read_csv(path, dtype={"recording": str, "label": str, "modality": str})
    missing = [c for c in COLUMNS if c not in events.columns]
    if missing:
        raise AnnotationError(f"{path}: missing columns {missing}; the header must be "
                              f"{','.join(COLUMNS)}")
    events = events[COLUMNS].copy()

    def fail(mask: pd.Series, problem: str) -> None:
        if mask.any():
            rows = ", ".join(str(i + 2) for i in np.flatnonzero(mask.to_numpy())[:10])
            raise AnnotationError(f"{path}: {problem} (line {rows}); fix or delete those rows")

    fail(events[COLUMNS].isna().any(axis=1), "empty fields")
    for col in ("start", "end", "anomaly"):
        events[col] = pd.to_numeric(events[col], errors="coerce")
        fail(events[col].isna(), f"'{col}' is not a number")
    fail(events["start"] >= events["end"], "start is not before end")
    fail(events["start"] < 0, "negative start")
    fail(~events["modality"].isin(MODALITIES), f"modality not one of {sorted(MODALITIES)}")
    fail(~events["anomaly"].isin([0, 1]), "anomaly is not 0 or 1")
    fail(events["label"] == BACKGROUND, f"'{BACKGROUND}' is reserved for unlabelled time")
    events["anomaly"] = events["anomaly"].astype(np.int8)
    return events.reset_index(drop=True)


def label_clips(clips: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per clip (recording, start, end) -> DataFrame with `label` and `anomaly` columns."""
    labels = np.full(len(clips), BACKGROUND, dtype=object)
    anomaly = np.zeros(len(clips), dtype=np.int8)
    by_recording = dict(tuple(events.groupby("recording", sort=False)))
    for recording, rows in clips.groupby("recording", sort=False).indices.items():
        ev = by_recording.get(recording)
        if ev is None:
            continue
        start = clips["start"].to_numpy()[rows, None]                 # [C, 1]
        end = clips["end"].to_numpy()[rows, None]
        overlap = np.clip(np.minimum(end, ev["end"].to_numpy()[None])
                          - np.maximum(start, ev["start"].to_numpy()[None]), 0, None)  # [C, E]
        av = (ev["modality"] == "audiovisual").to_numpy()[None]
        cover = np.where(av, overlap, 0.0) / (end - start)
        best = cover.argmax(axis=1)
        labelled = cover[np.arange(len(rows)), best] >= MIN_COVER
        labels[rows[labelled]] = ev["label"].to_numpy()[best[labelled]]
        anomalous = (overlap > 0) & (ev["anomaly"].to_numpy()[None] == 1)
        anomaly[rows] = anomalous.any(axis=1)
    return pd.DataFrame({"label": labels, "anomaly": anomaly}, index=clips.index)
