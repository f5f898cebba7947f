"""Accuracy of collimator detection on the detector simulator's ground truth.

A randomised set of exposures (rectangles axis-aligned and rotated up to 20 degrees,
circles, fields clipped by the image edge, no collimation; every phantom; 55-120 kV,
0.5-40 mAs, 100-180 cm) on several panel formats: most frames on small panels (two
reduced-resolution CsI formats and the 1024x1024 dynamic panel) to keep the test fast, a
few on the full-size 35x43 and 43x43 panels. Each frame is offset/gain corrected with the
panel model's own maps (defect pixels filled from a 5x5 median) before detection.

Acceptance: IoU against ``truth.field_mask`` median >= 0.98 and >= 0.95 on 95 % of the
frames; every frame without collimation reported as ``"none"``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dios.devices.backends import PanelMode
from processing.collimator import detect_collimation
from simulators.frames import DetectorModel, random_collimation
from simulators.panels import PANELS

PARTS = ("chest", "skull", "hand", "abdomen", "pelvis", "spine", "default")

SMALL_MODES = (
    PanelMode("TEST_CSI_640x512", 640, 512, 0.55, 16, "reduced 35x28 cm CsI",
              counts_per_ugy=1000.0),
    PanelMode("TEST_CSI_768", 768, 768, 0.5, 16, "reduced 38x38 cm CsI",
              counts_per_ugy=1000.0),
    PANELS["FLUORO_1024"],
)
LARGE_MODES = (PANELS["CSI_3543"], PANELS["CSI_4343"])
N_SMALL = 204
N_LARGE_EACH = 3


def _corrected(model: DetectorModel, frame: np.ndarray, truth) -> np.ndarray:
    """Offset/gain correction with the model's maps; defects filled from a 5x5 median."""
    out = frame.astype(np.float32)
    out -= model.offset
    out /= np.maximum(model.gain, np.float32(0.05))
    med = cv2.medianBlur(out, 5)
    out[truth.defect_mask] = med[truth.defect_mask]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _run(model: DetectorModel, rng: np.random.Generator) -> tuple[str, str, float, float]:
    shape = model.shape
    col = random_collimation(rng, shape)
    part = PARTS[int(rng.integers(len(PARTS)))]
    kv = float(rng.uniform(55.0, 120.0))
    mas = float(np.exp(rng.uniform(np.log(0.5), np.log(40.0))))
    sid = float(rng.uniform(100.0, 180.0))
    frame, truth = model.exposure(kv, mas, sid, col, part, rng)
    res = detect_collimation(_corrected(model, frame, truth))
    label = f"{model.mode.name} {col.kind} {col.angle_deg:+.1f}deg {part} {kv:.0f}kV {mas:.2f}mAs"
    return label, res.kind, _iou(res.mask, truth.field_mask), float(col.kind == "none")


@pytest.mark.slow
def test_collimation_accuracy_on_simulated_frames():
    rng = np.random.default_rng(20260611)
    models = [DetectorModel(m, seed=7) for m in SMALL_MODES]
    rows = []
    for i in range(N_SMALL):
        rows.append(_run(models[i % len(models)], rng))
    for mode in LARGE_MODES:
        model = DetectorModel(mode, seed=7)
        for _ in range(N_LARGE_EACH):
            rows.append(_run(model, rng))

    ious = np.array([r[2] for r in rows])
    none_truth = np.array([r[3] for r in rows]) > 0
    kinds = np.array([r[1] for r in rows])
    frac95 = float(np.mean(ious >= 0.95))
    print(
        f"\ncollimation IoU over {len(rows)} frames: median {np.median(ious):.4f}, "
        f"mean {ious.mean():.4f}, 5th percentile {np.percentile(ious, 5):.4f}, "
        f"min {ious.min():.4f}, >= 0.95 on {100 * frac95:.1f} %; "
        f"no-collimation frames {int(none_truth.sum())}, reported none "
        f"{int((kinds[none_truth] == 'none').sum())}; false none "
        f"{int((kinds[~none_truth] == 'none').sum())}"
    )
    for label, kind, v, _ in rows:
        if v < 0.95:
            print(f"  low IoU {v:.3f}: {label} -> {kind}")

    assert len(rows) >= 200
    assert none_truth.sum() >= 10 and (~none_truth).sum() >= 150
    assert np.median(ious) >= 0.98
    assert frac95 >= 0.95
    assert (kinds[none_truth] == "none").all(), "a frame without collimation was not 'none'"
