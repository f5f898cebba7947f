"""The DICOM file layer: DX writer (checked by the real dciodvfy), reader, PNG in/out, UIDs,
atomic writes."""

from __future__ import annotations

import ast
import datetime as dt
import io
import os
import struct
import zlib

import cv2
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from dios.atomic import atomic_open, atomic_write_bytes
from dios.codes import INVALID_FIELD, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA, DiosError
from dios.dicom import (
    DicomFieldError,
    DicomFieldTypeError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from dios.dicom.dx import (
    BODY_PARTS,
    DX_FOR_PRESENTATION,
    SECONDARY_CAPTURE,
    anatomic_region,
    write_dx,
)
from dios.dicom.modules import (
    ANIMAL_ONLY_FIELDS,
    IMAGE_FIELDS,
    PATIENT_FIELDS,
    SERIES_FIELDS,
    STUDY_FIELDS,
    DatasetBuilder,
    equipment_module,
    patient_module,
    sop_common_module,
    study_module,
)
from dios.dicom.png import (
    PNG_SIGNATURE,
    decode_png,
    png_to_dx,
    preview_png_bytes,
    window_to_uint8,
    write_preview_png,
)
from dios.dicom.reader import read_image
from dios.dicom.values import (
    age_value,
    bool_value,
    check_charset,
    code_item,
    cs_value,
    datetime_value,
    dict_value,
    format_ds,
    half_up,
    int_value,
    local_time,
    multi_value,
    number_value,
    rounded_int_value,
    tz_offset,
    uid_value,
    validate_element_values,
)
from dios.uids import MAX_ROOT_LENGTH, UidFactory, is_valid_uid
from tests.fixtures_dicom import assert_dciodvfy_clean, dciodvfy  # noqa: F401  (fixture)

ROOT = "1.2.826.0.1.3680043.10.1234"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _frame(rows: int, cols: int, bits: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 1 << bits, size=(rows, cols), dtype=np.uint32).astype(np.uint16)
    img[0, 0], img[-1, -1] = 0, (1 << bits) - 1  # the full range is used
    return img


def _human() -> dict:
    return {"patient_id": "PID-0001", "patient_name": "张^伟", "patient_sex": "M",
            "patient_dob": "1980-02-29", "patient_age": "45Y", "weight": 70, "length": 175,
            "thickness": 22, "patient_english_name": "Zhang^Wei", "comment": "术后复查",
            "pregnancy_status": 4, "patient_type": "Human"}


def _vet() -> dict:
    # The seed's veterinary example (000: register study), as a dog.
    return {"patient_id": "PET007", "patient_name": "Buddy (Dog)", "patient_sex": "M",
            "patient_dob": "2025-06-10T03:12:36.181739Z", "patient_age": "5Y", "weight": 25,
            "length": 60, "patient_type": "Dog", "owner_name": "Owner^One",
            "variety": "Golden Retriever", "sex_neutered": "ALTERED",
            "chip_number": "CHIP123456789", "is_anaesthesia": False, "is_sedation": True}


def _study(uids: UidFactory) -> dict:
    return {"study_instance_uid": uids.study(), "study_id": "2506251433393",
            "accession_number": "ACC0012345", "ref_physician": "Smith^John",
            "study_description": "胸部正位", "study_datetime": "2025-06-25T06:33:39.420606Z",
            "operator_name": "OP987"}


def _series(uids: UidFactory, body_part: str = "Human_CHEST", view: str = "PA") -> dict:
    return {"series_instance_uid": uids.series(), "series_number": 3, "body_part": body_part,
            "view_position": view, "protocol_name": "Chest PA"}


def _image(uids: UidFactory, laterality: str = "U") -> dict:
    return {"sop_instance_uid": uids.instance(), "instance_number": 1,
            "image_laterality": laterality, "derivation": "offset/gain corrected, enhanced"}


def _acq() -> dict:
    return {"kv": 125.0, "ma": 320.0, "ms": 12.5, "mas": 4.0, "dap": 0.42, "focus": 1,
            "sid": 1800, "ei": 312.0, "target_ei": 250.0, "aec": False,
            "acquisition_datetime": "2025-06-25T06:40:01Z"}


def _det(pitch: float = 0.139) -> dict:
    return {"detector_id": "FPD-01", "detector_type": "SCINTILLATOR", "pixel_pitch_mm": pitch,
            "manufacturer": "DIOS", "model": "SIM-4343", "serial_number": "SN42", "bits": 16,
            "binning": 1, "mode": "RAD"}


RECT = {"ShutterShape": "RECTANGULAR", "ShutterLeftVerticalEdge": 10,
        "ShutterRightVerticalEdge": 150, "ShutterUpperHorizontalEdge": 8,
        "ShutterLowerHorizontalEdge": 110, "ShutterPresentationValue": 0}
CIRCLE = {"ShutterShape": "CIRCULAR", "CenterOfCircularShutter": [60.4, 80.6],
          "RadiusOfCircularShutter": 55}
POLYGON = {"ShutterShape": "POLYGONAL",  # a rotated rectangle
           "VerticesOfThePolygonalShutter": [10, 40, 40, 150, 110, 120, 80, 10]}
COMBINED = {"ShutterShape": ["RECTANGULAR", "CIRCULAR"], **{k: v for k, v in RECT.items()
                                                            if k != "ShutterShape"},
            "CenterOfCircularShutter": (60, 80), "RadiusOfCircularShutter": 70}


def _write(path, pixels, bits, uids, **kw):
    args = {"patient": _human(), "study": _study(uids), "series": _series(uids),
            "image": _image(uids), "acquisition": _acq(), "detector": _det(),
            "window": (float(1 << (bits - 1)), float(1 << bits)), "uids": uids}
    args.update(kw)
    return write_dx(path, pixels, bits_stored=bits, **args)


def _no_leftovers(directory) -> list[str]:
    return sorted(os.listdir(directory))


# --------------------------------------------------------------------------------------------
# the writer, checked by dciodvfy and read back
# --------------------------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
@pytest.mark.parametrize("kind, bits, shutter", [
    ("human", 12, RECT), ("human", 16, CIRCLE), ("vet", 12, POLYGON), ("vet", 16, COMBINED),
    ("human", 14, None)])
def test_dx_is_dciodvfy_clean_and_round_trips(tmp_path, kind, bits, shutter):
    uids = UidFactory(ROOT)
    pixels = _frame(120, 160, bits, seed=bits)
    patient = _human() if kind == "human" else _vet()
    path = tmp_path / "img.dcm"
    ds = _write(path, pixels, bits, uids, patient=patient, shutter=shutter)
    output = assert_dciodvfy_clean(path)
    assert "DXImageForPresentation" in output

    back = read_image(path)
    assert back.pixels.dtype == np.uint16
    np.testing.assert_array_equal(back.pixels, pixels)
    m = back.meta
    assert m["sop_class_uid"] == DX_FOR_PRESENTATION
    assert m["sop_instance_uid"] == ds.SOPInstanceUID and is_valid_uid(ds.SOPInstanceUID)
    assert m["presentation_intent"] == "FOR PRESENTATION"
    assert m["bits_stored"] == bits and m["photometric"] == "MONOCHROME2"
    assert m["pixel_spacing_mm"] == pytest.approx((0.139, 0.139))
    assert m["window"] == (float(1 << (bits - 1)), float(1 << bits))
    assert m["kv"] == 125.0 and m["mas"] == pytest.approx(4.0)
    assert m["exposure_index"] == 312.0
    assert m["body_part"] == "CHEST"

    f = pydicom.dcmread(path)
    assert f.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert f.file_meta.MediaStorageSOPInstanceUID == f.SOPInstanceUID
    assert f.SOPInstanceUID.startswith(ROOT + ".3.")
    assert f.SpecificCharacterSet == "ISO_IR 192"
    assert str(f.PatientName) == patient["patient_name"]
    assert f.XRayTubeCurrent == 320 and f.ExposureTime == 13 and f.Exposure == 4
    assert f.ExposureInuAs == 4000 and float(f.ExposureTimeInuS) == 12500.0
    assert float(f.ImageAndFluoroscopyAreaDoseProduct) == pytest.approx(0.42)
    assert float(f.FocalSpots) == 1.2 and float(f.DistanceSourceToDetector) == 1800
    assert float(f.DeviationIndex) == pytest.approx(10 * np.log10(312 / 250), abs=1e-3)
    assert f.ExposureControlMode == "MANUAL"
    assert f.AnatomicRegionSequence[0].CodeValue == "51185008"
    assert f.AnatomicRegionSequence[0].CodingSchemeDesignator == "SCT"
    assert f.ViewPosition == "PA" and f.ViewCodeSequence[0].CodeValue == "272479007"
    assert f.DetectorType == "SCINTILLATOR" and f.DetectorID == "FPD-01"
    assert f.PatientAge == ("045Y" if kind == "human" else "005Y")
    assert f.StudyDate == "20250625" and f.TimezoneOffsetFromUTC
    if shutter is not None:
        shapes = shutter["ShutterShape"]
        assert list(np.atleast_1d(f.ShutterShape)) == list(np.atleast_1d(shapes))
    if "CIRCULAR" in np.atleast_1d(shutter["ShutterShape"] if shutter else []):
        assert [int(v) for v in f.CenterOfCircularShutter] in ([60, 81], [60, 80])
    if kind == "vet":
        assert f.PatientSpeciesDescription == "Dog"
        assert f.PatientSpeciesCodeSequence[0].CodeValue == "448771007"
        assert f.PatientBreedDescription == "Golden Retriever"
        assert f.PatientSexNeutered == "ALTERED"
        assert f.ResponsiblePerson == "Owner^One" and f.ResponsiblePersonRole == "OWNER"
        chip = f.OtherPatientIDsSequence[0]
        assert (chip.PatientID, chip.TypeOfPatientID) == ("CHIP123456789", "RFID")
        assert f.AnatomicalOrientationType == "QUADRUPED"
        assert f.PatientState == "SEDATED"
        assert f.PatientBirthDate == "20250610"
    else:
        assert f.PatientSex == "M" and f.PatientBirthDate == "19800229"
        assert float(f.PatientSize) == 1.75 and float(f.BodyPartThickness) == 220
        assert "PatientSpeciesDescription" not in f and f.PregnancyStatus == 4


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
def test_dx_8bit_minimal_and_full_size_16bit(tmp_path):
    uids = UidFactory(ROOT)
    small = np.arange(63, dtype=np.uint8).reshape(7, 9)  # odd number of bytes: padded
    path = tmp_path / "small.dcm"
    write_dx(path, small, bits_stored=8, patient={"patient_id": "P"}, study={}, series={},
             image={}, detector={"pixel_pitch_mm": 0.2}, uids=uids)
    assert_dciodvfy_clean(path)
    np.testing.assert_array_equal(read_image(path).pixels, small)
    assert read_image(path).meta["bits_allocated"] == 8

    big = _frame(2800, 2304, 16, seed=5)  # the 35 x 43 cm panel format
    path = tmp_path / "big.dcm"
    _write(path, big, 16, uids, window=None)
    assert_dciodvfy_clean(path)
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, big)
    assert back.meta["window"] == (32768.0, 65536.0)  # default: the full range


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
@pytest.mark.parametrize("body_part", sorted(BODY_PARTS) + ["Human_UPPER LIMB", "Dog_THORAX",
                                                            "cervical spine", "Bird_WING"])
