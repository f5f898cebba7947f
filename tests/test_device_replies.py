"""Device results on every channel, over the wire against a real console on loopback.

The clients here are written from the public descriptions only: an HTTP client (httpx)
with a WebSocket for the event stream, and a MessagePack-RPC client on a raw socket that
frames ``[0, msgid, method, params]`` / ``[1, msgid, error, result]`` /
``[2, method, params]`` by hand with the ``msgpack`` package. Nothing from ``dios`` is
used to talk to the server (only to start it and provision its users).

Every wait has a deadline and a condition; none sleeps for a fixed time.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgpack
import pytest
from websockets.sync.client import connect

from tests.console_helpers import PASSWORD, setup_users, start_console

GEN = "DIOS/DEVICE/Generator"
DEVICE_REPLY = "type.googleapis.com/dr.task.DeviceReply"
EMPTY = "type.googleapis.com/google.protobuf.Empty"
SUCCESS = "0x000000"
OUT_OF_RANGE = "0x010005"
FORBIDDEN = "0x020005"
INVALID_FIELD = "0x030003"
REPLY_FIELDS = {"@type", "deviceUri", "reqName", "reqTransaction", "reqClientID", "code",
                "description", "solution", "result", "data"}
WAIT = 60.0  # generous: the suite must hold on two fully loaded cores


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = start_console(tmp_path_factory.mktemp("replies"), clock_scale=200.0,
                      panel="FLUORO_1024")
    setup_users(c)  # tech1, service1 ... with PASSWORD
    yield c
    c.stop()


def tx() -> str:
    return f"tx-{uuid.uuid4().hex[:12]}"


# --- an HTTP client from the OpenAPI document's description ---------------------------------
class Http:
    def __init__(self, port: int, username: str, language: str = "en") -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=WAIT)
        self.headers = {"Language": language, "Source": "Browser"}
        r = self.client.post("/auth/login", headers=self.headers,
                             json={"username": username, "password": PASSWORD})
        assert r.status_code == 200 and r.json()["code"] == SUCCESS, r.text
        self.token = r.json()["data"]["token"]
        self.headers["Authorization"] = f"Bearer {self.token}"
        self.port = port

    def command(self, name: str, param: str = "", *, transaction: str = "",
                client: str = "http-test", flag: str | None = "true",
                uri: str = GEN) -> httpx.Response:
        params = {"reply": flag} if flag is not None else None
        return self.client.post("/task/device/command", headers=self.headers, params=params,
                                json={"deviceUri": uri, "reqName": name, "reqParam": param,
                                      "reqTransaction": transaction, "reqClientID": client})

    def reply(self, name: str, param: str = "", **kw: Any) -> dict[str, Any]:
        """A successful command's DeviceReply (the envelope's data with ?reply=true)."""
        r = self.command(name, param, **kw)
        body = r.json()
        assert r.status_code == 200 and body["code"] == SUCCESS, (name, param, r.text[:400])
        return body["data"]

    def close(self) -> None:
        self.client.close()


class EventStream:
    """The WebSocket event stream (authenticated by the token in the URL): subscribe,
    read events."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    def subscribe(self, **filters: Any) -> int:
        self.ws.send(json.dumps({"type": "subscribe", **filters}))
        msg = self.next(lambda m: m["type"] in ("subscribed", "error"))
        assert msg["type"] == "subscribed", msg
        return msg["subscription"]

    def next(self, pred: Callable[[dict], bool], timeout: float = WAIT,
             seen: list | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching message within {timeout} s; saw {seen}"
            msg = json.loads(self.ws.recv(timeout=left))
            if seen is not None:
                seen.append(msg)
            if pred(msg):
                return msg


@contextmanager
def event_stream(port: int, token: str) -> Iterator[EventStream]:
    with connect(f"ws://127.0.0.1:{port}/api/v1/events?token={token}",
                 open_timeout=WAIT) as ws:
        yield EventStream(ws)


# --- a MessagePack-RPC client from the public specification -------------------------------------
class Rpc:
    """``[0, msgid, method, params]`` out; ``[1, msgid, error, result]`` and
    ``[2, method, params]`` in. Notifications that arrive while waiting are kept."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.ids = itertools.count(1)
        self.notes: list[list] = []

    def _read(self, deadline: float) -> list:
        while True:
            for msg in self.unpacker:
                return msg
            left = deadline - time.monotonic()
            assert left > 0, "nothing from the server in time"
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.unpacker.feed(chunk)

    def call(self, method: str, *params: Any) -> tuple[Any, Any]:
        msgid = next(self.ids)
        self.sock.sendall(msgpack.packb([0, msgid, method, list(params)], use_bin_type=True))
        deadline = time.monotonic() + WAIT
        while True:
            msg = self._read(deadline)
            if msg[0] == 2:
                self.notes.append(msg)
                continue
            assert msg[0] == 1 and len(msg) == 4, msg
            if msg[1] == msgid:
                return msg[2], msg[3]

    def ok(self, method: str, *params: Any) -> Any:
        err, result = self.call(method, *params)
        assert err is None, (method, err)
        return result

    def event(self, pred: Callable[[dict], bool], timeout: float = WAIT) -> dict[str, Any]:
        """The first ``event`` notification whose message satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, note in enumerate(self.notes):
                if note[1] == "event" and pred(note[2][0]):
                    del self.notes[i]
                    return note[2][0]
            msg = self._read(deadline)
            assert msg[0] == 2, msg  # no call is outstanding: only notifications come
            self.notes.append(msg)

    def command(self, name: str, param: str = "", transaction: str = "",
                client: str = "rpc-test", uri: str = GEN) -> tuple[Any, Any]:
        return self.call("task.device_command", {
            "deviceUri": uri, "reqName": name, "reqParam": param,
            "reqTransaction": transaction, "reqClientID": client})

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def tech(console):
    h = Http(console.http_port, "tech1")
    yield h
    h.close()


@pytest.fixture()
def rpc_tech(console):
    r = Rpc(console.rpc_port)
    login = r.ok("auth.login", {"username": "tech1", "password": PASSWORD})
    assert login["token"]
    yield r
    r.close()


def assert_device_reply(rep: dict, name: str, transaction: str, client: str,
                        code: str = SUCCESS) -> None:
    assert set(rep) == REPLY_FIELDS, rep
    assert rep["@type"] == DEVICE_REPLY
    assert (rep["deviceUri"], rep["reqName"], rep["reqTransaction"], rep["reqClientID"],
            rep["code"]) == (GEN, name, transaction, client, code)


# === HTTP ====================================================================================
def test_http_default_keeps_the_seed_shape_and_the_flag_is_checked(tech):
    r = tech.command("GetParam_KV", flag=None)
    assert r.status_code == 200
    assert r.json() == {"code": SUCCESS, "description": "Success", "solution": "",
                        "data": {"@type": EMPTY, "value": {}}}
    for off in ("false", "0"):
        assert tech.command("GetParam_KV", flag=off).json()["data"] == {"@type": EMPTY,
                                                                        "value": {}}
    for on in ("true", "1", "TRUE"):
        assert tech.command("GetParam_KV", flag=on).json()["data"]["@type"] == DEVICE_REPLY
    r = tech.command("GetParam_KV", flag="perhaps")
    assert r.status_code == 400 and r.json()["code"] == INVALID_FIELD


def test_http_get_param_kv_is_the_devices_value(tech):
    t = tx()
    kv = tech.reply("GetParam_KV", transaction=t)
    assert_device_reply(kv, "GetParam_KV", t, "http-test")
    status = tech.reply("GetStatus")
    assert float(kv["result"]) == status["data"]["technique"]["kV"]
    assert kv["data"]["technique"]["kV"] == float(kv["result"])
    # a set moves it, and the get follows
    target = "81" if kv["result"] != "81" else "82"
    assert tech.reply("SetParam_KV", target)["result"] == target
    assert tech.reply("GetParam_KV")["result"] == target
    assert tech.reply("GetStatus")["data"]["technique"]["kV"] == float(target)


def test_http_set_ma_130_gives_125_in_the_reply_and_the_reply_event(console, tech):
    me = f"console-{uuid.uuid4().hex[:6]}"
    guest_token = httpx.get(f"http://127.0.0.1:{console.http_port}/api/v1/resource/software-info",
                            timeout=WAIT).json()["data"]["guest"]
    with event_stream(console.http_port, tech.token) as ws, \
            event_stream(console.http_port, guest_token) as guest:  # task.read: for it too
        ws.subscribe(pattern="DIOS/DEVICE/Generator", kinds=["reply"], reqClientID=me)
        guest.subscribe(pattern="device", kinds=["reply"])
        other = tx()
        tech.reply("GetParam_MA", transaction=other, client="someone-else")
        tech.reply("SetParam_MA", "200", client=me)  # from elsewhere on the table
        t = tx()
        rep = tech.reply("SetParam_MA", "130", transaction=t, client=me)
        assert_device_reply(rep, "SetParam_MA", t, me)
        assert rep["result"] == "125"
        assert rep["data"]["requested"] == "130" and rep["data"]["technique"]["mA"] == 125.0
        assert "MA" in rep["data"]["changed"]
        assert tech.reply("GetParam_MA")["result"] == "125"
        # the reply event: only this client's (the filter), with the request's ids
        seen: list = []
        ev = ws.next(lambda m: m["type"] == "event" and m["reqTransaction"] == t, seen=seen)
        assert all(m["reqClientID"] == me for m in seen if m["type"] == "event"), seen
        assert (ev["uri"], ev["kind"], ev["name"], ev["value"]) == (
            GEN, "reply", "SetParam_MA", SUCCESS)
        assert ev["reqClientID"] == me
        assert ev["data"] == {k: v for k, v in rep.items() if k != "@type"}
        # the guest's stream (no client filter) has it too, after the other client's reply
        guest_seen: list = []
        got = guest.next(lambda m: m.get("reqTransaction") == t, seen=guest_seen)
        assert got["data"]["result"] == "125"
        assert [m["name"] for m in guest_seen if m.get("reqTransaction") == other] == [
            "GetParam_MA"]


def test_http_limits_and_commands(console, tech):
    lim = tech.reply("GetLimits", transaction="lim")
    assert_device_reply(lim, "GetLimits", "lim", "http-test")
    limits, tables = lim["data"]["limits"], lim["data"]["tables"]
    assert limits["kv_min"] < limits["kv_max"] and limits["ma_min"] < limits["ma_max"]
    assert limits["max_power_kw"] > 0
    assert set(tables) >= {"KV", "MA", "MS", "MAS"}
    assert 125.0 in tables["MA"] and 130.0 not in tables["MA"]
    assert tables["KV"][0] == limits["kv_min"] and tables["KV"][-1] == limits["kv_max"]
    assert "kV" in lim["result"]
    # GetCommands is a raw device command: the service role's
    r = tech.command("GetCommands")
    assert r.status_code == 403 and r.json()["code"] == FORBIDDEN
    assert "@type" not in r.json()["data"]  # refused by the shim: no device reply
    service = Http(console.http_port, "service1")
    try:
        cmds = service.reply("GetCommands", transaction="cmds", client="svc")
    finally:
        service.close()
    assert_device_reply(cmds, "GetCommands", "cmds", "svc")
    table = cmds["data"]["commands"]
    assert {"GetParam_KV", "SetParam_MA", "GetLimits", "GetCommands", "Expose"} <= set(table)
    assert table["SetParam_KV"] == "float"
    assert cmds["result"].split(",") == sorted(table)


def test_http_out_of_range_returns_its_code_and_changes_nothing(console, tech):
    before = tech.reply("GetParam_KV")["result"]
    with event_stream(console.http_port, tech.token) as ws:
        ws.subscribe(pattern="device", kinds=["reply"])
        t = tx()
        r = tech.command("SetParam_KV", "200", transaction=t)
        assert r.status_code == 409
        body = r.json()
        assert body["code"] == OUT_OF_RANGE
        assert body["description"].startswith("Parameter out of range")
        rep = body["data"]
        assert_device_reply(rep, "SetParam_KV", t, "http-test", OUT_OF_RANGE)
        assert rep["result"] == "" and rep["data"] == {"min": 40.0, "max": 150.0}
        assert rep["description"] == "Parameter out of range: KV 200 outside 40..150"
        ev = ws.next(lambda m: m.get("reqTransaction") == t)
        assert (ev["kind"], ev["value"]) == ("reply", OUT_OF_RANGE)
        assert ev["data"]["data"] == {"min": 40.0, "max": 150.0}
        assert ev["data"]["description"] == rep["description"]
    # without the flag: the same code, the detail fields as for every error
    r = tech.command("SetParam_KV", "200", flag=None)
    assert r.status_code == 409
    assert r.json()["code"] == OUT_OF_RANGE and r.json()["data"] == {"min": 40.0, "max": 150.0}
    assert tech.reply("GetParam_KV")["result"] == before


def test_http_reply_texts_follow_the_language(console):
    zh = Http(console.http_port, "tech1", language="zh")
    try:
        ok = zh.reply("GetParam_KV")
        assert ok["description"] == "成功"
        r = zh.command("SetParam_KV", "200")
        rep = r.json()["data"]
        assert rep["code"] == OUT_OF_RANGE and rep["description"].endswith("KV 200 outside 40..150")
        assert rep["description"] == r.json()["description"].replace(
            "SetParam_KV on DIOS/DEVICE/Generator: ", "")
        assert not rep["description"].startswith("Parameter")
    finally:
        zh.close()


def test_openapi_documents_the_reply(console):
    doc = httpx.get(f"http://127.0.0.1:{console.http_port}/api/v1/openapi.json",
                    timeout=WAIT).json()
    schema = doc["components"]["schemas"]["dr.task.DeviceReply"]
    assert set(schema["properties"]) == REPLY_FIELDS
    assert schema["example"]["reqName"] == "SetParam_MA" and schema["example"]["result"] == "125"
    op = doc["paths"]["/api/v1/task/device/command"]["post"]
    flag = [p for p in op["parameters"] if p["in"] == "query"]
    assert [p["name"] for p in flag] == ["reply"] and flag[0]["schema"]["type"] == "boolean"
    ok = op["responses"]["200"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/dr.task.DeviceReply"} in (
        ok["schema"]["properties"]["data"]["oneOf"])
    assert ok["examples"]["reply"]["value"]["data"]["result"] == "125"
    assert ok["examples"]["seed"]["value"]["data"] == {"@type": EMPTY, "value": {}}
    err = op["responses"]["default"]["content"]["application/json"]["examples"]["reply"]
    assert err["value"]["data"]["data"] == {"min": 40.0, "max": 150.0}
    events = doc["paths"]["/api/v1/events"]["get"]
    assert "reply" in events["description"]
    assert doc["components"]["schemas"]["dios.Event"]["example"]["kind"] == "reply"


# === MessagePack-RPC =========================================================================
def test_rpc_get_param_kv_is_the_devices_value(rpc_tech):
    t = tx()
    err, kv = rpc_tech.command("GetParam_KV", transaction=t)
    assert err is None
    assert_device_reply(kv, "GetParam_KV", t, "rpc-test")
    status = rpc_tech.command("GetStatus")[1]
    assert float(kv["result"]) == status["data"]["technique"]["kV"]


def test_rpc_set_ma_130_gives_125_in_the_result_and_the_notification(rpc_tech):
    sub = rpc_tech.ok("events.subscribe", {"pattern": "DIOS/DEVICE/Generator",
                                           "kinds": ["reply"]})
    assert rpc_tech.ok("task.device_command", {"deviceUri": GEN, "reqName": "SetParam_MA",
                                               "reqParam": "200"})["result"] == "200"
    t = tx()
    err, rep = rpc_tech.command("SetParam_MA", "130", transaction=t, client="rpc-console")
    assert err is None
    assert_device_reply(rep, "SetParam_MA", t, "rpc-console")
    assert rep["result"] == "125" and rep["data"]["technique"]["mA"] == 125.0
    ev = rpc_tech.event(lambda e: e["reqTransaction"] == t)
    assert ev["subscription"] == sub["subscription"]
    assert (ev["uri"], ev["kind"], ev["name"], ev["value"], ev["reqClientID"]) == (
        GEN, "reply", "SetParam_MA", SUCCESS, "rpc-console")
    assert ev["data"]["result"] == "125" and ev["data"]["reqTransaction"] == t
    assert rpc_tech.command("GetParam_MA")[1]["result"] == "125"


def test_rpc_limits_and_commands(console, rpc_tech):
    err, lim = rpc_tech.command("GetLimits", transaction="lim")
    assert err is None and lim["@type"] == DEVICE_REPLY
    assert lim["data"]["limits"]["kv_max"] == lim["data"]["tables"]["KV"][-1]
    assert 125.0 in lim["data"]["tables"]["MA"]
    err, _ = rpc_tech.command("GetCommands")
    assert err["code"] == FORBIDDEN
    service = Rpc(console.rpc_port)
    try:
        service.ok("auth.login", {"username": "service1", "password": PASSWORD})
        err, cmds = service.command("GetCommands", transaction="cmds", client="svc")
    finally:
        service.close()
    assert err is None
    assert_device_reply(cmds, "GetCommands", "cmds", "svc")
    assert {"SetParam_MA", "GetLimits"} <= set(cmds["data"]["commands"])


def test_rpc_out_of_range_is_an_error_with_the_reply_data(rpc_tech):
    before = rpc_tech.command("GetParam_KV")[1]["result"]
    rpc_tech.ok("events.subscribe", {"pattern": "device", "kinds": ["reply"],
                                     "reqClientID": "rpc-test"})
    t = tx()
    err, result = rpc_tech.command("SetParam_KV", "200", transaction=t)
    assert result is None
    assert err["code"] == OUT_OF_RANGE and err["data"] == {"min": 40.0, "max": 150.0}
    assert err["description"].startswith("Parameter out of range")
    ev = rpc_tech.event(lambda e: e["reqTransaction"] == t)
    assert (ev["kind"], ev["value"], ev["data"]["data"]) == (
        "reply", OUT_OF_RANGE, {"min": 40.0, "max": 150.0})
    assert rpc_tech.command("GetParam_KV")[1]["result"] == before


def test_rpc_methods_describe_the_device_command(rpc_tech):
    plain = rpc_tech.ok("rpc.methods")
    assert "task.device_command" in plain["methods"] and "descriptions" not in plain
    full = rpc_tech.ok("rpc.methods", {"describe": True})
    desc = full["descriptions"]["task.device_command"]
    assert desc["result"] == DEVICE_REPLY and desc["permission"] == "device.action"
    assert [p["name"] for p in desc["params"]] == [
        "deviceUri", "reqName", "reqParam", "reqTransaction", "reqClientID"]
    assert set(full["schemas"]["dr.task.DeviceReply"]["properties"]) == REPLY_FIELDS
    err, _ = rpc_tech.call("events.subscribe", {"pattern": "device", "reqClientID": 5})
    assert err["code"] == INVALID_FIELD
