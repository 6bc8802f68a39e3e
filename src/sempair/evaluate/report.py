"""The evaluation report: metrics and figures in one self-contained HTML page.

`write_report` draws five figures into OUT, each kept as a PNG beside the page:

  embedding_map.png     the test clips' joint embeddings in 2-D, coloured by event label
  confusion.png         the localization probe's confusion matrix on the test split
  anomaly_timeline.png  an anomaly score along one test recording, true anomalies shaded
  search_examples.png   a few event-search queries and their top results, as video frames
  pairs.png             precision, recall and batch false negatives of temporal vs EPG pairs

and OUT/report.html, which inlines every PNG (base64), so the one file can be archived with
a pipeline run or mailed. A figure without the data it needs is skipped, and the page says
why. Figures are drawn on `matplotlib.figure.Figure` (Agg canvas, no pyplot global state).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from sklearn.manifold import TSNE

from sempair.annotations import BACKGROUND
from sempair.dataset import ClipDataset
from sempair.evaluate.embeddings import Embeddings
from sempair.evaluate.probe import Localization
from sempair.evaluate.search import Ranking

DPI = 100
MAP_METHODS = {"tsne": "t-SNE", "pca": "PCA"}   # --map-method -> its name in the report
TSNE_MIN_CLIPS = 5        # fewer test clips: the map falls back to PCA
EXAMPLE_QUERIES = 4       # search examples: queries shown, one per event label
EXAMPLE_RESULTS = 5       # results shown per query
TITLE_NAME = 18           # longest recording name in a frame's title
BACKGROUND_COLOUR = "#cccccc"
ANOMALY_COLOUR = "tab:red"
HIT_COLOUR, MISS_COLOUR = "tab:green", "tab:red"
PAIR_RELATIONS = {"temporal": "temporal", "epg": "EPG"}
PAIR_MEASURES = {"precision": "precision", "recall": "recall",
                 "fn_rate": "batch false-negative rate"}
METRIC_GROUPS = {"localization_": "Event localization (linear probe, test split)",
                 "anomaly_": "Anomaly detection (test split)",
                 "search_": "Event search (test queries, train archive)",
                 "pairs_": "Pair quality (train split)",
                 "backbone_": "Backbone, before the projection heads (probe, v→v search, "
                              "kNN anomaly)"}
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.group th { background: #f2f2f2; }
img { max-width: 100%; }
figcaption, .summary { color: #555; }
.skipped { color: #a33; }
"""


class NotDrawn(Exception):
    """A figure lacks the data it needs; the message says what is missing."""


@dataclass(frozen=True)
class SearchExample:
    query: int              # embedding row of the query clip
    results: np.ndarray     # [k] embedding rows of its best results, best first
    scores: np.ndarray      # [k] their cosine similarity


