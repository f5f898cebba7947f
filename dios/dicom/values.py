"""DICOM codes and value converters: the engine's fields turned into checked DICOM values.

Every converter takes the input value and the name of the input field (``"patient.weight"``)
and either returns the DICOM value or raises :class:`~dios.dicom.DicomFieldError` /
:class:`~dios.dicom.DicomFieldTypeError` naming that field, so that a caller can say which
of its inputs is wrong. Nothing here builds a whole dataset or knows an IOD; the modules in
:mod:`dios.dicom.modules` and the writers in :mod:`dios.dicom.dx` / :mod:`dios.dicom.png`
are made of these pieces, and so can DICOM network messages (worklist, MPPS) be.

What lives here
---------------
Codes
    :data:`BODY_PARTS` and :func:`anatomic_region` (BodyPartExamined and the
    AnatomicRegionSequence code, SNOMED CT or the private scheme :data:`LOCAL_SCHEME`),
    :data:`VIEW_CODES` (ViewCodeSequence), :data:`SPECIES_CODES`
    (PatientSpeciesCodeSequence), :func:`code_item` (one code sequence item).
Converters
    :func:`dict_value` (a dict of known keys), :func:`text_value`, :func:`number_value`,
    :func:`format_ds` (DS), :func:`int_value` / :func:`rounded_int_value` /
    :func:`half_up` (IS and US), :func:`uid_value`, :func:`datetime_value`,
    :func:`local_time`, :func:`tz_offset` (TimezoneOffsetFromUTC), :func:`age_value` (AS),
    :func:`cs_value` (CS), :func:`multi_value` (multi-valued text), :func:`bool_value`,
    :func:`dicom_study_id` (the console's study id as StudyID).
Dataset checks
    :data:`CHARSETS` (the SpecificCharacterSet values the engine writes),
    :func:`iter_text_values`, :func:`check_charset` (pick ISO_IR 192 for non-ASCII text,
    check every text fits the set) and :func:`validate_element_values` (every value
    against its VR, the error naming the input field).

Imports: pydicom, numpy, :mod:`dios.uids`, :mod:`dios.dicom` (the errors).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Set
from typing import Any

import numpy as np
from pydicom import config as _pydicom_config
from pydicom.datadict import dictionary_VM
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import format_number_as_ds, validate_value

from dios.dicom import DicomFieldError, DicomFieldTypeError
from dios.uids import UidFactory, uid_problem

__all__ = ["BODY_PARTS", "CHARSETS", "LOCAL_SCHEME", "SPECIES_CODES", "VIEW_CODES",
           "age_value", "anatomic_region", "bool_value", "check_charset", "code_item",
           "cs_value", "datetime_value", "dicom_study_id", "dict_value", "format_ds",
           "half_up", "int_value", "iter_text_values", "local_time", "multi_value",
           "number_value", "rounded_int_value", "text_value", "tz_offset", "uid_value",
           "validate_element_values"]

#: The private coding scheme (PS3.16 8.2: "99" prefix) for body parts without an SCT code.
LOCAL_SCHEME = "99DIOS"

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

#: Species name (upper case) -> the SNOMED CT code for PatientSpeciesCodeSequence.
SPECIES_CODES: dict[str, tuple[str, str]] = {
    "DOG": ("448771007", "Canis lupus familiaris"),
    "CANINE": ("448771007", "Canis lupus familiaris"),
    "CAT": ("448169003", "Felis catus"),
    "FELINE": ("448169003", "Felis catus"),
    "HORSE": ("35354009", "Equus caballus"),
    "EQUINE": ("35354009", "Equus caballus"),
}

#: SpecificCharacterSet values accepted from the study record -> Python codec.
CHARSETS: dict[str, str] = {"": "ascii", "ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1"}
_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
_AGE_RE = re.compile(r"(\d{1,3})\s*([DWMY]?)", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# value converters (each names the input field in its error)
# --------------------------------------------------------------------------------------------


def dict_value(value: object, field: str, allowed: Set[str], *,
               required: bool) -> dict[str, Any]:
    """``value`` as a dict whose keys are all in ``allowed``; ``None`` is ``{}`` unless required.

    A non-mapping is a :class:`~dios.dicom.DicomFieldTypeError`, an unknown key (a typo) a
    :class:`~dios.dicom.DicomFieldError` that lists the allowed keys.
    """
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


def text_value(value: object, field: str) -> str:
    """Text (or an int) stripped; ``None`` is ``""``. No backslash, no control characters."""
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


def number_value(value: object, field: str, *, low: float | None = 0.0,
                 high: float | None = None, optional: bool = True,
                 strict_low: bool = False) -> float | None:
    """A finite number (or numeric text) within ``low``..``high``.

    ``None`` (and, when ``optional``, blank text) is ``None``; without ``optional`` it is an
    error. ``strict_low`` excludes ``low`` itself. ``bool`` is refused.
    """
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


def format_ds(number: float) -> str:
    """``number`` as a Decimal String (DS: at most 16 characters)."""
    return format_number_as_ds(float(number))


def int_value(value: object, field: str, *, low: int | None = None,
              high: int | None = None) -> int:
    """An integer (or integer text) within ``low``..``high``; floats and ``bool`` are refused."""
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


def half_up(number: float) -> int:
    """Round half up (``2.5`` -> ``3``, ``-2.5`` -> ``-2``), not to even as :func:`round`."""
    return int(math.floor(number + 0.5))


def rounded_int_value(value: object, field: str) -> int:
    """A required finite number rounded half up (pixel positions, relative exposure)."""
    number = number_value(value, field, low=None, optional=False)
    assert number is not None
    return half_up(number)


def uid_value(value: object, field: str, factory: UidFactory | None, kind: str) -> str:
    """A valid UID as given, or, when empty, a new one of ``kind`` from ``factory``.

    Empty without a factory is an error (the caller must then supply the UID).
    """
    if value is None or value == "":
        if factory is None:
            raise DicomFieldError(field, "is required (or pass uids= to generate one)")
        return factory.new(kind)
    problem = uid_problem(value)
    if problem is not None:
        raise DicomFieldError(field, f"{value!r} is not a valid DICOM UID: it {problem}")
    return str(value)


def datetime_value(value: object, field: str) -> _dt.datetime | None:
    """A date or date-time: ``YYYYMMDD``, ``YYYYMMDDhhmmss[.f]``, ISO 8601 (``Z`` allowed).

    ``None``/``""`` is ``None``; a :class:`datetime.date` becomes midnight. The result keeps
    the time zone it was given (aware or naive).
    """
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


def local_time(moment: _dt.datetime) -> _dt.datetime:
    """Aware -> this machine's local time (aware); naive stays as it is (already local)."""
    return moment.astimezone() if moment.tzinfo is not None else moment


