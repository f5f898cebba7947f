"""The HTTP listener under abuse, through real uvicorn servers on loopback.

Slow request heads (slowloris) and slow bodies are closed by their timeouts, idle
keep-alive connections by the idle timeout, connections beyond the cap are refused while
the API keeps answering, and the file descriptors and threads they took come back (the
console runs in this process, so ``/proc/self`` counts both ends). CORS preflights are
answered for allowed origins only. Inputs that once reached a 500 (a 5,000-digit JSON
integer, unpaired surrogates, a user id beyond 64 bits, deep nesting, NaN) get a clear
4xx envelope whose description names no Python internals, and leave the state unchanged.

Every wait is a condition with a generous deadline: the machine may be loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dios.auth.roles import PERMISSIONS
from dios.shim.api import operations
from tests.console_helpers import (
    ADMIN_INITIAL,
    FAST_SCRYPT,
    Api,
    setup_users,
    study_request,
    wait_until,
)
from tests.test_shim_http import PATH_FILL as SHIM_PATH_FILL

OPS = operations()
CODES = {"MALFORMED": "0x030001", "INVALID": "0x030003", "NO_METHOD": "0x030007",
         "LIMIT": "0x030008", "TIMEOUT": "0x010008"}
ROLE_ORDER = ("service", "admin", "mgr", "tech", "guest")
#: values for every path parameter of the operations (one table for the HTTP tests)
PATH_FILL = SHIM_PATH_FILL
#: words that would show Python internals in a description meant for an operator
PYTHON_WORDS = re.compile(r"\b(dict|str|int|float|bytes|tuple|NoneType|Traceback|"
                          r"[A-Z][A-Za-z]*(Error|Exception))\b")
SHORT = 1.5  # the guarded console's header, body and idle timeouts (seconds)
ORIGIN = "https://ui.example:8443"
CAP = 24  # the capped console's max_connections


def start_guarded(data_dir: Path, **http: Any) -> Any:
    """A console (simulators, no calibration) whose HTTP listener has the given limits."""
    from dios.config import HttpConfig, RpcConfig, load_config
    from dios.serve import Console

    cfg = load_config(None, data_dir=data_dir)
    cfg.http = HttpConfig("127.0.0.1", 0, **http)
    cfg.http.validate()
    cfg.rpc = RpcConfig("127.0.0.1", 0)
    cfg.devices.clock_scale = 200.0
    cfg.devices.panel = "FLUORO_1024"
    console = Console(cfg, calibrate=False,
                      auth_options={"initial_admin_password": ADMIN_INITIAL,
                                    "scrypt_params": FAST_SCRYPT})
    return console.start()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory) -> Iterator[Any]:
    """Short timeouts, a large cap, one allowed CORS origin."""
    c = start_guarded(tmp_path_factory.mktemp("guarded"), max_connections=1024,
                      header_timeout=SHORT, body_timeout=SHORT, idle_timeout=SHORT,
                      cors_origins=[ORIGIN])
    yield c
    c.stop()


@pytest.fixture(scope="module")
def capped(tmp_path_factory) -> Iterator[Any]:
    """A small cap and long timeouts; only the cap test connects to it."""
    c = start_guarded(tmp_path_factory.mktemp("capped"), max_connections=CAP,
                      header_timeout=60.0, body_timeout=60.0, idle_timeout=120.0)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Iterator[Any]:
    """The default [http] settings (no CORS)."""
    c = start_guarded(tmp_path_factory.mktemp("plain"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def apis(plain) -> Iterator[dict[str, Api]]:
    apis = setup_users(plain)
    yield apis
    for a in apis.values():
        a.close()


def baseline(console: Any) -> tuple[int, int]:
    """Open fds and threads once the server has answered a request and settled."""
    with httpx.Client(base_url=f"http://127.0.0.1:{console.http_port}", timeout=60) as c:
        assert c.get("/api/v1/resource/software-info").status_code == 200
    wait_until(lambda: console.http_connections() == 0, 60, "the warm-up connection to close")
    return open_fds(), threads()


def settle(fd0: int, th0: int, margin: int = 8) -> None:
    wait_until(lambda: open_fds() <= fd0 + margin, 60,
               lambda: f"open fds back near {fd0} (now {open_fds()})")
    wait_until(lambda: threads() <= th0 + margin, 60,
               lambda: f"threads back near {th0} (now {threads()})")


def connect(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setblocking(False)
        socks.append(s)
    return socks


def drip_until_closed(socks: list[socket.socket], first: bytes, drip: bytes, every: float,
                      timeout: float) -> dict[socket.socket, bytes]:
    """Send ``first`` on every socket, then one byte of ``drip`` per socket every
    ``every`` seconds, until the server has closed them all; what each one received."""
    received = {s: b"" for s in socks}
    open_ = set(socks)

    def send(s: socket.socket, data: bytes) -> None:
        try:
            s.send(data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # reset or closed by the server
            open_.discard(s)

    for s in socks:
        send(s, first)
    deadline = time.monotonic() + timeout
    next_drip, i = time.monotonic() + every, 0
    while open_:
        now = time.monotonic()
        assert now < deadline, f"{len(open_)} of {len(socks)} connections still open after {timeout} s"
        if now >= next_drip:
            byte = drip[i % len(drip):i % len(drip) + 1]
            i += 1
            for s in list(open_):
                send(s, byte)
            next_drip = now + every
        ready, _, _ = select.select(list(open_), [], [], max(0.0, min(0.2, next_drip - now)))
        for s in ready:
            try:
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk:
                received[s] += chunk
            else:
                open_.discard(s)
    return received


def envelope_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def no_python_words(body: dict[str, Any]) -> None:
    for key in ("description", "solution"):
        assert not PYTHON_WORDS.search(body[key]), body


# --- slow and idle connections -----------------------------------------------------------------
def test_slowloris_heads_are_closed_by_the_header_timeout(guarded):
    fd0, th0 = baseline(guarded)
    before = guarded.http_stats.header_timeouts
    socks = connect(guarded.http_port, 200)
    try:
        wait_until(lambda: guarded.http_connections() >= 200, 60, "200 connections accepted")
        got = drip_until_closed(socks, b"GET /api/v1/resource/software-info HTTP/1.1\r\n"
                                       b"Host: x\r\nX-Slow: ", b"abcdefgh", every=0.25, timeout=120)
    finally:
        for s in socks:
            s.close()
    assert guarded.http_stats.header_timeouts - before >= 200
    answered = [envelope_of(raw) for raw in got.values() if raw.startswith(b"HTTP/1.1 408")]
    assert answered, "no connection read its 408 answer"
    for status, body in answered:
        assert status == 408 and body["code"] == CODES["TIMEOUT"], body
        no_python_words(body)
    settle(fd0, th0)
    wait_until(lambda: guarded.http_connections() == 0, 60, "no connection left open")


def test_a_silent_connection_is_closed_by_the_header_timeout(guarded):
    fd0, th0 = baseline(guarded)
    socks = connect(guarded.http_port, 50)
    try:
        got = drip_until_closed(socks, b"", b"", every=3600, timeout=120)
    finally:
        for s in socks:
            s.close()
    assert all(raw.startswith(b"HTTP/1.1 408") or raw == b"" for raw in got.values())
    settle(fd0, th0)


@pytest.mark.parametrize("drip_every", [0.25, 30.0], ids=["trickle-past-the-deadline", "stall"])
def test_slow_bodies_are_closed_by_the_body_timeout(guarded, drip_every, caplog):
    """100 bodies that trickle (a byte every 0.25 s: never a long pause, but the whole body
    is late) and 100 that stall: all closed, the application's reads end cleanly."""
    caplog.set_level(logging.ERROR, logger="dios")
    fd0, th0 = baseline(guarded)
    before = guarded.http_stats.body_timeouts
    socks = connect(guarded.http_port, 100)
    head = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{\"username\": \"")
    try:
        got = drip_until_closed(socks, head, b"a", every=drip_every, timeout=120)
    finally:
        for s in socks:
            s.close()
    assert guarded.http_stats.body_timeouts - before >= 100
    answered = [envelope_of(raw) for raw in got.values() if raw.startswith(b"HTTP/1.1 408")]
    assert answered, "no connection read its 408 answer"
    for _status, body in answered:
        assert body["code"] == CODES["TIMEOUT"] and "body" in body["description"], body
        no_python_words(body)
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    settle(fd0, th0)


