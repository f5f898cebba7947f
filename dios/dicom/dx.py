"""Writing a Digital X-Ray Image For Presentation (DX, SOP class 1.2.840.10008.5.1.4.1.1.1.1).

:func:`write_dx` turns the engine's own records (the study service's patient and study
fields, the catalog's series and view facts, the generator's post-exposure readback and the
detector's description) into a DICOM file that ``dciodvfy`` reports no errors on, and
writes it atomically. Every input is checked first; on any error nothing is written.

Field conventions (the study service's units)
---------------------------------------------
=========================  =================================================================
``patient.patient_sex``    ``M``, ``F``, ``O`` or ``U``/``""``. ``U`` (unknown) is written as
                           an empty PatientSex: the DICOM enumeration is M/F/O and an empty
                           Type 2 value is how DICOM says "unknown" (``dciodvfy`` rejects
                           ``U``).
``patient.patient_dob``    ``YYYY-MM-DD``, ``YYYYMMDD``, an ISO datetime (its calendar date is
                           used as written, no time-zone shift) or ``""``.
``patient.patient_age``    ``"5Y"`` -> ``005Y``; also ``D``/``W``/``M`` units, a bare number
                           (years) or an int.
``patient.weight``         kg -> PatientWeight. ``0``/``None``/``""`` = unknown (omitted).
``patient.length``         cm -> PatientSize in metres.
``patient.thickness``      cm -> BodyPartThickness in mm.
``patient.chip_number``    OtherPatientIDsSequence item, TypeOfPatientID ``RFID``, issuer
                           ``MICROCHIP`` (OtherPatientIDs (0010,1000) is retired).
``patient.owner_name``     ResponsiblePerson with ResponsiblePersonRole ``OWNER``.
``patient.is_sedation``    PatientState ``SEDATED``; ``is_anaesthesia`` -> ``ANAESTHETISED``.
``patient.patient_size``   the catalog's size class (Large/Medium/...): accepted, not written.
``study.specific_charset`` ``specific_character_set``: ``ISO_IR 192`` or ``ISO_IR 100``; when
                           absent, ``ISO_IR 192`` is written as soon as any text is not ASCII.
``study.study_id``         StudyID is SH: at most 16 characters. The console's 17-digit
                           ids (``YYYYMMDDhhmmssfff``) are written without the century
                           (``YYMMDDhhmmssfff``, see :func:`dicom_study_id`); any other
                           longer value is an error.
``study.study_datetime``   datetime or ISO text; aware values are converted to this
                           machine's local time and TimezoneOffsetFromUTC is written.
                           Missing: the time of writing. ``study_start_datetime`` (the seed's
                           name) is accepted as well.
``acquisition.dap``        dGy*cm2 (what ImageAndFluoroscopyAreaDoseProduct holds).
``acquisition.sid/sod``    mm.
``acquisition.focus``      focal spot size in mm, or the index 0 (small) / 1 (large) into
                           ``focal_spots_mm`` (default ``(0.6, 1.2)``).
``detector.pixel_pitch_mm`` native element pitch; with ``binning`` b the ImagerPixelSpacing is
                           pitch * b (DetectorElementSpacing keeps the pitch).
=========================  =================================================================

A patient is an animal when ``patient.species`` or ``patient.patient_type`` names anything
but ``Human`` (or the seed's ``SpecialType``); then the veterinary Patient module attributes
are written (species, breed, neutered, owner) and AnatomicalOrientationType ``QUADRUPED``.
The pets-only fields (owner_name, variety, sex_neutered, chip_number) given non-empty for a
human patient are an error.

Imports: pydicom, numpy, :mod:`dios.uids`, :mod:`dios.atomic`, :mod:`dios.dicom`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pydicom
from pydicom import config as _pydicom_config
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds, validate_value

from dios.atomic import atomic_write_with
from dios.dicom import DicomFieldError, DicomFieldTypeError
from dios.uids import UidFactory, uid_problem

__all__ = ["BODY_PARTS", "DX_FOR_PRESENTATION", "LOCAL_SCHEME", "SECONDARY_CAPTURE", "VIEW_CODES",
           "anatomic_region", "write_dx"]

#: The private coding scheme (PS3.16 8.2: "99" prefix) for body parts without an SCT code.
LOCAL_SCHEME = "99DIOS"
#: Digital X-Ray Image Storage - For Presentation
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
#: Secondary Capture Image Storage
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: Body part key -> (BodyPartExamined, SNOMED CT code, code meaning). Keys are what the
#: catalog uses after its ``<PatientType>_`` prefix, upper case; see :func:`anatomic_region`.
BODY_PARTS: dict[str, tuple[str, str, str]] = {
    "CHEST": ("CHEST", "51185008", "Chest"),
    "SKULL": ("SKULL", "89546000", "Skull"),
    "HEAD": ("HEAD", "69536005", "Head"),
    "FACE": ("FACE", "89545001", "Face"),
    "MANDIBLE": ("JAW", "91609006", "Mandible"),
    "NECK": ("NECK", "45048000", "Neck"),
    "SPINE": ("SPINE", "421060004", "Spine"),
    "CSPINE": ("CSPINE", "122494005", "Cervical spine"),
    "TSPINE": ("TSPINE", "122495006", "Thoracic spine"),
    "LSPINE": ("LSPINE", "122496007", "Lumbar spine"),
    "SACRUM": ("SACRUM", "54735007", "Sacrum"),
    "COCCYX": ("COCCYX", "64688005", "Coccyx"),
    "SIJOINT": ("SIJOINT", "39723000", "Sacroiliac joint"),
    "CLAVICLE": ("CLAVICLE", "51299004", "Clavicle"),
    "SCAPULA": ("SCAPULA", "79601000", "Scapula"),
    "RIB": ("RIB", "113197003", "Rib"),
    "STERNUM": ("STERNUM", "56873002", "Sternum"),
    "ABDOMEN": ("ABDOMEN", "818981001", "Abdomen"),
    "PELVIS": ("PELVIS", "816092008", "Pelvis"),
    "UPPER LIMB": ("ARM", "53120007", "Upper limb"),
    "LOWER LIMB": ("LEG", "61685007", "Lower limb"),
    "EXTREMITY": ("EXTREMITY", "66019005", "Extremity"),
    "SHOULDER": ("SHOULDER", "16982005", "Shoulder"),
    "HUMERUS": ("HUMERUS", "85050009", "Humerus"),
    "ELBOW": ("ELBOW", "16953009", "Elbow joint"),
    "FOREARM": ("FOREARM", "14975008", "Forearm"),
    "WRIST": ("WRIST", "74670003", "Wrist joint"),
    "CARPUS": ("CARPUS", "8205005", "Carpus"),
    "HAND": ("HAND", "85562004", "Hand"),
    "FINGER": ("FINGER", "7569003", "Finger"),
    "HIP": ("HIP", "29836001", "Hip"),
    "FEMUR": ("FEMUR", "71341001", "Femur"),
    "THIGH": ("THIGH", "68367000", "Thigh"),
    "KNEE": ("KNEE", "72696002", "Knee"),
    "PATELLA": ("PATELLA", "64234005", "Patella"),
    "LEG": ("LEG", "30021000", "Lower leg"),
    "ANKLE": ("ANKLE", "70258002", "Ankle joint"),
    "TARSUS": ("TARSUS", "108371006", "Tarsus"),
    "CALCANEUS": ("CALCANEUS", "80144004", "Calcaneus"),
    "FOOT": ("FOOT", "56459004", "Foot"),
    "TOE": ("TOE", "29707007", "Toe"),
}

_BODY_PART_ALIASES = {
    "THORAX": "CHEST", "LUNG": "CHEST", "LUNGS": "CHEST",
    "CERVICAL SPINE": "CSPINE", "C SPINE": "CSPINE",
    "THORACIC SPINE": "TSPINE", "T SPINE": "TSPINE",
    "LUMBAR SPINE": "LSPINE", "L SPINE": "LSPINE",
    "WHOLE SPINE": "SPINE", "VERTEBRAL COLUMN": "SPINE",
    "SACROILIAC JOINT": "SIJOINT", "SI JOINT": "SIJOINT",
    "RIBS": "RIB", "JAW": "MANDIBLE",
    "ARM": "UPPER LIMB", "UPPER ARM": "HUMERUS", "UPPER EXTREMITY": "UPPER LIMB",
    "FORELIMB": "UPPER LIMB", "THORACIC LIMB": "UPPER LIMB",
    "LOWER EXTREMITY": "LOWER LIMB", "HINDLIMB": "LOWER LIMB", "PELVIC LIMB": "LOWER LIMB",
    "LOWER LEG": "LEG", "TIBIA": "LEG", "STIFLE": "KNEE", "HOCK": "TARSUS", "PAW": "FOOT",
    "HIP JOINT": "HIP", "KNEE JOINT": "KNEE", "ELBOW JOINT": "ELBOW", "WRIST JOINT": "WRIST",
    "ANKLE JOINT": "ANKLE", "HEEL": "CALCANEUS",
}

#: ViewPosition -> the SNOMED CT view code for ViewCodeSequence (CID 4010/7484 concepts).
VIEW_CODES: dict[str, tuple[str, str]] = {
    "AP": ("399348003", "antero-posterior"),
    "PA": ("272479007", "postero-anterior"),
    "LL": ("399173006", "left lateral"),
    "RL": ("399198007", "right lateral"),
    "LAT": ("49370004", "Lateral"),
    "LATERAL": ("49370004", "Lateral"),
    "OBL": ("21114003", "Oblique"),
    "AXIAL": ("24422004", "Axial"),
    "LPO": ("399006002", "left posterior oblique"),
    "RAO": ("399356000", "right anterior oblique"),
    "DV": ("441672003", "Dorso-ventral"),
    "VD": ("442441009", "Ventro-dorsal"),
}

_HUMAN_TYPES = {"", "HUMAN", "SPECIALTYPE"}
_SPECIES_CODES = {
    "DOG": ("448771007", "Canis lupus familiaris"),
    "CANINE": ("448771007", "Canis lupus familiaris"),
    "CAT": ("448169003", "Felis catus"),
    "FELINE": ("448169003", "Felis catus"),
    "HORSE": ("35354009", "Equus caballus"),
    "EQUINE": ("35354009", "Equus caballus"),
}
#: SpecificCharacterSet values accepted from the study record -> Python codec.
_CHARSETS = {"": "ascii", "ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1"}
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
_SEX_VALUES = {"M": "M", "F": "F", "O": "O", "U": "", "": ""}
_LATERALITY = {"R", "L", "U", "B"}
_DETECTOR_TYPES = {"DIRECT", "SCINTILLATOR", "STORAGE", "FILM"}
_SHUTTER_SHAPES = ("RECTANGULAR", "CIRCULAR", "POLYGONAL")
_ORIENT_RE = re.compile(r"(?:A|P|R|L|H|F|CR|CD|D|V|M|LE|PR|DI|PA|PL|RO)+")
_AGE_RE = re.compile(r"(\d{1,3})\s*([DWMY]?)", re.IGNORECASE)
_LATERAL_VIEWS = {"LAT", "LL", "RL", "LLD", "RLD", "LATERAL"}

_PATIENT_KEYS = {
    "patient_id", "patient_name", "patient_sex", "patient_dob", "patient_age", "weight",
    "length", "thickness", "patient_english_name", "patient_former_name", "other_patient_names",
    "other_patient_ids", "patient_size", "comment", "owner_name", "variety", "patient_type",
    "species", "sex_neutered", "chip_number", "pregnancy_status", "is_sedation",
    "is_anaesthesia", "patient_state",
}
_STUDY_KEYS = {
    "study_instance_uid", "study_id", "accession_number", "ref_physician", "study_description",
    "study_datetime", "study_start_datetime", "operator_name", "performed_physician",
    "specific_character_set",
}
_SERIES_KEYS = {
    "series_instance_uid", "series_number", "body_part", "view_position", "protocol_name",
    "series_description", "anatomic_region", "modality",
}
_IMAGE_KEYS = {
    "sop_instance_uid", "instance_number", "image_laterality", "image_type", "derivation",
    "patient_orientation", "acquisition_datetime", "content_datetime",
    "image_comments",
}
_ACQUISITION_KEYS = {
    "kv", "ma", "ms", "mas", "dap", "focus", "focal_spots_mm", "sid", "sod", "ei",
    "target_ei", "di", "sensitivity", "aec", "grid", "filter_type", "filter_material",
    "anode_target_material", "relative_exposure", "acquisition_datetime", "positioner_type",
}
_DETECTOR_KEYS = {
    "detector_id", "detector_type", "pixel_pitch_mm", "manufacturer", "model",
    "serial_number", "bits", "binning", "mode", "temperature", "description",
}
_SHUTTER_KEYS = {
    "ShutterShape", "ShutterLeftVerticalEdge", "ShutterRightVerticalEdge",
    "ShutterUpperHorizontalEdge", "ShutterLowerHorizontalEdge", "CenterOfCircularShutter",
    "RadiusOfCircularShutter", "VerticesOfThePolygonalShutter", "ShutterPresentationValue",
}
_PETS_ONLY = ("owner_name", "variety", "sex_neutered", "chip_number")


# --------------------------------------------------------------------------------------------
# small value converters (each names the input field in its error)
# --------------------------------------------------------------------------------------------


def _mapping(value: object, field: str, allowed: set[str], *, required: bool) -> dict[str, Any]:
    if value is None:
        if required:
            raise DicomFieldTypeError(field, "a dict is required, got None")
        return {}
    if not isinstance(value, Mapping):
        raise DicomFieldTypeError(field, f"must be a dict, not {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise DicomFieldError(field, f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(value)


def _text(value: object, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DicomFieldTypeError(field, f"must be text, not {type(value).__name__}")
    text = str(value).strip()
    if "\\" in text:
        raise DicomFieldError(field, "must not contain a backslash (the DICOM value separator)")
    if any(ord(c) < 32 for c in text):
        raise DicomFieldError(field, "must not contain control characters")
    return text


def _number(value: object, field: str, *, low: float | None = 0.0, high: float | None = None,
            optional: bool = True, strict_low: bool = False) -> float | None:
    if value is None or (optional and isinstance(value, str) and value.strip() == ""):
        if optional:
            return None
        raise DicomFieldError(field, "a number is required")
    if isinstance(value, bool):
        raise DicomFieldTypeError(field, "must be a number, not bool")
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise DicomFieldError(field, f"{value!r} is not a number") from None
    elif isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
    else:
        raise DicomFieldTypeError(field, f"must be a number, not {type(value).__name__}")
    if not math.isfinite(number):
        raise DicomFieldError(field, f"must be finite, got {number}")
    if low is not None and strict_low and number <= low:
        raise DicomFieldError(field, f"{number:g} must be greater than {low:g}")
    if low is not None and number < low:
        raise DicomFieldError(field, f"{number:g} is below the minimum {low:g}")
    if high is not None and number > high:
        raise DicomFieldError(field, f"{number:g} exceeds the maximum {high:g}")
    return number


def _ds(number: float) -> str:
    return format_number_as_ds(float(number))


def _int(value: object, field: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        raise DicomFieldTypeError(field, f"must be an integer, not {type(value).__name__}")
    try:
        number = int(value)
    except ValueError:
        raise DicomFieldError(field, f"{value!r} is not an integer") from None
    if low is not None and number < low:
        raise DicomFieldError(field, f"{number} is below the minimum {low}")
    if high is not None and number > high:
        raise DicomFieldError(field, f"{number} exceeds the maximum {high}")
    return number


def _half_up(number: float) -> int:
    return int(math.floor(number + 0.5))


def _round_int(value: object, field: str) -> int:
    number = _number(value, field, low=None, optional=False)
    assert number is not None
    return _half_up(number)


def _uid(value: object, field: str, factory: UidFactory | None, kind: str) -> str:
    if value is None or value == "":
        if factory is None:
            raise DicomFieldError(field, "is required (or pass uids= to generate one)")
        return factory.new(kind)
    problem = uid_problem(value)
    if problem is not None:
        raise DicomFieldError(field, f"{value!r} is not a valid DICOM UID: it {problem}")
    return str(value)


def _parse_datetime(value: object, field: str) -> _dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, str):
        raise DicomFieldTypeError(field, f"must be a date/time string, not {type(value).__name__}")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{8}", text):
            return _dt.datetime.strptime(text, "%Y%m%d")
        if re.fullmatch(r"\d{14}(\.\d{1,6})?", text):
            return _dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S")
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DicomFieldError(field, f"{value!r} is not a date (YYYY-MM-DD, YYYYMMDD) or an "
                              "ISO 8601 date-time") from None


def _local(moment: _dt.datetime) -> _dt.datetime:
    """Aware -> this machine's local time (aware); naive stays as it is (already local)."""
    return moment.astimezone() if moment.tzinfo is not None else moment


