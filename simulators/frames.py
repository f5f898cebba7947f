"""Frame synthesis with ground truth: what a flat panel reads out for a given exposure.

Physics model
-------------
* **Tube output**: air kerma at 1 m per mAs, ``output(kV) = 9e-4 * kV**2`` uGy/mAs (about
  5.8 uGy/mAs at 80 kV, typical of a tungsten tube with 2.5 mm Al). At the detector:
  ``K = output(kV) * mAs / (SID / 100 cm)**2``.
* **Heel effect**: the tube output varies along the anode-cathode axis (the image rows,
  anode at the top): a smooth gradient of about -7 % to +5 % with mean 1 over the image.
* **Attenuation**: transmission ``T = exp(-(mu_w(kV) * water_cm + mu_b(kV) * bone_cm))``
  through the phantom (:mod:`simulators.phantom`), with effective coefficients
  ``mu_w = 0.20 (70/kV)**0.55`` and ``mu_b = 0.70 (70/kV)**1.3`` per cm: a harder beam
  penetrates more and shows less bone contrast.
* **Collimation**: the primary beam is confined to the field (:class:`Collimation`) with
  a penumbra of about 1 mm; lead blades leak 0.2 %.
* **Scatter**: behind the grid the irradiated anatomy adds a scatter-to-primary ratio of
  ``SCATTER_COEF * A`` (``A = -ln T``, about 1 behind 20 cm of tissue) to the transmitted
  primary, plus ``GLARE_COEF`` of the open beam from the detector cover, spread by two
  Gaussian kernels (about 8 mm and 50 mm) computed at low resolution and resized: inside
  the field it is a smooth background, outside it decays with distance from the field
  edge. The shuttered area is never at dark level.
* **Detection**: ``signal = counts_per_ugy * K_pixel`` ADU; quantum noise has variance
  ``adu_per_quantum * signal`` (Poisson in quanta, Gaussian approximation), electronic
  noise is Gaussian in ADU; each pixel has a fixed gain (few % non-uniformity, per-readout
  chip steps) and a fixed dark offset (column, row and chip structure); defect pixels and
  lines; clipped to the bit depth, uint16.

Coordinates: pixel ``(x, y) = (column, row)``, pixel centres at integers. Everything is
float32 and vectorised; a 3072x3072 exposure takes well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from dios.devices.backends import PanelMode
from simulators.panels import OFFSET_ADU, READ_NOISE_ADU, adu_per_quantum, max_adu
from simulators.phantom import Phantom, make_phantom

#: Scatter-to-primary ratio per neper of attenuation (after an anti-scatter grid).
SCATTER_COEF = 0.3
#: Veiling glare / scatter of an open field (detector cover, air), fraction of the primary.
GLARE_COEF = 0.02
#: Blade leakage (transmission of the collimator leaves).
LEAKAGE = 0.002
#: Width of the collimator penumbra in mm at the detector.
PENUMBRA_MM = 1.0
#: Scatter kernels: (sigma in mm, weight).
SCATTER_KERNELS = ((8.0, 0.35), (50.0, 0.65))
#: Low-resolution grid for the scatter computation (pixels on the long side).
SCATTER_GRID = 256
#: A pixel is direct exposure when the phantom transmits more than this.
DIRECT_T = 0.98


def tube_output(kv: float) -> float:
    """Air kerma at 1 m per mAs (uGy/mAs) for tube voltage ``kv``."""
    return 9e-4 * float(kv) ** 2


def air_kerma(kv: float, mas: float, sid_cm: float) -> float:
    """Unattenuated air kerma (uGy) at the detector for a technique and distance."""
    return tube_output(kv) * float(mas) / (float(sid_cm) / 100.0) ** 2


def mu_water(kv: float) -> float:
    """Effective linear attenuation of soft tissue (1/cm) for the beam at ``kv``."""
    return 0.20 * (70.0 / float(kv)) ** 0.55


def mu_bone(kv: float) -> float:
    """Effective linear attenuation of cortical bone (1/cm) for the beam at ``kv``."""
    return 0.70 * (70.0 / float(kv)) ** 1.3


# --------------------------------------------------------------------------------------------
# Collimation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collimation:
    """The irradiated field's shape on the detector, in pixels.

    ``kind`` is ``"rect"`` (``center``, ``width``, ``height``, ``angle_deg``), ``"circle"``
    (``center``, ``radius``) or ``"none"`` (the whole detector is irradiated). ``center``
    is ``(x, y)`` = (column, row). A rectangle's ``angle_deg`` turns its width axis from the
    +x axis towards +y (clockwise on a display whose y axis points down). Fields may extend
    beyond the image: blades then lie outside, a circle is clipped by the edge.
    """

    kind: str = "rect"
    center: tuple[float, float] = (0.0, 0.0)
    width: float = 0.0
    height: float = 0.0
    angle_deg: float = 0.0
    radius: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("rect", "circle", "none"):
            raise ValueError(f"collimation kind must be rect, circle or none, not {self.kind!r}")
        if self.kind == "rect" and not (self.width > 0 and self.height > 0):
            raise ValueError("a rectangular field needs width > 0 and height > 0")
        if self.kind == "circle" and not self.radius > 0:
            raise ValueError("a circular field needs radius > 0")
        vals = (*self.center, self.width, self.height, self.angle_deg, self.radius)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("collimation parameters must be finite")

    @classmethod
    def rect(cls, cx: float, cy: float, width: float, height: float,
             angle_deg: float = 0.0) -> Collimation:
        return cls("rect", (float(cx), float(cy)), float(width), float(height), float(angle_deg))

    @classmethod
    def circle(cls, cx: float, cy: float, radius: float) -> Collimation:
        return cls("circle", (float(cx), float(cy)), radius=float(radius))

    @classmethod
    def none(cls) -> Collimation:
        return cls("none")

    @classmethod
    def default(cls, shape: tuple[int, int]) -> Collimation:
        """The field used when none is given: centred, 90 % of each side, axis-aligned."""
        rows, cols = shape
        return cls.rect((cols - 1) / 2, (rows - 1) / 2, 0.9 * cols, 0.9 * rows)

    def corners(self) -> np.ndarray:
        """The rectangle's corners, (4, 2) float64 in (x, y), in order around the field."""
        if self.kind != "rect":
            raise ValueError(f"a {self.kind} field has no corners")
        t = math.radians(self.angle_deg)
        c, s = math.cos(t), math.sin(t)
        hw, hh = self.width / 2, self.height / 2
        local = np.array([(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)])
        rot = np.array([[c, -s], [s, c]])
        return local @ rot.T + np.asarray(self.center)

    def signed_distance(self, shape: tuple[int, int]) -> np.ndarray:
        """Distance in pixels to the field boundary, positive inside (float32, ``shape``).

        Exact for circles and inside rectangles; outside a rectangle's corners it is the
        distance to the nearer blade line (adequate for the penumbra and masks).
        """
        rows, cols = shape
        x = np.arange(cols, dtype=np.float32)[None, :] - np.float32(self.center[0])
        y = np.arange(rows, dtype=np.float32)[:, None] - np.float32(self.center[1])
        if self.kind == "none":
            return np.full(shape, np.float32(1e6))
        if self.kind == "circle":
            return np.float32(self.radius) - np.sqrt(x * x + y * y)
        t = math.radians(self.angle_deg)
        c, s = np.float32(math.cos(t)), np.float32(math.sin(t))
        u = x * c + y * s
        v = y * c - x * s
        du = np.float32(self.width / 2) - np.abs(u)
        dv = np.float32(self.height / 2) - np.abs(v)
        return np.minimum(du, dv)

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """bool mask, True inside the field."""
        if self.kind == "none":
            return np.ones(shape, bool)
        return self.signed_distance(shape) >= 0

    def scaled(self, factor: float) -> Collimation:
        """The same field on a detector whose pixels are ``1/factor`` the size."""
        f = float(factor)
        return Collimation(self.kind, (self.center[0] * f, self.center[1] * f),
                           self.width * f, self.height * f, self.angle_deg, self.radius * f)


