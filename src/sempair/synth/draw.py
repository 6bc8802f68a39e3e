"""Frames: a fixed camera background, day/night light, rain, and one sprite per event.

All drawing is numpy slicing on float32 frames [H, W, 3] in [0, 1]. Positions are shares
of the frame (x of W, y of H); sizes are in units of the frame height `u`, so shapes keep
their proportions at any resolution. Sprites are lit by the scene light; lamps, windows,
headlights and warning lights glow by themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .scene import (
    CRASH_HIT,
    DOOR_OPEN,
    DOOR_SLAM,
    GLASS_HIT,
    Event,
    Recording,
    anchor,
    bark_times,
    step_period,
)

# ground plan, shares of the frame height (the camera looks across a street)
HORIZON = 0.55                 # building base = far sidewalk top
FAR_FEET, FAR_LANE = 0.615, 0.725
CENTRE_LINE = 0.77
NEAR_LANE, BIKE_LANE = 0.865, 0.895
NEAR_FEET = 0.975
ROAD = (0.63, 0.90)
FAR_SCALE = 0.8                # things on the far side look smaller

PIXEL_NOISE = (2.5, 6.0)       # sensor noise std, 0..255 levels, day .. night
RAIN_DARKEN = 0.3              # frame brightness lost at full rain
RAIN_STREAKS = 0.003           # streaks per pixel per frame at full rain
FLASH_HZ = 3.0                 # emergency lights swap colour this often per second


@dataclass(frozen=True)
class CameraLook:
    """A fixed camera's scene; colours are RGB in [0, 1], x positions shares of W."""

    sky: tuple                 # (zenith, horizon)
    wall: tuple
    building: tuple            # (x0, x1, top y)
    door_x: float
    glass_x: float             # the shop window that breaks
    lamp_x: float
    tree_x: float
    road: tuple
    walk: tuple


CAMERA_LOOKS = (
    CameraLook(sky=((0.35, 0.55, 0.85), (0.75, 0.85, 0.95)), wall=(0.62, 0.42, 0.35),
               building=(0.05, 0.62, 0.12), door_x=0.18, glass_x=0.42, lamp_x=0.74,
               tree_x=0.88, road=(0.28, 0.28, 0.30), walk=(0.62, 0.60, 0.56)),
    CameraLook(sky=((0.45, 0.6, 0.8), (0.85, 0.85, 0.88)), wall=(0.78, 0.76, 0.68),
               building=(0.38, 0.97, 0.05), door_x=0.85, glass_x=0.6, lamp_x=0.2,
               tree_x=0.08, road=(0.33, 0.31, 0.30), walk=(0.70, 0.66, 0.60)),
)
WINDOW, WINDOW_LIT = (0.45, 0.55, 0.65), (0.95, 0.8, 0.45)
GLASS, DOOR = (0.55, 0.7, 0.8), (0.40, 0.25, 0.15)
SKIN = ((0.95, 0.8, 0.65), (0.75, 0.55, 0.4), (0.45, 0.3, 0.2))
HEADLIGHT, LAMP = (1.0, 0.95, 0.75), (1.0, 0.85, 0.5)


