"""MessagePack-RPC over a real TCP connection with a raw msgpack client: calls, errors,
notifications, binary downloads, garbage bytes, oversized messages and slow clients."""

from __future__ import annotations

import io
import socket
import time

import msgpack
import pytest

from dios.shim.api import operations
from tests.console_helpers import (
    RpcClient,
    images_of,
    setup_users,
    start_console,
    study_request,
)
from tests.test_shim_http import png_bytes

MAX_MESSAGE = 4 << 20


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = start_console(tmp_path_factory.mktemp("rpc"),
                      rpc_options={"max_message": MAX_MESSAGE, "write_timeout": 1.0})
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apis(console):
    apis = setup_users(console)
    yield apis
    for a in apis.values():
        a.close()


@pytest.fixture()
def rpc(console):
    client = RpcClient(console.rpc_port)
    yield client
    client.close()


def login(rpc: RpcClient, role: str) -> dict:
    return rpc.ok("auth.login", {"username": f"{role}1", "password": "Str0ng-Passw0rd"})


def test_methods_mirror_the_http_operations(rpc):
    names = set(rpc.ok("rpc.methods")["methods"])
    assert {op.name for op in operations()} <= names
    assert {"events.subscribe", "session.authenticate"} <= names


def test_login_per_connection_and_token_param(console, apis, rpc):
    err, _ = rpc.call("task.global_status")
    assert err["code"] == "0x020001" and set(err) == {"code", "description", "solution"}
    login(rpc, "tech")
    status = rpc.ok("task.global_status")
    assert status["@type"] == "type.googleapis.com/dr.task.TaskGlobalStatus"
    assert set(status) == {"@type", "gen_status", "gen_ready", "fpd_status", "fpd_ready",
                           "insp_status", "insp_ready", "all_ready"}
    other = RpcClient(console.rpc_port)
    try:
        assert other.call("task.global_status")[0]["code"] == "0x020001"
        assert other.ok("task.global_status", {}, {"token": apis["mgr"].token})["all_ready"] in (
            True, False)
        assert other.call("session.authenticate", {"token": "forged"})[0]["code"] == "0x020004"
        who = other.ok("session.authenticate", {"token": apis["mgr"].token, "language": "zh"})
        assert who["name"] == "mgr1"
        err, _ = other.call("study.get", {"study_id": "20990101000000001"})
        assert err["code"] == "0x040001" and err["description"].startswith("检查不存在")
    finally:
        other.close()


def test_errors_have_the_same_codes_as_http(apis, rpc):
    login(rpc, "tech")
    cases = [
        (("no.such.method", {}), "0x030007"),
        (("study.register", {"patient_id": "P1"}), "0x030002"),
        (("study.register", study_request(weight="heavy")), "0x030003"),
        (("study.judge", {"instance_uid": "1.2.3", "accept": "perhaps"}), "0x030003"),
        (("study.delete", {"study_ids": ["20250101000000001"]}), "0x020005"),
        (("task.device_command", {"deviceUri": "DIOS/DEVICE/Detector",
                                  "reqName": "CalibrateGain"}), "0x020005"),
        (("study.get", "not-a-map"), "0x030003"),
        (("study.get", {}, {}, {}), "0x030003"),
        (("study.get", {"study_id": "1"}, {"token": 5}), "0x030003"),
    ]
    for (method, *params), code in cases:
        err, result = rpc.call(method, *params)
        assert result is None and err["code"] == code, (method, err)
        assert "Traceback" not in err["description"]
    # the connection is still healthy after all of them
    assert rpc.ok("task.global_status")["@type"].endswith("TaskGlobalStatus")


