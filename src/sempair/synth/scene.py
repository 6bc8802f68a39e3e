"""The scene plan: event classes, each recording's event timeline, and the slow drift.

Everything here is cheap bookkeeping (no pixels, no samples): `plan(cfg)` turns a config
into a list of `Recording`s, and `rows(rec)` into the ground-truth lines of events.csv.
draw.py and sounds.py render what the plan says; the plan is the single source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

AV, AUDIO, VISUAL = "audiovisual", "audio", "visual"

CAMERAS = ("cam01", "cam02")         # each a fixed background scene (see draw.CAMERA_LOOKS)
FIRST_DAY = datetime(2026, 11, 24)   # recording i of a camera is on day i // len(CAMERAS)
CLOCK_SPEEDUP = 60.0                 # scene clock runs 1 h per minute of media, so the
                                     # day/night drift changes visibly within a recording
NIGHT_LIGHT = 0.45                   # scene brightness at midnight (1.0 at noon)
RAIN_CHANCE = 0.4                    # share of recordings with a rain episode
RAIN_SHARE = (0.25, 0.6)             # rain episode length, share of the recording
RAIN_RAMP = 4.0                      # seconds for rain to build up and fade out
ANOMALIES_PER_MINUTE = 0.4           # extra anomalies per minute beyond the first one


@dataclass(frozen=True)
class EventClass:
    """One kind of thing that happens in front of (or near) the camera."""

    name: str
    modality: str                        # audiovisual | audio | visual
    rate: float                          # share of cfg.events_per_minute (Poisson arrivals)
    duration: tuple[float, float]        # seconds present: visible, or audible if audio-only
    lead: tuple[float, float] = (0, 0)   # seconds heard before it comes into view
    anomaly: bool = False


CLASSES = (
    # audio-visual events; their rates sum to 1, i.e. cfg.events_per_minute in all
    EventClass("car_pass", AV, 0.20, (3.0, 5.0)),
    EventClass("truck_pass", AV, 0.10, (4.5, 7.0)),
    EventClass("motorcycle_pass", AV, 0.10, (2.5, 4.0), lead=(0.8, 1.2)),
    EventClass("emergency_vehicle", AV, 0.07, (4.0, 6.0), lead=(2.0, 4.0)),
    EventClass("pedestrian", AV, 0.15, (6.0, 9.0)),
    EventClass("dog_bark", AV, 0.09, (3.0, 5.0)),
    EventClass("door", AV, 0.09, (3.0, 4.5)),
    EventClass("bicycle", AV, 0.10, (4.0, 6.0)),
    EventClass("people_talking", AV, 0.10, (5.0, 9.0)),
    # distractors: heard but not seen (off screen), seen but not heard
    EventClass("horn_offscreen", AUDIO, 0.08, (0.4, 1.5)),
    EventClass("birds", AUDIO, 0.10, (2.0, 5.0)),
    EventClass("aircraft", AUDIO, 0.05, (8.0, 14.0)),
    EventClass("silent_passerby", VISUAL, 0.10, (5.0, 8.0)),
    EventClass("bird_flyby", VISUAL, 0.08, (1.5, 3.0)),
    EventClass("cloud_shadow", VISUAL, 0.05, (8.0, 14.0)),
    # rare anomalies: placed by count (ANOMALIES_PER_MINUTE), not by rate
    EventClass("glass_break", AV, 0.0, (2.0, 3.0), anomaly=True),
    EventClass("crash", AV, 0.0, (3.0, 4.5), anomaly=True),
    EventClass("scream", AV, 0.0, (1.8, 3.0), anomaly=True),
)
CLASS = {c.name: c for c in CLASSES}
ANOMALY_CLASSES = tuple(c.name for c in CLASSES if c.anomaly)


@dataclass(frozen=True)
class Event:
    """One occurrence. [start, end] is where it is present; audio may start `lead` earlier."""

    label: str
    start: float
    end: float
    lead: float = 0.0
    direction: int = 1       # +1 moves left -> right, -1 right -> left
    seed: int = 0            # drives this event's look and sound

    @property
    def cls(self) -> EventClass:
        return CLASS[self.label]

    @property
    def audio_span(self) -> tuple[float, float] | None:
        return None if self.cls.modality == VISUAL else (self.start - self.lead, self.end)

    @property
    def visual_span(self) -> tuple[float, float] | None:
        return None if self.cls.modality == AUDIO else (self.start, self.end)


@dataclass(frozen=True)
class Recording:
    """One file's plan: its id, camera, clock, weather and events."""

    id: str                                   # path relative to the output folder
    index: int
    camera: int                               # index into CAMERAS
    seconds: float
    start_hour: float                         # scene clock at t=0, hours after midnight
    rain: tuple[tuple[float, float, float], ...] = ()   # (start, end, peak intensity)
    seed: int = 0
    events: tuple[Event, ...] = field(default=())

    def hour(self, t: np.ndarray | float) -> np.ndarray:
        return (self.start_hour + np.asarray(t, np.float64) * CLOCK_SPEEDUP / 3600) % 24

    def daylight(self, t: np.ndarray | float) -> np.ndarray:
        """0 at midnight, 1 at noon, changing smoothly (and so within a recording)."""
        return 0.5 - 0.5 * np.cos(2 * np.pi * self.hour(t) / 24)

    def light(self, t: np.ndarray | float) -> np.ndarray:
        return NIGHT_LIGHT + (1 - NIGHT_LIGHT) * self.daylight(t)

    def rain_level(self, t: np.ndarray | float) -> np.ndarray:
        """Rain intensity in [0, 1], ramping in and out over RAIN_RAMP seconds."""
        t = np.asarray(t, np.float64)
        level = np.zeros_like(t)
        for start, end, peak in self.rain:
            ramp = min(RAIN_RAMP, (end - start) / 2)
            up = np.clip((t - start) / ramp, 0, 1)
            down = np.clip((end - t) / ramp, 0, 1)
            level = np.maximum(level, peak * np.minimum(up, down))
        return level

    def scene_json(self) -> dict:
        return {"camera": CAMERAS[self.camera], "seconds": self.seconds,
                "start_hour": self.start_hour,
                "clock_hours_per_second": CLOCK_SPEEDUP / 3600,
                "rain": [{"start": round(s, 2), "end": round(e, 2), "peak": round(p, 3)}
                         for s, e, p in self.rain],
                "seed": self.seed}


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def plan(cfg) -> list[Recording]:
    """Every recording's clock, weather and event timeline, deterministic from cfg.seed."""
    rng = np.random.default_rng(_seed(cfg.seed, 0))
    n = cfg.recordings
    n_anomalous = min(n, max(1, round(cfg.anomaly_share * n))) if cfg.anomaly_share > 0 else 0
    anomalous = set(rng.choice(n, size=n_anomalous, replace=False).tolist())
    anomaly_turn = int(rng.integers(len(ANOMALY_CLASSES)))   # cycle through anomaly classes
    # start hours spread over the day so that every recording has its own light
    hours = (np.arange(n) * 24 / max(n, 1) + rng.uniform(0, 24)) % 24
    recordings = []
    for i in range(n):
        camera, day = i % len(CAMERAS), i // len(CAMERAS)
        minute = int(hours[i] * 60) // 5 * 5                   # round to 5 minutes
        when = FIRST_DAY + timedelta(days=day, minutes=minute)
        rid = f"{CAMERAS[camera]}/{when:%Y-%m-%dT%H-%M}.mp4"
        seed = _seed(cfg.seed, 1, i)
        r = np.random.default_rng(seed)
        n_anom = 0
        if i in anomalous:
            n_anom = 1 + int(r.poisson(ANOMALIES_PER_MINUTE * max(0, cfg.seconds / 60 - 1)))
        labels = [ANOMALY_CLASSES[(anomaly_turn + k) % len(ANOMALY_CLASSES)]
                  for k in range(n_anom)]
        anomaly_turn += n_anom
        recordings.append(Recording(
            id=rid, index=i, camera=camera, seconds=float(cfg.seconds),
            start_hour=minute / 60, rain=_rain(r, cfg.seconds), seed=seed,
            events=_timeline(r, cfg.seconds, cfg.events_per_minute, labels)))
    return recordings


