"""The engine's DICOM file layer: writing, reading and converting single-frame grey images.

What lives here
---------------
``dx``
    :func:`~dios.dicom.dx.write_dx`: a Digital X-Ray Image For Presentation
    (1.2.840.10008.5.1.4.1.1.1.1) filled from patient, study, series, image, acquisition
    and detector facts, validated, written atomically, clean under ``dciodvfy``.
``reader``
    :func:`~dios.dicom.reader.read_image`: any uncompressed single-frame grey DICOM image
    (DX, CR, raw or processed) to a ``uint16`` array plus metadata, with clear errors for
    everything it cannot take.
``png``
    8-bit PNG previews of a windowed image, and PNG uploads turned into DICOM
    (:func:`~dios.dicom.png.png_to_dx`, which writes Secondary Capture: see its notes).

The errors below carry a result code from :mod:`dios.codes` (so the services can reply with
an envelope) and are also ordinary ``ValueError`` / ``TypeError`` exceptions.

Imports: pydicom, numpy, Pillow, OpenCV, :mod:`dios.codes`, :mod:`dios.uids`,
:mod:`dios.atomic`. Nothing here imports the bus, devices, services or ``processing``.
"""

from __future__ import annotations

from dios.codes import INVALID_FIELD, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA, DiosError

__all__ = ["DicomFieldError", "DicomFieldTypeError", "ImageTooLargeError",
           "UnsupportedImageError"]


class DicomFieldError(DiosError, ValueError):
    """An input value cannot be written (wrong value, range, length or syntax).

    ``field`` names the offending input, e.g. ``"patient.patient_sex"`` or ``"pixels"``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(INVALID_FIELD, f"{field}: {message}", field=field)


class DicomFieldTypeError(DiosError, TypeError):
    """An input has the wrong Python type (e.g. a list where a dict is expected)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(INVALID_FIELD, f"{field}: {message}", field=field)


class UnsupportedImageError(DiosError, ValueError):
    """The bytes are not an image this layer can take (not DICOM/PNG, compressed, colour...)."""

    def __init__(self, message: str) -> None:
        super().__init__(UNSUPPORTED_MEDIA, message)


class ImageTooLargeError(DiosError, ValueError):
    """The file or its decoded image exceeds the configured size limit."""

    def __init__(self, message: str) -> None:
        super().__init__(PAYLOAD_TOO_LARGE, message)
