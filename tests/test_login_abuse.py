"""Login abuse: throttling per source address and per user, and the bound on password
hashing, at the service level and through the real HTTP and MessagePack-RPC servers.

The throttle runs on an injected monotonic clock here, so a lock lasts exactly until the
test moves the clock on: nothing depends on how fast the machine is. Hash work is
counted by wrapping the scrypt primitive, never inferred from timing.
"""

from __future__ import annotations

import gc
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import dios.auth.service as auth_service
from dios.auth import AuthService, HashLimiter, LoginThrottle
from dios.auth.service import SCRYPT_PARAMS
from dios.codes import BAD_CREDENTIALS, LIMIT_REACHED, TOO_MANY_ATTEMPTS, DiosError
from dios.store import open_database
from tests.console_helpers import ADMIN_INITIAL, FAST_SCRYPT, PASSWORD, Api, RpcClient, wait_until

TOO_MANY = TOO_MANY_ATTEMPTS.hex
LIMIT = LIMIT_REACHED.hex
BAD = BAD_CREDENTIALS.hex


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ScryptProbe:
    """Wraps the scrypt primitive: counts runs and the most that ran at once."""

    def __init__(self, real) -> None:
        self.real = real
        self.lock = threading.Lock()
        self.calls = 0
        self.active = 0
        self.max_active = 0

    def __call__(self, *args):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self.real(*args)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture
def probe(monkeypatch) -> ScryptProbe:
    p = ScryptProbe(auth_service._scrypt)
    monkeypatch.setattr(auth_service, "_scrypt", p)
    return p


def _code(fn, *a, **kw) -> DiosError:
    with pytest.raises(DiosError) as e:
        fn(*a, **kw)
    return e.value


# -- the service -------------------------------------------------------------------------------
@pytest.fixture
def service(tmp_path) -> Iterator[tuple[AuthService, FakeClock]]:
    db = open_database(f"sqlite:///{tmp_path / 'dios.db'}")
    clock = FakeClock()
    svc = AuthService(db, tmp_path, scrypt_params=FAST_SCRYPT,
                      initial_admin_password=ADMIN_INITIAL, throttle_clock=clock,
                      address_threshold=5, address_lock=10, address_lock_max=40,
                      user_threshold=12, user_lock=5, user_lock_max=30)
    first = svc.verify(svc.login("admin", ADMIN_INITIAL)["token"])
    svc.change_password(first, ADMIN_INITIAL, PASSWORD, PASSWORD)
    yield svc, clock
    db.close()


def test_address_lockout_refuses_without_hashing_grows_and_is_capped(service, probe):
    svc, clock = service
    for _ in range(5):
        assert _code(svc.login, "admin", "wrong-pass1", source="10.0.0.9").code is BAD_CREDENTIALS
    runs = probe.calls
    # locked: the right password, a wrong one and another user name are refused alike
    for user, pw in (("admin", PASSWORD), ("admin", "wrong-pass1"), ("nobody", "x1234567")):
        err = _code(svc.login, user, pw, source="10.0.0.9")
        assert err.code is TOO_MANY_ATTEMPTS
        assert err.data == {"retry_after": 10} and err.detail == "10 s"
    assert probe.calls == runs  # no hash for a refused attempt
    # each further failure after a lock doubles it, up to the cap
    for expected in (20, 40, 40):
        clock.advance(svc.throttle.locked("admin", "10.0.0.9"))
        assert _code(svc.login, "admin", "wrong-pass1", source="10.0.0.9").code is BAD_CREDENTIALS
        assert _code(svc.login, "admin", PASSWORD, source="10.0.0.9").data["retry_after"] == expected
    # another address is not held by this one (the user is under its threshold: 8 < 12)
    assert svc.login("admin", PASSWORD, source="10.0.0.10")["uid"] == 1
    # after the lock the right password works, and the address starts afresh
    clock.advance(40)
    assert svc.login("admin", PASSWORD, source="10.0.0.9")["uid"] == 1
    for _ in range(4):
        assert _code(svc.login, "admin", "wrong-pass1", source="10.0.0.9").code is BAD_CREDENTIALS
    assert svc.login("admin", PASSWORD, source="10.0.0.9")["uid"] == 1


