"""The modality worklist operations of the shim: query a worklist node, register a study
from one of its items.

``dicom.worklist`` (``POST /dicom/worklist/query``, permission ``study.read``) queries the
worklist of a node with the ``worklist`` role (:func:`dios.exchange.worklist.query`) and
replies ``dios.dicom.Worklist``: the items in the seed's study fields with the scheduled
step's attributes, the items skipped with their reasons, and ``truncated`` when the node
had more than ``limit``. ``dicom.worklist_register`` (``POST /dicom/worklist/register``,
permission ``study.write``) registers a study from an item (sent back whole, or found again
on the node by ``study_instance_uid`` / ``accession_number``) with the views to acquire and
replies ``dr.study.Study``; the same item twice is ``DUPLICATE``.

:data:`WORKLIST_SCHEMAS` holds the reply schemas these operations add (OpenAPI 3.0
dialect, as :mod:`dios.shim.schemas`), by type name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dios.codes import INVALID_FIELD, MISSING_FIELD, NOT_FOUND, DiosError
from dios.exchange import worklist
from dios.shim.dispatch import Context, Operation, Param
from dios.shim.envelope import type_url

if TYPE_CHECKING:
    from dios.exchange.service import ExchangeService

__all__ = ["WORKLIST_SCHEMAS", "worklist_ops"]

WORKLIST = "dios.dicom.Worklist"
WORKLIST_ITEM = "dios.dicom.WorklistItem"
WORKLIST_STEP = "dios.dicom.WorklistStep"
WORKLIST_SKIPPED = "dios.dicom.WorklistSkipped"
STUDY = "dr.study.Study"


def _s(description: str, example: Any = None, nullable: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "description": description}
    if example is not None:
        out["example"] = example
    if nullable:
        out["nullable"] = True
    return out


def _i(description: str, example: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "description": description}
    if example is not None:
        out["example"] = example
    return out


def _ref(name: str) -> dict[str, str]:
    return {"$ref": "#/components/schemas/" + name}


def _obj(properties: dict[str, Any], description: str,
         required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties,
            "required": list(properties) if required is None else required}


_STEP = _obj({
    "scheduled_procedure_step_id": _s("Scheduled Procedure Step ID", "SPS1001"),
    "scheduled_procedure_step_description": _s("what the step is", "Chest PA"),
    "modality": _s("the modality scheduled", "DX"),
    "scheduled_station_ae_title": _s("the station the step is scheduled on", "DXMODALITY"),
    "scheduled_station_name": _s("the station's name", "DXROOM1"),
    "start_date": _s("scheduled start date (ISO, empty when not given)", "2026-01-01"),
    "start_time": _s("scheduled start time (HH:MM:SS, empty when not given)", "09:00:00"),
    "performing_physician": _s("Scheduled Performing Physician's Name", "Tech^Tom"),
    "location": _s("Scheduled Procedure Step Location", ""),
    "status": _s("Scheduled Procedure Step Status", "SCHEDULED"),
}, "The scheduled procedure step of a worklist item.")

_ITEM = _obj({
    "study_instance_uid": _s("the study's UID, kept by the study registered from it",
                             "1.2.826.0.1.3680043.8.498.1001"),
    "specific_character_set": _s("the item's character set at the node", "GB18030"),
    "accession_number": _s("accession number", "ACC1001"),
    "ref_physician": _s("Referring Physician's Name", "Referrer^Rita"),
    "patient_id": _s("patient id", "PID1001"),
    "patient_name": _s("the patient's name as the RIS wrote it (PN)", "张^三"),
    "patient_age": _s("age at the scheduled date (empty without birth date)", "46Y"),
    "patient_dob": _s("birth date (ISO, empty when not given)", "1980-01-01"),
    "patient_sex": _s("M, F, O or empty", "F"),
    "sex_neutered": _s("animals: ALTERED, UNALTERED or empty", ""),
    "weight": _i("kg (0: not given)", 0),
    "length": _i("cm (0: not given)", 0),
    "patient_type": _s("Human, or the animal's species (Patient Species Description)",
                       "Human"),
    "owner_name": _s("animals: Responsible Person", ""),
    "variety": _s("animals: Patient Breed Description", ""),
    "reg_source": _s("where a study registered from it comes from", "MWL"),
    "study_description": _s("the requested procedure's description", "Chest PA"),
    "scheduled_procedure_step_start_date": _s("scheduled start date (ISO)", "2026-01-01",
                                              nullable=True),
    "modality": _s("the scheduled modality", "DX"),
    "requested_procedure_id": _s("Requested Procedure ID", "RP1001"),
    "requested_procedure_description": _s("Requested Procedure Description", "Chest PA"),
    "requested_procedure_priority": _s("Requested Procedure Priority", ""),
    "scheduled_step": _ref(WORKLIST_STEP),
}, "A worklist item in the study's field names (seed dr.study.Study) with the worklist's own "
   "attributes.")

_SKIPPED = _obj({
    "index": _i("its place among the node's replies (from 0)", 3),
    "reason": _s("why it cannot be used", "StudyInstanceUID is missing or empty"),
    "study_instance_uid": _s("as far as it could be read", ""),
    "accession_number": _s("as far as it could be read", "ACC1004"),
    "patient_id": _s("as far as it could be read", "PID1004"),
}, "A reply item the console could not use.", required=["index", "reason"])

_WORKLIST = _obj({
    "@type": {"type": "string", "description": f"the message type: {type_url(WORKLIST)}",
              "enum": [type_url(WORKLIST)]},
    "node_id": _i("the node queried", 2),
    "node": _s("the node's name", "RIS"),
    "ae_title": _s("the AE title called", "WLMSCP"),
    "count": _i("items returned", 3),
    "limit": _i("the most items read", 500),
    "truncated": {"type": "boolean",
                  "description": "the node had more items than limit: the query was cancelled"},
    "elapsed_ms": {"type": "number", "description": "the query's round trip", "example": 42.0},
    "items": {"type": "array", "items": _ref(WORKLIST_ITEM), "description": "usable items"},
    "skipped": {"type": "array", "items": _ref(WORKLIST_SKIPPED),
                "description": "items skipped, with their reasons"},
}, "The result of a worklist query.")

#: The reply schemas of the worklist operations, by type name.
WORKLIST_SCHEMAS: dict[str, dict[str, Any]] = {
    WORKLIST: _WORKLIST, WORKLIST_ITEM: _ITEM, WORKLIST_STEP: _STEP,
    WORKLIST_SKIPPED: _SKIPPED,
}


def _exchange(ctx: Context) -> ExchangeService:
    exchange = ctx.services.exchange
    if exchange is None:
        raise DiosError(NOT_FOUND, "the DICOM network is not configured on this console")
    return exchange


def _product(ctx: Context) -> str:
    if ctx.product:
        return ctx.product
    cfg = ctx.services.config
    return getattr(cfg, "product", "DROS") if cfg is not None else "DROS"


def _node_id(a: dict[str, Any], required: bool) -> int | None:
    value = a.get("node_id")
    if value is None:
        if required:
            raise DiosError(MISSING_FIELD, "node_id", field="node_id")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DiosError(INVALID_FIELD, "node_id: an integer", field="node_id")
    return value


def worklist_ops() -> list[Operation]:
    """The ``dicom.worklist`` and ``dicom.worklist_register`` operations."""

    def query(ctx: Context, a: dict) -> Any:
        ex = _exchange(ctx)
        filters = worklist.WorklistFilters.from_request(
            {k: v for k, v in a.items() if k != "node_id"})
        node = ex.nodes.get(_node_id(a, True))
        return worklist.query(node, ex.config, filters).to_dict()

    def register(ctx: Context, a: dict) -> Any:
        node_id = _node_id(a, a.get("item") is None)
        node = config = None
        if node_id is not None:
            ex = _exchange(ctx)
            node, config = ex.nodes.get(node_id), ex.config
        return worklist.register_from_worklist(
            ctx.services.study, a, node=node, config=config, product=_product(ctx),
            language=ctx.language, user=ctx.user)

    def op(name: str, path: str, handler: Any, permission: str, reply: str,
           params: tuple[Param, ...], summary: str) -> Operation:
        return Operation(name=name, method="POST", path=path, handler=handler,
                         permission=permission, reply=reply, params=params, summary=summary,
                         tag="dicom", service_validates=True)

    node = Param("node_id", "integer", True, description="a node with the worklist role",
                 example=2)
    filters = (
        node,
        Param("date_from", description="scheduled start date from (YYYY-MM-DD)",
              example="2026-01-01"),
        Param("date_to", description="scheduled start date to (YYYY-MM-DD, inclusive)",
              example="2026-01-02"),
        Param("modality", description="scheduled modality", example="DX"),
        Param("station_ae_title", description="Scheduled Station AE Title",
              example="DXMODALITY"),
        Param("patient_name", description="patient name; * and ? are wildcards",
              example="Doe*"),
        Param("patient_id"), Param("accession_number"),
        Param("study_instance_uid"),
        Param("limit", "integer", description=f"the most items (default "
              f"{worklist.DEFAULT_LIMIT}, at most {worklist.MAX_LIMIT}); more: truncated",
              example=500),
    )
    register_params = (
        Param("node_id", "integer", description="the worklist node (to find the item again "
              "by study_instance_uid or accession_number)", example=2),
        Param("item", "object", description="an item as dicom.worklist returned it"),
        Param("study_instance_uid", description="or: the item's Study Instance UID"),
        Param("accession_number", description="or: the item's accession number"),
        Param("views", "object[]", True, description="[{view_id, procedure_id}]"),
        Param("patient_size", description="Large, Medium (default), Small, Paediatric"),
        Param("study_type", description="Normal (default) or Emergency"),
        Param("operator_id"), Param("comment"),
        Param("weight", "integer"), Param("thickness", "integer"), Param("length", "integer"),
        Param("is_anaesthesia", "boolean"), Param("is_sedation", "boolean"),
    )
    return [
        op("dicom.worklist", "/dicom/worklist/query", query, "study.read", WORKLIST, filters,
           "Query a node's modality worklist (scheduled date range, modality, station, "
           "patient, accession)"),
        op("dicom.worklist_register", "/dicom/worklist/register", register, "study.write",
           STUDY, register_params,
           "Register a study from a worklist item: its Study Instance UID, accession, "
           "requested procedure and scheduled step kept; reg_source MWL"),
    ]
