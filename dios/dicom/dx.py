"""Writing a Digital X-Ray Image For Presentation (DX, SOP class 1.2.840.10008.5.1.4.1.1.1.1).

:func:`write_dx` turns the engine's own records (the study service's patient and study
fields, the catalog's series and view facts, the generator's post-exposure readback and the
detector's description) into a DICOM file that ``dciodvfy`` reports no errors on, and
writes it atomically. Every input is checked first; on any error nothing is written.

This module holds only what is DX-specific: the Image Pixel description of a single-frame
grey image, DX Series / DX Anatomy Imaged / DX Image, DX Positioning and the acquisition
facts (technique, dose, exposure index), DX Detector, VOI LUT (the window) and the Display
Shutter; plus :func:`build_common` and :func:`save_dataset`, which :mod:`dios.dicom.png`
shares. Patient, study, series, equipment, general image and SOP common attributes come
from :mod:`dios.dicom.modules` (its docstring gives the patient and study field
conventions), the value converters and codes from :mod:`dios.dicom.values`. The names that
moved there (:data:`BODY_PARTS`, :data:`LOCAL_SCHEME`, :data:`VIEW_CODES`,
:data:`SECONDARY_CAPTURE`, :func:`anatomic_region`, :func:`dicom_study_id`) are re-exported
here unchanged.

Field conventions (the writer's own inputs)
-------------------------------------------
==========================  ================================================================
``acquisition.dap``         dGy*cm2 (what ImageAndFluoroscopyAreaDoseProduct holds).
``acquisition.sid/sod``     mm.
``acquisition.focus``       focal spot size in mm, or the index 0 (small) / 1 (large) into
                            ``focal_spots_mm`` (default ``(0.6, 1.2)``).
``detector.pixel_pitch_mm`` native element pitch; with ``binning`` b the ImagerPixelSpacing
                            is pitch * b (DetectorElementSpacing keeps the pitch).
==========================  ================================================================

Imports: pydicom, numpy, :mod:`dios.uids`, :mod:`dios.atomic`, :mod:`dios.dicom`,
:mod:`dios.dicom.values`, :mod:`dios.dicom.modules`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dios.atomic import atomic_write_with
from dios.dicom import DicomFieldError, DicomFieldTypeError
from dios.dicom.modules import (
    SECONDARY_CAPTURE,
    DatasetBuilder,
    check_extra,
    equipment_module,
    general_image_module,
    image_type_value,
    patient_module,
    series_module,
    set_extra,
    study_module,
)
from dios.dicom.values import (
    BODY_PARTS,
    LOCAL_SCHEME,
    VIEW_CODES,
    anatomic_region,
    bool_value,
    check_charset,
    code_item,
    cs_value,
    datetime_value,
    dicom_study_id,
    dict_value,
    format_ds,
    half_up,
    int_value,
    local_time,
    multi_value,
    number_value,
    rounded_int_value,
    text_value,
    tz_offset,
    validate_element_values,
)
from dios.uids import UidFactory

__all__ = ["ACQUISITION_FIELDS", "BODY_PARTS", "DETECTOR_FIELDS", "DX_FOR_PRESENTATION",
           "LOCAL_SCHEME", "SECONDARY_CAPTURE", "SHUTTER_FIELDS", "VIEW_CODES",
           "anatomic_region", "build_common", "dicom_study_id", "save_dataset", "write_dx"]

#: Digital X-Ray Image Storage - For Presentation
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

#: The keys ``write_dx(acquisition=...)`` accepts.
ACQUISITION_FIELDS: frozenset[str] = frozenset({
    "kv", "ma", "ms", "mas", "dap", "focus", "focal_spots_mm", "sid", "sod", "ei",
    "target_ei", "di", "sensitivity", "aec", "grid", "filter_type", "filter_material",
    "anode_target_material", "relative_exposure", "acquisition_datetime", "positioner_type",
})
#: The keys ``write_dx(detector=...)`` accepts.
DETECTOR_FIELDS: frozenset[str] = frozenset({
    "detector_id", "detector_type", "pixel_pitch_mm", "manufacturer", "model",
    "serial_number", "bits", "binning", "mode", "temperature", "description",
})
#: The Display Shutter keywords ``write_dx(shutter=...)`` accepts.
SHUTTER_FIELDS: frozenset[str] = frozenset({
    "ShutterShape", "ShutterLeftVerticalEdge", "ShutterRightVerticalEdge",
    "ShutterUpperHorizontalEdge", "ShutterLowerHorizontalEdge", "CenterOfCircularShutter",
    "RadiusOfCircularShutter", "VerticesOfThePolygonalShutter", "ShutterPresentationValue",
})
_LATERALITY = {"R", "L", "U", "B"}
_DETECTOR_TYPES = {"DIRECT", "SCINTILLATOR", "STORAGE", "FILM"}
_SHUTTER_SHAPES = ("RECTANGULAR", "CIRCULAR", "POLYGONAL")


# --------------------------------------------------------------------------------------------
# Image Pixel
# --------------------------------------------------------------------------------------------


def _pixel_module(b: DatasetBuilder, pixels: object, bits_stored: object) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):
        raise DicomFieldTypeError("pixels", f"must be a numpy array, not {type(pixels).__name__}")
    if pixels.ndim != 2:
        raise DicomFieldError("pixels", f"must be 2-D (rows, columns), got shape {pixels.shape}")
    if pixels.size == 0:
        raise DicomFieldError("pixels", f"is empty (shape {pixels.shape})")
    if pixels.dtype not in (np.uint16, np.uint8):
        raise DicomFieldError("pixels", f"dtype must be uint16 or uint8, got {pixels.dtype}")
    rows, cols = pixels.shape
    if rows > 65535 or cols > 65535:
        raise DicomFieldError("pixels", f"shape {pixels.shape} exceeds 65535 rows/columns")
    allocated = 8 if pixels.dtype == np.uint8 else 16
    if isinstance(bits_stored, bool) or not isinstance(bits_stored, (int, np.integer)):
        raise DicomFieldTypeError("bits_stored", f"must be an int, not {type(bits_stored).__name__}")
    bits = int(bits_stored)
    if not 6 <= bits <= allocated:
        raise DicomFieldError("bits_stored", f"{bits} is outside 6..{allocated} for {pixels.dtype} "
                              "pixels")
    peak = int(pixels.max())
    if peak >= 1 << bits:
        raise DicomFieldError("pixels", f"maximum value {peak} does not fit in bits_stored={bits} "
                              f"(limit {(1 << bits) - 1})")
    b.set("SamplesPerPixel", 1, "pixels")
    b.set("PhotometricInterpretation", "MONOCHROME2", "pixels")
    b.set("Rows", rows, "pixels")
    b.set("Columns", cols, "pixels")
    b.set("BitsAllocated", allocated, "pixels")
    b.set("BitsStored", bits, "bits_stored")
    b.set("HighBit", bits - 1, "bits_stored")
    b.set("PixelRepresentation", 0, "pixels")
    return np.ascontiguousarray(pixels, dtype="<u2" if allocated == 16 else np.uint8)


def _set_pixel_data(ds: Dataset, pixels: np.ndarray) -> None:
    data = pixels.tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.add_new(0x7FE00010, "OW" if pixels.dtype.itemsize == 2 else "OB", data)


# --------------------------------------------------------------------------------------------
# DX Positioning and acquisition, DX Detector, VOI LUT, Display Shutter
# --------------------------------------------------------------------------------------------


def _acquisition_module(b: DatasetBuilder, acquisition: object, view: str) -> _dt.datetime | None:
    a = dict_value(acquisition, "acquisition", ACQUISITION_FIELDS, required=False)
    if view:
        b.set("ViewPosition", view, "series.view_position")
        code = VIEW_CODES.get(view)
        if code:
            item = code_item(code[0], "SCT", code[1])
            item.ViewModifierCodeSequence = Sequence()
            b.set("ViewCodeSequence", Sequence([item]), "series.view_position")
        b.set("PositionerType",
              cs_value(a.get("positioner_type", ""), "acquisition.positioner_type"),
              "acquisition.positioner_type")
    kv = number_value(a.get("kv"), "acquisition.kv", low=0, high=200, strict_low=True)
    if kv is not None:
        b.set("KVP", format_ds(kv), "acquisition.kv")
    ma = number_value(a.get("ma"), "acquisition.ma", low=0, high=5000)
    if ma is not None:
        b.set("XRayTubeCurrent", half_up(ma), "acquisition.ma")
        b.set("XRayTubeCurrentInuA", format_ds(ma * 1000.0), "acquisition.ma")
    ms = number_value(a.get("ms"), "acquisition.ms", low=0, high=100000)
    if ms is not None:
        b.set("ExposureTime", half_up(ms), "acquisition.ms")
        b.set("ExposureTimeInuS", format_ds(ms * 1000.0), "acquisition.ms")
    mas = number_value(a.get("mas"), "acquisition.mas", low=0, high=10000)
    if mas is None and ma is not None and ms is not None:
        mas = ma * ms / 1000.0
    if mas is not None:
        b.set("Exposure", half_up(mas), "acquisition.mas")
        b.set("ExposureInuAs", half_up(mas * 1000.0), "acquisition.mas")
    dap = number_value(a.get("dap"), "acquisition.dap", low=0)
    if dap is not None:
        b.set("ImageAndFluoroscopyAreaDoseProduct", format_ds(dap), "acquisition.dap")
    focus = a.get("focus")
    if focus not in (None, ""):
        spots = a.get("focal_spots_mm", (0.6, 1.2))
        if not isinstance(spots, (tuple, list)) or len(spots) != 2:
            raise DicomFieldError("acquisition.focal_spots_mm", "must be (small, large) in mm")
        if isinstance(focus, str) and focus.strip().lower() in {"small", "large"}:
            focus = 0 if focus.strip().lower() == "small" else 1
        if isinstance(focus, (int, np.integer)) and not isinstance(focus, bool) and focus in (0, 1):
            size = number_value(spots[int(focus)], "acquisition.focal_spots_mm", low=0,
                                high=10, strict_low=True)
        else:
            size = number_value(focus, "acquisition.focus", low=0, high=10, strict_low=True)
        assert size is not None
        b.set("FocalSpots", format_ds(size), "acquisition.focus")
    for key, keyword, high in (("sid", "DistanceSourceToDetector", 10000.0),
                               ("sod", "DistanceSourceToPatient", 10000.0),
                               ("ei", "ExposureIndex", 1e7),
                               ("target_ei", "TargetExposureIndex", 1e7),
                               ("sensitivity", "Sensitivity", 1e7)):
        value = number_value(a.get(key), f"acquisition.{key}", low=0, high=high)
        if value is not None:
            b.set(keyword, format_ds(value), f"acquisition.{key}")
    di = number_value(a.get("di"), "acquisition.di", low=-100, high=100)
    if di is None:
        ei = number_value(a.get("ei"), "acquisition.ei")
        target = number_value(a.get("target_ei"), "acquisition.target_ei")
        if ei and target:
            di = 10.0 * math.log10(ei / target)
    if di is not None:
        b.set("DeviationIndex", format_ds(round(di, 3)), "acquisition.di")
    if a.get("aec") not in (None, ""):
        b.set("ExposureControlMode", "AUTOMATIC" if bool_value(a["aec"], "acquisition.aec")
              else "MANUAL", "acquisition.aec")
    for key, keyword in (("grid", "Grid"), ("filter_type", "FilterType"),
                         ("filter_material", "FilterMaterial"),
                         ("anode_target_material", "AnodeTargetMaterial")):
        if a.get(key) not in (None, ""):
            b.set(keyword, cs_value(a[key], f"acquisition.{key}"), f"acquisition.{key}")
    if a.get("relative_exposure") not in (None, ""):
        b.set("RelativeXRayExposure",
              rounded_int_value(a["relative_exposure"], "acquisition.relative_exposure"),
              "acquisition.relative_exposure")
    return datetime_value(a.get("acquisition_datetime"), "acquisition.acquisition_datetime")


def _detector_module(b: DatasetBuilder, detector: object, extra: Mapping[str, Any]) -> None:
    d = dict_value(detector, "detector", DETECTOR_FIELDS, required=False)
    dtype = cs_value(d.get("detector_type", ""), "detector.detector_type")
    if dtype and dtype not in _DETECTOR_TYPES:
        raise DicomFieldError("detector.detector_type", f"{d.get('detector_type')!r} is not one "
                              f"of {sorted(_DETECTOR_TYPES)}")
    b.set("DetectorType", dtype, "detector.detector_type")
    binning = d.get("binning", 1)
    if isinstance(binning, (tuple, list)):
        if len(binning) != 2:
            raise DicomFieldError("detector.binning", "must be an int or (rows, columns)")
        bin_rc = (int_value(binning[0], "detector.binning", low=1, high=16),
                  int_value(binning[1], "detector.binning", low=1, high=16))
    else:
        factor = int_value(binning, "detector.binning", low=1, high=16)
        bin_rc = (factor, factor)
    pitch = d.get("pixel_pitch_mm")
    if pitch in (None, ""):
        if "ImagerPixelSpacing" not in extra:
            raise DicomFieldError("detector.pixel_pitch_mm", "is required: ImagerPixelSpacing is "
                                  "Type 1 in a DX image")
    else:
        if isinstance(pitch, (tuple, list)):
            if len(pitch) != 2:
                raise DicomFieldError("detector.pixel_pitch_mm", "must be a number or (row, col)")
            pitch_rc = [number_value(v, "detector.pixel_pitch_mm", low=0, high=10,
                                     strict_low=True, optional=False) for v in pitch]
        else:
            value = number_value(pitch, "detector.pixel_pitch_mm", low=0, high=10,
                                 strict_low=True, optional=False)
            pitch_rc = [value, value]
        assert pitch_rc[0] is not None and pitch_rc[1] is not None
        b.set("ImagerPixelSpacing",
              [format_ds(pitch_rc[0] * bin_rc[0]), format_ds(pitch_rc[1] * bin_rc[1])],
              "detector.pixel_pitch_mm")
        b.set("DetectorElementSpacing", [format_ds(pitch_rc[0]), format_ds(pitch_rc[1])],
              "detector.pixel_pitch_mm")
    if bin_rc != (1, 1):
        b.set("DetectorBinning", [format_ds(bin_rc[0]), format_ds(bin_rc[1])], "detector.binning")
    for key, keyword in (("detector_id", "DetectorID"),
                         ("manufacturer", "DetectorManufacturerName"),
                         ("model", "DetectorManufacturerModelName"),
                         ("mode", "DetectorMode")):
        text = text_value(d.get(key), f"detector.{key}")
        if text:
            b.set(keyword, text, f"detector.{key}")
    description = text_value(d.get("description"), "detector.description")
    if d.get("bits") not in (None, ""):
        bits = int_value(d["bits"], "detector.bits", low=1, high=32)
        description = f"{description}; {bits}-bit" if description else f"{bits}-bit"
    if description:
        b.set("DetectorDescription", description, "detector.description")
    if d.get("temperature") not in (None, ""):
        temp = number_value(d["temperature"], "detector.temperature", low=-100, high=150)
        assert temp is not None
        b.set("DetectorTemperature", format_ds(temp), "detector.temperature")
    equipment_module(b, d, "detector")


def _window_module(b: DatasetBuilder, window: object, bits: int) -> None:
    if window is None:
        center, width = float(1 << (bits - 1)), float(1 << bits)
    else:
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise DicomFieldTypeError("window", "must be a (center, width) pair")
        center = number_value(window[0], "window.center", low=None, optional=False)
        width = number_value(window[1], "window.width", low=1, optional=False)
        assert center is not None and width is not None
    b.set("WindowCenter", format_ds(center), "window")
    b.set("WindowWidth", format_ds(width), "window")


def _shutter_module(b: DatasetBuilder, shutter: object) -> None:
    if shutter is None:
        return
    s = dict_value(shutter, "shutter", SHUTTER_FIELDS, required=True)
    if "ShutterShape" not in s:
        raise DicomFieldError("shutter.ShutterShape", "is required (RECTANGULAR, CIRCULAR and/or "
                              "POLYGONAL)")
    shapes = [v.upper() for v in multi_value(s["ShutterShape"], "shutter.ShutterShape")]
    if not shapes or any(v not in _SHUTTER_SHAPES for v in shapes) or len(set(shapes)) != len(
            shapes):
        raise DicomFieldError("shutter.ShutterShape", f"{s['ShutterShape']!r}: each of "
                              f"{list(_SHUTTER_SHAPES)} at most once")
    needed = {"RECTANGULAR": ("ShutterLeftVerticalEdge", "ShutterRightVerticalEdge",
                              "ShutterUpperHorizontalEdge", "ShutterLowerHorizontalEdge"),
              "CIRCULAR": ("CenterOfCircularShutter", "RadiusOfCircularShutter"),
              "POLYGONAL": ("VerticesOfThePolygonalShutter",)}
    for shape in _SHUTTER_SHAPES:
        for key in needed[shape]:
            if shape in shapes and key not in s:
                raise DicomFieldError(f"shutter.{key}", f"is required for a {shape} shutter")
            if shape not in shapes and key in s:
                raise DicomFieldError(f"shutter.{key}", f"given but ShutterShape has no {shape}")
    b.set("ShutterShape", shapes if len(shapes) > 1 else shapes[0], "shutter.ShutterShape")
    if "RECTANGULAR" in shapes:
        edges = {k: rounded_int_value(s[k], f"shutter.{k}") for k in needed["RECTANGULAR"]}
        if edges["ShutterLeftVerticalEdge"] >= edges["ShutterRightVerticalEdge"]:
            raise DicomFieldError("shutter.ShutterLeftVerticalEdge", "must be left of "
                                  "ShutterRightVerticalEdge")
        if edges["ShutterUpperHorizontalEdge"] >= edges["ShutterLowerHorizontalEdge"]:
            raise DicomFieldError("shutter.ShutterUpperHorizontalEdge", "must be above "
                                  "ShutterLowerHorizontalEdge")
        for key, value in edges.items():
            b.set(key, value, f"shutter.{key}")
    if "CIRCULAR" in shapes:
        center = s["CenterOfCircularShutter"]
        if not isinstance(center, (tuple, list, np.ndarray)) or len(center) != 2:
            raise DicomFieldError("shutter.CenterOfCircularShutter", "must be (row, column)")
        b.set("CenterOfCircularShutter",
              [rounded_int_value(v, "shutter.CenterOfCircularShutter") for v in center],
              "shutter.CenterOfCircularShutter")
        radius = rounded_int_value(s["RadiusOfCircularShutter"], "shutter.RadiusOfCircularShutter")
        if radius < 1:
            raise DicomFieldError("shutter.RadiusOfCircularShutter", f"{radius} must be >= 1")
        b.set("RadiusOfCircularShutter", radius, "shutter.RadiusOfCircularShutter")
    if "POLYGONAL" in shapes:
        vertices = s["VerticesOfThePolygonalShutter"]
        if not isinstance(vertices, (tuple, list, np.ndarray)):
            raise DicomFieldTypeError("shutter.VerticesOfThePolygonalShutter",
                                      "must be a flat list row1, col1, row2, col2, ...")
        flat = [rounded_int_value(v, "shutter.VerticesOfThePolygonalShutter")
                for v in np.asarray(vertices, dtype=object).ravel()]
        if len(flat) < 6 or len(flat) % 2:
            raise DicomFieldError("shutter.VerticesOfThePolygonalShutter",
                                  f"needs at least 3 (row, column) pairs, got {len(flat)} numbers")
        b.set("VerticesOfThePolygonalShutter", flat, "shutter.VerticesOfThePolygonalShutter")
    value = int_value(s.get("ShutterPresentationValue", 0), "shutter.ShutterPresentationValue",
                      low=0, high=65535)
    b.set("ShutterPresentationValue", value, "shutter.ShutterPresentationValue")


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------


def build_common(sop_class_uid: str, pixels: object, *, bits_stored: object, patient: object,
                 study: object, series: object, image: object, uids: UidFactory | None,
                 default_modality: str, now: _dt.datetime | None = None,
                 ) -> tuple[DatasetBuilder, np.ndarray, str, bool, dict[str, Any]]:
    """Build the modules every single-frame grey image of the engine shares.

    Image Pixel (here), then Patient, General Study, General Series, General Image and SOP
    Common (:mod:`dios.dicom.modules`). Returns the builder, the little-endian pixel array,
    the view position, whether the patient is an animal, and the image dict. Used by
    :func:`write_dx` and by :mod:`dios.dicom.png`; not meant for other callers.
    """
    if uids is not None and not isinstance(uids, UidFactory):
        raise DicomFieldTypeError("uids", f"must be a UidFactory, not {type(uids).__name__}")
    now = now or _dt.datetime.now().astimezone()
    b = DatasetBuilder()
    arr = _pixel_module(b, pixels, bits_stored)
    animal = patient_module(b, patient)
    study_module(b, study, uids, now)
    view, _ = series_module(b, series, uids, default_modality)
    img = general_image_module(b, image, uids, sop_class_uid=sop_class_uid, view=view,
                               animal=animal, now=now)
    return b, arr, view, animal, img


def save_dataset(b: DatasetBuilder, arr: np.ndarray, path: str | os.PathLike[str],
                 before_write: Callable[[Dataset], None] | None = None) -> Dataset:
    """Validate every value, set the character set and file meta, and write atomically."""
    ds = b.ds
    check_charset(ds, b.source)
    validate_element_values(ds, b.source)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    _set_pixel_data(ds, arr)
    if before_write is not None:
        before_write(ds)

    def _write(fh: Any) -> None:
        ds.save_as(fh, enforce_file_format=True)

    atomic_write_with(path, _write)
    return ds


def write_dx(path: str | os.PathLike[str], pixels: np.ndarray, *, bits_stored: int,
             patient: dict, study: dict, series: dict, image: dict,
             acquisition: dict | None = None, detector: dict | None = None,
             window: tuple[float, float] | None = None, shutter: dict | None = None,
             uids: UidFactory | None = None, extra: dict | None = None) -> pydicom.Dataset:
    """Write a Digital X-Ray Image For Presentation (MONOCHROME2) atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.dcm`` file; its directory must exist. Replaced atomically.
    pixels : numpy.ndarray
        The presentation image, 2-D ``uint16`` (or ``uint8``), larger values brighter.
    bits_stored : int
        Significant bits (6..16 for uint16, 6..8 for uint8); every pixel must fit.
    patient, study, series, image : dict
        The study service's fields (keys and units: :mod:`dios.dicom.modules`). UIDs
        missing from them are generated with ``uids``; without ``uids`` they are required.
    acquisition : dict, optional
        The generator's actual technique and the dose indices: ``kv``, ``ma``, ``ms``,
        ``mas``, ``dap`` (dGy*cm2), ``focus``, ``sid``/``sod`` (mm), ``ei``, ``target_ei``,
        ``di``, ``sensitivity``, ``aec``, ``grid``, ``filter_type``, ``filter_material``,
        ``anode_target_material``, ``relative_exposure``, ``acquisition_datetime``.
    detector : dict, optional
        ``detector_id``, ``detector_type`` (DIRECT/SCINTILLATOR/STORAGE/FILM),
        ``pixel_pitch_mm`` (required unless ``extra`` has ImagerPixelSpacing), ``manufacturer``,
        ``model``, ``serial_number``, ``bits``, ``binning``, ``mode``, ``temperature``,
        ``description``.
    window : (float, float), optional
        (WindowCenter, WindowWidth); default the full ``bits_stored`` range.
    shutter : dict, optional
        Display Shutter module attributes by DICOM keyword: ``ShutterShape`` and the edges,
        circle centre/radius or polygon vertices (1-based pixel positions, row before
        column), ``ShutterPresentationValue`` (default 0).
    uids : UidFactory, optional
        Generates the UIDs the dicts leave out.
    extra : dict, optional
        More attributes, DICOM keyword -> value, set last (they override the writer's own
        values except the pixel description and SOP class).

    Returns
    -------
    pydicom.Dataset
        The dataset as written (with ``file_meta``).

    Raises
    ------
    DicomFieldError
        (a ``ValueError``) for a bad value; its ``field`` names the input.
    DicomFieldTypeError
        (a ``TypeError``) for an argument of the wrong type.
    OSError
        When the file cannot be written; no partial file is left.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DicomFieldTypeError("path", f"must be a path, not {type(path).__name__}")
    extra_values = check_extra(extra)
    b, arr, view, _animal, img = build_common(
        DX_FOR_PRESENTATION, pixels, bits_stored=bits_stored, patient=patient, study=study,
        series=series, image=image, uids=uids, default_modality="DX")
    if b.ds.Modality != "DX":
        raise DicomFieldError("series.modality", f"{b.ds.Modality!r}: a DX image has Modality DX")
    bits = int(b.ds.BitsStored)

    # DX Series / DX Anatomy Imaged / DX Image
    b.set("PresentationIntentType", "FOR PRESENTATION", "sop_class_uid")
    laterality = cs_value(img.get("image_laterality") or "U", "image.image_laterality")
    if laterality not in _LATERALITY:
        raise DicomFieldError("image.image_laterality", f"{img.get('image_laterality')!r} is not "
                              "one of R, L, U, B")
    b.set("ImageLaterality", laterality, "image.image_laterality")
    b.set("ImageType", image_type_value(img.get("image_type"), ["ORIGINAL", "PRIMARY"]),
          "image.image_type")
    derivation = text_value(img.get("derivation"), "image.derivation")
    if derivation:
        b.set("DerivationDescription", derivation, "image.derivation")
    b.set("PixelIntensityRelationship", "LIN", "pixels")
    b.set("PixelIntensityRelationshipSign", 1, "pixels")
    b.set("RescaleIntercept", "0", "pixels")
    b.set("RescaleSlope", "1", "pixels")
    b.set("RescaleType", "US", "pixels")
    b.set("PresentationLUTShape", "IDENTITY", "pixels")
    b.set("LossyImageCompression", "00", "pixels")
    b.set("BurnedInAnnotation", "NO", "pixels")
    b.set("AcquisitionContextSequence", Sequence(), "acquisition")
    _window_module(b, window, bits)
    acquired = _acquisition_module(b, acquisition, view)
    moment = acquired or datetime_value(img.get("acquisition_datetime"),
                                        "image.acquisition_datetime")
    if moment is not None:
        moment = local_time(moment)
        b.set("AcquisitionDateTime", moment.strftime("%Y%m%d%H%M%S.%f")
              + tz_offset(moment), "acquisition.acquisition_datetime")
        b.set("AcquisitionDate", moment.strftime("%Y%m%d"), "acquisition.acquisition_datetime")
        b.set("AcquisitionTime", moment.strftime("%H%M%S"), "acquisition.acquisition_datetime")
    _detector_module(b, detector, extra_values)
    _shutter_module(b, shutter)
    set_extra(b, extra_values)
    return save_dataset(b, arr, path)