def test_notifications_for_subscribed_events(apis, rpc):
    login(rpc, "tech")
    sub = rpc.ok("events.subscribe", {"pattern": "DIOS/DEVICE/Generator", "kinds": ["param"]})
    assert rpc.call("events.subscribe", {"pattern": "elsewhere"})[0]["code"] == "0x030003"
    assert rpc.call("events.subscribe", {"kinds": ["bogus"]})[0]["code"] == "0x030003"
    rpc.ok("task.device_command", {"deviceUri": "DIOS/DEVICE/Generator", "reqName": "SetParam_KV",
                                   "reqParam": "73", "reqTransaction": "rpc-tx",
                                   "reqClientID": "rpc-client"})
    note = rpc.wait_notification(lambda m: m[0] == 2 and m[1] == "event"
                                 and m[2][0]["name"] == "KV")
    ev = note[2][0]
    assert ev["subscription"] == sub["subscription"]
    assert (ev["uri"], ev["kind"], ev["value"]) == ("DIOS/DEVICE/Generator", "param", "73")
    assert (ev["reqTransaction"], ev["reqClientID"]) == ("rpc-tx", "rpc-client")
    rpc.ok("events.unsubscribe", {"subscription": sub["subscription"]})
    assert rpc.call("events.unsubscribe", {"subscription": sub["subscription"]})[0]["code"] == "0x030003"


def test_exposure_with_progress_events_and_binary_downloads(apis, rpc):
    import pydicom

    login(rpc, "tech")
    study = rpc.ok("study.register", study_request())
    assert study["@type"] == "type.googleapis.com/dr.study.Study"
    image = images_of(study)[0]["sop_instance_id"]
    rpc.ok("events.subscribe", {"pattern": "task"})
    rpc.ok("events.subscribe", {"pattern": "DIOS/DEVICE/Detector", "kinds": ["image"],
                                "frames": True})
    out = rpc.ok("task.expose", {"instance_uid": image})
    assert out["image"]["expose_status"] == "Exposed"
    ready = rpc.wait_notification(lambda m: m[1] == "event" and m[2][0]["uri"] == "DIOS/TASK/Image")
    assert ready[2][0]["value"] == image and ready[2][0]["data"]["study_id"] == study["study_id"]
    frame_ev = rpc.wait_notification(lambda m: m[1] == "event" and m[2][0]["kind"] == "image"
                                     and m[2][0]["uri"] == "DIOS/DEVICE/Detector")
    frame = frame_ev[2][0]["data"]["frame"]
    pixels = frame["pixels"]
    assert isinstance(pixels["data"], bytes)  # MessagePack bin, not base64 text
    assert len(pixels["data"]) == pixels["shape"][0] * pixels["shape"][1] * 2
    dcm = rpc.ok("task.image_file", {"instance_uid": image})
    assert dcm["media_type"] == "application/dicom" and isinstance(dcm["content"], bytes)
    ds = pydicom.dcmread(io.BytesIO(dcm["content"]))
    assert ds.SOPInstanceUID == image and ds.PatientID == "PET007"
    png = rpc.ok("task.preview", {"instance_uid": image})
    assert png["content"][:8] == b"\x89PNG\r\n\x1a\n"
    # a PNG upload as bin
    up = rpc.ok("task.upload_png", {"instance_uid": images_of(study)[1]["sop_instance_id"],
                                    "data": png_bytes()})
    assert up["@type"] == "type.googleapis.com/dr.task.DcmPath"
    err, _ = rpc.call("task.upload_png", {"instance_uid": images_of(study)[2]["sop_instance_id"],
                                          "data": b"GIF89a"})
    assert err["code"] == "0x030006"


def test_client_notification_gets_no_reply_and_wrong_frames_get_errors(apis, rpc):
    login(rpc, "tech")
    rpc.send([2, "task.global_status", []])
    rpc.send(["x"])
    rpc.send([0, -1, "task.global_status", []])
    rpc.send([0, 77, "task.global_status", "not-a-list"])
    rpc.send({"a": 1})
    assert rpc.wait_response(77)[2]["code"] == "0x030001"
    errors = [rpc.wait_notification(lambda m: m[0] == 2 and m[1] == "error") for _ in range(3)]
    assert all(e[2][0]["code"] == "0x030001" for e in errors)
    assert rpc.ok("task.global_status")["@type"].endswith("TaskGlobalStatus")


