"""Collimator (irradiated field) detection for digital radiography frames.

:func:`detect_collimation` finds the irradiated field of a gain-corrected frame: a
rectangle (axis-aligned or rotated, any blade possibly outside the image), a circle
(possibly clipped by the image edge), or no collimation at all. It returns the shape, a
full-resolution mask and a confidence, and :meth:`CollimationResult.shutter_attributes`
turns the shape into the DICOM Display Shutter module.

Method (pixel, line and region levels):

1. *Pixel level.* The frame is area-averaged by an integer factor to about ``work_size``
   pixels on its long side (one numba pass, which also catches NaN/inf), then once more
   to about 128 pixels for the search. Edges are found on the square root of the image
   (variance-stabilising for quantum noise, so one noise-derived threshold holds in the
   bright field and the dark shutter) as *step-edge gradients*: the Sobel gradient,
   kept only in so far as it exceeds the gradient 3 pixels to either side, which
   suppresses the smooth scatter glow outside the field, the heel effect and soft-tissue
   ramps while keeping the sharp blade edges.
2. *Line level.* An oriented, signed Hough transform (each edge pixel votes only near its
   own gradient direction, the sign telling on which side the image is brighter) gives
   the rectangle's rotation. In the image rotated by that angle, blade candidates are
   the columns and rows where many edge pixels of the right sign line up (row/column
   transition scanning); circle centres come from votes along the gradients.
3. *Region level.* Every combination of blade candidates (each blade possibly outside
   the image) is scored by the edge support along its visible segments, minus the strong
   edges it leaves outside the field (the shuttered area holds only smooth scatter).
   Each blade must also show the field clearly brighter just inside than just outside,
   and the shuttered side must stay well below the field's brightest part (this rejects
   anatomy or direct-exposure boundaries posing as blades). Circles are scored the same
   way along their visible arc. The best hypothesis must beat a minimum score, otherwise
   the frame is reported as uncollimated.
4. *Refinement.* Sub-pixel edge points are taken on short profiles across the boundary
   in the work image (the centroid of the intensity derivative after removing the local
   slope) and fitted: one common angle for all blades (total least squares with outlier
   rejection, snapped to 0 below 0.15 degrees) or a robust algebraic circle fit. The
   shape is mapped back to full resolution and rasterised there by numba kernels that
   write each mask pixel once.

Conventions: ``x`` is the column and ``y`` the row, pixel centres at integer positions;
a pixel belongs to the field when its centre is inside the shape. ``angle_deg`` is the
rotation of the rectangle's left blade normal from the ``+x`` axis towards ``+y`` (on a
display with rows going down, positive is clockwise).

Bad input raises ``TypeError`` (not an ndarray, dtype other than ``uint16``/``float32``,
``out_mask`` not a bool array) or ``ValueError`` (not 2-D, empty, NaN or infinite values,
wrong ``out_mask`` shape, ``work_size`` < 32). A frame with no contrast at all (all zero,
constant, or nothing above zero) is valid and gives ``kind == "none"`` with confidence 0;
so does a frame too small to search (under 16 pixels on a side after downsampling).

May import: numpy, OpenCV, numba (through ``processing._collimator_kernels``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from processing import _collimator_kernels as _k

__all__ = ["CollimationResult", "detect_collimation", "detect_collimation_on_work",
           "work_factor", "work_shape"]

_SEARCH_SIZE = 128  # long side (at least) of the image the hypotheses are searched on
_MIN_SEARCH = 16  # frames smaller than this at search resolution are reported as "none"
_MAX_ANGLE_DEG = 20.5
_ANGLE_STEP_DEG = 0.5
_ANGLE_WINDOW_DEG = 4.0
_MAX_ANGLES = 2  # rotations tried (the strongest line-score peaks, at least 3 deg apart)
_SECOND_ANGLE = 0.25  # another rotation is tried when its line score reaches this fraction
_ALPHA = 0.5  # penalty per unsupported boundary pixel, relative to a supported one
_MIN_SUPPORT = 0.55  # minimum edge fraction along each visible blade or arc
_CLEAR_SUPPORT = 0.9  # mean blade support that makes further hypotheses unnecessary
_AXIS_SNAP_DEG = 0.15
_MIN_EDGE = 0.005  # smallest edge threshold (square-root units of the 99.5th percentile)
_BETA = 1.0  # cost of a strong edge pixel outside the field (the shutter has no structure)
_STRONG = 2.0  # strong edges: gradient above this many times the blade threshold
_MIN_FIELD = 0.1  # smallest field side, as a fraction of the image side
_LOG_OFFSET = 0.01  # added before the log, relative to the 99.5th percentile
_NOISE_K = 4.0  # edge threshold in units of the gradient noise
_EXCESS_D = 3  # step-edge gradients: compared with the gradient this far to either side
_MIN_STEP = 0.15  # median log step across a boundary (a dose ratio of about 1.16)
_MIN_PEAK_GAP = 0.3  # the shuttered side stays this far (log) below the field's 95th percentile
_BLADE_POINTS = 256  # refined edge points along a blade spanning the work image
_SERIAL_MASK = 1 << 21  # masks up to this many pixels are filled on one thread (no wake-up)


@dataclass
class CollimationResult:
    """The irradiated field found in one frame.

    Attributes
    ----------
    kind : str
        ``"rect"``, ``"circle"`` or ``"none"``.
    corners : numpy.ndarray or None
        ``(4, 2)`` float64 ``(x, y)`` corners of the field rectangle, clockwise from
        top-left (top-left, top-right, bottom-right, bottom-left). A blade outside the
        image is placed on the line through the farthest image corner, so corners may
        lie outside the image; the mask is always clipped to it.
    center : tuple of float or None
        ``(x, y)`` centre of a circular field (may lie outside the image).
    radius : float or None
        Radius of a circular field in pixels.
    angle_deg : float
        Rectangle rotation (0 for axis-aligned fields, circles and ``"none"``).
    confidence : float
        0..1; how clearly the boundary and the inside/outside contrast support the result.
    mask : numpy.ndarray
        Bool, the frame's shape, True inside the field (all True for ``"none"``).
    """

    kind: str
    corners: np.ndarray | None
    center: tuple[float, float] | None
    radius: float | None
    angle_deg: float
    confidence: float
    mask: np.ndarray = field(repr=False)

    def shutter_attributes(self) -> dict:
        """The field as DICOM Display Shutter module attributes.

        Returns
        -------
        dict
            Keyword -> value. Rectangles with ``angle_deg == 0``: ``ShutterShape =
            "RECTANGULAR"`` and the four edges as 1-based column/row numbers of the first
            and last pixel inside the field. Rotated rectangles: ``"POLYGONAL"`` with
            ``VerticesOfThePolygonalShutter`` as a flat list of 1-based ``row, column``
            pairs of the field clipped to the image. Circles: ``"CIRCULAR"``,
            ``CenterOfCircularShutter`` as 1-based ``[row, column]`` and
            ``RadiusOfCircularShutter`` in pixels. ``"none"`` gives an empty dict.
        """
        rows, cols = self.mask.shape
        if self.kind == "circle":
            assert self.center is not None and self.radius is not None
            return {
                "ShutterShape": "CIRCULAR",
                "CenterOfCircularShutter": [
                    int(round(self.center[1])) + 1,
                    int(round(self.center[0])) + 1,
                ],
                "RadiusOfCircularShutter": int(round(self.radius)),
            }
        if self.kind != "rect":
            return {}
        assert self.corners is not None
        if self.angle_deg == 0.0:
            xs = self.corners[:, 0]
            ys = self.corners[:, 1]
            left = max(math.ceil(xs.min() - 1e-9), 0)
            right = min(math.floor(xs.max() + 1e-9), cols - 1)
            upper = max(math.ceil(ys.min() - 1e-9), 0)
            lower = min(math.floor(ys.max() + 1e-9), rows - 1)
            return {
                "ShutterShape": "RECTANGULAR",
                "ShutterLeftVerticalEdge": left + 1,
                "ShutterRightVerticalEdge": right + 1,
                "ShutterUpperHorizontalEdge": upper + 1,
                "ShutterLowerHorizontalEdge": lower + 1,
            }
        poly = _clip_polygon(self.corners, 0.0, 0.0, cols - 1.0, rows - 1.0)
        vertices: list[int] = []
        for x, y in poly:
            vertices += [int(round(y)) + 1, int(round(x)) + 1]
        return {"ShutterShape": "POLYGONAL", "VerticesOfThePolygonalShutter": vertices}


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def detect_collimation(
    frame: np.ndarray, *, work_size: int = 512, out_mask: np.ndarray | None = None
) -> CollimationResult:
    """Find the irradiated field of a radiography frame.

    Parameters
    ----------
    frame : numpy.ndarray
        2-D ``uint16`` or ``float32`` frame, offset/gain corrected, linear in dose
        (higher = more dose).
    work_size : int, optional
        Approximate long side, in pixels, of the downsampled copy the search runs on
        (the frame is area-averaged by an integer factor). At least 32.
    out_mask : numpy.ndarray, optional
        Preallocated C-contiguous bool array of the frame's shape to write the mask into
        (returned as ``result.mask``).

    Returns
    -------
    CollimationResult
        The field. A frame without any contrast (all zero or constant) gives
        ``kind == "none"`` and ``confidence == 0``.

    Raises
    ------
    TypeError
        ``frame`` is not an ndarray or not ``uint16``/``float32``; ``out_mask`` is not a
        bool ndarray.
    ValueError
        ``frame`` is not 2-D, is empty or holds NaN/inf; ``out_mask`` has the wrong shape
        or is not C-contiguous and writeable; ``work_size`` < 32.

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:512, 0:512]
    >>> field = (xx >= 100) & (xx < 400) & (yy >= 60) & (yy < 450)
    >>> rng = np.random.default_rng(0)
    >>> frame = rng.poisson(np.where(field, 4000.0, 300.0)).astype(np.uint16)
    >>> res = detect_collimation(frame)
    >>> res.kind, res.corners[0].round(1).tolist(), bool((res.mask == field).all())
    ('rect', [99.5, 59.5], True)
    >>> res.shutter_attributes()["ShutterLeftVerticalEdge"]  # 1-based first column
    101
    """
    frame = _validate(frame, work_size, out_mask)
    h_full, w_full = frame.shape
    if out_mask is None:
        out_mask = np.empty((h_full, w_full), dtype=np.bool_)
    factor = work_factor(frame.shape, work_size)
    small = np.empty(work_shape(frame.shape, factor), dtype=np.float32)
    _k.area_downsample(frame, factor, small)
    # a uint16 frame cannot hold NaN or inf
    if frame.dtype != np.uint16 and not np.isfinite(small).all():
        raise ValueError("frame contains NaN or infinite values")
    return _detect_on_work(small, factor, out_mask)


def work_factor(shape: tuple[int, int], work_size: int = 512) -> int:
    """Integer area-averaging factor that brings ``shape`` to about ``work_size`` pixels."""
    return max(1, math.ceil(max(shape[0], shape[1]) / int(work_size)))


def work_shape(shape: tuple[int, int], factor: int) -> tuple[int, int]:
    """Shape of the work image: ``(ceil(h / factor), ceil(w / factor))``."""
    return (-(-int(shape[0]) // factor), -(-int(shape[1]) // factor))


def detect_collimation_on_work(small: np.ndarray, factor: int,
                               out_mask: np.ndarray) -> CollimationResult:
    """:func:`detect_collimation` from a precomputed work image.

    Parameters
    ----------
    small : numpy.ndarray
        Finite float32 ``factor`` x ``factor`` block mean of the frame (as computed by
        :func:`detect_collimation`; the pipeline computes it while correcting), shape
        ``work_shape(frame.shape, factor)``. It may be overwritten by the next caller
        once this returns (nothing refers to it afterwards).
    factor : int
        The block factor (:func:`work_factor`).
    out_mask : numpy.ndarray
        C-contiguous writeable bool array of the frame's shape (the result's mask).

    Returns
    -------
    CollimationResult
        Exactly what :func:`detect_collimation` returns for the frame.
    """
    if (not isinstance(small, np.ndarray) or small.dtype != np.float32 or small.ndim != 2
            or not isinstance(out_mask, np.ndarray) or out_mask.dtype != np.bool_
            or small.shape != work_shape(out_mask.shape, int(factor))
            or not out_mask.flags.c_contiguous or not out_mask.flags.writeable):
        raise ValueError("detect_collimation_on_work: small must be the float32 work image "
                         "of out_mask's shape at this factor")
    return _detect_on_work(small, int(factor), out_mask)


def _detect_on_work(small: np.ndarray, factor: int, out_mask: np.ndarray) -> CollimationResult:
    search = _Search(small)
    found = search.run()
    if found is None:
        out_mask.fill(True)
        return CollimationResult("none", None, None, None, 0.0, search.none_conf, out_mask)
    return _to_full_resolution(found, factor, out_mask)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _validate(frame: np.ndarray, work_size: int, out_mask: np.ndarray | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.dtype not in (np.dtype(np.uint16), np.dtype(np.float32)):
        raise TypeError(f"frame dtype must be uint16 or float32, got {frame.dtype}")
    if frame.ndim != 2:
        raise ValueError(f"frame must be 2-D (rows, columns), got shape {frame.shape}")
    if frame.size == 0:
        raise ValueError(f"frame is empty (shape {frame.shape})")
    if isinstance(work_size, bool) or not isinstance(work_size, (int, np.integer)):
        raise TypeError(f"work_size must be an int, got {type(work_size).__name__}")
    if work_size < 32:
        raise ValueError(f"work_size must be >= 32, got {work_size}")
    if out_mask is not None:
        if not isinstance(out_mask, np.ndarray) or out_mask.dtype != np.bool_:
            raise TypeError("out_mask must be a numpy bool array")
        if out_mask.shape != frame.shape:
            raise ValueError(
                f"out_mask shape {out_mask.shape} does not match frame shape {frame.shape}"
            )
        if not out_mask.flags.c_contiguous or not out_mask.flags.writeable:
            raise ValueError("out_mask must be C-contiguous and writeable")
    return np.ascontiguousarray(frame)


# --------------------------------------------------------------------------------------------
# The search at work resolution
# --------------------------------------------------------------------------------------------


@dataclass
class _Found:
    kind: str
    # rect: normal angle (rad) and bounds u0 <= n.p <= u1, v0 <= n_perp.p <= v1, with
    # n = (cos t, sin t), n_perp = (-sin t, cos t); +-inf for a blade outside the image
    theta: float = 0.0
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    center: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.0
    confidence: float = 0.0

    def mapped(self, k: float, shift: float) -> _Found:
        """The same shape in coordinates ``p' = k * p + shift``."""
        if self.kind == "circle":
            return _Found(
                "circle",
                center=(self.center[0] * k + shift, self.center[1] * k + shift),
                radius=self.radius * k,
                confidence=self.confidence,
            )
        c, s = math.cos(self.theta), math.sin(self.theta)
        du, dv = shift * (c + s), shift * (c - s)
        u0, u1, v0, v1 = self.bounds
        return _Found(
            "rect",
            theta=self.theta,
            bounds=(u0 * k + du, u1 * k + du, v0 * k + dv, v1 * k + dv),
            confidence=self.confidence,
        )


