# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""LUT application and histogram kernels on uint16 frames.

Private: call through ``processing.lut``, which validates dtypes and shapes.
"""

import numpy as np
cimport numpy as cnp

cnp.import_array()

ctypedef cnp.uint16_t u16
ctypedef cnp.uint8_t u8
ctypedef cnp.int64_t i64


def apply_lut_u16_u8(const u16[:, ::1] src, const u8[::1] lut, u8[:, ::1] dst):
    """dst[i, j] = lut[src[i, j]] (lut has 65536 entries)."""
    cdef Py_ssize_t i, j, rows = src.shape[0], cols = src.shape[1]
    with nogil:
        for i in range(rows):
            for j in range(cols):
                dst[i, j] = lut[src[i, j]]


def apply_lut_u16_u16(const u16[:, ::1] src, const u16[::1] lut, u16[:, ::1] dst):
    """dst[i, j] = lut[src[i, j]] (lut has 65536 entries)."""
    cdef Py_ssize_t i, j, rows = src.shape[0], cols = src.shape[1]
    with nogil:
        for i in range(rows):
            for j in range(cols):
                dst[i, j] = lut[src[i, j]]


def histogram_u16(const u16[:, ::1] src, i64[::1] hist, Py_ssize_t step=1,
                  const u8[:, ::1] mask=None):
    """Accumulate a 65536-bin histogram of src sampled every ``step`` rows and columns.

    When ``mask`` is given (same shape as src), only pixels with a non-zero mask count.
    Returns the number of samples counted.
    """
    cdef Py_ssize_t i, j, rows = src.shape[0], cols = src.shape[1]
    cdef Py_ssize_t s = step
    cdef i64 n = 0
    cdef bint use_mask = mask is not None
    if s < 1:
        raise ValueError("step must be >= 1")
    with nogil:
        i = 0
        while i < rows:
            j = 0
            while j < cols:
                if not use_mask or mask[i, j]:
                    hist[src[i, j]] += 1
                    n += 1
                j += s
            i += s
    return n
