"""The typed contract: the OpenAPI document and the RPC method catalogue describe what the
server really sends, and types generated from them compile.

* the document a live console serves validates (openapi-spec-validator), and every
  operation's reply schema has fields;
* replies of real calls over HTTP (and MessagePack-RPC) validate against the served
  schemas with every object closed (``additionalProperties: false`` added here), so a
  field the server sends and the contract does not name fails, as does a missing one;
* the handshake's compatibility rules and the catalogue's coverage;
* TypeScript models generated from the served document by ``openapi-typescript`` type-check
  with ``tsc --noEmit`` against the live replies, and a wrong use is rejected.

The npm packages are installed once into ``.cache/npm/typegen`` (git-ignored); without npm
or the registry the type-generation test fails and says why.
"""

from __future__ import annotations

import copy
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from openapi_spec_validator import validate as validate_spec
from PIL import Image

from dios.codes import INVALID_FIELD, DiosError
from dios.shim.api import operations, reply_schema_name
from dios.shim.contract import (
    CONNECTION_METHODS,
    FEATURES,
    NOTIFICATIONS,
    PROTOCOL_VERSION,
    catalogue,
    compatibility,
    handshake,
    server_version,
)
from dios.shim.envelope import EMPTY, type_url
from dios.shim.schemas import ACK, COMPONENTS, MESSAGE_SCHEMAS, UNTYPED_REPLIES, json_schema
from tests.console_helpers import (
    Api,
    RpcClient,
    images_of,
    setup_users,
    start_console,
    study_request,
)

OPS = operations()
PREFIX = "/api/v1"
REPO = Path(__file__).resolve().parents[1]
TYPEGEN_DIR = REPO / ".cache" / "npm" / "typegen"
TYPEGEN_PACKAGES = {"openapi-typescript": "7.13.0", "typescript": "5.9.3"}
GEN = "DIOS/DEVICE/Generator"
#: reply types that are empty by definition (the seed's two empty replies)
EMPTY_TYPES = {EMPTY, ACK}


# --- helpers -------------------------------------------------------------------------------------
def closed(schema: Any) -> Any:
    """``schema`` with every object that lists its properties closed to other members."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {k: closed(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def doc_validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    """A strict validator of ``schema`` (OpenAPI dialect, refs into ``doc``'s components)."""
    components = {name: closed(json_schema(s, COMPONENTS))
                  for name, s in doc["components"]["schemas"].items()}
    root = {**closed(json_schema(schema, COMPONENTS)),
            "components": {"schemas": components}}
    return jsonschema.Draft202012Validator(root)


def problems(validator: jsonschema.Validator, value: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message[:300]}"
            for e in validator.iter_errors(value)]