def _rain(rng: np.random.Generator, seconds: float) -> tuple:
    if rng.random() >= RAIN_CHANCE:
        return ()
    length = rng.uniform(*RAIN_SHARE) * seconds
    start = rng.uniform(0, seconds - length)
    return ((float(start), float(start + length), float(rng.uniform(0.6, 1.0))),)


def _timeline(rng, seconds: float, per_minute: float, anomalies: list[str]) -> tuple:
    """Poisson arrivals per class (events overlap freely) plus the given anomalies."""
    events = []
    for c in CLASSES:
        if c.rate <= 0:
            continue
        rate = per_minute * c.rate / 60                          # events per second
        t = -c.duration[1] - c.lead[1]                           # may be cut at the start
        while True:
            t += rng.exponential(1 / rate)
            if t >= seconds:
                break
            events.append(_event(rng, c, t))
    for label in anomalies:
        events.append(_event(rng, CLASS[label], rng.uniform(0.1, 0.85) * seconds))
    events = [e for e in events if e.end > 0 and e.start - e.lead < seconds]
    return tuple(sorted(events, key=lambda e: (e.start - e.lead, e.label)))


def _event(rng, c: EventClass, start: float) -> Event:
    duration = rng.uniform(*c.duration)
    lead = rng.uniform(*c.lead) if c.lead[1] else 0.0
    return Event(label=c.name, start=float(start), end=float(start + duration),
                 lead=float(lead), direction=int(rng.choice([-1, 1])),
                 seed=int(rng.integers(2**31)))