def test_every_body_part_is_dciodvfy_clean(tmp_path, body_part):
    uids = UidFactory(ROOT)
    path = tmp_path / "bp.dcm"
    ds = _write(path, _frame(16, 16, 12), 12, uids,
                series=_series(uids, body_part=body_part, view="AP"), acquisition=None)
    assert_dciodvfy_clean(path)
    assert len(ds.AnatomicRegionSequence) == 1
    assert len(ds.BodyPartExamined) <= 16


def test_body_part_codes_are_real_snomed_concepts():
    from pydicom.sr._concepts_dict import concepts
    known = {value for entry in concepts["SCT"].values() for value in entry}
    for key, (examined, code, meaning) in BODY_PARTS.items():
        assert code in known, (key, code, meaning)
        assert examined == examined.upper() and len(examined) <= 16
    assert anatomic_region("Human_CHEST") == ("CHEST", ("51185008", "SCT", "Chest"))
    assert anatomic_region("Dog_THORAX")[1][0] == "51185008"
    assert anatomic_region("Human_UPPER LIMB")[1][0] == "53120007"
    assert anatomic_region("Human_SKULL")[1][0] == "89546000"
    assert anatomic_region("cervical spine")[0] == "CSPINE"
    assert anatomic_region("Bird_WING") == ("WING", ("WING", "99DIOS", "Wing"))


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
def test_patient_sex_u_is_written_empty_because_dciodvfy_rejects_u(tmp_path):
    uids = UidFactory(ROOT)
    path = tmp_path / "u.dcm"
    ds = _write(path, _frame(8, 8, 12), 12, uids, patient={**_human(), "patient_sex": "u"})
    assert ds.PatientSex == ""
    assert_dciodvfy_clean(path)
    # The evidence for the choice: the literal U fails the real verifier.
    bad = tmp_path / "literal_u.dcm"
    _write(bad, _frame(8, 8, 12), 12, uids, extra={"PatientSex": "U"})
    with pytest.raises(AssertionError, match="Patient's Sex"):
        assert_dciodvfy_clean(bad)


