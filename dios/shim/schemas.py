"""The schemas of every message the shim sends: replies, envelopes, errors, events, files.

One JSON schema per reply message, by type name (:data:`MESSAGE_SCHEMAS`), in the
OpenAPI 3.0 dialect (``nullable``, ``example``, ``$ref`` into ``#/components/schemas/``):
the OpenAPI document (:mod:`dios.shim.openapi`) carries them as its components, the RPC
method catalogue (:mod:`dios.shim.contract`) as plain JSON Schema
(:func:`json_schema` turns one into the other). Field names, order and enumerations are
the reference console's (seed ``000``), taken from the services' own field lists
(:mod:`dios.study.model`, :mod:`dios.catalog.model`) so that the schemas follow the
replies the server really sends; a field list a service adds to without a schema here
fails at import.

Replies whose ``data`` carries an ``@type`` (``dr.study.Study`` ...) are named by it.
Those the reference console sends untyped (the login reply, the catalog's patient-type
and body-part lists, the role list ...) keep their wire shape, without ``@type``, and get
a name of their own here (:data:`UNTYPED_REPLIES`, by operation). ``dios.Ack`` is the
empty object ``{}`` of the seed's change-password reply; ``google.protobuf.Empty`` the
seed's ``{"@type": ".../google.protobuf.Empty", "value": {}}``.

Objects are not closed (no ``additionalProperties: false``): a client generated from this
contract keeps working when a later minor protocol version adds a field.
"""

from __future__ import annotations

import copy
from typing import Any

from dios.auth.roles import ROLES
from dios.catalog import model as catalog_model
from dios.exchange.nodes import ROLES as DICOM_ROLES
from dios.exchange.outbox import STATES as OUTBOX_STATES
from dios.shim.dispatch import Param
from dios.shim.envelope import EMPTY, type_url
from dios.shim.events import EVENT_SCHEMA, TOPICS
from dios.study import model as study_model

__all__ = [
    "ACK", "COMPONENTS", "DEVICE_REPLY", "DEVICE_REPLY_EXAMPLE", "DEVICE_REPLY_REFUSED_EXAMPLE",
    "DEVICE_REPLY_SCHEMA", "ERROR_ENVELOPE", "EVENT", "FILE", "MESSAGE_SCHEMAS",
    "BINARY_MEDIA_TYPES", "PARAM_ITEMS", "RPC_ERROR", "UNTYPED_REPLIES", "json_schema",
    "param_schema", "ref",
]

#: Where the OpenAPI document keeps its schemas; :func:`ref` points there.
COMPONENTS = "#/components/schemas/"

DEVICE_REPLY = "dr.task.DeviceReply"
ACK = "dios.Ack"
FILE = "dios.File"
EVENT = "dios.Event"
ERROR_ENVELOPE = "dios.ErrorEnvelope"
ERROR_DETAIL = "dios.ErrorDetail"
RPC_ERROR = "dios.rpc.Error"

PRODUCTS = ("DROS", "VETDROS")
CODE_PATTERN = "^0x[0-9A-F]{6}$"


def ref(name: str) -> dict[str, str]:
    """A ``$ref`` to the schema ``name`` of the OpenAPI components."""
    return {"$ref": COMPONENTS + name}


# --- small builders ----------------------------------------------------------------------------
def _with(schema: dict[str, Any], description: str, example: Any, enum: Any,
          nullable: bool) -> dict[str, Any]:
    if enum is not None:
        schema["enum"] = list(enum)
    if nullable:
        schema["nullable"] = True
        if "enum" in schema:
            schema["enum"].append(None)
    if description:
        schema["description"] = description
    if example is not None:
        schema["example"] = example
    return schema


