"""The main job: ``dios acquire`` runs one exposure end to end on the simulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.fixtures_dicom import assert_dciodvfy_clean


@pytest.fixture(scope="module")
def acquired(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "dios.cli", "acquire", "--clock-scale", "50",
         "--panel", "FLUORO_1024", "--data-dir", str(data), "--cal-frames", "4", "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, json.loads(proc.stdout), proc.stderr


def test_progress_is_visible(acquired):
    _, _, stderr = acquired
    for step in ("engine", "calibration", "study", "prepare", "expose", "process", "store",
                 "done"):
        assert f"] {step}" in stderr, f"no progress line for {step}:\n{stderr}"


def test_files_written_and_dicom_valid(acquired, dciodvfy):
    data, info, _ = acquired
    dcm, png = Path(info["dicom"]), Path(info["preview"])
    assert dcm.is_file() and png.is_file()
    assert dcm.is_relative_to(data) and png.is_relative_to(data)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_dciodvfy_clean(dcm)


def test_dicom_carries_the_real_run(acquired):
    _, info, _ = acquired
    ds = pydicom.dcmread(info["dicom"])
    d = info["delivered"]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    assert float(ds.KVP) == pytest.approx(d["kv"], abs=0.5)
    assert int(ds.Exposure) == round(d["mas"])
    assert ds.PatientID == "DEMO0001"
    assert [float(x) for x in ds.ImagerPixelSpacing] == pytest.approx([0.194, 0.194], abs=0.01)
    assert float(ds.WindowWidth) > 0
    assert float(ds.ExposureIndex) == pytest.approx(info["ei"], rel=1e-3)
    assert (ds.Rows, ds.Columns) == tuple(info["frame"]["shape"])


def test_summary_has_stage_timings(acquired):
    _, info, _ = acquired
    t = info["timings_ms"]
    for key in ("corrections", "collimation", "enhancement", "window", "output", "total"):
        assert t[f"pipeline.{key}"] >= 0
    assert info["collimation"]["kind"] in ("rect", "circle", "none")


def test_image_is_in_the_embedded_store(acquired):
    from dios.store import open_database

    data, info, _ = acquired
    assert info["study"]["expose_status"] == "Exposed"
    assert info["study"]["storage_status"] == "Saved"
    db = open_database(f"sqlite:///{data / 'dios.db'}")
    with db.transaction(readonly=True) as tx:
        row = tx.query_one("SELECT * FROM images WHERE sop_instance_id = ?",
                           (info["study"]["sop_instance_uid"],))
    assert row["expose_status"] == "Exposed"
    assert not Path(row["image_file_path"]).is_absolute()  # relative to the data directory
    assert (data / row["image_file_path"]).resolve() == Path(info["dicom"])


def test_second_run_reuses_calibration(acquired):
    data, _, _ = acquired
    proc = subprocess.run(
        [sys.executable, "-m", "dios.cli", "acquire", "--clock-scale", "50", "--panel",
         "FLUORO_1024", "--data-dir", str(data), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "using stored calibration" in proc.stderr


def test_bad_view_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dios.cli", "acquire", "--view", "View_NOPE", "--data-dir",
         str(tmp_path)], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1
    assert "0x050001" in proc.stderr and "Traceback" not in proc.stderr
