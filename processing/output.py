"""Output stage: presentation mapping, VOI LUT preview and orientation.

The presentation image is MONOCHROME2 with ``bits_stored`` 12 or 16: processed
log-exposure values ``v`` in ``[lo, hi]`` map linearly and inverted to codes
``clip(floor((hi - v) * scale + 0.5), 0, maxcode)`` (high dose dark, bone bright). The
window is expressed in those codes; the 8-bit preview is the presentation image through
the window's VOI LUT (:func:`processing.window.voi_lut`; the fused kernel evaluates the
same linear VOI function arithmetically, bit-identical to the table). The finest pyramid level, the
collapse and this mapping run in one full-resolution pass
(:func:`processing._kernels.final_pass`).

Orientation follows the view's ``ImageRotate`` (0/90/180/270 degrees clockwise) and then
``ImageHorizontalFlip`` (mirror left-right after rotating).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from processing import _kernels as K
from processing.enhance import Pyramid
from processing.window import linear_window

__all__ = ["Presentation", "present", "orient", "oriented_shape", "ROTATIONS"]

#: Valid ImageRotate values (degrees clockwise).
ROTATIONS = (0, 90, 180, 270)
_CV_ROT = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
           270: cv2.ROTATE_90_COUNTERCLOCKWISE}


@dataclass(frozen=True)
class Presentation:
    """Linear inverted map from processed values to presentation codes."""

    lo: float
    hi: float
    bits: int

    def __post_init__(self) -> None:
        if self.bits not in (12, 16):
            raise ValueError(f"bits must be 12 or 16, got {self.bits}")
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"presentation range must be finite with hi > lo, got "
                             f"[{self.lo}, {self.hi}]")

    @property
    def maxcode(self) -> int:
        """Largest code (4095 or 65535)."""
        return (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """Codes per processed unit."""
        return self.maxcode / (self.hi - self.lo)

    def code(self, v: float) -> float:
        """Presentation code of a processed value (unclipped, unrounded)."""
        return (self.hi - v) * self.scale


def check_orientation(rotate: int, hflip: bool) -> tuple[int, bool]:
    """Validate ``ImageRotate`` and ``ImageHorizontalFlip`` values."""
    try:
        r = int(rotate)
    except (TypeError, ValueError):
        raise ValueError(f"rotate must be one of {ROTATIONS}, got {rotate!r}") from None
    if r != rotate or r not in ROTATIONS or isinstance(rotate, bool):
        raise ValueError(f"rotate must be one of {ROTATIONS}, got {rotate!r}")
    return r, bool(hflip)


def oriented_shape(shape: tuple[int, int], rotate: int) -> tuple[int, int]:
    """Shape of a frame after rotating by ``rotate`` degrees."""
    return (shape[1], shape[0]) if rotate in (90, 270) else (shape[0], shape[1])


def orient(img: np.ndarray, rotate: int = 0, hflip: bool = False,
           out: np.ndarray | None = None) -> np.ndarray:
    """Rotate clockwise by ``rotate`` degrees, then mirror left-right when ``hflip``.

    Returns ``img`` itself when nothing is to be done and ``out`` is None.

    >>> import numpy as np
    >>> orient(np.arange(6, dtype=np.uint16).reshape(2, 3), 90).tolist()
    [[3, 0], [4, 1], [5, 2]]
    >>> orient(np.arange(6, dtype=np.uint16).reshape(2, 3), 0, hflip=True).tolist()
    [[2, 1, 0], [5, 4, 3]]
    """
    rotate, hflip = check_orientation(rotate, hflip)
    if rotate == 0 and not hflip:
        if out is None:
            return img
        np.copyto(out, img)
        return out
    shape = oriented_shape(img.shape, rotate)
    if out is None:
        out = np.empty(shape, img.dtype)
    elif out.shape != shape or out.dtype != img.dtype:
        raise ValueError(f"orient: out must be {img.dtype} {shape}")
    if rotate == 0:
        cv2.flip(img, 1, dst=out)
    elif hflip:
        # rotate then mirror == transpose (90) / flip vertically (180) / flip both (270)
        if rotate == 90:
            cv2.transpose(img, dst=out)
        elif rotate == 180:
            cv2.flip(img, 0, dst=out)
        else:
            cv2.transpose(img, dst=out)
            cv2.flip(out, -1, dst=out)
    else:
        cv2.rotate(img, _CV_ROT[rotate], dst=out)
    return out


def present(src: np.ndarray, lut: np.ndarray, pyr: Pyramid, params: np.ndarray,
            pres: Presentation, window: tuple[float, float], out_img: np.ndarray,
            out_prev: np.ndarray) -> None:
    """Fused finest level + collapse + presentation mapping + windowed preview.

    Parameters
    ----------
    src : numpy.ndarray
        Corrected uint16 frame (C-contiguous).
    lut : numpy.ndarray
        float32 65536-entry table to the processing domain (log exposure).
    pyr : Pyramid
        Built and collapsed pyramid of ``src``.
    params : numpy.ndarray
        Level-0 transfer parameters (:func:`processing.enhance.transfer_params`).
    pres : Presentation
        Code mapping.
    window : (float, float)
        Window center and width in presentation codes; the preview equals
        ``voi_lut(center, width, pres.maxcode + 1)[out_img]`` exactly.
    out_img, out_prev : numpy.ndarray
        uint16 and uint8 outputs of ``src``'s shape; ``out_img`` may be ``src`` itself
        (each pixel is read before it is overwritten).
    """
    for o, dt in ((out_img, np.uint16), (out_prev, np.uint8)):
        if o.shape != src.shape or o.dtype != dt or not o.flags.c_contiguous:
            raise ValueError(f"present: outputs must be C-contiguous {src.shape}")
    win = np.array(linear_window(*window), np.float64)
    K.final_pass(src, lut, pyr.g[0], pyr.c[0], params, np.float32(pres.hi),
                 np.float32(pres.scale), np.float32(pres.maxcode), win, out_img, out_prev)


def orient_shutter(attrs: dict, shape: tuple[int, int], rotate: int = 0,
                   hflip: bool = False) -> dict:
    """Map DICOM Display Shutter attributes of a raw frame onto the oriented image.

    ``attrs`` are 1-based shutter attributes in the coordinates of the raw frame of
    ``shape`` (rows, columns), e.g. from ``CollimationResult.shutter_attributes()``;
    the result describes the same field on the image produced by :func:`orient` with
    ``rotate`` (clockwise degrees) and ``hflip``.

    >>> orient_shutter({"ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [1, 2],
    ...                 "RadiusOfCircularShutter": 5}, (10, 20), 90)["CenterOfCircularShutter"]
    [2, 10]
    """
    rotate, hflip = check_orientation(rotate, hflip)
    if not attrs or (rotate == 0 and not hflip):
        return dict(attrs)
    rows, cols = shape
    out_cols = oriented_shape(shape, rotate)[1]

    def point(r1: int, c1: int) -> tuple[int, int]:
        r, c = r1 - 1, c1 - 1
        if rotate == 90:
            r, c = c, rows - 1 - r
        elif rotate == 180:
            r, c = rows - 1 - r, cols - 1 - c
        elif rotate == 270:
            r, c = cols - 1 - c, r
        if hflip:
            c = out_cols - 1 - c
        return r + 1, c + 1

    out = dict(attrs)
    shape_kind = attrs.get("ShutterShape", "")
    if "RECTANGULAR" in shape_kind:
        r0, c0 = point(attrs["ShutterUpperHorizontalEdge"], attrs["ShutterLeftVerticalEdge"])
        r1, c1 = point(attrs["ShutterLowerHorizontalEdge"], attrs["ShutterRightVerticalEdge"])
        out.update(ShutterUpperHorizontalEdge=min(r0, r1), ShutterLowerHorizontalEdge=max(r0, r1),
                   ShutterLeftVerticalEdge=min(c0, c1), ShutterRightVerticalEdge=max(c0, c1))
    if "CIRCULAR" in shape_kind:
        out["CenterOfCircularShutter"] = list(point(*attrs["CenterOfCircularShutter"]))
    if "POLYGONAL" in shape_kind:
        v = attrs["VerticesOfThePolygonalShutter"]
        pts = [point(v[i], v[i + 1]) for i in range(0, len(v), 2)]
        out["VerticesOfThePolygonalShutter"] = [x for p in pts for x in p]
    return out