def write_report(out: Path, emb: Embeddings, localization: Localization | None,
                 anomaly_scores: dict[str, np.ndarray], rankings: dict[str, Ranking],
                 metrics: dict[str, float], data: ClipDataset, map_method: str,
                 title: str) -> Path:
    """Write OUT/report.html (self-contained: PNGs inlined as base64) and the PNGs beside it;
    return the html path."""
    if map_method not in MAP_METHODS:
        raise ValueError(f"map_method must be one of {list(MAP_METHODS)}, got {map_method!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    colours = _label_colours(emb.clips["label"])
    direction, examples = _search_examples(rankings, emb.clips["label"].to_numpy().astype(str))
    sections = [
        _figure_section(out, "embedding_map", "Embedding map",
                        lambda: _draw_embedding_map(emb, map_method, colours)),
        _figure_section(out, "confusion", "Event localization",
                        lambda: _draw_confusion(localization)),
        _figure_section(out, "anomaly_timeline", "Anomaly timeline",
                        lambda: _draw_anomaly_timeline(emb, anomaly_scores, colours)),
        _figure_section(out, "search_examples", "Event search examples",
                        lambda: _draw_search_examples(emb, data, direction, examples),
                        extra=_search_table(emb, examples)),
        _figure_section(out, "pairs", "Pair quality", lambda: _draw_pairs(metrics)),
    ]
    page = out / "report.html"
    page.write_text(_page(title, _summary(emb), _metrics_table(metrics), sections),
                    encoding="utf-8")
    return page


# ---------------------------------------------------------------- figures


def _figure_section(out: Path, name: str, heading: str,
                    draw: Callable[[], tuple[Figure, str]], extra: str = "") -> str:
    """Draw one figure into OUT/NAME.png -> its HTML section (image inlined, or why not)."""
    png = out / f"{name}.png"
    try:
        figure, caption = draw()
    except NotDrawn as reason:
        png.unlink(missing_ok=True)          # no stale figure left from an earlier report
        return (f"<section><h2>{escape(heading)}</h2>"
                f'<p class="skipped">Not drawn: {escape(str(reason))}.</p></section>')
    figure.savefig(png, dpi=DPI)
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f"<section><h2>{escape(heading)}</h2><figure>"
            f'<img src="data:image/png;base64,{encoded}" alt="{escape(heading)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>{extra}</section>")


def _label_colours(labels: pd.Series) -> dict[str, str]:
    """One colour per event label (the same in every figure); background light grey."""
    events = sorted(set(labels.astype(str)) - {BACKGROUND})
    cmap = colormaps["tab10" if len(events) <= 10 else "tab20"]
    return {label: to_hex(cmap(i % cmap.N)) for i, label in enumerate(events)} \
        | {BACKGROUND: BACKGROUND_COLOUR}


def _draw_embedding_map(emb: Embeddings, method: str,
                        colours: dict[str, str]) -> tuple[Figure, str]:
    test = emb.rows("test")
    if len(test) < 2:
        raise NotDrawn(f"the test split has {len(test)} clip(s); a map needs at least 2")
    method = method if len(test) >= TSNE_MIN_CLIPS else "pca"
    xy = _project(emb.joint()[test], method)                                   # [n, 2]
    labels = emb.clips["label"].to_numpy().astype(str)[test]
    figure = Figure(figsize=(7, 5), layout="constrained")
    ax = figure.subplots()
    for label in sorted(set(labels), key=lambda name: (name != BACKGROUND, name)):
        at = labels == label                     # background first, so events lie on top
        ax.scatter(*xy[at].T, s=10 if label == BACKGROUND else 18, color=colours[label],
                   linewidths=0, label=f"{label} ({at.sum()})")
    ax.set(xticks=[], yticks=[], title=f"{len(test)} test clips, {MAP_METHODS[method]}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    caption = (f"Each point is a test clip's joint audio-video embedding, placed by "
               f"{MAP_METHODS[method]}. Clips of one event should form tight clusters apart "
               "from each other, with background (grey) elsewhere; mixed colours mean the "
               "embedding does not separate those events.")
    return figure, caption


def _project(x: np.ndarray, method: str) -> np.ndarray:
    """[n, D] -> [n, 2] by t-SNE or PCA."""
    if method == "tsne":
        return TSNE(n_components=2, perplexity=min(30, len(x) - 1), init="pca",
                    random_state=0).fit_transform(x)
    centred = x - x.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)          # [min(n, D), D]
    return centred @ components[:2].T


def _draw_confusion(localization: Localization | None) -> tuple[Figure, str]:
    if localization is None:
        raise NotDrawn("no localization probe was evaluated")
    counts = localization.confusion                                            # [C, C]
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 2.5 + 0.5 * len(localization.classes)
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (true, predicted), count in np.ndenumerate(counts):
        ax.text(predicted, true, str(count), ha="center", va="center", fontsize=8,
                color="white" if shares[true, predicted] > 0.5 else "black")
    ticks = np.arange(len(localization.classes))
    ax.set_xticks(ticks, localization.classes, rotation=45, ha="right")
    ax.set_yticks(ticks, localization.classes)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"accuracy {localization.accuracy:.3f}, macro-F1 {localization.macro_f1:.3f}")
    figure.colorbar(image, ax=ax, label="share of the true class")
    caption = ("Test clips by true class (rows) and the probe's prediction (columns); "
               "numbers are clip counts, colour the share of the row. A dark diagonal means "
               "the events are linearly separable; off-diagonal cells show which are confused, "
               "often with background.")
    return figure, caption


