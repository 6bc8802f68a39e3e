"""Predictions from a serving bundle: media bytes, or one precomputed clip, -> a JSON-ready dict.

    predictor = Predictor.load("runs/bundle", threads=1)
    result = predictor.predict_media(Path("cam01.mp4").read_bytes())
    results = predictor.predict_many([a, b])    # one forward pass; a bad item -> RequestError

Media is decoded from memory by ingest's own code (`ClipReader`, `log_mel`, log-mel rounded
through float16 as the dataset stores it), so a clip served here gets the embedding that
evaluation gave the same clip in the dataset. Each clip gets the probe's event, an anomaly
score (flagged above the bundle's threshold) and its most similar training clips.

Media with one stream (a .wav from a microphone, a camera without one) is served in mode
`audio` or `video`: events from the bundle's one-modality probe, similar clips from that
half of the archive, and no anomaly score (`null`, with the reason in `media.problems`):
the score is calibrated on audio and video together. A bundle without one-modality probes
(unlabelled dataset) answers such media with a 422.

`summary.events` counts the clips of each predicted event, `background` left out;
`summary.anomalies` the clips flagged anomalous.

Poisoned media is handled as ingest handles it (the same `ClipReader`): a few NaN or
infinite audio samples are set to silence and named in `media.problems`; audio that is
mostly such is a 422. No answer ever carries a non-finite score, probability or embedding
as a normal value: should the model give one, that item is a 422 (never `null`, which a
client would read as "not anomalous").

Errors are `RequestError`s whose `status` is the HTTP answer: 400 malformed request,
413 too large or too long, 415 not media FFmpeg can decode, 422 decodable but no clip
(shorter than a clip, no stream, corrupt audio, a non-finite result) and also an
unexpected decoder failure on this input (the input is what FFmpeg chokes on; the message
asks for the file). Bad input never gets a 5xx.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import faiss
import numpy as np
import torch

from sempair import SempairError, json_safe
from sempair.config import FeatureConfig
from sempair.evaluate.anomaly import AnomalyScorer
from sempair.evaluate.probe import Probe
from sempair.features import log_mel
from sempair.media import (
    ClipReader,
    CorruptAudioError,
    MediaError,
    open_media,
    recording_streams,
)
from sempair.serving.bundle import (
    BUNDLE_FILE,
    FORMAT,
    FORMAT_VERSION,
    BundleError,
    split_reference,
)
from sempair.serving.export import load_exported
from sempair.storage import mismatched

AUDIOVISUAL, AUDIO, VIDEO = "audiovisual", "audio", "video"
TOP_EVENTS = 3            # events listed per clip, most probable first
MAX_TOP_K = 100           # similar clips a request may ask for
FORWARD_CLIPS = 256       # clips per forward pass: bounds memory for long batches
DURATION_SLACK = 1.0      # seconds a declared duration may exceed the limit (container rounding)
SEND = "send an mp4/mkv/webm/mov with video and audio (or a wav/m4a for audio only)"


class RequestError(SempairError):
    """A request that cannot be answered; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class NonFiniteResult(RequestError):
    """The model gave NaN or infinity for this input: withheld, never sent as a value."""

    def __init__(self, message: str):
        super().__init__(message, 422)


@dataclass
class _Clips:
    """One request, decoded: its clips and what was noticed on the way."""
    mode: str                     # audiovisual | audio | video
    starts: np.ndarray            # [n] float64, seconds in the media
    logmel: np.ndarray | None     # [n, n_mels, T_a] float32 (float16-rounded, as ingest)
    frames: np.ndarray | None     # [n, T, 3, H, W] uint8
    duration: float | None        # declared by the container, seconds
    problems: list[str]


