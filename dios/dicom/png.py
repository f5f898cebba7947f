"""PNG in and out: 8-bit previews of a windowed image, and PNG uploads turned into DICOM.

Previews
--------
:func:`window_to_uint8` applies a DICOM linear VOI window (PS3.3 C.11.2.1.2.1) through a
lookup table; :func:`preview_png_bytes` / :func:`write_preview_png` encode the result
(optionally shrunk to a maximum side) as an 8-bit grey PNG with OpenCV, the file written
atomically.

Uploads
-------
:func:`decode_png` checks that bytes really are a PNG before trusting them: the size limit,
the 8-byte signature, the IHDR header (dimensions checked against a pixel limit *before*
anything is decompressed), every chunk's CRC, and a full decode (a truncated file fails).
8-bit and 16-bit grey are kept as they are; palette, grey+alpha, RGB and RGBA are converted
to grey with the ITU-R BT.601 luma weights (alpha is ignored).

:func:`png_to_dx` then writes the image as **Secondary Capture** (SOP class
1.2.840.10008.5.1.4.1.1.7, ConversionType ``WSD``, ImageType ``DERIVED\\SECONDARY``), not as
DX: the DX IOD requires detector facts (ImagerPixelSpacing, DetectorType, a linear pixel
intensity relationship) that an uploaded picture cannot truthfully supply, and Secondary
Capture is the IOD DICOM defines for images converted from other formats. The instance
joins the study and series it is given (Modality from ``series``, default ``DX``), so it
is listed with the study's other images; its SOP Instance UID is new unless ``image`` names
one.

Imports: numpy, OpenCV, Pillow, pydicom, :mod:`dios.atomic`, :mod:`dios.uids`,
:mod:`dios.dicom` (the errors), :mod:`dios.dicom.modules` (the shared modules, extra
attributes) and :mod:`dios.dicom.dx` (:func:`~dios.dicom.dx.build_common`,
:func:`~dios.dicom.dx.save_dataset`), public names only.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import struct
import warnings
import zlib
from typing import Any

import cv2
import numpy as np
import pydicom
from PIL import Image

from dios.atomic import atomic_write_bytes
from dios.dicom import (
    DicomFieldError,
    DicomFieldTypeError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from dios.dicom.dx import build_common, save_dataset
from dios.dicom.modules import SECONDARY_CAPTURE, check_extra, image_type_value, set_extra
from dios.uids import UidFactory

__all__ = ["DEFAULT_MAX_PNG_BYTES", "DEFAULT_MAX_PNG_PIXELS", "PNG_SIGNATURE", "decode_png",
           "png_to_dicom", "png_to_dx", "preview_png_bytes", "window_to_uint8",
           "write_preview_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Largest upload accepted by default (bytes).
DEFAULT_MAX_PNG_BYTES = 64 * 1024 * 1024
#: Largest decoded image accepted by default (pixels): 8192 x 8192.
DEFAULT_MAX_PNG_PIXELS = 8192 * 8192
_MAX_SIDE = 65535


# --------------------------------------------------------------------------------------------
# previews
# --------------------------------------------------------------------------------------------


def _check_pixels(pixels: object) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):
        raise DicomFieldTypeError("pixels", f"must be a numpy array, not {type(pixels).__name__}")
    if pixels.ndim != 2 or pixels.size == 0:
        raise DicomFieldError("pixels", f"must be a non-empty 2-D array, got shape {pixels.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise DicomFieldError("pixels", f"dtype must be uint8 or uint16, got {pixels.dtype}")
    return pixels


def window_to_uint8(pixels: np.ndarray, window: tuple[float, float] | None = None, *,
                    invert: bool = False) -> np.ndarray:
    """Map grey pixels to 0..255 with a DICOM linear VOI window, through a lookup table.

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D ``uint8`` or ``uint16``.
    window : (float, float), optional
        (center, width), width >= 1. Default: the data's own min..max.
    invert : bool
        Show MONOCHROME1-style (bright = low values).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of the same shape.
    """
    arr = _check_pixels(pixels)
    if window is None:
        low, high = float(arr.min()), float(arr.max())
        center, width = (low + high + 1) / 2.0, max(high - low + 1, 1.0)
    else:
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise DicomFieldTypeError("window", "must be a (center, width) pair")
        center, width = float(window[0]), float(window[1])
        if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
            raise DicomFieldError("window", f"({center}, {width}): width must be >= 1 and both "
                                  "finite")
    levels = np.arange(256 if arr.dtype == np.uint8 else 65536, dtype=np.float64)
    if width <= 1:
        lut = np.where(levels < center - 0.5, 0.0, 255.0)
    else:
        lut = ((levels - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    lut = np.clip(np.rint(lut), 0, 255).astype(np.uint8)
    if invert:
        lut = 255 - lut
    return lut[arr]


def preview_png_bytes(pixels: np.ndarray, *, window: tuple[float, float] | None = None,
                      max_side: int | None = None, invert: bool = False) -> bytes:
    """Encode an 8-bit grey PNG preview of ``pixels`` (see :func:`window_to_uint8`).

    Parameters
    ----------
    pixels : numpy.ndarray
        2-D ``uint8`` or ``uint16``.
    window : (float, float), optional
        (center, width); default the data range.
    max_side : int, optional
        Shrink (area averaging, aspect kept) so that neither side exceeds this.
    invert : bool
        MONOCHROME1-style display.

    Returns
    -------
    bytes
        The PNG file content.
    """
    img = window_to_uint8(pixels, window, invert=invert)
    if max_side is not None:
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
            raise DicomFieldError("max_side", f"{max_side!r} must be a positive int")
        rows, cols = img.shape
        scale = max_side / max(rows, cols)
        if scale < 1:
            size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 2-D array
        raise RuntimeError("OpenCV could not encode the preview")
    return encoded.tobytes()


def write_preview_png(path: str | os.PathLike[str], pixels: np.ndarray, *,
                      window: tuple[float, float] | None = None, max_side: int | None = None,
                      invert: bool = False) -> tuple[int, int]:
    """Write an 8-bit PNG preview atomically; return its (rows, columns).

    Parameters are those of :func:`preview_png_bytes`; ``path`` is the destination.
    """
    data = preview_png_bytes(pixels, window=window, max_side=max_side, invert=invert)
    atomic_write_bytes(path, data)
    width, height = struct.unpack(">II", data[16:24])
    return height, width


# --------------------------------------------------------------------------------------------
# uploads
# --------------------------------------------------------------------------------------------


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
#: Adam7 passes: (x start, y start, x step, y step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def _raw_size(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes of filtered scanlines the IDAT stream must inflate to (PNG spec 7.2, 8.2)."""
    bits_per_pixel = depth * _CHANNELS[colour]

    def rows_bytes(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits_per_pixel + 7) // 8)

    if interlace == 0:
        return rows_bytes(width, height)
    return sum(rows_bytes((width - x0 + dx - 1) // dx if width > x0 else 0,
                          (height - y0 + dy - 1) // dy if height > y0 else 0)
               for x0, y0, dx, dy in _ADAM7)


def _check_image_data(idat: bytes, expected: int) -> None:
    """Inflate the IDAT stream (never more than needed) and compare with the header."""
    inflater = zlib.decompressobj()
    try:
        got = len(inflater.decompress(idat, expected + 1))
    except zlib.error as exc:
        raise UnsupportedImageError(f"PNG is corrupt (image data does not inflate: {exc})") from None
    if got < expected:
        raise UnsupportedImageError(f"PNG is truncated (image data holds {got} of {expected} "
                                    "bytes)")


def _check_chunks(data: bytes) -> tuple[tuple[int, int, int, int, int], bytes]:
    """Walk the chunk list: IHDR first, CRCs right, IDAT present, IEND reached."""
    pos = len(PNG_SIGNATURE)
    header: tuple[int, int, int, int, int] | None = None
    seen_idat = False
    idat_parts: list[bytes] = []
    while True:
        if pos + 8 > len(data):
            raise UnsupportedImageError("PNG is truncated (chunk list ends before IEND)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if length > 0x7FFFFFFF or end > len(data):
            raise UnsupportedImageError(f"PNG is truncated (chunk {ctype!r} runs past the end)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise UnsupportedImageError(f"PNG is corrupt (CRC mismatch in chunk {ctype!r})")
        if header is None:
            if ctype != b"IHDR" or length != 13:
                raise UnsupportedImageError("PNG is corrupt (the first chunk is not IHDR)")
            width, height, depth, colour, _comp, _filt, interlace = struct.unpack(
                ">IIBBBBB", body)
            if colour not in _DEPTHS or depth not in _DEPTHS[colour] or interlace not in (0, 1):
                raise UnsupportedImageError(f"PNG header is invalid (bit depth {depth}, colour "
                                            f"type {colour}, interlace {interlace})")
            header = (width, height, depth, colour, interlace)
        elif ctype == b"IDAT":
            seen_idat = True
            idat_parts.append(body)
        elif ctype == b"IEND":
            if not seen_idat:
                raise UnsupportedImageError("PNG has no image data (no IDAT chunk)")
            return header, b"".join(idat_parts)
        pos = end


def decode_png(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_PNG_BYTES,
               max_pixels: int = DEFAULT_MAX_PNG_PIXELS) -> tuple[np.ndarray, int]:
    """Validate and decode PNG bytes into a grey image.

    Parameters
    ----------
    data : bytes-like
        The uploaded file.
    max_bytes : int
        Size limit of ``data``.
    max_pixels : int
        Limit on width * height, checked from the header before decompression.

    Returns
    -------
    (numpy.ndarray, int)
        The grey image (``uint8`` or, for 16-bit PNGs, ``uint16``) and its bit depth (8/16).

    Raises
    ------
    DicomFieldTypeError
        ``data`` is not bytes.
    ImageTooLargeError
        Over ``max_bytes`` or ``max_pixels``.
    UnsupportedImageError
        Not a PNG, truncated, corrupt (CRC), empty or undecodable.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DicomFieldTypeError("png", f"must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"PNG is {len(data)} bytes; the limit is {max_bytes}")
    if len(data) == 0:
        raise UnsupportedImageError("upload is empty, not a PNG")
    if not data.startswith(PNG_SIGNATURE):
        raise UnsupportedImageError("not a PNG file (the 8-byte PNG signature is missing)")
    (width, height, depth, colour, interlace), idat = _check_chunks(data)
    if width < 1 or height < 1:
        raise UnsupportedImageError(f"PNG size {width} x {height} is invalid")
    if width * height > max_pixels:
        raise ImageTooLargeError(f"PNG is {width} x {height} = {width * height} pixels; the "
                                 f"limit is {max_pixels}")
    if width > _MAX_SIDE or height > _MAX_SIDE:
        raise ImageTooLargeError(f"PNG is {width} x {height} pixels; DICOM allows at most "
                                 f"{_MAX_SIDE} per side")
    _check_image_data(idat, _raw_size(width, height, depth, colour, interlace))

    if depth == 16 and colour in (2, 6):
        # Pillow reduces 16-bit colour to 8 bits; OpenCV keeps 16.
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None or decoded.ndim != 3:
            raise UnsupportedImageError("PNG cannot be decoded (16-bit colour)")
        code = cv2.COLOR_BGRA2GRAY if decoded.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        grey = cv2.cvtColor(decoded, code)
        return np.ascontiguousarray(grey, dtype=np.uint16), 16

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                im.load()
                mode = im.mode
                if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                    grey = np.asarray(im).astype(np.uint16)
                    bits = 16
                elif mode == "I":
                    wide = np.asarray(im)
                    if wide.size and (wide.min() < 0 or wide.max() > 65535):
                        raise UnsupportedImageError("PNG values are outside 0..65535")
                    grey, bits = wide.astype(np.uint16), 16
                elif mode == "L":
                    grey, bits = np.asarray(im, dtype=np.uint8), 8
                elif mode == "LA":
                    grey, bits = np.asarray(im.getchannel("L"), dtype=np.uint8), 8
                else:  # 1, P, PA, RGB, RGBA: luma (ITU-R BT.601)
                    rgb = im.convert("RGB") if mode in ("P", "PA", "RGBA", "1") else im
                    grey, bits = np.asarray(rgb.convert("L"), dtype=np.uint8), 8
    except UnsupportedImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, zlib.error) as exc:
        raise UnsupportedImageError(f"PNG cannot be decoded (truncated or corrupt): {exc}") from None
    if grey.shape != (height, width):
        raise UnsupportedImageError(f"PNG decoded to shape {grey.shape}, header says "
                                    f"{height} x {width}")
    return np.ascontiguousarray(grey), bits


def png_to_dx(png_bytes: bytes | bytearray | memoryview, path: str | os.PathLike[str], *,
              patient: dict, study: dict, series: dict, image: dict | None = None,
              uids: UidFactory | None = None, max_bytes: int = DEFAULT_MAX_PNG_BYTES,
              max_pixels: int = DEFAULT_MAX_PNG_PIXELS,
              extra: dict[str, Any] | None = None) -> pydicom.Dataset:
    """Turn an uploaded PNG into a DICOM file (Secondary Capture) written atomically.

    Parameters
    ----------
    png_bytes : bytes-like
        The upload; validated by :func:`decode_png`.
    path : str or os.PathLike
        Destination ``.dcm`` file (the service names it ``<SOPInstanceUID>.dcm``).
    patient, study, series : dict
        As for :func:`dios.dicom.dx.write_dx` (``series.modality`` defaults to ``DX``;
        ``series.view_position`` is not used).
    image : dict, optional
        ``sop_instance_uid`` (default: a new one from ``uids``), ``instance_number``,
        ``image_type`` (default ``DERIVED\\SECONDARY``), ``derivation``,
        ``patient_orientation`` (default empty: unknown), ``image_laterality``,
        ``image_comments``.
    uids : UidFactory, optional
        Makes the UIDs the dicts leave out.
    max_bytes, max_pixels : int
        Upload limits.
    extra : dict, optional
        More attributes by DICOM keyword.

    Returns
    -------
    pydicom.Dataset
        The written dataset (``ds.SOPInstanceUID`` names the new instance).

    Raises
    ------
    UnsupportedImageError, ImageTooLargeError
        For bytes that are not an acceptable PNG.
    DicomFieldError, DicomFieldTypeError
        For bad metadata, as :func:`~dios.dicom.dx.write_dx`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DicomFieldTypeError("path", f"must be a path, not {type(path).__name__}")
    for name, value in (("series", series), ("image", image)):
        if value is not None and not isinstance(value, dict):
            raise DicomFieldTypeError(name, f"must be a dict, not {type(value).__name__}")
    if series is None:
        raise DicomFieldTypeError("series", "a dict is required, got None")
    extra_values = check_extra(extra)
    grey, bits = decode_png(png_bytes, max_bytes=max_bytes, max_pixels=max_pixels)
    img = dict(image or {})
    laterality = img.pop("image_laterality", "")
    image_type = img.pop("image_type", None)
    derivation = img.pop("derivation", None)
    orientation_given = img.get("patient_orientation") not in (None, "", [])
    if not orientation_given:
        img["patient_orientation"] = ["L", "F"]  # placeholder, cleared below
    ser = dict(series)
    ser.pop("view_position", None)
    now = _dt.datetime.now().astimezone()
    b, arr, _view, _animal, _img = build_common(
        SECONDARY_CAPTURE, grey, bits_stored=bits, patient=patient, study=study, series=ser,
        image=img, uids=uids, default_modality="DX", now=now)
    if not orientation_given:
        b.set("PatientOrientation", "", "image.patient_orientation")
    b.set("ConversionType", "WSD", "image")
    b.set("DateOfSecondaryCapture", now.strftime("%Y%m%d"), "image")
    b.set("TimeOfSecondaryCapture", now.strftime("%H%M%S"), "image")
    b.set("ImageType", image_type_value(image_type, ["DERIVED", "SECONDARY"]), "image.image_type")
    b.set("DerivationDescription", str(derivation or "Converted from an uploaded PNG image"),
          "image.derivation")
    if laterality:
        value = str(laterality).strip().upper()
        if value not in {"R", "L", "U", "B"}:
            raise DicomFieldError("image.image_laterality", f"{laterality!r} is not one of "
                                  "R, L, U, B")
        b.set("ImageLaterality", value, "image.image_laterality")
    low, high = int(grey.min()), int(grey.max())
    b.set("WindowCenter", f"{(low + high + 1) / 2:g}", "png")
    b.set("WindowWidth", f"{max(high - low + 1, 1)}", "png")
    set_extra(b, extra_values)
    return save_dataset(b, arr, path)


#: The same function under a name that says what it writes.
png_to_dicom = png_to_dx
