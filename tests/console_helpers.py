"""A real console for the shim tests: engine on the simulators, services, uvicorn and the
MessagePack-RPC listener on free loopback ports, plus small HTTP and RPC clients; and
:func:`wait_until`, the suite's one way to wait for something to happen.

The suite must hold on a busy machine (a CPU hog on every core): tests wait on
conditions with generous deadlines, never on fixed sleeps. The console itself is
imported only by :func:`start_console`, so device tests can use the helpers cheaply."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import msgpack

if TYPE_CHECKING:
    from dios.serve import Console

T = TypeVar("T")

ADMIN_INITIAL = "Initial-Pass1"
PASSWORD = "Str0ng-Passw0rd"
FAST_SCRYPT = (2**10, 8, 1)
PREFIX = "/api/v1"


def wait_until(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str],
               interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    After ``timeout`` seconds it fails (``AssertionError``) naming ``what`` was waited
    for; ``what`` may be a callable, called then, to describe the state at that moment.
    Give deadlines that hold on a loaded machine (tens of seconds for what takes
    seconds): a generous deadline costs nothing when the condition comes true early.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)


def start_console(data_dir: Path, *, clock_scale: float = 200.0,
                  panel: str = "FLUORO_1024", calibrate: bool = True,
                  rpc_options: dict[str, Any] | None = None,
                  database_url: str = "") -> Console:
    """Start a console on free ports with a fast simulated clock and a small panel
    (its database: SQLite in ``data_dir`` unless ``database_url`` names another)."""
    from dios.config import ListenerConfig, load_config
    from dios.serve import Console

    cfg = load_config(None, data_dir=data_dir)
    cfg.database_url = database_url
    cfg.http = ListenerConfig("127.0.0.1", 0)
    cfg.rpc = ListenerConfig("127.0.0.1", 0)
    cfg.devices.clock_scale = clock_scale
    cfg.devices.panel = panel
    console = Console(cfg, calibrate=calibrate, calibration_frames=2, rpc_options=rpc_options,
                      auth_options={"initial_admin_password": ADMIN_INITIAL,
                                    "scrypt_params": FAST_SCRYPT})
    return console.start()


class Api:
    """An HTTP client speaking the console API (headers, bearer token)."""

    def __init__(self, console: Console, token: str = "", language: str = "en",
                 product: str = "", source: str = "Browser", timeout: float = 60.0) -> None:
        self.base = f"http://127.0.0.1:{console.http_port}"
        self.token = token
        self.language = language
        self.product = product
        self.source = source
        self.client = httpx.Client(base_url=self.base, timeout=timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Language": self.language, "Source": self.source}
        if self.product:
            h["Product"] = self.product
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(extra or {})
        return h

    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                params: dict | None = None, headers: dict[str, str] | None = None,
                files: Any = None, data: Any = None) -> httpx.Response:
        kw: dict[str, Any] = {"params": params, "headers": self.headers(headers)}
        if json is not None:
            kw["json"] = json
        if content is not None:
            kw["content"] = content
        if files is not None:
            kw["files"] = files
        if data is not None:
            kw["data"] = data
        return self.client.request(method, PREFIX + path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        """Call and insist on success; return the envelope's data."""
        r = self.request(method, path, **kw)
        assert r.status_code == 200, (r.status_code, r.text[:500])
        body = r.json()
        assert body["code"] == "0x000000", body
        return body["data"]

    def close(self) -> None:
        self.client.close()


def login(console: Console, username: str, password: str, **kw: Any) -> Api:
    api = Api(console, **kw)
    data = api.ok("POST", "/auth/login", json={"username": username, "password": password})
    api.token = data["token"]
    return api


