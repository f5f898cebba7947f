"""Calibration maps: offset/gain building, defect detection, atomic save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest

from processing.calibration import CalibrationMaps, build_gain, build_offset, find_defects
from processing.corrections import correct
from simulators.frames import DetectorModel
from simulators.panels import PANELS


def _panel(h: int = 512, w: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    off = rng.normal(1000, 20, (h, w))
    gain = rng.normal(1, 0.02, (h, w)) * np.linspace(0.85, 1.15, w)[None, :]
    truth = np.zeros((h, w), bool)
    gain[100, 200] = 0.2
    truth[100, 200] = True  # dead pixel
    off[300, 400] = 4000
    truth[300, 400] = True  # hot pixel
    gain[:, 250] *= 0.75
    truth[:, 250] = True  # weak column
    off[420, :] += 150
    truth[420, :] = True  # bright row
    return rng, off, gain, truth


def _frames(rng, off, gain, n, level):
    return [np.clip(off + gain * level + rng.normal(0, 5 + 0.01 * level, off.shape), 0, 65535)
            .astype(np.uint16) for _ in range(n)]


def test_offset_is_float32_mean_of_darks():
    rng = np.random.default_rng(1)
    darks = [rng.integers(900, 1100, (64, 48)).astype(np.uint16) for _ in range(5)]
    off = build_offset(darks)
    assert off.dtype == np.float32
    np.testing.assert_allclose(off, np.mean(np.stack(darks).astype(np.float64), axis=0),
                               rtol=0, atol=1e-3)


def test_gain_convention_flattens_flats_and_has_mean_one():
    rng, off, gain, _ = _panel()
    darks = _frames(rng, off, gain, 4, 0)
    flats = _frames(rng, off, gain, 4, 20000)
    o = build_offset(darks)
    g = build_gain(flats, o)
    assert g.dtype == np.float32
    assert abs(float(g.mean()) - 1.0) < 1e-4
    corrected = (np.mean(np.stack(flats), axis=0) - o) * g
    good = gain > 0.5
    # corrected = (raw - offset) * gain is flat: the 30 % gain ramp is gone
    cv = corrected[good].std() / corrected[good].mean()
    assert cv < 0.005
    assert abs(corrected[good].mean() - 20000 * gain[good].mean()) / 20000 < 0.02


def test_find_defects_pixels_and_lines_without_false_positives():
    rng, off, gain, truth = _panel()
    maps = CalibrationMaps.from_frames(_frames(rng, off, gain, 4, 0),
                                       _frames(rng, off, gain, 4, 20000))
    d = maps.defect
    assert d.dtype == bool
    assert d[truth].all()
    assert (d & ~truth).sum() <= 5


def test_find_defects_on_simulated_panel_with_chip_steps():
    mode = PANELS["FLUORO_1024"]
    dm = DetectorModel(mode, seed=3)
    rng = np.random.default_rng(0)
    darks = [dm.dark(rng) for _ in range(4)]
    flats = [dm.flat(dm.flat_dose_ugy(), rng) for _ in range(4)]
    maps = CalibrationMaps.from_frames(darks, flats)
    truth = dm.defect_mask
    assert maps.defect[truth].mean() > 0.99
    assert (maps.defect & ~truth).sum() < 1e-4 * truth.size
    # the gain map removes the chip steps and the heel: a corrected flat is uniform
    c = correct(dm.flat(dm.flat_dose_ugy(), rng), maps).astype(np.float64)
    prof = np.median(c[::4], axis=0)
    assert np.ptp(prof[8:-8]) / prof.mean() < 0.03


def test_find_defects_flags_nonfinite_and_checks_shapes():
    off = np.zeros((32, 32), np.float32)
    gain = np.ones((32, 32), np.float32)
    gain[3, 4] = np.nan
    assert find_defects(off, gain)[3, 4]
    with pytest.raises(ValueError):
        find_defects(off, gain[:10])


@pytest.mark.parametrize("bad", [[], [np.zeros((4,), np.uint16)],
                                 [np.zeros((8, 8)), np.zeros((8, 9))]])
def test_build_offset_rejects_bad_frames(bad):
    with pytest.raises(ValueError):
        build_offset(bad)


def test_build_gain_rejects_no_signal_and_nan():
    off = np.full((16, 16), 100, np.float32)
    with pytest.raises(ValueError, match="no signal"):
        build_gain([np.full((16, 16), 50, np.uint16)], off)
    f = np.full((16, 16), 500.0)
    f[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_gain([f], off)


def test_maps_save_load_roundtrip_atomic(tmp_path):
    rng = np.random.default_rng(2)
    maps = CalibrationMaps(rng.normal(100, 1, (40, 30)), rng.normal(1, 0.1, (40, 30)),
                           rng.random((40, 30)) > 0.9)
    path = tmp_path / "sub" / "cal.npz"
    maps.save(path)
    maps.save(path)  # overwrite in place
    assert [p.name for p in path.parent.iterdir()] == ["cal.npz"]  # no temp file left
    back = CalibrationMaps.load(path)
    np.testing.assert_array_equal(back.offset, maps.offset)
    np.testing.assert_array_equal(back.gain, maps.gain)
    np.testing.assert_array_equal(back.defect, maps.defect)
    assert back.offset.dtype == np.float32 and back.defect.dtype == bool


def test_maps_load_rejects_garbage_and_save_failure_leaves_old_file(tmp_path, monkeypatch):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        CalibrationMaps.load(bad)
    path = tmp_path / "cal.npz"
    CalibrationMaps.identity((8, 8)).save(path)
    before = path.read_bytes()

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        CalibrationMaps(np.ones((8, 8)), np.ones((8, 8)), np.zeros((8, 8), bool)).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "cal.npz"]


def test_maps_validate_shapes_and_values():
    with pytest.raises(ValueError):
        CalibrationMaps(np.zeros((4, 4)), np.ones((4, 5)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError):
        CalibrationMaps(np.full((4, 4), np.nan), np.ones((4, 4)), np.zeros((4, 4), bool))


def test_quantised_uniform_maps_give_no_false_defects():
    """Few integer darks on a very uniform panel make most offsets (and line medians)
    equal, so their MAD is 0: small steps must not become defects."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    gain = 1.0 + 0.05 * np.sin(xx / 9.0)  # smooth response (a heel-like pattern)
    darks = [rng.normal(100.0, 2.0, (64, 64)).astype(np.uint16) for _ in range(4)]
    flats = [rng.normal(100.0 + 2000.0 * gain, 20.0).astype(np.uint16) for _ in range(4)]
    assert not CalibrationMaps.from_frames(darks, flats).defect.any()
    darks = [np.full((64, 64), 100, np.uint16) for _ in range(2)]
    darks[0][5, 5] = 101  # half a count above the others in the mean
    flats = [np.full((64, 64), 2100, np.uint16) for _ in range(2)]
    assert not CalibrationMaps.from_frames(darks, flats).defect.any()
    darks[0][7, 9] = 140  # but a hot pixel still is one
    assert np.argwhere(CalibrationMaps.from_frames(darks, flats).defect).tolist() == [[7, 9]]


def test_dead_pixel_without_signal_is_a_defect():
    rng = np.random.default_rng(3)
    darks = [rng.normal(100.0, 2.0, (64, 64)).astype(np.uint16) for _ in range(4)]
    flats = [rng.normal(2100.0, 20.0, (64, 64)).astype(np.uint16) for _ in range(4)]
    for f in flats:
        f[10, 20] = 90  # no response at all: below its dark level
    maps = CalibrationMaps.from_frames(darks, flats)
    assert maps.gain[10, 20] == 0.0
    assert np.argwhere(maps.defect).tolist() == [[10, 20]]
    raw = np.full((64, 64), 1100, np.uint16)
    raw[10, 20] = 95
    out = correct(raw, maps)
    assert abs(int(out[10, 20]) - int(np.median(out))) <= 30  # interpolated, not black
