"""The detector simulator: panel formats, phantoms, frame physics and ground truth."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from simulators.frames import (
    RANDOM_KINDS,
    Collimation,
    DetectorModel,
    FrameTruth,
    air_kerma,
    random_collimation,
)
from simulators.panels import (
    PANELS,
    READ_NOISE_ADU,
    adu_per_quantum,
    max_adu,
    saturation_ugy,
)
from simulators.phantom import PARTS, make_phantom

_MODELS: dict[str, DetectorModel] = {}


def model(name: str = "FLUORO_1024", seed: int = 5) -> DetectorModel:
    key = f"{name}/{seed}"
    if key not in _MODELS:
        _MODELS[key] = DetectorModel(PANELS[name], seed)
    return _MODELS[key]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def corrected(frame: np.ndarray, m: DetectorModel) -> np.ndarray:
    """Offset-subtracted signal using the panel's true offset (no gain correction)."""
    return frame.astype(np.float32) - m.offset


def interior(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` eroded by ``px`` pixels."""
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_REPLICATE) > 0


# --- panel formats ------------------------------------------------------------------------------


def test_panel_formats_are_the_real_ones() -> None:
    f = PANELS["FLUORO_1024"]
    assert (f.rows, f.cols, f.bits, f.pixel_pitch_mm, f.readout_s) == (1024, 1024, 14, 0.194, 0.05)
    p = PANELS["CSI_3543"]
    assert (p.rows, p.cols, p.bits) == (2800, 2304, 16)  # portrait: 43 cm along the rows
    assert 41 < p.rows * p.pixel_pitch_mm / 10 < 44 and 34 < p.cols * p.pixel_pitch_mm / 10 < 36
    q = PANELS["CSI_4343"]
    assert (q.rows, q.cols, q.bits, q.pixel_pitch_mm) == (3072, 3072, 16, 0.139)
    h = PANELS["CSI_4343_HR"]
    assert (h.rows, h.cols, h.bits, h.pixel_pitch_mm) == (4288, 4288, 16, 0.100)
    for m in PANELS.values():
        # direct exposure saturates only well above a typical radiograph's 5-30 uGy
        assert 10 < saturation_ugy(m) < 100
        assert adu_per_quantum(m) > 1.0


@pytest.mark.parametrize("name", list(PANELS))
def test_exposure_shapes_and_dtypes_for_every_panel(name: str) -> None:
    m = model(name)
    frame, truth = m.exposure(75, 4, 115, None, "chest", rng(1))
    assert frame.dtype == np.uint16 and frame.shape == (m.mode.rows, m.mode.cols)
    assert int(frame.max()) <= max_adu(m.mode)
    assert isinstance(truth, FrameTruth)
    for mask in (truth.field_mask, truth.defect_mask, truth.direct_mask):
        assert mask.dtype == bool and mask.shape == frame.shape
    assert truth.corners is not None and truth.corners.shape == (4, 2)
    assert truth.direct_mask.any(), "the chest view leaves direct exposure inside the field"
    assert 0 < truth.anatomy_dose_ugy < truth.dose_ugy
    assert math.isclose(truth.dose_ugy, air_kerma(75, 4, 115))
    dark = m.dark(rng(2))
    assert dark.dtype == np.uint16 and dark.shape == frame.shape


# --- physics ---------------------------------------------------------------------------------------


def test_signal_is_linear_in_mas() -> None:
    m = model()
    col = Collimation.rect(511.5, 511.5, 800, 800)
    means = []
    for mas in (1.0, 2.0, 4.0):
        frame, truth = m.exposure(70, mas, 115, col, "chest", rng(3))
        anat = truth.field_mask & ~truth.direct_mask & ~truth.defect_mask
        means.append(float(corrected(frame, m)[anat].mean()))
        assert math.isclose(truth.dose_ugy, air_kerma(70, mas, 115))
    assert means[1] / means[0] == pytest.approx(2.0, rel=0.02)
    assert means[2] / means[1] == pytest.approx(2.0, rel=0.02)


def test_signal_grows_with_kv_and_bone_contrast_falls() -> None:
    m = model()
    ph = make_phantom("default", m.shape)
    col = Collimation.none()
    anat_means, direct_means, contrasts = [], [], []
    bone = ph.bone_cm > 1.0
    near = cv2.dilate(bone.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    soft = near & ~(cv2.dilate(bone.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0) & ph.body
    for kv in (60, 80, 110):
        frame, truth = m.exposure(kv, 1.0, 115, col, ph, rng(4))
        sig = corrected(frame, m)
        good = ~truth.defect_mask
        anat_means.append(float(sig[truth.field_mask & ph.body & good].mean()))
        direct_means.append(float(sig[truth.direct_mask & good].mean()))
        contrasts.append(math.log(sig[soft & good].mean() / sig[bone & good].mean()))
    assert anat_means[0] < anat_means[1] < anat_means[2]
    assert direct_means[0] < direct_means[1] < direct_means[2]
    assert contrasts[0] > contrasts[1] > contrasts[2] > 0, "a harder beam shows less bone contrast"


def test_quantum_noise_variance_grows_linearly_with_signal() -> None:
    m = model()
    good = ~m.defect_mask
    res = []
    for dose in (0.5, 2.0, 8.0):
        a = m.flat(dose, rng(10)).astype(np.float32)
        b = m.flat(dose, rng(11)).astype(np.float32)
        var = float(((a - b)[good]).var() / 2)  # fixed pattern cancels in the difference
        mean = float((a - m.offset)[good].mean())
        res.append((mean, var))
    read = READ_NOISE_ADU[m.mode.bits] ** 2
    k = [(v - read) / s for s, v in res]
    # variance per ADU of signal is the ADU value of one quantum (gain^2 ~ 1)
    for ki in k:
        assert ki == pytest.approx(adu_per_quantum(m.mode), rel=0.08)
    assert res[2][1] / res[0][1] == pytest.approx(res[2][0] / res[0][0], rel=0.15)


def test_offset_gain_and_defects_are_in_the_frames_and_match_truth() -> None:
    m = model()
    good = ~m.defect_mask
    darks = np.mean([m.dark(rng(20 + i)).astype(np.float32) for i in range(8)], axis=0)
    # offset: per-pixel fixed pattern with column structure, reproduced by dark frames
    assert np.abs(darks - m.offset)[good].mean() < READ_NOISE_ADU[m.mode.bits]
    col_means = np.median(m.offset, axis=0)
    assert col_means.std() > 3.0, "column structure in the offset"
    # gain: a flat frame shows the gain non-uniformity (a few %)
    flats = np.mean([m.flat(4.0, rng(30 + i)).astype(np.float32) for i in range(4)], axis=0)
    est = (flats - darks) / m.heel
    est /= est[good].mean()
    g = m.gain / m.gain[good].mean()
    assert 0.01 < float(g[good].std()) < 0.06
    assert np.corrcoef(est[good], g[good])[0, 1] > 0.9
    # defects: dead pixels and the dead column read at dark level, hot pixels are bright
    assert m.defect_mask.sum() > 0
    dead = m.defect_mask & (m.gain < 0.1)
    assert dead.any()
    assert np.all(np.abs(flats[dead] - darks[dead]) < 0.15 * np.median(flats - darks))
    assert m.defect_mask[-1, m.dead_column] and m.defect_mask[m.bright_row, :].all()
    hot = m.defect_mask & (m.offset > np.median(m.offset) + 1000)
    assert hot.any()
    _, truth = m.exposure(70, 2, 115, None, "hand", rng(1))
    assert np.array_equal(truth.defect_mask, m.defect_mask)


def test_calibration_maps_from_simulated_frames_find_the_true_defects() -> None:
    from processing.calibration import build_gain, build_offset, find_defects

    m = model()
    darks = [m.dark(rng(40 + i)) for i in range(6)]
    flats = [m.flat(m.flat_dose_ugy(), rng(50 + i)) for i in range(6)]
    offset = build_offset(darks)
    defect = find_defects(offset, build_gain(flats, offset))
    truth = m.defect_mask
    assert (defect & truth).sum() / truth.sum() > 0.98
    assert (defect & ~truth).sum() < 0.001 * truth.size


def test_heel_effect_is_a_gradient_along_the_rows() -> None:
    m = model()
    flat = m.flat(4.0, rng(3)).astype(np.float32) - m.offset
    top = float(np.median(flat[:100]))
    bottom = float(np.median(flat[-100:]))
    assert bottom / top > 1.05
    cols = np.median(flat[:, :100]) / np.median(flat[:, -100:])
    assert abs(cols - 1) < 0.03  # no gradient across the columns


# --- collimation ------------------------------------------------------------------------------------


def test_rect_truth_mask_matches_the_geometry() -> None:
    m = model()
    col = Collimation.rect(400.0, 600.0, 500.0, 300.0, 0.0)
    _, truth = m.exposure(70, 2, 115, col, "default", rng(0))
    assert truth.field_mask.sum() == pytest.approx(500 * 300, rel=0.01)
    ys, xs = np.nonzero(truth.field_mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (150, 650, 450, 750)  # pixel centres on the edge count as inside
    np.testing.assert_allclose(truth.corners, [(150, 450), (650, 450), (650, 750), (150, 750)])


@pytest.mark.parametrize("angle", [7.0, -18.0])
def test_rotated_rect_mask_matches_its_polygon(angle: float) -> None:
    m = model()
    col = Collimation.rect(520.0, 500.0, 600.0, 420.0, angle)
    _, truth = m.exposure(70, 2, 115, col, "chest", rng(0))
    poly = np.zeros(m.shape, np.uint8)
    cv2.fillPoly(poly, [np.round(truth.corners * 16).astype(np.int32)], 1, shift=4)
    poly = poly.astype(bool)
    iou = (poly & truth.field_mask).sum() / (poly | truth.field_mask).sum()
    assert iou > 0.99
    assert truth.field_mask.sum() == pytest.approx(600 * 420, rel=0.01)
    # the angle turns the width axis (first to second corner) from +x towards +y
    (x0, y0), (x1, y1) = truth.corners[0], truth.corners[1]
    assert math.degrees(math.atan2(y1 - y0, x1 - x0)) == pytest.approx(angle)


def test_circle_and_clipped_fields() -> None:
    m = model()
    _, t = m.exposure(70, 2, 115, Collimation.circle(500, 520, 300), "skull", rng(0))
    assert t.circle == (500, 520, 300)
    assert t.field_mask.sum() == pytest.approx(math.pi * 300 ** 2, rel=0.01)
    assert t.corners is None
    # a circle cut by the left edge, a rectangle whose top and left blades lie outside
    _, t = m.exposure(70, 2, 115, Collimation.circle(100, 512, 400), "skull", rng(0))
    assert t.field_mask[:, 0].any() and t.field_mask.sum() < math.pi * 400 ** 2 * 0.8
    _, t = m.exposure(70, 2, 115, Collimation.rect(300, 300, 900, 900, 10), "chest", rng(0))
    assert t.field_mask[0].any() and t.field_mask[:, 0].any()
    assert (t.corners.min(axis=0) < 0).all()
    _, t = m.exposure(70, 2, 115, Collimation.none(), "chest", rng(0))
    assert t.field_mask.all() and not t.collimated


def test_scatter_outside_the_field_is_above_dark_and_below_the_field() -> None:
    m = model("CSI_3543")
    col = Collimation.rect(1152, 1400, 1300, 1700, 0.0)
    frame, truth = m.exposure(80, 5, 115, col, "abdomen", rng(6))
    sig = corrected(frame, m)
    good = ~truth.defect_mask
    band = int(3.0 / m.mode.pixel_pitch_mm)  # 3 mm away from the penumbra
    outside = interior(~truth.field_mask, band) & good
    inside = interior(truth.field_mask, band) & good
    out_mean = float(sig[outside].mean())
    in_mean = float(sig[inside].mean())
    read = READ_NOISE_ADU[16]
    assert out_mean > 10 * read, "the shuttered area carries scatter, not just dark"
    assert out_mean < 0.5 * in_mean
    # scatter decays with the distance from the field edge
    near = outside & ~interior(~truth.field_mask, band + 100)
    far = interior(~truth.field_mask, band + 300) & good
    assert sig[near].mean() > 1.3 * sig[far].mean() > 0
    # the field edge is a step: just inside > just outside, even under anatomy
    edge_in = inside & ~interior(truth.field_mask, band + 20)
    assert np.median(sig[edge_in]) > 1.5 * np.median(sig[near])


def test_direct_exposure_exists_and_saturates_only_at_high_dose() -> None:
    m = model("CSI_4343")
    sat = max_adu(m.mode)
    frame, truth = m.exposure(66, 3.2, 115, None, "hand", rng(7))  # a typical hand
    assert truth.direct_mask.mean() > 0.2
    assert (frame[truth.direct_mask] >= sat).mean() < 0.001
    assert np.median(corrected(frame, m)[truth.direct_mask]) > 0.1 * (sat - 1200)
    frame, truth = m.exposure(90, 60, 100, None, "hand", rng(7))  # a gross overexposure
    assert (frame[truth.direct_mask] >= sat).mean() > 0.9


# --- determinism, phantoms, random fields --------------------------------------------------------


def test_frames_are_deterministic_by_seed() -> None:
    a = DetectorModel(PANELS["FLUORO_1024"], seed=9)
    b = DetectorModel(PANELS["FLUORO_1024"], seed=9)
    c = DetectorModel(PANELS["FLUORO_1024"], seed=10)
    assert np.array_equal(a.offset, b.offset) and np.array_equal(a.defect_mask, b.defect_mask)
    assert not np.array_equal(a.offset, c.offset)
    col = Collimation.circle(500, 500, 400)
    f1, _ = a.exposure(70, 2, 115, col, "skull", rng(42))
    f2, _ = b.exposure(70, 2, 115, col, "skull", rng(42))
    f3, _ = a.exposure(70, 2, 115, col, "skull", rng(43))
    assert np.array_equal(f1, f2)
    assert not np.array_equal(f1, f3)


@pytest.mark.parametrize("part", ["chest", "skull", "hand", "abdomen", "pelvis", "spine", "default"])
def test_phantoms_are_anatomy_with_direct_exposure_around(part: str) -> None:
    ph = make_phantom(part, (512, 512))
    assert ph.water_cm.dtype == np.float32 and ph.bone_cm.max() > 0.5
    assert 0.15 < ph.body.mean() < 0.9
    assert (~ph.body).mean() > 0.08, "direct-exposure area around the body"
    assert make_phantom(part, (512, 512)) is ph  # cached
    # resolution-independent: the same anatomy at another shape
    other = make_phantom(part, (1024, 1024))
    assert abs(other.body.mean() - ph.body.mean()) < 0.02
    with pytest.raises(ValueError):
        ph.water_cm[0, 0] = 1.0


def test_phantom_names_and_bad_input() -> None:
    assert {"chest", "skull", "hand", "abdomen", "pelvis", "spine", "default"} <= set(PARTS)
    assert make_phantom("Head", (64, 64)).name == "skull"
    with pytest.raises(ValueError, match="unknown phantom"):
        make_phantom("tail", (64, 64))
    m = model()
    with pytest.raises(ValueError):
        m.exposure(float("nan"), 2, 115, None, "chest", rng(0))
    with pytest.raises(ValueError):
        m.exposure(70, -1, 115, None, "chest", rng(0))
    with pytest.raises(ValueError):
        m.exposure(70, 1, 115, None, make_phantom("chest", (64, 64)), rng(0))
    for bad in (dict(kind="oval"), dict(kind="rect", width=0, height=5),
                dict(kind="circle", radius=-1), dict(kind="rect", width=float("inf"), height=1)):
        with pytest.raises(ValueError):
            Collimation(**bad)
    with pytest.raises(ValueError):
        m.flat(-1.0, rng(0))


def _category(c: Collimation, shape: tuple[int, int]) -> str:
    rows, cols = shape
    if c.kind == "none":
        return "none"
    if c.kind == "circle":
        cx, cy = c.center
        inside = min(cx, cols - 1 - cx, cy, rows - 1 - cy) >= c.radius
        return "circle" if inside else "clipped_circle"
    xy = c.corners()
    inside = (xy[:, 0].min() >= 0 and xy[:, 0].max() <= cols - 1
              and xy[:, 1].min() >= 0 and xy[:, 1].max() <= rows - 1)
    if not inside:
        return "clipped_rect"
    return "rotated" if c.angle_deg else "rect"


@pytest.mark.parametrize("shape", [(1024, 1024), (2800, 2304)])
def test_random_collimation_covers_every_kind(shape: tuple[int, int]) -> None:
    r = rng(123)
    seen: dict[str, int] = {}
    for _ in range(240):
        c = random_collimation(r, shape)
        cat = _category(c, shape)
        seen[cat] = seen.get(cat, 0) + 1
        if c.kind == "rect":
            assert abs(c.angle_deg) <= 20
        if c.kind != "none":
            area = c.scaled(1 / 8).mask((shape[0] // 8, shape[1] // 8)).mean()
            assert 0.1 < area < 1.0, f"field covers {area:.2f} of the image"
    assert set(seen) == set(RANDOM_KINDS)
    assert min(seen.values()) >= 20
    for kind in RANDOM_KINDS:  # each category on its own yields that category
        for _ in range(15):
            assert _category(random_collimation(r, shape, (kind,)), shape) == kind
    with pytest.raises(ValueError):
        random_collimation(r, shape, ("triangle",))
