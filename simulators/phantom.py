"""Procedural anatomy-like phantoms: water and bone thickness maps per body part.

A phantom is two line-integral maps over the detector: ``water_cm`` (soft tissue as
water-equivalent thickness, lungs and gas reduce it) and ``bone_cm`` (cortical-bone
equivalent thickness). The frame synthesiser turns them into transmission with
kV-dependent attenuation coefficients (see :mod:`simulators.frames`).

Anatomy is drawn in normalised coordinates (``y`` in [-1, 1] from top to bottom of the
image, ``x`` in the same unit, centred), so every body part fills the detector the same
way at any resolution. Maps are drawn at an internal resolution of at most
:data:`INTERNAL_MAX` pixels on the long side and resized bilinearly to the requested
shape, then cached per ``(part, shape)``. Every part except ``abdomen`` and ``pelvis``
leaves direct-exposure (unattenuated) areas around the body; those two still leave
strips at the sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: Longest side of the grid the anatomy is drawn on before resizing.
INTERNAL_MAX = 1024

#: A pixel belongs to the body when it holds at least this much water or bone (cm).
BODY_THRESHOLD_CM = 0.2


@dataclass(frozen=True)
class Phantom:
    """The attenuation maps of one body part at one shape (arrays are read-only).

    Attributes
    ----------
    name : str
        Canonical body-part name.
    water_cm, bone_cm : numpy.ndarray
        float32 (rows, cols) thickness maps in cm.
    body : numpy.ndarray
        bool (rows, cols), True where anything attenuates (the anatomy).
    """

    name: str
    water_cm: np.ndarray
    bone_cm: np.ndarray
    body: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.water_cm.shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Drawing primitives (all on the internal grid; x, y are 2-D float32 arrays)
# --------------------------------------------------------------------------------------------


def _chord(d2: np.ndarray) -> np.ndarray:
    """sqrt(1 - d^2) inside the unit ball, 0 outside: the normalised chord length."""
    return np.sqrt(np.clip(1.0 - d2, 0.0, None))


def _ellipse_r2(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float,
                angle_deg: float = 0.0) -> np.ndarray:
    """Normalised squared radius of (x, y) in an ellipse (1 on the rim)."""
    if angle_deg:
        t = np.deg2rad(angle_deg)
        c, s = np.cos(t), np.sin(t)
        u = (x - cx) * c + (y - cy) * s
        v = -(x - cx) * s + (y - cy) * c
    else:
        u, v = x - cx, y - cy
    return (u / ax) ** 2 + (v / ay) ** 2


def _segment_d2(x: np.ndarray, y: np.ndarray, p0: tuple[float, float],
                p1: tuple[float, float], radius: float) -> np.ndarray:
    """Squared distance to the segment p0-p1, normalised by ``radius`` (a capsule)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / ll, 0.0, 1.0)
    px, py = x - (x0 + t * dx), y - (y0 + t * dy)
    return (px * px + py * py) / (radius * radius)


def _capsule(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float],
             radius: float, depth_cm: float) -> np.ndarray:
    """Chord thickness (cm) through a cylinder of diameter ``depth_cm`` along p0-p1."""
    return depth_cm * _chord(_segment_d2(x, y, p0, p1, radius))