def test_ascii_only_has_no_character_set_and_binning_scales_spacing(tmp_path):
    uids = UidFactory(ROOT)
    patient = {"patient_id": "A1", "patient_name": "Doe^Jane", "patient_sex": "F"}
    study = {**_study(uids), "study_description": "Chest"}
    det = {**_det(0.1), "binning": 2}
    ds = _write(tmp_path / "a.dcm", _frame(8, 8, 12), 12, uids, patient=patient, study=study,
                detector=det)
    assert "SpecificCharacterSet" not in ds
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.2, 0.2]
    assert [float(v) for v in ds.DetectorElementSpacing] == [0.1, 0.1]


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
def test_latin1_character_set_when_the_study_asks_for_it(tmp_path):
    uids = UidFactory(ROOT)
    patient = {"patient_id": "B2", "patient_name": "Müller^Jürgen", "patient_sex": "M"}
    study = {**_study(uids), "study_description": "Thorax", "specific_character_set":
             "ISO_IR 100"}
    path = tmp_path / "latin1.dcm"
    _write(path, _frame(8, 8, 12), 12, uids, patient=patient, study=study)
    assert_dciodvfy_clean(path)
    back = pydicom.dcmread(path)
    assert back.SpecificCharacterSet == "ISO_IR 100"
    assert str(back.PatientName) == "Müller^Jürgen"
    assert b"M\xfcller" in path.read_bytes()  # really Latin-1 on disk


def test_missing_uids_are_generated_only_with_a_factory(tmp_path):
    pixels = _frame(8, 8, 12)
    common = {"patient": _human(), "study": {}, "series": {}, "image": {},
              "detector": _det()}
    ds = write_dx(tmp_path / "g.dcm", pixels, bits_stored=12, uids=UidFactory(ROOT), **common)
    assert ds.StudyInstanceUID.startswith(ROOT + ".1.")
    assert ds.SeriesInstanceUID.startswith(ROOT + ".2.")
    with pytest.raises(DicomFieldError, match="study.study_instance_uid"):
        write_dx(tmp_path / "n.dcm", pixels, bits_stored=12, **common)
    assert not (tmp_path / "n.dcm").exists()


# --------------------------------------------------------------------------------------------
# bad input: a clear error naming the field, and no file
# --------------------------------------------------------------------------------------------


