"""Automatic window, exposure index, deviation index and VOI LUT.

Accuracy evidence uses the detector simulator's ground truth (FLUORO_1024 panel so the
20-realisation tests stay fast).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from processing import _kernels as K
from processing.calibration import CalibrationMaps
from processing.corrections import correct
from processing.window import (
    auto_window,
    deviation_index,
    exposure_index,
    linear_window,
    voi_lut,
)
from simulators.frames import Collimation, DetectorModel
from simulators.panels import PANELS

DUMMY = np.zeros((1, 1), np.uint8)
GATE = np.zeros((1, 1), np.float32)


@pytest.fixture(scope="module")
def panel():
    mode = PANELS["FLUORO_1024"]
    dm = DetectorModel(mode, seed=2)
    rng = np.random.default_rng(0)
    maps = CalibrationMaps.from_frames([dm.dark(rng) for _ in range(4)],
                                       [dm.flat(dm.flat_dose_ugy(), rng) for _ in range(4)])
    # the exposure-index calibration factor, measured as a detector is calibrated:
    # corrected counts of a flat field at a known dose
    flat = correct(dm.flat(dm.flat_dose_ugy(), rng), maps)
    cal = float(flat[16:-16, 16:-16].mean()) / dm.flat_dose_ugy()
    return dm, maps, cal


def test_hist_and_minmax_kernels_match_numpy():
    rng = np.random.default_rng(0)
    img = rng.normal(5, 2, (101, 87)).astype(np.float32)
    img[3, 4] = np.nan
    mask = np.ascontiguousarray(rng.random((202, 174)) > 0.4).view(np.uint8)
    gate = rng.random(img.shape).astype(np.float32)
    for step, m, ms, g, gmax in ((1, DUMMY, 1, GATE, 0.0), (3, mask, 2, gate, 0.7)):
        hist = np.zeros(64, np.int64)
        n = K.hist_f32(img, 2.0, 8.0, 64, step, m, ms, g, gmax, hist)
        sub = img[::step, ::step].astype(np.float64)
        sel = np.isfinite(sub)
        if m.size > 1:
            sel &= m[::ms, ::ms][::step, ::step][: sub.shape[0], : sub.shape[1]].astype(bool)
        if g.size > 1:
            sel &= g[::step, ::step] < gmax
        v = sub[sel]
        b = np.clip(np.floor((v - 2.0) * (64 / 6.0)).astype(int), 0, 63)
        np.testing.assert_array_equal(hist, np.bincount(b, minlength=64))
        assert n == v.size
        lo, hi, cnt = K.minmax_f32(img, step, m, ms, g, gmax)
        assert (lo, hi, cnt) == (np.float32(v.min()), np.float32(v.max()), v.size)


def _collimated(rng, h=400, w=400):
    """Shutter (low), direct exposure (high) and an anatomy ramp inside the field."""
    img = np.full((h, w), 300.0)
    field = np.zeros((h, w), bool)
    field[60:340, 80:360] = True
    img[field] = 20000.0  # direct exposure
    body = np.zeros((h, w), bool)
    body[100:300, 120:320] = True
    img[100:300, 120:320] = np.linspace(2000, 8000, 200)[None, :]
    img = rng.poisson(img).astype(np.uint16)
    return img, field, body


def test_window_is_computed_over_anatomy_in_the_field():
    img, field, _ = _collimated(np.random.default_rng(1))
    w = auto_window(img, field)
    lo, hi = w.center - w.width / 2, w.center + w.width / 2
    # covers the anatomy range (2000..8000), excludes shutter (300) and direct exposure
    assert 1500 < lo < 2100 and 7900 < hi < 8700
    whole = auto_window(img)  # no field: the shutter drags the window down
    assert whole.center - whole.width / 2 < 400
    assert 0 < w.anatomy_fraction < 1


def test_window_accepts_full_resolution_mask_for_reduced_level():
    img, field, _ = _collimated(np.random.default_rng(2))
    half = img[::2, ::2].astype(np.float32)
    w_full = auto_window(half, field)  # mask twice the size: sampled at 2x
    w_half = auto_window(half, field[::2, ::2])
    assert w_full.center == pytest.approx(w_half.center, rel=1e-6)
    with pytest.raises(ValueError):
        auto_window(half, field[:100])


@pytest.mark.parametrize("img", [
    np.zeros((64, 64), np.uint16),
    np.full((64, 64), 65535, np.uint16),
    np.full((64, 64), 7.5, np.float32),
])
def test_window_on_flat_frames_has_positive_width(img):
    w = auto_window(img)
    assert w.width > 0 and math.isfinite(w.center)


def test_window_nan_samples_ignored_all_nan_rejected():
    rng = np.random.default_rng(3)
    img = rng.normal(100, 10, (64, 64)).astype(np.float32)
    ref = auto_window(img, step=1)
    img2 = img.copy()
    img2[::7, ::5] = np.nan
    w = auto_window(img2, step=1)
    assert w.width > 0 and abs(w.center - ref.center) < 2
    with pytest.raises(ValueError, match="finite"):
        auto_window(np.full((16, 16), np.nan, np.float32))
    for bad, exc in ((np.zeros((0, 4), np.uint16), ValueError),
                     (np.zeros(16, np.uint16), ValueError),
                     (np.zeros((4, 4), bool), TypeError),
                     ("x", TypeError)):
        with pytest.raises(exc):
            auto_window(bad)


def test_window_and_ei_stable_over_20_noise_realisations(panel):
    dm, maps, cal = panel
    rng = np.random.default_rng(10)
    coll = Collimation.rect(520, 500, 800, 700, 7.0)
    centers, widths, eis = [], [], []
    for _ in range(20):
        raw, truth = dm.exposure(70, 1.0, 110, coll, "hand", rng)
        c = correct(raw, maps)
        w = auto_window(c, truth.field_mask)
        centers.append(w.center)
        widths.append(w.width)
        eis.append(exposure_index(c, truth.field_mask, cal))
    for series in (centers, widths, eis):
        s = np.asarray(series)
        assert np.abs(s / np.median(s) - 1).max() < 0.02
    # and the EI is right: IEC 62494-1 EI = 100 * K_uGy over anatomy
    assert np.median(eis) == pytest.approx(100 * truth.anatomy_dose_ugy, rel=0.06)


@pytest.mark.parametrize("part", ["chest", "skull", "abdomen"])
def test_ei_doubles_with_mas(panel, part):
    dm, maps, cal = panel
    rng = np.random.default_rng(11)
    coll = Collimation.rect(512, 512, 900, 860, -4.0)
    ei = []
    for mas in (1.0, 2.0):
        raw, truth = dm.exposure(70, mas, 110, coll, part, rng)
        ei.append(exposure_index(correct(raw, maps), truth.field_mask, cal))
        assert ei[-1] == pytest.approx(100 * truth.anatomy_dose_ugy, rel=0.06)
    assert ei[1] / ei[0] == pytest.approx(2.0, rel=0.05)


def test_ei_definition_and_edge_cases():
    img = np.full((64, 64), 500, np.uint16)
    assert exposure_index(img, None, 100.0) == pytest.approx(500.0)  # 5 uGy -> EI 500
    f = np.full((64, 64), 250.0, np.float32)
    f[0, :] = np.nan
    assert exposure_index(f, None, 100.0) == pytest.approx(250.0, rel=1e-3)
    assert exposure_index(np.zeros((64, 64), np.uint16), None, 100.0) == 0.0
    mask = np.zeros((64, 64), bool)
    assert exposure_index(img, mask, 100.0) == pytest.approx(500.0)  # empty field: whole
    for bad in (0.0, -1.0, float("nan"), "100"):
        with pytest.raises(ValueError):
            exposure_index(img, None, bad)
    with pytest.raises(ValueError):
        exposure_index(img, mask[:10], 100.0)


def test_deviation_index():
    assert deviation_index(400.0, 400.0) == 0.0
    assert deviation_index(800.0, 400.0) == pytest.approx(3.0103, abs=1e-4)
    assert deviation_index(200.0, 400.0) == pytest.approx(-3.0103, abs=1e-4)
    assert math.isnan(deviation_index(0.0, 400.0))
    for ei, target in ((100.0, 0.0), (100.0, -5.0), (-1.0, 100.0), (float("inf"), 100.0)):
        with pytest.raises(ValueError):
            deviation_index(ei, target)


def test_voi_lut_is_the_dicom_linear_function():
    c, w = 2048.0, 1000.0
    lut = voi_lut(c, w, 4096)
    x = np.arange(4096, dtype=np.float64)
    ref = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    ref = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255, ref))
    assert np.abs(lut.astype(float) - np.clip(np.round(ref), 0, 255)).max() <= 1
    assert lut[0] == 0 and lut[-1] == 255 and np.all(np.diff(lut.astype(int)) >= 0)
    assert voi_lut(100.0, 0.0, 256).dtype == np.uint8  # width clamped to 1
    assert voi_lut(c, w, 4096, out_bits=16).max() == 65535
    assert voi_lut(c, w, 4096, invert=True)[0] == 255
    lo, hi, _, _ = linear_window(c, w)
    assert lo < c < hi
    with pytest.raises(ValueError):
        voi_lut(float("nan"), 10.0, 256)


def test_hist_search_matches_numpy_searchsorted():
    from processing import _kernels as K

    rng = np.random.default_rng(3)
    for hist in (rng.integers(0, 5, 4096), np.zeros(16, np.int64),
                 np.r_[np.zeros(100, np.int64), 7, np.zeros(50, np.int64)]):
        hist = hist.astype(np.int64)
        cum = np.cumsum(hist)
        n = int(cum[-1])
        for target in (0.0, 0.5, 1.0, 0.005 * n, 0.5 * n, 0.995 * n, float(n), n + 1.0):
            b, before = K.hist_search(hist, target)
            b_ref = min(int(np.searchsorted(cum, target, side="left")), hist.size - 1)
            assert b == b_ref
            assert before == (cum[b_ref - 1] if b_ref > 0 else 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
def test_gathered_histogram_matches_minmax_then_hist(dtype):
    from processing import _kernels as K
    from processing.window import _hist

    rng = np.random.default_rng(8)
    img = (rng.random((97, 131)) * 3000).astype(dtype)
    if dtype != np.uint16:
        img[5, ::3] = np.nan
        img[7, 4] = np.inf
    mask = np.zeros((194, 262), np.uint8)
    mask[20:150, 30:200] = 1
    gate = rng.random((97, 131)).astype(np.float32)
    dummy_m, dummy_g = np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.float32)
    for m, ms, g, gmax in ((dummy_m, 1, dummy_g, 0.0), (mask, 2, gate, 0.7),
                           (mask, 2, dummy_g, 0.0)):
        for step in (1, 2, 3):
            got = _hist(img, step, m, ms, g, gmax, 512)
            vmin, vmax, n = K.minmax_f32(img, step, m, ms, g, gmax)
            vmin, vmax = float(vmin), float(vmax)
            ref = np.zeros(512, np.int64)
            K.hist_f32(img, vmin, vmax, 512, step, m, ms, g, gmax, ref)
            assert got[1:] == (vmin, vmax, n)
            np.testing.assert_array_equal(got[0], ref)
    # constant samples: the range is widened, as before
    const = np.full((20, 20), 5.0, dtype)
    hist, lo, hi, n = _hist(const, 1, dummy_m, 1, dummy_g, 0.0, 64)
    assert lo == 5.0 and hi > lo and n == 400 and hist.sum() == 400


def test_hist_range_1d_matches_numpy_reference():
    rng = np.random.default_rng(21)
    for dtype in (np.float32, np.float64):
        for vals in (rng.normal(3.0, 2.0, 5001).astype(dtype),
                     np.full(37, -2.5, dtype), np.array([1.0], dtype)):
            lo, hi = float(vals.min()), float(vals.max())
            hist = np.zeros(300, np.int64)
            flo, fhi = K.hist_range_1d(vals, lo, hi, 300, hist)
            ref_hi = hi if hi > lo else lo + max(abs(lo) * 1e-6, 1e-6)
            assert (flo, fhi) == (lo, ref_hi)
            b = np.clip(((vals.astype(np.float64) - lo) * (300 / (ref_hi - lo)))
                        .astype(np.int64), 0, 299)
            np.testing.assert_array_equal(hist, np.bincount(b, minlength=300))
            # the same as the combined min/max + histogram kernel
            ref = np.zeros(300, np.int64)
            assert K.minmax_hist_1d(vals, 300, ref) == (flo, fhi, vals.size)
            np.testing.assert_array_equal(hist, ref)


def test_percentile_with_known_total_matches_summing():
    from processing.window import _percentile

    hist = np.random.default_rng(4).integers(0, 50, 700).astype(np.int64)
    for q in (0.0, 0.5, 50.0, 99.0, 100.0):
        assert _percentile(hist, -1.0, 6.0, q, int(hist.sum())) == \
            _percentile(hist, -1.0, 6.0, q)


def test_gather_pairs_and_compact_gated_match_numpy():
    rng = np.random.default_rng(12)
    img = rng.random((61, 83)).astype(np.float32)
    ref = rng.random((61, 83)).astype(np.float32)
    img[3, ::4] = np.nan
    ref[10, ::3] = np.nan
    mask = np.zeros((122, 166), np.uint8)
    mask[10:100, 20:150] = 1
    dummy = np.zeros((1, 1), np.uint8)
    for m, ms in ((dummy, 1), (mask, 2)):
        for step in (1, 2, 3):
            n_all = -(-61 // step) * -(-83 // step)
            rv = np.empty(n_all, np.float32)
            iv = np.empty(n_all, np.float32)
            n = K.gather_pairs(img, ref, step, m, ms, rv, iv)
            sel = ~np.isnan(ref[::step, ::step])
            if m.size > 1:
                sel &= m[::step * ms, ::step * ms].astype(bool)
            np.testing.assert_array_equal(rv[:n], ref[::step, ::step][sel])
            np.testing.assert_array_equal(iv[:n], img[::step, ::step][sel])
            out = np.empty(n, np.float32)
            k = K.compact_gated(iv[:n], rv[:n], 0.6, out)
            keep = (rv[:n] < 0.6) & ~np.isnan(iv[:n])
            np.testing.assert_array_equal(out[:k], iv[:n][keep])


def test_auto_window_paired_sampling_matches_separate_passes():
    # a float32 reference takes the paired path, the same values as float64 the
    # separate gather passes: the results must be identical
    rng = np.random.default_rng(13)
    yy, xx = np.mgrid[0:120, 0:150]
    ref = (np.log1p(xx + yy) + 0.05 * rng.standard_normal((120, 150))).astype(np.float32)
    ref[:, 120:] = ref.max() + 1.0  # direct exposure
    img = (ref + 0.1 * rng.standard_normal((120, 150))).astype(np.float32)
    img[7, ::5] = np.nan
    ref[9, ::7] = np.nan
    field = np.zeros((240, 300), bool)
    field[20:220, 30:290] = True
    for fm in (None, field, np.zeros((240, 300), bool)):
        for kw in ({}, {"direct_exposure_ratio": 0.999}, {"step": 2}):
            a = auto_window(img, fm, reference=ref, log_domain=True, **kw)
            b = auto_window(img, fm, reference=ref.astype(np.float64), log_domain=True,
                            **kw)
            assert a == b
