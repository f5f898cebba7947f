"""Validating wrappers around the compiled LUT and histogram kernels (``native._lut``)."""

from __future__ import annotations

import numpy as np

from native import _lut

__all__ = ["apply_lut", "histogram_u16", "LUT_SIZE"]

#: Number of entries of a uint16-indexed lookup table.
LUT_SIZE = 65536


def _check_u16_image(src: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(src, np.ndarray):
        raise TypeError(f"{what}: expected a numpy array, got {type(src).__name__}")
    if src.dtype != np.uint16:
        raise TypeError(f"{what}: expected a uint16 image, got {src.dtype}")
    if src.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D image, got shape {src.shape}")
    if src.size == 0:
        raise ValueError(f"{what}: empty image")
    return np.ascontiguousarray(src)


def apply_lut(src: np.ndarray, lut: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Map a uint16 image through a lookup table: ``out[i, j] = lut[src[i, j]]``.

    Parameters
    ----------
    src : numpy.ndarray
        2-D uint16 image.
    lut : numpy.ndarray
        1-D uint8 or uint16 table. A table shorter than 65536 entries is extended with its
        last entry (values beyond the table saturate).
    out : numpy.ndarray, optional
        Preallocated C-contiguous output of ``src``'s shape and ``lut``'s dtype.

    Returns
    -------
    numpy.ndarray
        The mapped image (``out`` when given).

    Examples
    --------
    >>> import numpy as np
    >>> lut = (np.arange(LUT_SIZE) >> 8).astype(np.uint8)  # 16 to 8 bits
    >>> apply_lut(np.array([[0, 256, 65535]], np.uint16), lut).tolist()
    [[0, 1, 255]]
    """
    src = _check_u16_image(src, "apply_lut")
    lut = np.asarray(lut)
    if lut.ndim != 1 or lut.size == 0:
        raise ValueError(f"apply_lut: lut must be a non-empty 1-D table, got shape {lut.shape}")
    if lut.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"apply_lut: lut dtype must be uint8 or uint16, got {lut.dtype}")
    if lut.size > LUT_SIZE:
        raise ValueError(f"apply_lut: lut has {lut.size} entries, at most {LUT_SIZE} allowed")
    if lut.size < LUT_SIZE:
        lut = np.concatenate([lut, np.full(LUT_SIZE - lut.size, lut[-1], lut.dtype)])
    lut = np.ascontiguousarray(lut)
    if out is None:
        out = np.empty(src.shape, lut.dtype)
    elif (out.shape != src.shape or out.dtype != lut.dtype
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"apply_lut: out must be a writable C-contiguous {lut.dtype} array "
                         f"of shape {src.shape}")
    if lut.dtype == np.uint8:
        _lut.apply_lut_u16_u8(src, lut, out)
    else:
        _lut.apply_lut_u16_u16(src, lut, out)
    return out


def histogram_u16(src: np.ndarray, step: int = 1, mask: np.ndarray | None = None
                  ) -> tuple[np.ndarray, int]:
    """65536-bin histogram of a uint16 image sampled every ``step`` rows and columns.

    Parameters
    ----------
    src : numpy.ndarray
        2-D uint16 image.
    step : int
        Subsampling step (>= 1).
    mask : numpy.ndarray, optional
        bool or uint8 map of ``src``'s shape; only pixels where it is set count.

    Returns
    -------
    (numpy.ndarray, int)
        int64 histogram and the number of samples counted.

    Examples
    --------
    >>> import numpy as np
    >>> hist, n = histogram_u16(np.array([[1, 1, 2, 7]], np.uint16))
    >>> hist[:8].tolist(), n
    ([0, 2, 1, 0, 0, 0, 0, 1], 4)
    """
    src = _check_u16_image(src, "histogram_u16")
    if int(step) != step or step < 1:
        raise ValueError(f"histogram_u16: step must be an integer >= 1, got {step!r}")
    m = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != src.shape:
            raise ValueError(f"histogram_u16: mask shape {mask.shape} != image {src.shape}")
        if mask.dtype not in (np.bool_, np.uint8):
            raise TypeError(f"histogram_u16: mask must be bool or uint8, got {mask.dtype}")
        m = np.ascontiguousarray(mask).view(np.uint8)
    hist = np.zeros(LUT_SIZE, np.int64)
    n = _lut.histogram_u16(src, hist, int(step), m)
    return hist, int(n)
