"""The reusable DICOM modules: Patient, General Study, General Series, General Equipment,
General Image basics and SOP Common, filled from the engine's records into a dataset builder.

These are the levels every object the engine writes or sends shares: a DX image
(:mod:`dios.dicom.dx`), a Secondary Capture made from an upload (:mod:`dios.dicom.png`),
and DICOM network messages (modality worklist, MPPS) that carry patient and study without
any image. Each ``*_module`` function checks its input dict (unknown keys are an error),
converts the values with :mod:`dios.dicom.values` and sets them on a
:class:`DatasetBuilder`, which remembers for every keyword the input field it came from,
so that the final check (:func:`dios.dicom.values.validate_element_values`) names it.

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
                           (``YYMMDDhhmmssfff``, see :func:`~dios.dicom.values.dicom_study_id`);
                           any other longer value is an error.
``study.study_datetime``   datetime or ISO text; aware values are converted to this
                           machine's local time and TimezoneOffsetFromUTC is written.
                           Missing: the time of writing. ``study_start_datetime`` (the seed's
                           name) is accepted as well.
=========================  =================================================================

A patient is an animal when ``patient.species`` or ``patient.patient_type`` names anything
but ``Human`` (or the seed's ``SpecialType``); then the veterinary Patient module attributes
are written (species, breed, neutered, owner) and AnatomicalOrientationType ``QUADRUPED``.
The pets-only fields (:data:`ANIMAL_ONLY_FIELDS`) given non-empty for a human patient are
an error.

What lives here
---------------
:class:`DatasetBuilder`; the accepted keys :data:`PATIENT_FIELDS`, :data:`ANIMAL_ONLY_FIELDS`,
:data:`STUDY_FIELDS`, :data:`SERIES_FIELDS`, :data:`IMAGE_FIELDS`, :data:`EQUIPMENT_FIELDS`;
:func:`patient_module`, :func:`study_module`, :func:`series_module`,
:func:`equipment_module`, :func:`sop_common_module`, :func:`general_image_module`,
:func:`image_type_value`; extra attributes by keyword (:func:`check_extra`,
:func:`set_extra`); the SOP class :data:`SECONDARY_CAPTURE`.

Imports: pydicom, numpy, :mod:`dios.uids`, :mod:`dios.dicom` (the errors),
:mod:`dios.dicom.values`. Never :mod:`dios.dicom.dx` (the DX writer sits above this).
"""

from __future__ import annotations

import datetime as _dt
import re
import warnings
from collections.abc import Mapping
from typing import Any

from pydicom import config as _pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dios.dicom import DicomFieldError, DicomFieldTypeError
from dios.dicom.values import (
    CHARSETS,
    SPECIES_CODES,
    age_value,
    anatomic_region,
    bool_value,
    code_item,
    cs_value,
    datetime_value,
    dicom_study_id,
    dict_value,
    format_ds,
    int_value,
    local_time,
    multi_value,
    number_value,
    text_value,
    tz_offset,
    uid_value,
)
from dios.uids import UidFactory

__all__ = ["ANIMAL_ONLY_FIELDS", "EQUIPMENT_FIELDS", "IMAGE_FIELDS", "PATIENT_FIELDS",
           "SECONDARY_CAPTURE", "SERIES_FIELDS", "STUDY_FIELDS", "DatasetBuilder",
           "check_extra", "equipment_module", "general_image_module", "image_type_value",
           "patient_module", "series_module", "set_extra", "sop_common_module",
           "study_module"]

#: Secondary Capture Image Storage
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

#: The keys :func:`patient_module` accepts.
PATIENT_FIELDS: frozenset[str] = frozenset({
    "patient_id", "patient_name", "patient_sex", "patient_dob", "patient_age", "weight",
    "length", "thickness", "patient_english_name", "patient_former_name", "other_patient_names",
    "other_patient_ids", "patient_size", "comment", "owner_name", "variety", "patient_type",
    "species", "sex_neutered", "chip_number", "pregnancy_status", "is_sedation",
    "is_anaesthesia", "patient_state",
})
#: The patient keys that are for animal patients only (an error, non-empty, for a human).
ANIMAL_ONLY_FIELDS: tuple[str, ...] = ("owner_name", "variety", "sex_neutered", "chip_number")
#: The keys :func:`study_module` accepts.
STUDY_FIELDS: frozenset[str] = frozenset({
    "study_instance_uid", "study_id", "accession_number", "ref_physician", "study_description",
    "study_datetime", "study_start_datetime", "operator_name", "performed_physician",
    "specific_character_set",
})
#: The keys :func:`series_module` accepts.
SERIES_FIELDS: frozenset[str] = frozenset({
    "series_instance_uid", "series_number", "body_part", "view_position", "protocol_name",
    "series_description", "anatomic_region", "modality",
})
#: The keys :func:`general_image_module` accepts (writers may read more of them).
IMAGE_FIELDS: frozenset[str] = frozenset({
    "sop_instance_uid", "instance_number", "image_laterality", "image_type", "derivation",
    "patient_orientation", "acquisition_datetime", "content_datetime",
    "image_comments",
})
#: The keys :func:`equipment_module` reads (a subset of the DX writer's detector dict).
EQUIPMENT_FIELDS: frozenset[str] = frozenset({"manufacturer", "model", "serial_number"})