def _draw_anomaly_timeline(emb: Embeddings, scores: dict[str, np.ndarray],
                           colours: dict[str, str]) -> tuple[Figure, str]:
    name = next((name for name in ("combined", "knn") if name in scores), None)
    if name is None:
        raise NotDrawn("no anomaly score was computed")
    test = emb.clips.iloc[emb.rows("test")].reset_index(drop=True)  # row i <-> scores[name][i]
    if test.empty:
        raise NotDrawn("the test split is empty")
    # the recording with the most anomalous clips; with none, idxmax gives the first one
    recording = test.groupby("recording", sort=False)["anomaly"].sum().idxmax()
    mine = (test["recording"] == recording).to_numpy()
    order = np.argsort(test["start"].to_numpy()[mine], kind="stable")
    clips, score = test[mine].iloc[order], scores[name][mine][order]
    figure = Figure(figsize=(10, 3.2), layout="constrained")
    ax = figure.subplots()
    for start, end in clips.loc[clips["anomaly"] == 1, ["start", "end"]].to_numpy():
        ax.axvspan(start, end, color=ANOMALY_COLOUR, alpha=0.2, linewidth=0)
    events = clips[clips["label"].astype(str) != BACKGROUND]
    for label, spans in events.groupby(events["label"].astype(str)):
        ax.broken_barh(list(zip(spans["start"], spans["end"] - spans["start"], strict=True)),
                       (0, 0.04), transform=ax.get_xaxis_transform(), color=colours[label])
    # each clip's score held over [start, end) of the clip
    ax.plot([*clips["start"], clips["end"].iloc[-1]], [*score, score[-1]],
            drawstyle="steps-post", color="black", linewidth=1)
    ax.set(xlabel="time in recording (s)", ylabel=f"{name} score",
           title=f"{recording}: {int(clips['anomaly'].sum())} anomalous of {len(clips)} clips")
    legend = [Patch(color=ANOMALY_COLOUR, alpha=0.2, label="annotated anomaly")] + \
        [Patch(color=colours[label], label=label) for label in sorted(events["label"].unique())]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8,
              frameon=False)
    chosen = "the one with the most annotated anomalies" if clips["anomaly"].any() else \
        "no test clip is annotated anomalous, so the first test recording"
    caption = (f"The {name} anomaly score along test recording {recording} ({chosen}); red "
               "spans are the annotated anomalous clips, thin bars at the bottom the labelled "
               "events. A good score peaks inside the red spans and stays low elsewhere, "
               "labelled events included.")
    return figure, caption


def _search_examples(rankings: dict[str, Ranking],
                     labels: np.ndarray) -> tuple[str | None, list[SearchExample]]:
    """(direction, up to EXAMPLE_QUERIES queries with distinct labels), from video->video
    when it was ranked, else the first ranked direction."""
    if not rankings:
        return None, []
    direction = "v2v" if "v2v" in rankings else next(iter(rankings))
    ranking = rankings[direction]
    _, first = np.unique(labels[ranking.queries], return_index=True)  # first query per label
    examples = [SearchExample(int(ranking.queries[i]),
                              ranking.gallery[ranking.top[i, :EXAMPLE_RESULTS]],
                              ranking.scores[i, :EXAMPLE_RESULTS])
                for i in first[:EXAMPLE_QUERIES]]
    return direction, examples


def _draw_search_examples(emb: Embeddings, data: ClipDataset, direction: str | None,
                          examples: list[SearchExample]) -> tuple[Figure, str]:
    if not examples:
        raise NotDrawn("no event search was ranked (no test clip shows an event, or the "
                       "embeddings define no search direction)")
    labels = emb.clips["label"].to_numpy().astype(str)
    frames = iter(_middle_frames(data, np.concatenate([[e.query, *e.results]
                                                       for e in examples])))
    columns = 1 + EXAMPLE_RESULTS
    figure = Figure(figsize=(1.8 * columns, 2.0 * len(examples)), layout="constrained")
    for axes, example in zip(figure.subplots(len(examples), columns, squeeze=False), examples,
                             strict=True):
        query_label = labels[example.query]
        _show_frame(axes[0], next(frames), "black",
                    f"QUERY {query_label}\n{_where(emb, example.query, TITLE_NAME)}")
        for ax, row, score in zip(axes[1:], example.results, example.scores, strict=False):
            hit = labels[row] == query_label
            _show_frame(ax, next(frames), HIT_COLOUR if hit else MISS_COLOUR,
                        f"{'hit' if hit else 'miss'}: {labels[row]} ({score:.2f})\n"
                        f"{_where(emb, row, TITLE_NAME)}")
        for ax in axes[1 + len(example.results):]:
            ax.set_axis_off()
    caption = (f"Search direction {direction}: each row is a test query clip (left, middle "
               f"video frame) and its {EXAMPLE_RESULTS} nearest archive clips, best first, "
               "with cosine similarity. Green frames share the query's event (hit), red do "
               "not (miss); misses that look alike point at what the embedding keys on.")
    return figure, caption


def _middle_frames(data: ClipDataset, rows: np.ndarray) -> np.ndarray:
    """Embedding rows [B] -> the middle video frame of each clip [B, H, W, 3] uint8."""
    unique, inverse = np.unique(rows, return_inverse=True)
    _, video = data.batch(unique)                                      # [U, T, 3, H, W] uint8
    return video[:, video.shape[1] // 2].permute(0, 2, 3, 1).numpy()[inverse]


def _show_frame(ax, frame: np.ndarray, colour: str, title: str) -> None:
    ax.imshow(frame)
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=7)
    for spine in ax.spines.values():
        spine.set(color=colour, linewidth=3)