def rows(rec: Recording) -> list[tuple]:
    """events.csv rows: (recording, start, end, label, modality, anomaly), clipped, sorted.

    An event whose sound comes first gives an `audio` row for the lead-in and an
    `audiovisual` row for the span where it is both seen and heard.
    """
    out = []

    def add(start, end, label, modality, anomaly):
        start, end = round(max(0.0, start), 2), round(min(rec.seconds, end), 2)
        if end > start:
            out.append((rec.id, start, end, label, modality, int(anomaly)))

    for e in rec.events:
        if e.lead > 0:
            add(e.start - e.lead, e.start, e.label, AUDIO, e.cls.anomaly)
        add(e.start, e.end, e.label, e.cls.modality, e.cls.anomaly)
    return sorted(out, key=lambda r: (r[1], r[2], r[3], r[4]))


def background_seconds(rec: Recording) -> float:
    """Seconds of the recording not covered by any audiovisual row."""
    spans = sorted((r[1], r[2]) for r in rows(rec) if r[4] == AV)
    covered, reach = 0.0, 0.0
    for start, end in spans:
        start = max(start, reach)
        if end > start:
            covered += end - start
            reach = end
    return rec.seconds - covered


# --- choreography shared by draw.py (what is seen) and sounds.py (what is heard) -------

DOOR_OPEN = (0.0, 0.2)     # share of the door event's span: the door swings open
DOOR_SLAM = 0.9            # ... and slams shut here
GLASS_HIT = 0.1            # share of glass_break's span at which the window shatters
CRASH_HIT = 0.35           # share of crash's span at which the car hits the lamp post
STEP_SECONDS = (0.45, 0.6) # a walker's step period


def anchor(ev: Event) -> float:
    """Where a standing thing is, as a share of the frame width (0.15..0.85)."""
    return float(np.random.default_rng([ev.seed, 0]).uniform(0.15, 0.85))


def step_period(ev: Event) -> float:
    return float(np.random.default_rng([ev.seed, 3]).uniform(*STEP_SECONDS))


def step_times(ev: Event) -> np.ndarray:
    """Footfalls, seconds after the event starts (legs swap at each)."""
    return np.arange(0.1, ev.end - ev.start, step_period(ev))


def bark_times(ev: Event) -> np.ndarray:
    """Barks come in pairs or triples, seconds after the event starts."""
    rng, out, t = np.random.default_rng([ev.seed, 4]), [], 0.2
    while t < ev.end - ev.start - 0.3:
        for _ in range(rng.integers(1, 4)):
            out.append(t)
            t += rng.uniform(0.25, 0.35)
        t += rng.uniform(0.5, 1.2)
    return np.array([x for x in out if x < ev.end - ev.start - 0.2])


def check_size(width: int, height: int) -> None:
    """yuv420p halves chroma in both directions: sizes must be even."""
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"synth.width={width}, synth.height={height}: both must be even and "
                         f">= 16 for H.264 yuv420p; e.g. --set synth.width="
                         f"{max(16, width + width % 2)} --set synth.height="
                         f"{max(16, height + height % 2)}")