_HUMAN_TYPES = {"", "HUMAN", "SPECIALTYPE"}
_SEX_VALUES = {"M": "M", "F": "F", "O": "O", "U": "", "": ""}
_ORIENT_RE = re.compile(r"(?:A|P|R|L|H|F|CR|CD|D|V|M|LE|PR|DI|PA|PL|RO)+")
_LATERAL_VIEWS = {"LAT", "LL", "RL", "LLD", "RLD", "LATERAL"}
#: Keywords the writers own (pixel description and SOP class): never taken from ``extra``.
_WRITER_KEYWORDS = {"PixelData", "SOPClassUID", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                    "PhotometricInterpretation"}


# --------------------------------------------------------------------------------------------
# the dataset builder
# --------------------------------------------------------------------------------------------


class DatasetBuilder:
    """A dataset plus, for every keyword set, the input field it came from (for errors).

    Attributes
    ----------
    ds : pydicom.dataset.Dataset
        The dataset being filled.
    source : dict
        Keyword -> input field (``"patient.weight"``), for
        :func:`~dios.dicom.values.validate_element_values` and
        :func:`~dios.dicom.values.check_charset`.
    """

    def __init__(self) -> None:
        self.ds = Dataset()
        self.source: dict[str, str] = {}

    def set(self, keyword: str, value: Any, field: str) -> None:
        """Set ``keyword`` to ``value`` unchecked, remembering that it came from ``field``."""
        # Values are checked once, all together, by validate_element_values (which names
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


# --------------------------------------------------------------------------------------------
# Patient
# --------------------------------------------------------------------------------------------