@pytest.mark.parametrize("garbage", [b"\xc1", b"\x92\x00\xc1", b"\xff" * 5 + b"\xc1"])
def test_garbage_bytes_close_the_connection_with_an_error(console, garbage):
    client = RpcClient(console.rpc_port)
    client.send_raw(garbage)
    messages = []
    with pytest.raises(ConnectionError):
        while True:
            messages.append(client.read_message())
    client.close()
    assert messages and all(m[0] == 2 and m[1] == "error" and m[2][0]["code"] == "0x030001"
                            for m in messages)
    assert "not MessagePack" in messages[-1][2][0]["description"]
    healthy = RpcClient(console.rpc_port)
    assert healthy.ok("rpc.methods")["methods"]
    healthy.close()


def test_oversized_message_is_refused(console):
    client = RpcClient(console.rpc_port)
    payload = msgpack.packb([0, 1, "task.upload_png",
                             [{"instance_uid": "1.2.3", "data": b"\0" * (MAX_MESSAGE + 10)}]])
    try:
        client.send_raw(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    msg = client.read_message()
    assert msg[0] == 2 and msg[1] == "error" and msg[2][0]["code"] == "0x030005"
    client.close()


def test_slow_client_is_disconnected_without_stalling_others(console):
    slow = socket.create_connection(("127.0.0.1", console.rpc_port))
    slow.setblocking(False)
    request = msgpack.packb([0, 1, "rpc.methods", []])
    sent, t0 = 0, time.time()
    while time.time() - t0 < 3:
        try:
            slow.send(request * 64)
            sent += 64
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    # meanwhile another client is served promptly
    other = RpcClient(console.rpc_port, timeout=5)
    t1 = time.time()
    assert other.ok("rpc.methods")["methods"]
    assert time.time() - t1 < 2.0
    other.close()
    # the server gave up on the slow one: reading drains what was sent, then EOF
    slow.setblocking(True)
    slow.settimeout(10)
    got = 0
    try:
        while chunk := slow.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    slow.close()
    assert sent > 1000
    assert got < sent * 1000  # it did not answer everything it was sent


def test_error_objects_carry_the_errors_data(apis, rpc):
    login(rpc, "tech")
    err, _ = rpc.call("study.register", study_request(weight="heavy"))
    assert err["code"] == "0x030003" and err["data"]["field"] == "weight"
    err, _ = rpc.call("study.register", {"patient_id": "P1"})
    assert err["code"] == "0x030002" and isinstance(err["data"]["field"], str)
    err, _ = rpc.call("study.delete", {"study_ids": ["20250101000000001"]})
    assert err["data"] == {"permission": "study.delete", "role": "tech"}


def test_framing_errors_speak_of_messagepack(console, rpc):
    rpc.send(["x"])
    note = rpc.wait_notification(lambda m: m[0] == 2 and m[1] == "error")[2][0]
    assert note["code"] == "0x030001"
    assert "MessagePack" in note["solution"] and "JSON" not in note["solution"]
    rpc.send([0, 5, "task.global_status", "not-a-list"])
    err = rpc.wait_response(5)[2]
    assert "MessagePack" in err["solution"] and "JSON" not in err["solution"]
    client = RpcClient(console.rpc_port)
    client.send_raw(b"\xc1")
    with pytest.raises(ConnectionError):
        while True:
            msg = client.read_message()
            assert "JSON" not in msg[2][0]["solution"]
    client.close()


def test_register_over_rpc_records_the_source_and_user(apis, rpc):
    login(rpc, "tech")
    req = study_request()
    del req["operator_id"]
    st = rpc.ok("study.register", req, {"source": "Electron"})
    assert (st["reg_source"], st["operator_name"]) == ("Electron", "tech1")
    st = rpc.ok("study.register", study_request())
    assert st["reg_source"] == "RPC"


def test_event_subscription_needs_the_task_read_permission(apis, rpc, monkeypatch):
    from dios.auth.roles import PERMISSIONS, ROLES

    monkeypatch.setitem(PERMISSIONS, "task.read", frozenset(ROLES))  # guest loses task.read
    rpc.ok("session.authenticate", {"token": apis["guest"].token})
    err, _ = rpc.call("events.subscribe", {"pattern": "task"})
    assert err["code"] == "0x020005"
    login(rpc, "tech")
    assert rpc.ok("events.subscribe", {"pattern": "task"})["subscription"] >= 1