class Canvas:
    """One frame [H, W, 3] plus the light it is drawn under."""

    def __init__(self, img: np.ndarray, light: float, night: float, camera: int = 0):
        self.img, self.light, self.night, self.camera = img, light, night, camera
        self.H, self.W = img.shape[:2]
        self.u = float(self.H)

    def rect(self, x0, y0, x1, y1, color, lit=True):
        xa, xb = max(round(x0), 0), min(round(x1), self.W)
        ya, yb = max(round(y0), 0), min(round(y1), self.H)
        if xa < xb and ya < yb:
            self.img[ya:yb, xa:xb] = np.asarray(color) * (self.light if lit else 1)

    def ellipse(self, cx, cy, rx, ry, color, lit=True, alpha=1.0):
        xa, xb = max(int(cx - rx), 0), min(int(cx + rx) + 1, self.W)
        ya, yb = max(int(cy - ry), 0), min(int(cy + ry) + 1, self.H)
        if xa >= xb or ya >= yb:
            return
        yy, xx = np.ogrid[ya:yb, xa:xb]
        inside = ((xx + 0.5 - cx) / max(rx, 0.5)) ** 2 + ((yy + 0.5 - cy) / max(ry, 0.5)) ** 2
        mask = (inside <= 1)[..., None] * alpha                  # [h, w, 1]
        patch = self.img[ya:yb, xa:xb]
        patch += mask * (np.asarray(color) * (self.light if lit else 1) - patch)

    def dot(self, x, y, color, lit=False):
        """A particle: a square of about 1.5% of the frame height (at least 1 px)."""
        size = max(1.0, 0.015 * self.u)
        self.rect(x, y, x + size, y + size, color, lit)

    def glow(self, cx, cy, r, color, strength):
        """Additive soft light (only visible where it is dark)."""
        xa, xb = max(int(cx - r), 0), min(int(cx + r) + 1, self.W)
        ya, yb = max(int(cy - r), 0), min(int(cy + r) + 1, self.H)
        if xa < xb and ya < yb and strength > 0:
            yy, xx = np.ogrid[ya:yb, xa:xb]
            fall = np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2, 0, 1) ** 2
            self.img[ya:yb, xa:xb] += strength * fall[..., None] * np.asarray(color)


# --- the fixed background ------------------------------------------------------------