class Predictor:
    """A loaded bundle: encoders, probes, anomaly reference and archive."""

    def __init__(self, bundle: Path, manifest: dict, threads: int | None = None):
        self.bundle, self.threads = bundle, threads
        self.name, self.version = manifest["model"]["name"], manifest["model"]["version"]
        self.dataset_id = manifest["dataset_id"]
        features = json.loads((bundle / "features.json").read_text())
        self.features = FeatureConfig(**features["features"])
        self.clip_seconds, self.hop_seconds = features["clip_seconds"], features["hop_seconds"]
        serving = json.loads((bundle / "serving.json").read_text())
        self.top_k, self.max_bytes = serving["top_k"], serving["max_bytes"]
        self.max_media_seconds = serving["max_media_seconds"]
        self.threshold = serving["anomaly_threshold"]
        self.encoders = load_exported(bundle)
        self.probes = {AUDIOVISUAL: Probe.load(bundle / "probe.npz")} | {
            kind: Probe.load(bundle / f"probe_{kind}.npz") for kind in (AUDIO, VIDEO)
            if (bundle / f"probe_{kind}.npz").is_file()}
        self.scorer = AnomalyScorer.load(bundle / "anomaly.npz")
        with np.load(bundle / "archive.npz") as archive:
            self.archive = {key: archive[key] for key in ("recording", "start")}
        self.indexes = {AUDIOVISUAL: faiss.read_index(str(bundle / "archive.faiss"))}
        for kind, half in zip((AUDIO, VIDEO), split_reference(self.scorer.reference),
                              strict=True):
            self.indexes[kind] = faiss.IndexFlatIP(half.shape[1])
            self.indexes[kind].add(half)                          # [M, d]
        f = self.features
        self.shapes = {AUDIO: (f.n_mels, round(self.clip_seconds * f.sample_rate)
                               // f.hop_length),
                       VIDEO: (round(self.clip_seconds * f.fps), 3, f.height, f.width)}

    @classmethod
    def load(cls, bundle: str | Path, *, threads: int | None = None) -> Predictor:
        """Load a bundle after checking every file against bundle.json's sha256."""
        bundle = Path(bundle)
        manifest = verify_bundle(bundle)
        if threads:
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
        return cls(bundle, manifest, threads)

    # -- the public calls ------------------------------------------------------------------

    def predict_media(self, data: bytes, *, filename: str | None = None,
                      top_k: int | None = None, embeddings: bool = False) -> dict:
        """Every clip of one media file (its bytes); raises RequestError."""
        result = self.predict_many([data], top_k=top_k, embeddings=embeddings,
                                   filenames=[filename])[0]
        if isinstance(result, RequestError):
            raise result
        return result

    def predict_clip(self, audio: np.ndarray, frames: np.ndarray, *, top_k: int | None = None,
                     embeddings: bool = False) -> dict:
        """One precomputed clip: log-mel [n_mels, T_a] float, frames [T, 3, H, W] uint8."""
        logmel = _checked(audio, self.shapes[AUDIO], "audio", "log-mel [n_mels, T_a] float",
                          floating=True)
        frames = _checked(frames, self.shapes[VIDEO], "frames", "RGB [T, 3, H, W] uint8",
                          floating=False)
        clip = _Clips(AUDIOVISUAL, np.zeros(1), logmel[None], frames[None], self.clip_seconds,
                      [])
        result = self._predict([clip], self._top_k(top_k), embeddings)[0]
        if isinstance(result, RequestError):
            raise result
        return result

    def predict_many(self, items: list[bytes], *, top_k: int | None = None,
                     embeddings: bool = False,
                     filenames: list[str | None] | None = None) -> list[dict | RequestError]:
        """Decode each item, embed all their clips in one batched pass, split back.
        A bad item yields its RequestError and leaves the others untouched."""
        k = self._top_k(top_k)
        filenames = filenames or [None] * len(items)
        decoded = [self._decode_safely(data, name)
                   for data, name in zip(items, filenames, strict=True)]
        good = [item for item in decoded if isinstance(item, _Clips)]
        answers = iter(self._predict(good, k, embeddings))
        return [item if isinstance(item, RequestError) else next(answers) for item in decoded]

    # -- decoding ----------------------------------------------------------------------------

    def _decode_safely(self, data: bytes, filename: str | None) -> _Clips | RequestError:
        try:
            return self._decode(data)
        except RequestError as error:
            if filename:
                error.args = (f"{filename}: {error}",)
            return error
        except Exception as error:   # a decoder bug: this item fails, the batch goes on
            return RequestError(f"unexpected failure decoding the media ({type(error).__name__}"
                                f": {error}); please report it with the file", 422)

    def _decode(self, data: bytes) -> _Clips:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RequestError(f"expected the media file's bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise RequestError(f"empty request body: {SEND} as the body")
        if len(data) > self.max_bytes:
            raise RequestError(f"the media is {len(data) / 2**20:.1f} MB, over the "
                               f"{self.max_bytes / 2**20:.0f} MB limit; send a shorter "
                               "recording (cut it with ffmpeg -t)", 413)
        with _opened(data) as container:
            video, audio = _usable_streams(container)
            duration = container.duration / av.time_base if container.duration else None
            if duration is not None and duration > self.max_media_seconds + DURATION_SLACK:
                raise self._too_long(duration)
        mode = VIDEO if audio is None else AUDIO if video is None else AUDIOVISUAL
        if mode not in self.probes:
            raise RequestError(f"the media has {mode} only, and this bundle has no "
                               f"{mode}-only probe (its dataset had no labels); send media "
                               "with both video and audio", 422)
        clips = self._clips(data, mode, duration)
        if mode != AUDIOVISUAL:
            missing = VIDEO if mode == AUDIO else AUDIO
            clips.problems.append(
                f"{mode} only (no {missing} stream): events come from the {mode}-only probe, "
                f"similar clips from the archive's {mode}, and there is no anomaly score (it "
                "is calibrated on audio and video together); send media with both streams for "
                "the full analysis")
        return clips

    def _clips(self, data: bytes, mode: str, duration: float | None) -> _Clips:
        """Exactly ingest's path (ClipReader -> log_mel -> float16); media with one stream
        is cut on the same timeline and has None for the other modality."""
        starts, logmel, frames = [], [], []
        try:
            with ClipReader(io.BytesIO(data), self.features, self.clip_seconds,
                            self.hop_seconds, threads=self.threads or 0,
                            streams="any") as reader:
                for batch in reader:
                    self._check_length(float(batch.starts[-1]) + self.clip_seconds)
                    starts.append(batch.starts)
                    if batch.audio is not None:
                        logmel.append(log_mel(batch.audio, self.features).numpy()
                                      .astype(np.float16).astype(np.float32))
                    if batch.frames is not None:
                        frames.append(batch.frames)
                problems = list(reader.problems)
        except CorruptAudioError as error:      # decodable, but the audio is not sound
            raise RequestError(f"{error}; {SEND}", 422) from None
        except MediaError as error:
            raise RequestError(f"{error}; {SEND}", 415) from None
        if not starts:
            raise self._no_clip(duration, problems)
        return _Clips(mode, np.concatenate(starts), np.concatenate(logmel) if logmel else None,
                      np.concatenate(frames) if frames else None, duration, problems)

    def _check_length(self, end: float) -> None:
        if end > self.max_media_seconds:
            raise self._too_long(end)

    def _too_long(self, seconds: float) -> RequestError:
        return RequestError(f"the media runs {seconds:.1f} s or more, over the "
                            f"{self.max_media_seconds:g} s limit; send at most "
                            f"{self.max_media_seconds:g} s per request (cut it with ffmpeg "
                            "-ss/-t)", 413)

    def _no_clip(self, duration: float | None, problems: list[str]) -> RequestError:
        length = f"{duration:.2f} s" if duration is not None else "unknown length"
        why = "; ".join(problems) or f"shorter than one clip ({length} < {self.clip_seconds} s)"
        return RequestError(f"no clip could be cut from the media: {why}; send at least "
                            f"{self.clip_seconds:g} s of decodable media", 422)

    # -- embedding and scoring ---------------------------------------------------------------

    def _predict(self, items: list[_Clips], top_k: int,
                 embeddings: bool) -> list[dict | RequestError]:
        """Each item's answer, or its 422 when the model gave it a non-finite number."""
        audio = self._embed(AUDIO, [item.logmel for item in items])
        video = self._embed(VIDEO, [item.frames for item in items])
        answers = []
        for item, a, v in zip(items, audio, video, strict=True):
            try:
                answers.append(self._result(item, a, v, top_k, embeddings))
            except NonFiniteResult as error:
                answers.append(error)
        return answers

    @torch.inference_mode()
    def _embed(self, kind: str, inputs: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """One batched pass (in FORWARD_CLIPS chunks) over every item's clips, split back."""
        present = [x for x in inputs if x is not None]
        if not present:
            return [None] * len(inputs)
        batch = torch.from_numpy(np.concatenate(present))     # [N, ...] all items' clips
        encoder = self.encoders[kind]
        out = torch.cat([encoder(batch[i:i + FORWARD_CLIPS])
                         for i in range(0, len(batch), FORWARD_CLIPS)]).numpy()   # [N, d]
        parts = iter(np.split(out, np.cumsum([len(x) for x in present])[:-1]))
        return [None if x is None else next(parts) for x in inputs]

    def _result(self, item: _Clips, audio: np.ndarray | None, video: np.ndarray | None,
                top_k: int, embeddings: bool) -> dict:
        mode = item.mode
        features = {AUDIOVISUAL: lambda: np.concatenate([audio, video], 1),
                    AUDIO: lambda: audio, VIDEO: lambda: video}[mode]()      # [n, D]
        probe = self.probes[mode]
        _finite(item, "embedding", features)
        probabilities = _finite(item, "event probability", probe.probabilities(features))
        anomaly = _finite(item, "anomaly score", self.scorer.scores(audio, video)["combined"]) \
            if mode == AUDIOVISUAL and self.threshold is not None else None  # [n]
        similar = self._similar(mode, audio, video, top_k)
        clips = []
        for i, start in enumerate(item.starts):
            clip = {"start": _r(start, 3), "end": _r(start + self.clip_seconds, 3),
                    **_events(probe.classes, probabilities[i]),
                    "anomaly_score": None if anomaly is None else _r(anomaly[i], 4),
                    "anomalous": None if anomaly is None else bool(anomaly[i] > self.threshold),
                    "similar": similar[i]}
            if embeddings:
                clip["embedding"] = {kind: None if x is None else [_r(v, 6) for v in x[i]]
                                     for kind, x in ((AUDIO, audio), (VIDEO, video))}
            clips.append(clip)
        events = Counter(c["event"] for c in clips if c["event"] != "background")
        return json_safe({
            "model": {"name": self.name, "version": self.version},
            "clip_seconds": self.clip_seconds, "mode": mode, "clips": clips,
            "summary": {"clips": len(clips), "events": dict(sorted(events.items())),
                        "anomalies": sum(bool(c["anomalous"]) for c in clips)},
            "media": {"duration": None if item.duration is None else _r(item.duration, 3),
                      "problems": item.problems}})

    def _similar(self, mode: str, audio: np.ndarray | None, video: np.ndarray | None,
                 top_k: int) -> list[list[dict]]:
        """Per clip, the top_k most similar training clips (cosine, highest first)."""
        query = {AUDIOVISUAL: lambda: np.concatenate([audio, video], 1) / np.sqrt(2),
                 AUDIO: lambda: audio, VIDEO: lambda: video}[mode]()          # [n, D]
        k = min(top_k, self.indexes[mode].ntotal)
        if k == 0:
            return [[] for _ in range(len(query))]
        scores, rows = self.indexes[mode].search(np.ascontiguousarray(query, np.float32), k)
        return [[{"recording": str(self.archive["recording"][j]),
                  "start": _r(self.archive["start"][j], 3), "score": _r(s, 4)}
                 for s, j in zip(row_scores, row_ids, strict=True) if j >= 0]
                for row_scores, row_ids in zip(scores, rows, strict=True)]

    def _top_k(self, top_k: int | None) -> int:
        if top_k is None:
            return self.top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) \
                or not 0 <= top_k <= MAX_TOP_K:
            raise RequestError(f"top_k must be a whole number from 0 to {MAX_TOP_K}, got "
                               f"{top_k!r}")
        return int(top_k)


# -- bundle ------------------------------------------------------------------------------------

def verify_bundle(bundle: Path) -> dict:
    """bundle.json, after checking that every file it lists has its sha256."""
    path = bundle / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{bundle} is not a serving bundle (no {BUNDLE_FILE}): build one "
                          "with sempair.serving.build_bundle(RELEASE, DATASET, OUT, serve)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON ({error}); copy the bundle again whole, "
                          "or build it again from the release") from None
    if (manifest.get("format"), manifest.get("format_version")) != (FORMAT, FORMAT_VERSION):
        raise BundleError(f"{bundle}: format {manifest.get('format')} "
                          f"v{manifest.get('format_version')} is not {FORMAT} v{FORMAT_VERSION};"
                          " build the bundle again with this sempair")
    changed = mismatched(bundle, manifest["files"])
    if changed:
        raise BundleError(f"{bundle} is damaged: missing or changed since it was built "
                          f"(sha256 differs from {BUNDLE_FILE}): {changed}; copy the bundle "
                          "again whole, or build it again from the release")
    return manifest



# -- media helpers -----------------------------------------------------------------------------

class _opened:
    """av.open over bytes in memory, errors as RequestErrors that name the problem."""

    def __init__(self, data: bytes):
        self.data = data

    def __enter__(self) -> av.container.InputContainer:
        try:
            self.container = open_media(io.BytesIO(self.data))   # ingest's opener and reasons
        except MediaError as error:
            raise RequestError(f"{error}; {SEND}", 415) from None
        return self.container

    def __exit__(self, *exc) -> None:
        self.container.close()


def _usable_streams(container) -> tuple:
    """(video stream or None, audio stream or None); a cover picture is not video."""
    video, audio = recording_streams(container)
    if video is None and audio is None:
        raise RequestError(f"the media has no video and no audio stream; {SEND}", 422)
    for stream in (video, audio):
        if stream is not None and (stream.codec_context is None
                                   or stream.codec_context.name is None):
            raise RequestError(f"the {stream.type} stream has a codec this FFmpeg build "
                               "cannot decode; re-encode it (e.g. H.264 + AAC)", 415)
    return video, audio


# -- small helpers -----------------------------------------------------------------------------

def _checked(array, shape: tuple[int, ...], name: str, what: str, floating: bool) -> np.ndarray:
    """A request array with the bundle's shape and kind, else a 400 naming both."""
    array = np.asarray(array)
    ok_kind = np.issubdtype(array.dtype, np.floating) if floating else array.dtype == np.uint8
    if array.shape != shape or not ok_kind:
        raise RequestError(f"{name} must be {what} of shape {list(shape)}, got "
                           f"{list(array.shape)} {array.dtype}")
    if floating:     # stored as ingest stores it: rounded through float16
        array = array.astype(np.float16).astype(np.float32)
        if not np.isfinite(array).all():
            raise RequestError(f"{name} has NaN or infinite values (float16 range); send "
                               "log-mel as `sempair.features.log_mel` computes it")
    return array


def _finite(item: _Clips, what: str, values: np.ndarray) -> np.ndarray:
    """values [n, ...] per clip of item, or NonFiniteResult naming the first bad clip."""
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if bad.any():
        at = float(item.starts[np.argmax(bad)])
        raise NonFiniteResult(
            f"the model gave a NaN or infinite {what} for {int(bad.sum())} of {len(values)} "
            f"clips (the first at {at:.2f} s); the answer is withheld rather than sent "
            "without it (a missing score would read as not anomalous); please report it "
            "with the media file")
    return values


def _events(classes: np.ndarray, probabilities: np.ndarray) -> dict:
    """The most probable event and the TOP_EVENTS most probable ones, [C] -> dict."""
    order = np.argsort(-probabilities, kind="stable")[:TOP_EVENTS]
    top = [{"event": str(classes[j]), "probability": _r(probabilities[j], 4)} for j in order]
    return {"event": top[0]["event"], "probability": top[0]["probability"], "top_events": top}


def _r(value, digits: int) -> float:
    return round(float(value), digits)