def _where(emb: Embeddings, row: int, longest_name: int | None = None) -> str:
    """'recording @ m:ss.s' of an embedding row, the name cut to `longest_name` characters."""
    clip = emb.clips.iloc[row]
    recording = str(clip["recording"])
    if longest_name is not None and len(recording) > longest_name:
        recording = recording[:longest_name - 3] + "..."
    return f"{recording} @ {_clock(clip['start'])}"


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _draw_pairs(metrics: dict[str, float]) -> tuple[Figure, str]:
    values = np.array([[metrics.get(f"pairs_{relation}_{measure}", math.nan)
                        for measure in PAIR_MEASURES] for relation in PAIR_RELATIONS],
                      dtype=float)                                            # [R, M]
    if np.isnan(values).all():
        raise NotDrawn("no pair-quality metrics (pairs_*) were computed")
    figure = Figure(figsize=(7, 3.8), layout="constrained")
    ax = figure.subplots()
    x, width = np.arange(len(PAIR_MEASURES)), 0.8 / len(PAIR_RELATIONS)
    for i, (relation, colour) in enumerate(zip(PAIR_RELATIONS.values(),
                                               ("tab:blue", "tab:orange"), strict=True)):
        where = x + (i - (len(PAIR_RELATIONS) - 1) / 2) * width
        defined = ~np.isnan(values[i])
        bars = ax.bar(where[defined], values[i][defined], width, color=colour, label=relation)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        for position in where[~defined]:
            ax.text(position, 0.01, "n/a", ha="center", va="bottom", fontsize=8, color="grey")
    base_rate = float(metrics.get("pairs_base_rate", math.nan))
    if math.isfinite(base_rate):
        ax.axhline(base_rate, linestyle="--", color="grey", linewidth=1,
                   label=f"random pairing precision ({base_rate:.2f})")
    ax.set_xticks(x, list(PAIR_MEASURES.values()))
    ax.set(ylim=(0, 1.08), ylabel="share of pairs")
    ax.legend(fontsize=8, frameon=False)
    caption = ("Positive pairs of the train split, judged by the event labels. Precision: "
               "share of positive pairs with the same label (higher than the dashed random "
               "line is better); recall: share of same-event pairs that are positives; batch "
               "false-negative rate: share of a random batch's negatives that are the same "
               "event (lower is better). EPG should raise recall and cut false negatives "
               "without losing much precision.")
    return figure, caption


# ---------------------------------------------------------------- HTML


def _page(title: str, summary: str, metrics_table: str, sections: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>"
            f'<h1>{escape(title)}</h1><p class="summary">{escape(summary)}</p>'
            f"<h2>Metrics</h2>{metrics_table}\n" + "\n".join(sections) + "\n</body></html>\n")


def _summary(emb: Embeddings) -> str:
    splits = emb.clips["split"].value_counts()
    text = (f"{len(emb.clips)} clips from {emb.clips['recording'].nunique()} recordings ("
            + ", ".join(f"{split} {count}" for split, count in splits.items()) + ").")
    if not emb.cross_modal:
        text += (" Audio and video embeddings live in different spaces (hand-made features): "
                 "cross-modal results are n/a.")
    return text


def _metrics_table(metrics: dict[str, float]) -> str:
    """Metrics grouped by task (anything unknown under 'Other'), 3 decimals, nan as n/a."""
    groups = {heading: [name for name in metrics if name.startswith(prefix)]
              for prefix, heading in METRIC_GROUPS.items()}
    groups["Other"] = [name for name in metrics if not name.startswith(tuple(METRIC_GROUPS))]
    rows = []
    for heading, names in groups.items():
        if names:
            rows.append(f'<tr class="group"><th colspan="2">{escape(heading)}</th></tr>')
            rows += [f'<tr><td><code>{escape(name)}</code></td>'
                     f'<td class="number">{_format(metrics[name])}</td></tr>' for name in names]
    return "<table>" + "".join(rows) + "</table>"


def _format(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _search_table(emb: Embeddings, examples: list[SearchExample]) -> str:
    """The search examples as text: query -> results with label, score and relevance."""
    if not examples:
        return ""
    labels = emb.clips["label"].to_numpy().astype(str)
    rows = []
    for example in examples:
        query = (f'<td rowspan="{len(example.results)}">{escape(_where(emb, example.query))}'
                 f'</td><td rowspan="{len(example.results)}">'
                 f"{escape(labels[example.query])}</td>")
        for rank, (row, score) in enumerate(zip(example.results, example.scores, strict=True)):
            hit = labels[row] == labels[example.query]
            rows.append(f"<tr>{query if rank == 0 else ''}<td>{rank + 1}</td>"
                        f"<td>{escape(_where(emb, row))}</td><td>{escape(labels[row])}</td>"
                        f'<td class="number">{score:.3f}</td><td>{"hit" if hit else "miss"}'
                        "</td></tr>")
    header = ("<tr><th>query</th><th>query label</th><th>rank</th><th>result</th>"
              "<th>result label</th><th>cosine</th><th>relevant</th></tr>")
    return "<table>" + header + "".join(rows) + "</table>"