def op_item(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for item in doc["paths"].values():
        for op in item.values():
            if op.get("operationId") == name:
                return op
    raise AssertionError(f"operation {name} not in the document")


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    target = schema["$ref"]
    assert target.startswith(COMPONENTS), target
    name = target[len(COMPONENTS):]
    return name, doc["components"]["schemas"][name]


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(48 * 40) % 251).astype(np.uint8).reshape(48, 40)).save(
        buf, format="PNG")
    return buf.getvalue()


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = start_console(tmp_path_factory.mktemp("contract"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apis(console):
    apis = setup_users(console)
    yield apis
    for a in apis.values():
        a.close()


@pytest.fixture(scope="module")
def doc(console):
    api = Api(console)
    r = api.client.get(f"{PREFIX}/openapi.json")
    api.close()
    assert r.status_code == 200, r.text[:300]
    return r.json()


@pytest.fixture(scope="module")
def live(console, apis, doc):
    """Real calls over HTTP: operation name -> list of (query flag, response)."""
    tech, admin, mgr = apis["tech"], apis["admin"], apis["mgr"]
    calls: dict[str, list[tuple[bool, Any]]] = {}

    def record(name: str, r: Any, full: bool = False) -> Any:
        assert r.status_code == 200, (name, r.status_code, r.text[:500])
        calls.setdefault(name, []).append((full, r))
        return r.json()["data"]

    anon = Api(console)
    record("auth.login", anon.post("/auth/login", json={"username": "tech1",
                                                        "password": "Str0ng-Passw0rd"}))
    record("resource.software_info", anon.get("/resource/software-info"))
    anon.close()
    record("resource.roles", tech.get("/resource/roles"))
    record("resource.options", tech.get("/resource/options/sex"))
    record("resource.options", tech.get("/resource/options/patient_size",
                                        headers={"Language": "zh"}))
    record("auth.list_users", admin.get("/auth/users"))
    user = record("auth.create_user", admin.post("/auth/users", json={
        "username": "contract1", "password": "Temp-Pass-123", "role": "tech"}))
    record("auth.update_user", admin.put(f"/auth/users/{user['uid']}", json={"avatar": "x"}))
    record("auth.reset_password", admin.post(f"/auth/users/{user['uid']}/password",
                                             json={"new_password": "Temp-Pass-456"}))
    changer = Api(console)
    changer.token = changer.ok("POST", "/auth/login", json={
        "username": "contract1", "password": "Temp-Pass-456"})["token"]
    record("auth.change_password", changer.post("/auth/password", json={
        "old_password": "Temp-Pass-456", "new_password": "Other-Passw0rd-9",
        "confirm_new_password": "Other-Passw0rd-9"}))
    changer.close()
    record("auth.delete_user", admin.request("DELETE", f"/auth/users/{user['uid']}"))
    record("protocol.patient_types", tech.get("/protocol/patient-types"))
    record("protocol.body_parts", tech.get("/protocol/body-parts"))
    record("protocol.procedures", tech.get("/protocol/procedures"))
    record("protocol.procedure_views", tech.get("/protocol/procedures/P0-0002/views"))
    record("protocol.views", tech.get("/protocol/views"))
    record("protocol.views", tech.get("/protocol/views", params={"body_part_id": "Human_SKULL"},
                                      headers={"Language": "zh"}))
    view = record("protocol.view", tech.get("/protocol/views/View_DX_T_A_SK_AP_00"))
    record("protocol.tech_params", tech.get("/protocol/views/View_DX_T_A_SK_AP_00/tech-params"))
    record("protocol.apr", tech.get(f"/protocol/aprs/{view['apr_id']}"))
    record("protocol.apr_device", tech.get(f"/protocol/aprs/{view['apr_id']}/device"))
    custom = {k: v for k, v in view.items()
              if k not in ("@type", "id", "internal_id", "is_pre_install", "img_proc_id")}
    custom.update(view_id="ContractView1",
                  config_object={"DX": {**view["config_object"]["DX"],
                                         "ViewID": "ContractView1"}})
    record("protocol.add_entry", admin.post("/protocol/views", json=custom))
    record("protocol.update_entry", admin.put("/protocol/views/ContractView1",
                                              json={"is_enabled": False}))
    record("protocol.delete_entry", admin.request("DELETE", "/protocol/views/ContractView1"))
    record("protocol.sort_entries", admin.put("/protocol/patient-types/sort",
                                              json={"ordered_ids": ["Human"]}))
    study = record("study.register", tech.post("/study", json=study_request()))
    sid = study["study_id"]
    sops = [im["sop_instance_id"] for im in images_of(study)]
    record("study.search", tech.get("/study", params={"page_size": 5}))
    record("study.get", tech.get(f"/study/{sid}"))
    update = {k: v for k, v in study_request(comment="contract").items()
              if k not in ("views", "modality", "patient_type", "study_type")}
    record("study.update", tech.put(f"/study/{sid}", json=update))
    record("study.stat", tech.get(f"/study/{sid}/stat"))
    record("study.stat_all", tech.get("/study/stat"))
    record("study.append_images", tech.post("/study/images", json={
        "study_id": sid, "views": [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": ""}]}))
    record("task.global_status", tech.get("/task/status"))
    record("task.device_action", tech.post("/task/device/action", json={"deviceUri": GEN}))
    command = {"deviceUri": GEN, "reqName": "SetParam_MA", "reqParam": "130",
               "reqTransaction": "contract-1", "reqClientID": "contract"}
    record("task.device_command", tech.post("/task/device/command", json=command))
    record("task.device_command", tech.post("/task/device/command", json=command,
                                            params={"reply": "true"}), full=True)
    record("task.device_command", tech.post("/task/device/command", json={
        "deviceUri": GEN, "reqName": "GetStatus"}, params={"reply": "1"}), full=True)
    record("task.select_image", tech.post("/task/image/select", json={"instance_uid": sops[0]}))
    record("task.deselect_image", tech.post("/task/image/deselect", json={}))
    record("task.expose", tech.post("/task/image/expose", json={"instance_uid": sops[0]}))
    record("study.retake", tech.post("/study/images/retake", json={"instance_uid": sops[0]}))
    record("study.judge", tech.post("/study/images/judge", json={"instance_uid": sops[0],
                                                                 "accept": True}))
    record("task.upload_png", tech.post("/task/image/upload", data={"instance_uid": sops[1]},
                                        files={"data": ("scan.png", png_bytes(), "image/png")}))
    record("study.get", tech.get(f"/study/{sid}"))
    record("study.delete_images", mgr.post("/study/images/delete", json={
        "study_id": sid, "sop_instance_uids": [sops[2]]}))
    record("study.set_status", tech.post("/study/status", json={"study_id": sid,
                                                                "study_status": "Completed"}))
    record("study.lock", mgr.post("/study/lock", json={"study_id": sid, "study_lock": "Locked"}))
    record("study.lock", mgr.post("/study/lock", json={"study_id": sid,
                                                       "study_lock": "Unlocked"}))
    other = tech.ok("POST", "/study", json=study_request(accession_number="ACC-DEL"))
    record("study.delete", mgr.post("/study/delete", json=[other["study_id"]]))
    # the DICOM network: a node on a closed port (its echo result says unreachable)
    node = record("dicom.create_node", admin.post("/dicom/nodes", json={
        "name": "Contract PACS", "ae_title": "CONTRACT", "host": "127.0.0.1", "port": 9,
        "roles": ["storage"]}))
    record("dicom.list_nodes", tech.get("/dicom/nodes"))
    record("dicom.get_node", tech.get(f"/dicom/nodes/{node['id']}"))
    node = record("dicom.update_node", admin.put(f"/dicom/nodes/{node['id']}", json={
        "description": "contract", "version": node["version"]}))
    record("dicom.echo", admin.post(f"/dicom/nodes/{node['id']}/echo"))
    record("dicom.send", tech.post("/dicom/send", json={"node_id": node["id"], "study_id": sid}))
    record("dicom.queue", tech.get("/dicom/queue", params={"study_id": sid}))
    record("dicom.image_results", tech.get(f"/dicom/images/{sops[0]}/results"))
    record("dicom.delete_node", admin.request("DELETE", f"/dicom/nodes/{node['id']}"))
    calls["_sops"] = sops  # type: ignore[assignment]
    calls["_sid"] = sid  # type: ignore[assignment]
    return calls


# --- the document --------------------------------------------------------------------------------
def test_served_openapi_document_validates(doc):
    validate_spec(doc)
    assert doc["info"]["x-protocol-version"] == PROTOCOL_VERSION
    assert set(MESSAGE_SCHEMAS) <= set(doc["components"]["schemas"])
    assert {op_item(doc, op.name)["x-rpc-method"] for op in OPS} == {op.name for op in OPS}


def _field_names(doc: dict[str, Any], schema: dict[str, Any], seen: set[str]) -> set[str]:
    """The fields a data schema names, through $ref, oneOf/anyOf and array items; every
    referenced object must name fields of its own (besides @type) unless empty by
    definition."""
    if "$ref" in schema:
        name, target = resolve(doc, schema)
        if name in seen:
            return {name}
        seen.add(name)
        if name in EMPTY_TYPES:
            return {name}
        fields = _field_names(doc, target, seen)
        assert fields - {"@type"}, f"{name} has no fields"
        return fields
    for key in ("oneOf", "anyOf"):
        if key in schema:
            out: set[str] = set()
            for s in schema[key]:
                out |= _field_names(doc, s, seen)
            return out
    if schema.get("type") == "array":
        items = schema["items"]
        assert items.get("enum") or items.get("type") in ("string", "integer", "number") \
            or _field_names(doc, items, seen), schema
        return {"[items]"}
    props = schema.get("properties") or {}
    for sub in props.values():
        _field_names(doc, sub, seen)
    return set(props)


def test_every_reply_schema_has_fields(doc):
    for op in OPS:
        item = op_item(doc, op.name)
        ok = item["responses"]["200"]
        if op.binary_reply:
            assert "application/json" not in ok["content"], op.name
            assert item["x-rpc-result"] == {"$ref": COMPONENTS + "dios.File"}
            continue
        envelope = ok["content"]["application/json"]["schema"]
        assert set(envelope["required"]) == {"code", "description", "solution", "data"}
        data = envelope["properties"]["data"]
        assert "$ref" in data or "oneOf" in data, (op.name, data)
        fields = _field_names(doc, data, set())
        expected = reply_schema_name(op, "http")
        if expected not in EMPTY_TYPES:
            assert fields - {"@type"}, (op.name, fields)
        error = item["responses"]["default"]["content"]["application/json"]["schema"]
        if "$ref" in error:
            assert resolve(doc, error)[0] == "dios.ErrorEnvelope"
        else:
            assert set(error["properties"]) == {"code", "description", "solution", "data"}


def test_request_schemas_come_from_the_declared_params(doc):
    for op in OPS:
        item = op_item(doc, op.name)
        declared = {(p.name, p.where) for p in op.params}
        listed = {(p["name"], p["in"]) for p in item["parameters"] if p["in"] != "header"}
        assert {d for d in declared if d[1] != "body"} == listed, op.name
        body = [p for p in op.params if p.where == "body"]
        if not body:
            continue
        content = item["requestBody"]["content"]
        schema = next(iter(content.values()))["schema"]
        if op.body == "json-array":
            assert schema["type"] == "array", op.name
            continue
        assert {p.name for p in body} == set(schema["properties"]), op.name
        assert set(schema.get("required", [])) == {p.name for p in body if p.required}
    views = op_item(doc, "study.register")["requestBody"]["content"]["application/json"]
    assert views["schema"]["properties"]["views"]["items"]["required"] == ["view_id"]


def test_every_untyped_reply_is_named():
    for op in OPS:
        if op.reply is None and not op.binary_reply:
            assert op.name in UNTYPED_REPLIES, op.name
    for name, type_name in UNTYPED_REPLIES.items():
        op = next(o for o in OPS if o.name == name)
        assert op.reply is None and type_name in MESSAGE_SCHEMAS, name


def test_status_enumerations_are_the_devices():
    from dios.devices.detector import DetectorState
    from dios.devices.generator import GeneratorState

    status = MESSAGE_SCHEMAS["dr.task.TaskGlobalStatus"]["properties"]
    assert {f"GENERATOR_STATUS_{s.value}" for s in GeneratorState} | {
        "GENERATOR_STATUS_NONE"} == set(status["gen_status"]["enum"])
    assert {f"DETECTOR_STATUS_{s.value}" for s in DetectorState} | {
        "DETECTOR_STATUS_NONE"} == set(status["fpd_status"]["enum"])


def test_schema_examples_validate_against_their_schemas(doc):
    checked = 0
    for name, schema in doc["components"]["schemas"].items():
        if "example" in schema:
            found = problems(doc_validator(doc, {"$ref": COMPONENTS + name}), schema["example"])
            assert not found, (name, found)
            checked += 1
    assert checked >= 5


# --- contract matches reality --------------------------------------------------------------------
def test_live_http_replies_validate_against_the_served_schemas(doc, live):
    covered = set()
    for name, responses in live.items():
        if name.startswith("_"):
            continue
        ok = op_item(doc, name)["responses"]["200"]["content"]["application/json"]["schema"]
        op = next(o for o in OPS if o.name == name)
        for full, r in responses:
            body = r.json()
            found = problems(doc_validator(doc, ok), body)
            assert not found, (name, found[:10])
            # and the exact message schema of this call (not just one of a oneOf)
            type_name = reply_schema_name(op, "http", full=full)
            found = problems(doc_validator(doc, {"$ref": COMPONENTS + type_name}),
                             body["data"])
            assert not found, (name, type_name, found[:10])
            covered.add(name)
    json_ops = {op.name for op in OPS if not op.binary_reply}
    assert covered == json_ops, sorted(json_ops - covered)


def test_the_strict_check_catches_a_reply_that_differs(doc, live):
    """The validation above is not vacuous: an extra field, a missing one, a wrong enum
    value and a wrong type are all refused."""
    full, r = live["study.get"][-1]
    study = r.json()["data"]
    validator = doc_validator(doc, {"$ref": COMPONENTS + "dr.study.StudyReply"})
    assert not problems(validator, study)
    extra = {**study, "patient_weight_kg": 3}
    missing = {k: v for k, v in study.items() if k != "study_lock"}
    wrong_enum = copy.deepcopy(study)
    wrong_enum["series"][0]["images"][0]["expose_status"] = "Exposedish"
    wrong_type = {**study, "weight": "25"}
    for bad in (extra, missing, wrong_enum, wrong_type):
        assert problems(validator, bad)


def test_error_replies_validate_against_the_error_envelope(doc, apis):
    tech = apis["tech"]
    cases = [
        ("study.get", tech.get("/study/20250101000000001")),
        ("study.register", tech.post("/study", json=study_request(patient_id=None))),
        ("protocol.view", tech.get("/protocol/views/NoSuchView")),
        ("auth.list_users", tech.get("/auth/users")),
        ("task.device_command", tech.post("/task/device/command", json={
            "deviceUri": GEN, "reqName": "SetParam_KV", "reqParam": "200"})),
        ("task.device_command", tech.post("/task/device/command", json={
            "deviceUri": GEN, "reqName": "SetParam_KV", "reqParam": "200"},
            params={"reply": "true"})),
    ]
    for name, r in cases:
        assert r.status_code >= 400, (name, r.text[:200])
        schema = op_item(doc, name)["responses"]["default"]["content"]["application/json"]
        found = problems(doc_validator(doc, schema["schema"]), r.json())
        assert not found, (name, r.json(), found)
    refused = cases[-1][1].json()["data"]
    assert not problems(doc_validator(doc, {"$ref": COMPONENTS + "dr.task.DeviceReply"}),
                        refused)


def test_live_rpc_results_validate_against_the_catalogue(console, live):
    cat = catalogue(OPS, CONNECTION_METHODS)
    schemas = {name: closed(s) for name, s in cat["schemas"].items()}

    def check(method: str, result: Any) -> None:
        root = {**cat["methods"][method]["result"], "schemas": schemas}
        found = problems(jsonschema.Draft202012Validator(root), result)
        assert not found, (method, found[:10])

    rpc = RpcClient(console.rpc_port)
    try:
        login = rpc.ok("auth.login", {"username": "tech1", "password": "Str0ng-Passw0rd"})
        check("auth.login", login)
        for method, args in (("task.global_status", {}), ("resource.roles", {}),
                             ("protocol.patient_types", {}),
                             ("study.get", {"study_id": live["_sid"]}),
                             ("task.device_command", {"deviceUri": GEN,
                                                      "reqName": "GetParam_KV"})):
            check(method, rpc.ok(method, args, {"token": login["token"]}))
        preview = rpc.ok("task.preview", {"instance_uid": live["_sops"][0]},
                         {"token": login["token"]})
        assert cat["methods"]["task.preview"]["binary"] is True
        assert isinstance(preview["content"], bytes) and preview["content"][:8] == (
            b"\x89PNG\r\n\x1a\n")
        check("task.preview", {**preview, "content": ""})
        error_root = {**cat["error"], "schemas": schemas}
        for method, args in (("task.device_command", {"deviceUri": GEN, "reqName": "SetParam_KV",
                                                      "reqParam": "200"}),
                             ("study.get", {"study_id": "20250101000000001"}),
                             ("auth.login", {"username": "nobody-contract", "password": "wrong-one"})):
            err, result = rpc.call(method, args, {"token": login["token"]})
            assert result is None and err is not None, method
            found = problems(jsonschema.Draft202012Validator(error_root), err)
            assert not found, (method, err, found)
    finally:
        rpc.close()


# --- handshake and catalogue ---------------------------------------------------------------------
def test_handshake_compatibility_rules():
    hello = handshake({"client": "console/2.3", "protocol": PROTOCOL_VERSION})
    assert hello == {"@type": type_url("dios.rpc.Hello"), "server": "dios-engine",
                     "version": server_version(), "protocol": "1.1", "compatible": True,
                     "reason": "", "features": list(FEATURES)}
    assert {"resume", "drop-notices", "request-id", "binary-files"} <= set(FEATURES)
    assert re.fullmatch(r"\d+(\.\d+)*.*", server_version())
    assert handshake({})["compatible"] is True
    assert compatibility("1.0") == (True, "")
    assert compatibility("1.1") == (True, "")
    for newer_or_other in ("1.2", "2.0", "0.9", "2.1"):
        ok, reason = compatibility(newer_or_other)
        assert ok is False and reason and newer_or_other in reason, newer_or_other
    assert "newer" in compatibility("1.2")[1] and "major" in compatibility("2.0")[1]
    hello = handshake({"protocol": "2.0"})
    assert hello["compatible"] is False and hello["reason"]
    schema = {"$ref": "#/schemas/dios.rpc.Hello",
              "schemas": catalogue([], {})["schemas"]}
    jsonschema.Draft202012Validator(closed(schema)).validate(hello)


@pytest.mark.parametrize("args, field", [
    ({"protocol": "1"}, "protocol"), ({"protocol": "v1.1"}, "protocol"),
    ({"protocol": 1.1}, "protocol"), ({"protocol": "1.1.0"}, "protocol"),
    ({"protocol": ""}, "protocol"), ({"client": 7}, "client"),
    ({"client": "x" * 201}, "client"), ({"client": "bad\nname"}, "client"),
])
def test_handshake_refuses_malformed_fields(args, field):
    with pytest.raises(DiosError) as exc:
        handshake(args)
    assert exc.value.code == INVALID_FIELD and exc.value.data.get("field") == field
    assert "Error" not in exc.value.description("en")


def test_catalogue_covers_every_method_with_schemas():
    cat = catalogue(OPS, CONNECTION_METHODS)
    assert cat["@type"] == type_url("dios.rpc.Catalogue")
    assert cat["protocol"] == PROTOCOL_VERSION and cat["version"] == server_version()
    assert set(cat["methods"]) == {op.name for op in OPS} | set(CONNECTION_METHODS)
    assert set(CONNECTION_METHODS) == {"session.authenticate", "events.subscribe",
                                       "events.unsubscribe", "rpc.methods", "rpc.describe",
                                       "rpc.hello"}
    assert set(cat["notifications"]) == {"event", "events.dropped", "session.expired",
                                         "session.revoked", "error", "events.closed"}
    assert NOTIFICATIONS["event"]["params"] == [{"$ref": "#/schemas/dios.Event"}]
    registry = {"schemas": cat["schemas"]}
    for name, entry in cat["methods"].items():
        assert set(entry) == {"summary", "permission", "params", "result", "binary"}, name
        assert entry["summary"] and entry["permission"], name
        jsonschema.Draft202012Validator.check_schema(entry["params"])
        assert entry["params"]["type"] == "object", name
        target = entry["result"]["$ref"]
        assert target.startswith("#/schemas/") and target[10:] in cat["schemas"], name
    for name, schema in cat["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        text = json.dumps(schema)
        assert "#/components/" not in text and '"nullable"' not in text, name
    # every $ref anywhere in the catalogue resolves
    for target in set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(cat))):
        assert target.startswith("#/schemas/") and target[10:] in cat["schemas"], target
    # params: what the validator of each operation checks
    register = cat["methods"]["study.register"]["params"]
    assert "views" in register["required"] and register["additionalProperties"] is False
    command = cat["methods"]["task.device_command"]
    assert "reply" not in command["params"]["properties"]
    assert command["result"] == {"$ref": "#/schemas/dr.task.DeviceReply"}
    assert cat["methods"]["task.image_file"]["result"] == {"$ref": "#/schemas/dios.File"}
    upload = cat["methods"]["task.upload_png"]["params"]["properties"]["data"]
    assert upload["format"] == "binary" and "MessagePack bin" in upload["description"]
    sub = cat["methods"]["events.subscribe"]["params"]["properties"]
    assert {"pattern", "kinds", "reqClientID", "frames", "resume_from"} == set(sub)
    nullable = cat["schemas"]["dr.study.Study"]["properties"]["study_end_datetime"]
    assert nullable["type"] == ["string", "null"]
    # the catalogue describes itself
    jsonschema.Draft202012Validator(
        {"$ref": "#/schemas/dios.rpc.Catalogue", **registry}).validate(cat)
    assert json.loads(json.dumps(cat)) == cat


def test_catalogue_is_published_without_a_server():
    r = subprocess.run([sys.executable, "-m", "dios.shim.contract"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    published = json.loads(r.stdout)
    assert published == catalogue(OPS, CONNECTION_METHODS)


# --- type generation -----------------------------------------------------------------------------
def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_UPDATE_NOTIFIER": "1", "CI": "1"})


def _installed(root: Path) -> bool:
    for name, version in TYPEGEN_PACKAGES.items():
        meta = root / "node_modules" / name / "package.json"
        if not meta.exists() or json.loads(meta.read_text()).get("version") != version:
            return False
    return True


@pytest.fixture(scope="session")
def typegen() -> dict[str, Path]:
    """openapi-typescript and tsc, installed with npm into .cache/npm/typegen (once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("type generation needs node and npm on PATH (Debian: apt-get install "
                    "nodejs npm); neither may be missing")
    TYPEGEN_DIR.mkdir(parents=True, exist_ok=True)
    with open(TYPEGEN_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time
        if not _installed(TYPEGEN_DIR):
            pkg = TYPEGEN_DIR / "package.json"
            if not pkg.exists():
                pkg.write_text(json.dumps({"name": "dios-typegen", "private": True}))
            specs = [f"{n}@{v}" for n, v in TYPEGEN_PACKAGES.items()]
            r = _run([npm, "install", "--no-audit", "--no-fund", "--save-exact", *specs],
                     TYPEGEN_DIR)
            if r.returncode != 0 or not _installed(TYPEGEN_DIR):
                pytest.fail(f"npm install {' '.join(specs)} failed (exit {r.returncode}); "
                            f"is the npm registry reachable?\n{r.stdout[-2000:]}\n"
                            f"{r.stderr[-3000:]}")
    modules = TYPEGEN_DIR / "node_modules"
    return {"node": Path(node),
            "openapi-typescript": modules / "openapi-typescript" / "bin" / "cli.js",
            "tsc": modules / "typescript" / "bin" / "tsc"}


def _ts_const(name: str, type_name: str, value: Any) -> str:
    return f"export const {name}: S[{json.dumps(type_name)}] = {json.dumps(value)};\n"


def test_typescript_models_generated_from_the_document_type_check(typegen, doc, live,
                                                                 tmp_path):
    (tmp_path / "openapi.json").write_text(json.dumps(doc))
    r = _run([str(typegen["node"]), str(typegen["openapi-typescript"]), "openapi.json",
              "-o", "api.ts"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    generated = (tmp_path / "api.ts").read_text()
    assert '"dr.study.Study"' in generated and '"dr.task.DeviceReply"' in generated

    def data(name: str, full: bool = False) -> Any:
        return next(resp.json()["data"] for f, resp in live[name] if f == full)

    login_ok = next(resp.json() for _, resp in live["auth.login"])
    uses = (
        'import type { components, paths } from "./api";\n'
        'type S = components["schemas"];\n'
        'type LoginOk = paths["/api/v1/auth/login"]["post"]["responses"]["200"]'
        '["content"]["application/json"];\n'
        + f"export const loginOk: LoginOk = {json.dumps(login_ok)};\n"
        + _ts_const("login", "dr.auth.LoginReply", data("auth.login"))
        + _ts_const("reply", "dr.task.DeviceReply", data("task.device_command", True))
        + _ts_const("study", "dr.study.Study", data("study.register"))
        + _ts_const("got", "dr.study.StudyReply", data("study.get"))
        + _ts_const("exposure", "dios.task.Exposure", data("task.expose"))
        + _ts_const("status", "dr.task.TaskGlobalStatus", data("task.global_status"))
        + _ts_const("info", "dr.resource.SoftwareInfo", data("resource.software_info"))
        + _ts_const("views", "dr.protocol.ViewList", data("protocol.procedure_views"))
        + 'export const token: string = loginOk.data.token;\n'
        'export const expires: number = login.expire;\n'
        'export const accepted: string = reply.result;\n'
        'export const ok: boolean = reply.code === "0x000000" && status.all_ready;\n'
        'export const sops: string[] = study.series.flatMap(\n'
        '    (se) => se.images.map((im) => im.sop_instance_id));\n'
        'export const exposed: S["dr.study.Image"]["expose_status"] = '
        'exposure.image.expose_status;\n'
        'export const ended: string | null = got.study_end_datetime;\n'
        'export const kv: number | undefined = exposure.image.acquisition_context?.kv;\n'
    )
    (tmp_path / "use.ts").write_text(uses)
    tsc = [str(typegen["node"]), str(typegen["tsc"]), "--noEmit", "--strict",
           "--target", "es2020", "--module", "esnext", "--moduleResolution", "bundler"]
    r = _run([*tsc, "use.ts"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    wrong = (
        'import type { components } from "./api";\n'
        'type S = components["schemas"];\n'
        + _ts_const("login", "dr.auth.LoginReply", data("auth.login"))
        + 'export const t: string = login.tokn;\n'
        'export const e: S["dr.study.Image"]["expose_status"] = "Exposedish";\n'
        + _ts_const("reply", "dr.task.DeviceReply",
                    {**data("task.device_command", True), "resultValue": "125"})
    )
    (tmp_path / "wrong.ts").write_text(wrong)
    r = _run([*tsc, "wrong.ts"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "tokn" in out and "Exposedish" in out and "resultValue" in out, out
