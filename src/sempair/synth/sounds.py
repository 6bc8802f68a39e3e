"""Procedural audio with numpy: each event's own sound, and a recording's ambient bed.

An event's sound is one short buffer [n] computed once from the event's own seed, so the
chunked renderer can mix any slice of it. The ambient bed is streamed chunk by chunk
from an RNG seeded by (recording, chunk) through FIR filters that carry their state, so
it has no seams. Nothing here is downloaded: filtered noise, harmonics, chirps, impulses
and formants only.
"""

from __future__ import annotations

import numpy as np

from .scene import CRASH_HIT, DOOR_SLAM, GLASS_HIT, Event, Recording, anchor, bark_times, step_times

LEVEL = {  # peak amplitude of each class's sound (before the ±30% per-event jitter)
    "car_pass": 0.25, "truck_pass": 0.26, "motorcycle_pass": 0.22,
    "emergency_vehicle": 0.24, "pedestrian": 0.5, "dog_bark": 0.26, "door": 0.30,
    "bicycle": 0.16, "people_talking": 0.14, "horn_offscreen": 0.18, "birds": 0.10,
    "aircraft": 0.10, "glass_break": 0.50, "crash": 0.60, "scream": 0.40,
}
HUM_RMS = (0.003, 0.012)   # ambient traffic hum and wind, night .. day (RMS)
RAIN_RMS = 0.05            # broadband rain noise at full intensity
HISS_RMS = 0.002           # microphone self-noise
CEILING = 0.8              # soft limiter: output peak stays below this (AAC adds a little)
FIR_TAPS = 1025
VOWELS = ((800, 1200), (400, 2000), (300, 2300), (500, 900), (350, 800))   # a e i o u


# --- building blocks (all mono float64 [n]) ---------------------------------------------

def times(n: int, sr: int) -> np.ndarray:
    return np.arange(n) / sr


def harmonics(f0: np.ndarray, sr: int, amps) -> np.ndarray:
    """Sum of harmonics k·f0(t) with amplitude amps[k-1], dropped above 0.45·sr."""
    z = np.exp(2j * np.pi * np.cumsum(f0) / sr)               # e^{i·phase}, [n]
    zk, out = z.copy(), np.zeros(len(z))
    for k, a in enumerate(amps, start=1):                     # e^{i·k·phase} = z^k
        out += a * zk.imag * (k * f0 < 0.45 * sr)
        zk *= z
    return out


def shape(x: np.ndarray, sr: int, gain) -> np.ndarray:
    """Filter x in the frequency domain by gain(frequency in Hz)."""
    size = 1 << int(np.ceil(np.log2(len(x))))                 # fast FFT length
    f = np.fft.rfftfreq(size, 1 / sr)
    return np.fft.irfft(np.fft.rfft(x, size) * gain(f), size)[:len(x)]


def band(lo: float, hi: float, order: int = 2):
    """Smooth band-pass gain: Butterworth-like magnitude from lo to hi Hz."""
    return lambda f: 1 / ((1 + (lo / np.maximum(f, 1e-3)) ** (2 * order))
                          * (1 + (f / hi) ** (2 * order))) ** 0.5


def peaks(centres, width: float):
    """Formant-like gain: Gaussian bumps at `centres` Hz, `width` Hz wide, 1/k weights."""
    return lambda f: sum(np.exp(-0.5 * ((f - c) / width) ** 2) / (k + 1)
                         for k, c in enumerate(centres))


