"""Eight clients, a thousand interleaved commands each, across both devices."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import pytest

from dios.engine import build_simulated_engine
from dios.messages import Request
from dios.uri import DETECTOR, GENERATOR

CLIENTS = 8
PER_CLIENT = 1000

GEN_COMMANDS = [("GetParam_KV", ""), ("SetParam_KV", "{kv}"), ("GetStatus", ""),
                ("GetParam_MAS", ""), ("IncParam_KV", "1"), ("DecParam_KV", "1"),
                ("SetParam_KV", "abc"), ("Expose", "")]  # the last two fail by design
DET_COMMANDS = [("GetStatus", ""), ("GetModes", ""), ("NoSuchCommand", "")]


@pytest.fixture
def engine():
    eng = build_simulated_engine(clock_scale=1000.0, panel="FLUORO_1024", timeout=30.0)
    with eng:
        yield eng


def test_eight_clients_thousand_commands_each(engine):
    bus = engine.bus
    executed: dict[str, list[tuple[str, int]]] = defaultdict(list)

    # record the order in which each device executes requests (one worker per device)
    for uri in (GENERATOR, DETECTOR):
        dev = bus.device(uri)
        original = dev.handle

        def recording(req, _orig=original, _uri=uri):
            if req.reqClientID.startswith("client"):
                client, n = req.reqTransaction.rsplit("-", 1)
                executed[_uri].append((client, int(n)))
            return _orig(req)

        dev.handle = recording

    errors: list[str] = []
    sent: dict[str, list[Request]] = {}

    def client(k: int) -> None:
        rng = random.Random(k)
        name = f"client{k}"
        futures = []
        reqs = []
        for n in range(PER_CLIENT):
            if rng.random() < 0.5:
                cmd, param = rng.choice(GEN_COMMANDS)
                uri = GENERATOR
            else:
                cmd, param = rng.choice(DET_COMMANDS)
                uri = DETECTOR
            req = Request(uri, cmd, param.format(kv=rng.randint(50, 120)), f"{name}-{n}", name)
            reqs.append(req)
            if n % 10 == 9:  # a synchronous call now and then, the rest pipelined
                futures.append((req, None, bus.request(req, timeout=120)))
            else:
                futures.append((req, bus.submit(req), None))
        sent[name] = reqs
        for req, fut, reply in futures:
            reply = reply if fut is None else fut.result(timeout=300)
            if (reply.reqTransaction, reply.reqClientID, reply.deviceUri, reply.reqName) != (
                    req.reqTransaction, req.reqClientID, req.deviceUri, req.reqName):
                errors.append(f"mismatch {req} -> {reply}")
            expect_fail = req.reqName in ("NoSuchCommand", "Expose") or req.reqParam == "abc"
            if reply.ok == expect_fail:
                errors.append(f"unexpected result {req} -> {reply.code} {reply.description}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:  # well under a second when idle; the deadline is for a loaded machine
        t.join(300)
    assert not any(t.is_alive() for t in threads), "deadlock: a client never finished"
    assert not errors, errors[:5]

    total = sum(len(v) for v in executed.values())
    assert total == CLIENTS * PER_CLIENT
    for uri, seq in executed.items():
        last: dict[str, int] = {}
        for client_name, n in seq:
            assert n > last.get(client_name, -1), f"{uri}: {client_name} out of order at {n}"
            last[client_name] = n
    # both devices were really interleaved by every client
    for uri in (GENERATOR, DETECTOR):
        assert {c for c, _ in executed[uri]} == {f"client{k}" for k in range(CLIENTS)}
    # the generator is still healthy and serving
    assert bus.request(Request(GENERATOR, "GetStatus")).result == "GENERATOR_STATUS_STANDBY"
