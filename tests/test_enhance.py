"""Pyramid kernels against NumPy references, transfer properties, enhancement behaviour.

Float tolerances: the kernels run in float32 (fastmath), the references in float64;
pyramid levels agree within 1e-5 relative, collapsed levels within 2e-4 absolute (log
units, i.e. 0.02 % of the signal).
"""

from __future__ import annotations

import numpy as np
import pytest

from processing import _kernels as K
from processing.enhance import (
    Pyramid,
    enhance,
    identity_params,
    log_lut,
    n_levels,
    transfer,
    transfer_params,
)
from processing.profiles import PROFILES, get_profile


def ref_down2(a):
    a = np.asarray(a, np.float64)
    h, w = a.shape
    p = np.pad(a, ((0, h % 2), (0, w % 2)), mode="edge")
    return 0.25 * (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2])


def ref_up2(a, shape):
    a = np.asarray(a, np.float64)
    hs, ws = a.shape

    def coords(n, ns):
        s = 0.5 * np.arange(n) - 0.25
        i0 = np.floor(s).astype(int)
        f = s - i0
        i1 = np.clip(i0 + 1, 0, ns - 1)
        i0 = np.clip(i0, 0, ns - 1)
        return i0, i1, f

    y0, y1, fy = coords(shape[0], hs)
    x0, x1, fx = coords(shape[1], ws)
    top = a[y0][:, x0] + (a[y0][:, x1] - a[y0][:, x0]) * fx
    bot = a[y1][:, x0] + (a[y1][:, x1] - a[y1][:, x0]) * fx
    return top + (bot - top) * fy[:, None]


