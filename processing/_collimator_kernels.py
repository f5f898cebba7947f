"""Numba kernels for collimator detection (called only through :mod:`processing.collimator`).

All kernels are compiled with ``cache=True`` and never query the thread count inside, so
the on-disk cache stays valid. Coordinates follow the image convention: ``x`` = column,
``y`` = row, pixel centres at integer positions.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# --------------------------------------------------------------------------------------------
# Full-resolution passes
# --------------------------------------------------------------------------------------------


_FM = {"reassoc", "contract", "arcp", "nsz"}  # fast sums, NaN/inf still propagate


@njit(cache=True, fastmath=_FM, inline="always")
def _down_row(src, f, out, i, acc):  # pragma: no cover - compiled
    H, W = src.shape
    w = out.shape[1]
    wf = W // f
    r0 = i * f
    r1 = min(r0 + f, H)
    for c in range(W):
        acc[c] = 0.0
    for r in range(r0, r1):
        row = src[r]
        for c in range(W):
            acc[c] += row[c]
    inv = np.float32(1.0 / ((r1 - r0) * f))
    for j in range(wf):
        s = np.float32(0.0)
        b = j * f
        for c in range(f):
            s += acc[b + c]
        out[i, j] = s * inv
    if wf < w:
        s = np.float32(0.0)
        for c in range(wf * f, W):
            s += acc[c]
        out[i, wf] = s / np.float32((r1 - r0) * (W - wf * f))


@njit(parallel=True, cache=True, fastmath=_FM)
def area_downsample(src, f, out):  # pragma: no cover - compiled
    """Block mean of ``src`` over ``f`` x ``f`` blocks into ``out`` (float32), row-parallel.

    ``out`` has shape ``(ceil(H / f), ceil(W / f))``; blocks cut by the image edge are
    averaged over their valid pixels. NaN and inf propagate into the block they fall in.
    """
    W = src.shape[1]
    for i in prange(out.shape[0]):
        acc = np.empty(W, dtype=np.float32)
        _down_row(src, f, out, i, acc)


@njit(cache=True, fastmath=_FM)
def area_downsample_serial(src, f, out):  # pragma: no cover - compiled
    """:func:`area_downsample` on one thread, for small images."""
    acc = np.empty(src.shape[1], dtype=np.float32)
    for i in range(out.shape[0]):
        _down_row(src, f, out, i, acc)


@njit(cache=True, inline="always")
def _sobel_at(img, gx, gy, y, ym, yp, x, xm, xp):  # pragma: no cover - compiled
    gx[y, x] = 0.125 * (
        (img[ym, xp] - img[ym, xm]) + 2.0 * (img[y, xp] - img[y, xm])
        + (img[yp, xp] - img[yp, xm])
    )
    gy[y, x] = 0.125 * (
        (img[yp, xm] - img[ym, xm]) + 2.0 * (img[yp, x] - img[ym, x])
        + (img[yp, xp] - img[ym, xp])
    )


@njit(cache=True)
def edge_gradients(img, d, dx, dy):  # pragma: no cover - compiled
    """Step-edge gradients (see ``processing.collimator._edge_gradients``) into ``dx, dy``.

    Sobel (divided by 8, replicated border) of ``img``; each gradient vector is scaled by
    ``max(0, |g_a| - max(|g_a| at +-d along a)) / |g_a|`` where ``a`` is its dominant axis.
    """
    H, W = img.shape
    gx = np.empty((H, W), dtype=np.float32)
    gy = np.empty((H, W), dtype=np.float32)
    for y in range(H):
        ym = max(y - 1, 0)
        yp = min(y + 1, H - 1)
        _sobel_at(img, gx, gy, y, ym, yp, 0, 0, min(1, W - 1))
        # interior columns without clamped indices (the loop vectorises)
        r0 = img[ym]
        r1 = img[y]
        r2 = img[yp]
        ox = gx[y]
        oy = gy[y]
        for x in range(1, W - 1):
            ox[x] = 0.125 * (
                (r0[x + 1] - r0[x - 1]) + 2.0 * (r1[x + 1] - r1[x - 1])
                + (r2[x + 1] - r2[x - 1])
            )
            oy[x] = 0.125 * (
                (r2[x - 1] - r0[x - 1]) + 2.0 * (r2[x] - r0[x]) + (r2[x + 1] - r0[x + 1])
            )
        if W > 1:
            _sobel_at(img, gx, gy, y, ym, yp, W - 1, W - 2, W - 1)
    for y in range(H):
        for x in range(W):
            a = abs(gx[y, x])
            b = abs(gy[y, x])
            r = 0.0
            if a >= b:
                if d <= x < W - d and a > 0.0:
                    e = a - max(abs(gx[y, x - d]), abs(gx[y, x + d]))
                    r = e / a if e > 0.0 else 0.0
            else:
                if d <= y < H - d and b > 0.0:
                    e = b - max(abs(gy[y - d, x]), abs(gy[y + d, x]))
                    r = e / b if e > 0.0 else 0.0
            dx[y, x] = gx[y, x] * r
            dy[y, x] = gy[y, x] * r


@njit(cache=True, inline="always")
def _rect_span(W, y, c, s, u0, u1, v0, v1):  # pragma: no cover - compiled
    """First and last column of row ``y`` inside the rotated rectangle (empty: last <
    first); see :func:`fill_rect_mask`."""
    lo = 0.0
    hi = W - 1.0
    # u constraint: c*x in [u0 - s*y, u1 - s*y]
    a0 = u0 - s * y
    a1 = u1 - s * y
    if c > 1e-12:
        lo = max(lo, a0 / c)
        hi = min(hi, a1 / c)
    elif c < -1e-12:
        lo = max(lo, a1 / c)
        hi = min(hi, a0 / c)
    elif not (a0 <= 0.0 <= a1):
        hi = -1.0
    # v constraint: -s*x in [v0 - c*y, v1 - c*y]
    b0 = v0 - c * y
    b1 = v1 - c * y
    if s > 1e-12:
        lo = max(lo, -b1 / s)
        hi = min(hi, -b0 / s)
    elif s < -1e-12:
        lo = max(lo, -b0 / s)
        hi = min(hi, -b1 / s)
    elif not (b0 <= 0.0 <= b1):
        hi = -1.0
    if hi < lo:
        return 0, -1
    return max(int(math.ceil(lo - 1e-9)), 0), min(int(math.floor(hi + 1e-9)), W - 1)


@njit(cache=True, inline="always")
def _circle_span(W, y, cx, cy, r):  # pragma: no cover - compiled
    """First and last column of row ``y`` inside the disc (empty: last < first)."""
    dy = y - cy
    d = r * r - dy * dy
    if d < 0.0:
        return 0, -1
    half = math.sqrt(d)
    return (max(int(math.ceil(cx - half - 1e-9)), 0),
            min(int(math.floor(cx + half + 1e-9)), W - 1))


@njit(cache=True, inline="always")
def _fill_span(row, xa, xb):  # pragma: no cover - compiled
    if xb < xa:
        row[:] = False
        return
    row[:xa] = False
    row[xa:xb + 1] = True
    row[xb + 1:] = False


@njit(cache=True, inline="always")
def _rect_row(mask, y, c, s, u0, u1, v0, v1):  # pragma: no cover - compiled
    xa, xb = _rect_span(mask.shape[1], y, c, s, u0, u1, v0, v1)
    _fill_span(mask[y], xa, xb)


@njit(cache=True, inline="always")
def _circle_row(mask, y, cx, cy, r):  # pragma: no cover - compiled
    xa, xb = _circle_span(mask.shape[1], y, cx, cy, r)
    _fill_span(mask[y], xa, xb)


@njit(parallel=True, cache=True)
def fill_rect_mask(mask, c, s, u0, u1, v0, v1):  # pragma: no cover - compiled
    """Rasterise the rotated rectangle ``u0 <= c*x + s*y <= u1``, ``v0 <= -s*x + c*y <= v1``.

    A pixel is inside when its centre satisfies both inequalities. Infinite bounds are
    allowed (blade outside the image). Writes every pixel of ``mask`` once, row-parallel.
    """
    for y in prange(mask.shape[0]):
        _rect_row(mask, y, c, s, u0, u1, v0, v1)


@njit(cache=True)
def fill_rect_mask_serial(mask, c, s, u0, u1, v0, v1):  # pragma: no cover - compiled
    """:func:`fill_rect_mask` on one thread, for small masks."""
    for y in range(mask.shape[0]):
        _rect_row(mask, y, c, s, u0, u1, v0, v1)


@njit(parallel=True, cache=True)
def fill_circle_mask(mask, cx, cy, r):  # pragma: no cover - compiled
    """Rasterise the disc of centre ``(cx, cy)`` and radius ``r`` (pixel centres inside)."""
    for y in prange(mask.shape[0]):
        _circle_row(mask, y, cx, cy, r)


@njit(cache=True)
def fill_circle_mask_serial(mask, cx, cy, r):  # pragma: no cover - compiled
    """:func:`fill_circle_mask` on one thread, for small masks."""
    for y in range(mask.shape[0]):
        _circle_row(mask, y, cx, cy, r)


@njit(cache=True, inline="always")
def _copy_difference(row, a, b, c, d, out, n):  # pragma: no cover - compiled
    """Append ``row[x]`` for x in [a, b] but not in [c, d] (empty when last < first) to
    ``out`` from ``n`` on, in order; returns the new count."""
    if b < a:
        return n
    if d < c or d < a or c > b:
        for x in range(a, b + 1):
            out[n] = row[x]
            n += 1
        return n
    for x in range(a, min(c - 1, b) + 1):
        out[n] = row[x]
        n += 1
    for x in range(max(d + 1, a), b + 1):
        out[n] = row[x]
        n += 1
    return n


@njit(cache=True)
def contrast_samples(img, circle, c, s, u0, u1, v0, v1, cx, cy, r):  # pragma: no cover
    """Samples of ``img`` for the region test of a field boundary.

    The field is the rectangle ``u0 <= c*x + s*y <= u1``, ``v0 <= -s*x + c*y <= v1`` or,
    when ``circle``, the disc of centre ``(cx, cy)`` and radius ``r``; ``S(g)`` is the field
    grown by ``g`` pixels (rasterised as :func:`fill_rect_mask` / :func:`fill_circle_mask`
    do). Returns ``(inner, outer, inside, outside)``: the pixels of ``S(-1.5)`` not in
    ``S(-6)``, of ``S(6)`` not in ``S(1.5)``, and on every second row and column those in
    ``S(-1.5)`` and those not in ``S(1.5)``, each in row-major order.
    """
    h, w = img.shape
    inner = np.empty(h * w, img.dtype)
    outer = np.empty(h * w, img.dtype)
    inside = np.empty(h * w, img.dtype)
    outside = np.empty(h * w, img.dtype)
    ni = 0
    no = 0
    nin = 0
    nout = 0
    for y in range(h):
        # spans of S(-1.5), S(-6), S(1.5), S(6) on this row
        if circle:
            a0, b0 = _circle_span(w, y, cx, cy, max(r - 1.5, 0.0))
            a1, b1 = _circle_span(w, y, cx, cy, max(r - 6.0, 0.0))
            a2, b2 = _circle_span(w, y, cx, cy, max(r + 1.5, 0.0))
            a3, b3 = _circle_span(w, y, cx, cy, max(r + 6.0, 0.0))
        else:
            a0, b0 = _rect_span(w, y, c, s, u0 + 1.5, u1 - 1.5, v0 + 1.5, v1 - 1.5)
            a1, b1 = _rect_span(w, y, c, s, u0 + 6.0, u1 - 6.0, v0 + 6.0, v1 - 6.0)
            a2, b2 = _rect_span(w, y, c, s, u0 - 1.5, u1 + 1.5, v0 - 1.5, v1 + 1.5)
            a3, b3 = _rect_span(w, y, c, s, u0 - 6.0, u1 + 6.0, v0 - 6.0, v1 + 6.0)
        row = img[y]
        # inner: [a0, b0] minus [a1, b1]; outer: [a3, b3] minus [a2, b2] (each one or
        # two runs of columns, in order)
        ni = _copy_difference(row, a0, b0, a1, b1, inner, ni)
        no = _copy_difference(row, a3, b3, a2, b2, outer, no)
        if y % 2 == 0:
            # every second column: inside [a0, b0], outside not in [a2, b2]
            for x in range(a0 + (a0 & 1), b0 + 1, 2):
                inside[nin] = row[x]
                nin += 1
            if b2 < a2:
                for x in range(0, w, 2):
                    outside[nout] = row[x]
                    nout += 1
            else:
                for x in range(0, a2, 2):
                    outside[nout] = row[x]
                    nout += 1
                for x in range(b2 + 1 + ((b2 + 1) & 1), w, 2):
                    outside[nout] = row[x]
                    nout += 1
    return inner[:ni], outer[:no], inside[:nin], outside[:nout]


@njit(cache=True, inline="always")
def _bilinear(lin, x, y):  # pragma: no cover - compiled
    """Bilinear sample of ``lin`` at ``(x, y)`` (``0 <= x < w - 1``, ``0 <= y < h - 1``)."""
    x0 = int(x)
    y0 = int(y)
    fx = x - x0
    fy = y - y0
    top = lin[y0, x0] * (1 - fx) + lin[y0, x0 + 1] * fx
    bot = lin[y0 + 1, x0] * (1 - fx) + lin[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


@njit(cache=True)
def profile_edges(lin, bx, by, nx, ny, scale, floor, tau, min_step):  # pragma: no cover
    """Sub-pixel step positions on short profiles across a boundary.

    For each base point ``(bx, by)`` and inward unit normal ``(nx, ny)``, samples ``lin``
    (bilinear) at offsets -4..4 along the normal. Returns ``(offset, ok)``: the centroid of
    the intensity derivative after removing the local slope (mean of the two end
    derivatives), and whether the profile rises inwards by more than ``2 * tau`` in
    square-root units of ``scale`` and by more than ``min_step`` in ``log(x + floor)``.
    """
    h, w = lin.shape
    n = bx.shape[0]
    off = np.zeros(n)
    ok = np.zeros(n, dtype=np.bool_)
    prof = np.empty(9)
    xmax = w - 1.000001
    ymax = h - 1.000001
    for k in range(n):
        # the two samples of the step test first; the other seven only for real steps
        for j in (2, 6):
            d = j - 4.0
            prof[j] = _bilinear(lin, min(max(bx[k] + d * nx[k], 0.0), xmax),
                                min(max(by[k] + d * ny[k], 0.0), ymax))
        lo = max(prof[2], 0.0)
        hi = max(prof[6], 0.0)
        if math.sqrt(hi / scale) - math.sqrt(lo / scale) <= 2.0 * tau:
            continue
        if math.log((hi + floor) / (lo + floor)) <= min_step:
            continue
        for j in (0, 1, 3, 4, 5, 7, 8):
            d = j - 4.0
            prof[j] = _bilinear(lin, min(max(bx[k] + d * nx[k], 0.0), xmax),
                                min(max(by[k] + d * ny[k], 0.0), ymax))
        base = 0.5 * ((prof[1] - prof[0]) + (prof[8] - prof[7]))
        tot = 0.0
        mom = 0.0
        for j in range(8):
            dv = prof[j + 1] - prof[j] - base
            if dv > 0.0:
                tot += dv
                mom += dv * (j - 3.5)
        if tot > 0.0:
            off[k] = mom / tot
            ok[k] = True
    return off, ok


@njit(cache=True)
def blade_points(lin, c, s, bounds, scale, floor, tau, min_step,
                 spacing):  # pragma: no cover
    """Sub-pixel edge points along the blades of a rectangle, all blades in one call.

    The rectangle is ``u0 <= n.p <= u1``, ``v0 <= n_perp.p <= v1`` with ``n = (c, s)``,
    ``n_perp = (-s, c)`` and ``bounds = (u0, u1, v0, v1)`` (an infinite bound is a blade
    outside the image and gets no points). Along each blade ``k`` (0 left, 1 right, 2 top,
    3 bottom) base points ``spacing`` pixels apart, 2 pixels in from the ends of its extent
    over the image, are refined by :func:`profile_edges` along the inward normal; the points whose
    profile shows a step are returned as ``(px, py, blade)``, those of the top and bottom
    blades rotated to ``(y, -x)`` so that every blade shares the normal ``n``.
    """
    h, w = lin.shape
    npt = 0
    lens = np.zeros(4, np.int64)
    los = np.zeros(4)
    for k in range(4):
        if not math.isfinite(bounds[k]):
            continue
        if k < 2:
            a0, a1, lo, hi = -s, c, bounds[2], bounds[3]
        else:
            a0, a1, lo, hi = c, s, bounds[0], bounds[1]
        pmin = math.inf
        pmax = -math.inf
        for ex, ey in ((0.0, 0.0), (w - 1.0, 0.0), (0.0, h - 1.0), (w - 1.0, h - 1.0)):
            pr = ex * a0 + ey * a1
            pmin = min(pmin, pr)
            pmax = max(pmax, pr)
        lo = max(lo, pmin) + 2.0
        hi = min(hi, pmax) - 2.0
        if hi - lo < 4:
            continue
        lens[k] = int(math.ceil((hi - lo) / spacing))
        los[k] = lo
        npt += lens[k]
    bx = np.empty(npt)
    by = np.empty(npt)
    nx = np.empty(npt)
    ny = np.empty(npt)
    bl = np.empty(npt, np.int64)
    m = 0
    for k in range(4):
        if lens[k] == 0:
            continue
        if k < 2:
            a0, a1, n0, n1 = -s, c, c, s
        else:
            a0, a1, n0, n1 = c, s, -s, c
        inward = 1.0 if k == 0 or k == 2 else -1.0
        start = m
        for i in range(lens[k]):
            t = los[k] + i * spacing
            x = bounds[k] * n0 + t * a0
            y = bounds[k] * n1 + t * a1
            if x >= 1 and x <= w - 2 and y >= 1 and y <= h - 2:
                bx[m] = x
                by[m] = y
                nx[m] = inward * n0
                ny[m] = inward * n1
                bl[m] = k
                m += 1
        if m - start < 4:
            m = start
    off, ok = profile_edges(lin, bx[:m], by[:m], nx[:m], ny[:m], scale, floor, tau, min_step)
    nok = 0
    for i in range(m):
        if ok[i]:
            nok += 1
    px = np.empty(nok)
    py = np.empty(nok)
    blade = np.empty(nok, np.int64)
    j = 0
    for i in range(m):
        if not ok[i]:
            continue
        k = bl[i]
        n0 = c if k < 2 else -s
        n1 = s if k < 2 else c
        inward = 1.0 if k == 0 or k == 2 else -1.0
        x = bx[i] + (inward * off[i]) * n0
        y = by[i] + (inward * off[i]) * n1
        if k < 2:
            px[j] = x
            py[j] = y
        else:
            px[j] = y
            py[j] = -x
        blade[j] = k
        j += 1
    return px, py, blade


@njit(cache=True)
def select_kth(a, n, k):  # pragma: no cover - compiled
    """The ``k``-th smallest of ``a[:n]`` (0-based: the value ``np.partition(a[:n], k)[k]``).

    Wirth's quickselect in place: ``a[:n]`` is reordered so that ``a[:k] <= a[k] <=
    a[k + 1:n]``. No NaN allowed.
    """
    lo = 0
    hi = n - 1
    while hi > lo:
        x = a[k]
        i = lo
        j = hi
        while True:
            while a[i] < x:
                i += 1
            while x < a[j]:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    return a[k]


@njit(cache=True)
def median_inplace(a):  # pragma: no cover - compiled
    """``np.median`` of a 1-D float array without NaN, bit for bit (the mean of the two
    middle values for an even count, NaN when empty); ``a`` is reordered."""
    n = a.shape[0]
    if n == 0:
        return np.nan
    half = n >> 1
    b = select_kth(a, n, half)
    if n & 1:
        return b
    lo = a[0]
    for i in range(1, half):
        if a[i] > lo:
            lo = a[i]
    return (lo + b) / 2


@njit(cache=True)
def _nearest_rank(vals, n, q):  # pragma: no cover - compiled
    """The ``q`` quantile (nearest rank) of ``vals[:n]`` as float64 (``vals`` is reordered)."""
    k = int(q * (n - 1) + 0.5)
    return np.float64(select_kth(vals, n, k))


@njit(cache=True)
def search_vst(img, inv_hi, vst):  # pragma: no cover - compiled
    """``vst = sqrt(max(img, 0) * inv_hi)`` (float32) and the absolute Laplacian residuals
    ``|4 v - up - down - left - right|`` of ``vst`` on every other row (rows 1, 3, ...,
    columns 1 .. w - 2; an empty array for an image under 3 pixels on a side), evaluated
    in float32 in the order ``4 v[i, j] - v[i - 1, j] - v[i + 1, j] - v[i, j - 1] -
    v[i, j + 1]``."""
    h, w = img.shape
    for i in range(h):
        for j in range(w):
            vst[i, j] = np.float32(math.sqrt(max(img[i, j], np.float32(0.0)) * inv_hi))
    nr = (h - 1) // 2 if h > 2 else 0
    nc = w - 2 if w > 2 else 0
    res = np.empty(nr * nc, np.float32)
    m = 0
    four = np.float32(4.0)
    for r in range(nr):
        i = 1 + 2 * r
        for j in range(1, w - 1):
            v = four * vst[i, j] - vst[i - 1, j]
            v = v - vst[i + 1, j]
            v = v - vst[i, j - 1]
            v = v - vst[i, j + 1]
            res[m] = abs(v)
            m += 1
    return res


@njit(cache=True)
def _band(rot, valid, k, p, d0, d1, ya, yz, xa, xz, buf):  # pragma: no cover - compiled
    """Valid pixels of ``rot`` in the band ``d0..d1`` pixels inward of blade ``k`` at ``p``
    (every second row/column of the band when it is 16 or more pixels deep) into ``buf``;
    returns their number."""
    H, W = rot.shape
    sign = 1 if k == 0 or k == 2 else -1
    lo = min(p + sign * d0, p + sign * d1)
    hi = max(p + sign * d0, p + sign * d1)
    step = 1 if abs(d1 - d0) < 16 else 2
    n = 0
    if k < 2:
        lo, hi = max(lo, 0), min(hi, W - 1)
        for y in range(ya, yz, step):
            for x in range(lo, hi + 1, step):
                if valid[y, x] > 0:
                    buf[n] = rot[y, x]
                    n += 1
    else:
        lo, hi = max(lo, 0), min(hi, H - 1)
        for y in range(lo, hi + 1, step):
            for x in range(xa, xz, step):
                if valid[y, x] > 0:
                    buf[n] = rot[y, x]
                    n += 1
    return n


@njit(cache=True)
def check_blades(rot, valid, pos, min_step, min_peak_gap):  # pragma: no cover - compiled
    """Index of the first blade of an axis-aligned hypothesis that fails the region test,
    or -1 (see ``processing.collimator._region_ok``).

    ``pos`` holds the left, right, top and bottom blade positions in ``rot`` (-1: outside
    the image). Per blade: the median of the band 2..6 pixels inside must exceed the
    median of the band 2..6 pixels outside by ``min_step`` (when both hold 8 samples),
    and the 95th percentile of everything outside beyond 2 pixels must stay
    ``min_peak_gap`` below that of the field (sampled every second pixel).
    """
    H, W = rot.shape
    xl, xr, yt, yb = pos[0], pos[1], pos[2], pos[3]
    ya = yt if yt >= 0 else 0
    yz = min(yb + 1 if yb >= 0 else H, H)
    xa = xl if xl >= 0 else 0
    xz = min(xr + 1 if xr >= 0 else W, W)
    inside = np.empty(H * W, np.float32)
    n_in = 0
    for y in range(ya, yz, 2):
        for x in range(xa, xz, 2):
            if valid[y, x] > 0:
                inside[n_in] = rot[y, x]
                n_in += 1
    q_inside = np.nan
    if n_in >= 8:
        q_inside = _nearest_rank(inside, n_in, 0.95)
    far = max(H, W)
    b1 = np.empty(H * W, np.float32)
    b2 = np.empty(H * W, np.float32)
    for k in range(4):
        p = pos[k]
        if p < 0:
            continue
        n1 = _band(rot, valid, k, p, 2, 6, ya, yz, xa, xz, b1)
        n2 = _band(rot, valid, k, p, -6, -2, ya, yz, xa, xz, b2)
        if n1 < 8 or n2 < 8:
            continue
        if _nearest_rank(b1, n1, 0.5) - _nearest_rank(b2, n2, 0.5) < min_step:
            return k
        n3 = _band(rot, valid, k, p, -far, -2, ya, yz, xa, xz, b1)
        if n3 < 8 or n_in < 8:
            continue
        if not _nearest_rank(b1, n3, 0.95) <= q_inside - min_peak_gap:
            return k
    return -1


# --------------------------------------------------------------------------------------------
# Work-resolution kernels
# --------------------------------------------------------------------------------------------


@njit(cache=True)
def collect_edges(gx, gy, thr, strong):  # pragma: no cover - compiled
    """Edge pixels (``|gx| + |gy| > thr``) with their gradients, and the strong edges
    (``max(|gx|, |gy|) > strong``, one pixel away from the border).

    Returns ``(ex, ey, egx, egy, sx, sy)``, coordinates as float32.
    """
    H, W = gx.shape
    n = 0
    m = 0
    for y in range(H):
        for x in range(W):
            a = abs(gx[y, x])
            b = abs(gy[y, x])
            if a + b > thr:
                n += 1
            if 0 < y < H - 1 and 0 < x < W - 1 and max(a, b) > strong:
                m += 1
    ex = np.empty(n, np.float32)
    ey = np.empty(n, np.float32)
    egx = np.empty(n, np.float32)
    egy = np.empty(n, np.float32)
    sx = np.empty(m, np.float32)
    sy = np.empty(m, np.float32)
    n = 0
    m = 0
    for y in range(H):
        for x in range(W):
            a = abs(gx[y, x])
            b = abs(gy[y, x])
            if a + b > thr:
                ex[n] = x
                ey[n] = y
                egx[n] = gx[y, x]
                egy[n] = gy[y, x]
                n += 1
            if 0 < y < H - 1 and 0 < x < W - 1 and max(a, b) > strong:
                sx[m] = x
                sy[m] = y
                m += 1
    return ex, ey, egx, egy, sx, sy


@njit(cache=True)
def rotated_valid(H2, W2, c, s, ox, oy, cx, cy, w, h):  # pragma: no cover - compiled
    """Pixels of a rotated canvas that map at least one pixel inside the source image.

    Canvas pixel ``p'`` comes from ``p = R(t) (p' - o) + c`` (``c = cos t``, ``s = sin t``);
    it is valid when ``1 <= x <= w - 2`` and ``1 <= y <= h - 2``.
    """
    valid = np.zeros((H2, W2), dtype=np.uint8)
    for yy in range(H2):
        dy = yy - oy
        for xx in range(W2):
            dx = xx - ox
            x = c * dx - s * dy + cx
            y = s * dx + c * dy + cy
            if 1.0 <= x <= w - 2.0 and 1.0 <= y <= h - 2.0:
                valid[yy, xx] = 1
    return valid


@njit(cache=True, inline="always")
def _hough_votes(xs, ys, gxs, gys, thetas, half_window, rho_off, acc):  # pragma: no cover
    """Votes of :func:`oriented_hough` into ``acc`` (shape ``(2, nt, n_rho)``).

    Two passes: each edge pixel's family and angle range first, then its votes (rows of
    ``acc`` flattened to ``fam * nt + i``, the normals tabulated per row).
    """
    nt = thetas.shape[0]
    n_rho = acc.shape[2]
    n = xs.shape[0]
    na = np.empty(2 * nt)
    nb_ = np.empty(2 * nt)
    for i in range(nt):
        c = math.cos(thetas[i])
        s = math.sin(thetas[i])
        na[i] = c
        nb_[i] = s
        na[nt + i] = -s
        nb_[nt + i] = c
    t0 = thetas[0]
    dt = thetas[1] - thetas[0] if nt > 1 else 1.0
    r0 = np.empty(n, np.int64)
    r1 = np.empty(n, np.int64)
    for k in range(n):
        gx = gxs[k]
        gy = gys[k]
        if abs(gx) >= abs(gy):
            base = 0
            phi = math.atan(gy / gx)
        else:
            base = nt
            phi = -math.atan(gx / gy)
        i0 = int(math.ceil((phi - half_window - t0) / dt))
        i1 = int(math.floor((phi + half_window - t0) / dt))
        if i0 < 0:
            i0 = 0
        if i1 > nt - 1:
            i1 = nt - 1
        r0[k] = base + i0
        r1[k] = base + i1
    flat = acc.reshape(2 * nt, n_rho)
    for k in range(n):
        x = np.float64(xs[k])
        y = np.float64(ys[k])
        gx = np.float64(gxs[k])
        gy = np.float64(gys[k])
        for r in range(r0[k], r1[k] + 1):
            a = na[r]
            b_ = nb_[r]
            rho = x * a + y * b_
            b = int(rho + rho_off + 0.5)
            if 0 <= b < n_rho:
                flat[r, b] += gx * a + gy * b_


@njit(cache=True)
def oriented_hough(xs, ys, gxs, gys, thetas, half_window, rho_off, n_rho):  # pragma: no cover
    """Signed line accumulator for the two blade families of a rectangle.

    Family 0 uses the normal ``(cos t, sin t)``, family 1 the normal ``(-sin t, cos t)``.
    Each edge pixel votes only for the angles within ``half_window`` radians of its own
    gradient direction, with weight ``g . n`` (signed: positive when the image brightens
    along the normal), at ``rho = p . n + rho_off`` (1-pixel bins).
    """
    acc = np.zeros((2, thetas.shape[0], n_rho), dtype=np.float32)
    _hough_votes(xs, ys, gxs, gys, thetas, half_window, rho_off, acc)
    return acc


@njit(cache=True)
def hough_line_scores(xs, ys, gxs, gys, thetas, half_window, rho_off, n_rho):  # pragma: no cover
    """``hough_angle_scores(oriented_hough(...))`` in one call, bit for bit.

    The 3-bin sums are scanned only over the rho bins the edge pixels' bounding box can
    reach (widened by 2 bins for rounding); elsewhere they are 0 and cannot raise a
    maximum that starts at 0.
    """
    nt = thetas.shape[0]
    acc = np.zeros((2, nt, n_rho), dtype=np.float32)
    _hough_votes(xs, ys, gxs, gys, thetas, half_window, rho_off, acc)
    out = np.zeros(nt)
    if xs.shape[0] == 0:
        return out
    x0 = np.float64(xs.min())
    x1 = np.float64(xs.max())
    y0 = np.float64(ys.min())
    y1 = np.float64(ys.max())
    for i in range(nt):
        c = math.cos(thetas[i])
        s = math.sin(thetas[i])
        tot = 0.0
        for fam in range(2):
            a = c if fam == 0 else -s
            b_ = s if fam == 0 else c
            r0 = min(a * x0, a * x1) + min(b_ * y0, b_ * y1)
            r1 = max(a * x0, a * x1) + max(b_ * y0, b_ * y1)
            blo = max(1, int(math.floor(r0 + rho_off)) - 2)
            bhi = min(n_rho - 1, int(math.ceil(r1 + rho_off)) + 3)
            best_p = 0.0
            best_n = 0.0
            row = acc[fam, i]
            for b in range(blo, bhi):
                v = row[b - 1] + row[b] + row[b + 1]
                if v > best_p:
                    best_p = v
                if -v > best_n:
                    best_n = -v
            tot += best_p + best_n
        out[i] = tot
    return out


@njit(cache=True)
def rect_tables(gx, gy, valid, tau, dil, tau_strong, min_count, kmax):  # pragma: no cover
    """Blade candidates and the cumulative tables that score rectangle hypotheses.

    ``tau >= 0``. Indicator profiles ``prof[k]`` (k = 0: ``gx > tau``, 1: ``gx < -tau``, counted per
    column over valid pixels; 2: ``gy > tau``, 3: ``gy < -tau``, counted per row) give the
    candidates ``cands[k]``: :func:`profile_peaks` of ``prof[k]`` with ``min_count`` and
    ``kmax``. Returns ``(cl, cr, ct, cb, cum_col, cum_row, sat)``:

    * ``cum_col[k]`` (shape ``(H + 1, W)``): cumulative counts down each column of the
      indicators k = 0, 1 dilated by ``dil`` pixels along x (counted on valid pixels), and
      of the valid pixels (k = 2). **Only the candidate columns** (``cl`` and ``cr``) are
      filled; the others are left unset (the scoring reads nothing else).
    * ``cum_row[k]`` (shape ``(H, W + 1)``): the same along each row for the indicators
      k = 2, 3 dilated along y (stored at k = 0, 1) and valid pixels (k = 2), filled only
      on the candidate rows (``ct`` and ``cb``).
    * ``sat`` (shape ``(H + 1, W + 1)``): summed-area table of the strong edges
      (``max(|gx|, |gy|) > tau_strong``) on valid pixels.
    """
    H, W = gx.shape
    prof = np.zeros((4, max(H, W)), dtype=np.float32)
    # bits 1/2: gx > tau / gx < -tau, 4/8: gy > tau / gy < -tau, 16: valid, 32: strong
    code = np.empty((H, W), dtype=np.uint8)
    sat = np.empty((H + 1, W + 1), dtype=np.int32)
    sat[0, :] = 0
    p0 = prof[0]
    p1 = prof[1]
    ntau = -tau
    for y in range(H):
        vr = valid[y]
        ar = gx[y]
        br = gy[y]
        cr = code[y]
        n2 = 0
        n3 = 0
        for x in range(W):  # integer bit operations, no branches: the loop vectorises
            ok = np.int32(vr[x] != 0)
            a = ar[x]
            b = br[x]
            f0 = np.int32(a > tau) & ok
            f1 = np.int32(a < ntau) & ok
            f2 = np.int32(b > tau) & ok
            f3 = np.int32(b < ntau) & ok
            f5 = np.int32(max(abs(a), abs(b)) > tau_strong) & ok
            cr[x] = np.uint8((ok << 4) | f0 | (f1 << 1) | (f2 << 2) | (f3 << 3) | (f5 << 5))
            p0[x] += np.float32(f0)
            p1[x] += np.float32(f1)
            n2 += f2
            n3 += f3
        prof[2, y] += np.float32(n2)
        prof[3, y] += np.float32(n3)
        sa = sat[y]
        sb = sat[y + 1]
        sb[0] = 0
        run = 0
        for x in range(W):
            run += cr[x] >> 5
            sb[x + 1] = sa[x + 1] + run
    cl = profile_peaks(prof[0], W, min_count, kmax)
    cr_ = profile_peaks(prof[1], W, min_count, kmax)
    ct = profile_peaks(prof[2], H, min_count, kmax)
    cb = profile_peaks(prof[3], H, min_count, kmax)
    cum_col = np.empty((3, H + 1, W), dtype=np.int32)
    cum_row = np.empty((3, H, W + 1), dtype=np.int32)
    for side in range(2):
        cols = cl if side == 0 else cr_
        for j in range(cols.shape[0]):
            x = cols[j]
            xa = max(x - dil, 0)
            xb = min(x + dil, W - 1)
            c0 = 0
            c1 = 0
            c2 = 0
            cum_col[0, 0, x] = 0
            cum_col[1, 0, x] = 0
            cum_col[2, 0, x] = 0
            for y in range(H):
                if code[y, x] & 16:
                    hx = 0
                    for xx in range(xa, xb + 1):
                        hx |= code[y, xx]
                    c0 += hx & 1
                    c1 += (hx >> 1) & 1
                    c2 += 1
                cum_col[0, y + 1, x] = c0
                cum_col[1, y + 1, x] = c1
                cum_col[2, y + 1, x] = c2
    for side in range(2):
        rows = ct if side == 0 else cb
        for j in range(rows.shape[0]):
            y = rows[j]
            ya = max(y - dil, 0)
            yb = min(y + dil, H - 1)
            c0 = 0
            c1 = 0
            c2 = 0
            cum_row[0, y, 0] = 0
            cum_row[1, y, 0] = 0
            cum_row[2, y, 0] = 0
            for x in range(W):
                if code[y, x] & 16:
                    vy = 0
                    for yy in range(ya, yb + 1):
                        vy |= code[yy, x]
                    c0 += (vy >> 2) & 1
                    c1 += (vy >> 3) & 1
                    c2 += 1
                cum_row[0, y, x + 1] = c0
                cum_row[1, y, x + 1] = c1
                cum_row[2, y, x + 1] = c2
    return cl, cr_, ct, cb, cum_col, cum_row, sat


@njit(cache=True)
def _blade_v(cum, k, pos, a, b, alpha, min_len):  # pragma: no cover - compiled
    nv = cum[2, b + 1, pos] - cum[2, a, pos]
    if nv < min_len:
        return -1e9, 0.0
    ne = cum[k, b + 1, pos] - cum[k, a, pos]
    return ne - alpha * (nv - ne), ne / nv


@njit(cache=True)
def _blade_h(cum, k, pos, a, b, alpha, min_len):  # pragma: no cover - compiled
    nv = cum[2, pos, b + 1] - cum[2, pos, a]
    if nv < min_len:
        return -1e9, 0.0
    ne = cum[k, pos, b + 1] - cum[k, pos, a]
    return ne - alpha * (nv - ne), ne / nv


@njit(cache=True)
def score_rect_hypotheses(
    cum_col, cum_row, sat, cl, cr, ct, cb, alpha, beta, margin, min_len, min_w, min_h,
    min_support,
):  # pragma: no cover - compiled
    """Best rectangle over all blade combinations.

    ``cl``/``cr`` are left/right candidate columns, ``ct``/``cb`` top/bottom candidate
    rows, each array starting with ``-1`` meaning "blade outside the image". A blade
    contributes ``edges - alpha * gaps`` over its visible segment (between the two
    neighbouring blades) and must reach ``min_support`` edge fraction there; every strong
    edge pixel outside the field (grown by ``margin``) costs ``beta``: the shuttered area
    holds no structure. Fields narrower than ``min_w`` or lower than ``min_h`` are
    skipped. Returns
    ``(score, il, ir, it, ib, support)`` with indices into the candidate arrays.
    """
    H = cum_row.shape[1]
    W = cum_col.shape[2]
    best = 0.0
    bi = (0, 0, 0, 0)
    bsup = 0.0
    for il in range(cl.shape[0]):
        xl = cl[il]
        for ir in range(cr.shape[0]):
            xr = cr[ir]
            if xl >= 0 and xr >= 0 and xr - xl < min_w:
                continue
            xa = xl if xl >= 0 else 0
            xb = xr if xr >= 0 else W - 1
            for it in range(ct.shape[0]):
                yt = ct[it]
                for ib in range(cb.shape[0]):
                    yb = cb[ib]
                    if yt >= 0 and yb >= 0 and yb - yt < min_h:
                        continue
                    ya = yt if yt >= 0 else 0
                    yz = yb if yb >= 0 else H - 1
                    sc = 0.0
                    ne = 0.0
                    nt = 0.0
                    ok = True
                    if xl >= 0:
                        v, sup = _blade_v(cum_col, 0, xl, ya, yz, alpha, min_len)
                        ok = ok and sup >= min_support
                        sc += v
                        nt += 1.0
                        ne += sup
                    if ok and xr >= 0:
                        v, sup = _blade_v(cum_col, 1, xr, ya, yz, alpha, min_len)
                        ok = ok and sup >= min_support
                        sc += v
                        nt += 1.0
                        ne += sup
                    if ok and yt >= 0:
                        v, sup = _blade_h(cum_row, 0, yt, xa, xb, alpha, min_len)
                        ok = ok and sup >= min_support
                        sc += v
                        nt += 1.0
                        ne += sup
                    if ok and yb >= 0:
                        v, sup = _blade_h(cum_row, 1, yb, xa, xb, alpha, min_len)
                        ok = ok and sup >= min_support
                        sc += v
                        nt += 1.0
                        ne += sup
                    if ok:
                        x0 = max(xl - margin, 0) if xl >= 0 else 0
                        x1 = min(xr + margin, W - 1) if xr >= 0 else W - 1
                        y0 = max(yt - margin, 0) if yt >= 0 else 0
                        y1 = min(yb + margin, H - 1) if yb >= 0 else H - 1
                        inner = sat[y1 + 1, x1 + 1] - sat[y0, x1 + 1] - sat[y1 + 1, x0] + sat[y0, x0]
                        sc -= beta * (sat[H, W] - inner)
                    if ok and sc > best:
                        best = sc
                        bi = (il, ir, it, ib)
                        bsup = ne / nt if nt > 0 else 0.0
    return best, bi[0], bi[1], bi[2], bi[3], bsup


@njit(cache=True)
def circle_votes(xs, ys, gxs, gys, r_min, r_max, step, scale, off, acc):  # pragma: no cover
    """Accumulate circle-centre votes along each edge pixel's gradient direction.

    A pixel at ``(x, y)`` whose image brightens along ``g`` votes for the centres
    ``p + r * g / |g|`` for ``r`` in ``[r_min, r_max]`` (step ``step``), into ``acc`` at
    ``(p * scale + off)``.
    """
    H, W = acc.shape
    for k in range(xs.shape[0]):
        gx = gxs[k]
        gy = gys[k]
        m = math.sqrt(gx * gx + gy * gy)
        if m <= 0.0:
            continue
        ux = gx / m
        uy = gy / m
        r = r_min
        while r <= r_max:
            cx = (xs[k] + r * ux) * scale + off
            cy = (ys[k] + r * uy) * scale + off
            ix = int(cx + 0.5)
            iy = int(cy + 0.5)
            if 0 <= ix < W and 0 <= iy < H:
                acc[iy, ix] += m
            r += step


@njit(cache=True)
def circle_support(gx, gy, cx, cy, r, tau, sx, sy):  # pragma: no cover - compiled
    """Edge support of the circle ``(cx, cy, r)`` and the structure left outside it.

    Samples the circle about once per pixel of arc; a sample inside the image is
    supported when the inward gradient (bilinear) exceeds ``tau`` at one of the radii
    ``r - 1.5 .. r + 1.5``. Returns ``(supported, visible, outside)`` where ``outside``
    counts the strong-edge points ``(sx, sy)`` farther than ``r + 3`` from the centre.
    """
    h, w = gx.shape
    n = max(16, int(2.0 * math.pi * r))
    ne = 0
    nv = 0
    for k in range(n):
        phi = 2.0 * math.pi * k / n
        ux = math.cos(phi)
        uy = math.sin(phi)
        x = cx + r * ux
        y = cy + r * uy
        if not (1.0 <= x <= w - 2.0 and 1.0 <= y <= h - 2.0):
            continue
        nv += 1
        for j in range(4):
            rr = r - 1.5 + j
            xx = min(max(cx + rr * ux, 0.0), w - 1.000001)
            yy = min(max(cy + rr * uy, 0.0), h - 1.000001)
            x0 = int(xx)
            y0 = int(yy)
            fx = xx - x0
            fy = yy - y0
            a = (gx[y0, x0] * (1 - fx) + gx[y0, x0 + 1] * fx) * (1 - fy) + \
                (gx[y0 + 1, x0] * (1 - fx) + gx[y0 + 1, x0 + 1] * fx) * fy
            b = (gy[y0, x0] * (1 - fx) + gy[y0, x0 + 1] * fx) * (1 - fy) + \
                (gy[y0 + 1, x0] * (1 - fx) + gy[y0 + 1, x0 + 1] * fx) * fy
            if -(a * ux + b * uy) > tau:
                ne += 1
                break
    out = 0
    r3 = (r + 3.0) * (r + 3.0)
    for k in range(sx.shape[0]):
        dx = sx[k] - cx
        dy = sy[k] - cy
        if dx * dx + dy * dy > r3:
            out += 1
    return ne, nv, out


@njit(cache=True)
def fit_circle(x, y):  # pragma: no cover - compiled
    """Algebraic (Kasa) circle fit with two rounds of residual-based outlier rejection.

    Returns ``(cx, cy, r, ok)``.
    """
    n = x.shape[0]
    keep = np.ones(n, dtype=np.bool_)
    cx = 0.0
    cy = 0.0
    r = 0.0
    ok = False
    res = np.empty(n)
    for _ in range(3):
        # normal equations of [x y 1] . [a b c] = x^2 + y^2
        m = np.zeros((3, 3))
        v = np.zeros(3)
        cnt = 0
        for k in range(n):
            if keep[k]:
                cnt += 1
                row = (x[k], y[k], 1.0)
                t = x[k] * x[k] + y[k] * y[k]
                for i in range(3):
                    v[i] += row[i] * t
                    for j in range(3):
                        m[i, j] += row[i] * row[j]
        if cnt < 8:
            break
        if abs(np.linalg.det(m)) < 1e-12:
            break
        sol = np.linalg.solve(m, v)
        ncx = sol[0] / 2.0
        ncy = sol[1] / 2.0
        r2 = sol[2] + ncx * ncx + ncy * ncy
        if not r2 > 0.0:
            break
        cx, cy, r, ok = ncx, ncy, math.sqrt(r2), True
        for k in range(n):
            res[k] = abs(math.sqrt((x[k] - cx) ** 2 + (y[k] - cy) ** 2) - r)
        med = median_inplace(res[keep])
        lim = max(0.75, 4.45 * med)
        for k in range(n):
            keep[k] = res[k] <= lim
    return cx, cy, r, ok


@njit(cache=True)
def hough_angle_scores(acc):  # pragma: no cover - compiled
    """Line score per angle of an :func:`oriented_hough` accumulator.

    For each angle, the sum over the four blade directions (both families, both signs) of
    the largest 3-bin sum of the signed accumulator (0 when none is positive).
    """
    nt = acc.shape[1]
    nr = acc.shape[2]
    out = np.zeros(nt)
    for i in range(nt):
        tot = 0.0
        for fam in range(2):
            best_p = 0.0
            best_n = 0.0
            for b in range(1, nr - 1):
                v = acc[fam, i, b - 1] + acc[fam, i, b] + acc[fam, i, b + 1]
                if v > best_p:
                    best_p = v
                if -v > best_n:
                    best_n = -v
            tot += best_p + best_n
        out[i] = tot
    return out


@njit(cache=True)
def fit_parallel_lines(px, py, gid, ngroups, theta, fixed):  # pragma: no cover - compiled
    """Total-least-squares fit of parallel lines sharing the normal ``(cos t, sin t)``.

    Points ``(px, py)`` belong to line ``gid``; each line has its own offset. After a
    first fit, points farther than ``max(0.75, 3 robust sigma)`` from their line's median
    offset are dropped and the normal refitted (unless ``fixed``). Returns ``(t, rho,
    count)`` with ``rho[g] = mean(n . p)`` over the kept points of line ``g``.
    """
    n = px.shape[0]
    nx = math.cos(theta)
    ny = math.sin(theta)
    keep = np.ones(n, dtype=np.bool_)
    rho = np.zeros(ngroups)
    cnt = np.zeros(ngroups, dtype=np.int64)
    for it in range(2):
        mx = np.zeros(ngroups)
        my = np.zeros(ngroups)
        cnt[:] = 0
        for k in range(n):
            if keep[k]:
                g = gid[k]
                mx[g] += px[k]
                my[g] += py[k]
                cnt[g] += 1
        for g in range(ngroups):
            if cnt[g] > 0:
                mx[g] /= cnt[g]
                my[g] /= cnt[g]
        if not fixed:
            sxx = 0.0
            sxy = 0.0
            syy = 0.0
            for k in range(n):
                if keep[k] and cnt[gid[k]] >= 4:
                    dx = px[k] - mx[gid[k]]
                    dy = py[k] - my[gid[k]]
                    sxx += dx * dx
                    sxy += dx * dy
                    syy += dy * dy
            if sxx + syy > 0.0:
                # normal = eigenvector of the smaller eigenvalue of [[sxx, sxy], [sxy, syy]]
                phi = 0.5 * math.atan2(2.0 * sxy, sxx - syy)  # direction of the lines' spread
                cx = -math.sin(phi)
                cy = math.cos(phi)
                if cx * math.cos(theta) + cy * math.sin(theta) < 0.0:
                    cx = -cx
                    cy = -cy
                nx = cx
                ny = cy
        if it == 1:
            break
        for g in range(ngroups):
            if cnt[g] < 4:
                continue
            proj = np.empty(cnt[g])
            j = 0
            for k in range(n):
                if keep[k] and gid[k] == g:
                    proj[j] = px[k] * nx + py[k] * ny
                    j += 1
            med = median_inplace(proj)
            mad = median_inplace(np.abs(proj - med))
            lim = max(0.75, 4.45 * mad)
            for k in range(n):
                if keep[k] and gid[k] == g:
                    if abs(px[k] * nx + py[k] * ny - med) > lim:
                        keep[k] = False
    rho[:] = 0.0
    cnt[:] = 0
    for k in range(n):
        if keep[k]:
            rho[gid[k]] += px[k] * nx + py[k] * ny
            cnt[gid[k]] += 1
    for g in range(ngroups):
        if cnt[g] > 0:
            rho[g] /= cnt[g]
    return math.atan2(ny, nx), rho, cnt


@njit(cache=True)
def fit_blades(px, py, blade, theta, fixed):  # pragma: no cover - compiled
    """:func:`fit_parallel_lines` of the blades (0..3) with at least 4 points.

    Returns ``(t, rho, count)`` with ``rho`` and ``count`` per blade (count 0 for the
    blades left out); ``t = theta`` when no blade has 4 points.
    """
    counts = np.zeros(4, np.int64)
    for k in range(blade.shape[0]):
        counts[blade[k]] += 1
    gmap = np.full(4, -1, np.int64)
    ng = 0
    for b in range(4):
        if counts[b] >= 4:
            gmap[b] = ng
            ng += 1
    rho4 = np.zeros(4)
    cnt4 = np.zeros(4, np.int64)
    if ng == 0:
        return theta, rho4, cnt4
    m = 0
    for b in range(4):
        if gmap[b] >= 0:
            m += counts[b]
    x = np.empty(m)
    y = np.empty(m)
    gid = np.empty(m, np.int64)
    j = 0
    for k in range(blade.shape[0]):
        g = gmap[blade[k]]
        if g >= 0:
            x[j] = px[k]
            y[j] = py[k]
            gid[j] = g
            j += 1
    t, rho, cnt = fit_parallel_lines(x, y, gid, ng, theta, fixed)
    for b in range(4):
        if gmap[b] >= 0:
            rho4[b] = rho[gmap[b]]
            cnt4[b] = cnt[gmap[b]]
    return t, rho4, cnt4


@njit(cache=True)
def profile_peaks(prof, n, min_count, kmax):  # pragma: no cover - compiled
    """Up to ``kmax`` strongest local maxima of ``prof[:n]`` smoothed by [1, 2, 1] / 4 with
    a value of at least ``min_count``, strongest first (int64 positions)."""
    sm = np.zeros(n)
    for i in range(n):
        a = prof[i - 1] if i > 0 else 0.0
        b = prof[i + 1] if i < n - 1 else 0.0
        sm[i] = 0.25 * a + 0.5 * prof[i] + 0.25 * b
    pos = np.empty(n, dtype=np.int64)
    val = np.empty(n)
    m = 0
    for i in range(1, n - 1):
        if sm[i] >= sm[i - 1] and sm[i] > sm[i + 1] and sm[i] >= min_count:
            pos[m] = i
            val[m] = sm[i]
            m += 1
    order = np.argsort(-val[:m])
    k = min(kmax, m)
    out = np.empty(k, dtype=np.int64)
    for j in range(k):
        out[j] = pos[order[j]]
    return out
