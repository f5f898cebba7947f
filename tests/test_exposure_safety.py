"""Exposure safety: no beam without an armed panel, one outcome per exposure, replies that
match the store, whatever other clients do at the same moment.

* a seeded random multi-client driver with fault injection (``tests/safety_driver.py``),
  bounded here; ``make soak`` runs it longer and writes its counts;
* two clients over the real HTTP server: a detector Abort or Disconnect racing the
  generator's Expose;
* a store slower than the exposure timeout, over HTTP: the reply waits for the store and
  says what was stored.

``DIOS_SAFETY_SEQUENCES`` and ``DIOS_RACES`` raise the bounds (``make soak``);
``DIOS_SAFETY_REPORT`` names a JSON file the counts are added to.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

from dios import topics
from dios.codes import SUCCESS
from dios.uri import DETECTOR, GENERATOR
from tests.console_helpers import images_of, setup_users, start_console, study_request
from tests.safety_driver import SafetyDriver, wait_until

SEQUENCES = int(os.environ.get("DIOS_SAFETY_SEQUENCES", "100"))
REPORT = os.environ.get("DIOS_SAFETY_REPORT", "")
RACES = int(os.environ.get("DIOS_RACES", "150"))
CHEST = "View_DX_T_A_CH_PA_00"


def report(entry: dict) -> None:
    """Add ``entry`` to the JSON report named by DIOS_SAFETY_REPORT (if any)."""
    if not REPORT:
        return
    path = Path(REPORT)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(entry)
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = start_console(tmp_path_factory.mktemp("safety"))
    c.services.task.exposure_timeout = 30.0
    yield c
    c.stop()


@pytest.fixture(scope="module")
def users(console):
    apis = setup_users(console)
    yield apis
    for api in apis.values():
        api.close()


def _study(services, views: int = 3) -> dict:
    return services.study.register(study_request(views=[
        {"view_id": CHEST, "procedure_id": ""} for _ in range(views)]), product="DROS")


def test_random_multi_client_sequences_keep_every_invariant(console):
    services = console.services
    driver = SafetyDriver(services, seed=20261203, clients=3,
                          study_factory=lambda: _study(services))
    try:
        for _ in range(SEQUENCES):
            driver.sequence(ops=12)
    finally:
        driver.close()
    t = driver.tally
    print("\nsafety driver:", json.dumps(t.as_dict()))
    report({"random_sequences": t.as_dict()})
    assert t.operations == SEQUENCES * 3 * 12
    assert t.beams > SEQUENCES // 4, "the driver must actually fire beams"
    assert t.beams_unarmed == 0
    assert t.frames == t.stored + t.unassigned
    assert not t.contradictions, t.contradictions[:10]


def _device(api, uri: str, name: str, tx: str, param: str = "") -> tuple[str, dict]:
    r = api.post("/task/device/command", json={"deviceUri": uri, "reqName": name,
                                                 "reqParam": param, "reqTransaction": tx,
                                                 "reqClientID": api.token[-8:]})
    body = r.json()
    return body["code"], body


def test_abort_or_disconnect_racing_expose_over_http(console, users):
    """Client A exposes while client B (tech) aborts or disconnects the detector 0-3 ms
    later: never a beam without an armed panel; A's reply matches the image's state."""
    a = users["tech"]
    b = type(a)(console, token=a.token)  # a second client of the tech role
    service = users["service"]
    services, engine = console.services, console.engine
    det_backend = engine.detector.backend
    beams = {"n": 0, "unarmed": 0}
    real = engine.generator.backend.expose

    def checked(cancel):
        beams["n"] += 1
        if not (det_backend.armed and det_backend.connected):
            beams["unarmed"] += 1
        return real(cancel)

    engine.generator.backend.expose = checked
    events: list = []
    sub = engine.hub.subscribe("DIOS/TASK/*", handler=events.append)
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    try:
        sops: list[str] = []
        for i in range(RACES):
            if not sops:
                sops = [im["sop_instance_id"] for im in images_of(_study(services, 10))]
            sop = sops.pop()
            tx = f"race-{i}"
            a.ok("POST", "/task/image/select", json={"instance_uid": sop})
            for uri in (DETECTOR, GENERATOR):
                code, body = _device(a, uri, "Prepare", tx)
                assert code == SUCCESS.hex, body
            wait_until(lambda: engine.detector.status_string.endswith("READY")
                       and engine.generator.status_string.endswith("READY"), 60, "all ready")
            what = rng.choice(("Abort", "Disconnect"))
            delay = rng.uniform(0.0, 0.003)
            got: dict = {}

            def racer(what=what, delay=delay, got=got, tx=tx):
                time.sleep(delay)  # the race's offset, not a wait for anything
                got["b"] = _device(b, DETECTOR, what, tx + "-b")[0]

            th = threading.Thread(target=racer)
            th.start()
            code, _ = _device(a, GENERATOR, "Expose", tx)
            th.join(60)
            def seen(name, tx=tx):
                return any(e.name == name and e.reqTransaction == tx for e in list(events))

            if code == SUCCESS.hex:  # accepted: its one outcome is announced
                wait_until(lambda: seen(topics.IMAGE_STORED) or seen(topics.EXPOSURE_FAILED),
                           60, f"the outcome of {tx}")
            wait_until(lambda: services.task.lifecycle.phase.value in ("Idle", "Planned"), 60,
                       "the lifecycle at rest")
            image = services.study.image(sop)
            stored, failed = seen(topics.IMAGE_STORED), seen(topics.EXPOSURE_FAILED)
            if code == SUCCESS.hex:
                # accepted: exactly one outcome, and the store says the same
                assert stored != failed, (tx, stored, failed)
                assert image["expose_status"] == ("Exposed" if stored else "Unexposed")
                outcomes["stored" if stored else "failed"] = outcomes.get(
                    "stored" if stored else "failed", 0) + 1
            else:
                assert not stored and image["expose_status"] == "Unexposed", (tx, code)
                outcomes["refused"] = outcomes.get("refused", 0) + 1
            # back to rest for the next race
            if engine.detector.status_string.endswith("DISCONNECTED"):
                assert _device(service, DETECTOR, "Connect", tx)[0] == SUCCESS.hex
            if engine.generator.status_string.rsplit("_", 1)[-1] in ("PREPARE", "READY"):
                _device(a, GENERATOR, "Abort", tx)
            a.ok("POST", "/task/image/deselect", json={})
            wait_until(lambda: engine.detector.status_string.endswith("STANDBY")
                       and engine.generator.status_string.endswith("STANDBY"), 60, "standby")
    finally:
        sub.close()
        engine.generator.backend.expose = real
        b.close()
    report({"http_races": {"races": RACES, "beams": beams["n"],
                           "beams_without_armed_panel": beams["unarmed"], "outcomes": outcomes}})
    print(f"\nraces: {RACES}, beams {beams['n']}, beams without an armed panel "
          f"{beams['unarmed']}, outcomes {outcomes}")
    assert beams["unarmed"] == 0
    assert sum(outcomes.values()) == RACES


def test_a_store_slower_than_the_exposure_timeout_replies_what_was_stored(console, users):
    """The frame arrives, storing takes longer than the exposure timeout (a cold start
    compiling the pipeline's kernels): the client hears the stored image, never TIMEOUT
    for an image that is then saved."""
    api = users["tech"]
    services = console.services
    lc = services.task.lifecycle
    real = lc.sink.process
    saved = lc.exposure_timeout

    def slow(*args, **kw):
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # storing is slow: the timeout fires meanwhile
            time.sleep(0.05)
        return real(*args, **kw)

    lc.sink.process = slow
    lc.exposure_timeout = 1.0
    events: list = []
    sub = console.engine.hub.subscribe(topics.EXPOSURE_URI, handler=events.append)
    try:
        sop = images_of(_study(services, 1))[0]["sop_instance_id"]
        r = api.post("/task/image/expose", json={"instance_uid": sop})
        body = r.json()
        assert body["code"] == SUCCESS.hex, body
        image = services.study.image(sop)
        assert image["expose_status"] == "Exposed" and image["storage_status"] == "Saved"
        assert not any(e.name == topics.EXPOSURE_FAILED for e in events)
        # the same through raw device commands: the accepted Expose is followed by the
        # stored image, not by a failure
        sop2 = images_of(_study(services, 1))[0]["sop_instance_id"]
        api.ok("POST", "/task/image/select", json={"instance_uid": sop2})
        for uri in (DETECTOR, GENERATOR):
            assert _device(api, uri, "Prepare", "slow")[0] == SUCCESS.hex
        engine = console.engine
        wait_until(lambda: engine.detector.status_string.endswith("READY")
                   and engine.generator.status_string.endswith("READY"), 60, "all ready")
        assert _device(api, GENERATOR, "Expose", "slow")[0] == SUCCESS.hex
        wait_until(lambda: services.study.image(sop2)["expose_status"] == "Exposed", 60,
                   "the slow store")
        assert not any(e.name == topics.EXPOSURE_FAILED for e in events)
    finally:
        lc.sink.process = real
        lc.exposure_timeout = saved
        sub.close()
