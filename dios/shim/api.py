"""The operation table: every console API call, its HTTP route, RPC name and permission.

REST layout (prefix ``/api/v1``; RPC method in brackets; permission after the colon):

auth
    ``POST /auth/login`` [auth.login]: public;
    ``POST /auth/password`` [auth.change_password]: auth.self;
    ``GET|POST /auth/users``, ``PUT|DELETE /auth/users/{uid}``,
    ``POST /auth/users/{uid}/password`` [auth.list_users, auth.create_user,
    auth.update_user, auth.delete_user, auth.reset_password]: user.manage
resource
    ``GET /resource/software-info`` [resource.software_info]: public (it hands out the
    guest token); ``GET /resource/roles``, ``GET /resource/options/{kind}``,
    ``GET /resource/view-icons/{name}``: resource.read
protocol
    ``GET /protocol/patient-types``, ``/protocol/body-parts``, ``/protocol/procedures``,
    ``/protocol/procedures/{procedure_id}/views``, ``/protocol/views``,
    ``/protocol/views/{view_id}``, ``/protocol/views/{view_id}/tech-params``,
    ``/protocol/aprs/{apr_id}``, ``/protocol/aprs/{apr_id}/device``: catalog.read;
    ``POST /protocol/{kind}`` (custom entry), ``PUT /protocol/{kind}/sort``,
    ``PUT|DELETE /protocol/{kind}/{entry_id}`` (enable/disable, sort, change, delete a
    custom entry), ``{kind}`` one of patient-types, body-parts, procedures, views:
    catalog.write
study
    ``POST /study`` register, ``GET /study`` list/search, ``GET /study/{study_id}``,
    ``PUT /study/{study_id}`` update, ``GET /study/{study_id}/stat``, ``GET /study/stat``,
    ``POST /study/images`` append, ``POST /study/images/retake``, ``POST /study/status``:
    study.write/study.read; ``POST /study/images/judge``: image.write;
    ``POST /study/images/delete``: image.delete; ``POST /study/delete`` (body: array of
    study ids): study.delete; ``POST /study/lock``: study.lock
task
    ``GET /task/status``: task.read; ``POST /task/device/action``,
    ``POST /task/image/select``, ``POST /task/image/deselect``, ``POST /task/image/expose``:
    device.action;
    ``POST /task/device/command``: device.action for the console's operational commands,
    device.calibrate for ``Calibrate*``, device.command for anything else (its reply: see
    "Device replies" below);
    ``POST /task/image/upload``: image.write; ``GET /task/image/{instance_uid}/file``,
    ``GET /task/image/{instance_uid}/preview``: image.read
dicom
    ``GET /dicom/nodes``, ``GET /dicom/nodes/{node_id}`` [dicom.list_nodes,
    dicom.get_node]: dicom.send; ``POST /dicom/nodes``, ``PUT|DELETE /dicom/nodes/{node_id}``,
    ``POST /dicom/nodes/{node_id}/echo`` [dicom.create_node, dicom.update_node,
    dicom.delete_node, dicom.echo]: dicom.config; ``POST /dicom/send``, ``GET /dicom/queue``,
    ``GET /dicom/images/{instance_uid}/results`` [dicom.send, dicom.queue,
    dicom.image_results]: dicom.send

Seed examples (``000_bb26117c0de1d69c.txt``; by the line of their ``Example:`` /
``响应数据示例:`` marker) and the operation serving each; tests/test_e2e_http.py compares
their key structure with the live replies:

==========================================  ================================================
seed line: operation                        reply ``@type`` (``-``: none; file: not JSON)
==========================================  ================================================
8: protocol.patient_types                   - (``patient_type_list``)
47: protocol.body_parts                     - (``body_part_list``)
90: resource.software_info                  - (with the guest token)
161: resource.roles                         - (a list)
175: resource.view_icon                     file (image data)
188: auth.login                             - (token, expire, uid, name, avatar)
213: auth.change_password                   - (``{}``)
227: resource.options                       dr.resource.OptionReply (sex, DROS)
265: resource.options                       dr.resource.OptionReply (sex, VETDROS)
303: protocol.patient_types                 - (repeated in the catalog section)
342: protocol.body_parts                    - (repeated in the catalog section)
385: protocol.procedures                    dr.protocol.ProcedureList
488: protocol.procedure_views               dr.protocol.ViewList
603: protocol.views                         dr.protocol.ViewList (of a body part)
718: protocol.view                          dr.protocol.View
780: protocol.apr                           dr.protocol.AprReply
970: protocol.apr                           dr.protocol.AprReply
1160: protocol.apr_device                   dr.protocol.AprDevice
1191: protocol.tech_params                  dr.protocol.TechParam
1267: study.register                        dr.study.Study
1448: study.update                          dr.study.Study
1606: protocol.views                        dr.protocol.ViewList (all views)
1721: study.get                             dr.study.StudyReply
1873: study.stat                            dr.study.Stat
1891: study.delete                          (its request: a bare array of study ids)
1893: study.delete                          dr.study.Stat
1915: task.upload_png                       dr.task.DcmPath
1938: study.append_images                   dr.study.CreateImageReply
2023: study.retake                          dr.study.CreateImageReply
2077: study.delete_images                   google.protobuf.Empty
2094: study.lock                            google.protobuf.Empty (no request table in
                                            the seed: the study operation left between
                                            delete images and the task section)
2114: task.device_action                    google.protobuf.Empty
2138: task.device_command                   google.protobuf.Empty
2158: task.select_image                     google.protobuf.Empty
2175: task.global_status                    dr.task.TaskGlobalStatus
2198: task.deselect_image                   - (the untyped ``{}``: no request fields,
                                            after selection and status)
2216: study.judge                           google.protobuf.Empty
2237: study.set_status                      google.protobuf.Empty
2254: task.image_file                       file (the DICOM file)
2263: task.preview                          file (the PNG preview)
==========================================  ================================================

Device replies
--------------
``POST /task/device/command`` answers as the seed does (``data`` =
``google.protobuf.Empty``) unless the query flag ``?reply=true`` (or ``1``) asks for the
device's reply: then ``data`` is a ``dr.task.DeviceReply`` (``DEVICE_REPLY_SCHEMA`` in
:mod:`dios.shim.schemas`):
``deviceUri``, ``reqName``, ``reqTransaction``, ``reqClientID`` (echoed), ``code``,
``description``, ``solution`` (the code's texts in the caller's language), ``result`` (the
value the device accepted: ``SetParam_MA 130`` -> ``"125"``; the list of
``GetCommands``, the limits line of ``GetLimits`` ...) and ``data`` (the detail: the whole
technique after a set, limits and tables, the command table, or on a refusal its detail
such as ``{min, max}`` of ``OUT_OF_RANGE``). A refusal keeps the envelope's code,
description and HTTP status; with the flag its ``data`` is the DeviceReply too, without it
the detail fields as for every error. Over MessagePack-RPC ``task.device_command`` always
returns the DeviceReply, and a refusal is an RPC error with the code and the reply's detail
fields. Refusals of the shim itself (token, role, missing fields) carry no DeviceReply: the
command never reached a device.

Every device reply, whoever sent the command, is also published as a ``reply`` event
(``DIOS/DEVICE/<Name>``, name = reqName, value = code, data = the same fields, the
request's transaction and client id; see :mod:`dios.shim.ws`).

Reply schemas
-------------
Every reply message has a schema in :mod:`dios.shim.schemas` (fields, types, the seed's
enumerations): by its ``@type`` name, or for the replies the seed sends untyped (``-``
above) by the name ``UNTYPED_REPLIES`` gives it (:func:`reply_schema_name`). The OpenAPI
document and the RPC method catalogue (:mod:`dios.shim.contract`) are made from them.

Handlers only move arguments between the wire and one service call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dios.codes import BAD_FILE_NAME, MISSING_FIELD, NOT_FOUND, DiosError, ResultCode
from dios.shim.dispatch import REPLY_FLAG, Context, Operation, Param
from dios.shim.envelope import EMPTY, Blob, ReplyFailure
from dios.shim.events import plain
from dios.shim.schemas import (
    DEVICE_REPLY_EXAMPLE,
    DEVICE_REPLY_REFUSED_EXAMPLE,
    DEVICE_REPLY_SCHEMA,
    FILE,
    MESSAGE_SCHEMAS,
    UNTYPED_REPLIES,
)

__all__ = [
    "CATALOG_KINDS", "DEVICE_REPLY_EXAMPLE", "DEVICE_REPLY_REFUSED_EXAMPLE",
    "DEVICE_REPLY_SCHEMA", "MESSAGE_SCHEMAS", "REQUEST_FIELDS", "Services", "device_reply",
    "operations", "refused_reply", "reply_schema_name",
]

STUDY = "dr.study.Study"
STUDY_REPLY = "dr.study.StudyReply"
CREATE_IMAGE = "dr.study.CreateImageReply"
STAT = "dr.study.Stat"
DEVICE_REPLY = "dr.task.DeviceReply"

#: The fields of a device command, as the seed names them.
REQUEST_FIELDS = ("deviceUri", "reqName", "reqParam", "reqTransaction", "reqClientID")

if TYPE_CHECKING:
    from dios.auth.service import AuthService
    from dios.catalog.service import CatalogService
    from dios.config import Config
    from dios.engine import Engine
    from dios.exchange.service import ExchangeService
    from dios.resource.service import ResourceService
    from dios.study.service import StudyService
    from dios.task.service import TaskService


@dataclass
class Services:
    """The services the shim talks to."""

    auth: AuthService
    resource: ResourceService
    catalog: CatalogService
    study: StudyService
    task: TaskService
    engine: Engine | None = None
    config: Config | None = None
    exchange: ExchangeService | None = None


def _product(ctx: Context) -> str:
    if ctx.product:
        return ctx.product
    cfg = ctx.services.config
    return getattr(cfg, "product", "DROS") if cfg is not None else "DROS"


def _op(name: str, method: str, path: str, handler: Any, permission: str | None,
        reply: str | None = None, params: tuple[Param, ...] = (), summary: str = "",
        **kw: Any) -> Operation:
    return Operation(name=name, method=method, path=path, handler=handler,
                     permission=permission, reply=reply, params=params, summary=summary,
                     tag=name.split(".")[0], **kw)


def P(name: str, type: str = "string", required: bool = False, where: str = "body",
      description: str = "", example: Any = None) -> Param:
    """Shorthand for :class:`~dios.shim.dispatch.Param`."""
    return Param(name, type, required, where, description, example)


# --- auth ------------------------------------------------------------------------------------
def _auth_ops() -> list[Operation]:
    def login(ctx: Context, a: dict) -> Any:
        source = ctx.peer.rsplit(":", 1)[0]  # the client's address: logins throttled by it
        return ctx.services.auth.login(a["username"], a["password"], source=source)

    def change_password(ctx: Context, a: dict) -> Any:
        return ctx.services.auth.change_password(ctx.claims, a["old_password"], a["new_password"],
                                                 a["confirm_new_password"])

    def list_users(ctx: Context, a: dict) -> Any:
        return {"users": ctx.services.auth.list_users(ctx.claims)}

    def create_user(ctx: Context, a: dict) -> Any:
        return ctx.services.auth.create_user(ctx.claims, a["username"], a["password"],
                                             a["role"], a.get("avatar", ""))

    def update_user(ctx: Context, a: dict) -> Any:
        return ctx.services.auth.update_user(ctx.claims, a["uid"], role=a.get("role"),
                                             avatar=a.get("avatar"), disabled=a.get("disabled"),
                                             expected_version=a.get("version"))

    def reset_password(ctx: Context, a: dict) -> Any:
        return ctx.services.auth.reset_password(ctx.claims, a["uid"], a["new_password"])

    def delete_user(ctx: Context, a: dict) -> Any:
        return ctx.services.auth.delete_user(ctx.claims, a["uid"])

    uid = P("uid", "integer", True, "path")
    return [
        _op("auth.login", "POST", "/auth/login", login, None, None,
            (P("username", required=True, example="admin"),
             P("password", required=True, example="123456")),
            "Log in: token (JWT HS256), expire, uid, name, avatar"),
        _op("auth.change_password", "POST", "/auth/password", change_password, "auth.self", None,
            (P("old_password", required=True), P("new_password", required=True),
             P("confirm_new_password", required=True)), "Change one's own password"),
        _op("auth.list_users", "GET", "/auth/users", list_users, "user.manage",
            summary="List users"),
        _op("auth.create_user", "POST", "/auth/users", create_user, "user.manage", None,
            (P("username", required=True), P("password", required=True),
             P("role", required=True, example="tech"), P("avatar")), "Create a user"),
        _op("auth.update_user", "PUT", "/auth/users/{uid}", update_user, "user.manage", None,
            (uid, P("role"), P("avatar"), P("disabled", "boolean"), P("version", "integer")),
            "Change a user's role, avatar or disabled flag"),
        _op("auth.reset_password", "POST", "/auth/users/{uid}/password", reset_password,
            "user.manage", None, (uid, P("new_password", required=True)),
            "Set another user's password (to be changed at next login)"),
        _op("auth.delete_user", "DELETE", "/auth/users/{uid}", delete_user, "user.manage",
            params=(uid,), summary="Delete a user", body="none"),
    ]


# --- resource ----------------------------------------------------------------------------------
def _resource_ops() -> list[Operation]:
    def software_info(ctx: Context, a: dict) -> Any:
        return ctx.services.resource.software_info(product=_product(ctx))

    def roles(ctx: Context, a: dict) -> Any:
        return ctx.services.resource.roles()

    def options(ctx: Context, a: dict) -> Any:
        return ctx.services.resource.options(a["kind"], language=ctx.language,
                                             product=_product(ctx))

    def view_icon(ctx: Context, a: dict) -> Any:
        name = a["name"]
        parts = name.strip("/").split("/")
        if "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
            raise DiosError(BAD_FILE_NAME, repr(name)[:80], field="name")
        if name.endswith(".png"):  # a view's view_icon_name / view_big_icon_name
            content, media = ctx.services.catalog.icon_by_name(name), "image/png"
        else:  # a view id
            content, media = ctx.services.resource.view_icon(name)
        return Blob(bytes(content), media,
                    parts[-1] if name.endswith(".png") else f"{name}.png")

    return [
        _op("resource.software_info", "GET", "/resource/software-info", software_info, None,
            summary="Versions, drivers in use (FPD, GEN), languages, product, serial, guest token"),
        _op("resource.roles", "GET", "/resource/roles", roles, "resource.read",
            summary="Role list"),
        _op("resource.options", "GET", "/resource/options/{kind}", options, "resource.read",
            "dr.resource.OptionReply", (P("kind", required=True, where="path", example="sex"),),
            "Option list of an enumeration (sex, patient_size, study_type, ...)"),
        _op("resource.view_icon", "GET", "/resource/view-icons/{name:path}", view_icon,
            "resource.read", params=(P("name", required=True, where="path"),),
            summary="A view icon image", binary_reply=True),
    ]


# --- protocol catalog ---------------------------------------------------------------------------
#: URL segment -> the catalog's entry kind
CATALOG_KINDS = {"patient-types": "patient_type", "body-parts": "body_part",
                 "procedures": "procedure", "views": "view"}


def _protocol_ops() -> list[Operation]:
    def cat(ctx: Context) -> Any:
        return ctx.services.catalog

    def ws_default(ctx: Context, a: dict) -> int:
        ws = a.get("work_station_id")
        if ws is None:
            cfg = ctx.services.config
            ws = getattr(cfg, "work_station_id", 1) if cfg is not None else 1
        return ws

    def kind(a: dict) -> str:
        k = CATALOG_KINDS.get(a["kind"])
        if k is None:
            raise DiosError(NOT_FOUND, f"catalog kind {a['kind'][:40]!r}; use "
                            f"{', '.join(CATALOG_KINDS)}", field="kind")
        return k

    def patient_types(ctx: Context, a: dict) -> Any:
        return cat(ctx).patient_type_list(_product(ctx), ctx.language)

    def body_parts(ctx: Context, a: dict) -> Any:
        return cat(ctx).body_part_list(a.get("patient_type"), _product(ctx), ctx.language)

    def procedures(ctx: Context, a: dict) -> Any:
        return cat(ctx).procedure_list(a.get("body_part_id"), _product(ctx), ctx.language)

    def procedure_views(ctx: Context, a: dict) -> Any:
        return cat(ctx).view_list(procedure_id=a["procedure_id"], product=_product(ctx),
                                  language=ctx.language)

    def views(ctx: Context, a: dict) -> Any:
        return cat(ctx).view_list(procedure_id=a.get("procedure_id"),
                                  body_part=a.get("body_part_id"), product=_product(ctx),
                                  language=ctx.language)

    def view(ctx: Context, a: dict) -> Any:
        return cat(ctx).view(a["view_id"], _product(ctx), ctx.language)

    def apr(ctx: Context, a: dict) -> Any:
        return cat(ctx).apr(a["apr_id"], a.get("patient_size"), a.get("work_station_id"),
                            _product(ctx), ctx.language)

    def apr_device(ctx: Context, a: dict) -> Any:
        return cat(ctx).apr_device(a["apr_id"], ws_default(ctx, a), _product(ctx))

    def tech_params(ctx: Context, a: dict) -> Any:
        return cat(ctx).tech_params(a["view_id"], a.get("patient_size") or "Medium",
                                    ws_default(ctx, a), _product(ctx))

    def update_entry(ctx: Context, a: dict) -> Any:
        changes = {k: v for k, v in a.items() if k not in ("kind", "entry_id")}
        return cat(ctx).update_custom(kind(a), a["entry_id"], changes)

    def sort_entries(ctx: Context, a: dict) -> Any:
        cat(ctx).set_sort(kind(a), a["ordered_ids"])
        return None

    def add_entry(ctx: Context, a: dict) -> Any:
        return cat(ctx).add_custom(kind(a), {k: v for k, v in a.items() if k != "kind"})

    def delete_entry(ctx: Context, a: dict) -> Any:
        cat(ctx).delete_custom(kind(a), a["entry_id"])
        return None

    pt = P("patient_type", where="query", example="Human")
    bp = P("body_part_id", where="query", example="Human_SKULL")
    size = P("patient_size", where="query", example="Medium",
             description="Large, Medium, Small or Paediatric")
    ws = P("work_station_id", "integer", where="query", example=1)
    kind_p = P("kind", required=True, where="path",
               description="patient-types, body-parts, procedures or views")
    entry = P("entry_id", required=True, where="path")
    return [
        _op("protocol.patient_types", "GET", "/protocol/patient-types", patient_types,
            "catalog.read", summary="Patient types"),
        _op("protocol.body_parts", "GET", "/protocol/body-parts", body_parts, "catalog.read",
            params=(pt,), summary="Body parts"),
        _op("protocol.procedures", "GET", "/protocol/procedures", procedures, "catalog.read",
            "dr.protocol.ProcedureList", (bp,), "Procedures"),
        _op("protocol.procedure_views", "GET", "/protocol/procedures/{procedure_id}/views",
            procedure_views, "catalog.read", "dr.protocol.ViewList",
            (P("procedure_id", required=True, where="path", example="P0-0002"),),
            "Views of a procedure"),
        _op("protocol.views", "GET", "/protocol/views", views, "catalog.read",
            "dr.protocol.ViewList", (bp, P("procedure_id", where="query")),
            "Views (all, of a body part or of a procedure)"),
        _op("protocol.view", "GET", "/protocol/views/{view_id}", view, "catalog.read",
            "dr.protocol.View", (P("view_id", required=True, where="path"),), "One view"),
        _op("protocol.tech_params", "GET", "/protocol/views/{view_id}/tech-params", tech_params,
            "catalog.read", "dr.protocol.TechParam",
            (P("view_id", required=True, where="path"), size, ws),
            "Device (dp) and exposure (ep) parameters of a view"),
        _op("protocol.apr", "GET", "/protocol/aprs/{apr_id}", apr, "catalog.read",
            "dr.protocol.AprReply", (P("apr_id", required=True, where="path"), size, ws),
            "APR: exposures per patient size and work station"),
        _op("protocol.apr_device", "GET", "/protocol/aprs/{apr_id}/device", apr_device,
            "catalog.read", "dr.protocol.AprDevice",
            (P("apr_id", required=True, where="path"), ws), "APR device parameters"),
        _op("protocol.add_entry", "POST", "/protocol/{kind}", add_entry, "catalog.write", None,
            (kind_p,), "Add a custom entry (is_pre_install false)", service_validates=True),
        _op("protocol.sort_entries", "PUT", "/protocol/{kind}/sort", sort_entries,
            "catalog.write", EMPTY, (kind_p, P("ordered_ids", "string[]", True)),
            "Re-sort entries: sort keys 1, 2, ... in the order given"),
        _op("protocol.update_entry", "PUT", "/protocol/{kind}/{entry_id}", update_entry,
            "catalog.write", None,
            (kind_p, entry, P("is_enabled", "boolean"), P("sort", "integer")),
            "Enable/disable or re-sort an entry; change a custom entry", open_body=True),
        _op("protocol.delete_entry", "DELETE", "/protocol/{kind}/{entry_id}", delete_entry,
            "catalog.write", EMPTY, (kind_p, entry), "Delete a custom entry", body="none"),
    ]


# --- study ---------------------------------------------------------------------------------------
_REGISTER = (
    P("accession_number", required=True, example="ACC0012345"),
    P("patient_id", required=True, example="PET007"),
    P("patient_name", required=True, example="Buddy"),
    P("patient_english_name"), P("patient_former_name"),
    P("patient_size", required=True, example="Large"),
    P("patient_age", required=True, example="5Y"),
    P("patient_dob", required=True, example="2025-06-10T03:12:36.181739Z"),
    P("patient_sex", description="M, F, O, U"),
    P("sex_neutered", description="ALTERED / UNALTERED (veterinary)"),
    P("pregnancy_status", description="0001..0004 (human)"),
    P("owner_name"), P("chip_number"), P("variety"),
    P("is_anaesthesia", "boolish"), P("is_sedation", "boolish"),
    P("patient_type", required=True, example="Human"),
    P("ref_physician"), P("operator_id"),
    P("modality", required=True, example="DX"),
    P("weight", "integer"), P("thickness", "integer"), P("length", "integer"),
    P("study_type", required=True, example="Normal"), P("comment"),
    P("views", "object[]", True, description="[{view_id, procedure_id}]"),
)
_UPDATE = tuple(p for p in _REGISTER if p.name not in (
    "views", "modality", "patient_type", "study_type", "sex_neutered", "pregnancy_status"))


def _study_ops() -> list[Operation]:
    def st(ctx: Context) -> Any:
        return ctx.services.study

    def register(ctx: Context, a: dict) -> Any:
        return st(ctx).register(a, product=_product(ctx), language=ctx.language,
                                source=ctx.source, user=ctx.user)

    def update(ctx: Context, a: dict) -> Any:
        study_id = a.pop("study_id")
        version = a.pop("expected_version", None)
        return st(ctx).update(study_id, a, expected_version=version)

    def get(ctx: Context, a: dict) -> Any:
        return st(ctx).get(a["study_id"])

    def search(ctx: Context, a: dict) -> Any:
        query = {k: v for k, v in a.items() if v is not None}
        query.setdefault("product", _product(ctx))
        return st(ctx).list_studies(query)

    def stat(ctx: Context, a: dict) -> Any:
        return st(ctx).stat(a["study_id"])

    def stat_all(ctx: Context, a: dict) -> Any:
        return st(ctx).stat()

    def delete(ctx: Context, a: dict) -> Any:
        return st(ctx).delete_studies(a["study_ids"])

    def append(ctx: Context, a: dict) -> Any:
        return st(ctx).append_images(a["study_id"], a["views"], language=ctx.language)

    def retake(ctx: Context, a: dict) -> Any:
        return st(ctx).retake(a["instance_uid"], language=ctx.language)

    def delete_images(ctx: Context, a: dict) -> Any:
        return st(ctx).delete_images(a["study_id"], a["sop_instance_uids"])

    def judge(ctx: Context, a: dict) -> Any:
        return st(ctx).judge(a["instance_uid"], a["accept"])

    def status(ctx: Context, a: dict) -> Any:
        return st(ctx).set_study_status(a["study_id"], a["study_status"])

    def lock(ctx: Context, a: dict) -> Any:
        return st(ctx).set_lock(a["study_id"], a["study_lock"])

    sid_path = P("study_id", required=True, where="path", example="20250625143339389")
    sid = P("study_id", required=True, example="20250610164933314")
    iuid = P("instance_uid", required=True,
             example="1.2.276.0.1000000.5.1.4.701601461.19649.1749545373.668671")
    views = P("views", "object[]", True, description="[{view_id, procedure_id}]")
    q = "query"
    return [
        _op("study.register", "POST", "/study", register, "study.write", STUDY, _REGISTER,
            "Register a study with its views (a series per procedure, an image per view)",
            service_validates=True),
        _op("study.search", "GET", "/study", search, "study.read", "dr.study.StudyList",
            (P("keyword", where=q, description="patient id, name or accession number"),
             P("patient_id", where=q), P("patient_name", where=q),
             P("accession_number", where=q), P("study_status", where=q),
             P("date_from", where=q, example="2025-06-01"),
             P("date_to", where=q, example="2025-06-30"), P("page", "integer", where=q),
             P("page_size", "integer", where=q)),
            "List and search studies (paged)"),
        _op("study.get", "GET", "/study/{study_id}", get, "study.read", STUDY_REPLY,
            (sid_path,), "One study with its series and images"),
        _op("study.update", "PUT", "/study/{study_id}", update, "study.write", STUDY,
            (sid_path, *_UPDATE, P("expected_version", "integer",
                                   description="optimistic concurrency: CONFLICT when stale")),
            "Update patient and study fields", service_validates=True),
        _op("study.stat_all", "GET", "/study/stat", stat_all, "study.read", STAT,
            summary="All studies: total and those with an exposed image"),
        _op("study.stat", "GET", "/study/{study_id}/stat", stat, "study.read", STAT,
            (sid_path,), "Images of a study: total and exposed"),
        _op("study.delete", "POST", "/study/delete", delete, "study.delete", STAT,
            (P("study_ids", "string[]", True, description="array of study ids"),),
            "Delete studies (body: a JSON array of study ids)", body="json-array"),
        _op("study.append_images", "POST", "/study/images", append, "study.write", CREATE_IMAGE,
            (sid, views), "Append images for more views"),
        _op("study.retake", "POST", "/study/images/retake", retake, "study.write", CREATE_IMAGE,
            (iuid,), "Retake: a new image for the same view (the old one is kept)"),
        _op("study.delete_images", "POST", "/study/images/delete", delete_images, "image.delete",
            EMPTY, (sid, P("sop_instance_uids", "string[]", True)), "Delete images"),
        _op("study.judge", "POST", "/study/images/judge", judge, "image.write", EMPTY,
            (iuid, P("accept", "boolean", True)), "Accept or reject an image"),
        _op("study.set_status", "POST", "/study/status", status, "study.write", EMPTY,
            (sid, P("study_status", required=True, description="InProgress or Completed")),
            "Set the study status"),
        _op("study.lock", "POST", "/study/lock", lock, "study.lock", EMPTY,
            (sid, P("study_lock", required=True, description="Locked or Unlocked")),
            "Lock or unlock a study"),
    ]


# --- task ------------------------------------------------------------------------------------------
def _task_ops() -> list[Operation]:
    from dios.task.service import command_permission

    def tk(ctx: Context) -> Any:
        return ctx.services.task

    def status(ctx: Context, a: dict) -> Any:
        return tk(ctx).global_status()

    def action(ctx: Context, a: dict) -> Any:
        tk(ctx).device_action(a["deviceUri"], a.get("reqTransaction", ""),
                              a.get("reqClientID", "") or ctx.source)
        return None

    def command(ctx: Context, a: dict) -> Any:
        needed = command_permission(a["reqName"])
        if needed != "device.action":
            ctx.services.auth.authorize(ctx.claims, needed)
        req = {k: a[k] for k in REQUEST_FIELDS if k in a}
        try:
            reply = tk(ctx).device_command(req)
        except DiosError as err:
            raise ReplyFailure(err, refused_reply(ctx, req, err)) from err
        return device_reply(ctx, reply)

    def select(ctx: Context, a: dict) -> Any:
        tk(ctx).select_image(a["instance_uid"], client=ctx.source or ctx.user)
        return None

    def deselect(ctx: Context, a: dict) -> Any:
        tk(ctx).deselect_image()
        return None

    def expose(ctx: Context, a: dict) -> Any:
        return {"image": tk(ctx).expose(a["instance_uid"], client=ctx.source or ctx.user)}

    def upload(ctx: Context, a: dict) -> Any:
        data = a.get("data")
        if data is None:
            raise DiosError(MISSING_FIELD, "data", field="data")
        return tk(ctx).upload_png(a["instance_uid"], data, a.get("data.filename") or "")

    def file(ctx: Context, a: dict) -> Any:
        content, name = tk(ctx).image_file(a["instance_uid"])
        return Blob(content, "application/dicom", name)

    def preview(ctx: Context, a: dict) -> Any:
        content, name = tk(ctx).preview(a["instance_uid"])
        return Blob(content, "image/png", name)

    iuid = P("instance_uid", required=True,
             example="1.2.276.0.1000000.5.1.4.701601461.19649.1749545373.668671")
    iuid_path = P("instance_uid", required=True, where="path")
    dev = P("deviceUri", required=True, example="DIOS/DEVICE/Generator")
    return [
        _op("task.global_status", "GET", "/task/status", status, "task.read",
            "dr.task.TaskGlobalStatus", summary="Generator, detector and task readiness"),
        _op("task.device_action", "POST", "/task/device/action", action, "device.action", EMPTY,
            (dev, P("reqTransaction"), P("reqClientID")),
            "Ask a device to report its state (arrives as a state event)"),
        _op("task.device_command", "POST", "/task/device/command", command, "device.action",
            EMPTY, (dev, P("reqName", required=True, example="IncParam_KV"),
                    P("reqParam", example="1"), P("reqTransaction", example="tx-0042"),
                    P("reqClientID", example="console-1"),
                    P(REPLY_FLAG, "boolean", where="query", example=True,
                      description="true or 1: data is the device's reply "
                                  "(dr.task.DeviceReply), on success and on a refusal; "
                                  "absent, false or 0: google.protobuf.Empty as the seed")),
            "Send one device command onto the bus; with ?reply=true get the device's reply "
            "(the value it accepted)", full_reply=DEVICE_REPLY),
        _op("task.select_image", "POST", "/task/image/select", select, "device.action", EMPTY,
            (iuid,), "Select the image to expose: applies its APR technique to the generator"),
        _op("task.deselect_image", "POST", "/task/image/deselect", deselect, "device.action",
            None, summary="Cancel the selection: no image is armed for the next exposure"),
        _op("task.expose", "POST", "/task/image/expose", expose, "device.action",
            "dios.task.Exposure", (iuid,),
            "Select, prepare, expose and store one image; replies the stored image"),
        _op("task.upload_png", "POST", "/task/image/upload", upload, "image.write",
            "dr.task.DcmPath", (iuid, P("data", "binary", True, description="PNG file")),
            "Turn a PNG into the image's DICOM file", body="upload", open_body=True),
        _op("task.image_file", "GET", "/task/image/{instance_uid}/file", file, "image.read",
            params=(iuid_path,), summary="Download the image's DICOM file", binary_reply=True),
        _op("task.preview", "GET", "/task/image/{instance_uid}/preview", preview, "image.read",
            params=(iuid_path,), summary="Download the processed PNG preview",
            binary_reply=True),
    ]


# --- dicom ---------------------------------------------------------------------------------------
def _dicom_ops() -> list[Operation]:
    def ex(ctx: Context) -> ExchangeService:
        exchange = ctx.services.exchange
        if exchange is None:
            raise DiosError(NOT_FOUND, "the DICOM network is not configured on this console")
        return exchange

    def list_nodes(ctx: Context, a: dict) -> Any:
        return ex(ctx).list_nodes()

    def get_node(ctx: Context, a: dict) -> Any:
        return ex(ctx).get_node(a["node_id"])

    def create_node(ctx: Context, a: dict) -> Any:
        return ex(ctx).create_node(a)

    def update_node(ctx: Context, a: dict) -> Any:
        return ex(ctx).update_node(a.pop("node_id"), a)

    def delete_node(ctx: Context, a: dict) -> Any:
        ex(ctx).delete_node(a["node_id"], a.get("version"))
        return None

    def echo(ctx: Context, a: dict) -> Any:
        return ex(ctx).echo_node(a["node_id"])

    def send(ctx: Context, a: dict) -> Any:
        return ex(ctx).send(a.get("node_id"), a.get("study_id"), a.get("sop_instance_uids"),
                            a.get("resend", False))

    def queue(ctx: Context, a: dict) -> Any:
        return ex(ctx).queue(a.get("state"), a.get("study_id"), a.get("node_id"),
                             a.get("limit"))

    def results(ctx: Context, a: dict) -> Any:
        return ex(ctx).image_results(a["instance_uid"])

    nid = P("node_id", "integer", True, "path", example=1)
    fields = (P("name", example="PACS"), P("ae_title", example="ORTHANC"),
              P("host", example="192.168.1.20"), P("port", "integer", example=104),
              P("tls", "boolean", description="not supported yet: false"),
              P("roles", "string[]", description="storage, commitment, worklist, mpps, query"),
              P("auto_send", "boolean", description="send every stored image (storage role)"),
              P("allow_incoming", "boolean",
                description="the node may call the console's SCP from its host"),
              P("description"))
    required = {"name", "ae_title", "host", "port"}
    create_fields = tuple(Param(p.name, p.type, p.name in required, p.where, p.description,
                                p.example) for p in fields)
    q = "query"
    return [
        _op("dicom.list_nodes", "GET", "/dicom/nodes", list_nodes, "dicom.send",
            "dios.dicom.NodeList", summary="The DICOM nodes (remote application entities)"),
        _op("dicom.get_node", "GET", "/dicom/nodes/{node_id}", get_node, "dicom.send",
            "dios.dicom.Node", (nid,), "One DICOM node"),
        _op("dicom.create_node", "POST", "/dicom/nodes", create_node, "dicom.config",
            "dios.dicom.Node", create_fields, "Add a DICOM node", service_validates=True),
        _op("dicom.update_node", "PUT", "/dicom/nodes/{node_id}", update_node, "dicom.config",
            "dios.dicom.Node", (nid, *fields, P("version", "integer", True,
                                                 description="the node's current version")),
            "Change a DICOM node (CONFLICT when the version is stale)",
            service_validates=True),
        _op("dicom.delete_node", "DELETE", "/dicom/nodes/{node_id}", delete_node,
            "dicom.config", EMPTY, (nid, P("version", "integer", where=q)),
            "Delete a DICOM node and its outbox rows", body="none"),
        _op("dicom.echo", "POST", "/dicom/nodes/{node_id}/echo", echo, "dicom.config",
            "dios.dicom.EchoResult", (nid,),
            "Test the connection: one C-ECHO, its status and round trip time", body="none"),
        _op("dicom.send", "POST", "/dicom/send", send, "dicom.send", "dios.dicom.SendReply",
            (P("node_id", "integer", True, example=1),
             P("study_id", description="send the study's stored images", example=""),
             P("sop_instance_uids", "string[]", description="or these images"),
             P("resend", "boolean", description="queue images the node already "
                                                "acknowledged again")),
            "Queue a study or images for a storage node (failed ones are retried)",
            service_validates=True),
        _op("dicom.queue", "GET", "/dicom/queue", queue, "dicom.send", "dios.dicom.Queue",
            (P("state", where=q, description="Queued, Sending, Sent or Failed"),
             P("study_id", where=q), P("node_id", "integer", where=q),
             P("limit", "integer", where=q, description="at most this many rows (200)")),
            "The outbox: rows (oldest first) and the count in each state"),
        _op("dicom.image_results", "GET", "/dicom/images/{instance_uid}/results", results,
            "dicom.send", "dios.dicom.ImageResults",
            (P("instance_uid", required=True, where="path"),),
            "An image's send status and its result at each node"),
    ]


def _texts(code_hex: str, description: str, solution: str, language: str) -> tuple[str, str]:
    """A reply's description and solution in ``language``: the code's own text is
    translated, the device's detail after it kept."""
    if language == "en":
        return description, solution
    try:
        code = ResultCode.from_hex(code_hex)
    except (KeyError, ValueError):
        return description, solution
    en, _ = code.text("en")
    desc, sol = code.text(language)
    if description == en:
        return desc, sol
    if description.startswith(en + ": "):
        return f"{desc}: {description[len(en) + 2:]}", sol
    return description, sol


