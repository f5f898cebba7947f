"""Unit tests of processing.collimator: kernels against NumPy references, shapes on clean
synthetic frames, DICOM shutter attributes, and input validation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from processing import _collimator_kernels as K
from processing import collimator as C
from processing.collimator import CollimationResult, detect_collimation

# --------------------------------------------------------------------------------------------
# Quick synthetic frames with ground truth (not a detector model: a primary image with heel
# effect, an elliptical body with bones and direct exposure around it, a blurred field
# edge, scatter spread from the irradiated area, Poisson-like noise). A pixel is inside
# the field when its centre is inside the shape, as in processing.collimator.
# --------------------------------------------------------------------------------------------


def field_mask(shape, field) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if field is None:
        return np.ones(shape, bool)
    if field[0] == "circle":
        _, cx, cy, r = field
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    _, cx, cy, fw, fh, ang = field
    t = math.radians(ang)
    c, s = math.cos(t), math.sin(t)
    u = c * (xx - cx) + s * (yy - cy)
    v = -s * (xx - cx) + c * (yy - cy)
    return (np.abs(u) <= fw / 2) & (np.abs(v) <= fh / 2)


def rect_corners(field) -> np.ndarray:
    _, cx, cy, fw, fh, ang = field
    t = math.radians(ang)
    c, s = math.cos(t), math.sin(t)
    out = []
    for u, v in ((-fw / 2, -fh / 2), (fw / 2, -fh / 2), (fw / 2, fh / 2), (-fw / 2, fh / 2)):
        out.append((cx + u * c - v * s, cy + u * s + v * c))
    return np.array(out)


def synth_frame(shape, field, rng, *, dose=2000.0, phantom=True, scatter=0.25, heel=0.15,
                blur=1.0, dtype=np.float32):
    """Return ``(frame, truth_mask)``; ``field`` is ``None``, ``("rect", cx, cy, w, h,
    angle_deg)`` or ``("circle", cx, cy, r)`` in pixel coordinates."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    prim = dose * (1.0 + heel * (yy / h - 0.5))
    if phantom:
        bx, by = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
        ax, ay = w * rng.uniform(0.25, 0.45), h * rng.uniform(0.3, 0.6)
        d = 1 - ((xx - bx) / ax) ** 2 - ((yy - by) / ay) ** 2
        thick = np.sqrt(np.clip(d, 0, None)) * rng.uniform(1.5, 3.0)
        for _ in range(4):
            ex, ey = bx + rng.uniform(-0.6, 0.6) * ax, by + rng.uniform(-0.6, 0.6) * ay
            rx, ry = w * rng.uniform(0.02, 0.06), h * rng.uniform(0.1, 0.3)
            d2 = 1 - ((xx - ex) / rx) ** 2 - ((yy - ey) / ry) ** 2
            thick += np.sqrt(np.clip(d2, 0, None)) * 1.5
        prim = prim * np.exp(-thick)
    truth = field_mask(shape, field)
    soft = truth.astype(np.float32)
    if blur > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), blur)
    sig = prim * soft
    # scatter: the irradiated primary spread by a wide kernel (computed at 1/8 scale)
    small = cv2.resize(sig, (max(w // 8, 1), max(h // 8, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 0.08 * max(h, w) / 8, borderType=cv2.BORDER_CONSTANT)
    sig = sig + scatter * cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    noisy = sig + np.sqrt(np.maximum(sig, 0)) * rng.standard_normal(shape).astype(np.float32)
    noisy = np.maximum(noisy, 0)
    if dtype == np.uint16:
        return np.clip(noisy, 0, 65535).astype(np.uint16), truth
    return noisy.astype(np.float32), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.count_nonzero(a & b)
    union = np.count_nonzero(a | b)
    return inter / union if union else 1.0


# --------------------------------------------------------------------------------------------
# NumPy references of the hot loops
# --------------------------------------------------------------------------------------------


def ref_area_downsample(src: np.ndarray, f: int) -> np.ndarray:
    h, w = -(-src.shape[0] // f), -(-src.shape[1] // f)
    out = np.empty((h, w), np.float64)
    s = src.astype(np.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = s[i * f:(i + 1) * f, j * f:(j + 1) * f].mean()
    return out


def ref_rect_mask(shape, c, s, u0, u1, v0, v1) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def ref_circle_mask(shape, cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def ref_edge_gradients(img: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(img.astype(np.float64), 1, mode="edge")
    gx = ((p[:-2, 2:] - p[:-2, :-2]) + 2 * (p[1:-1, 2:] - p[1:-1, :-2])
          + (p[2:, 2:] - p[2:, :-2])) / 8
    gy = ((p[2:, :-2] - p[:-2, :-2]) + 2 * (p[2:, 1:-1] - p[:-2, 1:-1])
          + (p[2:, 2:] - p[:-2, 2:])) / 8
    ax, ay = np.abs(gx), np.abs(gy)
    ex = np.zeros_like(gx)
    ey = np.zeros_like(gy)
    ex[:, d:-d] = ax[:, d:-d] - np.maximum(ax[:, 2 * d:], ax[:, :-2 * d])
    ey[d:-d, :] = ay[d:-d, :] - np.maximum(ay[2 * d:, :], ay[:-2 * d, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ax >= ay, ex / ax, ey / ay)
    ratio = np.clip(np.nan_to_num(ratio), 0.0, 1.0)
    return gx * ratio, gy * ratio


# --------------------------------------------------------------------------------------------
# Kernels match their references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("shape,f", [((64, 64), 2), ((67, 53), 3), ((100, 37), 6), ((9, 9), 1)])
def test_area_downsample_matches_reference(dtype, shape, f):
    rng = np.random.default_rng(1)
    src = (rng.random(shape) * 60000).astype(dtype)
    ref = ref_area_downsample(src, f)
    for kern in (K.area_downsample, K.area_downsample_serial):
        out = np.empty(ref.shape, np.float32)
        kern(src, f, out)
        np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-3)


def test_area_downsample_propagates_nan():
    src = np.ones((40, 40), np.float32)
    src[13, 27] = np.nan
    out = np.empty((10, 10), np.float32)
    K.area_downsample(src, 4, out)
    assert np.isnan(out[3, 6])
    assert np.isfinite(np.delete(out.ravel(), 3 * 10 + 6)).all()


@pytest.mark.parametrize(
    "params",
    [
        (1.0, 0.0, 3.0, 40.5, 7.2, 50.0),
        (math.cos(0.3), math.sin(0.3), 10.0, 50.0, -5.0, 30.0),
        (math.cos(-0.35), math.sin(-0.35), -math.inf, 45.0, 2.0, math.inf),
        (1.0, 0.0, -math.inf, math.inf, -math.inf, math.inf),
        (1.0, 0.0, 80.0, 90.0, 0.0, 10.0),  # entirely outside
    ],
)
def test_fill_rect_mask_matches_reference(params):
    shape = (61, 77)
    ref = ref_rect_mask(shape, *params)
    for kern in (K.fill_rect_mask, K.fill_rect_mask_serial):
        out = np.zeros(shape, bool)
        out[::3] = True  # stale content must be overwritten
        kern(out, *params)
        assert np.array_equal(out, ref)


@pytest.mark.parametrize("params", [(30.2, 25.7, 18.3), (-10.0, 20.0, 35.0), (5.0, 5.0, 0.4)])
def test_fill_circle_mask_matches_reference(params):
    shape = (50, 64)
    ref = ref_circle_mask(shape, *params)
    for kern in (K.fill_circle_mask, K.fill_circle_mask_serial):
        out = np.ones(shape, bool)
        kern(out, *params)
        assert np.array_equal(out, ref)


def test_edge_gradients_match_reference():
    rng = np.random.default_rng(2)
    img = rng.random((40, 57)).astype(np.float32)
    img[:, 30:] += 2.0  # a step
    dx = np.empty_like(img)
    dy = np.empty_like(img)
    K.edge_gradients(img, 3, dx, dy)
    rx, ry = ref_edge_gradients(img, 3)
    np.testing.assert_allclose(dx, rx, atol=1e-5)
    np.testing.assert_allclose(dy, ry, atol=1e-5)


def test_fit_circle_recovers_circle_with_outliers():
    rng = np.random.default_rng(3)
    phi = rng.uniform(0, 2 * np.pi, 300)
    x = 40.0 + 25.0 * np.cos(phi) + rng.normal(0, 0.1, 300)
    y = -7.0 + 25.0 * np.sin(phi) + rng.normal(0, 0.1, 300)
    x[:30] += rng.uniform(5, 15, 30)  # outliers
    cx, cy, r, ok = K.fit_circle(x, y)
    assert ok
    assert abs(cx - 40.0) < 0.1 and abs(cy + 7.0) < 0.1 and abs(r - 25.0) < 0.1


# --------------------------------------------------------------------------------------------
# Detection on clean synthetic frames
# --------------------------------------------------------------------------------------------

SHAPE = (1024, 896)


def _corners_close(found: np.ndarray, truth: np.ndarray, tol: float) -> float:
    return float(np.abs(found - truth).max())


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_axis_aligned_rect(dtype):
    rng = np.random.default_rng(10)
    field = ("rect", 430.0, 520.0, 560.0, 610.0, 0.0)
    frame, truth = synth_frame(SHAPE, field, rng, dtype=dtype)
    res = detect_collimation(frame)
    assert res.kind == "rect"
    assert res.angle_deg == 0.0
    assert res.mask.shape == SHAPE and res.mask.dtype == bool
    assert iou(res.mask, truth) > 0.99
    assert res.confidence > 0.5
    # corners clockwise from top-left, at the field edge (within a pixel)
    assert np.abs(res.corners - rect_corners(field)).max() < 1.5
    xs, ys = res.corners[:, 0], res.corners[:, 1]
    assert xs[0] < xs[1] and ys[1] < ys[2] and xs[2] > xs[3] and ys[3] > ys[0]


@pytest.mark.parametrize("angle", [-18.0, -7.5, 4.0, 12.0, 19.5])
def test_rotated_rect_corners_within_two_work_pixels(angle):
    rng = np.random.default_rng(int(angle * 10) + 300)
    field = ("rect", 450.0, 500.0, 520.0, 430.0, angle)
    frame, truth = synth_frame(SHAPE, field, rng)
    res = detect_collimation(frame)
    factor = math.ceil(max(SHAPE) / 512)
    assert res.kind == "rect"
    assert abs(res.angle_deg - angle) < 0.3
    assert np.abs(res.corners - rect_corners(field)).max() <= 2.0 * factor
    assert iou(res.mask, truth) > 0.99


def test_rect_with_blades_outside_the_image():
    rng = np.random.default_rng(11)
    # left and top blades beyond the image, rotated
    field = ("rect", 250.0, 300.0, 900.0, 1000.0, 8.0)
    frame, truth = synth_frame(SHAPE, field, rng)
    res = detect_collimation(frame)
    assert res.kind == "rect"
    assert abs(res.angle_deg - 8.0) < 0.5
    assert iou(res.mask, truth) > 0.98
    # the two visible corners (bottom-right side) are found; the others lie outside
    assert (res.corners[:, 0] < 0).any() or (res.corners[:, 1] < 0).any()


def test_circle_inside():
    rng = np.random.default_rng(12)
    field = ("circle", 450.0, 530.0, 330.0)
    frame, truth = synth_frame(SHAPE, field, rng)
    res = detect_collimation(frame)
    assert res.kind == "circle"
    assert res.corners is None and res.angle_deg == 0.0
    assert math.hypot(res.center[0] - 450.0, res.center[1] - 530.0) < 2.0
    assert abs(res.radius - 330.0) < 2.0
    assert iou(res.mask, truth) > 0.99


def test_circle_clipped_by_image_edge():
    rng = np.random.default_rng(13)
    field = ("circle", 300.0, 420.0, 480.0)  # cut by the top and left edges
    frame, truth = synth_frame(SHAPE, field, rng)
    res = detect_collimation(frame)
    assert res.kind == "circle"
    assert abs(res.radius - 480.0) < 3.0
    assert iou(res.mask, truth) > 0.99


def test_no_collimation_is_none():
    for seed in range(3):
        frame, _ = synth_frame(SHAPE, None, np.random.default_rng(20 + seed))
        res = detect_collimation(frame)
        assert res.kind == "none"
        assert res.mask.all()
        assert res.corners is None and res.center is None and res.radius is None
        assert res.shutter_attributes() == {}


def test_out_mask_is_reused():
    frame, truth = synth_frame(SHAPE, ("rect", 400.0, 500.0, 500.0, 600.0, 0.0),
                               np.random.default_rng(14))
    buf = np.ones(SHAPE, bool)
    res = detect_collimation(frame, out_mask=buf)
    assert res.mask is buf
    assert iou(buf, truth) > 0.99
    res2 = detect_collimation(np.zeros(SHAPE, np.uint16), out_mask=buf)
    assert res2.mask is buf and buf.all()


def test_work_size_changes_resolution_not_result():
    frame, truth = synth_frame(SHAPE, ("rect", 420.0, 500.0, 600.0, 640.0, -6.0),
                               np.random.default_rng(15))
    for ws in (256, 512, 1024):
        res = detect_collimation(frame, work_size=ws)
        assert res.kind == "rect"
        assert iou(res.mask, truth) > 0.985


# --------------------------------------------------------------------------------------------
# DICOM Display Shutter attributes
# --------------------------------------------------------------------------------------------


def _result(kind, shape=(100, 120), **kw) -> CollimationResult:
    base = dict(corners=None, center=None, radius=None, angle_deg=0.0, confidence=1.0,
                mask=np.ones(shape, bool))
    base.update(kw)
    return CollimationResult(kind, **base)


def test_shutter_rectangular_is_one_based_and_inclusive():
    # field covers columns 10..89 and rows 5..59 (0-based pixel centres)
    corners = np.array([[9.6, 4.5], [89.5, 4.5], [89.5, 59.2], [9.6, 59.2]])
    attrs = _result("rect", corners=corners).shutter_attributes()
    assert attrs == {
        "ShutterShape": "RECTANGULAR",
        "ShutterLeftVerticalEdge": 11,
        "ShutterRightVerticalEdge": 90,
        "ShutterUpperHorizontalEdge": 6,
        "ShutterLowerHorizontalEdge": 60,
    }


def test_shutter_rectangular_matches_mask_of_detection():
    frame, _ = synth_frame(SHAPE, ("rect", 430.0, 520.0, 560.0, 610.0, 0.0),
                           np.random.default_rng(16))
    res = detect_collimation(frame)
    attrs = res.shutter_attributes()
    rows = np.nonzero(res.mask.any(axis=1))[0]
    cols = np.nonzero(res.mask.any(axis=0))[0]
    assert attrs["ShutterLeftVerticalEdge"] == cols[0] + 1
    assert attrs["ShutterRightVerticalEdge"] == cols[-1] + 1
    assert attrs["ShutterUpperHorizontalEdge"] == rows[0] + 1
    assert attrs["ShutterLowerHorizontalEdge"] == rows[-1] + 1


def test_shutter_rectangular_clipped_to_image():
    corners = np.array([[-50.0, -20.0], [60.0, -20.0], [60.0, 500.0], [-50.0, 500.0]])
    attrs = _result("rect", corners=corners).shutter_attributes()
    assert attrs["ShutterLeftVerticalEdge"] == 1
    assert attrs["ShutterUpperHorizontalEdge"] == 1
    assert attrs["ShutterLowerHorizontalEdge"] == 100
    assert attrs["ShutterRightVerticalEdge"] == 61


def test_shutter_circular_center_is_row_column_one_based():
    attrs = _result("circle", center=(40.4, 30.6), radius=25.3).shutter_attributes()
    assert attrs == {
        "ShutterShape": "CIRCULAR",
        "CenterOfCircularShutter": [32, 41],
        "RadiusOfCircularShutter": 25,
    }


def test_shutter_polygonal_for_rotated_rect():
    field = ("rect", 60.0, 50.0, 60.0, 40.0, 10.0)
    corners = rect_corners(field)
    attrs = _result("rect", corners=corners, angle_deg=10.0).shutter_attributes()
    assert attrs["ShutterShape"] == "POLYGONAL"
    v = attrs["VerticesOfThePolygonalShutter"]
    assert len(v) == 8 and all(isinstance(a, int) for a in v)
    expect = [int(round(c)) + 1 for x, y in corners for c in (y, x)]
    assert v == expect


def test_shutter_polygonal_clips_to_image():
    field = ("rect", 10.0, 50.0, 80.0, 40.0, 15.0)  # the left part leaves the image
    attrs = _result("rect", corners=rect_corners(field), angle_deg=15.0).shutter_attributes()
    v = np.array(attrs["VerticesOfThePolygonalShutter"]).reshape(-1, 2)
    assert (v[:, 0] >= 1).all() and (v[:, 0] <= 100).all()
    assert (v[:, 1] >= 1).all() and (v[:, 1] <= 120).all()
    assert len(v) >= 4


# --------------------------------------------------------------------------------------------
# Input validation and degenerate frames
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, np.float64, np.int32, np.uint8])
def test_wrong_dtype_is_type_error(dtype):
    with pytest.raises(TypeError, match="uint16 or float32"):
        detect_collimation(np.ones((32, 32), dtype=dtype))


def test_not_an_array_is_type_error():
    with pytest.raises(TypeError, match="ndarray"):
        detect_collimation([[1, 2], [3, 4]])  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(4, 32, 32), (32,), ()])
def test_wrong_ndim_is_value_error(shape):
    with pytest.raises(ValueError, match="2-D"):
        detect_collimation(np.ones(shape, np.uint16))


@pytest.mark.parametrize("shape", [(0, 10), (10, 0)])
def test_empty_is_value_error(shape):
    with pytest.raises(ValueError, match="empty"):
        detect_collimation(np.ones(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_value_error(bad):
    frame = np.full((300, 200), 1000.0, np.float32)
    frame[123, 45] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        detect_collimation(frame)


@pytest.mark.parametrize(
    "frame", [np.zeros((200, 300), np.uint16), np.full((200, 300), 777, np.uint16),
              np.full((64, 64), 3.5, np.float32), np.full((64, 64), -2.0, np.float32)]
)
def test_constant_frame_is_none_with_zero_confidence(frame):
    res = detect_collimation(frame)
    assert res.kind == "none" and res.confidence == 0.0 and res.mask.all()


def test_bad_out_mask_and_work_size():
    frame = np.ones((64, 64), np.uint16)
    with pytest.raises(TypeError, match="bool"):
        detect_collimation(frame, out_mask=np.ones((64, 64), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        detect_collimation(frame, out_mask=np.ones((64, 65), bool))
    with pytest.raises(ValueError, match="C-contiguous"):
        detect_collimation(frame, out_mask=np.ones((64, 128), bool)[:, ::2])
    with pytest.raises(ValueError, match="work_size"):
        detect_collimation(frame, work_size=16)
    with pytest.raises(TypeError, match="work_size"):
        detect_collimation(frame, work_size=300.0)  # type: ignore[arg-type]


def test_tiny_and_odd_frames_do_not_crash():
    rng = np.random.default_rng(5)
    for shape in [(1, 1), (3, 500), (500, 3), (17, 23)]:
        res = detect_collimation((rng.random(shape) * 1000).astype(np.float32))
        assert res.mask.shape == shape
        assert 0.0 <= res.confidence <= 1.0


def test_noncontiguous_frame_is_accepted():
    frame, truth = synth_frame((600, 800), ("rect", 400.0, 300.0, 400.0, 350.0, 0.0),
                               np.random.default_rng(6))
    res = detect_collimation(frame.T.copy().T)  # Fortran order
    assert res.kind == "rect" and iou(res.mask, truth) > 0.99


def test_field_mask_helper_matches_kernel_convention():
    # the synthetic truth and the detector's rasteriser agree on pixel-centre inclusion
    field = ("rect", 30.3, 20.7, 21.0, 13.0, 11.0)
    truth = field_mask((48, 64), field)
    t = math.radians(11.0)
    c, s = math.cos(t), math.sin(t)
    u0 = c * 30.3 + s * 20.7
    v0 = -s * 30.3 + c * 20.7
    out = np.empty((48, 64), bool)
    K.fill_rect_mask(out, c, s, u0 - 10.5, u0 + 10.5, v0 - 6.5, v0 + 6.5)
    assert (out != truth).sum() <= 2  # rounding at exact boundaries only
    assert C._clip_polygon(np.array([[-1, -1], [5, -1], [5, 5], [-1, 5.0]]), 0, 0, 3, 3).shape[1] == 2


def ref_blade_points(lin, theta, bounds, k, scale, floor, tau, min_step, spacing):
    """NumPy reference of the blade-point sampling (one blade), profiles by the kernel."""
    c, s = math.cos(theta), math.sin(theta)
    n = np.array([c, s])
    npp = np.array([-s, c])
    u0, u1, v0, v1 = bounds
    h, w = lin.shape
    ext = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
    if k < 2:
        along, normal, lo, hi = npp, n, v0, v1
    else:
        along, normal, lo, hi = n, npp, u0, u1
    inward = 1.0 if k in (0, 2) else -1.0
    proj = ext @ along
    lo = max(lo, proj.min()) + 2.0
    hi = min(hi, proj.max()) - 2.0
    if hi - lo < 4:
        return np.empty((0, 2))
    t = lo + spacing * np.arange(int(math.ceil((hi - lo) / spacing)), dtype=float)
    base = bounds[k] * normal[None, :] + t[:, None] * along[None, :]
    inside = ((base[:, 0] >= 1) & (base[:, 0] <= w - 2) & (base[:, 1] >= 1)
              & (base[:, 1] <= h - 2))
    base = base[inside]
    if len(base) < 4:
        return np.empty((0, 2))
    nx = np.full(len(base), inward * normal[0])
    ny = np.full(len(base), inward * normal[1])
    off, ok = K.profile_edges(lin, base[:, 0].copy(), base[:, 1].copy(), nx, ny, scale,
                              floor, tau, min_step)
    pts = (base + (inward * off)[:, None] * normal[None, :])[ok]
    if k >= 2:
        pts = np.stack([pts[:, 1], -pts[:, 0]], axis=1)
    return pts


@pytest.mark.parametrize("spacing", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("theta_deg", [0.0, 4.0, -11.0])
@pytest.mark.parametrize("bounds", [(60.0, 200.0, 50.0, 170.0),
                                    (-math.inf, 180.0, 30.0, math.inf),
                                    (20.0, 21.5, 40.0, 300.0)])
def test_blade_points_kernel_matches_reference(theta_deg, bounds, spacing):
    rng = np.random.default_rng(2)
    h, w = 220, 256
    theta = math.radians(theta_deg)
    c, s = math.cos(theta), math.sin(theta)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    u, v = c * xx + s * yy, -s * xx + c * yy
    inside = (u >= bounds[0]) & (u <= bounds[1]) & (v >= bounds[2]) & (v <= bounds[3])
    lin = (np.where(inside, 1000.0, 150.0) + rng.normal(0, 10, (h, w))).astype(np.float32)
    lin = cv2.GaussianBlur(lin, (5, 5), 1.0)
    args = (1000.0, 10.0, 0.01, 0.075, spacing)
    px, py, blade = K.blade_points(lin, c, s, np.array(bounds), *args)
    total = 0
    for k in range(4):
        sel = blade == k
        if not math.isfinite(bounds[k]):
            assert not sel.any()
            continue
        ref = ref_blade_points(lin, theta, bounds, k, *args)
        got = np.stack([px[sel], py[sel]], axis=1)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
        total += len(ref)
    assert total == len(px)
    assert total > 100 / spacing  # the wide field really has blades to sample


def ref_check_blades(rot, valid, pos):
    """NumPy reference of the per-blade region test (blade positions >= 2)."""
    H, W = rot.shape
    xl, xr, yt, yb = pos
    ya = yt if yt >= 0 else 0
    yz = yb + 1 if yb >= 0 else H
    xa = xl if xl >= 0 else 0
    xz = xr + 1 if xr >= 0 else W
    inside = rot[ya:yz:2, xa:xz:2][valid[ya:yz:2, xa:xz:2] > 0]

    def region(k, p, d0, d1):
        sign = 1 if k in (0, 2) else -1
        lo, hi = sorted((p + sign * d0, p + sign * d1))
        step = 1 if abs(d1 - d0) < 16 else 2
        if k < 2:
            lo, hi = max(lo, 0), min(hi, W - 1)
            r, v = rot[ya:yz:step, lo:hi + 1:step], valid[ya:yz:step, lo:hi + 1:step]
        else:
            lo, hi = max(lo, 0), min(hi, H - 1)
            r, v = rot[lo:hi + 1:step, xa:xz:step], valid[lo:hi + 1:step, xa:xz:step]
        return r[v > 0]

    for k in range(4):
        p = pos[k]
        if p < 0:
            continue
        far = max(H, W)
        if not C._region_ok(region(k, p, 2, 6), region(k, p, -6, -2), inside,
                            region(k, p, -far, -2)):
            return k
    return -1


def test_check_blades_kernel_matches_reference():
    rng = np.random.default_rng(6)
    H, W = 90, 120
    yy, xx = np.mgrid[0:H, 0:W]
    valid = ((xx > 3) & (xx < W - 4) & (yy > 2) & (yy < H - 3)).astype(np.uint8)
    field = (xx >= 30) & (xx <= 95) & (yy >= 20) & (yy <= 70)
    cases = 0
    outcomes = set()
    for trial in range(60):
        contrast = rng.choice([0.05, 0.4, 1.5])
        rot = np.where(field, 0.0, -contrast) + rng.normal(0, 0.05, (H, W))
        if trial % 3 == 0:  # bright structure in the shutter: the peak test fails
            rot[5:15, 100:110] = 0.8
        rot = rot.astype(np.float32)
        pos = [int(rng.choice([-1, 30, 28, 33])), int(rng.choice([-1, 95, 99])),
               int(rng.choice([-1, 20, 17])), int(rng.choice([-1, 70, 66, 2]))]
        got = int(K.check_blades(rot, valid, np.array(pos, np.int64), C._MIN_STEP,
                                 C._MIN_PEAK_GAP))
        assert got == ref_check_blades(rot, valid, pos), (trial, pos)
        outcomes.add(got)
        cases += 1
    assert cases == 60 and len(outcomes) >= 3  # passes and failures of several blades


# --------------------------------------------------------------------------------------------
# Search kernels: Hough scores, blade tables, selection, small shapes
# --------------------------------------------------------------------------------------------


def ref_oriented_hough(xs, ys, gxs, gys, thetas, half_window, rho_off, n_rho):
    """Plain-Python reference of the signed, oriented line accumulator."""
    acc = np.zeros((2, len(thetas), n_rho), np.float64)
    t0 = thetas[0]
    dt = thetas[1] - thetas[0]
    for x, y, gx, gy in zip(xs, ys, gxs, gys):
        x, y, gx, gy = float(x), float(y), float(gx), float(gy)
        fam = 0 if abs(gx) >= abs(gy) else 1
        phi = math.atan(gy / gx) if fam == 0 else -math.atan(gx / gy)
        i0 = max(math.ceil((phi - half_window - t0) / dt), 0)
        i1 = min(math.floor((phi + half_window - t0) / dt), len(thetas) - 1)
        for i in range(i0, i1 + 1):
            c, s = math.cos(thetas[i]), math.sin(thetas[i])
            nx, ny = (c, s) if fam == 0 else (-s, c)
            b = int(x * nx + y * ny + rho_off + 0.5)
            if 0 <= b < n_rho:
                acc[fam, i, b] += gx * nx + gy * ny
    return acc


def ref_angle_scores(acc):
    """NumPy reference of the per-angle line score: per family, the largest positive and
    the largest negative 3-bin sum."""
    a = acc.astype(np.float32)
    v = a[:, :, :-2] + a[:, :, 1:-1] + a[:, :, 2:]
    best_p = np.maximum(v.max(axis=2), 0.0).astype(np.float64)
    best_n = np.maximum((-v).max(axis=2), 0.0).astype(np.float64)
    return (best_p + best_n).sum(axis=0)


def _edge_set(rng, n=400, size=90):
    """Edge pixels along a few rotated lines plus noise, with gradients."""
    xs, ys, gxs, gys = [], [], [], []
    for ang, off, sign in ((4.0, 20.0, 1), (4.0, 70.0, -1), (-12.0, 15.0, 1), (0.0, 60.0, -1)):
        t = math.radians(ang)
        for u in np.linspace(5, size - 5, n // 8):
            if abs(ang) < 10:  # a near-vertical blade: normal close to +x
                x, y = off + u * math.sin(t), u
                g = (sign * math.cos(t), sign * math.sin(t))
            else:
                x, y = u, off + u * math.sin(t)
                g = (-sign * math.sin(t), sign * math.cos(t))
            xs.append(round(x))
            ys.append(round(y))
            gxs.append(g[0] * rng.uniform(0.5, 1.5))
            gys.append(g[1] * rng.uniform(0.5, 1.5))
    m = n // 2
    xs += list(rng.integers(0, size, m))
    ys += list(rng.integers(0, size, m))
    gxs += list(rng.normal(0, 0.5, m))
    gys += list(rng.normal(0, 0.5, m))
    f = np.float32
    return (np.array(xs, f), np.array(ys, f), np.array(gxs, f), np.array(gys, f))


def test_hough_line_scores_match_accumulator_and_reference():
    rng = np.random.default_rng(11)
    thetas = np.deg2rad(np.arange(-C._MAX_ANGLE_DEG, C._MAX_ANGLE_DEG + 1e-6,
                                  C._ANGLE_STEP_DEG))
    size = 90
    args = (thetas, math.radians(C._ANGLE_WINDOW_DEG), float(size + 2), 3 * size + 4)
    for _ in range(3):
        xs, ys, gxs, gys = _edge_set(rng, size=size)
        acc = K.oriented_hough(xs, ys, gxs, gys, *args)
        np.testing.assert_allclose(acc, ref_oriented_hough(xs, ys, gxs, gys, *args),
                                   rtol=1e-5, atol=1e-4)
        got = K.hough_line_scores(xs, ys, gxs, gys, *args)
        # bit for bit the scores of the full accumulator (the kernel scans a reduced range)
        assert np.array_equal(got, K.hough_angle_scores(acc))
        np.testing.assert_allclose(got, ref_angle_scores(acc), rtol=1e-6)
        assert got.max() > 0 and np.argmax(got) != 0
    empty = np.empty(0, np.float32)
    assert not K.hough_line_scores(empty, empty, empty, empty, *args).any()


def ref_rect_tables(gx, gy, valid, tau, dil, tau_strong):
    """NumPy reference of the blade indicator profiles and full cumulative tables."""
    ok = valid > 0
    f = [ok & (gx > tau), ok & (gx < -tau), ok & (gy > tau), ok & (gy < -tau)]
    H, W = gx.shape
    prof = np.zeros((4, max(H, W)), np.float32)
    prof[0, :W] = f[0].sum(axis=0)
    prof[1, :W] = f[1].sum(axis=0)
    prof[2, :H] = f[2].sum(axis=1)
    prof[3, :H] = f[3].sum(axis=1)

    def dilate(a, axis):
        out = a.copy()
        for o in range(1, dil + 1):
            if axis == 1:
                out[:, o:] |= a[:, :-o]
                out[:, :-o] |= a[:, o:]
            else:
                out[o:] |= a[:-o]
                out[:-o] |= a[o:]
        return out & ok

    cum_col = np.zeros((3, H + 1, W), np.int64)
    cum_row = np.zeros((3, H, W + 1), np.int64)
    for k, ind in enumerate((dilate(f[0], 1), dilate(f[1], 1), ok)):
        cum_col[k, 1:] = np.cumsum(ind, axis=0)
    for k, ind in enumerate((dilate(f[2], 0), dilate(f[3], 0), ok)):
        cum_row[k, :, 1:] = np.cumsum(ind, axis=1)
    strong = ok & (np.maximum(np.abs(gx), np.abs(gy)) > tau_strong)
    sat = np.zeros((H + 1, W + 1), np.int64)
    sat[1:, 1:] = strong.cumsum(axis=0).cumsum(axis=1)
    return prof, cum_col, cum_row, sat


@pytest.mark.parametrize("shape", [(70, 90), (91, 64)])
def test_rect_tables_match_reference(shape):
    rng = np.random.default_rng(12)
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    img = ((xx > 20) & (xx < W - 15) & (yy > 12) & (yy < H - 10)).astype(np.float32)
    img += rng.normal(0, 0.08, shape).astype(np.float32)
    gx = np.empty(shape, np.float32)
    gy = np.empty(shape, np.float32)
    K.edge_gradients(cv2.GaussianBlur(img, (5, 5), 1.0), 3, gx, gy)
    valid = ((xx > 2) & (yy > 1) & (xx + yy < H + W - 12)).astype(np.uint8)
    tau, strong, min_count = np.float32(0.1), np.float32(0.2), 6.0
    cl, cr, ct, cb, cum_col, cum_row, sat = K.rect_tables(gx, gy, valid, tau, 1, strong,
                                                          min_count, 5)
    prof, rcol, rrow, rsat = ref_rect_tables(gx, gy, valid, tau, 1, strong)
    for got, k, n in ((cl, 0, W), (cr, 1, W), (ct, 2, H), (cb, 3, H)):
        assert np.array_equal(got, K.profile_peaks(prof[k], n, min_count, 5))
    assert len(cl) and len(cr) and len(ct) and len(cb)  # the field has four blades
    for x in set(cl) | set(cr):
        assert np.array_equal(cum_col[:, :, x], rcol[:, :, x])
    for y in set(ct) | set(cb):
        assert np.array_equal(cum_row[:, y, :], rrow[:, y, :])
    assert np.array_equal(sat, rsat)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 101, 1000])
def test_select_kth_and_median_match_numpy(n):
    rng = np.random.default_rng(n)
    for trial in range(30):
        a = rng.normal(size=n)
        if trial % 3 == 0:
            a = np.round(a)  # many ties
        if trial % 5 == 0:
            a = np.sort(a)[::-1].copy()
        for dtype in (np.float32, np.float64):
            b = a.astype(dtype)
            k = int(rng.integers(0, n))
            work = b.copy()
            assert K.select_kth(work, n, k) == np.partition(b, k)[k]
            assert np.all(work[:k] <= work[k]) and np.all(work[k:] >= work[k])
        assert K.median_inplace(a.copy()) == np.median(a)
    assert math.isnan(K.median_inplace(np.empty(0)))


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (2, 2), (5, 3), (4, 9), (9, 4)])
@pytest.mark.parametrize("d", [1, 3])
def test_edge_gradients_small_shapes_match_reference(shape, d):
    rng = np.random.default_rng(14)
    img = rng.random(shape).astype(np.float32)
    dx = np.empty_like(img)
    dy = np.empty_like(img)
    K.edge_gradients(img, d, dx, dy)
    rx, ry = ref_edge_gradients(img, d)
    np.testing.assert_allclose(dx, rx, atol=1e-6)
    np.testing.assert_allclose(dy, ry, atol=1e-6)


def test_region_test_gives_region_ok_and_the_median_step():
    rng = np.random.default_rng(17)
    outcomes = set()
    for _ in range(80):
        inner = rng.normal(rng.uniform(-0.5, 1.0), 0.2, rng.integers(3, 300))
        outer = rng.normal(0.0, 0.2, rng.integers(3, 300))
        inside = rng.normal(1.0, 0.3, rng.integers(3, 400))
        outside = rng.normal(rng.uniform(-0.5, 1.5), 0.3, rng.integers(3, 400))
        ok, step = C._region_test(inner, outer, inside, outside)
        assert ok == C._region_ok(inner, outer, inside, outside)
        if inner.size < 8 or outer.size < 8:
            assert ok and math.isnan(step)
            continue
        ref = float(np.sort(inner)[int(0.5 * (inner.size - 1) + 0.5)]
                    - np.sort(outer)[int(0.5 * (outer.size - 1) + 0.5)])
        assert step == ref
        outcomes.add(ok)
    assert outcomes == {True, False}


@pytest.mark.parametrize("shape", [(128, 128), (37, 90), (3, 5), (2, 9)])
def test_search_vst_matches_numpy(shape):
    rng = np.random.default_rng(9)
    img = (rng.gamma(2.0, 300.0, shape) - 50.0).astype(np.float32)  # some negatives
    inv = np.float32(1.0 / 900.0)
    vst = np.empty_like(img)
    res = K.search_vst(img, inv, vst)
    ref = np.sqrt(np.maximum(img, 0.0) * inv)
    assert np.array_equal(vst, ref)
    r = 4.0 * ref[1:-1:2, 1:-1] - ref[:-2:2, 1:-1] - ref[2::2, 1:-1] - ref[1:-1:2, :-2] \
        - ref[1:-1:2, 2:]
    assert np.array_equal(res, np.abs(r).ravel())


@pytest.mark.parametrize("shape", [
    ("rect", (5.0, 60.0, 10.0, 90.0), 0.0),
    ("rect", (-math.inf, 50.0, 3.0, math.inf), 7.5),
    ("rect", (20.0, 24.0, -30.0, 200.0), -18.0),
    ("circle", (60.0, 40.0, 35.0), 0.0),
    ("circle", (-10.0, 50.0, 70.0), 0.0),
    ("circle", (60.0, 40.0, 3.0), 0.0),
])
def test_contrast_samples_match_the_masks(shape):
    """The region-test samples equal those selected by the rasterised masks."""
    kind, p, deg = shape
    rng = np.random.default_rng(4)
    img = rng.random((97, 120)).astype(np.float32)

    def mask(grow):
        m = np.empty(img.shape, bool)
        if kind == "circle":
            K.fill_circle_mask_serial(m, p[0], p[1], max(p[2] + grow, 0))
        else:
            t = math.radians(deg)
            K.fill_rect_mask_serial(m, math.cos(t), math.sin(t), p[0] - grow, p[1] + grow,
                                    p[2] - grow, p[3] + grow)
        return m

    m_in, m_out = mask(-1.5), mask(1.5)
    ref = (img[m_in & ~mask(-6.0)], img[mask(6.0) & ~m_out],
           img[::2, ::2][m_in[::2, ::2]], img[::2, ::2][~m_out[::2, ::2]])
    if kind == "circle":
        args = (True, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, *p)
    else:
        t = math.radians(deg)
        args = (False, math.cos(t), math.sin(t), *p, 0.0, 0.0, 0.0)
    got = K.contrast_samples(img, *args)
    for g, r in zip(got, ref):
        assert np.array_equal(g, r)
    assert sum(len(r) for r in ref) > 0


def test_contrast_samples_match_the_masks_on_random_fields():
    rng = np.random.default_rng(8)
    img = rng.random((61, 75)).astype(np.float32)
    for _ in range(200):
        grow = {}
        if rng.random() < 0.4:
            p = (rng.uniform(-20, 95), rng.uniform(-20, 80), rng.uniform(0, 60))
            args = (True, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, *p)
        else:
            t = math.radians(rng.uniform(-21, 21))
            u = np.sort(rng.uniform(-30, 110, 2))
            v = np.sort(rng.uniform(-30, 110, 2))
            bounds = [u[0], u[1], v[0], v[1]]
            for k in range(4):
                if rng.random() < 0.15:
                    bounds[k] = -math.inf if k % 2 == 0 else math.inf
            args = (False, math.cos(t), math.sin(t), *bounds, 0.0, 0.0, 0.0)
        for g in (-1.5, -6.0, 1.5, 6.0):
            m = np.empty(img.shape, bool)
            if args[0]:
                K.fill_circle_mask_serial(m, args[7], args[8], max(args[9] + g, 0))
            else:
                c, s, u0, u1, v0, v1 = args[1:7]
                K.fill_rect_mask_serial(m, c, s, u0 - g, u1 + g, v0 - g, v1 + g)
            grow[g] = m
        ref = (img[grow[-1.5] & ~grow[-6.0]], img[grow[6.0] & ~grow[1.5]],
               img[::2, ::2][grow[-1.5][::2, ::2]], img[::2, ::2][~grow[1.5][::2, ::2]])
        for got, want in zip(K.contrast_samples(img, *args), ref):
            assert np.array_equal(got, want)


def test_fit_blades_groups_the_blades_with_four_points():
    rng = np.random.default_rng(12)
    t = math.radians(6.0)
    n = np.array([math.cos(t), math.sin(t)])
    pts, blades = [], []
    for b, (rho, count) in enumerate([(10.0, 40), (90.0, 3), (-25.0, 30), (60.0, 25)]):
        along = rng.uniform(-50, 50, count)
        p = rho * n[None, :] + along[:, None] * np.array([-n[1], n[0]])[None, :]
        pts.append(p + rng.normal(0, 0.2, p.shape))
        blades += [b] * count
    p = np.concatenate(pts)
    blade = np.array(blades, np.int64)
    order = rng.permutation(len(blade))
    px, py, blade = p[order, 0].copy(), p[order, 1].copy(), blade[order].copy()
    got_t, got_rho, got_cnt = K.fit_blades(px, py, blade, 0.1, False)
    keys = [0, 2, 3]  # blade 1 has only 3 points
    sel = np.isin(blade, keys)
    gid = np.searchsorted(keys, blade[sel])
    t_ref, rho_ref, cnt_ref = K.fit_parallel_lines(px[sel].copy(), py[sel].copy(), gid,
                                                   3, 0.1, False)
    assert got_t == t_ref
    assert got_cnt[1] == 0 and list(got_cnt[keys]) == list(cnt_ref)
    assert np.array_equal(got_rho[keys], rho_ref)
    assert abs(math.degrees(got_t) - 6.0) < 0.5
    assert K.fit_blades(px[:0], py[:0], blade[:0], 0.25, False)[0] == 0.25
