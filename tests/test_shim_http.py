"""The HTTP shim through a real uvicorn server: envelopes, bad input on every endpoint,
tokens, roles, limits, file names, uploads, the OpenAPI document and the WebSocket stream.

Every refusal must be an envelope with its own result code, no traceback, and leave the
stored state as it was.
"""

from __future__ import annotations

import io
import json
import re
import time

import jwt
import numpy as np
import pytest
from PIL import Image

from dios.auth.roles import PERMISSIONS
from dios.codes import DiosError
from dios.shim.api import operations
from tests.console_helpers import (
    Api,
    images_of,
    setup_users,
    start_console,
    study_request,
)

OPS = operations()
ROLE_ORDER = ("service", "admin", "mgr", "tech", "guest")
PATH_FILL = {"study_id": "20250101000000001", "instance_uid": "1.2.3.4.5", "uid": "9999",
             "kind": "views", "entry_id": "View_DX_T_A_SK_AP_00",
             "view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002",
             "apr_id": "View_DX_T_A_SK_AP_00", "name": "View_DX_T_A_SK_AP_00",
             "node_id": "9999"}
CODES = {"MALFORMED": "0x030001", "MISSING": "0x030002", "INVALID": "0x030003",
         "NOT_FOUND": "0x030004", "TOO_LARGE": "0x030005", "MEDIA": "0x030006",
         "NO_METHOD": "0x030007", "NOT_AUTH": "0x020001", "EXPIRED": "0x020003",
         "TOKEN": "0x020004", "FORBIDDEN": "0x020005", "STUDY_NF": "0x040001",
         "IMAGE_NF": "0x040002", "TRANSITION": "0x040003", "CATALOG_NF": "0x050001",
         "FILE_NAME": "0x060002"}


def png_bytes(shape: tuple[int, int] = (64, 80)) -> bytes:
    arr = (np.arange(shape[0] * shape[1]) % 251).astype(np.uint8).reshape(shape)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def path_of(op, **over) -> str:
    fill = {**PATH_FILL, **over}
    path = re.sub(r"{(\w+):\w+}", r"{\1}", op.path)
    return path.format(**fill)


def role_with(permission: str) -> str:
    return next(r for r in ROLE_ORDER if r in PERMISSIONS[permission])