def test_distributed_attack_holds_the_user_only_briefly(service, probe):
    svc, clock = service
    assert svc.login("admin", PASSWORD, source="192.168.1.5")  # the admin's usual desk
    # 200 wrong passwords from 50 addresses, 4 each: no address reaches its threshold
    refused = 0
    for i in range(200):
        try:
            svc.login("admin", f"guess-{i}", source=f"203.0.113.{i % 50}")
        except DiosError as err:
            refused += err.code is TOO_MANY_ATTEMPTS
            assert err.code in (BAD_CREDENTIALS, TOO_MANY_ATTEMPTS)
            if err.code is TOO_MANY_ATTEMPTS:
                assert 1 <= err.data["retry_after"] <= 30
    assert refused > 150 and probe.calls <= 200 - refused + 1
    # from a new address the admin waits at most the user cap, then gets in
    err = _code(svc.login, "admin", PASSWORD, source="198.51.100.7")
    assert err.code is TOO_MANY_ATTEMPTS and err.data["retry_after"] <= 30
    # from an address it logged in from before it is not held at all
    assert svc.login("admin", PASSWORD, source="192.168.1.5")["uid"] == 1
    # the success reset the user's counter: the new address gets in too
    assert svc.login("admin", PASSWORD, source="198.51.100.7")["uid"] == 1


def test_locked_address_delays_the_user_elsewhere_at_most_the_cap(service):
    svc, clock = service
    for i in range(200):
        try:
            svc.login("admin", f"guess-{i}", source="10.6.6.6")
        except DiosError as err:
            assert err.code in (BAD_CREDENTIALS, TOO_MANY_ATTEMPTS)
    assert svc.throttle.locked("admin", "10.6.6.6") >= 10
    wait = svc.throttle.locked("admin", "10.0.0.1")
    assert wait <= 30  # 5 failures only: the user is not even held
    clock.advance(wait)
    assert svc.login("admin", PASSWORD, source="10.0.0.1")["uid"] == 1
    # the locked address stays locked: a success elsewhere does not free it
    assert _code(svc.login, "admin", PASSWORD, source="10.6.6.6").code is TOO_MANY_ATTEMPTS


def test_user_threshold_reached_from_many_addresses_is_capped(service):
    svc, clock = service
    for i in range(12):
        assert _code(svc.login, "admin", "nope-1234", source=f"10.1.0.{i}").code is BAD_CREDENTIALS
    err = _code(svc.login, "admin", PASSWORD, source="10.2.0.1")
    assert err.code is TOO_MANY_ATTEMPTS and err.data["retry_after"] == 5
    # later failures re-arm the user's hold, never beyond the cap
    for _ in range(6):
        clock.advance(svc.throttle.locked("admin", "10.2.0.1"))
        _code(svc.login, "admin", "nope-1234", source="10.3.0.1")
        assert svc.throttle.locked("admin", "10.2.0.1") <= 30
    clock.advance(30)
    assert svc.login("admin", PASSWORD, source="10.2.0.1")["uid"] == 1


def test_unknown_users_and_no_source(service, probe):
    svc, _ = service
    # an unknown name is throttled like a known one (no hint that it does not exist)
    for _ in range(5):
        assert _code(svc.login, "ghost", "whatever1", source="10.9.9.9").code is BAD_CREDENTIALS
    assert _code(svc.login, "ghost", "whatever1", source="10.9.9.9").code is TOO_MANY_ATTEMPTS
    # without a source address only the user's counter applies
    for _ in range(12):
        assert _code(svc.login, "ghost2", "whatever1").code is BAD_CREDENTIALS
    err = _code(svc.login, "ghost2", "whatever1")
    assert err.code is TOO_MANY_ATTEMPTS and err.data["retry_after"] <= 30
    assert svc.login("admin", PASSWORD)["uid"] == 1


def test_throttle_tables_are_bounded():
    clock = FakeClock()
    t = LoginThrottle(max_entries=100, clock=clock)
    for i in range(5000):
        t.failed(f"user{i}", f"10.{i // 250}.{i % 250}.1")
    addresses, users = t.sizes()
    assert addresses <= 100 and users <= 100
    # entries idle for longer than the window and the longest lock are forgotten
    t2 = LoginThrottle(address_threshold=2, clock=clock)
    t2.failed("a", "10.0.0.1")
    t2.failed("a", "10.0.0.1")
    assert t2.locked("a", "10.0.0.1") == 30
    clock.advance(t2.window + t2.address_lock_max + 1)
    t2.failed("b", "10.0.0.2")
    assert t2.sizes() == (1, 1)


