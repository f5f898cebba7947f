"""Reading a single-frame grey DICOM image (DX, CR, raw or processed) into a ``uint16`` array.

:func:`read_image` accepts a path, bytes or a binary file object and returns a
:class:`DicomImage`: the pixels as stored (masked to BitsStored), MONOCHROME1 optionally
turned into MONOCHROME2, a small metadata dict with the facts the engine uses, and the
dataset itself (without its pixel data, to halve the memory).

It refuses, with :class:`~dios.dicom.UnsupportedImageError` (code ``UNSUPPORTED_MEDIA``):
a file that is not DICOM, a compressed transfer syntax (JPEG, JPEG-LS, JPEG 2000, RLE...),
a multi-frame image, a colour image, signed pixels, more than 16 allocated bits, and a
dataset without (or with truncated) pixel data. A file larger than ``max_bytes`` raises
:class:`~dios.dicom.ImageTooLargeError`.

Imports: pydicom, numpy, :mod:`dios.dicom`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dios.dicom import ImageTooLargeError, UnsupportedImageError

__all__ = ["DicomImage", "read_image"]


@dataclass
class DicomImage:
    """A decoded single-frame grey image.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(rows, columns)`` ``uint16``, larger = brighter (MONOCHROME2) unless the file was
        MONOCHROME1 and ``to_monochrome2=False`` was asked.
    meta : dict
        ``sop_class_uid``, ``sop_instance_uid``, ``study_instance_uid``,
        ``series_instance_uid``, ``transfer_syntax``, ``modality``, ``presentation_intent``,
        ``rows``, ``columns``, ``bits_allocated``, ``bits_stored``, ``photometric`` (of the
        returned pixels), ``inverted`` (True when MONOCHROME1 was inverted),
        ``pixel_spacing_mm`` ((row, col) from ImagerPixelSpacing or PixelSpacing, or None),
        ``window`` ((center, width) or None), ``rescale`` ((slope, intercept)),
        ``patient_id``, ``patient_name``, ``patient_sex``, ``study_id``,
        ``accession_number``, ``body_part``, ``view_position``, ``image_laterality``,
        ``kv``, ``mas``, ``exposure_index``.
    dataset : pydicom.Dataset
        Everything else, without PixelData.
    """

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    dataset: Dataset = field(default_factory=Dataset)


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return value[0] if len(value) else None
    return value


def _float(value: Any) -> float | None:
    value = _first(value)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mas(ds: Dataset) -> float | None:
    micro = _float(ds.get("ExposureInuAs"))
    return micro / 1000.0 if micro is not None else _float(ds.get("Exposure"))


def _open(source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO,
          max_bytes: int | None) -> BinaryIO:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if max_bytes is not None and len(source) > max_bytes:
            raise ImageTooLargeError(f"DICOM data is {len(source)} bytes; the limit is {max_bytes}")
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such DICOM file: {path!r}")
        size = os.path.getsize(path)
        if max_bytes is not None and size > max_bytes:
            raise ImageTooLargeError(f"{path!r} is {size} bytes; the limit is {max_bytes}")
        return open(path, "rb")  # noqa: SIM115 - closed by the caller
    if hasattr(source, "read"):
        return source  # type: ignore[return-value]
    raise TypeError(f"source must be a path, bytes or a binary file, not {type(source).__name__}")


def read_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO, *,
               to_monochrome2: bool = True, max_bytes: int | None = None) -> DicomImage:
    """Read one uncompressed single-frame grey DICOM image.

    Parameters
    ----------
    source : path, bytes or binary file
        The DICOM Part 10 file (with its 128-byte preamble and ``DICM``).
    to_monochrome2 : bool
        Invert MONOCHROME1 pixels (``(2**BitsStored - 1) - value``) and the window centre so
        that larger always means brighter. ``meta["inverted"]`` says whether it happened.
    max_bytes : int, optional
        Refuse bigger files (uploads).

    Returns
    -------
    DicomImage

    Raises
    ------
    UnsupportedImageError
        Not DICOM, compressed, multi-frame, colour, signed, > 16 bits, no or short pixel data.
    ImageTooLargeError
        Larger than ``max_bytes``.
    FileNotFoundError
        A path that does not exist.
    """
    fh = _open(source, max_bytes)
    try:
        try:
            ds = pydicom.dcmread(fh, force=False)
        except InvalidDicomError as exc:
            raise UnsupportedImageError(f"not a DICOM file: {exc}") from None
        except (EOFError, ValueError, OSError, KeyError, TypeError) as exc:
            raise UnsupportedImageError(f"DICOM file is truncated or corrupt: {exc}") from None
    finally:
        if fh is not source:
            fh.close()
    return _decode(ds, to_monochrome2)


def _decode(ds: Dataset, to_monochrome2: bool) -> DicomImage:
    meta_ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    ts = UID(str(meta_ts)) if meta_ts else None
    if ts is not None and ts.is_compressed:
        raise UnsupportedImageError(f"compressed transfer syntax {ts.name} ({ts}) is not "
                                    "supported; decompress it first (e.g. dcmdjpeg, gdcmconv -w)")
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f" (it has {other[0]}: float pixels are not supported)" if other else ""
        raise UnsupportedImageError(f"the DICOM dataset has no pixel data{what}")
    frames = int(_float(ds.get("NumberOfFrames", 1)) or 1)
    if frames > 1:
        raise UnsupportedImageError(f"multi-frame images ({frames} frames) are not supported; "
                                    "only single-frame images")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise UnsupportedImageError(f"colour images are not supported (PhotometricInterpretation "
                                    f"{photometric or 'missing'}, SamplesPerPixel {samples})")
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", allocated) or allocated)
    if allocated not in (8, 16):
        raise UnsupportedImageError(f"BitsAllocated {allocated} is not supported (8 or 16)")
    if not 1 <= stored <= allocated:
        raise UnsupportedImageError(f"BitsStored {stored} is inconsistent with BitsAllocated "
                                    f"{allocated}")
    if int(ds.get("PixelRepresentation", 0) or 0) != 0:
        raise UnsupportedImageError("signed pixel data (PixelRepresentation 1) is not supported")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        raise UnsupportedImageError(f"invalid image size {rows} x {cols}")
    expected = rows * cols * allocated // 8
    have = len(ds.PixelData) if ds.PixelData is not None else 0
    if have < expected:
        raise UnsupportedImageError(f"pixel data is truncated: {have} bytes for {rows} x {cols} "
                                    f"x {allocated} bits ({expected} bytes)")
    try:
        array = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for broken pixel data
        raise UnsupportedImageError(f"pixel data cannot be decoded: {exc}") from None
    if array.ndim != 2 or array.shape != (rows, cols):
        raise UnsupportedImageError(f"pixel data has shape {array.shape}, not ({rows}, {cols})")
    pixels = np.array(array, dtype=np.uint16, copy=True)
    max_value = (1 << stored) - 1
    if stored < 16:
        np.bitwise_and(pixels, max_value, out=pixels)

    center, width = _float(ds.get("WindowCenter")), _float(ds.get("WindowWidth"))
    window = (center, width) if center is not None and width is not None else None
    inverted = False
    if photometric == "MONOCHROME1" and to_monochrome2:
        np.subtract(max_value, pixels, out=pixels)
        inverted = True
        photometric = "MONOCHROME2"
        if window is not None:
            window = (max_value - window[0], window[1])
    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing")
    pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None
    slope = _float(ds.get("RescaleSlope"))
    intercept = _float(ds.get("RescaleIntercept"))
    meta: dict[str, Any] = {
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "transfer_syntax": str(ts) if ts else "",
        "modality": str(ds.get("Modality", "")),
        "presentation_intent": str(ds.get("PresentationIntentType", "")),
        "rows": rows,
        "columns": cols,
        "bits_allocated": allocated,
        "bits_stored": stored,
        "photometric": photometric,
        "inverted": inverted,
        "pixel_spacing_mm": pixel_spacing,
        "window": window,
        "rescale": (1.0 if slope is None else slope, 0.0 if intercept is None else intercept),
        "patient_id": str(ds.get("PatientID", "")),
        "patient_name": str(ds.get("PatientName", "")),
        "patient_sex": str(ds.get("PatientSex", "")),
        "study_id": str(ds.get("StudyID", "")),
        "accession_number": str(ds.get("AccessionNumber", "")),
        "body_part": str(ds.get("BodyPartExamined", "")),
        "view_position": str(ds.get("ViewPosition", "")),
        "image_laterality": str(ds.get("ImageLaterality", "")),
        "kv": _float(ds.get("KVP")),
        "mas": _mas(ds),
        "exposure_index": _float(ds.get("ExposureIndex")),
    }
    del ds.PixelData
    return DicomImage(pixels=pixels, meta=meta, dataset=ds)
