"""The evaluation report: every figure and the self-contained page, on fake embeddings."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from sempair.evaluate.anomaly import anomaly_metrics, fit_scorer
from sempair.evaluate.embeddings import Embeddings
from sempair.evaluate.probe import localization
from sempair.evaluate.report import write_report
from sempair.evaluate.search import event_search

EVENTS = ["dog", "siren", "glass"]
FIGURES = ["embedding_map", "confusion", "anomaly_timeline", "search_examples", "pairs"]
PAIRS = {"pairs_temporal_precision": 0.61, "pairs_temporal_recall": 0.18,
         "pairs_temporal_fn_rate": 0.07, "pairs_epg_precision": 0.55,
         "pairs_epg_recall": 0.42, "pairs_epg_fn_rate": math.nan, "pairs_base_rate": 0.31}


class FakeClips:
    """Stands in for ClipDataset: random frames, and it remembers which rows were read."""

    def __init__(self, n: int):
        self.n, self.read = n, []

    def batch(self, rows):
        rows = np.asarray(rows)
        self.read.extend(rows.tolist())
        b = len(rows)
        return (torch.zeros(b, 64, 100),
                torch.randint(0, 255, (b, 8, 3, 16, 16), dtype=torch.uint8))


def clip_manifest(recordings: dict[str, tuple[str, int]], anomalous: set[tuple[str, int]],
                  events: bool = True) -> pd.DataFrame:
    """{recording: (split, clips)} -> manifest rows of 1 s clips; every 5 clips: 2 background,
    then 3 of one event, the event cycling through EVENTS."""
    rows = []
    for r, (recording, (split, clips)) in enumerate(recordings.items()):
        for clip in range(clips):
            event = events and clip % 5 >= 2
            rows.append({"clip_id": f"{recording}#{clip:06d}", "recording": recording,
                         "clip": clip, "start": float(clip), "end": clip + 1.0, "split": split,
                         "label": EVENTS[(clip // 5 + r) % 3] if event else "background",
                         "anomaly": int((recording, clip) in anomalous)})
    return pd.DataFrame(rows).rename_axis("index").reset_index()


def fake_embeddings(clips: pd.DataFrame, seed: int = 0) -> Embeddings:
    """Class-dependent unit vectors, audio and video around the same class centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(EVENTS) + 1, 16))
    kind = clips["label"].map({"background": 0} | {e: i + 1 for i, e in enumerate(EVENTS)})

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    noise = 0.6
    audio = unit(centres[kind] + noise * rng.normal(size=(len(clips), 16)))
    video = unit(centres[kind] + noise * rng.normal(size=(len(clips), 16)))
    return Embeddings(audio, video, clips, cross_modal=True)


def evaluate(emb: Embeddings, with_probe: bool = True):
    """-> (localization or None, anomaly scores, rankings, metrics), as `sempair evaluate`."""
    probe = localization(emb, 1.0) if with_probe else None
    anomaly, scores = anomaly_metrics(emb, fit_scorer(emb, 3))
    search, rankings = event_search(emb)
    metrics = anomaly | search
    if probe is not None:
        metrics = {"localization_accuracy": probe.accuracy,
                   "localization_macro_f1": probe.macro_f1} | metrics
    return probe, scores, rankings, metrics


@pytest.fixture(scope="module")
def emb() -> Embeddings:
    clips = clip_manifest({"yard-cam-01": ("train", 20), "yard-cam-02": ("train", 20),
                           "gate-cam-03": ("test", 20)},
                          anomalous={("yard-cam-01", 12), ("gate-cam-03", 7),
                                     ("gate-cam-03", 8)})
    return fake_embeddings(clips)


def test_report_has_every_figure_inlined_and_the_metrics(tmp_path, emb):
    probe, scores, rankings, metrics = evaluate(emb)
    data = FakeClips(len(emb.clips))
    page = write_report(tmp_path / "report", emb, probe, scores, rankings, metrics | PAIRS,
                        data, "pca", "Evaluation <fake>")

    assert page == tmp_path / "report" / "report.html"
    text = page.read_text(encoding="utf-8")
    for name in FIGURES:
        png = (tmp_path / "report" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), name
        assert len(png) < 500_000, name
        assert base64.b64encode(png).decode() in text, f"{name} is not inlined"
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == len(FIGURES)
    assert "Not drawn" not in text
    assert "Evaluation &lt;fake&gt;" in text                      # the title is escaped
    for name in [*metrics, *PAIRS]:
        assert name in text
    assert "n/a" in text                                          # pairs_epg_fn_rate is nan
    assert f"{metrics['localization_accuracy']:.3f}" in text
    assert "gate-cam-03 @ 0:" in text and "yard-cam-0" in text    # search examples as text
    assert set(data.read) <= set(range(len(emb.clips)))
    assert set(data.read) >= set(rankings["v2v"].queries[:1].tolist())


def test_tsne_map(tmp_path, emb):
    probe, scores, rankings, metrics = evaluate(emb)
    page = write_report(tmp_path, emb, probe, scores, rankings, metrics, FakeClips(60),
                        "tsne", "t-SNE")
    assert (tmp_path / "embedding_map.png").read_bytes().startswith(b"\x89PNG")
    assert "placed by t-SNE" in page.read_text(encoding="utf-8")
    assert not (tmp_path / "pairs.png").exists()                  # no pairs_* metrics given


def test_degenerate_input_still_writes_a_report(tmp_path):
    """3 background test clips, no anomalies, no probe, no search queries, no pair metrics."""
    clips = clip_manifest({"yard-cam-01": ("train", 20), "gate-cam-03": ("test", 3)},
                          anomalous={("yard-cam-01", 12)}, events=False)
    clips.loc[clips["split"] == "train", "label"] = np.resize(EVENTS, 20)
    emb = fake_embeddings(clips)
    _, scores, rankings, metrics = evaluate(emb, with_probe=False)
    assert rankings == {}
    (tmp_path / "confusion.png").write_bytes(b"stale")            # from an earlier run

    page = write_report(tmp_path, emb, None, scores, rankings, metrics, FakeClips(23),
                        "tsne", "Degenerate")

    text = page.read_text(encoding="utf-8")
    assert text.count("Not drawn") == 3                           # confusion, search, pairs
    for name in ["embedding_map", "anomaly_timeline"]:            # PCA fallback; first recording
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    for name in ["confusion", "search_examples", "pairs"]:
        assert not (tmp_path / f"{name}.png").exists()
    assert "n/a" in text                                          # anomaly AUC without anomalies
    assert "so the first test recording" in text


def test_unknown_map_method_is_refused(tmp_path, emb):
    with pytest.raises(ValueError, match="map_method"):
        write_report(tmp_path, emb, None, {}, {}, {}, FakeClips(60), "umap", "x")