def test_throttle_rejects_nonsense_settings():
    for kw in ({"address_threshold": 0}, {"user_lock": 0}, {"window": -1}):
        with pytest.raises(ValueError):
            LoginThrottle(**kw)
    with pytest.raises(ValueError):
        HashLimiter(concurrency=0)


def test_hash_limiter_bounds_running_and_waiting():
    limiter = HashLimiter(concurrency=2, queue=3, wait=600)
    gate = threading.Event()
    lock = threading.Lock()
    state = {"active": 0, "max": 0, "done": 0}

    def work() -> int:
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        gate.wait(600)
        with lock:
            state["active"] -= 1
            state["done"] += 1
        return 1

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(limiter.run(work)))
               for _ in range(5)]
    for th in threads:
        th.start()
    wait_until(lambda: state["active"] == 2 and limiter.waiting == 3, 60,
               lambda: f"2 running and 3 waiting, got {state} / {limiter.waiting}")
    err = _code(limiter.run, work)  # the sixth is refused at once
    assert err.code is LIMIT_REACHED
    short = HashLimiter(concurrency=1, queue=1, wait=0.05)
    short_gate, entered = threading.Event(), threading.Event()
    holder = threading.Thread(target=short.run,
                              args=(lambda: entered.set() or short_gate.wait(600),))
    holder.start()
    assert entered.wait(60), "the slot was never taken"
    assert _code(short.run, int).code is LIMIT_REACHED  # waited its time, got no slot
    short_gate.set()
    holder.join(60)
    gate.set()
    for th in threads:
        th.join(60)
    assert results == [1] * 5 and state["max"] == 2 and state["done"] == 5
    assert limiter.waiting == 0 and limiter.run(int) == 0


def test_every_hash_of_the_service_goes_through_the_limiter(service, probe, monkeypatch):
    svc, _ = service
    seen = []
    real = svc.hashing.run
    monkeypatch.setattr(svc.hashing, "run", lambda fn, *a: seen.append(fn.__name__) or real(fn, *a))
    admin = svc.verify(svc.login("admin", PASSWORD)["token"])
    tom = svc.create_user(admin, "tom", "Tech1234x", "tech")
    svc.reset_password(admin, tom["uid"], "Reset1234")
    p = svc.verify(svc.login("tom", "Reset1234")["token"])
    svc.change_password(p, "Reset1234", "Tom-Pass99", "Tom-Pass99")
    _code(svc.login, "nobody", "whatever1")
    assert seen == ["verify_password", "hash_password", "hash_password", "verify_password",
                    "verify_password", "hash_password", "verify_password"]
    assert probe.calls == len(seen)


# -- through the real servers ------------------------------------------------------------------
def _console(data_dir: Path, **auth: object):
    from dios.config import load_config
    from dios.serve import Console

    cfg = load_config(None, data_dir=data_dir)
    cfg.database_url = ""
    for listener in (cfg.http, cfg.rpc):  # free loopback ports, the default limits
        listener.host, listener.port = "127.0.0.1", 0
    cfg.devices.clock_scale = 200.0
    cfg.devices.panel = "FLUORO_1024"
    console = Console(cfg, calibrate=False,
                      auth_options={"initial_admin_password": ADMIN_INITIAL, **auth})
    return console.start()


def _ready_admin(console) -> None:
    api = Api(console)
    token = api.ok("POST", "/auth/login", json={"username": "admin",
                                                "password": ADMIN_INITIAL})["token"]
    api.token = token
    api.ok("POST", "/auth/password", json={"old_password": ADMIN_INITIAL,
                                           "new_password": PASSWORD,
                                           "confirm_new_password": PASSWORD})
    api.close()


@pytest.fixture(scope="module")
def throttled(tmp_path_factory):
    clock = FakeClock()
    c = _console(tmp_path_factory.mktemp("abuse"), scrypt_params=FAST_SCRYPT,
                 throttle_clock=clock, address_lock=60, user_lock=20)
    _ready_admin(c)
    yield c, clock
    c.stop()