def _edge_gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step-edge gradients of a smoothed image.

    The Sobel gradient, scaled by how much its magnitude exceeds the larger magnitude
    ``_EXCESS_D`` pixels to either side across the edge: a sharp step keeps almost its
    full gradient and direction without side lobes, a smooth ramp (the scatter glow
    outside the field, the heel effect, soft-tissue thickness) cancels out.
    """
    dx = np.empty(img.shape, np.float32)
    dy = np.empty(img.shape, np.float32)
    _k.edge_gradients(np.ascontiguousarray(img, np.float32), _EXCESS_D, dx, dy)
    return dx, dy


@functools.cache
def _gradient_noise_gain() -> float:
    """Standard deviation of the step-edge gradient for unit white pixel noise."""
    noise = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    sm = cv2.GaussianBlur(noise, (5, 5), 1.0, borderType=cv2.BORDER_REPLICATE)
    dx, _ = _edge_gradients(sm)
    return float(dx[8:-8, 8:-8].std())


class _Search:
    """Hypothesis search on the downsampled frame.

    The work image (``lin``, about ``work_size`` on its long side) is used for the
    sub-pixel refinement; the hypotheses are searched on a further area-averaged copy of
    about ``_SEARCH_SIZE`` pixels on its long side.
    """

    def __init__(self, small: np.ndarray) -> None:
        self.lin = small
        #: confidence of a "none" answer (0 when the frame has no contrast at all)
        self.none_conf = 0.0
        self.k = max(1, int(max(small.shape) / _SEARCH_SIZE))
        if self.k > 1:
            sh = (-(-small.shape[0] // self.k), -(-small.shape[1] // self.k))
            self.slin = np.empty(sh, np.float32)
            _k.area_downsample_serial(small, self.k, self.slin)
        else:
            self.slin = small
        self.h, self.w = self.slin.shape
        #: distance between the blade points refined in the work image: about
        #: ``_BLADE_POINTS`` points along a blade that spans the image
        self.spacing = max(1.0, max(small.shape) / _BLADE_POINTS)

    # ---------------------------------------------------------------- pixel level
    def _prepare(self) -> bool:
        small = self.slin
        # max and min tell whether there is any contrast at all; the 99.5th percentile
        # (nearest rank) scales everything
        top = float(small.max())
        if top <= 0.0 or top - float(small.min()) <= 1e-6 * max(abs(top), 1.0):
            return False
        hi = _quantile(small.ravel(), 0.995)
        if hi <= 0.0 or min(self.h, self.w) < _MIN_SEARCH:
            return False
        # square root for edges: quantum noise has the same spread at every dose there
        # (variance-stabilising), so one threshold holds across field and shutter; the
        # pixel noise comes from a Laplacian residual of it (blind to smooth ramps),
        # on every other row
        self.floor = hi * _LOG_OFFSET
        self.scale = hi
        vst = np.empty_like(small)
        resid = _k.search_vst(small, np.float32(1.0 / hi), vst)
        resid_med = _quantile_inplace(resid, 0.5) if resid.size else 0.0
        self.vst = cv2.GaussianBlur(vst, (5, 5), 1.0, borderType=cv2.BORDER_REPLICATE)
        # log(x + c) for dose ratios (region tests); c keeps the darkest areas tame
        self.log = np.log(self.vst * self.vst + np.float32(_LOG_OFFSET))
        self.gx, self.gy = _edge_gradients(self.vst)
        # the residual's noise turned into the noise of the step-edge gradient
        sigma = 1.4826 * resid_med / math.sqrt(20.0)
        self.tau = max(_NOISE_K * sigma * _gradient_noise_gain(), _MIN_EDGE)
        self.ex, self.ey, self.egx, self.egy, self.sx, self.sy = _k.collect_edges(
            self.gx, self.gy, np.float32(1.4 * self.tau), np.float32(_STRONG * self.tau)
        )
        self.min_len = max(6, int(0.04 * min(self.h, self.w)))
        return True

    def run(self) -> _Found | None:
        if not self._prepare():
            return None
        rect = self._find_rect()
        circle = None
        if rect is None or rect[3] < 3 or rect[1] < _CLEAR_SUPPORT:
            # three or more well-supported straight blades cannot be a circle
            circle = self._find_circle()
        cands = [c for c in (rect, circle) if c is not None]
        best = max(cands, key=lambda c: c[0]) if cands else None
        threshold = max(0.25 * min(self.h, self.w), 12.0)
        if best is None or best[0] < threshold:
            score = 0.0 if best is None else best[0]
            self.none_conf = float(min(max(1.0 - score / threshold, 0.0), 1.0))
            return None
        k = self.k
        shift = (k - 1) / 2.0
        coarse = best[2].mapped(k, shift)
        if coarse.kind == "rect":
            found = self._refine_rect(coarse)
        else:
            found = self._refine_circle(coarse)
        contrast = self._contrast(found.mapped(1.0 / k, -shift / k))
        if contrast < _MIN_STEP:
            self.none_conf = 0.5
            return None
        found.confidence = float(
            np.clip(best[1], 0.0, 1.0) * np.clip(contrast / 0.6, 0.0, 1.0) ** 0.5
        )
        return found

    # ---------------------------------------------------------------- rectangles
    def _angles(self) -> list[float]:
        thetas = np.deg2rad(
            np.arange(-_MAX_ANGLE_DEG, _MAX_ANGLE_DEG + 1e-6, _ANGLE_STEP_DEG)
        ).astype(np.float64)
        m = max(self.h, self.w)
        score = _k.hough_line_scores(
            self.ex, self.ey, self.egx, self.egy, thetas,
            math.radians(_ANGLE_WINDOW_DEG), float(m + 2), 3 * m + 4,
        )
        order = np.argsort(-score)
        picked: list[int] = []
        for i in order:
            if score[i] <= 0:
                break
            if all(abs(int(i) - j) * _ANGLE_STEP_DEG >= 3.0 for j in picked):
                picked.append(int(i))
            if len(picked) > 1 and score[i] < _SECOND_ANGLE * score[picked[0]]:
                picked.pop()
                break
            if len(picked) == _MAX_ANGLES:
                break
        if not picked:
            picked = [len(thetas) // 2]
        return [float(thetas[i]) for i in picked]

    def _find_rect(self):
        best = None
        for theta in self._angles():
            r = self._rect_at(theta)
            if r is not None and (best is None or r[0] > best[0]):
                best = r
            if best is not None and best[3] >= 2 and best[1] >= _CLEAR_SUPPORT:
                break  # a clear answer at the strongest rotation: no need to try others
        return best

    def _rect_at(self, theta: float):
        c, s = math.cos(theta), math.sin(theta)
        h, w = self.h, self.w
        W2 = int(math.ceil(w * abs(c) + h * abs(s))) + 4
        H2 = int(math.ceil(w * abs(s) + h * abs(c))) + 4
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        ox, oy = (W2 - 1) / 2.0, (H2 - 1) / 2.0
        M = np.array(
            [[c, s, ox - c * cx - s * cy], [-s, c, oy + s * cx - c * cy]], dtype=np.float64
        )
        rot_vst = cv2.warpAffine(
            self.vst, M, (W2, H2), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        # log(x + c) from the square-root image (for the region tests)
        rot = np.log(rot_vst * rot_vst + np.float32(_LOG_OFFSET))
        valid = _k.rotated_valid(H2, W2, c, s, ox, oy, cx, cy, w, h)
        gx, gy = _edge_gradients(rot_vst)
        tau_b = np.float32(self.tau)
        *peaks, cum_col, cum_row, sat = _k.rect_tables(
            gx, gy, valid, tau_b, 1, np.float32(_STRONG * tau_b), float(self.min_len), 5
        )
        cands = [list(p) for p in peaks]
        for _ in range(8):
            arrs = [np.array([-1] + c, dtype=np.int64) for c in cands]
            score, il, ir, it, ib, sup = _k.score_rect_hypotheses(
                cum_col, cum_row, sat, arrs[0], arrs[1], arrs[2], arrs[3],
                _ALPHA, _BETA, 3, self.min_len, int(_MIN_FIELD * w), int(_MIN_FIELD * h),
                _MIN_SUPPORT,
            )
            if score <= 0:
                return None
            pos = [int(arrs[0][il]), int(arrs[1][ir]), int(arrs[2][it]), int(arrs[3][ib])]
            bad = int(_k.check_blades(rot, valid, np.array(pos, np.int64), _MIN_STEP,
                                      _MIN_PEAK_GAP))
            if bad < 0:
                break
            cands[bad].remove(pos[bad])
        else:
            return None
        # back to search coordinates: u = x' - ox + n.c ; v = y' - oy + n_perp.c
        nc = c * cx + s * cy
        npc = -s * cx + c * cy
        bounds = (
            pos[0] - ox + nc if pos[0] >= 0 else -math.inf,
            pos[1] - ox + nc if pos[1] >= 0 else math.inf,
            pos[2] - oy + npc if pos[2] >= 0 else -math.inf,
            pos[3] - oy + npc if pos[3] >= 0 else math.inf,
        )
        nblades = sum(p >= 0 for p in pos)
        return score, sup, _Found("rect", theta=theta, bounds=bounds), nblades

    def _edge_offsets(self, bx, by, nx, ny):
        """Sub-pixel edge offsets along inward normals ``(nx, ny)`` at work points ``(bx, by)``.

        Returns ``(offset, ok)`` (see :func:`processing._collimator_kernels.profile_edges`).
        """
        return _k.profile_edges(
            self.lin, np.ascontiguousarray(bx, np.float64), np.ascontiguousarray(by, np.float64),
            np.ascontiguousarray(nx, np.float64), np.ascontiguousarray(ny, np.float64),
            self.scale, self.floor, self.tau, 0.5 * _MIN_STEP,
        )

    def _blade_groups(self, theta: float, bounds):
        """Sub-pixel edge points of every blade inside the image (one kernel call):
        ``(px, py, blade)`` in blade order, top/bottom points rotated to share the
        normal (see :func:`processing._collimator_kernels.blade_points`)."""
        return _k.blade_points(
            self.lin, math.cos(theta), math.sin(theta), np.asarray(bounds, np.float64),
            self.scale, self.floor, self.tau, 0.5 * _MIN_STEP, self.spacing,
        )

    def _refine_rect(self, found: _Found) -> _Found:
        theta = found.theta
        bounds = list(found.bounds)
        for _ in range(1):
            theta, new = _fit_common_angle(self._blade_groups(theta, bounds), theta)
            for k, rho in new.items():
                bounds[k] = rho
        if abs(math.degrees(theta)) < _AXIS_SNAP_DEG:
            theta = 0.0
            _, new = _fit_common_angle(self._blade_groups(0.0, bounds), 0.0, fixed=True)
            for k, rho in new.items():
                bounds[k] = rho
        return _Found("rect", theta=theta, bounds=tuple(bounds))

    # ---------------------------------------------------------------- circles
    def _find_circle(self):
        h, w = self.h, self.w
        n = len(self.ex)
        if n < 16:
            return None
        stride = max(1, n // 3000)
        xs, ys = self.ex[::stride], self.ey[::stride]
        gxs, gys = self.egx[::stride], self.egy[::stride]
        scale = 0.5
        off = 0.25 * max(h, w) * scale
        acc = np.zeros(
            (int(h * scale + 2 * off) + 1, int(w * scale + 2 * off) + 1), dtype=np.float32
        )
        r_min = 0.06 * min(h, w)
        r_max = 0.8 * max(h, w)
        _k.circle_votes(xs, ys, gxs, gys, r_min, r_max, 1.0, scale, off, acc)
        acc = cv2.GaussianBlur(acc, (5, 5), 1.0)
        dil = cv2.dilate(acc, np.ones((5, 5), np.uint8))
        peaks = np.argwhere((acc >= dil) & (acc > 0))
        if len(peaks) == 0:
            return None
        vals = acc[peaks[:, 0], peaks[:, 1]]
        peaks = peaks[np.argsort(-vals)][:3]
        gm = np.hypot(self.egx, self.egy)
        best = None
        for py, px in peaks:
            ccx = (px - off) / scale
            ccy = (py - off) / scale
            dx = ccx - self.ex
            dy = ccy - self.ey
            r = np.hypot(dx, dy)
            cosang = (self.egx * dx + self.egy * dy) / np.maximum(r * gm, 1e-9)
            sel = (cosang > 0.9) & (r >= r_min) & (r <= r_max)
            if sel.sum() < 8:
                continue
            hist = np.bincount(r[sel].astype(np.intp), minlength=int(r_max) + 2).astype(float)
            hist = np.convolve(hist, [1.0, 2.0, 1.0], mode="same")
            for rr in np.argsort(-hist)[:2]:
                near = sel & (np.abs(r - (rr + 0.5)) < 4.0)
                fit = _fit_circle(self.ex[near], self.ey[near]) if near.sum() >= 8 else None
                if fit is None or not abs(fit[2] - rr) < 8.0:
                    fit = (ccx, ccy, float(rr) + 0.5)
                cand = self._circle_score(*fit)
                if cand is not None and (best is None or cand[0] > best[0]):
                    best = cand
        return best

    def _circle_score(self, cx: float, cy: float, r: float):
        ne, nv, outside = _k.circle_support(
            self.gx, self.gy, float(cx), float(cy), float(r), float(self.tau), self.sx, self.sy
        )
        if nv < self.min_len or r < _MIN_FIELD * min(self.h, self.w) / 2:
            return None
        sup = ne / nv
        if sup < _MIN_SUPPORT:
            return None
        score = ne - _ALPHA * (nv - ne) - _BETA * outside
        return score, sup, _Found("circle", center=(cx, cy), radius=r)

    def _refine_circle(self, found: _Found) -> _Found:
        cx, cy = found.center
        r = found.radius
        h, w = self.lin.shape
        for _ in range(3):
            n = max(16, int(2 * math.pi * r))
            phi = np.arange(n) * (2 * math.pi / n)
            ux, uy = np.cos(phi), np.sin(phi)
            bx = cx + r * ux
            by = cy + r * uy
            ok = (bx >= 1) & (bx <= w - 2) & (by >= 1) & (by <= h - 2)
            ux, uy, bx, by = ux[ok], uy[ok], bx[ok], by[ok]
            if len(bx) < 8:
                break
            off, sel = self._edge_offsets(bx, by, -ux, -uy)
            if sel.sum() < 8:
                break
            ex = bx[sel] - off[sel] * ux[sel]
            ey = by[sel] - off[sel] * uy[sel]
            fit = _fit_circle(ex, ey)
            if fit is None:
                break
            cx, cy, r = fit
        return _Found("circle", center=(cx, cy), radius=r)

    # ---------------------------------------------------------------- region level
    def _contrast(self, found: _Found) -> float:
        """Median log level in a band just inside minus just outside the boundary (0 when
        the region test fails)."""
        if found.kind == "circle":
            args = (True, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, found.center[0], found.center[1],
                    found.radius)
        else:
            u0, u1, v0, v1 = found.bounds
            args = (False, math.cos(found.theta), math.sin(found.theta), u0, u1, v0, v1,
                    0.0, 0.0, 0.0)
        li, lo, inside, outside = _k.contrast_samples(self.log, *args)
        if li.size < 8 or lo.size < 8:
            return 0.0
        ok, step = _region_test(li, lo, inside, outside)
        return step if ok else 0.0


def _quantile(a: np.ndarray, q: float) -> float:
    """The ``q`` quantile (nearest rank) of a 1-D array, cheaply."""
    k = int(q * (a.size - 1) + 0.5)
    return float(np.partition(a, k)[k])


def _quantile_inplace(a: np.ndarray, q: float) -> float:
    """:func:`_quantile` of a scratch array, which it reorders."""
    k = int(q * (a.size - 1) + 0.5)
    a.partition(k)
    return float(a[k])


def _region_ok(inner: np.ndarray, outer_near: np.ndarray, inside: np.ndarray,
               outside: np.ndarray) -> bool:
    """Region test of one boundary.

    The band just inside must be clearly brighter than the band just outside, and the
    shuttered side (scatter only) must hold nothing brighter than the field does.
    """
    return _region_test(inner, outer_near, inside, outside)[0]


def _region_test(inner: np.ndarray, outer_near: np.ndarray, inside: np.ndarray,
                 outside: np.ndarray) -> tuple[bool, float]:
    """:func:`_region_ok` and the median step across the boundary (NaN when a band
    holds fewer than 8 samples)."""
    if inner.size < 8 or outer_near.size < 8:
        return True, math.nan
    step = _quantile(inner, 0.5) - _quantile(outer_near, 0.5)
    if step < _MIN_STEP:
        return False, step
    if outside.size < 8 or inside.size < 8:
        return True, step
    return _quantile(outside, 0.95) <= _quantile(inside, 0.95) - _MIN_PEAK_GAP, step


def _fit_circle(ex: np.ndarray, ey: np.ndarray):
    """Robust algebraic circle fit; ``(cx, cy, r)`` or None."""
    cx, cy, r, ok = _k.fit_circle(
        np.ascontiguousarray(ex, np.float64), np.ascontiguousarray(ey, np.float64)
    )
    return (cx, cy, r) if ok else None


def _fit_common_angle(groups, theta: float, fixed: bool = False):
    """Total-least-squares fit of parallel lines sharing one normal ``(cos t, sin t)``.

    ``groups`` is ``(px, py, blade)``: edge points sorted by blade (top/bottom points
    rotated so that all blades share the normal). Every blade with at least 4 points gets
    its own offset, outliers are rejected (see
    :func:`processing._collimator_kernels.fit_parallel_lines`). Returns the angle (the
    input angle if the fit leaves the search range) and ``{blade: offset}``.
    """
    px, py, blade = groups
    t, rho, cnt = _k.fit_blades(px, py, blade, float(theta), bool(fixed))
    if abs(math.degrees(t)) > _MAX_ANGLE_DEG + 2:
        t, rho, cnt = _k.fit_blades(px, py, blade, float(theta), True)
    return t, {k: float(rho[k]) for k in range(4) if cnt[k] >= 4}


def _clip_polygon(poly: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon to an axis-aligned box."""
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_greater in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        out = []
        if not pts:
            break
        for i in range(len(pts)):
            a = pts[i - 1]
            b = pts[i]
            ina = a[axis] >= bound if keep_greater else a[axis] <= bound
            inb = b[axis] >= bound if keep_greater else b[axis] <= bound
            if inb:
                if not ina:
                    out.append(_intersect(a, b, axis, bound))
                out.append(b)
            elif ina:
                out.append(_intersect(a, b, axis, bound))
        pts = out
    return np.array(pts, dtype=np.float64).reshape(-1, 2)