@lru_cache(maxsize=8)
def background(camera: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(day [H, W, 3], glow [H, W, 3]): the scene in daylight, and what lights up at night."""
    cam, H, W = CAMERA_LOOKS[camera], height, width
    u = float(H)
    y = (np.arange(H) / H)[:, None, None]
    day = np.zeros((H, W, 3), np.float32)
    day[:] = np.asarray(cam.sky[0]) + (np.asarray(cam.sky[1]) - cam.sky[0]) * y / HORIZON
    c = Canvas(day, 1.0, 0.0)
    glow = np.zeros_like(day)
    g = Canvas(glow, 1.0, 0.0)
    c.ellipse(cam.tree_x * W, 0.38 * H, 0.16 * u, 0.14 * u, (0.2, 0.45, 0.2))     # tree
    c.rect(cam.tree_x * W - 0.02 * u, 0.45 * H, cam.tree_x * W + 0.02 * u, FAR_FEET * H,
           (0.35, 0.25, 0.15))
    x0, x1, top = cam.building
    c.rect(x0 * W, top * H, x1 * W, HORIZON * H, cam.wall)
    rng = np.random.default_rng(camera)
    for wy in np.arange(top + 0.05, 0.36, 0.09):                                  # windows
        for wx in np.arange(x0 + 0.04, x1 - 0.06, 0.09):
            box = (wx * W, wy * H, wx * W + 0.06 * u, wy * H + 0.06 * u)
            c.rect(*box, WINDOW)
            if rng.random() < 0.5:
                g.rect(*box, np.asarray(WINDOW_LIT) * 0.7)
    c.rect(cam.glass_x * W - 0.1 * u, 0.41 * H, cam.glass_x * W + 0.1 * u, 0.52 * H, GLASS)
    c.rect(cam.door_x * W - 0.045 * u, HORIZON * H - 0.17 * u, cam.door_x * W + 0.045 * u,
           HORIZON * H, DOOR)
    c.rect(0, HORIZON * H, W, ROAD[0] * H, cam.walk)                                # walks
    c.rect(0, ROAD[0] * H, W, ROAD[1] * H, cam.road)                                # road
    c.rect(0, ROAD[1] * H, W, H, cam.walk)
    c.rect(0, ROAD[0] * H, W, ROAD[0] * H + max(1, 0.01 * u), (0.5, 0.5, 0.5))     # kerb
    for dx in np.arange(0, W, 0.2 * u):                                             # dashes
        c.rect(dx, CENTRE_LINE * H, dx + 0.1 * u, CENTRE_LINE * H + max(1, 0.012 * u),
               (0.85, 0.85, 0.8))
    lx = cam.lamp_x * W                                                             # lamp
    c.rect(lx - 0.012 * u, 0.28 * H, lx + 0.012 * u, FAR_FEET * H, (0.2, 0.2, 0.22))
    c.rect(lx - 0.03 * u, 0.26 * H, lx + 0.03 * u, 0.29 * H, (0.3, 0.3, 0.3))
    g.glow(lx, 0.3 * H, 0.35 * u, LAMP, 0.6)
    g.rect(lx - 0.03 * u, 0.26 * H, lx + 0.03 * u, 0.29 * H, LAMP)
    day += rng.normal(0, 0.015, day.shape).astype(np.float32)                      # texture
    return day, glow


# --- sprites ---------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def look(seed: int) -> dict:
    """An event's own colours and placement, from its seed."""
    rng = np.random.default_rng([seed, 1])
    return {"color": tuple(rng.uniform(0.1, 0.9, 3)), "color2": tuple(rng.uniform(0.1, 0.6, 3)),
            "skin": SKIN[int(rng.integers(len(SKIN)))], "near": bool(rng.random() < 0.4),
            "y": float(rng.uniform(0.08, 0.3)), "scale": float(rng.uniform(0.9, 1.1)),
            "shards": rng.uniform(-1, 1, (24, 2))}


def across(c: Canvas, ev: Event, t: float, length: float) -> float:
    """Left edge of something `length` px long that crosses the frame during the event."""
    p = t / (ev.end - ev.start)
    x = -length + p * (c.W + length)
    return x if ev.direction > 0 else c.W - length - x


def vehicle(c: Canvas, ev, t, length, height, color, cabin=(0.25, 0.75)):
    """A box on wheels driving across its lane; returns (left x, ground y, scale).

    Traffic keeps right: left-to-right in the near lane, right-to-left in the far one.
    """
    far = ev.direction < 0
    s = FAR_SCALE if far else 1.0
    length, height, r = length * s * c.u, height * s * c.u, 0.03 * s * c.u
    y = (FAR_LANE if far else NEAR_LANE) * c.H
    x = across(c, ev, t, length)
    c.rect(x, y - r - height, x + length, y - r, color)
    if cabin:
        a, b = x + cabin[0] * length, x + cabin[1] * length
        c.rect(a, y - r - height - 0.06 * s * c.u, b, y - r - height, (0.25, 0.3, 0.38))
    for w in (0.18, 0.82):
        c.ellipse(x + w * length, y - r, r, r, (0.08, 0.08, 0.08))
    front = x + length if ev.direction > 0 else x
    c.rect(front - 0.02 * c.u, y - r - 0.6 * height, front + 0.02 * c.u, y - r - 0.4 * height,
           HEADLIGHT, lit=False)
    c.glow(front + ev.direction * 0.1 * c.u, y - r - 0.5 * height, 0.15 * c.u, HEADLIGHT,
           0.5 * c.night)
    return x, y, s


def figure(c: Canvas, x, feet, height, body, skin, t=0.0, period=0.0, arms_up=False,
           arm_out=0.0):
    """A person: legs swinging with `period` (0 = standing), torso, head, optional arms."""
    h, w = height, 0.3 * height
    swing = 0.12 * h * np.cos(np.pi * (t - 0.1) / period) if period else 0.0
    for leg in (-1, 1):
        lx = x + leg * swing
        c.rect(lx - 0.06 * h, feet - 0.45 * h, lx + 0.06 * h, feet, (0.15, 0.15, 0.2))
    c.rect(x - w / 2, feet - 0.8 * h, x + w / 2, feet - 0.42 * h, body)
    c.ellipse(x, feet - 0.88 * h, 0.1 * h, 0.11 * h, skin)
    if arms_up:
        for side in (-1, 1):
            c.rect(x + side * w / 2 - 0.04 * h, feet - 1.05 * h, x + side * w / 2 + 0.04 * h,
                   feet - 0.75 * h, body)
    if arm_out:
        c.rect(min(x, x + arm_out * h), feet - 0.78 * h, max(x, x + arm_out * h),
               feet - 0.64 * h, body)


def walker(c, ev, t, height, body, period, far_only=False, **kw):
    """A figure walking across its sidewalk; returns (x, feet y, height) in pixels."""
    lk = look(ev.seed)
    near = lk["near"] and not far_only
    h = height * (1.0 if near else FAR_SCALE) * c.u * lk["scale"]
    x, feet = across(c, ev, t, 0.4 * h) + 0.2 * h, (NEAR_FEET if near else FAR_FEET) * c.H
    figure(c, x, feet, h, body, lk["skin"], t, period, **kw)
    return x, feet, h


def car_pass(c, ev, t):
    vehicle(c, ev, t, 0.32, 0.08, look(ev.seed)["color"])


def truck_pass(c, ev, t):
    x, y, s = vehicle(c, ev, t, 0.7, 0.2, look(ev.seed)["color2"], cabin=None)
    cab = 0.16 * s * c.u
    front = x + 0.7 * s * c.u if ev.direction > 0 else x - cab
    c.rect(front, y - 0.03 * s * c.u - 0.16 * s * c.u, front + cab, y - 0.03 * s * c.u,
           look(ev.seed)["color"])


def motorcycle_pass(c, ev, t):
    x, y, s = vehicle(c, ev, t, 0.18, 0.04, (0.15, 0.15, 0.15), cabin=None)
    h = 0.14 * s * c.u
    cx = x + 0.5 * 0.18 * s * c.u
    c.rect(cx - 0.15 * h, y - 0.07 * s * c.u - 0.55 * h, cx + 0.15 * h, y - 0.07 * s * c.u,
           (0.1, 0.1, 0.12))
    c.ellipse(cx, y - 0.07 * s * c.u - 0.65 * h, 0.16 * h, 0.16 * h, look(ev.seed)["color"])


def emergency_vehicle(c, ev, t):
    x, y, s = vehicle(c, ev, t, 0.40, 0.15, (0.95, 0.95, 0.95), cabin=None)
    length, top = 0.40 * s * c.u, y - 0.03 * s * c.u - 0.15 * s * c.u
    c.rect(x, top + 0.06 * s * c.u, x + length, top + 0.09 * s * c.u, (0.85, 0.1, 0.1))
    red_on = int(t * FLASH_HZ * 2) % 2 == 0
    mid, bar = x + length / 2, 0.04 * s * c.u
    for side, color, on in ((-1, (1.0, 0.1, 0.1), red_on), (1, (0.15, 0.3, 1.0), not red_on)):
        cx = mid + side * 0.06 * s * c.u
        c.rect(cx - 0.05 * s * c.u, top - bar, cx + 0.05 * s * c.u, top,
               color if on else np.asarray(color) * 0.25, lit=False)
        if on:
            c.glow(cx, top - bar / 2, 0.2 * c.u, color, 0.3 + 0.5 * c.night)


def pedestrian(c, ev, t):
    walker(c, ev, t, 0.2, look(ev.seed)["color"], step_period(ev))


def silent_passerby(c, ev, t):
    """Grey coat and hat, long slow strides, no sound."""
    x, feet, h = walker(c, ev, t, 0.21, (0.3, 0.3, 0.32), step_period(ev) * 1.3, far_only=True)
    c.rect(x - 0.12 * h, feet - 1.02 * h, x + 0.12 * h, feet - 0.9 * h, (0.1, 0.1, 0.1))


def scream(c, ev, t):
    """Someone running with both arms up."""
    walker(c, ev, t, 0.2, (0.9, 0.15, 0.5), 0.22, far_only=True, arms_up=True)


def dog_bark(c, ev, t):
    lk = look(ev.seed)
    s = 1.0 if lk["near"] else FAR_SCALE
    length = 0.14 * s * c.u
    x = across(c, ev, t, length * 1.3)
    feet = (NEAR_FEET if lk["near"] else FAR_FEET) * c.H
    color = np.asarray(lk["color2"]) * 0.8 + 0.1
    barking = np.any((t - bark_times(ev) >= 0) & (t - bark_times(ev) < 0.15))
    body_y = feet - 0.06 * s * c.u
    c.ellipse(x + 0.65 * length, body_y, 0.5 * length, 0.22 * length, color)
    head_x = x + (1.2 * length if ev.direction > 0 else 0.1 * length)
    head_y = body_y - (0.35 if barking else 0.2) * length
    c.ellipse(head_x, head_y, 0.2 * length, 0.17 * length, color)
    if barking:
        c.rect(head_x - 0.08 * length, head_y + 0.05 * length, head_x + 0.08 * length,
               head_y + 0.15 * length, (0.05, 0.02, 0.02))
    swing = 0.1 * length * np.sin(2 * np.pi * 3 * t)
    for leg_x in (0.35, 0.95):
        lx = x + leg_x * length
        for sgn in (-1, 1):
            c.rect(lx + sgn * swing - 0.03 * length, body_y, lx + sgn * swing + 0.03 * length,
                   feet, color)


def door(c, ev, t):
    cam = CAMERA_LOOKS[c.camera]
    p = t / (ev.end - ev.start)
    opening = np.clip((p - DOOR_OPEN[0]) / (DOOR_OPEN[1] - DOOR_OPEN[0]), 0, 1)
    closing = np.clip((DOOR_SLAM - p) / 0.08, 0, 1)
    o = min(opening, closing)                                   # 0 shut .. 1 wide open
    cx, w, h, base = cam.door_x * c.W, 0.09 * c.u, 0.17 * c.u, HORIZON * c.H
    c.rect(cx - w / 2, base - h, cx + w / 2, base, (0.04, 0.03, 0.03))
    if o > 0.6:
        figure(c, cx, base, 0.15 * c.u, look(ev.seed)["color"], look(ev.seed)["skin"])
    c.rect(cx - w / 2, base - h, cx - w / 2 + max(1, w * (1 - 0.85 * o)), base, DOOR)


def bicycle(c, ev, t):
    lk = look(ev.seed)
    length, r = 0.2 * c.u, 0.04 * c.u
    y = BIKE_LANE * c.H
    x = across(c, ev, t, length)
    for w in (0.2, 0.8):
        c.ellipse(x + w * length, y - r, r, r, (0.1, 0.1, 0.1))
        c.ellipse(x + w * length, y - r, 0.5 * r, 0.5 * r, (0.6, 0.6, 0.6))
    c.rect(x + 0.2 * length, y - 1.6 * r, x + 0.8 * length, y - 1.2 * r, lk["color"])
    figure(c, x + 0.5 * length, y - 1.4 * r, 0.16 * c.u, lk["color2"], lk["skin"], t, 0.3)


def people_talking(c, ev, t):
    lk = look(ev.seed)
    cx, feet, h = anchor(ev) * c.W, FAR_FEET * c.H, 0.19 * FAR_SCALE * c.u
    talking = int(t * 3.5) % 2                                  # gestures swap ~3.5 times/s
    for side, body in ((-1, lk["color"]), (1, lk["color2"])):
        active = talking == (side > 0)                          # the one speaking gestures
        figure(c, cx + side * (0.07 + 0.015 * active) * c.u, feet, h, body, lk["skin"],
               arm_out=-side * 0.45 if active else 0.0)


def bird_flyby(c, ev, t):
    lk = look(ev.seed)
    x = across(c, ev, t, 0.06 * c.u) + 0.03 * c.u
    y = lk["y"] * c.H + 0.03 * c.u * np.sin(2 * np.pi * 0.7 * t)
    up = int(t * 8) % 2
    s = 0.03 * c.u
    c.rect(x - s, y - up * s * 0.6, x, y - up * s * 0.6 + max(1, 0.3 * s), (0.1, 0.1, 0.1))
    c.rect(x, y - up * s * 0.6, x + s, y - up * s * 0.6 + max(1, 0.3 * s), (0.1, 0.1, 0.1))
    c.rect(x - 0.3 * s, y, x + 0.3 * s, y + max(1, 0.4 * s), (0.1, 0.1, 0.1))


def cloud_shadow(c, ev, t):
    length = 1.2 * c.W
    cx = across(c, ev, t, length) + length / 2
    xx = (np.arange(c.W) - cx) / (0.5 * length)
    yy = (np.arange(c.H) / c.H - 0.6) / 0.6
    shade = np.clip(1.5 * (1 - xx[None] ** 2 - yy[:, None] ** 2), 0, 1)   # [H, W]
    c.img *= (1 - 0.35 * shade)[..., None]


def glass_break(c, ev, t):
    cam, lk = CAMERA_LOOKS[c.camera], look(ev.seed)
    hit = GLASS_HIT * (ev.end - ev.start)
    cx, cy, w, h = cam.glass_x * c.W, 0.465 * c.H, 0.1 * c.u, 0.055 * c.H
    if t < hit:
        return
    if t < hit + 0.15:                                            # flash
        c.rect(cx - w, cy - h, cx + w, cy + h, (1, 1, 1), lit=False)
        return
    c.rect(cx - w, cy - h, cx + w, cy + h, (0.05, 0.05, 0.07))    # hole, jagged edges
    for dx, dy in lk["shards"][:8]:
        c.rect(cx + dx * w, cy - h, cx + dx * w + 0.02 * c.u, cy - h + abs(dy) * h, GLASS)
    dt = t - hit                                                    # falling shards
    for dx, dy in lk["shards"]:
        c.dot(cx + dx * w * (1 + dt), min(cy + dy * h + c.u * dt ** 2, FAR_FEET * c.H),
              (0.8, 0.9, 1.0))


def crash(c, ev, t):
    cam, lk = CAMERA_LOOKS[c.camera], look(ev.seed)
    hit = CRASH_HIT * (ev.end - ev.start)
    s, post = FAR_SCALE, cam.lamp_x * c.W
    length, height, r = 0.32 * s * c.u, 0.08 * s * c.u, 0.03 * s * c.u
    from_left = cam.lamp_x > 0.5                                  # come from the far side
    travel = post + length if from_left else c.W - post + length
    p = min(t / hit, 1.0)
    front = post - (1 - p) * travel if from_left else post + (1 - p) * travel
    x = front - length if from_left else front
    y = FAR_LANE * c.H
    crumple = 0.25 * length if t >= hit else 0.0                  # bonnet pushed in
    x0, x1 = (x + crumple, x + length) if not from_left else (x, x + length - crumple)
    c.rect(x0, y - r - height, x1, y - r, lk["color"])
    c.rect(x0 + 0.25 * length, y - r - height - 0.06 * s * c.u, x1 - 0.25 * length,
           y - r - height, (0.25, 0.3, 0.38))
    for w in (0.18, 0.82):
        c.ellipse(x + w * length, y - r, r, r, (0.08, 0.08, 0.08))
    if t < hit:
        return
    dt = t - hit
    if dt < 0.25:                                                 # impact flash
        c.ellipse(post, y - height, 0.2 * c.u, 0.15 * c.u, (1.0, 0.7, 0.2), lit=False)
    c.ellipse(post, y - height - 0.1 * c.u * min(dt, 1.5), 0.06 * c.u * (1 + dt),
              0.05 * c.u * (1 + dt), (0.45, 0.45, 0.45), alpha=0.8)  # smoke
    for dx, dy in lk["shards"][:12]:                              # debris flies, then lies
        c.dot(post + dx * 0.4 * c.u * min(dt / 0.6, 1.0),
              min(y - height + dy * 0.1 * c.u + c.u * dt ** 2, y), (0.2, 0.2, 0.2))
    if int(dt * 3) % 2 == 0:                                      # hazard lights
        for hx in (x0, x1):
            c.rect(hx - 0.015 * c.u, y - r - 0.7 * height, hx + 0.015 * c.u, y - r - 0.4 * height,
                   (1.0, 0.6, 0.0), lit=False)


SPRITES = {"car_pass": car_pass, "truck_pass": truck_pass, "motorcycle_pass": motorcycle_pass,
           "emergency_vehicle": emergency_vehicle, "pedestrian": pedestrian,
           "dog_bark": dog_bark, "door": door, "bicycle": bicycle,
           "people_talking": people_talking, "silent_passerby": silent_passerby,
           "bird_flyby": bird_flyby, "cloud_shadow": cloud_shadow, "glass_break": glass_break,
           "crash": crash, "scream": scream}


def fixed_x(ev: Event, camera: int) -> float:
    """Where something that stays put is, as a share of the frame width (for stereo)."""
    cam = CAMERA_LOOKS[camera]
    spots = {"door": cam.door_x, "glass_break": cam.glass_x, "crash": cam.lamp_x}
    return spots.get(ev.label, anchor(ev))


def depth(ev: Event) -> int:
    """Paint order, back to front: building, far walk, far lane, near lane, near walk, sky."""
    if ev.label in ("door", "glass_break"):
        return 0
    if ev.label in ("pedestrian", "dog_bark"):
        return 4 if look(ev.seed)["near"] else 1
    if ev.label in ("people_talking", "silent_passerby", "scream"):
        return 1
    if ev.label in ("car_pass", "truck_pass", "motorcycle_pass", "emergency_vehicle", "crash"):
        return 2 if ev.direction < 0 or ev.label == "crash" else 3
    if ev.label == "bicycle":
        return 4
    return 5 if ev.label == "bird_flyby" else 6                    # cloud shadow: on top


# --- a chunk of frames ---------------------------------------------------------------

def render(rec: Recording, t: np.ndarray, width: int, height: int,
           rng: np.random.Generator) -> np.ndarray:
    """Frames at times t [n] -> uint8 [n, H, W, 3]."""
    day, glow = background(rec.camera, width, height)
    light, night, rain = rec.light(t), 1 - rec.daylight(t), rec.rain_level(t)   # [n] each
    frames = np.empty((len(t), height, width, 3), np.float32)
    np.multiply(day[None], light.astype(np.float32)[:, None, None, None], out=frames)
    frames += glow[None] * night.astype(np.float32)[:, None, None, None]
    spans = [e for e in rec.events if e.visual_span and e.end > t[0] and e.start <= t[-1]]
    spans.sort(key=depth)
    for i, ti in enumerate(t):
        c = Canvas(frames[i], float(light[i]), float(night[i]), rec.camera)
        for ev in spans:
            if ev.start <= ti < ev.end:
                SPRITES[ev.label](c, ev, ti - ev.start)
        if rain[i] > 0:
            frames[i] *= 1 - RAIN_DARKEN * rain[i]
            _streaks(frames[i], rain[i], rng)
    sigma = (PIXEL_NOISE[0] + (PIXEL_NOISE[1] - PIXEL_NOISE[0]) * night).astype(np.float32)
    frames *= 255
    frames += _normal(rng, frames.shape) * sigma[:, None, None, None] + 0.5
    np.clip(frames, 0, 255, out=frames)
    return frames.astype(np.uint8)


def _normal(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Standard normal noise in 256 levels: random bytes through the inverse CDF (fast)."""
    n = int(np.prod(shape))
    words = rng.integers(0, 2**64 - 1, n // 8 + 1, np.uint64, endpoint=True)
    return np.take(NORMAL_LEVELS, words.view(np.uint8)[:n]).reshape(shape)


def _probit(p: np.ndarray) -> np.ndarray:
    """Inverse of the standard normal CDF, by bisection on erf (run once, 256 values)."""
    lo, hi = np.full(len(p), -8.0), np.full(len(p), 8.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        below = 0.5 * (1 + np.vectorize(math.erf)(mid / math.sqrt(2))) < p
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return ((lo + hi) / 2).astype(np.float32)


NORMAL_LEVELS = _probit((np.arange(256) + 0.5) / 256)      # [256]


def _streaks(img: np.ndarray, level: float, rng: np.random.Generator) -> None:
    """Short bright slanted lines where raindrops cross the frame."""
    H, W = img.shape[:2]
    n = int(RAIN_STREAKS * level * H * W)
    length = max(3, int(0.08 * H))
    x0, y0 = rng.uniform(0, W, n), rng.uniform(-length, H, n)
    k = np.arange(length)
    xs, ys = (x0[:, None] - 0.3 * k).astype(int), (y0[:, None] + k).astype(int)   # [n, len]
    ok = (xs >= 0) & (xs < W) & (ys >= 0) & (ys < H)
    img[ys[ok], xs[ok]] += 0.25