def test_idle_keep_alive_connections_are_closed(guarded):
    fd0, th0 = baseline(guarded)
    socks = connect(guarded.http_port, 50)
    # a route served on the event loop: 50 concurrent service calls would grow the worker
    # pool (threads and their database handles) that this test does not measure
    request = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        got = drip_until_closed(socks, request, b"", every=3600, timeout=120)
    finally:
        for s in socks:
            s.close()
    for raw in got.values():  # the answer, then the server closed the idle connection
        assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
        assert b"408" not in raw.split(b"\r\n", 1)[0]
    settle(fd0, th0)


def test_a_request_that_arrives_in_time_is_served_despite_short_timeouts(guarded):
    """A head sent in pieces within the header timeout, a body in pieces within the body
    timeout, several requests on one kept-alive connection: all served."""
    with socket.create_connection(("127.0.0.1", guarded.http_port), timeout=60) as s:
        for _ in range(3):
            body = json.dumps({"username": "nobody", "password": "wrong-password"}).encode()
            s.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n")
            s.sendall(b"Content-Type: application/json\r\nContent-Length: "
                      + str(len(body)).encode() + b"\r\n\r\n")
            s.sendall(body[:10])
            s.sendall(body[10:])
            raw = b""
            while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < int(
                    re.search(rb"content-length: (\d+)", raw, re.I).group(1)):
                chunk = s.recv(65536)
                assert chunk, "closed before the answer"
                raw += chunk
            status, env = envelope_of(raw)
            assert status == 401 and env["code"] == "0x020002", env


