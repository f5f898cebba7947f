"""The engine's DICOM layer: values, reusable modules, and writing, reading and converting
single-frame grey images.

What lives where (each level imports only the ones above it in this list)
--------------------------------------------------------------------------
this package (``dios.dicom``)
    The errors below. They carry a result code from :mod:`dios.codes` (so the services can
    reply with an envelope) and are also ordinary ``ValueError`` / ``TypeError``
    exceptions.
``values``
    DICOM codes (body parts with :func:`~dios.dicom.values.anatomic_region`, view and
    species codes, code sequence items) and value converters (text, numbers and DS/IS,
    UIDs, dates, times and the time-zone offset, age strings, CS, multi-values, booleans,
    the console's study id), and the checks over a whole dataset (character set, every
    value against its VR). Every converter names the input field in its error.
``modules``
    :class:`~dios.dicom.modules.DatasetBuilder` and the modules shared by everything the
    engine writes or sends: Patient (with the veterinary attributes), General Study,
    General Series, General Equipment, General Image basics, SOP Common; the accepted
    field sets (:data:`~dios.dicom.modules.PATIENT_FIELDS`,
    :data:`~dios.dicom.modules.ANIMAL_ONLY_FIELDS`, ...). No pixel data, no IOD: a DICOM
    network message (worklist, MPPS) is built from these without the DX writer.
``dx``
    :func:`~dios.dicom.dx.write_dx`: a Digital X-Ray Image For Presentation
    (1.2.840.10008.5.1.4.1.1.1.1) filled from patient, study, series, image, acquisition
    and detector facts, validated, written atomically, clean under ``dciodvfy``. Only the
    DX-specific modules (image pixel, DX acquisition/detector/positioning, window, display
    shutter) live here, with :func:`~dios.dicom.dx.build_common` and
    :func:`~dios.dicom.dx.save_dataset`; the names that moved to ``values`` and
    ``modules`` (``anatomic_region``, ``BODY_PARTS``, ``dicom_study_id``...) stay
    importable from here.
``png``
    8-bit PNG previews of a windowed image, and PNG uploads turned into DICOM
    (:func:`~dios.dicom.png.png_to_dx`, which writes Secondary Capture: see its notes);
    built on ``modules`` and ``dx``.
``reader``
    :func:`~dios.dicom.reader.read_image`: any uncompressed single-frame grey DICOM image
    (DX, CR, raw or processed) to a ``uint16`` array plus metadata, with clear errors for
    everything it cannot take. Imports only this package's errors.

No module here imports another one's private (underscore) names.

Imports: pydicom, numpy, :mod:`dios.codes`, :mod:`dios.uids`, :mod:`dios.atomic` (and, in
``png`` only, Pillow and OpenCV). Never ``processing``, :mod:`dios.devices`,
``simulators``, ``drivers``, nor the bus, the store, the services or anything above.
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