def assert_error(r, code: str, status: int | None = None) -> dict:
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text
    body = r.json()
    assert set(body) == {"code", "description", "solution", "data"}, body
    assert body["code"] == code, (r.status_code, body)
    assert body["description"]
    if status is not None:
        assert r.status_code == status, (r.status_code, body)
    return body


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = start_console(tmp_path_factory.mktemp("http"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apis(console):
    apis = setup_users(console)
    yield apis
    for a in apis.values():
        a.close()


@pytest.fixture(scope="module")
def study(apis):
    """A registered study with one exposed image (the first) and two unexposed."""
    tech = apis["tech"]
    st = tech.ok("POST", "/study", json=study_request())
    first = images_of(st)[0]["sop_instance_id"]
    tech.ok("POST", "/task/image/expose", json={"instance_uid": first})
    return tech.ok("GET", f"/study/{st['study_id']}")


def snapshot(apis, study_id: str) -> dict:
    return apis["tech"].ok("GET", f"/study/{study_id}")


# --- envelope, headers, document ---------------------------------------------------------------
def test_success_envelope_and_language(apis):
    r = apis["tech"].get("/resource/roles")
    assert r.status_code == 200
    assert r.json() == {"code": "0x000000", "description": "Success", "solution": "",
                        "data": ["service", "admin", "mgr", "tech"]}
    r = apis["tech"].get("/resource/roles", headers={"Language": "zh"})
    assert r.json()["description"] == "成功"
    r = apis["tech"].get("/study/20250101000000001", headers={"Language": "zh"})
    body = assert_error(r, CODES["STUDY_NF"], 404)
    assert body["description"].startswith("检查不存在")


def test_source_header_is_recorded(console, apis):
    before = dict(console.shim.requests_by_source)
    for source in ("Electron", "Android"):
        apis["tech"].get("/task/status", headers={"Source": source})
    after = console.shim.requests_by_source
    assert after.get("Electron", 0) == before.get("Electron", 0) + 1
    assert after.get("Android", 0) == before.get("Android", 0) + 1


def test_product_header_filters_the_catalog(apis):
    human = apis["tech"].ok("GET", "/protocol/body-parts", headers={"Product": "DROS"})
    vet = apis["tech"].ok("GET", "/protocol/body-parts", headers={"Product": "VETDROS"})
    ids_h = {b["body_part_id"] for b in human["body_part_list"]}
    ids_v = {b["body_part_id"] for b in vet["body_part_list"]}
    assert ids_h and ids_v and not ids_h & ids_v
    r = apis["tech"].get("/protocol/body-parts", headers={"Product": "XRAY"})
    assert_error(r, CODES["INVALID"], 400)


def test_openapi_document_is_generated_from_the_route_table(console):
    api = Api(console)
    doc = api.client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for op in OPS:
        path = "/api/v1" + re.sub(r"{(\w+):\w+}", r"{\1}", op.path)
        item = doc["paths"][path][op.method.lower()]
        assert item["x-rpc-method"] == op.name
        assert item["x-permission"] == (op.permission or "public")
        assert ("security" in item) == (op.permission is not None)
    codes = {c["code"] for c in doc["x-result-codes"]}
    assert set(CODES.values()) <= codes
    api.close()


def test_unknown_path_and_method(apis):
    assert_error(apis["tech"].get("/nothing/here"), CODES["NO_METHOD"], 404)
    r = apis["tech"].request("DELETE", "/task/status")
    assert_error(r, CODES["NO_METHOD"], 405)


# --- tokens and roles ---------------------------------------------------------------------------
def _call(api: Api, op, json_body=None, **over):
    return api.request(op.method, path_of(op, **over), json=json_body)


@pytest.mark.parametrize("op", [o for o in OPS if o.permission], ids=lambda o: o.name)
def test_every_protected_endpoint_refuses_missing_forged_and_foreign_tokens(console, apis, op):
    anon = Api(console)
    assert_error(_call(anon, op), CODES["NOT_AUTH"], 401)
    good = apis["tech"].token
    head, payload, sig = good.split(".")
    forged_sig = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    claims = jwt.decode(good, options={"verify_signature": False})
    for bad in (f"{head}.{payload}.{forged_sig}",
                jwt.encode({**claims, "id": 1, "name": "admin"}, "guessed-secret" * 4, "HS256"),
                jwt.encode(claims, None, algorithm="none"),
                "not-a-token"):
        anon.token = bad
        assert_error(_call(anon, op), CODES["TOKEN"], 401)
    anon.close()


RESTRICTED = [o for o in OPS if o.permission and set(ROLE_ORDER) - PERMISSIONS[o.permission]]


#: Arguments that make each read endpoint succeed (path fill, query).
READ_CALLS = {
    "resource.options": ({"kind": "sex"}, None),
    "resource.view_icon": ({"name": "View_DX_T_A_SK_AP_00"}, None),
    "protocol.procedures": ({}, {"body_part_id": "Human_SKULL"}),
}


def _expected_read(console, name: str):
    """What the service itself answers for the read endpoint ``name`` (DROS, English)."""
    svc = console.services
    cat = svc.catalog
    view = "View_DX_T_A_SK_AP_00"
    return {
        "resource.roles": lambda: svc.resource.roles(),
        "resource.options": lambda: svc.resource.options("sex", "en", "DROS"),
        "protocol.patient_types": lambda: None,
        "protocol.body_parts": lambda: None,
        "protocol.procedures": lambda: cat.procedure_list("Human_SKULL", "DROS", "en"),
        "protocol.procedure_views": lambda: cat.view_list(procedure_id="P0-0002",
                                                          product="DROS", language="en"),
        "protocol.view": lambda: cat.view(view, "DROS", "en"),
        "protocol.tech_params": lambda: cat.tech_params(view, "Medium", 1, "DROS"),
        "protocol.apr_device": lambda: cat.apr_device(view, 1, "DROS"),
    }.get(name, lambda: None)()


def test_read_endpoints_are_open_to_every_role_including_guest(console, apis):
    read_ops = [op for op in OPS
                if op.permission and not set(ROLE_ORDER) - PERMISSIONS[op.permission]]
    assert {op.name for op in read_ops} >= {"resource.roles", "resource.options",
                                            "resource.view_icon", "protocol.view",
                                            "task.global_status"}
    for op in read_ops:
        fill, query = READ_CALLS.get(op.name, ({}, None))
        replies = {}
        for role in ROLE_ORDER:
            r = apis[role].request(op.method, path_of(op, **fill), params=query)
            assert r.status_code == 200, (op.name, role, r.status_code, r.text[:300])
            replies[role] = r
        if op.binary_reply:  # a view icon: the catalog's PNG, for every role
            png = console.services.catalog.view_icon("View_DX_T_A_SK_AP_00")
            for role, r in replies.items():
                assert r.headers["content-type"].startswith("image/png"), role
                assert r.content == bytes(png) and r.content[:8] == b"\x89PNG\r\n\x1a\n"
            continue
        bodies = {role: r.json() for role, r in replies.items()}
        data = bodies["guest"]["data"]
        assert bodies["guest"]["code"] == "0x000000" and data, op.name
        if op.reply:
            assert data["@type"].endswith("/" + op.reply), (op.name, data.get("@type"))
        if op.name != "task.global_status":  # the devices' status may move between calls
            assert all(b["data"] == data for b in bodies.values()), op.name
        expected = _expected_read(console, op.name)
        if expected is not None:
            assert data == expected, op.name


@pytest.mark.parametrize("op", RESTRICTED, ids=lambda o: o.name)
def test_every_endpoint_checks_the_role(apis, op):
    lacking = [r for r in ROLE_ORDER if r not in PERMISSIONS[op.permission]]
    for role in lacking:
        assert_error(_call(apis[role], op, {}), CODES["FORBIDDEN"], 403)


def test_expired_token(console, apis):
    auth = console.services.auth
    user = auth.db.query_one("SELECT * FROM users WHERE username = ?", ["tech1"])
    token, exp = auth._issue(user, -5)
    assert exp < time.time()
    api = Api(console, token=token)
    assert_error(api.get("/task/status"), CODES["EXPIRED"], 401)
    assert_error(api.get("/study/20250101000000001"), CODES["EXPIRED"], 401)
    api.close()


def test_raw_device_commands_need_the_service_role(apis):
    body = {"deviceUri": "DIOS/DEVICE/Detector", "reqName": "GetModes", "reqParam": "",
            "reqTransaction": "t1", "reqClientID": "c1"}
    for role in ("tech", "mgr", "admin"):
        assert_error(apis[role].post("/task/device/command", json=body), CODES["FORBIDDEN"], 403)
    apis["service"].ok("POST", "/task/device/command", json=body)
    cal = {**body, "reqName": "CalibrateOffset"}
    assert_error(apis["admin"].post("/task/device/command", json=cal), CODES["FORBIDDEN"], 403)
    # the console's operational commands are for every role that operates the room
    kv = {**body, "deviceUri": "DIOS/DEVICE/Generator", "reqName": "GetParam_KV"}
    apis["tech"].ok("POST", "/task/device/command", json=kv)


# --- malformed, missing, wrong types -----------------------------------------------------------------
BODY_OPS = [o for o in OPS if o.method in ("POST", "PUT") and o.body in ("json", "json-array")]


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda o: o.name)
def test_malformed_json_on_every_body_endpoint(apis, study, op):
    api = apis[role_with(op.permission)] if op.permission else apis["tech"]
    for junk in (b"{not json", b'{"a": ', b"\xff\xfe\x00", b"[1, 2" if op.body == "json" else b"{"):
        r = api.request(op.method, path_of(op, study_id=study["study_id"]), content=junk,
                        headers={"Content-Type": "application/json"})
        assert_error(r, CODES["MALFORMED"], 400)
    wrong_shape = b"[]" if op.body == "json" else b"{}"
    r = api.request(op.method, path_of(op, study_id=study["study_id"]), content=wrong_shape,
                    headers={"Content-Type": "application/json"})
    assert_error(r, CODES["MALFORMED"], 400)


REQUIRED_OPS = [o for o in OPS if any(p.required and p.where == "body" for p in o.params)]


@pytest.mark.parametrize("op", REQUIRED_OPS, ids=lambda o: o.name)
def test_missing_mandatory_fields_on_every_endpoint(apis, study, op):
    api = apis[role_with(op.permission)] if op.permission else apis["tech"]
    required = [p for p in op.params if p.required and p.where == "body"]
    full = {p.name: p.example if p.example is not None else "x" for p in required}
    for p in required:
        args = {k: v for k, v in full.items() if k != p.name}
        if op.body == "upload":
            r = api.request(op.method, path_of(op), files={"x": ("x.txt", b"1")},
                            data={k: str(v) for k, v in args.items()})
        elif op.body == "json-array":
            r = api.request(op.method, path_of(op), content=b"",
                            headers={"Content-Type": "application/json"})
        else:
            r = api.request(op.method, path_of(op, study_id=study["study_id"]), json=args)
        body = assert_error(r, CODES["MISSING"], 400)
        if op.body != "json-array":
            assert p.name in body["description"], body


TYPED_OPS = [o for o in OPS if not o.service_validates and o.body == "json"
             and any(p.where == "body" for p in o.params)]
WRONG = {"string": 12345, "integer": "seven", "boolean": "perhaps", "boolish": "perhaps",
         "object[]": ["not-an-object"], "string[]": [1, 2], "object": "text", "number": "n"}


@pytest.mark.parametrize("op", TYPED_OPS, ids=lambda o: o.name)
def test_wrong_types_on_every_endpoint(apis, study, op):
    api = apis[role_with(op.permission)] if op.permission else apis["tech"]
    body_params = [p for p in op.params if p.where == "body" and p.type in WRONG]
    valid = {p.name: (p.example if p.example is not None else "x") for p in body_params
             if p.required}
    for p in body_params:
        args = {**valid, p.name: WRONG[p.type]}
        r = api.request(op.method, path_of(op, study_id=study["study_id"]), json=args)
        body = assert_error(r, CODES["INVALID"], 400)
        assert p.name in body["description"], body


def test_register_and_update_wrong_types_and_values(apis, study):
    tech = apis["tech"]
    before = snapshot(apis, study["study_id"])
    for field, value in (("patient_id", 123), ("weight", "heavy"), ("patient_sex", "X"),
                         ("patient_dob", "yesterday"), ("patient_size", "Huge"),
                         ("views", "all"), ("is_sedation", "maybe")):
        r = tech.post("/study", json=study_request(**{field: value}))
        body = assert_error(r, CODES["INVALID"], 400)
        assert field in body["description"]
        update = {k: v for k, v in study_request(**{field: value}).items() if k != "views"}
        r = tech.put(f"/study/{study['study_id']}", json=update)
        if field != "views":
            assert_error(r, CODES["INVALID"], 400)
    r = tech.post("/study", json=study_request(views=[{"view_id": "View_NOPE", "procedure_id": ""}]))
    assert_error(r, CODES["CATALOG_NF"])
    assert snapshot(apis, study["study_id"]) == before


# --- unknown ids, invalid transitions -------------------------------------------------------------
def test_unknown_ids_everywhere(apis, study):
    tech, svc = apis["tech"], apis["service"]
    missing_study = "20990101000000001"
    missing_image = "1.2.826.0.1.3680043.10.1443.3.999999"
    checks = [
        (tech.get(f"/study/{missing_study}"), CODES["STUDY_NF"]),
        (tech.put(f"/study/{missing_study}",
                  json={k: v for k, v in study_request().items() if k != "views"}),
         CODES["STUDY_NF"]),
        (tech.get(f"/study/{missing_study}/stat"), CODES["STUDY_NF"]),
        (svc.post("/study/delete", json=[missing_study]), CODES["STUDY_NF"]),
        (tech.post("/study/images", json={"study_id": missing_study,
                                          "views": [{"view_id": "View_DX_T_A_SK_AP_00",
                                                     "procedure_id": ""}]}), CODES["STUDY_NF"]),
        (tech.post("/study/images/retake", json={"instance_uid": missing_image}), CODES["IMAGE_NF"]),
        (tech.post("/study/images/judge", json={"instance_uid": missing_image, "accept": True}),
         CODES["IMAGE_NF"]),
        (tech.post("/study/status", json={"study_id": missing_study, "study_status": "Completed"}),
         CODES["STUDY_NF"]),
        (tech.post("/task/image/select", json={"instance_uid": missing_image}), CODES["IMAGE_NF"]),
        (tech.get(f"/task/image/{missing_image}/file"), CODES["IMAGE_NF"]),
        (tech.get(f"/task/image/{missing_image}/preview"), CODES["IMAGE_NF"]),
        (tech.get("/protocol/views/View_DX_NOPE"), CODES["CATALOG_NF"]),
        (tech.get("/protocol/aprs/View_DX_NOPE"), CODES["CATALOG_NF"]),
        (tech.get("/protocol/procedures/P9-9999/views"), CODES["CATALOG_NF"]),
        (tech.get("/resource/options/nope"), CODES["NOT_FOUND"]),
        (tech.post("/task/device/command", json={"deviceUri": "DIOS/DEVICE/Nothing",
                                                  "reqName": "GetStatus"}), "0x010002"),
        (svc.post("/task/device/command", json={"deviceUri": "DIOS/DEVICE/Generator",
                                                 "reqName": "Fly"}), "0x010003"),
        (tech.post("/task/device/command", json={"deviceUri": "not/a/uri",
                                                  "reqName": "GetStatus"}), "0x010001"),
        (apis["admin"].put("/auth/users/9999", json={"role": "tech"}), CODES["NOT_FOUND"]),
    ]
    for r, code in checks:
        assert_error(r, code)


def test_invalid_transitions_leave_state_unchanged(apis, study):
    tech = apis["tech"]
    sid = study["study_id"]
    exposed, unexposed = images_of(study)[0], images_of(study)[1]
    before = snapshot(apis, sid)
    assert_error(tech.post("/study/images/judge", json={"instance_uid": unexposed["sop_instance_id"],
                                                         "accept": True}), CODES["TRANSITION"], 409)
    assert_error(tech.post("/study/images/retake", json={"instance_uid": unexposed["sop_instance_id"]}),
                 CODES["TRANSITION"], 409)
    assert_error(tech.post("/task/image/select", json={"instance_uid": exposed["sop_instance_id"]}),
                 CODES["TRANSITION"], 409)
    assert_error(tech.post("/study/status", json={"study_id": sid, "study_status": "Arrived"}),
                 CODES["INVALID"], 400)
    assert_error(tech.get(f"/task/image/{unexposed['sop_instance_id']}/file"), CODES["TRANSITION"])
    # no image armed: the generator refuses to expose, and nothing moves
    r = tech.post("/task/device/command", json={"deviceUri": "DIOS/DEVICE/Generator",
                                                 "reqName": "Expose", "reqParam": "",
                                                 "reqTransaction": "t", "reqClientID": "c"})
    assert_error(r, "0x010006", 409)
    r = apis["service"].post("/task/image/upload", params={"instance_uid": exposed["sop_instance_id"]},
                             content=png_bytes(), headers={"Content-Type": "image/png"})
    assert_error(r, CODES["TRANSITION"], 409)
    assert snapshot(apis, sid) == before


# --- sizes, file names, uploads ----------------------------------------------------------------------
def test_oversized_bodies(console, apis, study):
    tech = apis["tech"]
    before = snapshot(apis, study["study_id"])
    count = tech.ok("GET", "/study")["count"]
    big = json.dumps(study_request(comment="x" * (2 << 20))).encode()
    assert_error(tech.post("/study", content=big, headers={"Content-Type": "application/json"}),
                 CODES["TOO_LARGE"], 413)

    def chunks():
        for _ in range(40):
            yield b" " * 65536

    r = tech.post("/study", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, CODES["TOO_LARGE"], 413)
    image = images_of(study)[2]["sop_instance_id"]
    huge = png_bytes() + b"\0" * (console.shim.max_upload + 1)
    r = tech.post("/task/image/upload", files={"data": ("big.png", huge, "image/png")},
                  data={"instance_uid": image})
    assert_error(r, CODES["TOO_LARGE"], 413)
    assert snapshot(apis, study["study_id"]) == before
    assert tech.ok("GET", "/study")["count"] == count


def test_path_traversal_in_file_names(apis, study):
    tech = apis["tech"]
    image = images_of(study)[2]["sop_instance_id"]
    for name in ("..%2F..%2Fetc%2Fpasswd", "Image%2F..%2F..%2Fb.png", "..\\..\\boot.ini",
                 "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"):
        r = tech.get(f"/resource/view-icons/{name}")
        assert_error(r, CODES["FILE_NAME"], 400)
    r = tech.get("/resource/view-icons/../../../etc/passwd")  # the client resolves the dots
    assert r.status_code == 404 and "root:" not in r.text
    for uid in ("..", "..%2F..%2Fetc%2Fpasswd", "1.2.3/../../x"):
        r = tech.get(f"/task/image/{uid}/file")
        assert r.status_code in (400, 404)
        assert r.json()["code"] in (CODES["INVALID"], CODES["NO_METHOD"])
    r = tech.post("/task/image/upload", files={"data": ("../../evil.png", png_bytes(), "image/png")},
                  data={"instance_uid": image})
    assert_error(r, CODES["FILE_NAME"], 400)
    assert images_of(snapshot(apis, study["study_id"]))[2]["expose_status"] == "Unexposed"


def test_non_png_upload_is_refused(apis, study):
    tech = apis["tech"]
    image = images_of(study)[2]["sop_instance_id"]
    before = snapshot(apis, study["study_id"])
    for payload in (b"GIF89a....", b"%PDF-1.4", b"\x89PNG\r\n\x1a\n" + b"broken" * 10, b""):
        r = tech.post("/task/image/upload", files={"data": ("x.png", payload, "image/png")},
                      data={"instance_uid": image})
        assert_error(r, CODES["MEDIA"] if payload else CODES["MEDIA"], 415)
    assert snapshot(apis, study["study_id"]) == before


def test_png_upload_becomes_the_images_dicom_file(apis, study):
    import pydicom

    tech = apis["tech"]
    image = images_of(study)[2]["sop_instance_id"]
    data = tech.ok("POST", "/task/image/upload", files={"data": ("scan.png", png_bytes(), "image/png")},
                   data={"instance_uid": image})
    assert data["@type"] == "type.googleapis.com/dr.task.DcmPath"
    assert data["path"].endswith(".dcm") and "/" not in data["path"]
    after = images_of(snapshot(apis, study["study_id"]))[2]
    assert after["expose_status"] == "Exposed" and after["storage_status"] == "Saved"
    assert after["secondary_sop_uid"] == data["path"][:-4]
    r = tech.get(f"/task/image/{image}/file")
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(r.content))
    assert ds.SOPInstanceUID == data["path"][:-4]
    assert ds.StudyInstanceUID == study["study_instance_uid"]
    assert (ds.Rows, ds.Columns) == (64, 80)
    r = tech.get(f"/task/image/{image}/preview")
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_guest_token_reads_no_patient_data(console, apis, study):
    guest = apis["guest"]
    sop = images_of(study)[0]["sop_instance_id"]  # exposed: it has a file and a preview
    for path in (f"/study/{study['study_id']}", "/study", "/study/stat",
                 f"/study/{study['study_id']}/stat", f"/task/image/{sop}/file",
                 f"/task/image/{sop}/preview"):
        assert_error(guest.get(path), CODES["FORBIDDEN"], 403)
    assert apis["tech"].get(f"/task/image/{sop}/file").status_code == 200
    guest.ok("GET", "/task/status")
    guest.ok("GET", "/protocol/views/View_DX_T_A_SK_AP_00")