def fade(n: int, sr: int, seconds: float = 0.05) -> np.ndarray:
    """Ones with raised-cosine ramps at both ends (no clicks)."""
    m = max(1, min(n // 2, int(seconds * sr)))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / m)
    env = np.ones(n)
    env[:m], env[n - m:] = ramp, ramp[::-1]
    return env


def place(out: np.ndarray, onset: float, sound: np.ndarray, sr: int) -> None:
    """Add `sound` into `out` starting at `onset` seconds (cut at the end)."""
    i = round(onset * sr)
    if 0 <= i < len(out):
        m = min(len(sound), len(out) - i)
        out[i:i + m] += sound[:m]


def burst(rng, sr: int, seconds: float, lo: float, hi: float, tau: float) -> np.ndarray:
    """A noise burst band-limited to [lo, hi] Hz with exponential decay tau."""
    n = int(seconds * sr)
    return shape(rng.standard_normal(n), sr, band(lo, hi)) * np.exp(-times(n, sr) / tau)


def ring(sr: int, seconds: float, freqs, tau: float) -> np.ndarray:
    """Decaying sinusoids (bells, glass): partials at `freqs` Hz."""
    t = times(int(seconds * sr), sr)
    return sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate(freqs)) * np.exp(-t / tau)


def passing(t: np.ndarray, t_mid: float, width: float) -> np.ndarray:
    """Loudness of something passing by, peaking at t_mid."""
    return 1 / (1 + ((t - t_mid) / width) ** 2)


def doppler(t: np.ndarray, t_mid: float, width: float, depth: float = 0.05) -> np.ndarray:
    """Pitch factor: higher while approaching, lower while receding."""
    return 1 - depth * np.tanh((t - t_mid) / width)


# --- one function per class: (event, n samples, sample rate, rng) -> mono [n] ----------
# t = 0 is where the sound begins: `ev.lead` seconds before the event comes into view.

def _engine(t, sr, rng, f0, n_harm, tilt, mid, width, noise_band, noise_mix):
    f = f0 * doppler(t, mid, width) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    tone = harmonics(f, sr, [k ** -tilt for k in range(1, n_harm + 1)])
    noise = shape(rng.standard_normal(len(t)), sr, band(*noise_band))
    mix = tone / np.abs(tone).max() + noise_mix * noise / np.abs(noise).max()
    return mix * passing(t, mid, width)


def car_pass(ev, n, sr, rng):
    t, d = times(n, sr), ev.end - ev.start
    return _engine(t, sr, rng, rng.uniform(38, 55), 14, 1.0, d / 2, d / 5, (300, 2500), 0.8)


def truck_pass(ev, n, sr, rng):
    t, d = times(n, sr), ev.end - ev.start
    out = _engine(t, sr, rng, rng.uniform(24, 32), 24, 0.6, d / 2, d / 4, (40, 400), 1.0)
    if rng.random() < 0.6:                                  # air-brake hiss
        place(out, rng.uniform(0.3, 0.7) * d, 0.6 * burst(rng, sr, 0.6, 3000, 9000, 0.2), sr)
    return out


def motorcycle_pass(ev, n, sr, rng):
    t, d = times(n, sr), ev.end - ev.start
    rev = 1 + 0.25 * ((t * rng.uniform(0.6, 1.0)) % 1)      # gear changes: sawtooth rpm
    f0 = rng.uniform(80, 110) * rev
    tone = harmonics(f0 * doppler(t, ev.lead + d / 2, d / 4), sr, [k ** -0.7 for k in range(1, 30)])
    return tone * passing(t, ev.lead + d / 2, d / 3 + ev.lead / 2)


def emergency_vehicle(ev, n, sr, rng):
    t, d = times(n, sr), ev.end - ev.start
    mid = ev.lead + d / 2
    period = rng.uniform(2.0, 3.5)                           # wail: slow up-down sweep
    f = (950 + 350 * np.sin(2 * np.pi * t / period)) * doppler(t, mid, d / 3, 0.04)
    siren = harmonics(f, sr, [1.0, 0.0, 0.35, 0.0, 0.15])    # odd harmonics: square-ish
    rumble = shape(rng.standard_normal(n), sr, band(40, 300))
    loud = np.clip(passing(t, mid, (d + ev.lead) / 3), 0.15, 1)
    return (siren + 0.3 * rumble / np.abs(rumble).max()) * loud


def pedestrian(ev, n, sr, rng):
    out = np.zeros(n)
    for onset in step_times(ev):                             # in step with the drawn legs
        step = rng.uniform(0.6, 1) * burst(rng, sr, 0.12, 150, 3000, 0.025)       # heel
        place(out, onset, step, sr)
        place(out, onset + 0.07, 0.5 * burst(rng, sr, 0.08, 400, 4000, 0.015), sr)  # toe
    return out


def dog_bark(ev, n, sr, rng):
    out, f0 = np.zeros(n), rng.uniform(350, 600)
    for onset in bark_times(ev):                             # in step with the drawn head
        m = int(rng.uniform(0.12, 0.2) * sr)
        t = times(m, sr)
        f = f0 * (1.3 - 0.5 * t / t[-1])                     # pitch falls within a bark
        voice = harmonics(f, sr, [1, 0.8, 0.6, 0.4, 0.3, 0.2]) + 0.4 * rng.standard_normal(m)
        voice = shape(voice, sr, peaks((rng.uniform(700, 900), rng.uniform(1600, 2000)), 250))
        place(out, onset, voice * np.exp(-t / 0.06) * fade(m, sr, 0.005), sr)
    return out


def door(ev, n, sr, rng):
    d, out = ev.end - ev.start, np.zeros(n)
    m = int(0.8 * sr)                                         # creak: stick-slip pulses
    t = times(m, sr)
    rate = rng.uniform(25, 45) + 40 * t + 8 * np.sin(2 * np.pi * 3 * t)
    pulses = (np.diff(np.floor(np.cumsum(rate) / sr), prepend=0) > 0).astype(float)
    creak = shape(pulses, sr, peaks((rng.uniform(500, 800), rng.uniform(1500, 2200)), 200))
    place(out, 0.02 * d, creak / np.abs(creak).max() * 0.6 * fade(m, sr, 0.1), sr)
    k = int(0.4 * sr)                                         # slam: low thump + knock
    t = times(k, sr)
    slam = np.sin(2 * np.pi * rng.uniform(60, 90) * t) * np.exp(-t / 0.08)
    slam += 0.5 * burst(rng, sr, 0.4, 100, 1500, 0.03)
    place(out, DOOR_SLAM * d, slam, sr)
    return out


def bicycle(ev, n, sr, rng):
    d, out = ev.end - ev.start, np.zeros(n)
    base = rng.uniform(2800, 3600)
    for onset in rng.uniform(0.1, 0.7, size=rng.integers(1, 3)) * d:
        for strike in (0.0, 0.16):                            # "ding-ding"
            place(out, onset + strike, ring(sr, 0.6, (base, base * 1.48, base * 2.7), 0.2), sr)
    ticks = np.zeros(n)                                        # freewheel ticking
    for onset in np.arange(0, n / sr, 1 / rng.uniform(7, 10)):
        place(ticks, onset, burst(rng, sr, 0.01, 2000, 8000, 0.002), sr)
    return out + 0.15 * ticks


def people_talking(ev, n, sr, rng):
    """Two voices taking turns: syllables of harmonics through vowel formants."""
    out, t, syll = np.zeros(n), 0.0, int(0.22 * sr)
    voices = (rng.uniform(105, 140), rng.uniform(190, 240))
    who = int(rng.integers(2))
    while t < n / sr - 0.25:
        turn_end = t + rng.uniform(0.8, 2.2)
        f0 = voices[who]
        while t < min(turn_end, n / sr - 0.25):
            tt = times(syll, sr)
            f = f0 * (1 + 0.08 * np.sin(np.pi * tt / tt[-1]) + 0.01 * rng.standard_normal())
            src = harmonics(f, sr, [k ** -1.2 for k in range(1, 25)])
            vowel = VOWELS[int(rng.integers(len(VOWELS)))]
            s = shape(src, sr, peaks((*vowel, 2600), 120)) * np.sin(np.pi * tt / tt[-1])
            place(out, t, s / (np.abs(s).max() + 1e-9) * rng.uniform(0.5, 1), sr)
            t += rng.uniform(0.2, 0.32)
        t += rng.uniform(0.1, 0.4)
        who = 1 - who
    return out


def horn_offscreen(ev, n, sr, rng):
    t, f1 = times(n, sr), rng.uniform(380, 450)
    tone = harmonics(np.full(n, f1), sr, [1, 0.5, 0.3]) + harmonics(np.full(n, f1 * 1.26), sr,
                                                                  [1, 0.5, 0.3])
    gate = np.ones(n)
    if n / sr > 0.9 and rng.random() < 0.5:                   # two honks
        gate[(t > 0.4 * n / sr) & (t < 0.55 * n / sr)] = 0
    return tone * gate


def birds(ev, n, sr, rng):
    out, t = np.zeros(n), rng.uniform(0, 0.3)
    while t < n / sr - 0.2:
        for _ in range(rng.integers(3, 7)):                   # a phrase of chirps
            m = int(rng.uniform(0.05, 0.12) * sr)
            tt = times(m, sr)
            f = rng.uniform(5000, 7000) - rng.uniform(1500, 3000) * tt / tt[-1]
            place(out, t, harmonics(f, sr, [1, 0.2]) * np.sin(np.pi * tt / tt[-1]), sr)
            t += rng.uniform(0.1, 0.18)
        t += rng.uniform(0.3, 1.0)
    return out


def aircraft(ev, n, sr, rng):
    t = times(n, sr)
    rumble = shape(rng.standard_normal(n), sr, band(50, 500))
    whine = np.sin(2 * np.pi * rng.uniform(2000, 2800) * t * (1 - 0.01 * t / t[-1]))
    swell = np.sin(np.pi * t / t[-1]) ** 2
    return (rumble / np.abs(rumble).max() + 0.05 * whine) * swell


def glass_break(ev, n, sr, rng):
    d, out = ev.end - ev.start, np.zeros(n)
    hit = GLASS_HIT * d
    place(out, hit, burst(rng, sr, 0.15, 1500, 12000, 0.03), sr)
    for _ in range(rng.integers(25, 45)):                      # falling shards tinkle
        f = rng.uniform(3000, 9000)
        onset = hit + rng.exponential(0.35)
        place(out, onset, rng.uniform(0.4, 1.0) * ring(sr, 0.2, (f, f * 1.6), 0.05), sr)
    return out


def crash(ev, n, sr, rng):
    d, t = ev.end - ev.start, times(n, sr)
    hit = CRASH_HIT * d
    engine = _engine(t, sr, rng, rng.uniform(45, 60), 12, 1.0, hit, d / 5, (300, 2500), 0.8)
    engine *= 0.4 * (t < hit)
    out = engine
    screech_n = int(0.6 * sr)                                  # tyres just before impact
    ts = times(screech_n, sr)
    screech = harmonics(rng.uniform(1500, 2200) * (1 + 0.03 * np.sin(2 * np.pi * 13 * ts)), sr,
                        [1, 0.4, 0.2]) * fade(screech_n, sr, 0.1)
    place(out, hit - 0.6, 0.5 * screech, sr)
    m = int(1.2 * sr)
    tb = times(m, sr)
    boom = np.sin(2 * np.pi * rng.uniform(40, 70) * tb) * np.exp(-tb / 0.25)
    metal = shape(rng.standard_normal(m), sr, peaks((420, 1150, 2300, 3400), 90))
    metal *= np.exp(-tb / 0.3)
    place(out, hit, boom + 1.5 * metal / np.abs(metal).max(), sr)
    return out


def scream(ev, n, sr, rng):
    t = times(n, sr)
    contour = np.clip(np.sin(np.pi * np.linspace(0, 1, n)), 0, None)   # n = 1 at a file's end
    f = rng.uniform(480, 600) * (1 + 0.5 * contour) * (1 + 0.03 * np.sin(2 * np.pi * 6 * t))
    voice = harmonics(f, sr, [k ** -0.8 for k in range(1, 15)]) + 0.1 * rng.standard_normal(n)
    voice = shape(voice, sr, peaks((1000, 1500, 2800), 200))
    return voice * contour ** 0.5 * fade(n, sr, 0.08)


SOUNDS = {name: globals()[name] for name in LEVEL}            # label -> sound function


def event_audio(ev: Event, sr: int, channels: int, x: float | None = None) -> np.ndarray:
    """One event's sound [channels, n], from its audible start (start - lead) to its end.

    `x` (share of the frame width) places a source that stays put; default anchor(ev).
    """
    n = round((ev.end - ev.start + ev.lead) * sr)
    rng = np.random.default_rng([ev.seed, 2])
    y = SOUNDS[ev.label](ev, n, sr, rng)
    y = y * fade(n, sr, 0.03) / (np.abs(y).max() + 1e-9) * LEVEL[ev.label] * rng.uniform(0.7, 1.3)
    if channels == 1:
        return y[None].astype(np.float32)
    theta = (pan(ev, times(n, sr), x) + 1) * np.pi / 4         # constant-power pan, [n]
    return (np.stack([np.cos(theta), np.sin(theta)]) * y * 2 ** 0.5).astype(np.float32)


MOVING = {"car_pass", "truck_pass", "motorcycle_pass", "emergency_vehicle", "pedestrian",
          "dog_bark", "bicycle", "scream"}                  # they cross the frame


def pan(ev: Event, t: np.ndarray, x: float | None = None) -> np.ndarray:
    """Stereo position in [-1, 1]: follows moving things, off-screen side during a lead-in."""
    if ev.label in MOVING:
        progress = np.clip((t - ev.lead) / (ev.end - ev.start), 0, 1)
        return ev.direction * (2 * progress - 1)
    return np.full(len(t), 2 * (anchor(ev) if x is None else x) - 1)


# --- the ambient bed, streamed --------------------------------------------------------

def fir(sr: int, gain, taps: int = FIR_TAPS) -> np.ndarray:
    """Linear-phase FIR [taps] with magnitude gain(f), scaled to unit RMS gain on white noise."""
    f = np.fft.rfftfreq(taps, 1 / sr)
    h = np.roll(np.fft.irfft(gain(f), taps), taps // 2) * np.hanning(taps)
    return h / np.sqrt((h ** 2).sum())


class Ambient:
    """Traffic hum and wind (louder by day), rain (when it rains) and mic hiss, per chunk."""

    def __init__(self, rec: Recording, sr: int, channels: int):
        self.rec, self.sr, self.channels = rec, sr, channels
        self.filters = np.stack([fir(sr, band(30, 250, 1)), fir(sr, band(400, 10000, 1))])
        self.tail = np.zeros((2, channels, FIR_TAPS - 1))     # filter state across chunks
        self.spectra = {}                                     # FFT size -> filter spectra

    def chunk(self, index: int, t0: float, n: int) -> np.ndarray:
        """Chunk `index` of n samples starting at t0 seconds -> [channels, n]."""
        rng = np.random.default_rng([self.rec.seed, index, 1])
        white = rng.standard_normal((3, self.channels, n))
        x = np.concatenate([self.tail, white[:2]], axis=-1)        # [2, C, taps-1+n]
        self.tail = x[..., x.shape[-1] - (FIR_TAPS - 1):]
        size = 1 << int(np.ceil(np.log2(x.shape[-1] + FIR_TAPS)))
        if size not in self.spectra:
            self.spectra[size] = np.fft.rfft(self.filters, size)[:, None]
        spec = np.fft.rfft(x, size) * self.spectra[size]
        hum, rain = np.fft.irfft(spec, size)[..., FIR_TAPS - 1:FIR_TAPS - 1 + n]
        t = t0 + times(n, self.sr)
        day = HUM_RMS[0] + (HUM_RMS[1] - HUM_RMS[0]) * self.rec.daylight(t)
        return day * hum + RAIN_RMS * self.rec.rain_level(t) * rain + HISS_RMS * white[2]


def limit(x: np.ndarray) -> np.ndarray:
    """Soft limiter: transparent for quiet sound, never above CEILING."""
    return (CEILING * np.tanh(x / CEILING)).astype(np.float32)