def setup_users(console: Console) -> dict[str, Api]:
    """Change the admin's initial password and create one user per role; return a logged-in
    client per role (``admin``, ``service``, ``mgr``, ``tech``) and a ``guest`` client."""
    first = login(console, "admin", ADMIN_INITIAL)
    first.ok("POST", "/auth/password", json={"old_password": ADMIN_INITIAL,
                                             "new_password": PASSWORD,
                                             "confirm_new_password": PASSWORD})
    first.close()
    admin = login(console, "admin", PASSWORD)
    apis = {"admin": admin}
    for role in ("service", "mgr", "tech"):
        admin.ok("POST", "/auth/users", json={"username": f"{role}1", "password": "Temp-Pass-123",
                                              "role": role})
        u = login(console, f"{role}1", "Temp-Pass-123")
        u.ok("POST", "/auth/password", json={"old_password": "Temp-Pass-123",
                                             "new_password": PASSWORD,
                                             "confirm_new_password": PASSWORD})
        u.close()
        apis[role] = login(console, f"{role}1", PASSWORD)
    info = Api(console).ok("GET", "/resource/software-info")
    apis["guest"] = Api(console, token=info["guest"])
    return apis


def study_request(**over: Any) -> dict[str, Any]:
    """A register request like the seed's example (human skull, three views)."""
    req = {
        "accession_number": "ACC0012345", "patient_id": "PET007", "patient_name": "Buddy",
        "patient_english_name": "Buddy en", "patient_former_name": "Buddy f",
        "patient_size": "Large", "patient_age": "5Y",
        "patient_dob": "2025-06-10T03:12:36.181739Z", "patient_sex": "M",
        "owner_name": "owner1", "chip_number": "CHIP123456789", "variety": "Golden Retriever",
        "is_anaesthesia": True, "is_sedation": True, "patient_type": "Human",
        "ref_physician": "Dr. Smith (Vet)", "operator_id": "OP987", "modality": "DX",
        "weight": 25, "thickness": 15, "length": 60, "study_type": "Normal",
        "comment": "Patient presented with limping in right hind leg. Sedation administered.",
        "views": [{"view_id": "View_DX_T_A_SK_AP_00", "procedure_id": "P0-0002"},
                  {"view_id": "View_DX_T_A_SK_LAT_00", "procedure_id": "P0-0002"},
                  {"view_id": "View_DX_T_A_SK_Special_04", "procedure_id": ""}],
    }
    req.update(over)
    return req


def images_of(study: dict[str, Any]) -> list[dict[str, Any]]:
    return [im for se in study["series"] for im in se["images"]]


class RpcClient:
    """A raw MessagePack-RPC client over a TCP socket (msgpack.Packer / Unpacker)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.packer = msgpack.Packer(use_bin_type=True)
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=256 << 20)
        self.ids = itertools.count(1)
        self.notifications: list[Any] = []
        self.responses: dict[int, Any] = {}

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, obj: Any) -> None:
        self.sock.sendall(self.packer.pack(obj))

    def read_message(self) -> Any:
        """The next message from the server (raises on EOF)."""
        while True:
            for msg in self.unpacker:
                return msg
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.unpacker.feed(chunk)

    def wait_response(self, msgid: int) -> Any:
        while msgid not in self.responses:
            msg = self.read_message()
            if msg[0] == 1:
                self.responses[msg[1]] = msg
            else:
                self.notifications.append(msg)
        return self.responses.pop(msgid)

    def call(self, method: str, *params: Any) -> tuple[Any, Any]:
        """(error, result) of one call."""
        msgid = next(self.ids)
        self.send([0, msgid, method, list(params)])
        msg = self.wait_response(msgid)
        assert len(msg) == 4
        return msg[2], msg[3]

    def ok(self, method: str, *params: Any) -> Any:
        err, result = self.call(method, *params)
        assert err is None, err
        return result

    def wait_notification(self, predicate: Any, limit: int = 10_000) -> Any:
        for i, n in enumerate(list(self.notifications)):
            if predicate(n):
                return self.notifications.pop(i)
        for _ in range(limit):
            msg = self.read_message()
            if msg[0] == 1:
                self.responses[msg[1]] = msg
                continue
            if predicate(msg):
                return msg
            self.notifications.append(msg)
        raise AssertionError("notification not received")

    def close(self) -> None:
        self.sock.close()