def test_register_records_the_source_and_the_user(apis):
    tech = apis["tech"]
    req = study_request()
    del req["operator_id"]
    st = tech.ok("POST", "/study", json=req, headers={"Source": "Electron"})
    assert st["reg_source"] == "Electron" and st["operator_name"] == "tech1"
    got = tech.ok("GET", f"/study/{st['study_id']}")
    assert (got["reg_source"], got["operator_name"]) == ("Electron", "tech1")
    st = tech.ok("POST", "/study", json=study_request(), headers={"Source": "Android"})
    assert (st["reg_source"], st["operator_name"]) == ("Android", "OP987")


def test_image_paths_are_stored_relative_to_the_data_directory(console, apis, study):
    image = images_of(study)[0]
    sop = image["sop_instance_id"]
    rel = image["image_file_path"]
    assert rel == f"images/{study['study_instance_uid']}/{sop}.dcm"
    data_dir = console.config.data_dir.resolve()
    absolute = console.services.task.image_path(sop)
    assert absolute.is_absolute() and absolute == data_dir / rel and absolute.is_file()
    assert console.services.study.image_path(sop) == absolute
    ctx = console.services.study.image_context(sop)["image"]
    assert ctx["preview_path"] == f"previews/{sop}.png"
    unexposed = images_of(study)[1]["sop_instance_id"]
    with pytest.raises(DiosError) as e:
        console.services.study.image_path(unexposed)
    assert e.value.code.name == "INVALID_TRANSITION"