def _s(description: str = "", example: Any = None, enum: Any = None, nullable: bool = False,
       fmt: str = "", pattern: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if fmt:
        schema["format"] = fmt
    if pattern:
        schema["pattern"] = pattern
    return _with(schema, description, example, enum, nullable)


def _i(description: str = "", example: Any = None, enum: Any = None, minimum: int | None = None,
       maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return _with(schema, description, example, enum, False)


def _n(description: str = "", example: Any = None) -> dict[str, Any]:
    return _with({"type": "number"}, description, example, None, False)


def _b(description: str = "", example: Any = None) -> dict[str, Any]:
    return _with({"type": "boolean"}, description, example, None, False)


def _arr(items: dict[str, Any], description: str = "", example: Any = None) -> dict[str, Any]:
    return _with({"type": "array", "items": items}, description, example, None, False)


def _open(description: str = "", nullable: bool = False,
          properties: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object whose members are not fixed (detail, context)."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": True}
    if properties:
        schema["properties"] = properties
    return _with(schema, description, None, None, nullable)


def _obj(properties: dict[str, Any], description: str = "", example: Any = None,
         required: list[str] | None = None) -> dict[str, Any]:
    """An object; every property is required unless ``required`` names the ones that are."""
    schema: dict[str, Any] = {"type": "object",
                              "required": list(properties) if required is None else required,
                              "properties": properties}
    if not schema["required"]:
        del schema["required"]
    return _with(schema, description, example, None, False)


def _type_tag(type_name: str) -> dict[str, Any]:
    return _s(f"the message type: {type_url(type_name)}", enum=[type_url(type_name)])


def _typed(type_name: str, properties: dict[str, Any], description: str,
           example: Any = None, tag_required: bool = True) -> dict[str, Any]:
    """A message with its ``@type`` first (required unless ``tag_required`` is false)."""
    props = {"@type": _type_tag(type_name), **properties}
    required = list(props) if tag_required else list(properties)
    return _obj(props, description, example, required)


def _fields(keys: tuple[str, ...], table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Properties in the order of a service's field list; KeyError for a field without a
    schema (the contract must describe every field the service sends)."""
    return {k: copy.deepcopy(table[k]) for k in keys}


_uid = _s("a DICOM UID", example="1.2.276.0.1000000.5.1.2.701601461.33458.1750833219.482097")
_study_id = _s("the study id (registration time, 17 digits)", example="20250625143339389")
_product = _s("the product the record belongs to", enum=PRODUCTS)
_pre = _b("shipped with the engine (false: a custom entry)")
_sort = _i("sort key (ascending)", example=1)

# --- auth ---------------------------------------------------------------------------------------
LOGIN_REPLY = _obj({
    "token": _s("the bearer token (JWT HS256)"),
    "expire": _i("when the token expires, seconds since the epoch", example=1751277588),
    "uid": _i("the user's id", example=1),
    "name": _s("the user name", example="admin"),
    "avatar": _s("the user's avatar (free text, e.g. an image name)"),
}, "The login reply: the token and who it belongs to (seed: no @type).")

USER = _obj({
    "uid": _i("the user's id", example=3),
    "name": _s("the user name", example="tech1"),
    "role": _s("the user's role", enum=ROLES),
    "avatar": _s("the user's avatar"),
    "disabled": _b("a disabled user cannot log in"),
    "must_change_password": _b("the password must be changed at the next login"),
    "version": _i("record version, for optimistic concurrency (update_user's version)"),
}, "A user account (never the password).")

USER_LIST = _obj({"users": _arr(ref("dr.auth.User"), "every user except the guest")},
                 "The user list.")

ACK_SCHEMA: dict[str, Any] = {
    "type": "object", "maxProperties": 0, "example": {},
    "description": "An empty object {}: the request was carried out (the seed's reply to "
                   "a password change).",
}

EMPTY_SCHEMA = _typed(EMPTY, {"value": {"type": "object", "maxProperties": 0,
                                        "description": "always {}"}},
                      "The seed's empty reply.",
                      example={"@type": type_url(EMPTY), "value": {}})

# --- resource -----------------------------------------------------------------------------------
SERVICE_NAMES = ("auth", "dcmtk", "imgProc", "protocol", "resource", "study", "task")
SERVICE_INFO = _obj({
    "build": _s("newest modification time of the service's sources",
                example="2025-08-25 17:45:18"),
    "desc": _s("what the service does", example="Authentication service"),
    "submodule": _arr(_s(example="3a167dd4[rpc_idl]"),
                      "<hash>[<name>] of each part (rpc_idl: the operation table)"),
    "version": _s("package version and source hash", example="0.3.0-g8b85622"),
}, "One engine service.")

SOFTWARE_INFO = _obj({
    "FPD": _s("the detector backend in use", example="Simulator"),
    "GEN": _s("the generator backend in use", example="Simulator"),
    "guest": _s("a fresh guest token (read-only access, never patient data)"),
    "language": _arr(_s(enum=("en", "zh")), "languages of descriptions and names"),
    "product": _s("the product served", enum=PRODUCTS),
    "server": _obj({name: ref("dr.resource.ServiceInfo") for name in SERVICE_NAMES},
                   "one entry per engine service"),
    "sn": _s("serial number of this install", example="2edbc382-044adc78-95bed11b-51c9328a"),
}, "Software information (seed: no @type): versions, backends, languages, guest token.")

ROLE_LIST = _arr(_s(enum=ROLES), "The assignable roles, in the seed's order.",
                 example=list(ROLES))

OPTION_REPLY = _typed("dr.resource.OptionReply", {
    "option": _arr(_obj({"text": _s("the text shown, in the caller's language",
                                    example="Male"),
                         "value": _s("the value sent back in requests", example="M")}),
                   "the options in display order"),
}, "The options of one enumeration.")

# --- protocol catalog ---------------------------------------------------------------------------
_COMMON_ENTRY = {"sort": _sort, "is_enabled": _b("shown to users"), "product": _product,
                 "is_pre_install": _pre}

_PATIENT_TYPE_FIELDS = {
    "id": _s("row id", example="1"), "patient_type_id": _s(example="Human"),
    "patient_type_name": _s("name in the caller's language", example="Human"),
    "patient_type_local": _s("local name", example="Human"),
    "patient_type_description": _s(example="Human"), **_COMMON_ENTRY,
}
PATIENT_TYPE = _obj(_fields(catalog_model.PATIENT_TYPE_KEYS, _PATIENT_TYPE_FIELDS),
                    "A patient type (Human; veterinary: Dog, Cat ...).")

_BODY_PART_FIELDS = {
    "id": _s("row id", example="1"), "body_part_id": _s(example="Human_SKULL"),
    "body_part_name": _s("name in the caller's language", example="Skull"),
    "body_part_local": _s("local name", example="Skull"),
    "body_part_description": _s(example="Skull"),
    "patient_type": _s("the patient type id", example="Human"),
    "category": _s("modality category", enum=("DX", "RF", "CR")), **_COMMON_ENTRY,
}
BODY_PART = _obj(_fields(catalog_model.BODY_PART_KEYS, _BODY_PART_FIELDS), "A body part.")

_PROCEDURE_FIELDS = {
    "id": _s("row id", example="2"), "procedure_id": _s(example="P0-0002"),
    "procedure_code": _s(example="P0-0002"),
    "procedure_name": _s("name in the caller's language", example="Skull AP + LAT"),
    "procedure_name_local": _s(), "procedure_other_name": _s("English name"),
    "procedure_description": _s(), "procedure_description_local": _s(),
    "patient_type": _s(example="Human"), "body_part_id": _s(example="Human_SKULL"),
    "procedure_type": _s(example="NORMAL"), "fast_search": _b(),
    "protocol_laterality": _s("L, R, U (unpaired) or B (both)",
                              enum=catalog_model.LATERALITIES),
    "procedure_category": _s(enum=("Adult", "Pediatric")),
    "modality": _s(example="DX"), **_COMMON_ENTRY,
}
PROCEDURE = _obj(_fields(catalog_model.PROCEDURE_KEYS, _PROCEDURE_FIELDS),
                 "A procedure: a named set of views.")

_VIEW_DX_FIELDS = {
    "CollimatorCenter": _s(example="1"), "CollimatorFilter": _s(example="0"),
    "CollimatorNoChange": _b(), "CollimatorSize": _s(example="14IN(35CM)X17IN(43CM)"),
    "CollimatorSizeLength": _s(example="17IN"), "CollimatorSizeWidth": _s(example="14IN"),
    "ImageHorizontalFlip": _s("mirror after the rotation", enum=("YES", "NO")),
    "ImageLaterality": _s(enum=catalog_model.LATERALITIES),
    "ImageRotate": _s("degrees clockwise", enum=catalog_model.ROTATIONS),
    "LabelPosition": _s(example="LEFT TOP"), "LabelStyle": _s(),
    "PatientOrientationColumn": _s(example="F"), "PatientOrientationRow": _s(example="L"),
    "RatioFactorLength": _i(), "RatioFactorSize": _i(), "RatioFactorThickness": _i(),
    "RatioFactorWeight": _i(), "StandPos": _s(example="43"),
    "TargetEXI": _i("target exposure index", example=300),
    "ViewID": _s("equals the view's view_id"),
}
VIEW_DISPLAY = _obj(_fields(catalog_model.VIEW_DX_KEYS, _VIEW_DX_FIELDS),
                    "Display and collimation settings of a view (config_object.DX).")

_VIEW_FIELDS = {
    "internal_id": _s("equals view_id"), "view_id": _s(example="View_DX_T_A_SK_AP_00"),
    "view_name": _s("name in the caller's language", example="Skull AP"),
    "view_name_local": _s(), "view_other_name": _s("English name"), "view_description": _s(),
    "view_position": _s(example="AP"), "application": _s(example="RAD"),
    "anatomic_region": _s(example="SKULL"), "patient_type": _s(example="Human"),
    "body_part_id": _s(example="Human_SKULL"),
    "view_icon_name": _s("icon (GET /resource/view-icons/{name})"),
    "view_big_icon_name": _s(), "view_coach_name": _s(), "modality": _s(example="DX"),
    "work_station_id": _i("1 table Bucky, 2 wall stand Bucky, 3 free detector (0: the "
                          "view's default)", minimum=0, maximum=3),
    "apr_id": _s("the view's APR (technique) id"),
    "img_proc_id": _s("image processing profile", enum=catalog_model.PROFILES),
    "config_object": _obj({"DX": ref("dr.protocol.ViewDisplay")}),
    **_COMMON_ENTRY,
}
VIEW = _typed("dr.protocol.View", _fields(catalog_model.VIEW_KEYS, _VIEW_FIELDS),
              "A view (an exposure position). @type is present when the view is the reply "
              "itself (GET /protocol/views/{view_id}), absent in lists.",
              tag_required=False)

PATIENT_TYPE_LIST = _obj({"patient_type_list": _arr(ref("dr.protocol.PatientType"))},
                         "The patient types (seed: no @type).")
BODY_PART_LIST = _obj({"body_part_list": _arr(ref("dr.protocol.BodyPart"))},
                      "The body parts (seed: no @type).")
PROCEDURE_LIST = _typed("dr.protocol.ProcedureList", {
    "count": _i("number of procedures"), "procedures": _arr(ref("dr.protocol.Procedure"))},
    "Procedures.")
VIEW_LIST = _typed("dr.protocol.ViewList", {
    "count": _i("number of views"), "views": _arr(ref("dr.protocol.View"))}, "Views.")

_TECHNIQUE_FIELDS = {
    "AECDensity": _i("AEC density step", minimum=-5, maximum=5),
    "AECField": _s("AEC chambers left, centre, right (1 = on)", example="010",
                   pattern="^[01]{3}$"),
    "AECFilm": _i(example=1), "Dose": _n(), "ExposureMode": _i("0 mA/ms, 1 mAs, 2 AEC",
                                                                enum=(0, 1, 2)),
    "Focus": _i("0 small, 1 large", enum=(0, 1)), "TOD": _n(), "TubeLoad": _n(),
    "kV": _n("tube voltage, kV", example=70), "mA": _n("tube current, mA", example=125),
    "mAs": _n("current-time product, mAs", example=12.5),
    "ms": _n("exposure time, ms", example=100), "CompressionThickness": _n(),
}
EXPOSURE_TECHNIQUE = _obj(_fields(catalog_model.EXPOSURE_COMMON_KEYS, _TECHNIQUE_FIELDS),
                          "An APR exposure technique (config_object.Common).")
APR_EXPOSURE = _obj({
    "work_station_id": _i("work station", minimum=0, maximum=3),
    "patient_size": _s(enum=catalog_model.PATIENT_SIZES),
    "config_object": _obj({"Common": ref("dr.protocol.ExposureTechnique")}),
}, "The technique of one work station and patient size.")

_APR_FIELDS = {
    "apr_id": _s(example="View_DX_T_A_HD_OBL_01"), "apr_name": _s(),
    "apr_description": _s(), "patient_type": _s(example="Human"),
    "body_part_id": _s(example="Human_UPPER LIMB"), "view_position": _s(example="OBL"),
    "category": _s(example="EXTREMITIES_MEDIUM"), "modality": _s(example="DX"),
    "exposures": _arr(ref("dr.protocol.AprExposure"),
                      "per work station and patient size"),
    **_COMMON_ENTRY,
}
APR_REPLY = _typed("dr.protocol.AprReply", _fields(catalog_model.APR_KEYS, _APR_FIELDS),
                   "An APR (anatomically programmed radiography) entry: exposures per "
                   "patient size and work station.")

_GEOMETRY_FIELDS = {
    "APRNumber": _s(example="5"), "DetectorAngle": _n("degrees"),
    "FpdAcquisitionMode": _s(example="101"), "FrameRate": _n(), "GridSpeed": _n(),
    "GridType": _i("0 none, 1 stationary, 2 reciprocating (Bucky)", enum=(0, 1, 2)),
    "PositionNumber": _s(example="2"), "SID": _n("source-image distance, cm", example=115),
    "Thickness": _n("typical patient thickness, cm"),
    "TubeAngle": _n("degrees, positive cranial"), "TubeHeight": _n(), "LongTimeExp": _n(),
}
DEVICE_GEOMETRY = _obj(_fields(catalog_model.DEVICE_COMMON_KEYS, _GEOMETRY_FIELDS),
                       "APR device parameters (config_object.Common).")
APR_DEVICE = _typed("dr.protocol.AprDevice", {
    "work_station_id": _i(minimum=0, maximum=3),
    "config_object": _obj({"Common": ref("dr.protocol.DeviceGeometry")}),
}, "The device parameters of an APR at one work station.")

TECH_PARAM = _typed("dr.protocol.TechParam", {
    "dp": _obj(_fields(catalog_model.TECH_DP_KEYS, _GEOMETRY_FIELDS), "device parameters"),
    "ep": _obj(_fields(catalog_model.TECH_EP_KEYS, _TECHNIQUE_FIELDS), "exposure parameters"),
}, "Device (dp) and exposure (ep) parameters of a view for a patient size.")

CATALOG_ENTRY = {
    "oneOf": [ref("dr.protocol.PatientType"), ref("dr.protocol.BodyPart"),
              ref("dr.protocol.Procedure"), ref("dr.protocol.View")],
    "description": "A catalog entry of the kind in the path (patient-types, body-parts, "
                   "procedures, views), as the lists carry it (no @type).",
}

# --- study --------------------------------------------------------------------------------------
_dt = {"fmt": "date-time", "example": "2025-06-25T06:33:39.420606Z"}
_STUDY_FIELDS = {
    "study_instance_uid": _uid, "study_id": _study_id, "public_study_id": _s(),
    "specific_character_set": _s(example="ISO_IR 192"),
    "accession_number": _s(example="ACC0012345"), "ref_physician": _s(),
    "patient_id": _s(example="PET007"), "patient_name": _s(example="Buddy"),
    "patient_english_name": _s(), "patient_former_name": _s(),
    "patient_size": _s(enum=study_model.PATIENT_SIZES), "other_patient_ids": _s(),
    "other_patient_names": _s(), "patient_age": _s("DICOM age", example="5Y"),
    "patient_dob": _s("ISO 8601 date or date-time", example="2025-06-10T03:12:36.181739Z"),
    "patient_sex": _s("empty when not given", enum=("", *study_model.SEXES)),
    "patient_state": _s(), "admitting_time": _s(nullable=True),
    "priority": _s(), "reg_source": _s("the client kind that registered it (Source header)"),
    "study_description": _s(), "study_start_datetime": _s(**_dt),
    "study_end_datetime": _s("set when the study is completed", nullable=True, fmt="date-time"),
    "scheduled_procedure_step_start_date": _s(nullable=True), "performed_physician": _s(),
    "study_lock": _s(enum=study_model.STUDY_LOCKS), "folder_path": _s(),
    "operator_name": _s("the request's operator_id"),
    "modality": _s(enum=study_model.MODALITIES),
    "weight": _i("kg", minimum=0), "thickness": _i("cm", minimum=0),
    "length": _i("cm", minimum=0), "patient_type": _s(example="Human"),
    "study_type": _s(enum=study_model.STUDY_TYPES), "owner_name": _s("veterinary only"),
    "chip_number": _s("veterinary only"), "variety": _s("veterinary only"),
    "is_anaesthesia": _b(), "is_sedation": _b(), "mwl": _s(), "is_exported": _b(),
    "is_edited": _b(), "is_appended": _b(), "department": _s(), "mapped_status": _b(),
    "qc_result": _b(), "comment": _s(), "study_status": _s(enum=study_model.STUDY_STATUSES),
    "sort": _i(), "product": _product,
}
_SERIES_FIELDS = {
    "series_instance_uid": _uid, "study_instance_uid": _uid, "study_id": _study_id,
    "procedure_id": _s("empty for a view chosen without a procedure", example="P0-0002"),
    "body_part": _s(example="Human_SKULL"),
    "performed_datetime": _s("set at the first exposure", nullable=True, fmt="date-time"),
    "performed_protocol_code_meaning": _s(), "performed_protocol_code_value": _s(),
    "sort": _i(), "product": _product, "is_pre_install": _b(),
}
_ACQUISITION = _open("the exposure as performed (null before); an uploaded image has none",
                     nullable=True, properties={
                         "kv": _n("actual kV"), "ma": _n("actual mA"), "ms": _n("actual ms"),
                         "mas": _n("actual mAs"), "focus": _i(), "dap": _n("dose-area product"),
                         "ei": _n("exposure index"), "di": _n("deviation index"),
                         "target_ei": _n(), "sid": _n("source-image distance, mm")})
_PROCESSING = _open("how the image was processed (null before)", nullable=True, properties={
    "profile": _s("processing profile"), "ei": _n(), "di": _n(),
    "window_center": _n(), "window_width": _n(),
    "timings_ms": _open("milliseconds per stage"), "source": _s("png-upload for an upload")})
_IMAGE_FIELDS = {
    "sop_instance_id": _uid, "series_instance_uid": _uid, "study_instance_uid": _uid,
    "secondary_sop_uid": _s("the SOP instance UID of the stored file when it differs"),
    "study_id": _study_id, "view_id": _s(example="View_DX_T_A_SK_AP_00"),
    "view_description": _s(), "image_file_path": _s("relative path of the DICOM file"),
    "acquisition_mode": _s(example="RAD"), "acquisition_context": _ACQUISITION,
    "img_proc_context": _PROCESSING,
    "expose_status": _s(enum=study_model.EXPOSE_STATUSES),
    "judged_status": _s(enum=study_model.JUDGED_STATUSES),
    "send_status": _s(enum=study_model.SEND_STATUSES),
    "storage_status": _s(enum=study_model.STORAGE_STATUSES),
    "image_status": _s(enum=study_model.IMAGE_STATUSES),
    "sort": _i(), "product": _product, "is_pre_install": _b(),
}
IMAGE = _obj(_fields(study_model.IMAGE_FIELDS, _IMAGE_FIELDS), "An image of a study.")
CREATED_IMAGE = _obj(_fields(study_model.CREATED_IMAGE_FIELDS, _IMAGE_FIELDS),
                     "An image just created (append, retake): image_status instead of the "
                     "four status fields.")
SERIES = _obj({**_fields(study_model.SERIES_FIELDS, _SERIES_FIELDS),
               "images": _arr(ref("dr.study.Image"))}, "A series: one per procedure.")
CREATED_SERIES = _obj({**_fields(study_model.SERIES_FIELDS, _SERIES_FIELDS),
                       "images": _arr(ref("dr.study.CreatedImage"), "the new images only")},
                      "A series holding new images.")
_STUDY = {**_fields(study_model.STUDY_FIELDS, _STUDY_FIELDS),
          "series": _arr(ref("dr.study.Series"))}
STUDY = _typed("dr.study.Study", copy.deepcopy(_STUDY),
               "A study with its series and images (register, update).")
STUDY_REPLY = _typed("dr.study.StudyReply", copy.deepcopy(_STUDY),
                     "A study with its series and images (get).")
STUDY_RECORD = _obj(copy.deepcopy(_STUDY), "A study in a list (no @type).")
STUDY_LIST = _typed("dr.study.StudyList", {
    "count": _i("matches over all pages"), "page": _i(minimum=1),
    "page_size": _i(minimum=1), "studies": _arr(ref("dr.study.StudyRecord"), "newest first"),
}, "One page of studies.")
STAT = _typed("dr.study.Stat", {
    "total": _i("one study: its images; all: the studies", example=3),
    "exposed": _i("one study: exposed images; all: studies with an exposed image", example=1),
}, "Counts.")
CREATE_IMAGE_REPLY = _typed("dr.study.CreateImageReply", {
    "series": _arr(ref("dr.study.CreatedSeries"))}, "The series holding the new images.")

# --- task ---------------------------------------------------------------------------------------
GENERATOR_STATUSES = tuple(f"GENERATOR_STATUS_{s}" for s in (
    "INIT", "STANDBY", "PREPARE", "READY", "EXPOSURE", "ERROR", "NONE"))
DETECTOR_STATUSES = tuple(f"DETECTOR_STATUS_{s}" for s in (
    "DISCONNECTED", "STANDBY", "READY", "ACQUIRING", "READOUT", "CALIBRATING", "ERROR",
    "NONE"))
TASK_STATUSES = ("TASK_Ready", "TASK_Processing")

TASK_GLOBAL_STATUS = _typed("dr.task.TaskGlobalStatus", {
    "gen_status": _s("generator state (NONE: no generator)", enum=GENERATOR_STATUSES),
    "gen_ready": _b(),
    "fpd_status": _s("detector state (NONE: no detector)", enum=DETECTOR_STATUSES),
    "fpd_ready": _b(),
    "insp_status": _s("TASK_Processing while an image is being stored", enum=TASK_STATUSES),
    "insp_ready": _b(), "all_ready": _b("generator, detector and task ready"),
}, "Readiness of generator, detector and task.")

EXPOSURE = _typed("dios.task.Exposure", {"image": ref("dr.study.Image")},
                  "The outcome of a whole exposure: the stored image.")
DCM_PATH = _typed("dr.task.DcmPath", {
    "path": _s("file name of the DICOM file written",
               example="1.2.276.0.1000000.5.1.5.701601461.33458.1750830395.482043.dcm")},
    "The DICOM file made from an upload.")

#: ``SetParam_MA 130`` on the simulated generator (70 kV, 200 mA before): mA moves on the
#: R'10 table, so the generator accepts 125 mA (and mAs follows).
DEVICE_REPLY_EXAMPLE: dict[str, Any] = {
    "@type": type_url(DEVICE_REPLY),
    "deviceUri": "DIOS/DEVICE/Generator", "reqName": "SetParam_MA",
    "reqTransaction": "tx-0042", "reqClientID": "console-1",
    "code": "0x000000", "description": "Success", "solution": "", "result": "125",
    "data": {"requested": "130", "changed": ["MA", "MAS"],
             "technique": {"kV": 70.0, "mA": 125.0, "ms": 100.0, "mAs": 12.5,
                           "ExposureMode": 0, "Focus": 1, "AECField": "010",
                           "AECDensity": 0}},
}

#: ``SetParam_KV 200``: refused, the value stays as it was.
DEVICE_REPLY_REFUSED_EXAMPLE: dict[str, Any] = {
    "@type": type_url(DEVICE_REPLY),
    "deviceUri": "DIOS/DEVICE/Generator", "reqName": "SetParam_KV",
    "reqTransaction": "tx-0043", "reqClientID": "console-1",
    "code": "0x010005", "description": "Parameter out of range: KV 200 outside 40..150",
    "solution": "Choose a value within the device's limits", "result": "",
    "data": {"min": 40.0, "max": 150.0},
}

#: The ``dr.task.DeviceReply`` message.
DEVICE_REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A device's reply to one command: the request's ids echoed, the result "
                   "code with its texts, the value the device accepted and its detail.",
    "required": ["@type", "deviceUri", "reqName", "reqTransaction", "reqClientID", "code",
                 "description", "solution", "result", "data"],
    "properties": {
        "@type": {"type": "string", "enum": [type_url(DEVICE_REPLY)]},
        "deviceUri": {"type": "string", "example": "DIOS/DEVICE/Generator"},
        "reqName": {"type": "string", "example": "SetParam_MA"},
        "reqTransaction": {"type": "string", "description": "echoed from the request"},
        "reqClientID": {"type": "string", "description": "echoed from the request"},
        "code": {"type": "string", "pattern": CODE_PATTERN, "example": "0x000000",
                 "description": "result code (x-result-codes); the envelope carries the same"},
        "description": {"type": "string",
                        "description": "the code's text in the caller's language, then the "
                                       "device's detail"},
        "solution": {"type": "string"},
        "result": {"type": "string",
                   "description": "the value the device accepted (a set: snapped to the "
                                  "table, lowered for power/focus), a get's value, the "
                                  "command list of GetCommands, the limits line of "
                                  "GetLimits, a status string; empty on a refusal"},
        "data": {"type": "object", "additionalProperties": True,
                 "description": "detail: after a set {requested, changed, technique}; "
                                "GetLimits {limits, tables}; GetCommands {commands: "
                                "{name: parameter}}; GetStatus the device's status; on a "
                                "refusal the code's detail, e.g. OUT_OF_RANGE {min, max}"},
    },
    "example": DEVICE_REPLY_EXAMPLE,
}

FILE_SCHEMA = _typed(FILE, {
    "media_type": _s("the file's media type",
                     enum=("application/dicom", "image/png")),
    "filename": _s("a file name for it", example="1.2.3.4.dcm"),
    "content": _s("the file's bytes: MessagePack bin (never base64)", fmt="binary"),
}, "A file over MessagePack-RPC (a DICOM image, a PNG preview or icon); over HTTP the "
   "bytes are the response body.")

# --- envelope, errors, events -------------------------------------------------------------------
ERROR_DETAIL_SCHEMA = _open(
    "The error's simple detail fields (strings, numbers, booleans), for example field "
    "(the request field at fault), incident (the log id of an internal error), min and "
    "max (OUT_OF_RANGE), permission and role (FORBIDDEN).",
    properties={"field": _s("the request field at fault"),
                "incident": _s("the incident id of an internal error in the server's log")})

ERROR_ENVELOPE_SCHEMA = _obj({
    "code": _s("the result code (x-result-codes), never 0x000000", example="0x030002",
               pattern=CODE_PATTERN),
    "description": _s("what went wrong, in the caller's language",
                      example="Mandatory field missing: patient_id"),
    "solution": _s("what to do about it", example="Add the field named in the description"),
    "data": ref(ERROR_DETAIL),
}, "The error envelope: nothing was changed.")

RPC_ERROR_SCHEMA = _obj({
    "code": _s("the result code (as over HTTP)", pattern=CODE_PATTERN, example="0x030003"),
    "description": _s("what went wrong, in the caller's language"),
    "solution": _s("what to do about it"),
    "data": {"anyOf": [ref(ERROR_DETAIL), ref(DEVICE_REPLY)],
             "description": "the error's detail fields; for a device's refusal of "
                            "task.device_command the device's reply"},
}, "The error member of a MessagePack-RPC response (and the error notification).",
    required=["code", "description", "solution"])

#: The event as the wire carries it: the events module's schema, plus the per-subscription
#: sequence when that schema does not list it yet.
EVENT_MESSAGE = copy.deepcopy(EVENT_SCHEMA)
EVENT_MESSAGE["properties"].setdefault("sseq", _i(
    "per-subscription sequence: 1, 2, 3 ... counting every event that matched the "
    "subscription; a gap means events were dropped"))
EVENT_MESSAGE["properties"]["subscription"].setdefault(
    "description", "the subscription the event matched")

# --- RPC connection level -----------------------------------------------------------------------
SESSION = _obj({
    "uid": _i("the user's id"), "name": _s("the user name"),
    "role": _s("the user's role", enum=(*ROLES, "guest")),
    "expires": _i("when the token expires, seconds since the epoch"),
}, "The principal the connection is now authenticated as.")

SUBSCRIPTION = _obj({
    "subscription": _i("the subscription's id on this connection", minimum=1),
    "pattern": _s("the URI pattern subscribed to", example="DIOS/DEVICE/*"),
    "replayed": _i("events after resume_from replayed before the live ones", minimum=0),
    "complete": _b("false when events after resume_from were no longer retained"),
    "oldest": _i("the oldest seq the server still retains"),
}, "An accepted subscription.")

METHOD_LIST = _obj({
    "methods": _arr(_s(), "every method name"),
    "descriptions": _open("with describe: true, per method its summary, permission, "
                          "parameters and result type"),
    "schemas": _open("with describe: true, the result messages by type name"),
}, "The method names.", required=["methods"])

HELLO = _typed("dios.rpc.Hello", {
    "server": _s("the server's name", enum=("dios-engine",)),
    "version": _s("the server's package version", example="0.1.0"),
    "protocol": _s("the protocol the server speaks, major.minor", example="1.1",
                   pattern=r"^\d+\.\d+$"),
    "compatible": _b("the client's protocol has the server's major and a minor not above "
                     "the server's (true when the client named none)"),
    "reason": _s("why not compatible; empty when compatible"),
    "features": _arr(_s(), "optional behaviours this server has",
                     example=["resume", "drop-notices", "request-id", "binary-files"]),
}, "The handshake's reply.")

METHOD_ENTRY = _obj({
    "summary": _s(), "permission": _s("the permission needed, or public"),
    "params": _open("JSON schema of the args object (params[0])"),
    "result": _open("JSON schema of the result, or a $ref into schemas"),
    "binary": _b("the result is a dios.File with bin content"),
}, "One method of the catalogue.")

CATALOGUE = _typed("dios.rpc.Catalogue", {
    "protocol": _s("major.minor", example="1.1"),
    "version": _s("the server's package version"),
    "methods": {"type": "object", "additionalProperties": ref("dios.rpc.Method"),
                "description": "by method name"},
    "notifications": _open("server-to-client notifications by method: their params "
                           "array's schemas"),
    "meta": _open("JSON schema of params[1]: token, language, product, source, requestId"),
    "error": _open("JSON schema of a response's error member"),
    "schemas": _open("the messages the $refs point to (#/schemas/<name>), by type name"),
}, "The method catalogue: every method with its argument and result schemas.")

DROPPED = _obj({
    "subscription": _i(minimum=1),
    "dropped": _i("events dropped this time", minimum=1),
    "total_dropped": _i("events dropped on this subscription so far", minimum=1),
    "last_seq": _i("the global seq of the last event dropped"),
}, "Events of a subscription were dropped (the client read too slowly).")

SESSION_ENDED = _obj({
    "code": _s("TOKEN_EXPIRED, or the code of why the session was revoked",
               pattern=CODE_PATTERN, example="0x020003"),
    "description": _s("why, in the caller's language"),
    "solution": _s("what to do: authenticate again"),
    "data": ref(ERROR_DETAIL),
    "reason": _s("why, in words"),
}, "The connection's session ended (token expired; password changed, user disabled or "
   "deleted): the connection is no longer authenticated and its subscriptions are gone.",
    required=["code", "description", "solution"])

# --- dicom ----------------------------------------------------------------------------------
_NODE_FIELDS = {
    "id": _i("the node's id", example=1),
    "name": _s("a name for people (unique)", example="PACS"),
    "ae_title": _s("the node's AE title", example="ORTHANC"),
    "host": _s("host name or IP address", example="192.168.1.20"),
    "port": _i("TCP port", example=104, minimum=1, maximum=65535),
    "tls": _b("TLS (not supported yet: always false)"),
    "roles": _arr(_s(enum=DICOM_ROLES), "what the console does with the node"),
    "auto_send": _b("every stored image is sent to it (storage role)"),
    "allow_incoming": _b("it may call the console's SCP with its AE title from its host"),
    "description": _s("free text"),
    "version": _i("record version (update and delete check it)", example=1),
    "created_at": _s("when it was added (UTC, ISO 8601)", fmt="date-time"),
    "updated_at": _s("when it last changed (UTC, ISO 8601)", fmt="date-time"),
}
DICOM_NODE = _typed("dios.dicom.Node", copy.deepcopy(_NODE_FIELDS), "A DICOM node.")
DICOM_NODE_RECORD = _obj(copy.deepcopy(_NODE_FIELDS), "A DICOM node in a list (no @type).")
DICOM_NODE_LIST = _typed("dios.dicom.NodeList", {
    "nodes": _arr(ref("dios.dicom.NodeRecord"), "every node, by name")}, "The DICOM nodes.")
DICOM_ECHO = _typed("dios.dicom.EchoResult", {
    "node_id": _i("the node's id", example=1),
    "node": _s("the node's name", example="PACS"),
    "ae_title": _s("the AE title called", example="ORTHANC"),
    "ok": _b("the node answered the C-ECHO with success"),
    "status": _s("the node's DIMSE status (empty: no answer)", example="0x0000"),
    "rtt_ms": _n("round trip of the C-ECHO, or of the whole attempt when it failed",
                 example=3.2),
    "code": _s("the console's result code", pattern=CODE_PATTERN, example="0x000000"),
    "description": _s("what happened: answered, refused (rejected association), "
                      "unreachable, no answer in time"),
}, "The result of a test connection (C-ECHO).")
DICOM_OUTBOX_ROW = _obj({
    "id": _i("the row's id", example=7),
    "sop_instance_uid": _uid,
    "study_id": _study_id,
    "node_id": _i("the destination node's id", example=1),
    "state": _s("Queued -> Sending -> Sent | Failed", enum=OUTBOX_STATES),
    "attempts": _i("tries so far", example=1),
    "next_attempt_at": _n("when a queued row is tried next (seconds since the epoch; "
                          "0: at once)", example=0),
    "last_status": _s("the node's DIMSE status of the last try", example="0x0000"),
    "last_error": _s("the console's result code and what went wrong in the last try"),
    "transfer_syntax": _s("the transfer syntax the image went in", example="1.2.840.10008.1.2.1"),
    "created_at": _s("when it was queued first (UTC, ISO 8601)", fmt="date-time"),
    "updated_at": _s("when it last changed (UTC, ISO 8601)", fmt="date-time"),
    "sent_at": _s("when the node acknowledged it (null: not yet)", fmt="date-time",
                  nullable=True),
    "node": _s("the destination node's name", example="PACS"),
}, "One image for one node in the outbox.")
DICOM_SEND_REPLY = _typed("dios.dicom.SendReply", {
    "node_id": _i("the destination node's id", example=1),
    "node": _s("the destination node's name", example="PACS"),
    "queued": _i("images queued by this request", example=3),
    "unchanged": _i("images already queued, in flight or acknowledged (without resend)",
                    example=0),
    "rows": _arr(ref("dios.dicom.OutboxRow"), "the outbox row of each image"),
}, "What a send request queued.")
DICOM_QUEUE = _typed("dios.dicom.Queue", {
    "counts": _obj({st: _i(f"rows {st}", example=0) for st in OUTBOX_STATES},
                   "rows in each state (with the study and node filters)"),
    "rows": _arr(ref("dios.dicom.OutboxRow"), "the rows, oldest first"),
}, "The outbox.")
DICOM_IMAGE_RESULTS = _typed("dios.dicom.ImageResults", {
    "sop_instance_uid": _uid,
    "study_id": _study_id,
    "send_status": _s("the image's send status", enum=study_model.SEND_STATUSES),
    "results": _arr(ref("dios.dicom.OutboxRow"), "its row at each node"),
}, "An image's results at each node.")

#: Reply messages by type name (OpenAPI 3.0 components).
MESSAGE_SCHEMAS: dict[str, dict[str, Any]] = {
    EMPTY: EMPTY_SCHEMA,
    ACK: ACK_SCHEMA,
    "dr.auth.LoginReply": LOGIN_REPLY,
    "dr.auth.User": USER,
    "dr.auth.UserList": USER_LIST,
    "dr.resource.SoftwareInfo": SOFTWARE_INFO,
    "dr.resource.ServiceInfo": SERVICE_INFO,
    "dr.resource.RoleList": ROLE_LIST,
    "dr.resource.OptionReply": OPTION_REPLY,
    "dr.protocol.PatientType": PATIENT_TYPE,
    "dr.protocol.PatientTypeList": PATIENT_TYPE_LIST,
    "dr.protocol.BodyPart": BODY_PART,
    "dr.protocol.BodyPartList": BODY_PART_LIST,
    "dr.protocol.Procedure": PROCEDURE,
    "dr.protocol.ProcedureList": PROCEDURE_LIST,
    "dr.protocol.ViewDisplay": VIEW_DISPLAY,
    "dr.protocol.View": VIEW,
    "dr.protocol.ViewList": VIEW_LIST,
    "dr.protocol.ExposureTechnique": EXPOSURE_TECHNIQUE,
    "dr.protocol.AprExposure": APR_EXPOSURE,
    "dr.protocol.AprReply": APR_REPLY,
    "dr.protocol.DeviceGeometry": DEVICE_GEOMETRY,
    "dr.protocol.AprDevice": APR_DEVICE,
    "dr.protocol.TechParam": TECH_PARAM,
    "dr.protocol.CatalogEntry": CATALOG_ENTRY,
    "dr.study.Image": IMAGE,
    "dr.study.CreatedImage": CREATED_IMAGE,
    "dr.study.Series": SERIES,
    "dr.study.CreatedSeries": CREATED_SERIES,
    "dr.study.Study": STUDY,
    "dr.study.StudyReply": STUDY_REPLY,
    "dr.study.StudyRecord": STUDY_RECORD,
    "dr.study.StudyList": STUDY_LIST,
    "dr.study.Stat": STAT,
    "dr.study.CreateImageReply": CREATE_IMAGE_REPLY,
    "dr.task.TaskGlobalStatus": TASK_GLOBAL_STATUS,
    DEVICE_REPLY: DEVICE_REPLY_SCHEMA,
    "dios.task.Exposure": EXPOSURE,
    "dr.task.DcmPath": DCM_PATH,
    FILE: FILE_SCHEMA,
    ERROR_DETAIL: ERROR_DETAIL_SCHEMA,
    ERROR_ENVELOPE: ERROR_ENVELOPE_SCHEMA,
    RPC_ERROR: RPC_ERROR_SCHEMA,
    EVENT: EVENT_MESSAGE,
    "dios.rpc.Session": SESSION,
    "dios.rpc.Subscription": SUBSCRIPTION,
    "dios.rpc.Methods": METHOD_LIST,
    "dios.rpc.Hello": HELLO,
    "dios.rpc.Method": METHOD_ENTRY,
    "dios.rpc.Catalogue": CATALOGUE,
    "dios.rpc.Dropped": DROPPED,
    "dios.rpc.SessionEnded": SESSION_ENDED,
    "dios.dicom.Node": DICOM_NODE,
    "dios.dicom.NodeRecord": DICOM_NODE_RECORD,
    "dios.dicom.NodeList": DICOM_NODE_LIST,
    "dios.dicom.EchoResult": DICOM_ECHO,
    "dios.dicom.OutboxRow": DICOM_OUTBOX_ROW,
    "dios.dicom.SendReply": DICOM_SEND_REPLY,
    "dios.dicom.Queue": DICOM_QUEUE,
    "dios.dicom.ImageResults": DICOM_IMAGE_RESULTS,
}

#: The name of the reply of each operation that the reference console sends without an
#: ``@type`` (the wire keeps that shape; the name is the schema's).
UNTYPED_REPLIES: dict[str, str] = {
    "auth.login": "dr.auth.LoginReply",
    "auth.change_password": ACK,
    "auth.list_users": "dr.auth.UserList",
    "auth.create_user": "dr.auth.User",
    "auth.update_user": "dr.auth.User",
    "auth.reset_password": ACK,
    "auth.delete_user": ACK,
    "resource.software_info": "dr.resource.SoftwareInfo",
    "resource.roles": "dr.resource.RoleList",
    "protocol.patient_types": "dr.protocol.PatientTypeList",
    "protocol.body_parts": "dr.protocol.BodyPartList",
    "protocol.add_entry": "dr.protocol.CatalogEntry",
    "protocol.update_entry": "dr.protocol.CatalogEntry",
    "task.deselect_image": ACK,
}

#: Item schemas of declared ``object[]`` parameters, by parameter name.
PARAM_ITEMS: dict[str, dict[str, Any]] = {
    "views": _obj({"view_id": _s("a view id", example="View_DX_T_A_SK_AP_00"),
                   "procedure_id": _s("the procedure the view was chosen from; empty "
                                      "when chosen directly", example="P0-0002")},
                  "A view to expose.", required=["view_id"]),
}

#: Event topics a subscription may name instead of a URI pattern.
EVENT_TOPICS = tuple(TOPICS)

#: Media types of the file replies, by operation (over HTTP: the body's Content-Type).
BINARY_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "task.image_file": ("application/dicom",),
    "task.preview": ("image/png",),
    "resource.view_icon": ("image/png",),
}

_PARAM_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"}, "integer": {"type": "integer", "format": "int32"},
    "number": {"type": "number"}, "boolean": {"type": "boolean"},
    "boolish": {"type": "boolean", "description": "true/false, or the strings \"true\"/\"false\""},
    "object": {"type": "object"}, "array": {"type": "array", "items": {}},
    "string[]": {"type": "array", "items": {"type": "string"}},
    "object[]": {"type": "array", "items": {"type": "object"}},
    "binary": {"type": "string", "format": "binary"}, "any": {},
}


def param_schema(p: Param, transport: str = "http") -> dict[str, Any]:
    """The schema (OpenAPI 3.0 dialect) of one declared parameter. Over RPC a binary
    parameter is MessagePack bin."""
    schema = copy.deepcopy(_PARAM_TYPES[p.type])
    if p.type == "object[]" and p.name in PARAM_ITEMS:
        schema["items"] = copy.deepcopy(PARAM_ITEMS[p.name])
    if p.type == "string" and p.where != "path":
        schema["maxLength"] = p.max_length
    description = p.description or schema.get("description", "")
    if p.type == "binary" and transport == "rpc":
        description = (description + "; " if description else "") + "MessagePack bin"
    if description:
        schema["description"] = description
    if p.example is not None:
        schema["example"] = p.example
    return schema


def json_schema(schema: Any, ref_base: str = "#/schemas/") -> Any:
    """``schema`` (OpenAPI 3.0 dialect) as plain JSON Schema: ``nullable`` becomes a type
    list with ``null``, and ``$ref`` into the components points under ``ref_base``."""
    if isinstance(schema, list):
        return [json_schema(s, ref_base) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: json_schema(v, ref_base) for k, v in schema.items()
           if k not in ("nullable", "example", "properties")}
    if "properties" in schema:
        out["properties"] = {k: json_schema(v, ref_base)
                             for k, v in schema["properties"].items()}
    if "example" in schema:
        out["examples"] = [copy.deepcopy(schema["example"])]
    ref_value = schema.get("$ref")
    if isinstance(ref_value, str) and ref_value.startswith(COMPONENTS):
        out["$ref"] = ref_base + ref_value[len(COMPONENTS):]
    if schema.get("nullable") is True and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out
