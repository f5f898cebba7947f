"""Detector calibration maps: offset (dark), gain (flat field) and defect map.

Convention (used by every stage and by the detector device, which only passes the maps
through)::

    corrected = (raw - offset) * gain

``offset`` is the float32 mean of N dark frames. ``gain`` is a float32 multiplicative map
with mean 1 over the good pixels, built from N flat (open-field) frames as
``mean(flat - offset) / (flat - offset)``; a corrected flat frame is therefore uniform at
the mean flat signal and the corrected scale stays in detector counts (which the
exposure-index calibration factor ``counts_per_ugy`` refers to). ``defect`` is a bool
map, True where a pixel must be interpolated from its neighbours.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CalibrationMaps", "build_offset", "build_gain", "find_defects"]

#: Robust z-score (in MAD-sigmas) beyond which a pixel is a defect.
PIXEL_Z = 6.0
#: Relative gain deviation from the local level beyond which a pixel is a defect.
GAIN_REL = 0.25
#: Robust z-score of a whole row/column median beyond which the line is a defect.
LINE_Z = 8.0
#: Fraction of defective pixels in a row/column that makes the whole line defective.
LINE_FRACTION = 0.5
#: Within a defective line, pixels beyond this robust z (against the neighbouring lines)
#: form the defective segment ...
SEGMENT_Z = 4.0
#: ... unless they are fewer than this fraction of the line: then the whole line is
#: defective (a subtle line defect that only the line statistics reveal).
SEGMENT_FRACTION = 0.1
#: Smallest per-pixel spread (counts) assumed for the offset map: on a very uniform
#: panel, or with few integer darks, most offsets are equal and their MAD is 0, so a
#: pixel is an offset outlier only when it is more than ``PIXEL_Z`` times this off.
OFFSET_MIN_SIGMA = 0.5
#: Smallest relative per-pixel spread assumed for the gain map (the same role).
GAIN_MIN_SIGMA = 0.002


def _stack_mean(frames: Sequence[np.ndarray], what: str) -> np.ndarray:
    if isinstance(frames, np.ndarray) and frames.ndim == 2:
        frames = [frames]
    if len(frames) == 0:
        raise ValueError(f"{what}: need at least one frame")
    shape = np.shape(frames[0])
    if len(shape) != 2 or shape[0] < 2 or shape[1] < 2:
        raise ValueError(f"{what}: frames must be 2-D and at least 2x2, got shape {shape}")
    acc = np.zeros(shape, np.float64)
    for k, f in enumerate(frames):
        f = np.asarray(f)
        if f.shape != shape:
            raise ValueError(f"{what}: frame {k} has shape {f.shape}, expected {shape}")
        if f.dtype.kind not in "uif":
            raise TypeError(f"{what}: frame {k} has dtype {f.dtype}, expected a numeric type")
        if f.dtype.kind == "f" and not np.all(np.isfinite(f)):
            raise ValueError(f"{what}: frame {k} contains NaN or infinity")
        acc += f
    acc /= len(frames)
    return acc


def build_offset(darks: Sequence[np.ndarray]) -> np.ndarray:
    """Average dark frames into an offset map.

    Parameters
    ----------
    darks : sequence of 2-D arrays
        Dark frames (no X-rays), all of the same shape.

    Returns
    -------
    numpy.ndarray
        float32 mean of the frames.
    """
    return _stack_mean(darks, "build_offset").astype(np.float32)


def build_gain(flats: Sequence[np.ndarray], offset: np.ndarray) -> np.ndarray:
    """Build the multiplicative gain map from flat (open-field) frames.

    Parameters
    ----------
    flats : sequence of 2-D arrays
        Flat frames at a uniform dose, same shape as ``offset``.
    offset : numpy.ndarray
        Offset map from :func:`build_offset`.

    Returns
    -------
    numpy.ndarray
        float32 gain with ``corrected = (raw - offset) * gain``; mean 1 over the pixels
        with a usable signal. Pixels without signal (flat <= offset: dead) get gain 0,
        which :func:`find_defects` reports as defects.
    """
    mean = _stack_mean(flats, "build_gain")
    offset = np.asarray(offset)
    if offset.shape != mean.shape:
        raise ValueError(f"build_gain: offset shape {offset.shape} != flat shape {mean.shape}")
    signal = mean - offset
    good = signal > 0
    if not np.any(good):
        raise ValueError("build_gain: the flat frames have no signal above the offset")
    level = float(np.median(signal[good]))
    gain = np.zeros(signal.shape, np.float64)
    gain[good] = level / signal[good]
    # Clamp absurd gains (nearly dead pixels) so the map stays usable; they are defects.
    np.clip(gain, 0.0, 16.0, out=gain)
    gain /= gain[good].mean()
    return gain.astype(np.float32)


def _robust_z(x: np.ndarray, sample: np.ndarray, min_sigma: float) -> np.ndarray:
    """``(x - median) / sigma`` with the MAD-sigma of ``sample``, at least ``min_sigma``."""
    med = float(np.median(sample))
    mad = float(np.median(np.abs(sample - med))) * 1.4826
    return (x - med) / max(mad, min_sigma, 1e-12)


def _pixel_sigma(img: np.ndarray, min_sigma: float) -> float:
    """Per-pixel noise of a map: MAD-sigma of horizontal neighbour differences / sqrt 2
    (on every other row), at least ``min_sigma``."""
    d = np.diff(img[::2], axis=1)
    if d.size == 0:
        return min_sigma
    return max(1.4826 * float(np.median(np.abs(d))) / math.sqrt(2.0), min_sigma)


def _local_level(img: np.ndarray, block: int = 32) -> np.ndarray:
    """Smooth local level: block medians upsampled bilinearly (robust to defects)."""
    h, w = img.shape
    b = max(1, min(block, h // 2, w // 2))
    hb, wb = -(-h // b), -(-w // b)
    pad = np.pad(img, ((0, hb * b - h), (0, wb * b - w)), mode="edge")
    med = np.median(pad.reshape(hb, b, wb, b).transpose(0, 2, 1, 3).reshape(hb, wb, b * b),
                    axis=2).astype(np.float32)
    return cv2.resize(med, (w, h), interpolation=cv2.INTER_LINEAR)


def _line_defects(img: np.ndarray, axis: int, pixel_sigma: float) -> np.ndarray:
    """Lines (rows for axis=1, columns for axis=0) whose median departs from neighbours.

    The spread of the line medians is taken at least as the noise that ``pixel_sigma``
    per pixel leaves in the median of a line (``1.2533 sigma / sqrt(n)``), so that a map
    whose line medians happen to be equal does not turn every small step into a defect.
    """
    prof = np.median(img, axis=axis).astype(np.float64)
    n = prof.size
    if n < 5:
        return np.zeros(n, bool)
    # Detrend with a running median of the neighbouring lines.
    k = 7 if n >= 7 else 5
    padded = np.pad(prof, k // 2, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, k)
    trend = np.median(win, axis=1)
    resid = prof - trend
    floor = 1.2533 * pixel_sigma / math.sqrt(img.shape[axis])
    return np.abs(_robust_z(resid, resid, floor)) > LINE_Z


def _line_segment(img: np.ndarray, k: int, axis: int, min_sigma: float) -> np.ndarray:
    """Pixels of line ``k`` that depart from the mean of the neighbouring lines (by more
    than ``SEGMENT_Z`` times their spread on ordinary lines, at least ``min_sigma``)."""
    a = img if axis == 0 else img.T
    n = a.shape[1]
    nb = [j for j in (k - 1, k + 1) if 0 <= j < n]
    if not nb:
        return np.ones(a.shape[0], bool)
    r = a[:, k] - a[:, nb].mean(axis=1)
    # noise of the same statistic on ordinary lines (a sample of them)
    cols = np.arange(1, n - 1, max(1, (n - 2) // 64))
    ref = (a[:, cols] - 0.5 * (a[:, cols - 1] + a[:, cols + 1]))[::4].ravel()
    med = float(np.median(ref))
    sigma = max(1.4826 * float(np.median(np.abs(ref - med))), min_sigma, 1e-12)
    flagged = np.abs(r - med) > SEGMENT_Z * sigma
    # a segment is contiguous: fill the pixels where most of the neighbourhood is flagged
    win = np.ones(33) / 33.0
    return flagged | (np.convolve(flagged.astype(np.float64), win, mode="same") > 0.5)


def find_defects(offset: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Find defective pixels and lines from the calibration maps.

    A pixel is defective when its dark level is a robust outlier (more than
    ``PIXEL_Z`` MAD-sigmas from the median offset), when its gain departs from the local
    gain level by more than ``PIXEL_Z`` MAD-sigmas and ``GAIN_REL`` relative, or when its
    gain is 0 (no signal in the flats) or not finite. The MAD-sigmas are taken at least
    ``OFFSET_MIN_SIGMA`` counts and ``GAIN_MIN_SIGMA`` relative, and the spread of line
    medians at least what the maps' pixel noise leaves in a median: a very uniform or
    coarsely quantised map (a MAD of 0) does not turn small steps into defects. A whole row or column is defective when its median offset or gain
    is an outlier against its neighbouring lines (``LINE_Z``) or when more than
    ``LINE_FRACTION`` of its pixels are defective; within such a line, the defect is the
    segment of pixels that depart from the neighbouring lines by more than ``SEGMENT_Z``
    sigmas (a dead column from some row to the edge), or the whole line when that
    segment is shorter than ``SEGMENT_FRACTION`` of it (a subtle line defect).

    Parameters
    ----------
    offset, gain : numpy.ndarray
        Maps from :func:`build_offset` and :func:`build_gain`.

    Returns
    -------
    numpy.ndarray
        bool map, True on defects.
    """
    offset = np.asarray(offset, dtype=np.float32)
    gain = np.asarray(gain, dtype=np.float32)
    if offset.ndim != 2 or offset.shape != gain.shape:
        raise ValueError(f"find_defects: offset {offset.shape} and gain {gain.shape} must be "
                         "2-D maps of the same shape")
    finite = np.isfinite(offset) & np.isfinite(gain)
    off = np.where(finite, offset, np.nanmedian(offset[finite]) if finite.any() else 0.0)
    gn = np.where(finite, gain, 1.0).astype(np.float32)
    sub = (slice(None, None, 2), slice(None, None, 2))
    z_off = _robust_z(off, off[sub], OFFSET_MIN_SIGMA)
    level = _local_level(gn)
    rel = gn / np.maximum(level, 1e-6) - 1.0
    z_gain = _robust_z(rel, rel[sub], GAIN_MIN_SIGMA)
    defect = ~finite | (np.abs(z_off) > PIXEL_Z) | ((np.abs(z_gain) > PIXEL_Z)
                                                   & (np.abs(rel) > GAIN_REL))
    defect |= gn <= 0
    gain_level = max(float(np.median(gn)), 1e-6)
    s_off = _pixel_sigma(off, OFFSET_MIN_SIGMA)
    s_gain = _pixel_sigma(gn, GAIN_MIN_SIGMA * gain_level)
    for axis in (0, 1):
        lines = _line_defects(off, axis, s_off) | _line_defects(gn, axis, s_gain)
        lines |= defect.mean(axis=axis) > LINE_FRACTION
        for k in np.flatnonzero(lines):
            seg = (_line_segment(off, k, axis, OFFSET_MIN_SIGMA)
                   | _line_segment(gn, k, axis, GAIN_MIN_SIGMA * gain_level))
            if seg.mean() < SEGMENT_FRACTION:  # a subtle line: only its statistics show
                seg[:] = True
            if axis == 0:
                defect[:, k] |= seg
            else:
                defect[k, :] |= seg
    return defect