def _bad_cases():
    u = UidFactory(ROOT)
    good = _frame(8, 8, 12)
    return [
        ("pixels", {"pixels": good.astype(np.float32)}, "dtype", DicomFieldError),
        ("pixels", {"pixels": good.astype(np.int16)}, "dtype", DicomFieldError),
        ("pixels", {"pixels": np.zeros((2, 3, 3), np.uint16)}, "2-D", DicomFieldError),
        ("pixels", {"pixels": np.zeros((0, 5), np.uint16)}, "empty", DicomFieldError),
        ("pixels", {"pixels": [[1, 2], [3, 4]]}, "numpy", DicomFieldTypeError),
        ("pixels", {"pixels": np.full((4, 4), 4096, np.uint16)}, "does not fit",
         DicomFieldError),
        ("bits_stored", {"bits_stored": 17}, "outside", DicomFieldError),
        ("bits_stored", {"bits_stored": 12.0}, "int", DicomFieldTypeError),
        ("patient", {"patient": ["not", "a", "dict"]}, "dict", DicomFieldTypeError),
        ("patient", {"patient": {**_human(), "nmae": "typo"}}, "unknown key", DicomFieldError),
        ("patient.patient_sex", {"patient": {**_human(), "patient_sex": "X"}}, "M, F, O, U",
         DicomFieldError),
        ("patient.patient_sex", {"patient": {**_human(), "patient_sex": 1}}, "text",
         DicomFieldTypeError),
        ("patient.patient_dob", {"patient": {**_human(), "patient_dob": "31/02/1980"}},
         "not a date", DicomFieldError),
        ("patient.patient_age", {"patient": {**_human(), "patient_age": "5 years"}},
         "not an age", DicomFieldError),
        ("patient.weight", {"patient": {**_human(), "weight": -3}}, "below", DicomFieldError),
        ("patient.weight", {"patient": {**_human(), "weight": "heavy"}}, "not a number",
         DicomFieldError),
        ("patient.owner_name", {"patient": {**_human(), "owner_name": "Someone"}},
         "animal patients only", DicomFieldError),
        ("patient.sex_neutered", {"patient": {**_vet(), "sex_neutered": "MAYBE"}}, "ALTERED",
         DicomFieldError),
        ("patient.pregnancy_status", {"patient": {**_human(), "pregnancy_status": 7}},
         "maximum", DicomFieldError),
        ("patient.patient_id", {"patient": {**_human(), "patient_id": "A\\B"}}, "backslash",
         DicomFieldError),
        ("patient.patient_id", {"patient": {**_human(), "patient_id": "X" * 65}},
         "PatientID", DicomFieldError),
        ("study.study_instance_uid", {"study": {**_study(u), "study_instance_uid": "1.02.3"}},
         "leading zero", DicomFieldError),
        ("study.study_instance_uid", {"study": {**_study(u), "study_instance_uid": "abc"}},
         "digits", DicomFieldError),
        ("study.study_id", {"study": {**_study(u), "study_id": "ST-20250625143339389"}},
         "exceeds the maximum length", DicomFieldError),
        ("series.series_instance_uid", {"series": {**_series(u), "series_instance_uid":
                                                   "1." + "2" * 70}}, "maximum",
         DicomFieldError),
        ("series.view_position", {"series": {**_series(u), "view_position": "A-P"}},
         "letters, digits", DicomFieldError),
        ("series.modality", {"series": {**_series(u), "modality": "CR"}}, "Modality DX",
         DicomFieldError),
        ("image.sop_instance_uid", {"image": {**_image(u), "sop_instance_uid": "1.2."}},
         "empty component", DicomFieldError),
        ("image.image_laterality", {"image": _image(u, laterality="X")}, "R, L, U, B",
         DicomFieldError),
        ("image.image_type", {"image": {**_image(u), "image_type": "ORIGINAL"}},
         "PRIMARY or SECONDARY", DicomFieldError),
        ("image.patient_orientation", {"image": {**_image(u), "patient_orientation": "L"}},
         "two directions", DicomFieldError),
        ("acquisition.kv", {"acquisition": {**_acq(), "kv": float("nan")}}, "finite",
         DicomFieldError),
        ("acquisition.kv", {"acquisition": {**_acq(), "kv": 0}}, "greater than",
         DicomFieldError),
        ("acquisition", {"acquisition": {**_acq(), "kvp": 70}}, "unknown key", DicomFieldError),
        ("acquisition", {"acquisition": "70kV"}, "dict", DicomFieldTypeError),
        ("detector.pixel_pitch_mm", {"detector": {**_det(), "pixel_pitch_mm": None}},
         "Type 1", DicomFieldError),
        ("detector.detector_type", {"detector": {**_det(), "detector_type": "CMOS"}},
         "one of", DicomFieldError),
        ("window.width", {"window": (2048, 0)}, "below", DicomFieldError),
        ("window", {"window": 2048}, "pair", DicomFieldTypeError),
        ("shutter.ShutterShape", {"shutter": {"ShutterShape": "TRIANGLE"}}, "at most once",
         DicomFieldError),
        ("shutter.RadiusOfCircularShutter", {"shutter": {"ShutterShape": "CIRCULAR",
                                                         "CenterOfCircularShutter": (5, 5)}},
         "required", DicomFieldError),
        ("shutter.ShutterLeftVerticalEdge", {"shutter": {**RECT, "ShutterLeftVerticalEdge": 200}},
         "left of", DicomFieldError),
        ("shutter.VerticesOfThePolygonalShutter", {"shutter": {
            "ShutterShape": "POLYGONAL", "VerticesOfThePolygonalShutter": [1, 1, 5, 5]}},
         "at least 3", DicomFieldError),
        ("shutter.CenterOfCircularShutter", {"shutter": {**RECT, "CenterOfCircularShutter":
                                                         (1, 1)}}, "no CIRCULAR",
         DicomFieldError),
        ("extra", {"extra": {"NotAKeyword": 1}}, "not a DICOM keyword", DicomFieldError),
        ("extra.PixelData", {"extra": {"PixelData": b"x"}}, "cannot be overridden",
         DicomFieldError),
        ("extra.InstitutionName", {"extra": {"InstitutionName": "x" * 80}}, "exceeds",
         DicomFieldError),
        ("uids", {"uids": "1.2.3"}, "UidFactory", DicomFieldTypeError),
        ("study.specific_character_set", {"study": {**_study(u), "specific_character_set":
                                                    "GB18030"}}, "one of", DicomFieldError),
        ("patient.patient_name", {"study": {**_study(u), "study_description": "",
                                            "specific_character_set": "ISO_IR 100"}},
         "character set ISO_IR 100", DicomFieldError),
    ]


