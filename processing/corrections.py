"""Offset, gain and defect corrections of raw detector frames.

``corrected = clip(floor((raw - offset) * gain + 0.5), 0, 65535)`` in float32 arithmetic,
as uint16 (see :mod:`processing.calibration` for the map convention). Each defect pixel is
then replaced by the inverse-distance weighted mean of the nearest good pixel to its
left, right, top and bottom (searched up to :data:`DEFECT_RADIUS` pixels away), so a
defect column is interpolated across from its neighbouring columns and a defect row from
the rows above and below. A defect with no good pixel in reach keeps its value.
"""

from __future__ import annotations

import numpy as np

from processing import _kernels as K
from processing.calibration import CalibrationMaps

__all__ = ["DEFECT_RADIUS", "MAX_AREA_FACTOR", "DefectPlan", "check_raw", "correct", "correct_reduce"]

#: How far (pixels) the defect interpolation looks for a good neighbour.
DEFECT_RADIUS = 16


def check_raw(raw: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a raw frame: a non-empty 2-D uint16 numpy array (of ``shape`` if given).

    Returns the frame as a C-contiguous array (a copy only when it was not contiguous).

    Raises
    ------
    TypeError
        Not a numpy array, or not uint16 (float frames included: convert and clip them
        to uint16 first; NaN has no meaning in a raw frame).
    ValueError
        Wrong number of dimensions, empty, or not the expected shape.
    """
    if not isinstance(raw, np.ndarray):
        raise TypeError(f"raw frame must be a numpy array, got {type(raw).__name__}")
    if raw.dtype != np.uint16:
        raise TypeError(f"raw frame must be uint16, got {raw.dtype}")
    if raw.ndim != 2:
        raise ValueError(f"raw frame must be 2-D, got shape {raw.shape}")
    if raw.size == 0:
        raise ValueError("raw frame is empty")
    if shape is not None and raw.shape != tuple(shape):
        raise ValueError(f"raw frame shape {raw.shape} does not match {tuple(shape)}")
    return np.ascontiguousarray(raw)


class DefectPlan:
    """Interpolation sources of the defects of one defect map (built once per map).

    ``idx`` holds the flat indices of the defects in increasing order (so
    ``np.flatnonzero(defect)`` identifies the map), ``src``/``wts`` their sources.
    """

    def __init__(self, defect: np.ndarray, radius: int = DEFECT_RADIUS) -> None:
        defect = np.ascontiguousarray(defect, dtype=bool)
        if defect.ndim != 2:
            raise ValueError(f"defect map must be 2-D, got shape {defect.shape}")
        self.shape = defect.shape
        self.idx, self.src, self.wts = K.defect_plan(defect, int(radius))

    def __len__(self) -> int:
        return int(self.idx.size)

    def apply(self, img: np.ndarray) -> None:
        """Interpolate the defects of a uint16 image in place."""
        if img.shape != self.shape or img.dtype != np.uint16 or not img.flags.c_contiguous:
            raise ValueError(f"defect plan for {self.shape} cannot apply to "
                             f"{img.dtype} {img.shape}")
        if self.idx.size:
            K.apply_defects(img, self.idx, self.src, self.wts)


def correct(raw: np.ndarray, maps: CalibrationMaps | None, *, out: np.ndarray | None = None,
            plan: DefectPlan | None = None) -> np.ndarray:
    """Apply offset, gain and defect corrections.

    Parameters
    ----------
    raw : numpy.ndarray
        2-D uint16 raw frame.
    maps : CalibrationMaps or None
        Calibration of the frame's mode; None returns a copy of ``raw`` (into ``out``).
    out : numpy.ndarray, optional
        Preallocated C-contiguous uint16 output of the frame's shape.
    plan : DefectPlan, optional
        Precomputed plan for ``maps.defect`` (built when omitted).

    Returns
    -------
    numpy.ndarray
        Corrected uint16 frame.

    Examples
    --------
    >>> import numpy as np
    >>> from processing.calibration import CalibrationMaps
    >>> offset = np.full((32, 32), 100.0, np.float32)
    >>> gain = np.full((32, 32), 2.0, np.float32)
    >>> defect = np.zeros((32, 32), bool)
    >>> defect[5, 7] = True
    >>> raw = np.full((32, 32), 600, np.uint16)
    >>> raw[5, 7] = 65535  # a hot pixel, interpolated from its neighbours
    >>> out = correct(raw, CalibrationMaps(offset, gain, defect))
    >>> int(out.min()), int(out.max())
    (1000, 1000)
    """
    raw = check_raw(raw)
    if out is None:
        out = np.empty(raw.shape, np.uint16)
    elif (out.shape != raw.shape or out.dtype != np.uint16 or not out.flags.c_contiguous
          or not out.flags.writeable):
        raise ValueError(f"correct: out must be a writable C-contiguous uint16 array of "
                         f"shape {raw.shape}")
    if maps is None:
        np.copyto(out, raw)
        return out
    if not isinstance(maps, CalibrationMaps):
        raise TypeError(f"maps must be CalibrationMaps, got {type(maps).__name__}")
    if maps.shape != raw.shape:
        raise ValueError(f"calibration maps {maps.shape} do not match the frame {raw.shape}")
    K.correct_u16(raw, maps.offset, maps.gain, out)
    if plan is None:
        plan = DefectPlan(maps.defect)
    elif plan.shape != raw.shape:
        raise ValueError("correct: defect plan shape does not match the frame")
    plan.apply(out)
    return out


#: Largest block factor for which the fused block mean is exact (float32 sums of uint16).
MAX_AREA_FACTOR = 15


def correct_reduce(raw: np.ndarray, maps: CalibrationMaps | None, out: np.ndarray,
                   plan: DefectPlan | None, lut: np.ndarray, g1: np.ndarray, *,
                   area: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    """:func:`correct` fused with the first pyramid reduction ``g1 = down2(lut[out])``.

    The corrected frame is written to ``out`` and, while its rows are in cache, reduced
    through ``lut`` (65536-entry float32 table) into ``g1`` (shape
    ``((h + 1) // 2, (w + 1) // 2)``); the ``g1`` pixels over defects are recomputed
    after the defect interpolation. Same validation as :func:`correct`.

    ``area = (f, small)`` (calibrated frames only, ``1 <= f <= MAX_AREA_FACTOR``) also
    writes the ``f`` x ``f`` block mean of the corrected frame into the float32 array
    ``small`` of shape ``(ceil(h / f), ceil(w / f))`` in the same pass, identical to
    :func:`processing._collimator_kernels.area_downsample` of ``out`` (the collimator's
    work image).
    """
    raw = check_raw(raw)
    if (out.shape != raw.shape or out.dtype != np.uint16 or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise ValueError(f"correct_reduce: out must be a writable C-contiguous uint16 array "
                         f"of shape {raw.shape}")
    if g1.shape != ((raw.shape[0] + 1) // 2, (raw.shape[1] + 1) // 2) or g1.dtype != np.float32:
        raise ValueError("correct_reduce: g1 must be float32 of half the frame's shape")
    if lut.dtype != np.float32 or lut.shape != (65536,):
        raise ValueError("correct_reduce: lut must be a float32 table of 65536 entries")
    if maps is None:
        K.copy_down2_lut(raw, lut, out, g1)
        return out
    if not isinstance(maps, CalibrationMaps):
        raise TypeError(f"maps must be CalibrationMaps, got {type(maps).__name__}")
    if maps.shape != raw.shape:
        raise ValueError(f"calibration maps {maps.shape} do not match the frame {raw.shape}")
    if area is None:
        K.correct_down2_lut(raw, maps.offset, maps.gain, lut, out, g1)
    else:
        f, small = int(area[0]), area[1]
        h, w = raw.shape
        if not 1 <= f <= MAX_AREA_FACTOR:
            raise ValueError(f"correct_reduce: area factor must be in 1..{MAX_AREA_FACTOR}")
        if (small.shape != (-(-h // f), -(-w // f)) or small.dtype != np.float32
                or not small.flags.c_contiguous):
            raise ValueError("correct_reduce: small must be C-contiguous float32 of shape "
                             "(ceil(h / f), ceil(w / f))")
        if f == 2:
            K.correct_down2_pair_lut(raw, maps.offset, maps.gain, lut, out, g1, small)
        else:
            K.correct_down2_area_lut(raw, maps.offset, maps.gain, lut, out, g1, f, small)
    if plan is None:
        plan = DefectPlan(maps.defect)
    plan.apply(out)
    if len(plan):
        if area is not None and int(area[0]) == 2:
            K.patch_down2_pair_lut(out, lut, plan.idx, g1, area[1])
        else:
            K.patch_down2_lut(out, lut, plan.idx, g1)
            if area is not None:
                K.patch_area(out, int(area[0]), plan.idx, area[1])
    return out
