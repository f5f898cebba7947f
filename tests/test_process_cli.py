"""``dios process``: the pipeline on its own, from a raw frame file to DICOM + PNG."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from simulators.frames import Collimation, DetectorModel
from simulators.panels import PANELS
from tests.fixtures_dicom import assert_dciodvfy_clean


@pytest.fixture(scope="module")
def raw_frame():
    model = DetectorModel(PANELS["FLUORO_1024"], seed=3)
    rng = np.random.default_rng(1)
    coll = Collimation(kind="rect", center=(512, 500), width=700, height=820, angle_deg=0.0)
    frame, truth = model.exposure(70, 2.0, 115, coll, "chest", rng)
    return frame, truth


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dios.cli", "process", *args],
                          capture_output=True, text=True, timeout=300)


def test_process_npy_writes_valid_dicom_and_png(tmp_path, raw_frame, dciodvfy):
    frame, truth = raw_frame
    src = tmp_path / "raw.npy"
    np.save(src, frame)
    out = tmp_path / "out"
    proc = run(str(src), "--profile", "chest", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "collimation: rect" in proc.stdout
    dcm, png = out / "raw.dcm", out / "raw.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_dciodvfy_clean(dcm)
    ds = pydicom.dcmread(dcm)
    assert (ds.Rows, ds.Columns) == frame.shape and float(ds.WindowWidth) > 0


def test_process_raw_dicom(tmp_path, raw_frame):
    frame, _ = raw_frame
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1.1"  # DX for processing
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "DX", "RAW1", "Raw^Frame"
    ds.Rows, ds.Columns = frame.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.PixelData = frame.tobytes()
    src = tmp_path / "raw.dcm"
    ds.save_as(src, enforce_file_format=True)
    proc = run(str(src), "--profile", "chest", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "raw.dcm").is_file()


@pytest.mark.parametrize("make,needle", [
    (lambda p: np.save(p, np.zeros((4, 4, 3), np.uint16)), "2-D"),
    (lambda p: np.save(p, np.full((64, 64), 1.5, np.float32)), "uint16"),
    (lambda p: p.write_bytes(b"not an array"), "NumPy"),
    (lambda p: None, "no such file"),
])
def test_bad_input_is_a_clear_error(tmp_path, make, needle):
    src = tmp_path / "bad.npy"
    make(src)
    proc = run(str(src), "--out", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert "0x070001" in proc.stderr and needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "bad.dcm").exists()


def test_unknown_profile(tmp_path, raw_frame):
    src = tmp_path / "raw.npy"
    np.save(src, raw_frame[0])
    proc = run(str(src), "--profile", "nope", "--out", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "0x070002" in proc.stderr