@dataclass
class CalibrationMaps:
    """Offset, gain and defect maps of one detector mode.

    ``corrected = (raw - offset) * gain``; ``defect`` pixels are interpolated.
    """

    offset: np.ndarray
    gain: np.ndarray
    defect: np.ndarray

    def __post_init__(self) -> None:
        self.offset = np.ascontiguousarray(self.offset, dtype=np.float32)
        self.gain = np.ascontiguousarray(self.gain, dtype=np.float32)
        self.defect = np.ascontiguousarray(self.defect, dtype=bool)
        if self.offset.ndim != 2:
            raise ValueError(f"CalibrationMaps: offset must be 2-D, got {self.offset.shape}")
        if self.gain.shape != self.offset.shape or self.defect.shape != self.offset.shape:
            raise ValueError(
                "CalibrationMaps: offset, gain and defect shapes differ: "
                f"{self.offset.shape}, {self.gain.shape}, {self.defect.shape}")
        # one reduction per map: NaN and infinity propagate into the sum
        for name, a in (("offset", self.offset), ("gain", self.gain)):
            if not np.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)):
                raise ValueError(f"CalibrationMaps: {name} must be finite")

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape (rows, cols) the maps apply to."""
        return self.offset.shape  # type: ignore[return-value]

    @classmethod
    def from_frames(cls, darks: Sequence[np.ndarray], flats: Sequence[np.ndarray]
                    ) -> CalibrationMaps:
        """Build all three maps from dark and flat frames.

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> darks = [rng.normal(100, 2, (64, 64)).astype(np.uint16) for _ in range(4)]
        >>> flats = [rng.normal(2100, 20, (64, 64)).astype(np.uint16) for _ in range(4)]
        >>> flats[0][10, 20] = flats[1][10, 20] = flats[2][10, 20] = flats[3][10, 20] = 90
        >>> maps = CalibrationMaps.from_frames(darks, flats)
        >>> maps.shape, np.argwhere(maps.defect).tolist()
        ((64, 64), [[10, 20]])"""
        offset = build_offset(darks)
        gain = build_gain(flats, offset)
        return cls(offset, gain, find_defects(offset, gain))

    @classmethod
    def identity(cls, shape: tuple[int, int]) -> CalibrationMaps:
        """Maps that leave a frame unchanged (zero offset, unit gain, no defects)."""
        return cls(np.zeros(shape, np.float32), np.ones(shape, np.float32),
                   np.zeros(shape, bool))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the maps to an ``.npz`` file atomically (temp file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, offset=self.offset, gain=self.gain, defect=self.defect)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationMaps:
        """Read maps written by :meth:`save`; raises ValueError on a malformed file."""
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                missing = {"offset", "gain", "defect"} - set(z.files)
                if missing:
                    raise ValueError(f"calibration file {path} lacks {sorted(missing)}")
                return cls(z["offset"], z["gain"], z["defect"])
        except (OSError, EOFError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"calibration file {path} is unreadable: {exc}") from exc
