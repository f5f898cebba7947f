"""Bench fixtures: simulated frames and calibration per panel size; the summary table.

The table is printed at the end of the session (``pytest_terminal_summary``) from the
``extra_info`` the benchmarks record; ``bench/report.py`` prints the same table from the
JSON written by ``--benchmark-json``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

#: (panel, phantom) per bench size.
SIZES = {
    "1024x1024": ("FLUORO_1024", "hand"),
    "2304x2800": ("CSI_3543", "chest"),
    "3072x3072": ("CSI_4343", "chest"),
    "4288x4288": ("CSI_4343_HR", "chest"),
}

_rows: list[dict] = []
_notes: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    (HERE / "results").mkdir(exist_ok=True)


class Scene:
    """One simulated exposure with its calibration, cached on disk for subprocess probes."""

    def __init__(self, size: str, tmp: Path) -> None:
        from processing.calibration import CalibrationMaps
        from processing.corrections import correct
        from simulators.frames import Collimation, DetectorModel
        from simulators.panels import PANELS

        panel, part = SIZES[size]
        mode = PANELS[panel]
        dm = DetectorModel(mode, seed=11)
        rng = np.random.default_rng(0)
        self.maps = CalibrationMaps.from_frames([dm.dark(rng) for _ in range(2)],
                                                [dm.flat(dm.flat_dose_ugy(), rng)
                                                 for _ in range(2)])
        flat = correct(dm.flat(dm.flat_dose_ugy(), rng), self.maps)
        self.counts_per_ugy = float(flat[16:-16, 16:-16].mean()) / dm.flat_dose_ugy()
        rows, cols = dm.shape
        coll = Collimation.rect(0.5 * cols, 0.52 * rows, 0.8 * cols, 0.82 * rows, 5.0)
        self.raw, self.truth = dm.exposure(75, 4.0, 180, coll, part, rng)
        self.size = size
        self.profile = "extremity" if part == "hand" else "chest"
        self.raw_path = tmp / f"{size}_raw.npy"
        self.maps_path = tmp / f"{size}_maps.npz"
        np.save(self.raw_path, self.raw)
        self.maps.save(self.maps_path)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    cache: dict[str, Scene] = {}

    def get(size: str) -> Scene:
        if size not in cache:
            cache.clear()  # keep one size in memory at a time
            cache[size] = Scene(size, tmp)
        return cache[size]

    return get


@pytest.fixture
def record_row():
    return _rows.append


@pytest.fixture
def bench_note():
    """Add a line to the summary printed at the end of the session (the RPC bench's
    figures: printing from a test is captured)."""
    return _notes.append


def format_table(rows: list[dict]) -> str:
    """The bench table (one row per size) as text."""
    head = ("size", "total ms", "max ms", "MP/s", "corr", "coll", "enh", "win", "out",
            "mixed ms", "floor ms", "x floor", "peer ms", "peer/ours", "peak x raw",
            "first frame s")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        s = r["stages_ms"]
        lines.append(" | ".join([
            r["size"], f"{r['total_ms']:.2f}", f"{r.get('total_max_ms', math.nan):.1f}",
            f"{r['mp_per_s']:.0f}",
            f"{s['corrections']:.1f}", f"{s['collimation']:.1f}", f"{s['enhancement']:.1f}",
            f"{s['window']:.1f}", f"{s['output']:.1f}",
            f"{r.get('mixed_ms', r['total_ms']):.2f}", f"{r['floor_ms']:.2f}",
            f"{r['ratio_floor']:.1f}", f"{r['peer_ms']:.0f}", f"{r['ratio_peer']:.1f}",
            f"{r['peak_extra_x_raw']:.2f}", f"{r['first_frame_s']:.2f}",
        ]))
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _rows:
        terminalreporter.section("DIOS pipeline bench (medians)")
        terminalreporter.write_line(format_table(sorted(_rows, key=lambda r: r["pixels"])))
    if _notes:
        terminalreporter.section("DIOS RPC bench")
        for line in _notes:
            terminalreporter.write_line(line)