def _tz_offset(moment: _dt.datetime) -> str:
    offset = moment.utcoffset()
    if offset is None:
        return ""
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _age(value: object, field: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        raise DicomFieldTypeError(field, "must be an age like '5Y', not bool")
    if isinstance(value, (int, np.integer)):
        text = str(int(value))
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise DicomFieldTypeError(field, f"must be an age like '5Y', not {type(value).__name__}")
    match = _AGE_RE.fullmatch(text)
    if not match:
        raise DicomFieldError(field, f"{value!r} is not an age: use a number of up to 3 digits "
                              "with D, W, M or Y (e.g. '5Y', '18M')")
    return f"{int(match.group(1)):03d}{(match.group(2) or 'Y').upper()}"


def _cs(value: object, field: str, *, max_len: int = 16) -> str:
    text = _text(value, field).upper()
    if not re.fullmatch(r"[A-Z0-9 _]*", text):
        raise DicomFieldError(field, f"{value!r}: only letters, digits, space and underscore "
                              "are allowed in this coded value")
    if len(text) > max_len:
        raise DicomFieldError(field, f"{value!r} is longer than {max_len} characters")
    return text


def _multi(value: object, field: str) -> list[str]:
    if isinstance(value, str):
        parts = [p.strip() for p in value.split("\\")]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        parts = [_text(v, field) for v in value]
    else:
        raise DicomFieldTypeError(field, f"must be a list or a backslash-separated string, "
                                  f"not {type(value).__name__}")
    return parts


def _bool(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", ""}:
        return value.strip().lower() in {"true", "1"}
    raise DicomFieldError(field, f"{value!r} is not a boolean")


# --------------------------------------------------------------------------------------------
# anatomy
# --------------------------------------------------------------------------------------------


def anatomic_region(body_part: str) -> tuple[str, tuple[str, str, str]]:
    """Map a catalog body part to (BodyPartExamined, (code, scheme, meaning) or None).

    Parameters
    ----------
    body_part : str
        A catalog id such as ``Human_SKULL``, ``Dog_THORAX`` or ``Human_UPPER LIMB``, or a
        plain name (``chest``, ``cervical spine``). The part before the first ``_`` is
        dropped when the whole name is not known.

    Returns
    -------
    tuple
        ``BodyPartExamined`` (upper case, at most 16 characters) and the SNOMED CT code
        triple ``(value, "SCT", meaning)``. A body part outside :data:`BODY_PARTS` (a custom
        catalog entry) gets a code of the local scheme :data:`LOCAL_SCHEME` whose value is
        the name itself, so that AnatomicRegionSequence still says what was imaged.

    Raises
    ------
    DicomFieldError
        When the name cannot be a BodyPartExamined value.
    """
    raw = _text(body_part, "series.body_part").upper()
    candidates = [raw]
    if "_" in raw:
        candidates.append(raw.split("_", 1)[1])
    for name in list(candidates):
        spaced = re.sub(r"[\s_\-]+", " ", name).strip()
        candidates += [spaced, spaced.replace(" ", "")]
    for name in candidates:
        key = _BODY_PART_ALIASES.get(name, name)
        if key in BODY_PARTS:
            examined, code, meaning = BODY_PARTS[key]
            return examined, (code, "SCT", meaning)
    fallback = re.sub(r"[^A-Z0-9 ]+", " ", candidates[-1]).strip()[:16].strip()
    if not fallback:
        raise DicomFieldError("series.body_part", f"{body_part!r} names no body part")
    return fallback, (fallback, LOCAL_SCHEME, fallback.title())


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


# --------------------------------------------------------------------------------------------
# the dataset builder
# --------------------------------------------------------------------------------------------


class _Builder:
    """A dataset plus, for every keyword set, the input field it came from (for errors)."""

    def __init__(self) -> None:
        self.ds = Dataset()
        self.source: dict[str, str] = {}

    def set(self, keyword: str, value: Any, field: str) -> None:
        # Values are checked once, all together, by _validate_element_values (which names
        # the input field); pydicom's own per-assignment warnings are not wanted here.
        tag = tag_for_keyword(keyword)
        vr = dictionary_VR(tag) if tag is not None else ""
        if tag is None or " or " in vr:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                setattr(self.ds, keyword, value)
        else:
            self.ds[tag] = DataElement(tag, vr, value,
                                       validation_mode=_pydicom_config.IGNORE)
        self.source[keyword] = field


def _validate_element_values(ds: Dataset, source: Mapping[str, str], path: str = "") -> None:
    """Check every element's value against its VR (length, characters, format)."""
    for elem in ds:
        keyword = elem.keyword or str(elem.tag)
        field = source.get(keyword, f"{path}{keyword}")
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                _validate_element_values(item, {}, f"{field}[{index}].")
            continue
        if elem.VR in {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "UT", "UR"} or elem.value is None:
            continue
        values = list(elem.value) if isinstance(elem.value, (MultiValue, list)) else [elem.value]
        try:
            vm = dictionary_VM(elem.tag)
        except KeyError:
            vm = ""
        if vm == "1" and len(values) > 1:
            raise DicomFieldError(field, f"takes one value ({keyword}), got {len(values)}")
        for item in values:
            if isinstance(item, str) and "\\" in item and vm != "1":
                continue
            if elem.VR in {"DS", "IS", "PN"}:
                item = str(item)
            try:
                validate_value(elem.VR, item, _pydicom_config.RAISE)
            except ValueError as exc:
                raise DicomFieldError(field, f"{item!r} is not valid for {keyword} "
                                      f"(VR {elem.VR}): {str(exc).split(' Please see')[0]}") from None


def _text_values(ds: Dataset, source: Mapping[str, str],
                 path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (field, text) for every text value, sequences included."""
    for elem in ds:
        field = source.get(elem.keyword, f"{path}{elem.keyword}")
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                yield from _text_values(item, {}, f"{field}[{index}].")
        elif elem.VR in _TEXT_VRS and elem.value is not None:
            values = elem.value if isinstance(elem.value, (MultiValue, list)) else [elem.value]
            for value in values:
                yield field, str(value)


def _check_charset(ds: Dataset, source: Mapping[str, str]) -> None:
    """Pick ISO_IR 192 for non-ASCII text unless a set was given; check the text fits it."""
    given = str(ds.get("SpecificCharacterSet", "") or "")
    texts = list(_text_values(ds, source))
    if not given:
        if all(text.isascii() for _, text in texts):
            return
        ds.SpecificCharacterSet = given = "ISO_IR 192"
    codec = _CHARSETS.get(given, "utf-8")
    for field, text in texts:
        try:
            text.encode(codec)
        except UnicodeEncodeError:
            raise DicomFieldError(field, f"{text!r} cannot be written in character set "
                                  f"{given}; use ISO_IR 192") from None


def _pixel_module(b: _Builder, pixels: object, bits_stored: object) -> np.ndarray:
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


def _patient_module(b: _Builder, patient: object) -> bool:
    p = _mapping(patient, "patient", _PATIENT_KEYS, required=True)
    species_text = _text(p.get("species"), "patient.species")
    ptype = _text(p.get("patient_type"), "patient.patient_type")
    if species_text and species_text.upper() in _HUMAN_TYPES - {""}:
        species_text = ""
    animal = bool(species_text) or ptype.upper() not in _HUMAN_TYPES
    if not animal:
        for key in _PETS_ONLY:
            if _text(p.get(key), f"patient.{key}"):
                raise DicomFieldError(f"patient.{key}", "is for animal patients only; set "
                                      "patient.species or a non-human patient.patient_type")

    b.set("PatientName", _text(p.get("patient_name"), "patient.patient_name"),
          "patient.patient_name")
    b.set("PatientID", _text(p.get("patient_id"), "patient.patient_id"), "patient.patient_id")
    dob = _parse_datetime(p.get("patient_dob"), "patient.patient_dob")
    b.set("PatientBirthDate", dob.strftime("%Y%m%d") if dob else "", "patient.patient_dob")
    sex_in = p.get("patient_sex", "")
    if not isinstance(sex_in, str) and sex_in is not None:
        raise DicomFieldTypeError("patient.patient_sex", f"must be text, not {type(sex_in).__name__}")
    sex_key = (sex_in or "").strip().upper()
    if sex_key not in _SEX_VALUES:
        raise DicomFieldError("patient.patient_sex", f"{sex_in!r} is not one of M, F, O, U")
    b.set("PatientSex", _SEX_VALUES[sex_key], "patient.patient_sex")

    age = _age(p.get("patient_age"), "patient.patient_age")
    if age:
        b.set("PatientAge", age, "patient.patient_age")
    weight = _number(p.get("weight"), "patient.weight", low=0, high=5000)
    if weight:
        b.set("PatientWeight", _ds(weight), "patient.weight")
    length = _number(p.get("length"), "patient.length", low=0, high=1000)
    if length:
        b.set("PatientSize", _ds(length / 100.0), "patient.length")
    thickness = _number(p.get("thickness"), "patient.thickness", low=0, high=500)
    if thickness:
        b.set("BodyPartThickness", _ds(thickness * 10.0), "patient.thickness")
    other_names = [n for n in (_text(p.get(k), f"patient.{k}") for k in
                               ("patient_english_name", "patient_former_name")) if n]
    if p.get("other_patient_names"):
        other_names += [n for n in _multi(p["other_patient_names"], "patient.other_patient_names")
                        if n]
    if other_names:
        b.set("OtherPatientNames", other_names, "patient.other_patient_names")
    comment = _text(p.get("comment"), "patient.comment")
    if comment:
        b.set("PatientComments", comment, "patient.comment")

    other_ids = Sequence()
    if p.get("other_patient_ids"):
        for other in _multi(p["other_patient_ids"], "patient.other_patient_ids"):
            if other:
                item = Dataset()
                item.PatientID = other
                item.TypeOfPatientID = "TEXT"
                other_ids.append(item)
    chip = _text(p.get("chip_number"), "patient.chip_number")
    if chip:
        item = Dataset()
        item.PatientID = chip
        item.IssuerOfPatientID = "MICROCHIP"
        item.TypeOfPatientID = "RFID"
        other_ids.append(item)
    if other_ids:
        b.set("OtherPatientIDsSequence", other_ids, "patient.chip_number")

    states = []
    if _bool(p.get("is_anaesthesia", False), "patient.is_anaesthesia"):
        states.append("ANAESTHETISED")
    elif _bool(p.get("is_sedation", False), "patient.is_sedation"):
        states.append("SEDATED")
    extra_state = _text(p.get("patient_state"), "patient.patient_state")
    if extra_state:
        states.append(extra_state)
    if states:
        b.set("PatientState", " ".join(states), "patient.patient_state")

    pregnancy = p.get("pregnancy_status")
    if pregnancy not in (None, "", 0, "0"):
        b.set("PregnancyStatus", _int(pregnancy, "patient.pregnancy_status", low=1, high=4),
              "patient.pregnancy_status")

    if animal:
        species = species_text or ptype
        b.set("PatientSpeciesDescription", species, "patient.species")
        code = _SPECIES_CODES.get(species.upper())
        if code:
            b.set("PatientSpeciesCodeSequence", Sequence([_code_item(code[0], "SCT", code[1])]),
                  "patient.species")
        b.set("PatientBreedDescription", _text(p.get("variety"), "patient.variety"),
              "patient.variety")
        b.set("PatientBreedCodeSequence", Sequence(), "patient.variety")
        b.set("BreedRegistrationSequence", Sequence(), "patient.variety")
        neutered = _text(p.get("sex_neutered"), "patient.sex_neutered").upper()
        neutered = {"TRUE": "ALTERED", "YES": "ALTERED", "FALSE": "UNALTERED",
                    "NO": "UNALTERED"}.get(neutered, neutered)
        if neutered not in {"", "ALTERED", "UNALTERED"}:
            raise DicomFieldError("patient.sex_neutered", f"{p.get('sex_neutered')!r} is not "
                                  "ALTERED or UNALTERED")
        b.set("PatientSexNeutered", neutered, "patient.sex_neutered")
        owner = _text(p.get("owner_name"), "patient.owner_name")
        b.set("ResponsiblePerson", owner, "patient.owner_name")
        if owner:
            b.set("ResponsiblePersonRole", "OWNER", "patient.owner_name")
        b.set("ResponsibleOrganization", "", "patient.owner_name")
    return animal


def _study_module(b: _Builder, study: object, uids: UidFactory | None,
                  now: _dt.datetime) -> None:
    s = _mapping(study, "study", _STUDY_KEYS, required=True)
    b.set("StudyInstanceUID", _uid(s.get("study_instance_uid"), "study.study_instance_uid",
                                   uids, "study"), "study.study_instance_uid")
    key = "study_datetime" if s.get("study_datetime") not in (None, "") else "study_start_datetime"
    moment = _parse_datetime(s.get(key), f"study.{key}") or now
    moment = _local(moment)
    b.set("StudyDate", moment.strftime("%Y%m%d"), f"study.{key}")
    b.set("StudyTime", moment.strftime("%H%M%S"), f"study.{key}")
    offset = _tz_offset(moment)
    if offset:
        b.set("TimezoneOffsetFromUTC", offset, f"study.{key}")
    b.set("StudyID", dicom_study_id(_text(s.get("study_id"), "study.study_id")), "study.study_id")
    b.set("AccessionNumber", _text(s.get("accession_number"), "study.accession_number"),
          "study.accession_number")
    b.set("ReferringPhysicianName", _text(s.get("ref_physician"), "study.ref_physician"),
          "study.ref_physician")
    description = _text(s.get("study_description"), "study.study_description")
    if description:
        b.set("StudyDescription", description, "study.study_description")
    operator = _text(s.get("operator_name"), "study.operator_name")
    if operator:
        b.set("OperatorsName", operator, "study.operator_name")
    performer = _text(s.get("performed_physician"), "study.performed_physician")
    if performer:
        b.set("PerformingPhysicianName", performer, "study.performed_physician")
    charset = _text(s.get("specific_character_set"), "study.specific_character_set")
    if charset not in _CHARSETS:
        raise DicomFieldError("study.specific_character_set", f"{charset!r} is not one of "
                              f"{sorted(c for c in _CHARSETS if c)} (or empty)")
    if charset:
        b.set("SpecificCharacterSet", charset, "study.specific_character_set")


def _series_module(b: _Builder, series: object, uids: UidFactory | None,
                   default_modality: str) -> tuple[str, dict[str, Any]]:
    s = _mapping(series, "series", _SERIES_KEYS, required=True)
    modality = _cs(s.get("modality") or default_modality, "series.modality")
    b.set("Modality", modality, "series.modality")
    b.set("SeriesInstanceUID", _uid(s.get("series_instance_uid"), "series.series_instance_uid",
                                    uids, "series"), "series.series_instance_uid")
    number = s.get("series_number", 1)
    b.set("SeriesNumber", _int(number, "series.series_number", low=0, high=2**31 - 1),
          "series.series_number")
    view = _cs(s.get("view_position", ""), "series.view_position")
    region: tuple[str, str, str] | None = None
    if s.get("body_part"):
        examined, region = anatomic_region(s["body_part"])
        b.set("BodyPartExamined", examined, "series.body_part")
    if s.get("anatomic_region") is not None:
        triple = s["anatomic_region"]
        if (not isinstance(triple, (tuple, list)) or len(triple) != 3
                or not all(isinstance(t, str) and t for t in triple)):
            raise DicomFieldError("series.anatomic_region",
                                  "must be (code value, coding scheme, code meaning)")
        region = (triple[0], triple[1], triple[2])
    for key, keyword in (("protocol_name", "ProtocolName"),
                         ("series_description", "SeriesDescription")):
        text = _text(s.get(key), f"series.{key}")
        if text:
            b.set(keyword, text, f"series.{key}")
    b.set("AnatomicRegionSequence",
          Sequence([_code_item(*region)]) if region else Sequence(), "series.body_part")
    return view, s


def _image_basics(b: _Builder, image: object, uids: UidFactory | None, *, view: str,
                  animal: bool) -> dict[str, Any]:
    i = _mapping(image, "image", _IMAGE_KEYS, required=True)
    b.set("SOPInstanceUID", _uid(i.get("sop_instance_uid"), "image.sop_instance_uid", uids,
                                 "instance"), "image.sop_instance_uid")
    b.set("InstanceNumber", _int(i.get("instance_number", 1), "image.instance_number", low=0,
                                 high=2**31 - 1), "image.instance_number")
    orientation = i.get("patient_orientation")
    if orientation in (None, "", []):
        if animal:
            orientation = ["CR", "D"] if view in _LATERAL_VIEWS else ["L", "CD"]
        else:
            orientation = ["P", "F"] if view in _LATERAL_VIEWS else ["L", "F"]
    values = [v.upper() for v in _multi(orientation, "image.patient_orientation")]
    if len(values) != 2 or not all(_ORIENT_RE.fullmatch(v) for v in values):
        raise DicomFieldError("image.patient_orientation", f"{orientation!r} must be two "
                              "directions (row, column) made of A P R L H F (or the quadruped "
                              "terms CR CD D V M LE PR DI PA PL RO)")
    b.set("PatientOrientation", values, "image.patient_orientation")
    if animal:
        b.set("AnatomicalOrientationType", "QUADRUPED", "patient.patient_type")
    comments = _text(i.get("image_comments"), "image.image_comments")
    if comments:
        b.set("ImageComments", comments, "image.image_comments")
    return i


def _image_type(value: object, default: list[str]) -> list[str]:
    if value in (None, "", []):
        return default
    values = [v.upper() for v in _multi(value, "image.image_type")]
    if len(values) < 2 or values[0] not in {"ORIGINAL", "DERIVED"} or values[1] not in {
            "PRIMARY", "SECONDARY"}:
        raise DicomFieldError("image.image_type", f"{value!r} must start with ORIGINAL or "
                              "DERIVED, then PRIMARY or SECONDARY (e.g. ORIGINAL\\PRIMARY)")
    return values


def _acquisition_module(b: _Builder, acquisition: object, view: str) -> _dt.datetime | None:
    a = _mapping(acquisition, "acquisition", _ACQUISITION_KEYS, required=False)
    if view:
        b.set("ViewPosition", view, "series.view_position")
        code = VIEW_CODES.get(view)
        if code:
            item = _code_item(code[0], "SCT", code[1])
            item.ViewModifierCodeSequence = Sequence()
            b.set("ViewCodeSequence", Sequence([item]), "series.view_position")
        b.set("PositionerType", _cs(a.get("positioner_type", ""), "acquisition.positioner_type"),
              "acquisition.positioner_type")
    kv = _number(a.get("kv"), "acquisition.kv", low=0, high=200, strict_low=True)
    if kv is not None:
        b.set("KVP", _ds(kv), "acquisition.kv")
    ma = _number(a.get("ma"), "acquisition.ma", low=0, high=5000)
    if ma is not None:
        b.set("XRayTubeCurrent", _half_up(ma), "acquisition.ma")
        b.set("XRayTubeCurrentInuA", _ds(ma * 1000.0), "acquisition.ma")
    ms = _number(a.get("ms"), "acquisition.ms", low=0, high=100000)
    if ms is not None:
        b.set("ExposureTime", _half_up(ms), "acquisition.ms")
        b.set("ExposureTimeInuS", _ds(ms * 1000.0), "acquisition.ms")
    mas = _number(a.get("mas"), "acquisition.mas", low=0, high=10000)
    if mas is None and ma is not None and ms is not None:
        mas = ma * ms / 1000.0
    if mas is not None:
        b.set("Exposure", _half_up(mas), "acquisition.mas")
        b.set("ExposureInuAs", _half_up(mas * 1000.0), "acquisition.mas")
    dap = _number(a.get("dap"), "acquisition.dap", low=0)
    if dap is not None:
        b.set("ImageAndFluoroscopyAreaDoseProduct", _ds(dap), "acquisition.dap")
    focus = a.get("focus")
    if focus not in (None, ""):
        spots = a.get("focal_spots_mm", (0.6, 1.2))
        if not isinstance(spots, (tuple, list)) or len(spots) != 2:
            raise DicomFieldError("acquisition.focal_spots_mm", "must be (small, large) in mm")
        if isinstance(focus, str) and focus.strip().lower() in {"small", "large"}:
            focus = 0 if focus.strip().lower() == "small" else 1
        if isinstance(focus, (int, np.integer)) and not isinstance(focus, bool) and focus in (0, 1):
            size = _number(spots[int(focus)], "acquisition.focal_spots_mm", low=0, high=10,
                           strict_low=True)
        else:
            size = _number(focus, "acquisition.focus", low=0, high=10, strict_low=True)
        assert size is not None
        b.set("FocalSpots", _ds(size), "acquisition.focus")
    for key, keyword, high in (("sid", "DistanceSourceToDetector", 10000.0),
                               ("sod", "DistanceSourceToPatient", 10000.0),
                               ("ei", "ExposureIndex", 1e7),
                               ("target_ei", "TargetExposureIndex", 1e7),
                               ("sensitivity", "Sensitivity", 1e7)):
        value = _number(a.get(key), f"acquisition.{key}", low=0, high=high)
        if value is not None:
            b.set(keyword, _ds(value), f"acquisition.{key}")
    di = _number(a.get("di"), "acquisition.di", low=-100, high=100)
    if di is None:
        ei = _number(a.get("ei"), "acquisition.ei")
        target = _number(a.get("target_ei"), "acquisition.target_ei")
        if ei and target:
            di = 10.0 * math.log10(ei / target)
    if di is not None:
        b.set("DeviationIndex", _ds(round(di, 3)), "acquisition.di")
    if a.get("aec") not in (None, ""):
        b.set("ExposureControlMode", "AUTOMATIC" if _bool(a["aec"], "acquisition.aec")
              else "MANUAL", "acquisition.aec")
    for key, keyword in (("grid", "Grid"), ("filter_type", "FilterType"),
                         ("filter_material", "FilterMaterial"),
                         ("anode_target_material", "AnodeTargetMaterial")):
        if a.get(key) not in (None, ""):
            b.set(keyword, _cs(a[key], f"acquisition.{key}"), f"acquisition.{key}")
    if a.get("relative_exposure") not in (None, ""):
        b.set("RelativeXRayExposure", _round_int(a["relative_exposure"],
                                                 "acquisition.relative_exposure"),
              "acquisition.relative_exposure")
    return _parse_datetime(a.get("acquisition_datetime"), "acquisition.acquisition_datetime")


def _detector_module(b: _Builder, detector: object, extra: Mapping[str, Any]) -> None:
    d = _mapping(detector, "detector", _DETECTOR_KEYS, required=False)
    dtype = _cs(d.get("detector_type", ""), "detector.detector_type")
    if dtype and dtype not in _DETECTOR_TYPES:
        raise DicomFieldError("detector.detector_type", f"{d.get('detector_type')!r} is not one "
                              f"of {sorted(_DETECTOR_TYPES)}")
    b.set("DetectorType", dtype, "detector.detector_type")
    binning = d.get("binning", 1)
    if isinstance(binning, (tuple, list)):
        if len(binning) != 2:
            raise DicomFieldError("detector.binning", "must be an int or (rows, columns)")
        bin_rc = (_int(binning[0], "detector.binning", low=1, high=16),
                  _int(binning[1], "detector.binning", low=1, high=16))
    else:
        factor = _int(binning, "detector.binning", low=1, high=16)
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
            pitch_rc = [_number(v, "detector.pixel_pitch_mm", low=0, high=10, strict_low=True,
                                optional=False) for v in pitch]
        else:
            value = _number(pitch, "detector.pixel_pitch_mm", low=0, high=10, strict_low=True,
                            optional=False)
            pitch_rc = [value, value]
        assert pitch_rc[0] is not None and pitch_rc[1] is not None
        b.set("ImagerPixelSpacing", [_ds(pitch_rc[0] * bin_rc[0]), _ds(pitch_rc[1] * bin_rc[1])],
              "detector.pixel_pitch_mm")
        b.set("DetectorElementSpacing", [_ds(pitch_rc[0]), _ds(pitch_rc[1])],
              "detector.pixel_pitch_mm")
    if bin_rc != (1, 1):
        b.set("DetectorBinning", [_ds(bin_rc[0]), _ds(bin_rc[1])], "detector.binning")
    for key, keyword in (("detector_id", "DetectorID"),
                         ("manufacturer", "DetectorManufacturerName"),
                         ("model", "DetectorManufacturerModelName"),
                         ("mode", "DetectorMode")):
        text = _text(d.get(key), f"detector.{key}")
        if text:
            b.set(keyword, text, f"detector.{key}")
    description = _text(d.get("description"), "detector.description")
    if d.get("bits") not in (None, ""):
        bits = _int(d["bits"], "detector.bits", low=1, high=32)
        description = f"{description}; {bits}-bit" if description else f"{bits}-bit"
    if description:
        b.set("DetectorDescription", description, "detector.description")
    if d.get("temperature") not in (None, ""):
        temp = _number(d["temperature"], "detector.temperature", low=-100, high=150)
        assert temp is not None
        b.set("DetectorTemperature", _ds(temp), "detector.temperature")
    manufacturer = _text(d.get("manufacturer"), "detector.manufacturer")
    b.set("Manufacturer", manufacturer, "detector.manufacturer")
    model = _text(d.get("model"), "detector.model")
    if model:
        b.set("ManufacturerModelName", model, "detector.model")
    serial = _text(d.get("serial_number"), "detector.serial_number")
    if serial:
        b.set("DeviceSerialNumber", serial, "detector.serial_number")


def _window_module(b: _Builder, window: object, bits: int) -> None:
    if window is None:
        center, width = float(1 << (bits - 1)), float(1 << bits)
    else:
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise DicomFieldTypeError("window", "must be a (center, width) pair")
        center = _number(window[0], "window.center", low=None, optional=False)
        width = _number(window[1], "window.width", low=1, optional=False)
        assert center is not None and width is not None
    b.set("WindowCenter", _ds(center), "window")
    b.set("WindowWidth", _ds(width), "window")


def _shutter_module(b: _Builder, shutter: object) -> None:
    if shutter is None:
        return
    s = _mapping(shutter, "shutter", _SHUTTER_KEYS, required=True)
    if "ShutterShape" not in s:
        raise DicomFieldError("shutter.ShutterShape", "is required (RECTANGULAR, CIRCULAR and/or "
                              "POLYGONAL)")
    shapes = [v.upper() for v in _multi(s["ShutterShape"], "shutter.ShutterShape")]
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
        edges = {k: _round_int(s[k], f"shutter.{k}") for k in needed["RECTANGULAR"]}
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
              [_round_int(v, "shutter.CenterOfCircularShutter") for v in center],
              "shutter.CenterOfCircularShutter")
        radius = _round_int(s["RadiusOfCircularShutter"], "shutter.RadiusOfCircularShutter")
        if radius < 1:
            raise DicomFieldError("shutter.RadiusOfCircularShutter", f"{radius} must be >= 1")
        b.set("RadiusOfCircularShutter", radius, "shutter.RadiusOfCircularShutter")
    if "POLYGONAL" in shapes:
        vertices = s["VerticesOfThePolygonalShutter"]
        if not isinstance(vertices, (tuple, list, np.ndarray)):
            raise DicomFieldTypeError("shutter.VerticesOfThePolygonalShutter",
                                      "must be a flat list row1, col1, row2, col2, ...")
        flat = [_round_int(v, "shutter.VerticesOfThePolygonalShutter")
                for v in np.asarray(vertices, dtype=object).ravel()]
        if len(flat) < 6 or len(flat) % 2:
            raise DicomFieldError("shutter.VerticesOfThePolygonalShutter",
                                  f"needs at least 3 (row, column) pairs, got {len(flat)} numbers")
        b.set("VerticesOfThePolygonalShutter", flat, "shutter.VerticesOfThePolygonalShutter")
    value = _int(s.get("ShutterPresentationValue", 0), "shutter.ShutterPresentationValue",
                 low=0, high=65535)
    b.set("ShutterPresentationValue", value, "shutter.ShutterPresentationValue")


def _apply_extra(extra: object) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise DicomFieldTypeError("extra", f"must be a dict, not {type(extra).__name__}")
    for keyword in extra:
        if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
            raise DicomFieldError("extra", f"{keyword!r} is not a DICOM keyword")
        if keyword in {"PixelData", "SOPClassUID", "Rows", "Columns", "BitsAllocated",
                       "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                       "PhotometricInterpretation"}:
            raise DicomFieldError(f"extra.{keyword}", "is set by the writer and cannot be "
                                  "overridden")
    return dict(extra)


def _set_extra(b: _Builder, extra: Mapping[str, Any]) -> None:
    for keyword, value in extra.items():
        try:
            b.set(keyword, value, f"extra.{keyword}")
        except (TypeError, ValueError) as exc:
            raise DicomFieldError(f"extra.{keyword}", f"{value!r} cannot be written "
                                  f"(VR {dictionary_VR(keyword)}): {exc}") from None


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------


def build_common(sop_class_uid: str, pixels: object, *, bits_stored: object, patient: object,
                 study: object, series: object, image: object, uids: UidFactory | None,
                 default_modality: str, now: _dt.datetime | None = None,
                 ) -> tuple[_Builder, np.ndarray, str, bool, dict[str, Any]]:
    """Build the modules every single-frame grey image of the engine shares.

    Returns the builder, the little-endian pixel array, the view position, whether the
    patient is an animal, and the image dict. Used by :func:`write_dx` and by
    :mod:`dios.dicom.png`; not meant for other callers.
    """
    if uids is not None and not isinstance(uids, UidFactory):
        raise DicomFieldTypeError("uids", f"must be a UidFactory, not {type(uids).__name__}")
    now = now or _dt.datetime.now().astimezone()
    b = _Builder()
    b.set("SOPClassUID", sop_class_uid, "sop_class_uid")
    arr = _pixel_module(b, pixels, bits_stored)
    animal = _patient_module(b, patient)
    _study_module(b, study, uids, now)
    view, _ = _series_module(b, series, uids, default_modality)
    img = _image_basics(b, image, uids, view=view, animal=animal)
    b.set("ContentDate", _local(now).strftime("%Y%m%d"), "image.content_datetime")
    b.set("ContentTime", _local(now).strftime("%H%M%S"), "image.content_datetime")
    content = _parse_datetime(img.get("content_datetime"), "image.content_datetime")
    if content is not None:
        b.set("ContentDate", _local(content).strftime("%Y%m%d"), "image.content_datetime")
        b.set("ContentTime", _local(content).strftime("%H%M%S"), "image.content_datetime")
    return b, arr, view, animal, img


def save_dataset(b: _Builder, arr: np.ndarray, path: str | os.PathLike[str],
                 before_write: Callable[[Dataset], None] | None = None) -> Dataset:
    """Validate every value, set the character set and file meta, and write atomically."""
    ds = b.ds
    _check_charset(ds, b.source)
    _validate_element_values(ds, b.source)
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


def dicom_study_id(study_id: str) -> str:
    """The console's study id as DICOM StudyID (SH, at most 16 characters).

    The console's ids are 17 digits, ``YYYYMMDDhhmmssfff``; StudyID drops the century
    (``YYMMDDhhmmssfff``). Anything else passes unchanged (and is checked as SH).

    >>> dicom_study_id("20250625143339389")
    '250625143339389'
    """
    if len(study_id) == 17 and study_id.isdigit() and study_id.startswith("20"):
        return study_id[2:]
    return study_id


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
        The study service's fields (see the module docstring for keys and units). UIDs
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
    extra_values = _apply_extra(extra)
    b, arr, view, _animal, img = build_common(
        DX_FOR_PRESENTATION, pixels, bits_stored=bits_stored, patient=patient, study=study,
        series=series, image=image, uids=uids, default_modality="DX")
    if b.ds.Modality != "DX":
        raise DicomFieldError("series.modality", f"{b.ds.Modality!r}: a DX image has Modality DX")
    bits = int(b.ds.BitsStored)

    # DX Series / DX Anatomy Imaged / DX Image
    b.set("PresentationIntentType", "FOR PRESENTATION", "sop_class_uid")
    laterality = _cs(img.get("image_laterality") or "U", "image.image_laterality")
    if laterality not in _LATERALITY:
        raise DicomFieldError("image.image_laterality", f"{img.get('image_laterality')!r} is not "
                              "one of R, L, U, B")
    b.set("ImageLaterality", laterality, "image.image_laterality")
    b.set("ImageType", _image_type(img.get("image_type"), ["ORIGINAL", "PRIMARY"]),
          "image.image_type")
    derivation = _text(img.get("derivation"), "image.derivation")
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
    moment = acquired or _parse_datetime(img.get("acquisition_datetime"),
                                         "image.acquisition_datetime")
    if moment is not None:
        moment = _local(moment)
        b.set("AcquisitionDateTime", moment.strftime("%Y%m%d%H%M%S.%f")
              + _tz_offset(moment), "acquisition.acquisition_datetime")
        b.set("AcquisitionDate", moment.strftime("%Y%m%d"), "acquisition.acquisition_datetime")
        b.set("AcquisitionTime", moment.strftime("%H%M%S"), "acquisition.acquisition_datetime")
    _detector_module(b, detector, extra_values)
    _shutter_module(b, shutter)
    _set_extra(b, extra_values)
    return save_dataset(b, arr, path)