def device_reply(ctx: Context, reply: Any) -> dict[str, Any]:
    """The ``dr.task.DeviceReply`` message of a device's Reply (untagged; the shim tags it)."""
    msg = {k: v for k, v in reply.to_dict().items() if k != "@type"}
    msg["description"], msg["solution"] = _texts(msg["code"], msg["description"],
                                                 msg["solution"], ctx.language)
    msg["result"] = str(msg.get("result", ""))
    msg["data"] = plain(msg.get("data") or {}, ctx.transport == "rpc")
    return msg


def refused_reply(ctx: Context, req: dict[str, Any], err: DiosError) -> dict[str, Any]:
    """The ``dr.task.DeviceReply`` message of a refused command: the request's ids, the
    error's code and detail (without the ``<reqName> on <deviceUri>`` the task service
    puts in front, so the description reads as the device's), its data."""
    name, uri = str(req.get("reqName", "")), str(req.get("deviceUri", ""))
    detail, prefix = err.detail, f"{name} on {uri}"
    if detail == prefix:
        detail = ""
    elif detail.startswith(prefix + ": "):
        detail = detail[len(prefix) + 2:]
    desc, sol = err.code.text(ctx.language)
    return {"deviceUri": uri, "reqName": name,
            "reqTransaction": str(req.get("reqTransaction", "")),
            "reqClientID": str(req.get("reqClientID", "")),
            "code": err.code.hex, "description": f"{desc}: {detail}" if detail else desc,
            "solution": sol, "result": "", "data": plain(err.data, ctx.transport == "rpc")}


def reply_schema_name(op: Operation, transport: str = "http", full: bool = False) -> str | None:
    """The schema name (a key of ``MESSAGE_SCHEMAS``) of ``op``'s reply ``data``.

    ``transport``: ``http`` (``full``: the caller sent the query flag of a full reply) or
    ``rpc`` (always the full reply; a file is a ``dios.File``). None for a file over
    HTTP (the body is the file itself).
    """
    if op.binary_reply:
        return FILE if transport == "rpc" else None
    name = op.full_reply if op.full_reply and (full or transport == "rpc") else op.reply
    return name or UNTYPED_REPLIES[op.name]


def operations() -> list[Operation]:
    """Every operation, in documentation order."""
    ops = [*_auth_ops(), *_resource_ops(), *_protocol_ops(), *_study_ops(), *_task_ops(),
           *_dicom_ops()]
    names = [op.name for op in ops]
    if len(names) != len(set(names)):
        raise RuntimeError("duplicate operation names")
    return ops
