"""The pipeline end to end on simulated frames: results, reuse, threads, bad input."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from processing.calibration import CalibrationMaps
from processing.corrections import correct
from processing.output import orient
from processing.pipeline import Pipeline, PipelineResult
from simulators.frames import Collimation, DetectorModel
from simulators.panels import PANELS

STAGES = ["corrections", "collimation", "enhancement", "window", "output", "total"]


@pytest.fixture(scope="module")
def sim():
    mode = PANELS["FLUORO_1024"]
    dm = DetectorModel(mode, seed=5)
    rng = np.random.default_rng(0)
    maps = CalibrationMaps.from_frames([dm.dark(rng) for _ in range(4)],
                                       [dm.flat(dm.flat_dose_ugy(), rng) for _ in range(4)])
    flat = correct(dm.flat(dm.flat_dose_ugy(), rng), maps)
    cal = float(flat[16:-16, 16:-16].mean()) / dm.flat_dose_ugy()
    coll = Collimation.rect(500, 530, 760, 820, 6.0)
    frames = [dm.exposure(70, 1.0, 110, coll, "hand", rng) for _ in range(2)]
    return dm, maps, cal, coll, frames


@pytest.fixture(scope="module")
def pipe(sim):
    return Pipeline("extremity", shape=sim[0].shape)


def test_result_fields_and_values(sim, pipe):
    dm, maps, cal, coll, frames = sim
    raw, truth = frames[0]
    r = pipe.run(raw, maps, counts_per_ugy=cal, target_ei=150.0)
    assert isinstance(r, PipelineResult)
    assert r.image.dtype == np.uint16 and r.image.shape == raw.shape
    assert r.preview.dtype == np.uint8 and r.preview.shape == raw.shape
    assert r.bits_stored == 12 and r.image.max() <= 4095
    assert list(r.timings) == STAGES and all(v >= 0 for v in r.timings.values())
    assert r.timings["total"] >= sum(r.timings[s] for s in STAGES[:-1]) * 0.99
    center, width = r.window
    assert width >= 1 and 0 <= center <= 4095
    assert r.ei == pytest.approx(100 * truth.anatomy_dose_ugy, rel=0.06)
    assert r.di == pytest.approx(10 * math.log10(r.ei / 150.0))
    assert r.collimation.kind == "rect"
    iou = (r.collimation.mask & truth.field_mask).sum() / (r.collimation.mask
                                                           | truth.field_mask).sum()
    assert iou > 0.95
    # MONOCHROME2: direct exposure is darker than the anatomy in the preview
    anat = truth.field_mask & ~truth.direct_mask
    assert r.preview[truth.direct_mask].mean() < r.preview[anat].mean()
    # the window spans the anatomy: little of it is clipped
    assert np.mean((r.preview[anat] == 0) | (r.preview[anat] == 255)) < 0.05


def test_reuse_without_reallocation_and_owned_outputs(sim, pipe):
    _, maps, cal, _, frames = sim
    r1 = pipe.run(frames[0][0], maps, counts_per_ugy=cal)
    ws = pipe._ws[frames[0][0].shape]
    ids = [id(a) for a in (ws.mask, ws.img, ws.prev, *ws.pyr.g, *ws.pyr.c)]
    keep = r1.image.copy()
    r2 = pipe.run(frames[1][0], maps, counts_per_ugy=cal)
    assert pipe._ws[frames[0][0].shape] is ws
    assert [id(a) for a in (ws.mask, ws.img, ws.prev, *ws.pyr.g, *ws.pyr.c)] == ids
    assert len(pipe._ws) == 1
    np.testing.assert_array_equal(r1.image, keep)  # run 2 did not overwrite run 1
    assert not np.array_equal(r1.image, r2.image)
    view = r2.preview[::2]
    prev2 = view.copy()
    del r2
    pipe.run(frames[0][0], maps, counts_per_ugy=cal)
    np.testing.assert_array_equal(view, prev2)  # a view keeps its array out of reuse
    # once a result is dropped, its arrays are reused instead of allocating new ones
    ident = id(r1.image)
    del r1
    r4 = pipe.run(frames[0][0], maps, counts_per_ugy=cal)
    assert id(r4.image) == ident
    np.testing.assert_array_equal(r4.image, keep)
    r3 = pipe.run(frames[1][0], maps, counts_per_ugy=cal, reuse_output=True)
    assert r3.image is ws.img and r3.preview is ws.prev
    np.testing.assert_array_equal(r3.preview[::2], prev2)  # deterministic


def test_thread_safe_shared_pipeline(sim, pipe):
    _, maps, cal, _, frames = sim
    expected = [pipe.run(f[0], maps, counts_per_ugy=cal).image for f in frames]
    errors: list[BaseException] = []
    results: dict[tuple[int, int], np.ndarray] = {}

    def worker(t: int) -> None:
        try:
            for k in range(3):
                i = (t + k) % 2
                results[(t, k)] = (i, pipe.run(frames[i][0], maps, counts_per_ugy=cal).image)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, img in results.values():
        np.testing.assert_array_equal(img, expected[i])


@pytest.mark.parametrize("rotate,hflip", [(90, False), (180, True), (270, False), (0, True)])
def test_orientation(sim, pipe, rotate, hflip):
    _, maps, cal, _, frames = sim
    base = pipe.run(frames[0][0], maps, counts_per_ugy=cal)
    r = pipe.run(frames[0][0], maps, counts_per_ugy=cal, rotate=rotate, hflip=hflip)
    np.testing.assert_array_equal(r.image, orient(base.image, rotate, hflip))
    np.testing.assert_array_equal(r.preview, orient(base.preview, rotate, hflip))
    assert r.collimation.mask.shape == frames[0][0].shape  # shape in raw coordinates


def test_sixteen_bit_profile_and_catalog_id(sim):
    _, maps, cal, _, frames = sim
    from processing.profiles import get_profile

    p = Pipeline(get_profile("chest").with_(output_bits=16))
    r = p.run(frames[0][0], maps, counts_per_ugy=cal)
    assert r.bits_stored == 16 and r.image.max() > 4095
    assert Pipeline("View_DX_T_A_SK_AP_00").profile.name == "skull"


def test_window_stable_over_noise_realisations(sim, pipe):
    dm, maps, cal, coll, _ = sim
    rng = np.random.default_rng(7)
    c, w, ei = [], [], []
    for _ in range(20):
        raw, _ = dm.exposure(70, 1.0, 110, coll, "hand", rng)
        r = pipe.run(raw, maps, counts_per_ugy=cal)
        c.append(math.exp(r.window_result.center))  # log domain -> signal ratio
        w.append(r.window_result.width)
        ei.append(r.ei)
    for s in (c, w, ei):
        s = np.asarray(s)
        assert np.abs(s / np.median(s) - 1).max() < 0.02


@pytest.mark.parametrize("frame", [
    np.zeros((64, 64), np.uint16),
    np.full((64, 64), 65535, np.uint16),
])
def test_degenerate_frames_give_sane_results(frame):
    r = Pipeline("default").run(frame, None, target_ei=100.0)
    assert r.window[1] >= 1 and math.isfinite(r.window[0])
    assert r.image.shape == frame.shape
    if frame.max() == 0:
        assert r.ei == 0.0 and math.isnan(r.di)
    else:
        assert r.ei == pytest.approx(65535.0, rel=1e-3)


@pytest.mark.parametrize("raw, exc", [
    (np.zeros((64, 64), np.float32), TypeError),
    (np.full((64, 64), np.nan, np.float64), TypeError),
    (np.zeros((64, 64), np.int16), TypeError),
    (np.zeros((0, 64), np.uint16), ValueError),
    (np.zeros(64, np.uint16), ValueError),
    (np.zeros((16, 16), np.uint16), ValueError),
    ("frame", TypeError),
])
def test_bad_frames_rejected(raw, exc):
    with pytest.raises(exc):
        Pipeline("default").run(raw, None)


def test_bad_arguments_rejected(sim):
    _, maps, _, _, frames = sim
    p = Pipeline("default")
    raw = frames[0][0]
    with pytest.raises(ValueError, match="do not match"):
        p.run(raw[:, :-1].copy(), maps)
    with pytest.raises(TypeError):
        p.run(raw, {"offset": 0})
    for kw in ({"counts_per_ugy": 0.0}, {"counts_per_ugy": float("nan")},
               {"target_ei": -1.0}, {"rotate": 45}):
        with pytest.raises(ValueError):
            p.run(raw, maps, **kw)
    assert p._ws == {}  # nothing was allocated by the rejected calls
    with pytest.raises(KeyError, match="known"):
        Pipeline("nonsense")


def test_kernels_are_cached_and_never_query_the_thread_count():
    import inspect

    from numba.core.caching import NullCache

    from processing import _kernels

    src = inspect.getsource(_kernels)
    assert "get_num_threads" not in src.replace("``numba.get_num_threads()``", "")
    dispatchers = [f for f in vars(_kernels).values() if hasattr(f, "py_func")]
    assert len(dispatchers) > 15
    for f in dispatchers:
        assert not isinstance(f._cache, NullCache), f.__name__


def test_defect_plan_follows_the_defect_map(sim):
    _, maps, cal, _, frames = sim
    p = Pipeline("default")
    raw = frames[0][0]
    p.run(raw, maps, counts_per_ugy=cal)
    plan = p._plan
    same = CalibrationMaps(maps.offset, maps.gain, maps.defect.copy())  # equal content
    p.run(raw, same, counts_per_ugy=cal)
    assert p._plan is plan
    defect = maps.defect.copy()
    defect[100:104, 200] = True
    other = CalibrationMaps(maps.offset, maps.gain, defect)
    r = p.run(raw, other, counts_per_ugy=cal, reuse_output=False)
    assert p._plan is not plan and len(p._plan) == int(defect.sum())
    assert r.image.shape == raw.shape


def test_fused_work_image_gives_the_standalone_collimation(sim, pipe):
    from processing.collimator import detect_collimation

    _, maps, cal, _, frames = sim
    raw = frames[1][0]
    r = pipe.run(raw, maps, counts_per_ugy=cal)
    ref = detect_collimation(correct(raw, maps))
    assert r.collimation.kind == ref.kind
    np.testing.assert_array_equal(r.collimation.corners, ref.corners)
    assert r.collimation.confidence == ref.confidence
    np.testing.assert_array_equal(r.collimation.mask, ref.mask)


@pytest.mark.parametrize("n", [1, 2, 5, 6, 1000, 4097])
def test_noise_median_matches_numpy_and_kernel(n):
    from processing import _kernels as K
    from processing.enhance import _finite_median

    rng = np.random.default_rng(n)
    for trial in range(12):
        vals = np.abs(rng.normal(size=n)).astype(np.float32)
        if trial % 3 == 1:
            vals[rng.integers(0, n, max(1, n // 8))] = np.nan
        if trial % 4 == 2:
            vals[rng.integers(0, n, max(1, n // 8))] = -np.inf
        finite = vals[np.isfinite(vals)]
        got = _finite_median(vals.copy())
        med, m = K.finite_median(vals.copy())
        assert m == finite.size
        if m == 0:
            assert np.isnan(got)
            continue
        assert type(got) is np.float32 and got == med == np.float32(np.median(finite))
        work = vals.copy()
        assert K.compact_finite(work) == m and np.array_equal(work[:m], finite)