def patient_module(b: DatasetBuilder, patient: object) -> bool:
    """Patient module (with the veterinary attributes for an animal) from the patient dict.

    Also PatientAge/Weight/Size, BodyPartThickness and PregnancyStatus (Patient Study and
    DX Anatomy Imaged attributes that come from the same record). Returns whether the
    patient is an animal.
    """
    p = dict_value(patient, "patient", PATIENT_FIELDS, required=True)
    species_text = text_value(p.get("species"), "patient.species")
    ptype = text_value(p.get("patient_type"), "patient.patient_type")
    if species_text and species_text.upper() in _HUMAN_TYPES - {""}:
        species_text = ""
    animal = bool(species_text) or ptype.upper() not in _HUMAN_TYPES
    if not animal:
        for key in ANIMAL_ONLY_FIELDS:
            if text_value(p.get(key), f"patient.{key}"):
                raise DicomFieldError(f"patient.{key}", "is for animal patients only; set "
                                      "patient.species or a non-human patient.patient_type")

    b.set("PatientName", text_value(p.get("patient_name"), "patient.patient_name"),
          "patient.patient_name")
    b.set("PatientID", text_value(p.get("patient_id"), "patient.patient_id"),
          "patient.patient_id")
    dob = datetime_value(p.get("patient_dob"), "patient.patient_dob")
    b.set("PatientBirthDate", dob.strftime("%Y%m%d") if dob else "", "patient.patient_dob")
    sex_in = p.get("patient_sex", "")
    if not isinstance(sex_in, str) and sex_in is not None:
        raise DicomFieldTypeError("patient.patient_sex", f"must be text, not {type(sex_in).__name__}")
    sex_key = (sex_in or "").strip().upper()
    if sex_key not in _SEX_VALUES:
        raise DicomFieldError("patient.patient_sex", f"{sex_in!r} is not one of M, F, O, U")
    b.set("PatientSex", _SEX_VALUES[sex_key], "patient.patient_sex")

    age = age_value(p.get("patient_age"), "patient.patient_age")
    if age:
        b.set("PatientAge", age, "patient.patient_age")
    weight = number_value(p.get("weight"), "patient.weight", low=0, high=5000)
    if weight:
        b.set("PatientWeight", format_ds(weight), "patient.weight")
    length = number_value(p.get("length"), "patient.length", low=0, high=1000)
    if length:
        b.set("PatientSize", format_ds(length / 100.0), "patient.length")
    thickness = number_value(p.get("thickness"), "patient.thickness", low=0, high=500)
    if thickness:
        b.set("BodyPartThickness", format_ds(thickness * 10.0), "patient.thickness")
    other_names = [n for n in (text_value(p.get(k), f"patient.{k}") for k in
                               ("patient_english_name", "patient_former_name")) if n]
    if p.get("other_patient_names"):
        other_names += [n for n in multi_value(p["other_patient_names"],
                                               "patient.other_patient_names") if n]
    if other_names:
        b.set("OtherPatientNames", other_names, "patient.other_patient_names")
    comment = text_value(p.get("comment"), "patient.comment")
    if comment:
        b.set("PatientComments", comment, "patient.comment")

    other_ids = Sequence()
    if p.get("other_patient_ids"):
        for other in multi_value(p["other_patient_ids"], "patient.other_patient_ids"):
            if other:
                item = Dataset()
                item.PatientID = other
                item.TypeOfPatientID = "TEXT"
                other_ids.append(item)
    chip = text_value(p.get("chip_number"), "patient.chip_number")
    if chip:
        item = Dataset()
        item.PatientID = chip
        item.IssuerOfPatientID = "MICROCHIP"
        item.TypeOfPatientID = "RFID"
        other_ids.append(item)
    if other_ids:
        b.set("OtherPatientIDsSequence", other_ids, "patient.chip_number")

    states = []
    if bool_value(p.get("is_anaesthesia", False), "patient.is_anaesthesia"):
        states.append("ANAESTHETISED")
    elif bool_value(p.get("is_sedation", False), "patient.is_sedation"):
        states.append("SEDATED")
    extra_state = text_value(p.get("patient_state"), "patient.patient_state")
    if extra_state:
        states.append(extra_state)
    if states:
        b.set("PatientState", " ".join(states), "patient.patient_state")

    pregnancy = p.get("pregnancy_status")
    if pregnancy not in (None, "", 0, "0"):
        b.set("PregnancyStatus", int_value(pregnancy, "patient.pregnancy_status", low=1, high=4),
              "patient.pregnancy_status")

    if animal:
        species = species_text or ptype
        b.set("PatientSpeciesDescription", species, "patient.species")
        code = SPECIES_CODES.get(species.upper())
        if code:
            b.set("PatientSpeciesCodeSequence", Sequence([code_item(code[0], "SCT", code[1])]),
                  "patient.species")
        b.set("PatientBreedDescription", text_value(p.get("variety"), "patient.variety"),
              "patient.variety")
        b.set("PatientBreedCodeSequence", Sequence(), "patient.variety")
        b.set("BreedRegistrationSequence", Sequence(), "patient.variety")
        neutered = text_value(p.get("sex_neutered"), "patient.sex_neutered").upper()
        neutered = {"TRUE": "ALTERED", "YES": "ALTERED", "FALSE": "UNALTERED",
                    "NO": "UNALTERED"}.get(neutered, neutered)
        if neutered not in {"", "ALTERED", "UNALTERED"}:
            raise DicomFieldError("patient.sex_neutered", f"{p.get('sex_neutered')!r} is not "
                                  "ALTERED or UNALTERED")
        b.set("PatientSexNeutered", neutered, "patient.sex_neutered")
        owner = text_value(p.get("owner_name"), "patient.owner_name")
        b.set("ResponsiblePerson", owner, "patient.owner_name")
        if owner:
            b.set("ResponsiblePersonRole", "OWNER", "patient.owner_name")
        b.set("ResponsibleOrganization", "", "patient.owner_name")
    return animal


# --------------------------------------------------------------------------------------------
# General Study, General Series
# --------------------------------------------------------------------------------------------