@pytest.mark.parametrize("shape", [(64, 64), (67, 93), (33, 130)])
def test_down_up_match_numpy(shape):
    rng = np.random.default_rng(0)
    a = rng.random(shape).astype(np.float32) * 10
    d = np.empty(((shape[0] + 1) // 2, (shape[1] + 1) // 2), np.float32)
    K.down2(a, d)
    np.testing.assert_allclose(d, ref_down2(a), rtol=1e-6)
    u = np.empty(shape, np.float32)
    K.up2(d, u)
    np.testing.assert_allclose(u, ref_up2(d, shape), rtol=1e-5, atol=1e-5)
    # the row-based expansion used by the fused kernels is the same function
    tmp = np.empty(d.shape[1], np.float32)
    row = np.empty(shape[1], np.float32)
    for i in (0, 1, shape[0] // 2, shape[0] - 1):
        K._up_row(d, i, tmp, row)
        np.testing.assert_allclose(row, ref_up2(d, shape)[i], rtol=1e-5, atol=1e-5)


def test_down2_lut_matches_numpy():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 65536, (51, 77)).astype(np.uint16)
    lut = log_lut()
    out = np.empty((26, 39), np.float32)
    K.down2_lut(src, lut, out)
    np.testing.assert_allclose(out, ref_down2(lut[src]), rtol=1e-6)
    np.testing.assert_allclose(lut[[0, 1, 2, 65535]], np.log([1, 1, 2, 65535]), rtol=1e-6)


def test_collapse_level_matches_numpy():
    rng = np.random.default_rng(2)
    g = (rng.random((70, 90)) * 3 + 5).astype(np.float32)
    g1 = ref_down2(g).astype(np.float32)
    c1 = (g1 + rng.normal(0, 0.1, g1.shape)).astype(np.float32)
    tr = transfer_params(0, get_profile("chest"), 0.02)
    out = np.empty_like(g)
    K.collapse_level(g, g1, c1, tr, out)
    ref = ref_up2(c1, g.shape) + transfer(g - ref_up2(g1, g.shape), tr)
    np.testing.assert_allclose(out, ref, atol=2e-4)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_transfer_is_odd_monotonic_compressive_and_never_amplifies_noise(name):
    prof = PROFILES[name]
    sigma = 0.02
    for level in range(4):
        tr = transfer_params(level, prof, sigma)
        x = np.linspace(0, 4, 40001)
        f = transfer(x, tr)
        np.testing.assert_allclose(transfer(-x, tr), -f, atol=1e-12)  # odd
        assert np.all(np.diff(f) >= -1e-12)  # monotonic
        slope0 = f[1] / x[1]
        assert slope0 <= 1.0 + 1e-6  # details far below the noise are not amplified
        t = prof.noise_k * sigma / 2 ** level
        gain = f[1:] / x[1:]
        peak = int(np.argmax(gain))
        # full gain is reached just above the noise threshold ...
        assert x[1:][peak] < 10 * t
        assert gain[peak] > 1.0
        if prof.compression < 1:
            # ... and above it the transfer is compressive: the gain falls as details grow
            assert np.all(np.diff(gain[peak:]) <= 1e-12)
            assert gain[peak] > 1.5 * gain[-1]


def test_identity_transfers_reconstruct_exactly():
    rng = np.random.default_rng(3)
    img = (rng.random((97, 130)) * 4 + 6).astype(np.float32)
    pyr = Pyramid(img.shape, 5)
    pyr.build_from_f32(img)
    n = pyr.levels
    np.copyto(pyr.c[n - 1], pyr.g[n - 1])
    for k in range(n - 2, -1, -1):
        K.collapse_level(pyr.g[k], pyr.g[k + 1], pyr.c[k + 1], identity_params(), pyr.c[k])
    out = np.empty_like(img)
    K.collapse_level(img, pyr.g[0], pyr.c[0], identity_params(), out)
    np.testing.assert_allclose(out, img, atol=1e-4)


def test_levels_stay_on_reduced_resolution():
    assert n_levels((3072, 3072), 7) == 7
    assert n_levels((1024, 1024), 7) == 6
    pyr = Pyramid((3072, 3072), 7)
    assert pyr.shapes[0] == (1536, 1536) and pyr.shapes[-1] == (24, 24)
    with pytest.raises(ValueError):
        Pyramid((20, 20), 5)


def _phantom(seed, noise=0.03):
    rng = np.random.default_rng(seed)
    h, w = 256, 256
    yy, xx = np.mgrid[0:h, 0:w]
    base = 8.0 + 1.5 * np.exp(-((xx - 128) ** 2 + (yy - 128) ** 2) / (2 * 80.0 ** 2))
    detail = 0.08 * ((xx // 16 + yy // 16) % 2)  # small-contrast texture
    return base, detail, (base + detail + rng.normal(0, noise, (h, w))).astype(np.float32)


def test_enhancement_raises_detail_contrast_and_not_flat_noise():
    base, detail, img = _phantom(4)
    prof = get_profile("default")
    out = enhance(img, prof)
    # quantum noise on a smooth background is not amplified: the noise that reaches the
    # output (enhanced noisy minus enhanced noise-free, same parameters) is weaker
    noise = img - (base + detail)
    smooth = (base + 0.0).astype(np.float32)
    sigma = 0.03
    for p in PROFILES.values():
        n_out = (enhance(smooth + noise, p, noise_sigma=sigma)
                 - enhance(smooth, p, noise_sigma=sigma))
        assert n_out[16:-16, 16:-16].std() < 0.95 * noise.std(), p.name
    # the small-contrast checkerboard is amplified
    mask = detail > 0
    c_in = img[mask].mean() - img[~mask].mean()
    c_out = out[mask].mean() - out[~mask].mean()
    assert c_out > 1.3 * c_in
    # latitude compression: the large-scale range shrinks
    lo_in = np.percentile(img, 99) - np.percentile(img, 1)
    lo_out = np.percentile(out, 99) - np.percentile(out, 1)
    assert lo_out < lo_in


def test_noise_estimate_follows_noise():
    s = []
    for noise in (0.01, 0.04):
        _, _, img = _phantom(5, noise)
        pyr = Pyramid(img.shape, 5)
        pyr.build_from_f32(img)
        s.append(pyr.noise_sigma(img, None, None))
    assert 3.0 < s[1] / s[0] < 5.0


def test_enhance_rejects_bad_input():
    with pytest.raises(TypeError):
        enhance(np.zeros((64, 64), np.uint16))
    a = np.zeros((64, 64), np.float32)
    a[3, 3] = np.nan
    with pytest.raises(ValueError):
        enhance(a)
    with pytest.raises(KeyError, match="known"):
        enhance(np.zeros((64, 64), np.float32), "no-such-profile")


def test_profiles_and_catalog_ids():
    assert {"default", "chest", "skull", "extremity", "abdomen", "spine",
            "pediatric"} <= set(PROFILES)
    assert get_profile("CHEST").name == "chest"
    assert get_profile("View_DX_T_A_SK_AP_00").name == "skull"
    assert get_profile("View_DX_T_A_SK_Axial_04").name == "skull"
    assert get_profile("View_DX_T_P_CH_PA_00").name == "pediatric"
    assert get_profile("View_DX_T_A_XYZ_AP_00").name == "default"
    with pytest.raises(KeyError, match="chest"):
        get_profile("thoraxx")
    with pytest.raises(ValueError):
        get_profile("chest").with_(latitude=0.0)


def test_finite_median_matches_numpy_median():
    from processing import _kernels as K

    rng = np.random.default_rng(9)
    for n in (1, 2, 3, 10, 11, 2000, 2001):
        v = np.abs(rng.normal(0, 0.02, n)).astype(np.float32)
        if n > 5:
            v[::7] = np.nan
            v[3] = np.inf
        ref = np.median(v[np.isfinite(v)])
        med, m = K.finite_median(v.copy())
        assert m == int(np.isfinite(v).sum())
        assert np.float32(med) == ref
        assert float(1.4826 * np.float32(med)) == float(1.4826 * ref)
    med, m = K.finite_median(np.full(4, np.nan, np.float32))
    assert m == 0
