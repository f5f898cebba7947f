"""Output stage: fused final pass against a NumPy reference, VOI preview, orientation."""

from __future__ import annotations

import numpy as np
import pytest

from processing.enhance import Pyramid, log_lut, transfer, transfer_params
from processing.output import Presentation, orient, oriented_shape, present
from processing.profiles import get_profile
from processing.window import voi_lut
from tests.test_enhance import ref_up2


@pytest.mark.parametrize("bits", [12, 16])
def test_final_pass_matches_numpy_and_preview_is_the_voi_lut(bits):
    rng = np.random.default_rng(0)
    h, w = 131, 170
    yy, xx = np.mgrid[0:h, 0:w]
    src = rng.poisson(3000 + 2000 * np.sin(xx / 13.0) * np.cos(yy / 17.0)).astype(np.uint16)
    lut = log_lut()
    prof = get_profile("chest")
    pyr = Pyramid(src.shape, prof.levels)
    pyr.build_from_u16(src, lut)
    sigma = pyr.noise_sigma(src, lut, None)
    pyr.collapse(prof, sigma)
    tr = transfer_params(0, prof, sigma)
    pres = Presentation(7.0, 8.7, bits)
    center, width = 0.4 * pres.maxcode, 0.3 * pres.maxcode
    img = np.empty(src.shape, np.uint16)
    prev = np.empty(src.shape, np.uint8)
    present(src, lut, pyr, tr, pres, (center, width), img, prev)

    v = ref_up2(pyr.c[0], src.shape) + transfer(lut[src] - ref_up2(pyr.g[0], src.shape), tr)
    ref = np.clip(np.floor((pres.hi - v) * pres.scale + 0.5), 0, pres.maxcode)
    diff = np.abs(img.astype(np.int64) - ref.astype(np.int64))
    # float32 fastmath vs float64: at most one code, on rounding ties only
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01 if bits == 12 else (diff > 0).mean() < 0.05
    np.testing.assert_array_equal(prev, voi_lut(center, width, pres.maxcode + 1)[img])
    assert img.max() <= pres.maxcode


def test_presentation_validation():
    with pytest.raises(ValueError):
        Presentation(1.0, 1.0, 12)
    with pytest.raises(ValueError):
        Presentation(0.0, 1.0, 8)
    p = Presentation(0.0, 2.0, 12)
    assert p.code(2.0) == 0 and p.code(0.0) == 4095  # inverted: high dose is dark


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_orient_matches_numpy(rotate, hflip, dtype):
    a = np.arange(7 * 11, dtype=dtype).reshape(7, 11)
    ref = np.rot90(a, k=-rotate // 90)  # clockwise
    if hflip:
        ref = ref[:, ::-1]
    got = orient(a, rotate, hflip)
    np.testing.assert_array_equal(got, ref)
    assert got.shape == oriented_shape(a.shape, rotate)
    out = np.empty(ref.shape, dtype)
    assert orient(a, rotate, hflip, out=out) is out


@pytest.mark.parametrize("rotate", [45, -90, "x", 90.5])
def test_orient_rejects_bad_rotation(rotate):
    with pytest.raises(ValueError):
        orient(np.zeros((4, 4), np.uint16), rotate)


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_orient_shutter_follows_the_image(rotate, hflip):
    """Shutter attributes mapped with orient_shutter describe the oriented mask exactly."""
    from processing.output import orient, orient_shutter

    rows, cols = 40, 60
    mask = np.zeros((rows, cols), np.uint8)
    mask[5:21, 10:51] = 1  # rows 6..21, cols 11..51 (1-based)
    rect = {"ShutterShape": "RECTANGULAR", "ShutterLeftVerticalEdge": 11,
            "ShutterRightVerticalEdge": 51, "ShutterUpperHorizontalEdge": 6,
            "ShutterLowerHorizontalEdge": 21}
    o = orient(mask, rotate, hflip, out=None).copy()
    a = orient_shutter(rect, (rows, cols), rotate, hflip)
    rr, cc = np.nonzero(o)
    assert (a["ShutterUpperHorizontalEdge"], a["ShutterLowerHorizontalEdge"]) == (rr.min() + 1, rr.max() + 1)
    assert (a["ShutterLeftVerticalEdge"], a["ShutterRightVerticalEdge"]) == (cc.min() + 1, cc.max() + 1)

    point = np.zeros((rows, cols), np.uint8)
    point[7, 13] = 1  # 1-based (8, 14)
    circ = {"ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [8, 14], "RadiusOfCircularShutter": 3}
    poly = {"ShutterShape": "POLYGONAL", "VerticesOfThePolygonalShutter": [8, 14, 8, 14, 8, 14]}
    r, c = (int(x[0]) + 1 for x in np.nonzero(orient(point, rotate, hflip, out=None)))
    assert orient_shutter(circ, (rows, cols), rotate, hflip)["CenterOfCircularShutter"] == [r, c]
    assert orient_shutter(poly, (rows, cols), rotate, hflip)["VerticesOfThePolygonalShutter"] == [r, c] * 3