def study_module(b: DatasetBuilder, study: object, uids: UidFactory | None,
                 now: _dt.datetime) -> None:
    """General Study module (and the study's SpecificCharacterSet) from the study dict.

    A missing StudyInstanceUID is made with ``uids``; a missing study date-time is ``now``.
    """
    s = dict_value(study, "study", STUDY_FIELDS, required=True)
    b.set("StudyInstanceUID", uid_value(s.get("study_instance_uid"), "study.study_instance_uid",
                                        uids, "study"), "study.study_instance_uid")
    key = "study_datetime" if s.get("study_datetime") not in (None, "") else "study_start_datetime"
    moment = datetime_value(s.get(key), f"study.{key}") or now
    moment = local_time(moment)
    b.set("StudyDate", moment.strftime("%Y%m%d"), f"study.{key}")
    b.set("StudyTime", moment.strftime("%H%M%S"), f"study.{key}")
    offset = tz_offset(moment)
    if offset:
        b.set("TimezoneOffsetFromUTC", offset, f"study.{key}")
    b.set("StudyID", dicom_study_id(text_value(s.get("study_id"), "study.study_id")),
          "study.study_id")
    b.set("AccessionNumber", text_value(s.get("accession_number"), "study.accession_number"),
          "study.accession_number")
    b.set("ReferringPhysicianName", text_value(s.get("ref_physician"), "study.ref_physician"),
          "study.ref_physician")
    description = text_value(s.get("study_description"), "study.study_description")
    if description:
        b.set("StudyDescription", description, "study.study_description")
    operator = text_value(s.get("operator_name"), "study.operator_name")
    if operator:
        b.set("OperatorsName", operator, "study.operator_name")
    performer = text_value(s.get("performed_physician"), "study.performed_physician")
    if performer:
        b.set("PerformingPhysicianName", performer, "study.performed_physician")
    charset = text_value(s.get("specific_character_set"), "study.specific_character_set")
    if charset not in CHARSETS:
        raise DicomFieldError("study.specific_character_set", f"{charset!r} is not one of "
                              f"{sorted(c for c in CHARSETS if c)} (or empty)")
    if charset:
        b.set("SpecificCharacterSet", charset, "study.specific_character_set")


def series_module(b: DatasetBuilder, series: object, uids: UidFactory | None,
                  default_modality: str) -> tuple[str, dict[str, Any]]:
    """General Series module (and BodyPartExamined, AnatomicRegionSequence) from the series dict.

    Returns the checked ViewPosition (CS, possibly empty) and the series dict; the view is
    written by the writer whose IOD has it (DX Positioning).
    """
    s = dict_value(series, "series", SERIES_FIELDS, required=True)
    modality = cs_value(s.get("modality") or default_modality, "series.modality")
    b.set("Modality", modality, "series.modality")
    b.set("SeriesInstanceUID", uid_value(s.get("series_instance_uid"),
                                         "series.series_instance_uid", uids, "series"),
          "series.series_instance_uid")
    number = s.get("series_number", 1)
    b.set("SeriesNumber", int_value(number, "series.series_number", low=0, high=2**31 - 1),
          "series.series_number")
    view = cs_value(s.get("view_position", ""), "series.view_position")
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
        text = text_value(s.get(key), f"series.{key}")
        if text:
            b.set(keyword, text, f"series.{key}")
    b.set("AnatomicRegionSequence",
          Sequence([code_item(*region)]) if region else Sequence(), "series.body_part")
    return view, s


# --------------------------------------------------------------------------------------------
# General Equipment, SOP Common, General Image
# --------------------------------------------------------------------------------------------


def equipment_module(b: DatasetBuilder, equipment: Mapping[str, Any],
                     prefix: str = "detector") -> None:
    """General Equipment module: Manufacturer (Type 2, always written), ManufacturerModelName
    and DeviceSerialNumber from ``manufacturer``, ``model``, ``serial_number``.

    ``equipment`` is an already checked dict (the DX writer passes its detector dict);
    ``prefix`` names it in errors (``"detector.model"``).
    """
    manufacturer = text_value(equipment.get("manufacturer"), f"{prefix}.manufacturer")
    b.set("Manufacturer", manufacturer, f"{prefix}.manufacturer")
    model = text_value(equipment.get("model"), f"{prefix}.model")
    if model:
        b.set("ManufacturerModelName", model, f"{prefix}.model")
    serial = text_value(equipment.get("serial_number"), f"{prefix}.serial_number")
    if serial:
        b.set("DeviceSerialNumber", serial, f"{prefix}.serial_number")


def sop_common_module(b: DatasetBuilder, sop_class_uid: str, sop_instance_uid: object,
                      uids: UidFactory | None, field: str = "image.sop_instance_uid") -> str:
    """SOP Common module: SOPClassUID and SOPInstanceUID (checked, or made with ``uids``).

    Returns the SOP Instance UID. SpecificCharacterSet, the module's third attribute, comes
    from the study (:func:`study_module`) and is settled by
    :func:`~dios.dicom.values.check_charset` when the dataset is saved.
    """
    b.set("SOPClassUID", sop_class_uid, "sop_class_uid")
    uid = uid_value(sop_instance_uid, field, uids, "instance")
    b.set("SOPInstanceUID", uid, field)
    return uid