#: The categories :func:`random_collimation` draws from.
RANDOM_KINDS = ("rect", "rotated", "circle", "clipped_rect", "clipped_circle", "none")


def random_collimation(rng: np.random.Generator, shape: tuple[int, int],
                       kinds: tuple[str, ...] = RANDOM_KINDS) -> Collimation:
    """Draw a randomised field for accuracy tests.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
        (rows, cols) of the detector.
    kinds : tuple of str
        Categories to choose from (uniformly): ``rect`` (axis-aligned, inside the image),
        ``rotated`` (2-20 degrees either way, inside the image), ``circle`` (inside),
        ``clipped_rect`` (one to three blades outside the image, any angle up to 20
        degrees), ``clipped_circle`` (cut by one or two edges), ``none``.

    Returns
    -------
    Collimation
        The field; its ``kind`` is ``rect``, ``circle`` or ``none``.
    """
    unknown = set(kinds) - set(RANDOM_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {RANDOM_KINDS}, got {kinds}")
    rows, cols = shape
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "none":
        return Collimation.none()
    if kind in ("rect", "rotated"):
        angle = 0.0
        if kind == "rotated":
            angle = float(rng.uniform(2.0, 20.0) * rng.choice([-1.0, 1.0]))
        for _ in range(100):
            w = rng.uniform(0.35, 0.85) * cols
            h = rng.uniform(0.35, 0.85) * rows
            cx = rng.uniform(0.3, 0.7) * cols
            cy = rng.uniform(0.3, 0.7) * rows
            col = Collimation.rect(cx, cy, w, h, angle)
            xy = col.corners()
            margin = 0.02 * min(rows, cols)
            if (xy[:, 0].min() > margin and xy[:, 0].max() < cols - 1 - margin
                    and xy[:, 1].min() > margin and xy[:, 1].max() < rows - 1 - margin):
                return col
        return Collimation.rect((cols - 1) / 2, (rows - 1) / 2, 0.6 * cols, 0.6 * rows, angle)
    if kind == "circle":
        r = rng.uniform(0.25, 0.42) * min(rows, cols)
        cx = rng.uniform(r + 0.03 * cols, cols - 1 - r - 0.03 * cols)
        cy = rng.uniform(r + 0.03 * rows, rows - 1 - r - 0.03 * rows)
        return Collimation.circle(cx, cy, r)
    if kind == "clipped_circle":
        r = rng.uniform(0.4, 0.6) * min(rows, cols)
        cx = (cols - 1) / 2 + rng.uniform(-0.25, 0.25) * cols
        cy = (rows - 1) / 2 + rng.uniform(-0.25, 0.25) * rows
        if min(cx, cols - 1 - cx, cy, rows - 1 - cy) >= r * 0.95:
            cx = r * 0.7  # make sure an edge cuts it
        return Collimation.circle(cx, cy, r)
    # clipped_rect: choose the blades that leave the image, keep at least one inside
    angle = float(rng.uniform(-20.0, 20.0)) if rng.random() < 0.5 else 0.0
    outside = rng.random(4) < 0.5
    if outside.all() or not outside.any():
        outside = np.zeros(4, bool)
        outside[rng.choice(4, size=int(rng.integers(1, 4)), replace=False)] = True
    # blade positions as fractions of the image: left, top, right, bottom
    left = -0.15 if outside[0] else rng.uniform(0.05, 0.3)
    top = -0.15 if outside[1] else rng.uniform(0.05, 0.3)
    right = 1.15 if outside[2] else rng.uniform(0.7, 0.95)
    bottom = 1.15 if outside[3] else rng.uniform(0.7, 0.95)
    cx, cy = (left + right) / 2 * cols, (top + bottom) / 2 * rows
    w, h = (right - left) * cols, (bottom - top) * rows
    return Collimation.rect(cx, cy, w, h, angle)


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


@dataclass
class FrameTruth:
    """What was really on the detector, for tests.

    Attributes
    ----------
    collimation : Collimation
    field_mask : numpy.ndarray
        bool, True inside the irradiated field.
    defect_mask : numpy.ndarray
        bool, True on defective pixels and lines of the panel.
    direct_mask : numpy.ndarray
        bool, True where the field hits the detector unattenuated (no anatomy).
    dose_ugy : float
        Unattenuated air kerma at the detector (uGy), heel effect excluded.
    anatomy_dose_ugy : float
        Median air kerma (primary + scatter, uGy) over the anatomy inside the field: the
        exposure-index ground truth (``EI = 100 * anatomy_dose_ugy``). The heel effect is
        excluded, as gain calibration with flat fields removes it from corrected images.
    corners : numpy.ndarray or None
        (4, 2) float (x, y) corners of a rectangular field.
    circle : tuple or None
        (cx, cy, r) of a circular field.
    """

    collimation: Collimation
    field_mask: np.ndarray
    defect_mask: np.ndarray
    direct_mask: np.ndarray
    dose_ugy: float
    anatomy_dose_ugy: float
    corners: np.ndarray | None = None
    circle: tuple[float, float, float] | None = None
    kv: float = 0.0
    mas: float = 0.0
    sid_cm: float = 0.0
    phantom: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def collimated(self) -> bool:
        """False when the whole detector was irradiated (no collimation)."""
        return self.collimation.kind != "none"


# --------------------------------------------------------------------------------------------
# Detector model
# --------------------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], grid: int) -> np.ndarray:
    """Smooth unit-variance random field at ``shape`` from a ``grid``-cell noise."""
    rows, cols = shape
    g = rng.standard_normal((grid, grid)).astype(np.float32)
    g = cv2.GaussianBlur(g, (0, 0), 1.0)
    g /= max(float(g.std()), 1e-6)
    return cv2.resize(g, (cols, rows), interpolation=cv2.INTER_CUBIC)


class DetectorModel:
    """One simulated panel: fixed offset, gain and defect maps, and the frame synthesiser.

    Parameters
    ----------
    mode : PanelMode
        Format, bit depth and dose calibration of the panel.
    seed : int
        Fixes the panel's maps (offset, gain, defects); the noise of each frame comes
        from the ``rng`` passed to the frame methods.

    Attributes
    ----------
    offset : numpy.ndarray
        float32 dark level per pixel (ADU).
    gain : numpy.ndarray
        float32 relative gain per pixel (mean about 1; dead pixels near 0).
    defect_mask : numpy.ndarray
        bool, the defective pixels and lines (ground truth).
    heel : numpy.ndarray
        float32 (rows, 1) heel-effect profile along the rows (mean 1).
    """

    #: Chip (readout ASIC) width in columns: offset and gain step between chips.
    CHIP_COLS = 256

    def __init__(self, mode: PanelMode, seed: int = 0) -> None:
        self.mode = mode
        self.seed = int(seed)
        self.shape = (mode.rows, mode.cols)
        rows, cols = self.shape
        rng = np.random.default_rng([self.seed, rows, cols, mode.bits])
        self.read_noise = float(READ_NOISE_ADU.get(mode.bits, 4.0))
        self.adu_per_quantum = float(adu_per_quantum(mode))
        self.max_adu = max_adu(mode)
        base = float(OFFSET_ADU.get(mode.bits, 0.05 * self.max_adu))
        nchips = -(-cols // self.CHIP_COLS)
        scale = base / 1200.0

        chip_off = rng.normal(0.0, 25.0 * scale, nchips).astype(np.float32)
        col_off = rng.normal(0.0, 6.0 * scale, cols).astype(np.float32)
        col_off += np.repeat(chip_off, self.CHIP_COLS)[:cols]
        row_off = rng.normal(0.0, 3.0 * scale, rows).astype(np.float32)
        ramp = np.linspace(-15.0 * scale, 15.0 * scale, rows, dtype=np.float32)
        offset = rng.normal(base, 5.0 * scale, self.shape).astype(np.float32)
        offset += col_off[None, :]
        offset += (row_off + ramp)[:, None]

        chip_gain = rng.normal(1.0, 0.01, nchips).astype(np.float32)
        gain = rng.normal(1.0, 0.01, self.shape).astype(np.float32)
        gain *= np.repeat(chip_gain, self.CHIP_COLS)[:cols][None, :]
        gain *= 1.0 + 0.025 * _smooth_field(rng, self.shape, 8)

        defect = np.zeros(self.shape, bool)
        n = max(8, int(rows * cols * 1e-4))
        ys, xs = rng.integers(0, rows, n), rng.integers(0, cols, n)
        half = n // 2
        gain[ys[:half], xs[:half]] = rng.uniform(0.0, 0.05, half)  # dead
        offset[ys[half:], xs[half:]] += rng.uniform(3000, 12000, n - half) * scale  # hot
        defect[ys, xs] = True
        cy, cx = int(rng.integers(rows // 8, rows - rows // 8)), int(rng.integers(cols // 8, cols - cols // 8))
        gain[cy:cy + 3, cx:cx + 4] = 0.02  # a small dead cluster
        defect[cy:cy + 3, cx:cx + 4] = True
        dead_col = int(rng.integers(cols // 10, cols - cols // 10))
        start = int(rng.integers(0, rows // 2))
        gain[start:, dead_col] = 0.03  # a dead column from ``start`` to the bottom edge
        defect[start:, dead_col] = True
        bright_row = int(rng.integers(rows // 10, rows - rows // 10))
        offset[bright_row, :] += 1500.0 * scale  # a row with a high dark level
        gain[bright_row, :] *= 0.6
        defect[bright_row, :] = True
        self.dead_column = dead_col
        self.bright_row = bright_row

        self.offset = offset
        self.gain = gain
        self.defect_mask = defect
        yn = np.linspace(-1.0, 1.0, rows, dtype=np.float32)
        heel = 1.0 + 0.06 * yn - 0.04 * np.clip(-yn, 0.0, None) ** 2
        self.heel = (heel / heel.mean()).astype(np.float32)[:, None]
        for a in (self.offset, self.gain, self.defect_mask, self.heel):
            a.flags.writeable = False

    # --- helpers ------------------------------------------------------------------------
    def _readout(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Detected signal (ADU, before gain; modified in place) -> clipped uint16 frame."""
        np.maximum(signal, 0.0, out=signal)
        gain = self.gain
        var = signal * np.float32(self.adu_per_quantum)
        var *= gain
        var *= gain
        var += np.float32(self.read_noise ** 2)
        np.sqrt(var, out=var)
        noise = rng.standard_normal(self.shape, dtype=np.float32)
        noise *= var
        signal *= gain
        signal += noise
        signal += self.offset
        np.clip(signal, 0.0, float(self.max_adu), out=signal)
        return np.rint(signal, out=signal).astype(np.uint16)

    def _low_shape(self) -> tuple[int, int]:
        rows, cols = self.shape
        f = SCATTER_GRID / max(rows, cols)
        return max(4, round(rows * f)), max(4, round(cols * f))

    # --- frames --------------------------------------------------------------------------
    def dark(self, rng: np.random.Generator) -> np.ndarray:
        """A dark frame (no X-rays): offset plus electronic noise, uint16."""
        return self._readout(np.zeros(self.shape, np.float32), rng)

    def flat(self, dose_ugy: float, rng: np.random.Generator) -> np.ndarray:
        """An open-field (no phantom, no collimation) frame at ``dose_ugy``, heel included."""
        if not (math.isfinite(dose_ugy) and dose_ugy >= 0):
            raise ValueError(f"dose must be a finite number >= 0, got {dose_ugy!r}")
        k = np.float32(self.mode.counts_per_ugy * dose_ugy * (1.0 + GLARE_COEF))
        signal = np.empty(self.shape, np.float32)
        signal[...] = self.heel * k
        return self._readout(signal, rng)

    def flat_dose_ugy(self, fraction: float = 0.4) -> float:
        """The dose that fills ``fraction`` of the range above the offset (calibration flats)."""
        return fraction * (self.max_adu - float(np.median(self.offset[::16, ::16]))) / \
            self.mode.counts_per_ugy

    def exposure(self, kv: float, mas: float, sid_cm: float,
                 collimation: Collimation | None, phantom: str | Phantom,
                 rng: np.random.Generator) -> tuple[np.ndarray, FrameTruth]:
        """Synthesise the raw frame of one exposure and its ground truth.

        Parameters
        ----------
        kv, mas : float
            Tube voltage (kV) and tube current-time product (mAs) actually delivered.
        sid_cm : float
            Source-to-image distance (cm).
        collimation : Collimation or None
            The field; None means :meth:`Collimation.default`.
        phantom : str or Phantom
            Body part name (see :mod:`simulators.phantom`) or a phantom of this shape.
        rng : numpy.random.Generator
            Source of the frame's noise.

        Returns
        -------
        frame : numpy.ndarray
            uint16 (rows, cols) raw frame.
        truth : FrameTruth
        """
        for name, v, lo in (("kv", kv, 1.0), ("mas", mas, 0.0), ("sid_cm", sid_cm, 10.0)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= lo):
                raise ValueError(f"{name} must be a finite number >= {lo}, got {v!r}")
        if collimation is None:
            collimation = Collimation.default(self.shape)
        if not isinstance(phantom, Phantom):
            phantom = make_phantom(phantom, self.shape)
        if phantom.shape != self.shape:
            raise ValueError(f"phantom shape {phantom.shape} != detector shape {self.shape}")
        rows, cols = self.shape
        k0 = air_kerma(kv, mas, sid_cm)

        # attenuation (nepers) and transmission through the phantom
        trans = np.multiply(phantom.water_cm, np.float32(mu_water(kv)))
        tmp = np.multiply(phantom.bone_cm, np.float32(mu_bone(kv)))
        trans += tmp
        lo_shape = self._low_shape()
        att_lo = cv2.resize(trans, lo_shape[::-1], interpolation=cv2.INTER_AREA)
        np.negative(trans, out=trans)
        np.exp(trans, out=trans)

        # field with penumbra
        sd = collimation.signed_distance(self.shape)
        field_mask = sd >= 0
        pen = max(PENUMBRA_MM / self.mode.pixel_pitch_mm, 0.5)
        edge = sd  # reuse: soft field weight in [0, 1]
        edge *= np.float32(1.0 / pen)
        edge += np.float32(0.5)
        np.clip(edge, 0.0, 1.0, out=edge)

        # scatter at low resolution
        e_lo = cv2.resize(edge, lo_shape[::-1], interpolation=cv2.INTER_AREA)
        spr = np.float32(SCATTER_COEF) * att_lo  # local scatter-to-primary ratio
        src = e_lo * (spr * np.exp(-att_lo) + np.float32(GLARE_COEF))
        lo_pitch = self.mode.pixel_pitch_mm * rows / lo_shape[0]
        sc_lo = np.zeros_like(src)
        for sigma_mm, weight in SCATTER_KERNELS:
            sc_lo += np.float32(weight) * cv2.GaussianBlur(
                src, (0, 0), sigma_mm / lo_pitch, borderType=cv2.BORDER_CONSTANT)
        scatter = cv2.resize(sc_lo, (cols, rows), interpolation=cv2.INTER_LINEAR)

        # air kerma per pixel (heel excluded), then the signal
        kerma = trans  # reuse
        kerma *= edge
        np.multiply(edge, np.float32(-LEAKAGE), out=tmp)
        tmp += np.float32(LEAKAGE)
        kerma += tmp
        kerma += scatter
        kerma *= np.float32(k0)

        direct = field_mask & ~phantom.body
        anat = field_mask & phantom.body
        sub = (slice(None, None, 4), slice(None, None, 4))
        sample = kerma[sub][anat[sub]]
        if sample.size == 0:
            sample = kerma[anat]
        anatomy_dose = float(np.median(sample)) if sample.size else 0.0

        signal = kerma
        signal *= self.heel
        signal *= np.float32(self.mode.counts_per_ugy)
        frame = self._readout(signal, rng)
        truth = FrameTruth(
            collimation=collimation, field_mask=field_mask, defect_mask=self.defect_mask,
            direct_mask=direct, dose_ugy=k0, anatomy_dose_ugy=anatomy_dose,
            corners=collimation.corners() if collimation.kind == "rect" else None,
            circle=((*collimation.center, collimation.radius)
                    if collimation.kind == "circle" else None),
            kv=float(kv), mas=float(mas), sid_cm=float(sid_cm), phantom=phantom.name,
        )
        return frame, truth