def test_http_login_flood_is_locked_out_without_hashing(throttled, probe):
    console, clock = throttled
    api = Api(console)
    bodies = []
    for i in range(200):
        r = api.post("/auth/login", json={"username": "admin", "password": f"Wrong-{i}x"})
        body = r.json()
        assert "Traceback" not in r.text
        assert (r.status_code, body["code"]) in ((401, BAD), (429, TOO_MANY)), (r.status_code, body)
        bodies.append(body)
    failed = [b for b in bodies if b["code"] == BAD]
    refused = [b for b in bodies if b["code"] == TOO_MANY]
    # at most the larger threshold (user: 20) were checked; the rest cost no hash at all
    assert len(failed) <= 20 and len(refused) == 200 - len(failed)
    assert bodies[-1]["code"] == TOO_MANY and probe.calls == len(failed)
    retry = refused[-1]["data"]["retry_after"]
    assert isinstance(retry, int) and 1 <= retry <= 60
    assert refused[-1]["description"].endswith(f"{retry} s")
    # the right password from the same address is refused while locked, over RPC too
    r = api.post("/auth/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 429 and r.json()["code"] == TOO_MANY
    rpc = RpcClient(console.rpc_port)
    try:
        err, result = rpc.call("auth.login", {"username": "admin", "password": PASSWORD})
        assert result is None and err["code"] == TOO_MANY
    finally:
        rpc.close()
    assert probe.calls == len(failed)
    # once the lock is over the right password works and the counters start afresh
    clock.advance(retry)
    token = api.ok("POST", "/auth/login", json={"username": "admin", "password": PASSWORD})
    assert token["uid"] == 1
    r = api.post("/auth/login", json={"username": "admin", "password": "Wrong-again1"})
    assert r.status_code == 401 and r.json()["code"] == BAD
    api.close()


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _RssSampler(threading.Thread):
    """The highest VmRSS seen while running (when the kernel's peak cannot be reset)."""

    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.peak = _status_kb("VmRSS")
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, _status_kb("VmRSS"))


def _login(port: int, password: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/api/v1/auth/login",
                     body=json.dumps({"username": "admin", "password": password}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_http_concurrent_logins_keep_memory_and_threads_bounded(tmp_path, probe):
    """64 logins at once with the real scrypt cost (32 MiB each): at most two hashes run
    at once, memory grows by a bounded amount, threads come back."""
    console = _console(tmp_path, scrypt_params=SCRYPT_PARAMS)
    try:
        _ready_admin(console)
        auth = console.services.auth
        assert auth.hashing.concurrency == 2 and auth.hashing.queue == 32
        guest = Api(console)
        guest.ok("GET", "/resource/software-info")
        assert _login(console.http_port, PASSWORD)[0] == 200
        gc.collect()
        threads_before = threading.active_count()
        rss_before = _status_kb("VmRSS")
        peak_reset = _reset_peak_rss()
        sampler = _RssSampler()
        sampler.start()
        probe.calls = probe.max_active = 0

        go = threading.Event()
        results: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def one() -> None:
            go.wait(300)
            got = _login(console.http_port, PASSWORD)
            with lock:
                results.append(got)

        clients = [threading.Thread(target=one, name=f"login-{i}") for i in range(64)]
        for th in clients:
            th.start()
        go.set()
        for th in clients:
            th.join(600)
        assert not any(th.is_alive() for th in clients)
        sampler.stop.set()
        sampler.join(60)
        peak_kb = _status_kb("VmHWM") if peak_reset else sampler.peak

        statuses = sorted(status for status, _ in results)
        assert len(results) == 64
        for status, body in results:
            assert (status, body["code"]) in ((200, "0x000000"), (429, LIMIT)), (status, body)
        # at least the first two got their slots; no more than two hashes at any moment
        assert statuses.count(200) >= 2 and probe.calls == statuses.count(200)
        assert 1 <= probe.max_active <= auth.hashing.concurrency
        # unbounded, 64 hashes at 32 MiB would take 2 GiB; bounded: two at a time
        growth_mb = (peak_kb - rss_before) / 1024
        assert growth_mb < 300, f"peak RSS grew by {growth_mb:.0f} MB"
        gc.collect()
        assert (_status_kb("VmRSS") - rss_before) / 1024 < 150

        # the server's idle worker threads are released as later calls come in
        def settled() -> bool:
            guest.ok("GET", "/resource/software-info")
            return threading.active_count() <= threads_before + 2

        wait_until(settled, 180, lambda: f"threads back near {threads_before}, "
                   f"now {threading.active_count()}", interval=0.5)
        guest.close()
    finally:
        console.stop()
