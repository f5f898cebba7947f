"""numba kernels of the image pipeline (private; the stage modules validate input).

All kernels are compiled with ``cache=True`` and never query the thread count (a kernel
that calls ``numba.get_num_threads()`` is silently not cached): parallel kernels split
their rows with ``prange`` over the threads numba is configured with (chunks of
:data:`CHUNK` rows; small pyramid levels have ``*_serial`` twins that skip waking the
workers). ``error_model="numpy"`` drops Python's division-by-zero checks so that loops
with divisions vectorise, and table gathers (``lut[src]``) run in a loop of their own
into a row buffer so that the arithmetic around them vectorises.

Pyramid conventions (shared with the NumPy references in the tests):

* ``down2``: 2x2 box mean, output shape ``((h + 1) // 2, (w + 1) // 2)``; an odd last
  row/column is averaged with itself (edge clamp).
* ``up2``: bilinear, output pixel ``i`` samples the coarse grid at ``0.5 * i - 0.25``,
  clamped to the grid.
* Detail transfer (see :mod:`processing.enhance`), parameters ``tr = (g, kb, t4, nz)``:
  ``f(x) = g * x / (1 + kb |x|) * (1 - nz t4 / (t4 + x^4))``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_PJIT = {"cache": True, "nogil": True, "parallel": True, "error_model": "numpy"}

#: Rows per parallel chunk of the row-based kernels.
CHUNK = 32


# ------------------------------------------------------------------------------ corrections

@nb.njit(**_PJIT)
def correct_u16(raw, offset, gain, out):  # pragma: no cover - compiled
    """out = clip(floor((raw - offset) * gain + 0.5), 0, 65535) as uint16 (float32 math)."""
    h, w = raw.shape
    for i in nb.prange(h):
        for j in range(w):
            v = (np.float32(raw[i, j]) - offset[i, j]) * gain[i, j] + np.float32(0.5)
            if v < 0.0:
                v = 0.0
            elif v > 65535.0:
                v = 65535.0
            out[i, j] = np.uint16(np.int32(v))


@nb.njit(**_JIT)
def _correct_row(raw, offset, gain, lut, out, xr):  # pragma: no cover - compiled
    w = raw.size
    for j in range(w):
        v = (np.float32(raw[j]) - offset[j]) * gain[j] + np.float32(0.5)
        v = min(max(v, np.float32(0.0)), np.float32(65535.0))
        out[j] = np.uint16(np.int32(v))
    for j in range(w):
        xr[j] = lut[out[j]]
    xr[w] = xr[w - 1]


@nb.njit(**_JIT)
def _copy_row(raw, lut, out, xr):  # pragma: no cover - compiled
    w = raw.size
    for j in range(w):
        out[j] = raw[j]
    for j in range(w):
        xr[j] = lut[raw[j]]
    xr[w] = xr[w - 1]


@nb.njit(**_PJIT)
def correct_down2_lut(raw, offset, gain, lut, out, g1):  # pragma: no cover - compiled
    """:func:`correct_u16` into ``out`` and ``g1 = down2(lut[out])`` in the same pass.

    Rows are processed in pairs (one ``g1`` row each) while they are in cache.
    """
    h, w = raw.shape
    ho, wo = g1.shape
    for p in nb.prange(ho):
        r0 = 2 * p
        r1 = min(r0 + 1, h - 1)
        x0 = np.empty(w + 1, np.float32)
        x1 = np.empty(w + 1, np.float32)
        _correct_row(raw[r0], offset[r0], gain[r0], lut, out[r0], x0)
        _correct_row(raw[r1], offset[r1], gain[r1], lut, out[r1], x1)
        for j in range(wo):
            g1[p, j] = np.float32(0.25) * (x0[2 * j] + x0[2 * j + 1] + x1[2 * j] + x1[2 * j + 1])


@nb.njit(**_JIT)
def _correct_row_area(raw, offset, gain, lut, out, xr, acc):  # pragma: no cover - compiled
    """:func:`_correct_row`, also adding the corrected row to the block accumulator."""
    w = raw.size
    for j in range(w):
        v = (np.float32(raw[j]) - offset[j]) * gain[j] + np.float32(0.5)
        v = min(max(v, np.float32(0.0)), np.float32(65535.0))
        q = np.int32(v)
        out[j] = np.uint16(q)
        acc[j] += np.float32(q)
    for j in range(w):
        xr[j] = lut[out[j]]
    xr[w] = xr[w - 1]


@nb.njit(**_JIT)
def _area_finish(acc, f, nrows, out_row):  # pragma: no cover - compiled
    """Block sums of ``acc`` (column sums over ``nrows`` rows) into ``out_row``; resets acc.

    Same arithmetic as ``processing._collimator_kernels.area_downsample``.
    """
    w = acc.size
    wf = w // f
    inv = np.float32(1.0 / (nrows * f))
    for j in range(wf):
        s = np.float32(0.0)
        b = j * f
        for c in range(f):
            s += acc[b + c]
        out_row[j] = s * inv
    if wf < out_row.size:
        s = np.float32(0.0)
        for c in range(wf * f, w):
            s += acc[c]
        out_row[wf] = s / np.float32(nrows * (w - wf * f))
    for j in range(w):
        acc[j] = np.float32(0.0)


@nb.njit(**_PJIT)
def correct_down2_area_lut(raw, offset, gain, lut, out, g1, f,
                           small):  # pragma: no cover - compiled
    """:func:`correct_down2_lut` plus ``small`` = the ``f`` x ``f`` block mean of ``out``.

    ``small`` has shape ``(ceil(h / f), ceil(w / f))`` (blocks cut by the edge averaged
    over their valid pixels), as ``processing._collimator_kernels.area_downsample`` of
    the corrected frame; for ``f <= 15`` every float32 block sum of uint16 values is exact,
    so both are bit-identical. Chunks of a multiple of ``lcm(2, f)`` rows keep pairs and
    blocks whole.
    """
    h, w = raw.shape
    ho, wo = g1.shape
    rows = f if f % 2 == 0 else 2 * f
    rows *= max(1, CHUNK // rows)  # about CHUNK rows per task: fewer scratch allocations
    pairs = rows // 2
    nchunks = (h + rows - 1) // rows
    for c in nb.prange(nchunks):
        x0 = np.empty(w + 1, np.float32)
        x1 = np.empty(w + 1, np.float32)
        acc = np.zeros(w, np.float32)
        for p in range(c * pairs, min((c + 1) * pairs, ho)):
            r0 = 2 * p
            r1 = min(r0 + 1, h - 1)
            _correct_row_area(raw[r0], offset[r0], gain[r0], lut, out[r0], x0, acc)
            if (r0 + 1) % f == 0 or r0 == h - 1:
                _area_finish(acc, f, r0 - (r0 // f) * f + 1, small[r0 // f])
            if r1 != r0:
                _correct_row_area(raw[r1], offset[r1], gain[r1], lut, out[r1], x1, acc)
                if (r1 + 1) % f == 0 or r1 == h - 1:
                    _area_finish(acc, f, r1 - (r1 // f) * f + 1, small[r1 // f])
            else:
                for j in range(w + 1):
                    x1[j] = x0[j]
            for j in range(wo):
                g1[p, j] = np.float32(0.25) * (x0[2 * j] + x0[2 * j + 1] + x1[2 * j] + x1[2 * j + 1])


@nb.njit(**_PJIT)
def correct_down2_pair_lut(raw, offset, gain, lut, out, g1, small):  # pragma: no cover
    """:func:`correct_down2_area_lut` for ``f = 2``: the work image is the 2 x 2 block
    mean of ``out``, the same blocks as ``g1``'s, so both come from the same row pair.

    ``small`` has ``g1``'s shape. Every sum is of at most four uint16 values and the
    scale is a power of two, so the result is bit-identical to the general kernel's
    (edge blocks cut by an odd height or width average their valid pixels the same way).
    """
    h, w = raw.shape
    ho, wo = g1.shape
    nchunks = (ho + CHUNK - 1) // CHUNK
    q = np.float32(0.25)
    hf = np.float32(0.5)
    for c in nb.prange(nchunks):
        x0 = np.empty(w + 1, np.float32)
        x1 = np.empty(w + 1, np.float32)
        for p in range(c * CHUNK, min((c + 1) * CHUNK, ho)):
            r0 = 2 * p
            r1 = min(r0 + 1, h - 1)
            o0 = out[r0]
            o1 = out[r1]
            _correct_row(raw[r0], offset[r0], gain[r0], lut, o0, x0)
            if r1 != r0:
                _correct_row(raw[r1], offset[r1], gain[r1], lut, o1, x1)
                for j in range(w // 2):
                    small[p, j] = q * ((np.float32(o0[2 * j]) + np.float32(o1[2 * j]))
                                       + (np.float32(o0[2 * j + 1]) + np.float32(o1[2 * j + 1])))
                if w % 2:
                    small[p, wo - 1] = hf * (np.float32(o0[w - 1]) + np.float32(o1[w - 1]))
            else:
                for j in range(w + 1):
                    x1[j] = x0[j]
                for j in range(w // 2):
                    small[p, j] = hf * (np.float32(o0[2 * j]) + np.float32(o0[2 * j + 1]))
                if w % 2:
                    small[p, wo - 1] = np.float32(o0[w - 1])
            for j in range(wo):
                g1[p, j] = np.float32(0.25) * (x0[2 * j] + x0[2 * j + 1] + x1[2 * j] + x1[2 * j + 1])


@nb.njit(**_JIT)
def _area_block(src, f, bi, bj, small):  # pragma: no cover - compiled
    h, w = src.shape
    r0 = bi * f
    r1 = min(r0 + f, h)
    c0 = bj * f
    c1 = min(c0 + f, w)
    s = np.float32(0.0)
    for c in range(c0, c1):
        a = np.float32(0.0)
        for r in range(r0, r1):
            a += np.float32(src[r, c])
        s += a
    if c1 - c0 == f:
        small[bi, bj] = s * np.float32(1.0 / ((r1 - r0) * f))
    else:
        small[bi, bj] = s / np.float32((r1 - r0) * (c1 - c0))


@nb.njit(**_JIT)
def patch_area(src, f, idx, small):  # pragma: no cover - compiled
    """Recompute the ``small`` blocks (``f`` x ``f`` block means of ``src``, as in
    :func:`correct_down2_area_lut`) that contain the flat indices ``idx``."""
    w = src.shape[1]
    done = np.zeros(small.shape, np.bool_)
    for k in range(idx.size):
        bi = (idx[k] // w) // f
        bj = (idx[k] % w) // f
        if not done[bi, bj]:
            done[bi, bj] = True
            _area_block(src, f, bi, bj, small)


@nb.njit(**_PJIT)
def copy_down2_lut(raw, lut, out, g1):  # pragma: no cover - compiled
    """out = raw and g1 = down2(lut[raw]) in one pass (frames without calibration)."""
    h, w = raw.shape
    ho, wo = g1.shape
    for p in nb.prange(ho):
        r0 = 2 * p
        r1 = min(r0 + 1, h - 1)
        x0 = np.empty(w + 1, np.float32)
        x1 = np.empty(w + 1, np.float32)
        _copy_row(raw[r0], lut, out[r0], x0)
        _copy_row(raw[r1], lut, out[r1], x1)
        for j in range(wo):
            g1[p, j] = np.float32(0.25) * (x0[2 * j] + x0[2 * j + 1] + x1[2 * j] + x1[2 * j + 1])


@nb.njit(**_JIT, inline="always")
def _patch_g1(src, lut, flat, g1):  # pragma: no cover - compiled
    """Recompute the ``g1 = down2(lut[src])`` pixel over the flat index ``flat``; returns
    its 2 x 2 block ``(i, j, r0, r1, c0, c1)`` (edge-clamped)."""
    h, w = src.shape
    r, c = divmod(flat, w)
    i = r >> 1
    j = c >> 1
    r0 = 2 * i
    r1 = min(r0 + 1, h - 1)
    c0 = 2 * j
    c1 = min(c0 + 1, w - 1)
    g1[i, j] = np.float32(0.25) * (lut[src[r0, c0]] + lut[src[r0, c1]]
                                   + lut[src[r1, c0]] + lut[src[r1, c1]])
    return i, j, r0, r1, c0, c1


@nb.njit(**_JIT)
def patch_down2_lut(src, lut, idx, g1):  # pragma: no cover - compiled
    """Recompute the ``g1 = down2(lut[src])`` pixels that cover the flat indices ``idx``."""
    for k in range(idx.size):
        _patch_g1(src, lut, idx[k], g1)


@nb.njit(**_JIT)
def patch_down2_pair_lut(src, lut, idx, g1, small):  # pragma: no cover - compiled
    """:func:`patch_down2_lut` and, in the same visit, the ``small`` pixel (the 2 x 2 block
    mean of ``src``, as :func:`correct_down2_pair_lut` computes it) of each block that
    holds a flat index of ``idx``."""
    for k in range(idx.size):
        i, j, r0, r1, c0, c1 = _patch_g1(src, lut, idx[k], g1)
        # block sums of at most four uint16 values are exact: any order gives the same
        s = np.float32(src[r0, c0])
        n = 1
        if c1 != c0:
            s += np.float32(src[r0, c1])
            n += 1
        if r1 != r0:
            s += np.float32(src[r1, c0])
            n += 1
            if c1 != c0:
                s += np.float32(src[r1, c1])
                n += 1
        small[i, j] = s * (np.float32(0.25) if n == 4 else
                           (np.float32(0.5) if n == 2 else np.float32(1.0)))


@nb.njit(**_JIT)
def defect_plan(defect, radius):  # pragma: no cover - compiled
    """For each defect pixel, the nearest good pixel left/right/up/down within ``radius``
    (or, when none of these exists, along the four diagonals).

    Returns (flat index int64[n], sources int64[n, 4], weights float32[n, 4]) with weight
    1/distance for found sources and 0 otherwise (source index then 0).
    """
    h, w = defect.shape
    n = 0
    for i in range(h):
        for j in range(w):
            if defect[i, j]:
                n += 1
    idx = np.empty(n, np.int64)
    src = np.zeros((n, 4), np.int64)
    wts = np.zeros((n, 4), np.float32)
    k = 0
    for i in range(h):
        for j in range(w):
            if not defect[i, j]:
                continue
            idx[k] = i * w + j
            # axis directions first (left, right, up, down); the diagonals only when no
            # axis direction has a good pixel (crossing of a defect row and column)
            for pass_ in range(2):
                for m in range(4):
                    if pass_ == 0:
                        di = (0, 0, -1, 1)[m]
                        dj = (-1, 1, 0, 0)[m]
                    else:
                        di = (-1, -1, 1, 1)[m]
                        dj = (-1, 1, -1, 1)[m]
                    for d in range(1, radius + 1):
                        y = i + di * d
                        x = j + dj * d
                        if y < 0 or y >= h or x < 0 or x >= w:
                            break
                        if not defect[y, x]:
                            src[k, m] = y * w + x
                            wts[k, m] = 1.0 / (d if pass_ == 0 else d * 1.4142135623730951)
                            break
                if wts[k, 0] + wts[k, 1] + wts[k, 2] + wts[k, 3] > 0:
                    break
            k += 1
    return idx, src, wts


@nb.njit(**_JIT)
def apply_defects(img, idx, src, wts):  # pragma: no cover - compiled
    """Replace defect pixels of a uint16 image by the weighted mean of their sources.

    A defect without any good source keeps its value. Rounding: floor(mean + 0.5).
    """
    flat = img.reshape(-1)
    for k in range(idx.size):
        s = 0.0
        ws = 0.0
        for m in range(4):
            wk = np.float64(wts[k, m])
            if wk > 0.0:
                s += wk * np.float64(flat[src[k, m]])
                ws += wk
        if ws > 0.0:
            flat[idx[k]] = np.uint16(np.int64(s / ws + 0.5))


# ------------------------------------------------------------------------------ histograms

@nb.njit(**_JIT)
def hist_f32(img, lo, hi, nbins, step, mask, mscale, gate, gate_max,
             hist):  # pragma: no cover - compiled
    """Histogram of img[::step, ::step] over [lo, hi) into ``nbins`` bins (added to hist).

    Values below lo go to bin 0, at or above hi to the last bin; NaN is skipped. When
    ``mask`` has more than one element, only pixels with mask[i*mscale, j*mscale] set
    count; when ``gate`` (same shape as img) has more than one element, only pixels with
    gate[i, j] < gate_max count. Returns the number of samples counted.
    """
    h, w = img.shape
    use_mask = mask.size > 1
    use_gate = gate.size > 1
    scale = nbins / (hi - lo)
    n = 0
    for i in range(0, h, step):
        for j in range(0, w, step):
            if use_mask and not mask[i * mscale, j * mscale]:
                continue
            if use_gate and not gate[i, j] < gate_max:
                continue
            v = img[i, j]
            if v != v:
                continue
            b = int((v - lo) * scale)
            if b < 0:
                b = 0
            elif b >= nbins:
                b = nbins - 1
            hist[b] += 1
            n += 1
    return n


@nb.njit(**_JIT)
def gather_samples(img, step, mask, mscale, gate, gate_max, out):  # pragma: no cover
    """The non-NaN samples of img[::step, ::step] (mask/gate as in :func:`hist_f32`) into
    ``out`` in row order; returns their number (``out`` must hold every sampled pixel)."""
    h, w = img.shape
    use_mask = mask.size > 1
    use_gate = gate.size > 1
    n = 0
    for i in range(0, h, step):
        for j in range(0, w, step):
            if use_mask and not mask[i * mscale, j * mscale]:
                continue
            if use_gate and not gate[i, j] < gate_max:
                continue
            v = img[i, j]
            if v != v:
                continue
            out[n] = v
            n += 1
    return n


@nb.njit(**_JIT)
def gather_pairs(img, ref, step, mask, mscale, out_ref, out_img):  # pragma: no cover
    """The samples of :func:`gather_samples` on ``ref`` (no gate) into ``out_ref`` and,
    at the same pixels, those of ``img`` into ``out_img``; returns their number."""
    h, w = ref.shape
    use_mask = mask.size > 1
    n = 0
    for i in range(0, h, step):
        for j in range(0, w, step):
            if use_mask and not mask[i * mscale, j * mscale]:
                continue
            v = ref[i, j]
            if v != v:
                continue
            out_ref[n] = v
            out_img[n] = img[i, j]
            n += 1
    return n


@nb.njit(**_JIT)
def compact_gated(vals, gate, gate_max, out):  # pragma: no cover - compiled
    """The non-NaN ``vals[k]`` with ``gate[k] < gate_max`` into ``out`` in order; returns
    their number."""
    n = 0
    for k in range(vals.size):
        v = vals[k]
        if gate[k] < gate_max and v == v:
            out[n] = v
            n += 1
    return n


@nb.njit(**_JIT)
def minmax_hist_1d(vals, nbins, hist):  # pragma: no cover - compiled
    """:func:`minmax_f32` then :func:`hist_f32` (into ``hist``, over the sampled finite
    range) of the samples ``vals`` (no NaN). Returns (lo, hi, finite count), the range
    the histogram spans (hi widened when the samples are constant); the histogram is
    left untouched when there is no finite sample."""
    lo = np.inf
    hi = -np.inf
    n = 0
    for k in range(vals.size):
        v = vals[k]
        if v == np.inf or v == -np.inf:
            continue
        if v < lo:
            lo = v
        if v > hi:
            hi = v
        n += 1
    if n == 0:
        return np.float64(lo), np.float64(hi), n
    flo, fhi = hist_range_1d(vals, np.float64(lo), np.float64(hi), nbins, hist)
    return flo, fhi, n


@nb.njit(**_JIT)
def hist_range_1d(vals, lo, hi, nbins, hist):  # pragma: no cover - compiled
    """The histogram pass of :func:`minmax_hist_1d` given the samples' finite min ``lo``
    and max ``hi`` (float64): every sample of ``vals`` is binned into ``hist`` over
    [lo, hi) (hi widened when ``hi <= lo``). Returns the range (lo, hi) the histogram
    spans."""
    flo = lo
    fhi = hi
    if fhi <= flo:
        fhi = flo + max(abs(flo) * 1e-6, 1e-6)
    # the same float64 arithmetic as hist_f32 with lo/hi passed as Python floats
    scale = nbins / (fhi - flo)
    for k in range(vals.size):
        b = int((vals[k] - flo) * scale)
        if b < 0:
            b = 0
        elif b >= nbins:
            b = nbins - 1
        hist[b] += 1
    return flo, fhi


@nb.njit(**_JIT)
def hist_search(hist, target):  # pragma: no cover - compiled
    """First bin ``b`` whose cumulative count reaches ``target`` (``searchsorted(cumsum(
    hist), target, "left")``, at most the last bin) and the cumulative count before it."""
    s = 0
    for b in range(hist.size):
        s += hist[b]
        if s >= target:
            return b, s - hist[b]
    b = hist.size - 1
    return b, s - hist[b]


@nb.njit(**_JIT)
def minmax_f32(img, step, mask, mscale, gate, gate_max):  # pragma: no cover - compiled
    """(min, max, count) of the finite samples of img[::step, ::step] (mask/gate as in
    :func:`hist_f32`)."""
    h, w = img.shape
    use_mask = mask.size > 1
    use_gate = gate.size > 1
    lo = np.inf
    hi = -np.inf
    n = 0
    for i in range(0, h, step):
        for j in range(0, w, step):
            if use_mask and not mask[i * mscale, j * mscale]:
                continue
            if use_gate and not gate[i, j] < gate_max:
                continue
            v = img[i, j]
            if v != v or v == np.inf or v == -np.inf:
                continue
            if v < lo:
                lo = v
            if v > hi:
                hi = v
            n += 1
    return lo, hi, n


# ------------------------------------------------------------------------------ pyramid

@nb.njit(**_PJIT)
def down2_lut(src, lut, out):  # pragma: no cover - compiled
    """out = down2(lut[src]) for a uint16 source and a float32 65536-entry table."""
    h, w = src.shape
    ho, wo = out.shape
    for i in nb.prange(ho):
        r0 = 2 * i
        r1 = min(r0 + 1, h - 1)
        for j in range(wo):
            c0 = 2 * j
            c1 = min(c0 + 1, w - 1)
            out[i, j] = np.float32(0.25) * (lut[src[r0, c0]] + lut[src[r0, c1]]
                                            + lut[src[r1, c0]] + lut[src[r1, c1]])


@nb.njit(**_JIT)
def _down2_rows(src, out, i0, i1):  # pragma: no cover - compiled
    h, w = src.shape
    wo = out.shape[1]
    q = np.float32(0.25)
    for i in range(i0, i1):
        r0 = 2 * i
        r1 = min(r0 + 1, h - 1)
        a = src[r0]
        b = src[r1]
        o = out[i]
        # whole pairs without clamped indices (the loop vectorises), then an odd last
        # column (its pair clamped to itself)
        for j in range(w // 2):
            o[j] = q * (a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1])
        if w % 2:
            o[wo - 1] = q * (a[w - 1] + a[w - 1] + b[w - 1] + b[w - 1])


@nb.njit(**_PJIT)
def down2(src, out):  # pragma: no cover - compiled
    """out = down2(src) (2x2 box mean, edge clamp)."""
    ho = out.shape[0]
    nchunks = (ho + CHUNK - 1) // CHUNK
    for c in nb.prange(nchunks):
        _down2_rows(src, out, c * CHUNK, min(ho, (c + 1) * CHUNK))


@nb.njit(**_JIT)
def down2_serial(src, out):  # pragma: no cover - compiled
    """:func:`down2` on one thread (small levels: no thread wake-up cost)."""
    _down2_rows(src, out, 0, out.shape[0])


@nb.njit(**_JIT)
def _coord(i, n):  # pragma: no cover - compiled
    """Bilinear source row/col pair and weight of the second one for up2."""
    s = 0.5 * i - 0.25
    i0 = int(np.floor(s))
    f = s - i0
    i1 = i0 + 1
    if i0 < 0:
        i0 = 0
    if i1 > n - 1:
        i1 = n - 1
    if i0 > n - 1:
        i0 = n - 1
    return i0, i1, np.float32(f)


@nb.njit(**_JIT, fastmath=True)
def _transfer(x, g, kb, t4, nz):  # pragma: no cover - compiled
    """Detail transfer g * x * (1 + b) / (1 + b |x| / a) * (1 - nz t^4 / (t^4 + x^4)).

    ``kb`` is b / a; the caller folds (1 + b) into ``g``.
    """
    one = np.float32(1.0)
    ax = x if x >= 0 else -x
    x2 = x * x
    return g * x / (one + kb * ax) * (one - nz * t4 / (t4 + x2 * x2))


@nb.njit(**_JIT, fastmath=True)
def _up_row(src, i, tmp, out):  # pragma: no cover - compiled
    """Row i of up2(src) into out (tmp: scratch of src's width)."""
    hs, ws = src.shape
    w = out.size
    y0, y1, fy = _coord(i, hs)
    for m in range(ws):
        tmp[m] = src[y0, m] + (src[y1, m] - src[y0, m]) * fy
    q = np.float32(0.25)
    tq = np.float32(0.75)
    out[0] = tmp[0]
    for m in range(ws - 1):
        out[2 * m + 1] = tq * tmp[m] + q * tmp[m + 1]
        out[2 * m + 2] = q * tmp[m] + tq * tmp[m + 1]
    if w == 2 * ws:
        out[w - 1] = tmp[ws - 1]


@nb.njit(**_PJIT)
def up2(src, out):  # pragma: no cover - compiled
    """out = up2(src) (bilinear), out.shape is the finer level's shape."""
    hs, ws = src.shape
    h, w = out.shape
    for i in nb.prange(h):
        y0, y1, fy = _coord(i, hs)
        for j in range(w):
            x0, x1, fx = _coord(j, ws)
            a = src[y0, x0] + (src[y0, x1] - src[y0, x0]) * fx
            b = src[y1, x0] + (src[y1, x1] - src[y1, x0]) * fx
            out[i, j] = a + (b - a) * fy


@nb.njit(**_JIT, fastmath=True)
def _collapse_rows(g, g1, c1, tr, out, i0, i1):  # pragma: no cover - compiled
    w = g.shape[1]
    ws = g1.shape[1]
    gg = np.float32(tr[0])
    kb = np.float32(tr[1])
    t4 = np.float32(tr[2])
    nz = np.float32(tr[3])
    tmp = np.empty(ws, np.float32)
    ug = np.empty(w, np.float32)
    uc = np.empty(w, np.float32)
    for i in range(i0, i1):
        _up_row(g1, i, tmp, ug)
        _up_row(c1, i, tmp, uc)
        gi = g[i]
        oi = out[i]
        for j in range(w):
            oi[j] = uc[j] + _transfer(gi[j] - ug[j], gg, kb, t4, nz)


@nb.njit(**_PJIT)
def collapse_level(g, g1, c1, tr, out):  # pragma: no cover - compiled
    """out = up2(c1) + f(g - up2(g1)), f the transfer with parameters tr = (g, kb, t4, nz)."""
    h = g.shape[0]
    nchunks = (h + CHUNK - 1) // CHUNK
    for c in nb.prange(nchunks):
        _collapse_rows(g, g1, c1, tr, out, c * CHUNK, min(h, (c + 1) * CHUNK))


@nb.njit(**_JIT)
def collapse_level_serial(g, g1, c1, tr, out):  # pragma: no cover - compiled
    """:func:`collapse_level` on one thread (small levels)."""
    _collapse_rows(g, g1, c1, tr, out, 0, g.shape[0])


@nb.njit(**_JIT)
def latitude(g, mean, factor, out):  # pragma: no cover - compiled
    """out = mean + factor * (g - mean) (latitude compression of the residual level)."""
    h, w = g.shape
    for i in range(h):
        for j in range(w):
            out[i, j] = mean + factor * (g[i, j] - mean)


@nb.njit(**_JIT)
def _window_table(win, n, out):  # pragma: no cover - compiled
    """out[q] = the DICOM linear window of code q for q < n (see :func:`final_pass`)."""
    xlo = win[0]
    xhi = win[1]
    a = win[2]
    b = win[3] + 0.5
    for q in range(n):
        qf = np.float64(q)
        y = min(max(qf * a + b, 0.0), 255.0)
        if qf <= xlo:
            y = 0.0
        if qf > xhi:
            y = 255.0
        out[q] = np.uint8(np.int32(y))


@nb.njit(**_PJIT, fastmath=True)
def final_pass(src, lut, g1, c1, tr, hi, scale, maxcode, win,
               out_img, out_prev):  # pragma: no cover - compiled
    """Finest level, collapse, presentation codes and windowed preview in one pass.

    v = up2(c1) + f(lut[src] - up2(g1)); code = clip(floor((hi - v) * scale + 0.5), 0,
    maxcode) (inverted: high dose is dark, MONOCHROME2); out_img = code; out_prev is the
    DICOM linear window of code, win = (x_low, x_high, slope, intercept) in float64:
    0 for code <= x_low, 255 for code > x_high, else floor(code * slope + intercept + 0.5)
    clipped to 0..255 (identical to :func:`processing.window.voi_lut`), looked up in a
    table of ``maxcode + 1`` entries built first.
    """
    h, w = src.shape
    ws = g1.shape[1]
    nchunks = (h + CHUNK - 1) // CHUNK
    gg = np.float32(tr[0])
    kb = np.float32(tr[1])
    t4 = np.float32(tr[2])
    nz = np.float32(tr[3])
    half = np.float32(0.5)
    zero = np.float32(0.0)
    ncodes = np.int64(maxcode) + 1
    ptab = np.empty(ncodes, np.uint8)
    _window_table(win, ncodes, ptab)
    for c in nb.prange(nchunks):
        tmp = np.empty(ws, np.float32)
        ug = np.empty(w, np.float32)
        uc = np.empty(w, np.float32)
        xr = np.empty(w, np.float32)
        for i in range(c * CHUNK, min(h, (c + 1) * CHUNK)):
            _up_row(g1, i, tmp, ug)
            _up_row(c1, i, tmp, uc)
            s = src[i]
            for j in range(w):  # the table gather alone, so the main loop vectorises
                xr[j] = lut[s[j]]
            oi = out_img[i]
            op = out_prev[i]
            for j in range(w):
                v = uc[j] + _transfer(xr[j] - ug[j], gg, kb, t4, nz)
                cc = (hi - v) * scale + half
                cc = min(max(cc, zero), maxcode)
                oi[j] = np.uint16(np.int32(cc))
            for j in range(w):
                op[j] = ptab[oi[j]]


@nb.njit(**_PJIT)
def memory_floor(src, out):  # pragma: no cover - compiled
    """out = float32(src): one read-write pass of the frame (the bench's floor)."""
    h, w = src.shape
    for i in nb.prange(h):
        for j in range(w):
            out[i, j] = np.float32(src[i, j])


@nb.njit(**_JIT)
def compact_finite(vals):  # pragma: no cover - compiled
    """Move the finite values of ``vals`` to its front (in order); returns their number."""
    m = 0
    for i in range(vals.size):
        v = vals[i]
        if v == v and v != np.inf and v != -np.inf:
            vals[m] = v
            m += 1
    return m


@nb.njit(**_JIT)
def finite_median(vals):  # pragma: no cover - compiled
    """``np.median`` of the finite values of a float32 array (``vals`` is reordered);
    returns (median as float32, number of finite values), NaN when there is none."""
    m = 0
    for i in range(vals.size):
        v = vals[i]
        if v == v and v != np.inf and v != -np.inf:
            vals[m] = v
            m += 1
    if m == 0:
        return np.float32(np.nan), 0
    k = m // 2
    part = np.partition(vals[:m], k)
    hi = part[k]
    if m % 2 == 1:
        return hi, m
    lo = part[0]
    for i in range(1, k):
        if part[i] > lo:
            lo = part[i]
    return (lo + hi) / np.float32(2.0), m


@nb.njit(**_JIT, inline="always")
def _up2_at(g1, y0, y1, fy, j):  # pragma: no cover - compiled
    """up2(g1) at column ``j`` of the finer row whose source rows and weight are
    ``y0, y1, fy`` (``_coord`` of the row; as :func:`up2`)."""
    x0, x1, fx = _coord(j, g1.shape[1])
    a = g1[y0, x0] + (g1[y0, x1] - g1[y0, x0]) * fx
    b = g1[y1, x0] + (g1[y1, x1] - g1[y1, x0]) * fx
    return a + (b - a) * fy


@nb.njit(**_JIT)
def abs_detail_samples(g, g1, step, mask, mscale, out):  # pragma: no cover - compiled
    """|g - up2(g1)| at g[::step, ::step] under the mask into out; returns the count."""
    h, w = g.shape
    use_mask = mask.size > 1
    n = 0
    for i in range(0, h, step):
        y0, y1, fy = _coord(i, g1.shape[0])
        for j in range(0, w, step):
            if use_mask and not mask[i * mscale, j * mscale]:
                continue
            if n >= out.size:
                return n
            out[n] = abs(g[i, j] - _up2_at(g1, y0, y1, fy, j))
            n += 1
    return n


@nb.njit(**_JIT)
def abs_detail_samples_lut(src, lut, g1, step, mask, mscale, out):  # pragma: no cover
    """As :func:`abs_detail_samples` for a uint16 source mapped through ``lut``."""
    h, w = src.shape
    use_mask = mask.size > 1
    n = 0
    for i in range(0, h, step):
        y0, y1, fy = _coord(i, g1.shape[0])
        for j in range(0, w, step):
            if use_mask and not mask[i * mscale, j * mscale]:
                continue
            if n >= out.size:
                return n
            out[n] = abs(lut[src[i, j]] - _up2_at(g1, y0, y1, fy, j))
            n += 1
    return n