def general_image_module(b: DatasetBuilder, image: object, uids: UidFactory | None, *,
                         sop_class_uid: str, view: str, animal: bool,
                         now: _dt.datetime) -> dict[str, Any]:
    """General Image basics and SOP Common from the image dict; returns the checked dict.

    Writes SOPClassUID/SOPInstanceUID (:func:`sop_common_module`), InstanceNumber,
    PatientOrientation (default from ``view`` and ``animal``: a lateral view is
    ``P\\F``, ``CR\\D`` for a quadruped, else ``L\\F``, ``L\\CD``),
    AnatomicalOrientationType ``QUADRUPED`` for an animal, ImageComments, and
    ContentDate/ContentTime (``image.content_datetime``, else ``now``, in local time).
    ImageType, laterality and derivation are left to the writer (their defaults differ
    per IOD; see :func:`image_type_value`).
    """
    i = dict_value(image, "image", IMAGE_FIELDS, required=True)
    sop_common_module(b, sop_class_uid, i.get("sop_instance_uid"), uids)
    b.set("InstanceNumber", int_value(i.get("instance_number", 1), "image.instance_number",
                                      low=0, high=2**31 - 1), "image.instance_number")
    orientation = i.get("patient_orientation")
    if orientation in (None, "", []):
        if animal:
            orientation = ["CR", "D"] if view in _LATERAL_VIEWS else ["L", "CD"]
        else:
            orientation = ["P", "F"] if view in _LATERAL_VIEWS else ["L", "F"]
    values = [v.upper() for v in multi_value(orientation, "image.patient_orientation")]
    if len(values) != 2 or not all(_ORIENT_RE.fullmatch(v) for v in values):
        raise DicomFieldError("image.patient_orientation", f"{orientation!r} must be two "
                              "directions (row, column) made of A P R L H F (or the quadruped "
                              "terms CR CD D V M LE PR DI PA PL RO)")
    b.set("PatientOrientation", values, "image.patient_orientation")
    if animal:
        b.set("AnatomicalOrientationType", "QUADRUPED", "patient.patient_type")
    comments = text_value(i.get("image_comments"), "image.image_comments")
    if comments:
        b.set("ImageComments", comments, "image.image_comments")
    b.set("ContentDate", local_time(now).strftime("%Y%m%d"), "image.content_datetime")
    b.set("ContentTime", local_time(now).strftime("%H%M%S"), "image.content_datetime")
    content = datetime_value(i.get("content_datetime"), "image.content_datetime")
    if content is not None:
        b.set("ContentDate", local_time(content).strftime("%Y%m%d"), "image.content_datetime")
        b.set("ContentTime", local_time(content).strftime("%H%M%S"), "image.content_datetime")
    return i


def image_type_value(value: object, default: list[str]) -> list[str]:
    """ImageType from ``image.image_type`` (list or ``A\\B``), or ``default`` when empty.

    The first two values must be ORIGINAL/DERIVED and PRIMARY/SECONDARY.
    """
    if value in (None, "", []):
        return default
    values = [v.upper() for v in multi_value(value, "image.image_type")]
    if len(values) < 2 or values[0] not in {"ORIGINAL", "DERIVED"} or values[1] not in {
            "PRIMARY", "SECONDARY"}:
        raise DicomFieldError("image.image_type", f"{value!r} must start with ORIGINAL or "
                              "DERIVED, then PRIMARY or SECONDARY (e.g. ORIGINAL\\PRIMARY)")
    return values


# --------------------------------------------------------------------------------------------
# extra attributes by keyword
# --------------------------------------------------------------------------------------------


def check_extra(extra: object) -> dict[str, Any]:
    """Check a caller's ``extra`` dict (DICOM keyword -> value) before anything is built.

    Every key must be a DICOM keyword, and none of the pixel description or SOPClassUID,
    which the writers own.
    """
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise DicomFieldTypeError("extra", f"must be a dict, not {type(extra).__name__}")
    for keyword in extra:
        if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
            raise DicomFieldError("extra", f"{keyword!r} is not a DICOM keyword")
        if keyword in _WRITER_KEYWORDS:
            raise DicomFieldError(f"extra.{keyword}", "is set by the writer and cannot be "
                                  "overridden")
    return dict(extra)


def set_extra(b: DatasetBuilder, extra: Mapping[str, Any]) -> None:
    """Set the checked ``extra`` attributes last (they override the modules' values)."""
    for keyword, value in extra.items():
        try:
            b.set(keyword, value, f"extra.{keyword}")
        except (TypeError, ValueError) as exc:
            raise DicomFieldError(f"extra.{keyword}", f"{value!r} cannot be written "
                                  f"(VR {dictionary_VR(keyword)}): {exc}") from None