@pytest.mark.parametrize("field, change, message, exc", _bad_cases(),
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(_bad_cases())])
def test_bad_input_names_the_field_and_writes_nothing(tmp_path, field, change, message, exc):
    uids = UidFactory(ROOT)
    args = {"pixels": _frame(8, 8, 12), "bits_stored": 12, "patient": _human(),
            "study": _study(uids), "series": _series(uids), "image": _image(uids),
            "acquisition": _acq(), "detector": _det(), "uids": uids}
    args.update(change)
    path = tmp_path / "out.dcm"
    pixels = args.pop("pixels")
    with pytest.raises(exc, match=message) as info:
        write_dx(path, pixels, **args)
    err = info.value
    assert err.field == field
    assert isinstance(err, DiosError) and err.code is INVALID_FIELD
    assert field in str(err)
    assert _no_leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def test_writer_failing_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    uids = UidFactory(ROOT)
    path = tmp_path / "img.dcm"
    _write(path, _frame(16, 16, 12, seed=1), 12, uids)
    before = path.read_bytes()

    def half_then_fail(self, fp, **kwargs):
        fp.write(b"\x00" * 128 + b"DICM" + b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pydicom.Dataset, "save_as", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _write(path, _frame(16, 16, 12, seed=2), 12, uids)
    assert path.read_bytes() == before  # the old file is intact
    assert _no_leftovers(tmp_path) == ["img.dcm"]  # no temporary file left behind
    with pytest.raises(OSError):
        _write(tmp_path / "new.dcm", _frame(16, 16, 12), 12, uids)
    assert _no_leftovers(tmp_path) == ["img.dcm"]


def test_atomic_helpers(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(RuntimeError), atomic_open(target) as fh:
        fh.write(b"three-partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"two" and _no_leftovers(tmp_path) == ["f.bin"]
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing" / "f.bin", b"x")
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "text")  # type: ignore[arg-type]
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)  # patient data: owner only by default


# --------------------------------------------------------------------------------------------
# UIDs
# --------------------------------------------------------------------------------------------


def test_uid_factory_makes_10k_valid_unique_uids():
    for root in (ROOT, "2.25", "1.2.3.", "9" + ".9" * 20):
        factory = UidFactory(root)
        made = [factory.study() for _ in range(3000)] + [factory.series() for _ in range(3000)]
        made += [factory.instance() for _ in range(4000)]
        assert len(set(made)) == 10_000
        assert all(is_valid_uid(u) and len(u) <= 64 for u in made)
        base = root.rstrip(".")
        assert all(u.startswith(base + ".") for u in made)
    uuid_uid = UidFactory("2.25").instance()
    assert uuid_uid.count(".") == 2 and int(uuid_uid.split(".")[2]) < 2**128


@pytest.mark.parametrize("root, message", [
    ("", "empty"), ("1..2", "empty component"), ("1.02", "leading zero"),
    ("1.2.a", "digits"), (".1.2", "empty component"), ("1.2.3 4", "digits"),
    ("1." + "1" * (MAX_ROOT_LENGTH), "at most"), ("١.٢", "digits")])
def test_uid_root_validation(root, message):
    with pytest.raises(ValueError, match=message):
        UidFactory(root)


def test_is_valid_uid():
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.1.1")
    assert is_valid_uid("0.0") and is_valid_uid("2.25.0")
    for bad in ("", "1.", ".1", "1..2", "01.2", "1.2.x", "1.2 ", "1" * 65, None, 1.2, "1.-2"):
        assert not is_valid_uid(bad), bad
    with pytest.raises(TypeError):
        UidFactory(123)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# the reader
# --------------------------------------------------------------------------------------------


def _raw_ds(pixels: np.ndarray, **attrs) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    ds.file_meta.MediaStorageSOPInstanceUID = UidFactory(ROOT).instance()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = ["0.1", "0.2"]
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def _save(ds: Dataset, path) -> bytes:
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_reader_cr_monochrome1_masking_and_sources(tmp_path):
    pixels = _frame(20, 30, 12, seed=3)
    dirty = pixels | 0xF000  # garbage above BitsStored must be ignored
    path = tmp_path / "cr.dcm"
    data = _save(_raw_ds(dirty, PhotometricInterpretation="MONOCHROME1", WindowCenter="1000",
                         WindowWidth="500"), path)
    img = read_image(path)
    np.testing.assert_array_equal(img.pixels, 4095 - pixels)
    assert img.meta["inverted"] and img.meta["photometric"] == "MONOCHROME2"
    assert img.meta["window"] == (3095.0, 500.0)
    assert img.meta["pixel_spacing_mm"] == (0.1, 0.2) and img.meta["modality"] == "CR"
    assert "PixelData" not in img.dataset
    raw = read_image(io.BytesIO(data), to_monochrome2=False)
    np.testing.assert_array_equal(raw.pixels, pixels)
    np.testing.assert_array_equal(read_image(data).pixels, 4095 - pixels)


def test_reader_rejects_what_it_cannot_take(tmp_path):
    px = _frame(4, 4, 12)
    cases = {}
    cases["not dicom"] = (b"hello, not a DICOM file" * 10, "not a DICOM file")
    good = _save(_raw_ds(px), tmp_path / "g.dcm")
    cases["truncated"] = (good[:-10], "truncated")
    cases["header only"] = (good[:140], "truncated|corrupt|not a DICOM|no pixel data")

    jpeg = _raw_ds(px)
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    jpeg.BitsAllocated, jpeg.BitsStored, jpeg.HighBit = 8, 8, 7
    jpeg.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    jpeg["PixelData"].VR = "OB"
    cases["compressed"] = (_save(jpeg, tmp_path / "j.dcm"), "compressed transfer syntax JPEG")

    multi = _raw_ds(np.concatenate([px, px]))
    multi.Rows, multi.NumberOfFrames = 4, 2
    cases["multi-frame"] = (_save(multi, tmp_path / "m.dcm"), "multi-frame")

    rgb = _raw_ds(px, PhotometricInterpretation="RGB", SamplesPerPixel=3)
    cases["colour"] = (_save(rgb, tmp_path / "c.dcm"), "colour")

    nopix = _raw_ds(px)
    del nopix.PixelData
    cases["no pixels"] = (_save(nopix, tmp_path / "n.dcm"), "no pixel data")

    signed = _raw_ds(px, PixelRepresentation=1)
    cases["signed"] = (_save(signed, tmp_path / "s.dcm"), "signed")

    for name, (data, message) in cases.items():
        with pytest.raises(UnsupportedImageError, match=message) as info:
            read_image(data)
        assert info.value.code is UNSUPPORTED_MEDIA, name
    with pytest.raises(ImageTooLargeError):
        read_image(good, max_bytes=100)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "nope.dcm")
    with pytest.raises(TypeError):
        read_image(12345)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# PNG previews and uploads