def test_patient_data_is_readable_by_the_owner_only(console, study):
    import os
    import stat

    def mode(p) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    data_dir = console.config.data_dir
    for d in (data_dir, data_dir / "images", data_dir / "previews", data_dir / "calibration"):
        assert mode(d) == 0o700, d
    assert mode(data_dir / "dios.db") == 0o600
    sop = images_of(study)[0]["sop_instance_id"]
    dcm = console.services.task.image_path(sop)
    assert mode(dcm.parent) == 0o700
    assert mode(dcm) == 0o600
    assert mode(data_dir / "previews" / f"{sop}.png") == 0o600


# --- WebSocket events --------------------------------------------------------------------------------
def test_websocket_stream_needs_the_task_read_permission(console, apis, monkeypatch):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from dios.auth.roles import ROLES

    monkeypatch.setitem(PERMISSIONS, "task.read", frozenset(ROLES))  # guest loses task.read
    url = f"ws://127.0.0.1:{console.http_port}/api/v1/events"
    with connect(url + f"?token={apis['guest'].token}") as ws:
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error" and msg["code"] == CODES["FORBIDDEN"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4403
    with connect(url) as ws:  # the same with the first-message authentication
        ws.send(json.dumps({"type": "auth", "token": apis["guest"].token}))
        assert json.loads(ws.recv(timeout=10))["code"] == CODES["FORBIDDEN"]
    with connect(url + f"?token={apis['tech'].token}") as ws:
        ws.send(json.dumps({"type": "subscribe", "pattern": "task"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"


def test_websocket_events_with_pattern_filter(console, apis):
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{console.http_port}/api/v1/events"
    with connect(url + "?token=forged") as ws:
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error" and msg["code"] == CODES["TOKEN"]
    with connect(url) as ws:
        ws.send(json.dumps({"type": "subscribe", "pattern": "DIOS/DEVICE/*"}))
        msg = json.loads(ws.recv(timeout=10))
        assert msg["type"] == "error" and msg["code"] == CODES["NOT_AUTH"]
    with connect(url, additional_headers={"Authorization": f"Bearer {apis['tech'].token}"}) as ws:
        ws.send("{garbage")
        assert json.loads(ws.recv(timeout=10))["code"] == CODES["MALFORMED"]
        ws.send(json.dumps({"type": "subscribe", "pattern": "DIOS/DEVICE/Generator",
                            "kinds": ["param"]}))
        sub = json.loads(ws.recv(timeout=10))
        assert sub["type"] == "subscribed"
        ws.send(json.dumps({"type": "subscribe", "pattern": "study"}))
        study_sub = json.loads(ws.recv(timeout=10))["subscription"]
        for kv in ("66", "77"):
            apis["tech"].ok("POST", "/task/device/command", json={
                "deviceUri": "DIOS/DEVICE/Generator", "reqName": "SetParam_KV", "reqParam": kv,
                "reqTransaction": f"tx-{kv}", "reqClientID": "ws-test"})
        apis["tech"].ok("POST", "/task/device/command", json={
            "deviceUri": "DIOS/DEVICE/Detector", "reqName": "GetStatus"})
        st = apis["tech"].ok("POST", "/study", json=study_request())
        seen, study_events = [], []
        deadline = time.time() + 15
        while time.time() < deadline and not (len(seen) >= 2 and study_events):
            ev = json.loads(ws.recv(timeout=10))
            assert ev["type"] == "event"
            if ev["subscription"] == study_sub:
                study_events.append(ev)
                continue
            assert ev["uri"] == "DIOS/DEVICE/Generator" and ev["kind"] == "param"
            if ev["name"] == "KV":
                seen.append((ev["value"], ev["reqTransaction"], ev["reqClientID"]))
        assert ("66", "tx-66", "ws-test") in seen and ("77", "tx-77", "ws-test") in seen
        assert study_events[0]["uri"] == f"DIOS/STUDY/{st['study_id']}"
        assert study_events[0]["name"] == "study.registered"


def test_unexpected_exceptions_become_internal_without_traceback(console, apis, caplog):
    task = console.services.task
    original = task.global_status

    def broken() -> dict:
        raise ZeroDivisionError("secret detail that must not leak")

    task.global_status = broken
    try:
        with caplog.at_level("ERROR", logger="dios.shim"):
            r = apis["tech"].get("/task/status", headers={"Language": "zh"})
    finally:
        task.global_status = original
    body = assert_error(r, "0x0F0001", 500)
    assert "secret detail" not in r.text and "ZeroDivisionError" not in r.text
    incident = body["data"]["incident"]
    assert incident in body["description"]
    logged = [rec for rec in caplog.records if incident in rec.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log only
    assert apis["tech"].ok("GET", "/task/status")["@type"].endswith("TaskGlobalStatus")