def _intersect(a, b, axis: int, bound: float):
    t = (bound - a[axis]) / (b[axis] - a[axis])
    return (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))


# --------------------------------------------------------------------------------------------
# Back to full resolution
# --------------------------------------------------------------------------------------------


def _to_full_resolution(found: _Found, f: int, mask: np.ndarray) -> CollimationResult:
    h, w = mask.shape
    shift = (f - 1) / 2.0
    if found.kind == "circle":
        cx = found.center[0] * f + shift
        cy = found.center[1] * f + shift
        r = found.radius * f
        fill = _k.fill_circle_mask_serial if mask.size <= _SERIAL_MASK else _k.fill_circle_mask
        fill(mask, cx, cy, r)
        return CollimationResult(
            "circle", None, (float(cx), float(cy)), float(r), 0.0, found.confidence, mask
        )
    c, s = math.cos(found.theta), math.sin(found.theta)
    u0, u1, v0, v1 = (b * f + shift * (c + s) if i < 2 else b * f + shift * (c - s)
                      for i, b in enumerate(found.bounds))
    fill = _k.fill_rect_mask_serial if mask.size <= _SERIAL_MASK else _k.fill_rect_mask
    fill(mask, c, s, u0, u1, v0, v1)
    ext = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    pu = ext @ np.array([c, s])
    pv = ext @ np.array([-s, c])
    u0 = u0 if math.isfinite(u0) else float(pu.min())
    u1 = u1 if math.isfinite(u1) else float(pu.max())
    v0 = v0 if math.isfinite(v0) else float(pv.min())
    v1 = v1 if math.isfinite(v1) else float(pv.max())
    corners = np.array(
        [
            [u * c - v * s, u * s + v * c]
            for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))
        ],
        dtype=np.float64,
    )
    return CollimationResult(
        "rect", corners, None, None, float(math.degrees(found.theta)), found.confidence, mask
    )