# --------------------------------------------------------------------------------------------


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _reference_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out per pixel (the LUT must match it)."""
    out = np.empty(x.shape, np.float64)
    xf = x.astype(np.float64)
    low = xf <= center - 0.5 - (width - 1) / 2
    high = xf > center - 0.5 + (width - 1) / 2
    mid = ~(low | high)
    out[low], out[high] = 0, 255
    out[mid] = ((xf[mid] - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(out).astype(np.uint8)


def test_window_lut_matches_the_dicom_formula_and_preview_decodes(tmp_path):
    img = _frame(64, 96, 14, seed=9)
    for center, width in ((8192, 16384), (3000, 1000), (100.5, 2)):
        np.testing.assert_array_equal(window_to_uint8(img, (center, width)),
                                      _reference_window(img, center, width))
    assert window_to_uint8(img, (5000, 1)).max() == 255
    data = preview_png_bytes(img, window=(8192, 16384))
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, _reference_window(img, 8192, 16384))
    shape = write_preview_png(tmp_path / "p.png", img, window=(8192, 16384), max_side=48)
    assert shape == (32, 48)
    assert cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED).shape == (32, 48)
    inv = window_to_uint8(img, (8192, 16384), invert=True)
    np.testing.assert_array_equal(inv, 255 - _reference_window(img, 8192, 16384))
    with pytest.raises(DicomFieldError, match="width"):
        window_to_uint8(img, (100, 0))
    with pytest.raises(DicomFieldError, match="dtype"):
        window_to_uint8(img.astype(np.float32), (100, 10))


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
def test_png_upload_grey_16_bit_is_kept_exactly(tmp_path):
    uids = UidFactory(ROOT)
    grey16 = _frame(40, 50, 16, seed=11)
    path = tmp_path / "up.dcm"
    ds = png_to_dx(_png(grey16), path, patient=_human(), study=_study(uids),
                   series=_series(uids), image={"instance_number": 2}, uids=uids)
    assert_dciodvfy_clean(path)
    assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.ConversionType == "WSD"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.Modality == "DX"
    assert ds.SOPInstanceUID.startswith(ROOT + ".3.")
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, grey16)
    assert back.meta["bits_stored"] == 16


@pytest.mark.peer
@pytest.mark.usefixtures("dciodvfy")
def test_png_upload_8_bit_rgb_palette_and_alpha_become_grey(tmp_path):
    uids = UidFactory(ROOT)
    rng = np.random.default_rng(4)
    bgr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    grey, bits = decode_png(_png(bgr))
    assert bits == 8 and grey.dtype == np.uint8
    expect = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(int)
    assert np.abs(grey.astype(int) - expect).max() <= 1
    rgb16 = rng.integers(0, 65536, (30, 40, 3), dtype=np.uint16)
    grey16, bits16 = decode_png(_png(rgb16))
    assert bits16 == 16 and grey16.dtype == np.uint16
    assert np.abs(grey16.astype(int) - cv2.cvtColor(rgb16, cv2.COLOR_BGR2GRAY)).max() <= 1
    bio = io.BytesIO()
    Image.fromarray(bgr[..., ::-1]).convert("P").save(bio, "PNG")
    bio_la = io.BytesIO()
    Image.fromarray(bgr[..., 0]).convert("LA").save(bio_la, "PNG")
    for name, data in (("rgb", _png(bgr)), ("rgba", _png(np.dstack([bgr, bgr[..., :1]]))),
                       ("palette", bio.getvalue()), ("grey_alpha", bio_la.getvalue()),
                       ("grey8", _png(bgr[..., 1]))):
        path = tmp_path / f"{name}.dcm"
        png_to_dx(data, path, patient=_vet(), study=_study(uids), series=_series(uids),
                  uids=uids)
        assert_dciodvfy_clean(path)
        assert read_image(path).pixels.shape == (30, 40)
    np.testing.assert_array_equal(read_image(tmp_path / "grey_alpha.dcm").pixels, bgr[..., 0])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_ihdr(width: int, height: int, *, depth: int = 8, interlace: int = 0,
               raw: bytes = b"\x00" * 10) -> bytes:
    """A hand-made grey PNG: IHDR as given, one IDAT holding ``raw`` (filtered scanlines)."""
    body = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, interlace)
    return (PNG_SIGNATURE + _chunk(b"IHDR", body) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def test_interlaced_png_is_decoded_exactly():
    img = _frame(7, 13, 8, seed=2).astype(np.uint8)  # odd sizes: some Adam7 passes are empty
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = img[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    grey, bits = decode_png(_with_ihdr(13, 7, interlace=1, raw=raw))
    assert bits == 8
    np.testing.assert_array_equal(grey, img)
    with pytest.raises(UnsupportedImageError, match="truncated"):
        decode_png(_with_ihdr(13, 7, interlace=1, raw=raw[:-3]))


def test_png_upload_rejects_bad_bytes_with_codes_and_writes_nothing(tmp_path):
    uids = UidFactory(ROOT)
    good = _png(_frame(60, 80, 8).astype(np.uint8))
    corrupt = bytearray(good)
    corrupt[40] ^= 0xFF  # inside the first IDAT: its CRC no longer matches
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes()
    cases = [
        (b"", UnsupportedImageError, "empty", {}),
        (b"GIF89a" + b"\x00" * 100, UnsupportedImageError, "signature", {}),
        (jpeg, UnsupportedImageError, "signature", {}),
        (good[: len(good) // 2], UnsupportedImageError, "truncated", {}),
        (good[:-12], UnsupportedImageError, "truncated", {}),
        (bytes(corrupt), UnsupportedImageError, "CRC", {}),
        (good, ImageTooLargeError, "limit", {"max_bytes": 100}),
        (good, ImageTooLargeError, "pixels", {"max_pixels": 60 * 80 - 1}),
        (_with_ihdr(100_000, 100_000), ImageTooLargeError, "pixels", {}),
        (_with_ihdr(0, 10), UnsupportedImageError, "invalid", {}),
        (_with_ihdr(4, 4), UnsupportedImageError, r"truncated \(image data holds 10 of 20", {}),
        (_with_ihdr(4, 4, depth=3), UnsupportedImageError, "header is invalid", {}),
    ]
    for data, exc, message, limits in cases:
        with pytest.raises(exc, match=message) as info:
            png_to_dx(data, tmp_path / "x.dcm", patient=_human(), study=_study(uids),
                      series=_series(uids), uids=uids, **limits)
        expected = PAYLOAD_TOO_LARGE if exc is ImageTooLargeError else UNSUPPORTED_MEDIA
        assert info.value.code is expected
        assert isinstance(info.value, ValueError)
    with pytest.raises(DicomFieldTypeError):
        decode_png("not bytes")  # type: ignore[arg-type]
    with pytest.raises(DicomFieldError, match="patient.patient_sex"):
        png_to_dx(good, tmp_path / "x.dcm", patient={**_human(), "patient_sex": "Q"},
                  study=_study(uids), series=_series(uids), uids=uids)
    assert _no_leftovers(tmp_path) == []


def test_console_study_id_maps_onto_dicom_study_id(tmp_path):
    """The console's 17-digit ids become StudyID (SH, 16 chars) without the century."""
    from dios.dicom.dx import dicom_study_id

    assert dicom_study_id("20250625143339389") == "250625143339389"
    assert dicom_study_id("2506251433393") == "2506251433393"
    u = UidFactory("2.25")
    ds = write_dx(tmp_path / "s.dcm", np.zeros((8, 8), np.uint16), bits_stored=12,
                  patient=_human(), study={**_study(u), "study_id": "20250625143339389"},
                  series=_series(u), image=_image(u), detector=_det())
    assert ds.StudyID == "250625143339389"