# --- the connection cap -------------------------------------------------------------------------
def test_connections_beyond_the_cap_are_refused_while_the_api_answers(capped):
    from websockets.sync.client import connect as ws_connect

    base = f"http://127.0.0.1:{capped.http_port}"
    normal = httpx.Client(base_url=base, timeout=60)  # one kept-alive connection of the cap
    guest = normal.get("/api/v1/resource/software-info").json()["data"]["guest"]
    headers = {"Authorization": f"Bearer {guest}"}
    assert normal.get("/api/v1/task/status", headers=headers).status_code == 200
    wait_until(lambda: capped.http_connections() == 1, 60, "only the normal client connected")
    fd0, th0 = open_fds(), threads()
    refused0 = capped.http_stats.refused
    held: list[socket.socket] = []
    extra: list[socket.socket] = []
    url = f"ws://127.0.0.1:{capped.http_port}/api/v1/events?token={guest}"
    try:
        with ws_connect(url, open_timeout=60):  # an upgraded WebSocket counts as a connection
            wait_until(lambda: capped.http_connections() == 2, 60, "the WebSocket counted")
            held = connect(capped.http_port, CAP - 2)
            wait_until(lambda: capped.http_connections() == CAP, 60,
                       lambda: f"{CAP} open connections (now {capped.http_connections()})")
            extra = connect(capped.http_port, 30)
            got = drip_until_closed(extra, b"GET /api/v1/task/status HTTP/1.1\r\nHost: x\r\n\r\n",
                                    b"", every=3600, timeout=120)
            assert capped.http_stats.refused - refused0 == 30
            for raw in got.values():
                if raw:  # the refusal, then EOF (a reset may come first on a busy machine)
                    status, body = envelope_of(raw)
                    assert status == 429 and body["code"] == CODES["LIMIT"], body
                    no_python_words(body)
            assert any(got.values()), "no refused connection read its 429 answer"
            for _ in range(5):  # the API keeps answering on the connections it has
                assert normal.get("/api/v1/task/status", headers=headers).status_code == 200
            assert capped.http_connections() == CAP
    finally:
        for s in held + extra:
            s.close()
    wait_until(lambda: capped.http_connections() <= 1, 60, "the held connections to close")
    wait_until(lambda: capped.http_stats.lingering == 0, 60,
               lambda: f"no refused connection lingering (now {capped.http_stats.lingering})")
    normal.close()
    with httpx.Client(base_url=base, timeout=60) as c:  # room again for a new client
        assert c.get("/api/v1/resource/software-info").status_code == 200
    settle(fd0, th0)


# --- CORS ---------------------------------------------------------------------------------------
def preflight(console: Any, origin: str, method: str = "POST",
              headers: str = "authorization, content-type, language, product, source"
              ) -> httpx.Response:
    with httpx.Client(base_url=f"http://127.0.0.1:{console.http_port}", timeout=60) as c:
        return c.options("/api/v1/study", headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers})


def test_cors_preflight_from_an_allowed_origin(guarded):
    r = preflight(guarded, ORIGIN)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "language", "product", "source"} <= allowed
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    with httpx.Client(base_url=f"http://127.0.0.1:{guarded.http_port}", timeout=60) as c:
        r = c.get("/api/v1/resource/software-info", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        r = c.get("/api/v1/resource/software-info", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origin,method,headers,field", [
    ("https://evil.example", "POST", "content-type", "Origin"),
    ("https://ui.example", "POST", "content-type", "Origin"),  # another port is another origin
    (ORIGIN, "PATCH", "content-type", "Access-Control-Request-Method"),
    (ORIGIN, "POST", "x-custom", "Access-Control-Request-Headers"),
])
def test_cors_preflight_refused(guarded, origin, method, headers, field):
    r = preflight(guarded, origin, method, headers)
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    body = r.json()
    assert body["code"] == CODES["INVALID"] and body["data"]["field"] == field, body
    no_python_words(body)


