"""Offset/gain/defect corrections: numba kernels against NumPy references (exact)."""

from __future__ import annotations

import numpy as np
import pytest

from processing.calibration import CalibrationMaps
from processing.corrections import DEFECT_RADIUS, DefectPlan, check_raw, correct
from processing.lut import apply_lut, histogram_u16


def ref_correct(raw, off, gain):
    v = (raw.astype(np.float32) - off) * gain + np.float32(0.5)
    return np.clip(v, 0, 65535).astype(np.int64).astype(np.uint16)


def ref_defects(img, defect, radius=DEFECT_RADIUS):
    out = img.copy()
    h, w = img.shape
    for i, j in zip(*np.nonzero(defect)):
        s = ws = 0.0
        for dirs, scale in ((((0, -1), (0, 1), (-1, 0), (1, 0)), 1.0),
                            (((-1, -1), (-1, 1), (1, -1), (1, 1)), 2 ** 0.5)):
            for di, dj in dirs:
                for d in range(1, radius + 1):
                    y, x = i + di * d, j + dj * d
                    if not (0 <= y < h and 0 <= x < w):
                        break
                    if not defect[y, x]:
                        wt = float(np.float32(1.0 / (d * scale)))
                        s += wt * float(img[y, x])
                        ws += wt
                        break
            if ws > 0:
                break
        if ws > 0:
            out[i, j] = int(s / ws + 0.5)
    return out


def _maps(h, w, seed=0):
    rng = np.random.default_rng(seed)
    off = rng.normal(1000, 30, (h, w)).astype(np.float32)
    gain = rng.normal(1, 0.05, (h, w)).astype(np.float32)
    defect = rng.random((h, w)) < 0.002
    defect[:, 17] = True
    defect[40, :] = True
    defect[50:53, 60:64] = True
    defect[0, 0] = True
    return CalibrationMaps(off, gain, defect)


def test_correct_matches_numpy_reference_exactly():
    rng = np.random.default_rng(1)
    maps = _maps(97, 131)
    raw = rng.integers(0, 65536, (97, 131)).astype(np.uint16)
    raw[0, :5] = 0  # below offset -> clipped to 0
    raw[1, :5] = 65535  # above range after gain -> clipped to 65535
    got = correct(raw, maps)
    ref = ref_defects(ref_correct(raw, maps.offset, maps.gain), maps.defect)
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.uint16


def test_defect_interpolation_restores_smooth_image():
    h, w = 80, 90
    yy, xx = np.mgrid[0:h, 0:w]
    clean = (10000 + 40 * xx + 25 * yy).astype(np.uint16)
    maps = _maps(h, w)
    maps = CalibrationMaps(np.zeros((h, w)), np.ones((h, w)), maps.defect)
    raw = clean.copy()
    raw[maps.defect] = 60000  # garbage on the defects
    got = correct(raw, maps).astype(np.int64)
    # a linear ramp is interpolated exactly inside (to rounding) and to within one
    # gradient step at the corner, where it must extrapolate
    err = np.abs(got - clean.astype(np.int64))
    assert err[1:, 1:].max() <= 1
    assert err.max() <= 40
    assert np.array_equal(got[~maps.defect], clean[~maps.defect])


def test_defect_without_good_neighbour_keeps_value():
    defect = np.ones((40, 40), bool)
    plan = DefectPlan(defect)
    img = np.arange(1600, dtype=np.uint16).reshape(40, 40)
    before = img.copy()
    plan.apply(img)
    np.testing.assert_array_equal(img, before)


def test_no_maps_copies_and_out_buffer_is_used():
    raw = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    out = np.empty_like(raw)
    res = correct(raw, None, out=out)
    assert res is out and np.array_equal(out, raw)


@pytest.mark.parametrize("raw, exc", [
    (np.zeros((8, 8), np.float32), TypeError),
    (np.zeros((8, 8), np.int32), TypeError),
    ([[1, 2], [3, 4]], TypeError),
    (np.zeros((8,), np.uint16), ValueError),
    (np.zeros((0, 8), np.uint16), ValueError),
    (np.zeros((2, 8, 8), np.uint16), ValueError),
])
def test_bad_raw_frames_rejected(raw, exc):
    with pytest.raises(exc):
        check_raw(raw)


def test_maps_of_other_shape_rejected():
    maps = _maps(64, 70)
    with pytest.raises(ValueError, match="do not match"):
        correct(np.zeros((64, 71), np.uint16), maps)