# --------------------------------------------------------------------------------------------
# the levels on their own: values and the reusable modules, without the DX writer
# --------------------------------------------------------------------------------------------


def test_date_time_values_offsets_and_rounding():
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    nst = dt.timezone(-dt.timedelta(hours=3, minutes=30))
    assert tz_offset(dt.datetime(2025, 6, 25, 12, tzinfo=ist)) == "+0530"
    assert tz_offset(dt.datetime(2025, 1, 5, 12, tzinfo=nst)) == "-0330"
    assert tz_offset(dt.datetime(2025, 6, 25, 12, tzinfo=dt.UTC)) == "+0000"
    assert tz_offset(dt.datetime(2025, 6, 25, 12)) == ""  # naive: no offset written

    assert datetime_value("20250625", "f") == dt.datetime(2025, 6, 25)
    assert datetime_value("20250625143339.389", "f") == dt.datetime(2025, 6, 25, 14, 33, 39)
    utc = datetime_value("2025-06-25T06:33:39Z", "f")
    assert utc == dt.datetime(2025, 6, 25, 6, 33, 39, tzinfo=dt.UTC)
    assert datetime_value(dt.date(2024, 2, 29), "f") == dt.datetime(2024, 2, 29)
    assert datetime_value("", "f") is None and datetime_value(None, "f") is None
    with pytest.raises(DicomFieldError, match="not a date") as info:
        datetime_value("25/06/2025", "study.study_datetime")
    assert info.value.field == "study.study_datetime"
    with pytest.raises(DicomFieldTypeError):
        datetime_value(20250625, "f")

    naive = dt.datetime(2025, 6, 25, 8, 0)
    assert local_time(naive) is naive  # naive is taken as already local
    local = local_time(utc)
    assert local == utc and local.utcoffset() == dt.datetime.now().astimezone().utcoffset()

    assert [half_up(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 2.49)] == [1, 2, 3, 0, -2, 2]
    assert rounded_int_value("2.5", "f") == 3  # not round()'s banker's 2
    with pytest.raises(DicomFieldError, match="required"):
        rounded_int_value(None, "shutter.RadiusOfCircularShutter")
    with pytest.raises(DicomFieldError, match="not a number"):
        rounded_int_value("", "shutter.RadiusOfCircularShutter")
    third = format_ds(1 / 3)
    assert len(third) <= 16 and float(third) == pytest.approx(1 / 3, rel=1e-12)
    assert format_ds(1e-20) and len(format_ds(-123456789.123456789)) <= 16


def test_text_number_and_code_string_converters():
    assert [age_value(v, "f") for v in ("5Y", "18m", " 3 w ", 7, "120D", "", None)] == [
        "005Y", "018M", "003W", "007Y", "120D", "", ""]
    for bad in ("1000Y", "5 years", "-1Y"):
        with pytest.raises(DicomFieldError, match="not an age"):
            age_value(bad, "patient.patient_age")
    with pytest.raises(DicomFieldTypeError):
        age_value(True, "patient.patient_age")

    assert cs_value(" portable ", "f") == "PORTABLE"
    with pytest.raises(DicomFieldError, match="letters, digits"):
        cs_value("A-P", "series.view_position")
    with pytest.raises(DicomFieldError, match="longer than 4"):
        cs_value("ABCDE", "f", max_len=4)

    assert multi_value("A\\ B", "f") == ["A", "B"]
    assert multi_value(("L", "F"), "f") == ["L", "F"]
    with pytest.raises(DicomFieldError, match="backslash"):
        multi_value(["A\\B"], "f")  # a list item is one value: no separator inside
    with pytest.raises(DicomFieldTypeError):
        multi_value({"a": 1}, "f")

    assert [bool_value(v, "f") for v in (True, 0, 1, "TRUE", " false ", "1", "")] == [
        True, False, True, True, False, True, False]
    for bad in (2, "yes", None):
        with pytest.raises(DicomFieldError, match="not a boolean"):
            bool_value(bad, "acquisition.aec")

    assert number_value("1.5", "f") == 1.5 and number_value(" ", "f") is None
    with pytest.raises(DicomFieldError, match="required"):
        number_value(None, "f", optional=False)
    with pytest.raises(DicomFieldError, match="greater than 0"):
        number_value(0, "acquisition.kv", strict_low=True)
    with pytest.raises(DicomFieldTypeError, match="bool"):
        number_value(True, "f")
    assert int_value("12", "f", low=0) == 12 and int_value(np.int64(3), "f") == 3
    with pytest.raises(DicomFieldTypeError):
        int_value(1.0, "series.series_number")
    with pytest.raises(DicomFieldError, match="not an integer"):
        int_value("1.5", "series.series_number")

    factory = UidFactory(ROOT)
    assert uid_value("", "study.study_instance_uid", factory, "study").startswith(ROOT + ".1.")
    assert uid_value("1.2.3", "f", None, "study") == "1.2.3"
    with pytest.raises(DicomFieldError, match="pass uids="):
        uid_value(None, "series.series_instance_uid", None, "series")

    assert dict_value(None, "acquisition", {"kv"}, required=False) == {}
    with pytest.raises(DicomFieldError, match=r"unknown key\(s\) \['kvp'\]; allowed: \['kv'\]"):
        dict_value({"kvp": 70}, "acquisition", frozenset({"kv"}), required=False)
    with pytest.raises(DicomFieldTypeError, match="required"):
        dict_value(None, "patient", PATIENT_FIELDS, required=True)