def tz_offset(moment: _dt.datetime) -> str:
    """The UTC offset of an aware moment as ``+hhmm``/``-hhmm``; ``""`` for a naive one."""
    offset = moment.utcoffset()
    if offset is None:
        return ""
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def age_value(value: object, field: str) -> str:
    """An Age String (AS, ``nnnD/W/M/Y``): ``"5Y"`` -> ``005Y``; a bare number is years."""
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


def cs_value(value: object, field: str, *, max_len: int = 16) -> str:
    """A Code String (CS): upper-cased, letters, digits, space and underscore only."""
    text = text_value(value, field).upper()
    if not re.fullmatch(r"[A-Z0-9 _]*", text):
        raise DicomFieldError(field, f"{value!r}: only letters, digits, space and underscore "
                              "are allowed in this coded value")
    if len(text) > max_len:
        raise DicomFieldError(field, f"{value!r} is longer than {max_len} characters")
    return text


def multi_value(value: object, field: str) -> list[str]:
    """A multi-valued text: a list (each item checked as text) or ``"A\\B"`` split."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split("\\")]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        parts = [text_value(v, field) for v in value]
    else:
        raise DicomFieldTypeError(field, f"must be a list or a backslash-separated string, "
                                  f"not {type(value).__name__}")
    return parts


def bool_value(value: object, field: str) -> bool:
    """A boolean from ``bool``, ``0``/``1`` or ``"true"``/``"false"``/``"1"``/``"0"``/``""``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", ""}:
        return value.strip().lower() in {"true", "1"}
    raise DicomFieldError(field, f"{value!r} is not a boolean")


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


# --------------------------------------------------------------------------------------------
# codes
# --------------------------------------------------------------------------------------------


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One code sequence item: CodeValue, CodingSchemeDesignator, CodeMeaning."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


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
    raw = text_value(body_part, "series.body_part").upper()
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


# --------------------------------------------------------------------------------------------
# checks over a whole dataset (``source`` maps a keyword to the input field it came from)
# --------------------------------------------------------------------------------------------


def validate_element_values(ds: Dataset, source: Mapping[str, str], path: str = "") -> None:
    """Check every element's value against its VR (length, characters, format, VM 1).

    Sequences are walked; an error names ``source[keyword]`` (or ``path`` + keyword inside
    a sequence item).
    """
    for elem in ds:
        keyword = elem.keyword or str(elem.tag)
        field = source.get(keyword, f"{path}{keyword}")
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                validate_element_values(item, {}, f"{field}[{index}].")
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


def iter_text_values(ds: Dataset, source: Mapping[str, str],
                     path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (field, text) for every text value (PN, LO, SH, ST, LT, UT, UC), sequences included."""
    for elem in ds:
        field = source.get(elem.keyword, f"{path}{elem.keyword}")
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                yield from iter_text_values(item, {}, f"{field}[{index}].")
        elif elem.VR in _TEXT_VRS and elem.value is not None:
            values = elem.value if isinstance(elem.value, (MultiValue, list)) else [elem.value]
            for value in values:
                yield field, str(value)


def check_charset(ds: Dataset, source: Mapping[str, str]) -> None:
    """Pick ISO_IR 192 for non-ASCII text unless a set was given; check the text fits it.

    Sets ``ds.SpecificCharacterSet`` when it picks one; a text that the given set cannot
    encode is an error naming its field.
    """
    given = str(ds.get("SpecificCharacterSet", "") or "")
    texts = list(iter_text_values(ds, source))
    if not given:
        if all(text.isascii() for _, text in texts):
            return
        ds.SpecificCharacterSet = given = "ISO_IR 192"
    codec = CHARSETS.get(given, "utf-8")
    for field, text in texts:
        try:
            text.encode(codec)
        except UnicodeEncodeError:
            raise DicomFieldError(field, f"{text!r} cannot be written in character set "
                                  f"{given}; use ISO_IR 192") from None