def test_cython_lut_and_histogram_match_numpy():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 65536, (123, 77)).astype(np.uint16)
    lut8 = rng.integers(0, 256, 65536).astype(np.uint8)
    lut16 = rng.integers(0, 65536, 65536).astype(np.uint16)
    np.testing.assert_array_equal(apply_lut(img, lut8), lut8[img])
    np.testing.assert_array_equal(apply_lut(img, lut16), lut16[img])
    short = np.arange(4096, dtype=np.uint16)
    np.testing.assert_array_equal(apply_lut(img, short), np.minimum(img, 4095))
    mask = rng.random(img.shape) > 0.3
    for step in (1, 3):
        hist, n = histogram_u16(img, step, mask)
        sub, msub = img[::step, ::step], mask[::step, ::step]
        np.testing.assert_array_equal(hist, np.bincount(sub[msub], minlength=65536))
        assert n == int(msub.sum())
    with pytest.raises(TypeError):
        apply_lut(img.astype(np.int32), lut8)
    with pytest.raises(ValueError):
        histogram_u16(img, 0)
    with pytest.raises(ValueError):
        histogram_u16(img, 1, mask[:10])


@pytest.mark.parametrize("with_maps", [True, False])
def test_correct_reduce_matches_correct_then_down2(with_maps):
    from processing import _kernels as K
    from processing.corrections import correct_reduce
    from processing.enhance import log_lut

    rng = np.random.default_rng(4)
    h, w = 97, 131
    maps = _maps(h, w) if with_maps else None
    raw = rng.integers(500, 60000, (h, w)).astype(np.uint16)
    lut = log_lut()
    out = np.empty((h, w), np.uint16)
    g1 = np.empty(((h + 1) // 2, (w + 1) // 2), np.float32)
    correct_reduce(raw, maps, out, None, lut, g1)
    ref = correct(raw, maps)
    np.testing.assert_array_equal(out, ref)
    g1_ref = np.empty_like(g1)
    K.down2_lut(ref, lut, g1_ref)
    np.testing.assert_allclose(g1, g1_ref, rtol=1e-6)


@pytest.mark.parametrize("f", [1, 2, 3, 6, 9, 15])
@pytest.mark.parametrize("shape", [(97, 131), (96, 130), (45, 200)])
def test_correct_reduce_area_matches_correct_then_block_mean(f, shape):
    from processing import _kernels as K
    from processing.collimator import work_shape
    from processing.corrections import correct_reduce
    from processing.enhance import log_lut
    from tests.test_collimator import ref_area_downsample

    rng = np.random.default_rng(5)
    h, w = shape
    maps = _maps(h, w)
    defect = maps.defect.copy()
    defect[-1, -1] = defect[-1, 5] = defect[7, -1] = True  # edge blocks of odd shapes
    maps = CalibrationMaps(maps.offset, maps.gain, defect)
    raw = rng.integers(0, 65535, (h, w)).astype(np.uint16)
    raw[3, :] = 65535  # saturated row: block sums stay exact in float32
    lut = log_lut()
    out = np.empty((h, w), np.uint16)
    g1 = np.empty(((h + 1) // 2, (w + 1) // 2), np.float32)
    small = np.full(work_shape((h, w), f), np.nan, np.float32)
    correct_reduce(raw, maps, out, None, lut, g1, area=(f, small))
    ref = correct(raw, maps)
    np.testing.assert_array_equal(out, ref)
    g1_ref = np.empty_like(g1)
    K.down2_lut(ref, lut, g1_ref)
    np.testing.assert_allclose(g1, g1_ref, rtol=1e-6)
    np.testing.assert_allclose(small, ref_area_downsample(ref, f), rtol=1e-6)
    # bit-identical to the collimator's own downsampling of the corrected frame (block
    # sums of uint16 values below 2**24 are exact in float32)
    from processing import _collimator_kernels as CK
    small_ref = np.empty_like(small)
    CK.area_downsample(ref, f, small_ref)
    np.testing.assert_array_equal(small, small_ref)
    with pytest.raises(ValueError):
        correct_reduce(raw, maps, out, None, lut, g1, area=(f, small[:-1]))
    with pytest.raises(ValueError):
        correct_reduce(raw, maps, out, None, lut, g1, area=(16, small))