def test_no_cors_by_default(plain):
    r = preflight(plain, ORIGIN)
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    assert r.json()["code"] == CODES["NO_METHOD"]
    with httpx.Client(base_url=f"http://127.0.0.1:{plain.http_port}", timeout=60) as c:
        r = c.get("/api/v1/resource/software-info", headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# --- bad input: 4xx envelopes, never 500 ------------------------------------------------------
def role_with(permission: str | None) -> str:
    if permission is None:
        return "guest"
    return next(r for r in ROLE_ORDER if r in PERMISSIONS[permission])


def path_of(op: Any) -> str:
    return re.sub(r"{(\w+):\w+}", r"{\1}", op.path).format(**PATH_FILL)


def assert_refused(r: httpx.Response, code: str, field: str | None = None) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text
    body = r.json()
    assert set(body) == {"code", "description", "solution", "data"}, body
    assert body["code"] == code, body
    if field is not None:
        assert body["data"].get("field") == field, body
    no_python_words(body)
    return body


def send(apis: dict[str, Api], op: Any, content: bytes) -> httpx.Response:
    api = apis[role_with(op.permission)]
    return api.request(op.method, path_of(op), content=content,
                       headers={"Content-Type": "application/json"})


BODY_OPS = [op for op in OPS if op.body in ("json", "json-array")
            and op.method in ("POST", "PUT", "DELETE")]
HUGE = "1" + "0" * 4999


@pytest.fixture
def no_internal_errors(caplog):
    caplog.set_level(logging.ERROR, logger="dios")
    yield
    assert not [r for r in caplog.records if "internal error" in r.getMessage()], \
        [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("op", BODY_OPS, ids=lambda op: op.name)
def test_a_5000_digit_integer_in_any_body(apis, op, no_internal_errors):
    array = op.body == "json-array"
    for content in ((f"[{HUGE}]" if array else f'{{"username": {HUGE}, "x": 1}}'),
                    (f"[-{HUGE}]" if array else f'{{"weight": -{HUGE}}}'),
                    ("[1e99999]" if array else '{"weight": 1e99999}')):
        assert_refused(send(apis, op, content.encode()), CODES["MALFORMED"])


def test_a_5000_digit_integer_at_login_unauthenticated(plain, no_internal_errors):
    api = Api(plain)
    try:
        r = api.post("/auth/login", content=f'{{"username": "admin", "password": {HUGE}}}'.encode(),
                     headers={"Content-Type": "application/json"})
        body = assert_refused(r, CODES["MALFORMED"])
        assert "64-bit" in body["description"] and len(body["description"]) < 300
    finally:
        api.close()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(apis, literal, no_internal_errors):
    r = apis["tech"].post("/study", content=f'{{"weight": {literal}}}'.encode(),
                          headers={"Content-Type": "application/json"})
    assert_refused(r, CODES["MALFORMED"])


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deep_nesting_is_refused(apis, depth, no_internal_errors):
    content = ('{"views": ' + "[" * depth + "]" * depth + "}").encode()
    r = apis["tech"].post("/study", content=content, headers={"Content-Type": "application/json"})
    body = assert_refused(r, CODES["MALFORMED"])
    assert "nested" in body["description"]


SURROGATE = '"\\ud800"'  # JSON text: a lone high surrogate


@pytest.mark.parametrize("role,method,path,content,field", [
    ("guest", "POST", "/auth/login", f'{{"username": {SURROGATE}, "password": "x"}}', "username"),
    ("guest", "POST", "/auth/login", f'{{"username": "admin", "password": {SURROGATE}}}',
     "password"),
    ("tech", "POST", "/study/images/retake", f'{{"instance_uid": {SURROGATE}}}', "instance_uid"),
    ("mgr", "POST", "/study/delete", f"[{SURROGATE}]", "study_ids[0]"),
    ("mgr", "POST", "/study/images/delete",
     f'{{"study_id": "1", "sop_instance_uids": ["a", {SURROGATE}]}}', "sop_instance_uids[1]"),
    ("tech", "POST", "/study", None, "patient_name"),
    ("tech", "POST", "/study", None, "views[0].view_id"),
    ("tech", "PUT", "/study/20250101000000001", '{"patient_name": "a\\udfffb"}', "patient_name"),
    ("tech", "POST", "/study", '{"patient_name": "nul\\u0000"}', "patient_name"),
])
def test_unpaired_surrogates_and_nul_are_refused_at_the_boundary(apis, role, method, path, content,
                                                                 field, no_internal_errors):
    if content is None:  # a complete register request with one bad field
        text = json.dumps(study_request())
        if field == "patient_name":
            text = text.replace('"Buddy"', SURROGATE, 1)
        else:
            text = text.replace('"View_DX_T_A_SK_AP_00"', SURROGATE, 1)
        content = text
    tech = apis["tech"]
    count = tech.ok("GET", "/study/stat")
    r = apis[role].request(method, path, content=content.encode(),
                           headers={"Content-Type": "application/json"})
    assert_refused(r, CODES["INVALID"], field)
    assert tech.ok("GET", "/study/stat") == count  # nothing registered, nothing deleted


def test_raw_utf8_encoded_surrogate_bytes_are_refused(apis, no_internal_errors):
    content = b'{"username": "\xed\xa0\x80", "password": "x"}'
    r = apis["guest"].post("/auth/login", content=content,
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] in (CODES["MALFORMED"], CODES["INVALID"])
    no_python_words(r.json())


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
@pytest.mark.parametrize("uid", ["100000000000000000000", "-9223372036854775809",
                                 "9223372036854775808", "0000000000000000000000000000001x"])
def test_user_ids_beyond_64_bits(apis, method, uid, no_internal_errors):
    admin = apis["admin"]
    users = admin.ok("GET", "/auth/users")
    r = admin.request(method, f"/auth/users/{uid}", json={"role": "tech"} if method == "PUT" else None)
    assert_refused(r, CODES["INVALID"], "uid")
    assert admin.ok("GET", "/auth/users") == users


def test_largest_64_bit_user_id_is_just_unknown(apis, no_internal_errors):
    r = apis["admin"].request("DELETE", "/auth/users/9223372036854775807")
    assert 400 <= r.status_code < 500 and r.json()["code"] != CODES["INVALID"], r.text
    no_python_words(r.json())


def test_wrong_types_are_named_in_json_words(apis, no_internal_errors):
    r = apis["tech"].post("/study/images/retake", json={"instance_uid": {"a": 1}})
    body = assert_refused(r, CODES["INVALID"], "instance_uid")
    assert "got object" in body["description"], body
    r = apis["tech"].post("/study/images/retake", json={"instance_uid": [1]})
    assert "got array" in assert_refused(r, CODES["INVALID"])["description"]
    r = apis["tech"].post("/study/images/judge", json={"instance_uid": "1.2", "accept": "yes"})
    assert "got string" in assert_refused(r, CODES["INVALID"])["description"]
    r = apis["tech"].post("/study", content=b"{not json", headers={"Content-Type": "application/json"})
    body = assert_refused(r, CODES["MALFORMED"])
    assert "line 1 column 2" in body["description"], body


@pytest.mark.parametrize("value,code,field", [
    ({"weight": 2**64 - 1}, "INVALID", "weight"),           # a MessagePack uint64
    ({"weight": -(2**63) - 1}, "INVALID", "weight"),
    ({"weight": float("nan")}, "INVALID", "weight"),
    ({"weight": float("-inf")}, "INVALID", "weight"),
    ({"views": [{"view_id": "\ud800"}]}, "INVALID", "views[0].view_id"),
    ({"views": ({"view_id": "a\x00"},)}, "INVALID", "views[0].view_id"),
    ({"\udc00": 1}, "INVALID", ""),
    ({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "MALFORMED", None),
])
def test_values_from_any_transport_are_checked_before_the_services(value, code, field):
    """The same walk serves JSON bodies and MessagePack-RPC parameters."""
    from dios.codes import DiosError
    from dios.shim.dispatch import check_values

    with pytest.raises(DiosError) as exc:
        check_values(value)
    assert exc.value.code.hex == CODES[code]
    if field is not None:
        assert exc.value.data.get("field") == field
    assert not PYTHON_WORDS.search(exc.value.description())


def test_ordinary_values_pass_the_check():
    from dios.shim.dispatch import check_values

    check_values({"weight": 2**63 - 1, "ratio": 1e308, "ok": True, "none": None, "data": b"\x00",
                  "views": [{"view_id": "View_DX_T_A_SK_AP_00", "name": "狗 Ω"}]})