def _smooth_noise(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    """Zero-mean unit-variance smooth random texture (fixed per seed)."""
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    return n / max(float(n.std()), 1e-6)


def _trunk(x: np.ndarray, y: np.ndarray, half_width: float, depth_cm: float,
           top: float, shoulder: float = 0.3) -> np.ndarray:
    """An elliptic-cylinder trunk from ``top`` down, with rounded (elliptic) shoulders."""
    t = np.clip((top + shoulder - y) / shoulder, 0.0, None)
    w = half_width * np.sqrt(np.clip(1.0 - t * t, 0.0, None))
    return depth_cm * _chord((x / np.maximum(w, 1e-3)) ** 2) * (w > 1e-3)


def _box(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float,
         y1: float) -> tuple[slice, slice]:
    """Row and column slices of the grid covering [x0, x1] x [y0, y1]."""
    xs, ys = x[0, :], y[:, 0]
    c0, c1 = np.searchsorted(xs, x0), np.searchsorted(xs, x1, side="right")
    r0, r1 = np.searchsorted(ys, y0), np.searchsorted(ys, y1, side="right")
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def _vertebrae(x: np.ndarray, y: np.ndarray, y0: float, y1: float, width: float,
               height: float, bone_cm: float, cx: float = 0.0) -> np.ndarray:
    """A column of vertebral bodies (rounded boxes) with pedicles, from y0 to y1."""
    out = np.zeros_like(x)
    n = max(1, int((y1 - y0) / height))
    half = 0.5 * (y1 - y0) / n
    for k in range(n):
        yc = y0 + (k + 0.5) * (y1 - y0) / n
        w = width * (1.0 + 0.25 * k / max(n - 1, 1))
        rs, cs = _box(x, y, cx - 1.2 * w, cx + 1.2 * w, yc - half, yc + half)
        xb, yb = x[rs, cs], y[rs, cs]
        body = _chord(((xb - cx) / w) ** 4 + ((yb - yc) / (0.8 * half)) ** 4)
        o = out[rs, cs]
        o += bone_cm * np.sqrt(np.sqrt(body))
        for side in (-1.0, 1.0):
            o += 0.5 * bone_cm * _chord(_ellipse_r2(xb, yb, cx + side * 0.7 * w, yc, 0.18 * w,
                                                    0.4 * half))
    return out


def _arc_bones(x: np.ndarray, y: np.ndarray, side: float, y0: float, a: float, x_in: float,
               x_out: float, half_width: float, bone_cm: float) -> np.ndarray:
    """A rib-like arc ``y = y0 + a (|x| - x_in)^2`` on one side, between x_in and x_out."""
    out = np.zeros_like(x)
    lo, hi = (x_in, x_out) if side > 0 else (-x_out, -x_in)
    y_hi = y0 + a * (x_out - x_in) ** 2
    rs, cs = _box(x, y, lo, hi, min(y0, y_hi) - 2 * half_width, max(y0, y_hi) + 2 * half_width)
    xb, yb = x[rs, cs], y[rs, cs]
    d = (yb - (y0 + a * (np.abs(xb) - x_in) ** 2)) / half_width
    out[rs, cs] = bone_cm * _chord(d * d)
    return out


# --------------------------------------------------------------------------------------------
# Body parts
# --------------------------------------------------------------------------------------------


def _chest(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    water = _trunk(x, y, 0.80, 22.0, top=-0.78)
    water += _capsule(x, y, (0.0, -1.3), (0.0, -0.7), 0.17, 11.0)  # neck
    water = np.minimum(water, 22.0)
    lungs = np.zeros_like(x)
    for side, cx in ((-1, -0.34), (1, 0.34)):
        r2 = _ellipse_r2(x, y, cx, -0.08, 0.27, 0.56, angle_deg=side * 6.0)
        lungs += _chord(r2) ** 0.6
    # the frame is seen from the tube, as a PA chest lands on the panel: the patient's
    # left (the heart) on the image's left; the view's ImageHorizontalFlip turns it for display
    heart = _chord(_ellipse_r2(x, y, -0.09, 0.24, 0.27, 0.24, angle_deg=25.0))
    vessels = _smooth_noise(x.shape, max(1.0, x.shape[0] / 400), seed=11)
    lung_air = 13.0 * lungs * (1.0 - np.clip(1.6 * heart, 0.0, 1.0))
    lung_air *= 1.0 - 0.12 * np.clip(vessels, -2.0, 2.0)
    water = np.clip(water - lung_air, 0.0, None)
    water += 2.5 * _chord(_ellipse_r2(x, y, 0.0, -0.05, 0.12, 0.5))  # mediastinum
    bone = 2.6 * _vertebrae(x, y, -0.95, 1.0, 0.06, 0.09, 1.0)
    for side in (-1.0, 1.0):
        for k in range(10):
            bone += _arc_bones(x, y, side, -0.76 + 0.118 * k, 0.45 + 0.15 * k, 0.08,
                               0.72 - 0.01 * k, 0.022, 0.55)
        bone += _capsule(x, y, (side * 0.08, -0.70), (side * 0.48, -0.80), 0.025, 1.2)  # clavicle
        bone += _capsule(x, y, (side * 0.56, -0.78), (side * 0.66, -0.55), 0.05, 1.0)  # scapula
    return water, bone


def _skull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r2 = _ellipse_r2(x, y, 0.0, -0.08, 0.60, 0.76)
    water = 17.0 * _chord(r2)
    inner = _ellipse_r2(x, y, 0.0, -0.08, 0.60 * 0.92, 0.76 * 0.92)
    bone = 8.5 * (_chord(r2) - 0.92 * _chord(inner))
    bone = np.clip(bone, 0.0, None) * 1.6
    for cx in (-0.15, 0.15):  # orbits and maxillary sinuses (air)
        water -= 3.0 * _chord(_ellipse_r2(x, y, cx, 0.25, 0.12, 0.1))
        water -= 2.5 * _chord(_ellipse_r2(x, y, cx, 0.45, 0.1, 0.12))
    mandible = _ellipse_r2(x, y, 0.0, 0.45, 0.42, 0.35)
    jaw = (np.abs(np.sqrt(mandible) - 1.0) < 0.06) & (y > 0.55)
    bone += 1.5 * jaw
    water += _capsule(x, y, (0.0, 0.75), (0.0, 1.4), 0.25, 11.0)  # neck
    bone += 2.0 * _vertebrae(x, y, 0.85, 1.05, 0.07, 0.07, 0.8)
    bone += 1.2 * _chord(_ellipse_r2(x, y, 0.0, 0.15, 0.45, 0.08))  # skull base
    return np.clip(water, 0.0, None), bone


def _hand(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    water = 3.2 * _chord(_ellipse_r2(x, y, 0.0, 0.30, 0.34, 0.30)) ** 0.35
    water = np.maximum(water, _capsule(x, y, (0.0, 0.55), (0.0, 1.4), 0.26, 5.0))
    bone = _capsule(x, y, (-0.10, 0.65), (-0.12, 1.4), 0.06, 1.6)  # radius
    bone += _capsule(x, y, (0.12, 0.68), (0.13, 1.4), 0.045, 1.3)  # ulna
    bone += 0.9 * _chord(_ellipse_r2(x, y, 0.0, 0.56, 0.2, 0.07))  # carpals
    fingers = [(-0.40, 0.30, -0.70, -0.05, 0.075), (-0.21, 0.02, -0.30, -0.62, 0.07),
               (-0.06, 0.0, -0.07, -0.72, 0.07), (0.09, 0.02, 0.15, -0.66, 0.068),
               (0.24, 0.06, 0.36, -0.48, 0.06)]
    for x0, y0, x1, y1, rad in fingers:
        water = np.maximum(water, _capsule(x, y, (x0, y0), (x1, y1), rad, 2.2))
        # metacarpal then three phalanges along the ray
        bx0, by0 = 0.6 * x0, 0.45
        pts = [(bx0 + (x1 - bx0) * t, by0 + (y1 - by0) * t) for t in (0.0, 0.38, 0.62, 0.82, 0.96)]
        for (ax, ay), (cx, cy) in zip(pts[:-1], pts[1:]):
            gx, gy = ax + 0.08 * (cx - ax), ay + 0.08 * (cy - ay)
            hx, hy = cx - 0.08 * (cx - ax), cy - 0.08 * (cy - ay)
            bone += _capsule(x, y, (gx, gy), (hx, hy), 0.45 * rad, 1.1)
    return water, bone


def _abdomen(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    water = _trunk(x, y, 0.72, 24.0, top=-2.0)
    water += 1.5 * _chord(_ellipse_r2(x, y, -0.35, -0.7, 0.4, 0.3))  # liver
    rng = np.random.default_rng(7)
    for _ in range(14):  # bowel gas
        cx, cy = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.6)
        water -= rng.uniform(1.0, 3.5) * _chord(_ellipse_r2(x, y, cx, cy, rng.uniform(0.04, 0.12),
                                                             rng.uniform(0.03, 0.08),
                                                             rng.uniform(0, 180)))
    bone = 2.8 * _vertebrae(x, y, -1.0, 0.55, 0.08, 0.28, 1.0)
    bone += _pelvis_bones(x, y, shift=0.45)
    for side in (-1.0, 1.0):  # lower ribs
        for k in range(3):
            bone += _arc_bones(x, y, side, -0.95 + 0.14 * k, 0.5, 0.1, 0.68, 0.02, 0.5)
    return np.clip(water, 0.0, None), bone


def _pelvis_bones(x: np.ndarray, y: np.ndarray, shift: float = 0.0) -> np.ndarray:
    bone = np.zeros_like(x)
    for side in (-1.0, 1.0):
        ring = _ellipse_r2(x, y, side * 0.33, -0.05 + shift, 0.28, 0.33, angle_deg=side * 20)
        rim = np.exp(-((np.sqrt(ring) - 1.0) / 0.05) ** 2)
        wing = 1.0 / (1.0 + np.exp((y - (0.1 + shift)) / 0.04))
        bone += (1.8 * rim + 0.5 * _chord(ring)) * wing
        bone += 2.5 * _chord(_ellipse_r2(x, y, side * 0.42, 0.35 + shift, 0.1, 0.1))  # femoral head
        bone += _capsule(x, y, (side * 0.44, 0.38 + shift), (side * 0.58, 1.3 + shift), 0.07, 2.2)
        ob = _ellipse_r2(x, y, side * 0.18, 0.42 + shift, 0.1, 0.08)
        bone += 1.0 * np.exp(-((np.sqrt(ob) - 1.0) / 0.25) ** 2)  # obturator ring
    bone += 1.5 * _chord(_ellipse_r2(x, y, 0.0, 0.0 + shift, 0.13, 0.22))  # sacrum
    return bone


def _pelvis(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    water = _trunk(x, y, 0.78, 22.0, top=-2.0)
    water = np.maximum(water, _capsule(x, y, (-0.45, 0.6), (-0.5, 1.5), 0.3, 14.0))
    water = np.maximum(water, _capsule(x, y, (0.45, 0.6), (0.5, 1.5), 0.3, 14.0))
    bone = _pelvis_bones(x, y) + 2.8 * _vertebrae(x, y, -1.0, -0.15, 0.085, 0.28, 1.0)
    return water, bone


def _spine(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    water = _trunk(x, y, 0.62, 20.0, top=-0.85)
    water += _capsule(x, y, (0.0, -1.3), (0.0, -0.8), 0.16, 10.0)
    bone = 3.0 * _vertebrae(x, y, -1.0, 1.0, 0.09, 0.15, 1.0)
    for side in (-1.0, 1.0):
        for k in range(8):
            bone += _arc_bones(x, y, side, -0.7 + 0.13 * k, 0.5, 0.1, 0.6, 0.02, 0.5)
    return water, bone


def _default(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    water = 18.0 * _chord(_ellipse_r2(x, y, 0.0, 0.0, 0.6, 0.8)) ** 0.5
    water += 2.0 * _chord(_ellipse_r2(x, y, 0.25, -0.3, 0.12, 0.12))  # low-contrast insert
    bone = np.zeros_like(x)
    for cx, cy, r in ((-0.3, -0.3, 0.06), (-0.25, 0.3, 0.04), (0.2, 0.35, 0.08)):
        bone += 2.0 * r / 0.06 * _chord(_ellipse_r2(x, y, cx, cy, r, r))
    return water, bone


def _air(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros_like(x), np.zeros_like(x)


_PARTS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "chest": _chest, "skull": _skull, "hand": _hand, "abdomen": _abdomen,
    "pelvis": _pelvis, "spine": _spine, "default": _default, "none": _air,
}
_ALIASES = {
    "head": "skull", "extremity": "hand", "wrist": "hand", "lumbar": "spine",
    "thorax": "chest", "generic": "default", "air": "none", "flat": "none",
}

#: Body-part names understood by :func:`make_phantom` (aliases included).
PARTS: tuple[str, ...] = tuple(sorted({*_PARTS, *_ALIASES}))


def canonical(part: str) -> str:
    """The canonical name of ``part``; ``ValueError`` listing the known names otherwise."""
    key = str(part).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _PARTS:
        raise ValueError(f"unknown phantom {part!r}; known: {', '.join(PARTS)}")
    return key


def _internal_shape(shape: tuple[int, int]) -> tuple[int, int]:
    rows, cols = shape
    f = min(1.0, INTERNAL_MAX / max(rows, cols))
    return max(8, round(rows * f)), max(8, round(cols * f))


def make_phantom(part: str, shape: tuple[int, int]) -> Phantom:
    """The phantom of ``part`` at ``shape`` (rows, cols); cached, arrays read-only.

    Parameters
    ----------
    part : str
        A body part from :data:`PARTS` (case-insensitive).
    shape : tuple of int
        (rows, cols) of the detector.
    """
    rows, cols = (int(v) for v in shape)
    if rows < 8 or cols < 8:
        raise ValueError(f"phantom shape must be at least 8x8, got {shape}")
    return _make_cached(canonical(part), rows, cols)


@lru_cache(maxsize=6)
def _make_cached(part: str, rows: int, cols: int) -> Phantom:
    ri, ci = _internal_shape((rows, cols))
    y = ((np.arange(ri, dtype=np.float32) + 0.5) / ri * 2.0 - 1.0)[:, None]
    x = ((np.arange(ci, dtype=np.float32) + 0.5) / ci * 2.0 - 1.0)[None, :] * (cols / rows)
    x, y = np.broadcast_arrays(x, y)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    water, bone = _PARTS[part](x, y)
    maps = []
    for m in (water, bone):
        m = np.clip(np.asarray(m, np.float32), 0.0, None)
        if (ri, ci) != (rows, cols):
            m = cv2.resize(m, (cols, rows), interpolation=cv2.INTER_LINEAR)
        m = np.ascontiguousarray(m, dtype=np.float32)
        maps.append(m)
    water, bone = maps
    body = (water > BODY_THRESHOLD_CM) | (bone > BODY_THRESHOLD_CM)
    for a in (water, bone, body):
        a.flags.writeable = False
    return Phantom(part, water, bone, body)