def test_code_items_charset_and_vr_checks_name_the_input_field():
    item = code_item("51185008", "SCT", "Chest")
    assert (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning) == (
        "51185008", "SCT", "Chest")

    b = DatasetBuilder()
    b.set("PatientName", "Doe^Jane", "patient.patient_name")
    check_charset(b.ds, b.source)
    assert "SpecificCharacterSet" not in b.ds  # ASCII only: none written
    b.set("PatientName", "Müller^Jürgen", "patient.patient_name")
    check_charset(b.ds, b.source)
    assert b.ds.SpecificCharacterSet == "ISO_IR 192"  # chosen for non-ASCII text

    b = DatasetBuilder()
    b.set("SpecificCharacterSet", "ISO_IR 100", "study.specific_character_set")
    b.set("PatientName", "Müller^Jürgen", "patient.patient_name")
    check_charset(b.ds, b.source)  # Latin-1 holds it
    b.set("AnatomicRegionSequence", [code_item("X", "99DIOS", "张")], "series.body_part")
    with pytest.raises(DicomFieldError, match="character set ISO_IR 100") as info:
        check_charset(b.ds, b.source)
    assert info.value.field == "series.body_part[0].CodeMeaning"

    b = DatasetBuilder()
    b.set("PatientID", "X" * 65, "patient.patient_id")
    with pytest.raises(DicomFieldError, match="PatientID") as info:
        validate_element_values(b.ds, b.source)
    assert info.value.field == "patient.patient_id"
    b = DatasetBuilder()
    b.set("StudyInstanceUID", ["1.2.3", "1.2.4"], "study.study_instance_uid")
    with pytest.raises(DicomFieldError, match="takes one value"):
        validate_element_values(b.ds, b.source)


def test_reusable_modules_build_patient_and_study_without_the_dx_writer():
    """What a worklist or MPPS message needs: patient, study, equipment, SOP common."""
    assert isinstance(PATIENT_FIELDS, frozenset) and isinstance(ANIMAL_ONLY_FIELDS, tuple)
    assert ANIMAL_ONLY_FIELDS == ("owner_name", "variety", "sex_neutered", "chip_number")
    assert set(ANIMAL_ONLY_FIELDS) <= PATIENT_FIELDS
    assert set(_human()) <= PATIENT_FIELDS and set(_vet()) <= PATIENT_FIELDS
    uids = UidFactory(ROOT)
    assert set(_study(uids)) <= STUDY_FIELDS and set(_series(uids)) <= SERIES_FIELDS
    assert set(_image(uids)) <= IMAGE_FIELDS

    b = DatasetBuilder()
    assert patient_module(b, _vet()) is True
    now = dt.datetime(2025, 6, 25, 8, 0, tzinfo=dt.UTC)
    study_module(b, {"study_id": "20250625143339389", "accession_number": "A1"}, uids, now)
    equipment_module(b, {"manufacturer": "DIOS", "model": "SIM", "serial_number": "7"},
                     "device")
    uid = sop_common_module(b, "1.2.840.10008.3.1.2.3.3", None, uids, "mpps.sop_instance_uid")
    check_charset(b.ds, b.source)
    validate_element_values(b.ds, b.source)
    ds = b.ds
    assert "PixelData" not in ds and "Rows" not in ds and "Modality" not in ds
    assert ds.PatientSpeciesDescription == "Dog" and ds.ResponsiblePersonRole == "OWNER"
    assert ds.OtherPatientIDsSequence[0].TypeOfPatientID == "RFID"
    assert ds.StudyID == "250625143339389" and ds.StudyInstanceUID.startswith(ROOT + ".1.")
    local = local_time(now)
    assert (ds.StudyDate, ds.StudyTime) == (local.strftime("%Y%m%d"), local.strftime("%H%M%S"))
    assert ds.TimezoneOffsetFromUTC == tz_offset(local)
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber) == (
        "DIOS", "SIM", "7")
    assert ds.SOPInstanceUID == uid and uid.startswith(ROOT + ".3.")
    assert b.source["SOPInstanceUID"] == "mpps.sop_instance_uid"
    assert "SpecificCharacterSet" not in ds  # the dog's record is ASCII

    human = DatasetBuilder()
    assert patient_module(human, _human()) is False
    assert "PatientSpeciesDescription" not in human.ds
    for key in ANIMAL_ONLY_FIELDS:
        with pytest.raises(DicomFieldError, match="animal patients only") as info:
            patient_module(DatasetBuilder(), {**_human(), key: "x"})
        assert info.value.field == f"patient.{key}"
    with pytest.raises(DicomFieldError, match="equipment.model"):
        equipment_module(DatasetBuilder(), {"model": "a\\b"}, "equipment")


def test_dicom_modules_keep_their_levels_and_import_no_private_names():
    import dios.dicom as package

    root = os.path.dirname(package.__file__)
    allowed = {"values": {"dios.dicom", "dios.uids"},
               "modules": {"dios.dicom", "dios.dicom.values", "dios.uids"},
               "reader": {"dios.dicom"}}
    for name in ("values", "modules", "dx", "png", "reader"):
        with open(os.path.join(root, f"{name}.py"), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dios"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, (name, node.module, private)
                if name in allowed:
                    assert node.module in allowed[name], (name, node.module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith(("processing", "simulators", "drivers",
                                                      "dios.devices")), (name, alias.name)
